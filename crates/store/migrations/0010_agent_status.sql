-- What each source's agent last reported about itself (the status heartbeat, every few
-- seconds): the data-sources page and alerts read it. Only the edge, as the service role,
-- writes it; a source's members read their own tenant's.
create table control.source_status (
    tenant_id      uuid not null,
    source_id      uuid not null,
    reported_at    timestamptz not null default now(),
    agent_version  text not null check (length(agent_version) <= 64),
    source_kind    text not null check (length(source_kind) <= 64),
    state          text not null check (length(state) <= 64),
    captured_lsn   bigint,
    acked_lsn      bigint,
    confirmed_lsn  bigint,
    lag_bytes      bigint,
    lag_seconds    double precision,
    spool_batches  bigint not null default 0,
    spool_bytes    bigint not null default 0,
    backpressure   boolean not null default false,
    snapshot_rows  bigint,
    slot           jsonb,
    warnings       jsonb not null default '[]',
    last_error     text check (length(last_error) <= 2000),
    primary key (tenant_id, source_id),
    foreign key (tenant_id, source_id) references control.sources (tenant_id, source_id)
        on delete cascade
);
select app.enforce_tenant_rls('control.source_status');
grant select on control.source_status to tributary_tenant_owner, tributary_tenant_admin,
    tributary_tenant_operator, tributary_service;
grant insert, update on control.source_status to tributary_service;
