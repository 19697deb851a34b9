-- The tenant materializer and the global aggregator (docs/materializer.md).
--
-- Mapping: which source table feeds which entity kind, and which source column which typed
-- column. A table without a row here maps by convention (the materializer's default mapping).
create table control.read_model_mappings (
    tenant_id     uuid not null references control.dim_tenant (tenant_id) on delete cascade,
    source_id     uuid not null,
    source_table  text not null check (length(source_table) between 1 and 200),
    entity_kind   text not null
                      check (entity_kind in ('site', 'device', 'session', 'reading', 'ignore')),
    id_column     text check (length(id_column) between 1 and 200),
    columns       jsonb not null default '{}'::jsonb check (jsonb_typeof(columns) = 'object'),
    reading_entity_kind  text check (reading_entity_kind in ('site', 'device', 'session')),
    updated_at    timestamptz not null default now(),
    primary key (tenant_id, source_id, source_table)
);
select app.enforce_tenant_rls('control.read_model_mappings');
grant select on control.read_model_mappings to tributary_tenant_owner, tributary_tenant_admin,
    tributary_tenant_operator, tributary_service;
grant insert, update (entity_kind, id_column, columns, reading_entity_kind, updated_at), delete
    on control.read_model_mappings to tributary_tenant_owner, tributary_tenant_admin;

-- Every entity's materialized state: each field with the source position that last set it, the
-- position of the last full image (insert, snapshot read or delete) and of the latest event.
-- Applying an event is a pure function of this state and the event, independent of the order
-- events arrive in; the typed rows and extras are derived from it.
create table pipeline.entity_state (
    tenant_id     uuid not null,
    entity_kind   text not null check (entity_kind in ('site', 'device', 'session', 'reading')),
    entity_id     text not null check (length(entity_id) between 1 and 1000),
    state         jsonb not null,
    primary key (tenant_id, entity_kind, entity_id)
);
select app.enforce_tenant_rls('pipeline.entity_state');
grant select, insert, update, delete on pipeline.entity_state to tributary_service;

-- Each metric reading once, by its source row, so metrics_min can be recomputed exactly for a
-- minute whatever order and however often readings arrive.
create table pipeline.metric_readings (
    tenant_id     uuid not null,
    reading_id    text not null check (length(reading_id) between 1 and 1000),
    entity_kind   text not null check (entity_kind in ('site', 'device', 'session')),
    entity_id     text not null,
    metric_key    text not null check (length(metric_key) between 1 and 200),
    minute        timestamptz not null check (date_trunc('minute', minute) = minute),
    measured_at   timestamptz not null,
    value         double precision not null,
    pos_lsn       bigint not null,
    pos_seq       integer not null,
    primary key (tenant_id, reading_id)
);
create index metric_readings_bucket_idx
    on pipeline.metric_readings (tenant_id, entity_kind, entity_id, metric_key, minute);
select app.enforce_tenant_rls('pipeline.metric_readings');
grant select, insert, update, delete on pipeline.metric_readings to tributary_service;

-- Minutes of a metric key whose metrics_min changed and whose rollups the aggregator has not yet
-- recomputed. Keyed by (key, minute) only: not tenant data.
create table pipeline.rollup_dirty (
    metric_key  text not null check (length(metric_key) between 1 and 200),
    minute      timestamptz not null check (date_trunc('minute', minute) = minute),
    primary key (metric_key, minute)
);
alter table pipeline.rollup_dirty enable row level security;
alter table pipeline.rollup_dirty force row level security;
create policy service_all on pipeline.rollup_dirty for all to tributary_service
    using (true) with check (true);
grant select, insert, update, delete on pipeline.rollup_dirty to tributary_service;

-- Allowlist: a removed key is retired (its aggregation stops; its history stays readable) or
-- purged (the aggregator deletes its history). The row stays so the history keeps its reference.
alter table control.global_rollup_key_allowlist
    add column retired_at timestamptz,
    add column retired_by text check (length(retired_by) <= 200),
    add column purge_requested boolean not null default false,
    add column backfilled_at timestamptz;
grant update (added_by, added_at, retired_at, retired_by, purge_requested, backfilled_at)
    on control.global_rollup_key_allowlist to tributary_internal_ops;
grant update (backfilled_at, purge_requested) on control.global_rollup_key_allowlist
    to tributary_service;

-- The allowlist invariant, held by the database for every writer (the owner included): a rollup
-- row may only be written for a key that is allowlisted and not retired. The foreign key from
-- 0004 already refuses keys never allowlisted; this refuses retired ones too. It runs as the
-- writer: a role that cannot read the allowlist cannot write any rollup.
create function global_analytics.refuse_unlisted_key() returns trigger
    language plpgsql
    set search_path = pg_catalog
as $$
begin
    if not exists (select 1 from control.global_rollup_key_allowlist a
                   where a.key = new.key and a.retired_at is null) then
        raise exception 'metric key is not on the global rollup allowlist'
            using errcode = 'insufficient_privilege';
    end if;
    return new;
end
$$;
revoke execute on function global_analytics.refuse_unlisted_key() from public;
create trigger refuse_unlisted_key before insert or update on global_analytics.rollup_min
    for each row execute function global_analytics.refuse_unlisted_key();
create trigger refuse_unlisted_key before insert or update on global_analytics.rollup_hr
    for each row execute function global_analytics.refuse_unlisted_key();
