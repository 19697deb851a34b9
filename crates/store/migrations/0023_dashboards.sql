-- Saved dashboards (docs/analytics.md): a workspace's named, ordered pages of chart panels over
-- its metrics. Every member reads them; owners and admins edit them (audited by the store).
-- A panel is a JSON object the store validates (metric key, aggregation, step, filter, group
-- by, chart type); the list is small and always read whole, so it is one column.
create table control.dashboards (
    tenant_id     uuid not null references control.dim_tenant (tenant_id) on delete cascade,
    dashboard_id  uuid not null default gen_random_uuid(),
    name          text not null check (length(name) between 1 and 100),
    position      integer not null default 0,
    panels        jsonb not null default '[]'::jsonb
                      check (jsonb_typeof(panels) = 'array' and jsonb_array_length(panels) <= 24),
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now(),
    primary key (tenant_id, dashboard_id)
);
create index dashboards_position_idx on control.dashboards (tenant_id, position, created_at);
select app.enforce_tenant_rls('control.dashboards');
grant select on control.dashboards to tributary_tenant_owner, tributary_tenant_admin,
    tributary_tenant_operator, tributary_tenant_viewer;
grant insert, update (name, position, panels, updated_at), delete
    on control.dashboards to tributary_tenant_owner, tributary_tenant_admin;
