-- Internal operations staff, per-tenant usage for the tenant registry, and the aggregator's own
-- role: only it writes the cross-tenant rollups.

-- Accounts of the platform's operations staff. Nobody becomes staff through the web app: the
-- operator CLI (`tributary staff grant`) adds them. Sign-in (the control role) reads it to know
-- whether a session is staff.
create table control.platform_staff (
    user_id     uuid primary key references control.users (user_id) on delete cascade,
    role        text not null default 'internal_ops' check (role = 'internal_ops'),
    granted_by  text not null check (length(granted_by) between 1 and 200),
    granted_at  timestamptz not null default now()
);
alter table control.platform_staff enable row level security;
alter table control.platform_staff force row level security;
create policy control_all on control.platform_staff for all to tributary_control
    using (true) with check (true);
grant select, insert, delete on control.platform_staff to tributary_control;

-- Events each source delivered into bronze per UTC day, counted by the bronze writer in the
-- transaction that stores them (only rows actually inserted, so redeliveries do not count).
-- A tenant's members read their own; internal operations read every tenant's (the registry's
-- volume column), never the events themselves.
create table control.tenant_usage (
    tenant_id        uuid not null references control.dim_tenant (tenant_id) on delete cascade,
    source_id        uuid not null,
    day              date not null,
    events           bigint not null check (events >= 0),
    last_ingested_at timestamptz not null,
    primary key (tenant_id, day, source_id)
);
alter table control.tenant_usage enable row level security;
alter table control.tenant_usage force row level security;
create policy tenant_isolation on control.tenant_usage as restrictive for all to public
    using (tenant_id = (select app.current_tenant_id()) or (select app.acting_as_internal_ops()))
    with check (tenant_id = (select app.current_tenant_id()));
create policy tenant_access on control.tenant_usage as permissive for all to public
    using (tenant_id = (select app.current_tenant_id()) or (select app.acting_as_internal_ops()))
    with check (tenant_id = (select app.current_tenant_id()));
grant select on control.tenant_usage to tributary_tenant_owner, tributary_tenant_admin,
    tributary_tenant_operator, tributary_tenant_viewer, tributary_internal_ops;
grant select, insert, update on control.tenant_usage to tributary_service;

-- The aggregator (cluster role from bootstrap.sql; the service login switches to it with
-- `set local role` and does not inherit it) is the only writer of global_analytics.*. It reads
-- every tenant's per-minute metrics (BYPASSRLS: that is its whole job) and the tenant attributes
-- the rollups break down by, and nothing else of a tenant's.
grant usage on schema analytics, control, pipeline, global_analytics to tributary_aggregator;
grant select on analytics.metrics_min, control.dim_tenant, control.global_rollup_key_allowlist
    to tributary_aggregator;
grant update (backfilled_at, purge_requested) on control.global_rollup_key_allowlist
    to tributary_aggregator;
grant select, insert, update, delete on pipeline.rollup_dirty to tributary_aggregator;
create policy aggregator_all on pipeline.rollup_dirty for all to tributary_aggregator
    using (true) with check (true);
create policy aggregator_read on control.global_rollup_key_allowlist for select
    to tributary_aggregator using (true);
create policy aggregator_flags on control.global_rollup_key_allowlist for update
    to tributary_aggregator using (true) with check (true);

revoke update (backfilled_at, purge_requested) on control.global_rollup_key_allowlist
    from tributary_service;
do $$
declare
    rollup text;
begin
    foreach rollup in array array['global_analytics.rollup_min', 'global_analytics.rollup_hr']
    loop
        execute format('drop policy aggregator_all on %s', rollup::regclass);
        execute format('revoke all on %s from tributary_service', rollup::regclass);
        execute format('create policy aggregator_all on %s for all '
                       'to tributary_aggregator using (true) with check (true)', rollup::regclass);
        execute format('grant select, insert, update, delete on %s to tributary_aggregator',
                       rollup::regclass);
    end loop;
end
$$;
revoke usage on schema global_analytics from tributary_service;
