-- The connector wizard (`/app/connectors`). What a source's agent last found running
-- `tributary-agent check` (or `run`, as it starts): its findings and the source's tables, by
-- name, with their columns; only the edge, as the service role, writes it. And the tables an
-- admin chose to capture in the wizard, which the agent's configuration lists.
create table control.source_checks (
    tenant_id       uuid not null,
    source_id       uuid not null,
    reported_at     timestamptz not null default now(),
    agent_version   text not null check (length(agent_version) <= 64),
    ready           boolean not null,
    findings        jsonb not null check (jsonb_typeof(findings) = 'array'),
    tables          jsonb not null check (jsonb_typeof(tables) = 'array'),
    tables_omitted  bigint not null default 0 check (tables_omitted >= 0),
    primary key (tenant_id, source_id),
    foreign key (tenant_id, source_id) references control.sources (tenant_id, source_id)
        on delete cascade
);
select app.enforce_tenant_rls('control.source_checks');
grant select on control.source_checks to tributary_tenant_owner, tributary_tenant_admin,
    tributary_tenant_operator, tributary_service;
grant insert, update on control.source_checks to tributary_service;

alter table control.sources
    add column capture_tables text[]
        check (cardinality(capture_tables) <= 500);
-- Choosing the tables is managing the source (ManageSources).
grant update (capture_tables) on control.sources
    to tributary_tenant_owner, tributary_tenant_admin;
