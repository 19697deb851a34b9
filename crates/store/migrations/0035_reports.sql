-- Reports (docs/reports.md): a workspace's export definitions (a dataset of its own data, the
-- columns, filters and order, and a file format) and the runs that produce their files. Every
-- member sees the definitions and runs; owners and admins define reports; every member asks for
-- a run, which the report runner (service role) executes in the requester's own role under the
-- tenant's row-level security, so a run never reads more than its requester may. The file is
-- kept in the export store (object storage) under `object_key` until `expires_at`.

create table control.reports (
    tenant_id    uuid not null references control.dim_tenant (tenant_id) on delete cascade,
    report_id    uuid not null default gen_random_uuid(),
    name         text not null check (length(name) between 1 and 100),
    dataset      text not null check (dataset in ('devices', 'sites', 'sessions',
                     'metrics_minute', 'metrics_hour', 'alert_events', 'audit_log')),
    -- The columns in file order; empty: every column of the dataset.
    columns      text[] not null default '{}' check (cardinality(columns) <= 100),
    -- The filters (time range relative or absolute, site, device, key), as
    -- store::reports::Filters writes them.
    filters      jsonb not null default '{}'::jsonb check (jsonb_typeof(filters) = 'object'),
    descending   boolean not null default false,
    format       text not null check (format in ('csv', 'parquet', 'jsonl')),
    created_by   uuid,
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now(),
    primary key (tenant_id, report_id),
    unique (tenant_id, name)
);
select app.enforce_tenant_rls('control.reports');
grant select on control.reports to tributary_tenant_owner, tributary_tenant_admin,
    tributary_tenant_operator, tributary_tenant_viewer;
grant insert, update, delete on control.reports
    to tributary_tenant_owner, tributary_tenant_admin;
grant select on control.reports to tributary_service;

-- A run of a report: asked by a member (or an API token) in a role, queued, taken by one runner
-- (`for update skip locked` and a lease, so two runners never run one twice), its progress
-- written as it goes, and its outcome: the rows and bytes written and the file's key, or why it
-- failed. The definition is copied into the run when it is asked for, so editing a report never
-- changes a run already asked.
create table control.report_runs (
    tenant_id      uuid not null references control.dim_tenant (tenant_id) on delete cascade,
    run_id         uuid not null default gen_random_uuid(),
    report_id      uuid,
    report_name    text not null check (length(report_name) between 1 and 100),
    definition     jsonb not null check (jsonb_typeof(definition) = 'object'),
    requested_by   uuid,
    run_as         text not null check (run_as in ('owner', 'admin', 'operator', 'viewer')),
    status         text not null default 'queued'
                       check (status in ('queued', 'running', 'succeeded', 'failed')),
    rows_written   bigint not null default 0 check (rows_written >= 0),
    bytes_written  bigint not null default 0 check (bytes_written >= 0),
    object_key     text check (length(object_key) <= 500),
    error          text check (length(error) <= 500),
    attempts       integer not null default 0,
    lease_until    timestamptz,
    requested_at   timestamptz not null default now(),
    started_at     timestamptz,
    finished_at    timestamptz,
    expires_at     timestamptz,
    primary key (tenant_id, run_id),
    foreign key (tenant_id, report_id) references control.reports (tenant_id, report_id)
        on delete set null (report_id),
    check (status <> 'succeeded' or expires_at is not null)
);
create index report_runs_queued_idx on control.report_runs (requested_at)
    where status in ('queued', 'running');
create index report_runs_report_idx on control.report_runs (tenant_id, report_id, requested_at);
select app.enforce_tenant_rls('control.report_runs');
grant select on control.report_runs to tributary_tenant_owner, tributary_tenant_admin,
    tributary_tenant_operator, tributary_tenant_viewer;
grant insert (tenant_id, run_id, report_id, report_name, definition, requested_by, run_as)
    on control.report_runs to tributary_tenant_owner, tributary_tenant_admin,
    tributary_tenant_operator, tributary_tenant_viewer;
grant select, update, delete on control.report_runs to tributary_service;
