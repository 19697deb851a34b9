-- Tenant read models (written only by the pipeline) and the allowlisted cross-tenant rollups.
--
-- Every read-model row keeps the source position (commit LSN, sequence) of the event that last
-- wrote it, and a delete leaves a tombstone (deleted_at) carrying its position, so an older event
-- delivered late can be recognised and ignored.

grant usage on schema analytics to tributary_service, tributary_tenant_owner,
    tributary_tenant_admin, tributary_tenant_operator, tributary_tenant_viewer;

create table analytics.sites (
    tenant_id   uuid not null,
    site_id     text not null check (length(site_id) between 1 and 500),
    source_id   uuid not null,
    name        text,
    region      text,
    timezone    text,
    latitude    double precision,
    longitude   double precision,
    pos_lsn     bigint not null,
    pos_seq     integer not null,
    deleted_at  timestamptz,
    updated_at  timestamptz not null default now(),
    primary key (tenant_id, site_id)
);

create table analytics.devices (
    tenant_id     uuid not null,
    device_id     text not null check (length(device_id) between 1 and 500),
    source_id     uuid not null,
    site_id       text,
    name          text,
    kind          text,
    model         text,
    status        text,
    firmware      text,
    last_seen_at  timestamptz,
    pos_lsn       bigint not null,
    pos_seq       integer not null,
    deleted_at    timestamptz,
    updated_at    timestamptz not null default now(),
    primary key (tenant_id, device_id)
);
create index devices_site_idx on analytics.devices (tenant_id, site_id);

create table analytics.sessions (
    tenant_id   uuid not null,
    session_id  text not null check (length(session_id) between 1 and 500),
    source_id   uuid not null,
    device_id   text,
    site_id     text,
    status      text,
    started_at  timestamptz,
    ended_at    timestamptz,
    pos_lsn     bigint not null,
    pos_seq     integer not null,
    deleted_at  timestamptz,
    updated_at  timestamptz not null default now(),
    primary key (tenant_id, session_id)
);
create index sessions_device_idx on analytics.sessions (tenant_id, device_id, started_at);

create table analytics.metrics_min (
    tenant_id     uuid not null,
    entity_kind   text not null check (entity_kind in ('site', 'device', 'session')),
    entity_id     text not null,
    metric_key    text not null check (length(metric_key) between 1 and 200),
    minute        timestamptz not null check (date_trunc('minute', minute) = minute),
    value_sum     double precision not null,
    value_count   bigint not null check (value_count > 0),
    value_min     double precision not null,
    value_max     double precision not null,
    last_value    double precision not null,
    last_pos_lsn  bigint not null,
    last_pos_seq  integer not null,
    primary key (tenant_id, entity_kind, entity_id, metric_key, minute)
);
create index metrics_min_key_idx on analytics.metrics_min (tenant_id, metric_key, minute);

create table analytics.extras_text (
    tenant_id    uuid not null,
    entity_kind  text not null check (entity_kind in ('site', 'device', 'session')),
    entity_id    text not null,
    key          text not null check (length(key) between 1 and 500),
    value        text not null,
    primary key (tenant_id, entity_kind, entity_id, key)
);
create table analytics.extras_num (
    tenant_id    uuid not null,
    entity_kind  text not null check (entity_kind in ('site', 'device', 'session')),
    entity_id    text not null,
    key          text not null check (length(key) between 1 and 500),
    value        double precision not null,
    primary key (tenant_id, entity_kind, entity_id, key)
);
create table analytics.extras_bool (
    tenant_id    uuid not null,
    entity_kind  text not null check (entity_kind in ('site', 'device', 'session')),
    entity_id    text not null,
    key          text not null check (length(key) between 1 and 500),
    value        boolean not null,
    primary key (tenant_id, entity_kind, entity_id, key)
);
create table analytics.extras_time (
    tenant_id    uuid not null,
    entity_kind  text not null check (entity_kind in ('site', 'device', 'session')),
    entity_id    text not null,
    key          text not null check (length(key) between 1 and 500),
    value        timestamptz not null,
    primary key (tenant_id, entity_kind, entity_id, key)
);

do $$
declare
    read_model text;
begin
    foreach read_model in array array[
        'analytics.sites', 'analytics.devices', 'analytics.sessions', 'analytics.metrics_min',
        'analytics.extras_text', 'analytics.extras_num', 'analytics.extras_bool',
        'analytics.extras_time'
    ] loop
        perform app.enforce_tenant_rls(read_model::regclass);
        execute format('grant select on %s to tributary_tenant_owner, tributary_tenant_admin, '
                       'tributary_tenant_operator, tributary_tenant_viewer', read_model::regclass);
        execute format('grant select, insert, update, delete on %s to tributary_service',
                       read_model::regclass);
    end loop;
end
$$;

-- Cross-tenant rollups. No tenant role may read them (no grant: permission denied); internal
-- operations reads, only the pipeline writes, and the foreign key to the allowlist makes a write
-- of a non-allowlisted key fail for whoever attempts it.
grant usage on schema global_analytics to tributary_service, tributary_internal_ops;

create table global_analytics.rollup_min (
    bucket        timestamptz not null check (date_trunc('minute', bucket) = bucket),
    key           text not null references control.global_rollup_key_allowlist (key),
    plan          text not null,
    industry      text not null,
    region        text not null,
    value_sum     double precision not null,
    value_count   bigint not null check (value_count > 0),
    tenant_count  integer not null check (tenant_count > 0),
    primary key (bucket, key, plan, industry, region)
);
create table global_analytics.rollup_hr (
    bucket        timestamptz not null check (date_trunc('hour', bucket) = bucket),
    key           text not null references control.global_rollup_key_allowlist (key),
    plan          text not null,
    industry      text not null,
    region        text not null,
    value_sum     double precision not null,
    value_count   bigint not null check (value_count > 0),
    tenant_count  integer not null check (tenant_count > 0),
    primary key (bucket, key, plan, industry, region)
);

do $$
declare
    rollup text;
begin
    foreach rollup in array array['global_analytics.rollup_min', 'global_analytics.rollup_hr']
    loop
        execute format('alter table %s enable row level security', rollup::regclass);
        execute format('alter table %s force row level security', rollup::regclass);
        execute format('create policy internal_ops_read on %s for select '
                       'to tributary_internal_ops using (true)', rollup::regclass);
        execute format('create policy aggregator_all on %s for all '
                       'to tributary_service using (true) with check (true)', rollup::regclass);
        execute format('grant select on %s to tributary_internal_ops', rollup::regclass);
        execute format('grant select, insert, update, delete on %s to tributary_service',
                       rollup::regclass);
    end loop;
end
$$;
