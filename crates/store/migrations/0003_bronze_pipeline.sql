-- Bronze (every event, raw, by tenant) and the pipeline's bookkeeping: dedupe, DLQ, replays,
-- consumer checkpoints.

grant usage on schema bronze to tributary_service, tributary_tenant_owner,
    tributary_tenant_admin, tributary_tenant_operator;
grant usage on schema pipeline to tributary_service, tributary_tenant_owner,
    tributary_tenant_admin, tributary_tenant_operator;

-- Partitioned by the event's commit time, one partition a day. The event id is deterministic
-- and carries the commit time, so (tenant_id, event_id, event_time) is unique exactly when
-- (tenant_id, event_id) is: a redelivered event always lands in the same partition.
create table bronze.cdc_events (
    tenant_id    uuid not null,
    event_id     uuid not null,
    event_time   timestamptz not null,
    source_id    uuid not null,
    op           text not null check (op in ('insert', 'update', 'delete', 'truncate', 'read')),
    schema_name  text not null,
    table_name   text not null,
    lsn          bigint not null,
    seq          integer not null,
    xid          bigint,
    payload      jsonb not null,
    ingest_time  timestamptz not null default now(),
    primary key (tenant_id, event_id, event_time)
) partition by range (event_time);
create index cdc_events_source_idx on bronze.cdc_events (tenant_id, source_id, lsn, seq);
select app.enforce_tenant_rls('bronze.cdc_events');
grant select on bronze.cdc_events to tributary_tenant_owner, tributary_tenant_admin,
    tributary_tenant_operator;
grant select, insert on bronze.cdc_events to tributary_service;
-- Retention removes a tenant's expired events; only the pipeline does that.
grant delete on bronze.cdc_events to tributary_service;

-- Creates the daily partition holding `day`, with the parent's isolation applied to the
-- partition itself (a partition is a table of its own and can be queried directly). Partitions
-- grant nothing to anyone: every reader goes through the parent and its grants.
create function bronze.ensure_partition(day date) returns text
    language plpgsql
    security definer
    set search_path = pg_catalog
as $$
declare
    partition_name text := 'cdc_events_p' || to_char(day, 'YYYYMMDD');
begin
    if to_regclass(format('bronze.%I', partition_name)) is not null then
        return partition_name;
    end if;
    -- Serialise concurrent creators of the same day.
    perform pg_advisory_xact_lock(hashtext('bronze.ensure_partition'), (day - date '2000-01-01'));
    if to_regclass(format('bronze.%I', partition_name)) is null then
        execute format(
            'create table bronze.%I partition of bronze.cdc_events for values from (%L) to (%L)',
            partition_name,
            (day::timestamp at time zone 'UTC'),
            ((day + 1)::timestamp at time zone 'UTC'));
        perform app.enforce_tenant_rls(format('bronze.%I', partition_name)::regclass);
    end if;
    return partition_name;
end
$$;

-- Creates every daily partition from `first_day` to `last_day` inclusive.
create function bronze.ensure_partitions(first_day date, last_day date) returns integer
    language plpgsql
    security definer
    set search_path = pg_catalog
as $$
declare
    day date := first_day;
    created integer := 0;
begin
    if last_day - first_day > 400 then
        raise exception 'refusing to create more than 400 bronze partitions at once';
    end if;
    while day <= last_day loop
        perform bronze.ensure_partition(day);
        created := created + 1;
        day := day + 1;
    end loop;
    return created;
end
$$;
grant execute on function bronze.ensure_partition(date),
    bronze.ensure_partitions(date, date) to tributary_service;

select bronze.ensure_partitions((now() at time zone 'UTC')::date - 1,
                                (now() at time zone 'UTC')::date + 7);

-- Event ids already applied by a consumer (at-least-once delivery, exactly-once effect).
create table pipeline.dedupe (
    tenant_id  uuid not null,
    consumer   text not null check (length(consumer) between 1 and 100),
    event_id   uuid not null,
    seen_at    timestamptz not null default now(),
    primary key (tenant_id, consumer, event_id)
);
select app.enforce_tenant_rls('pipeline.dedupe');
grant select, insert, delete on pipeline.dedupe to tributary_service;

-- Events valid on the wire that a consumer could not apply, with the reason, until replayed.
create table pipeline.dlq (
    tenant_id    uuid not null,
    dlq_id       uuid not null,
    consumer     text not null check (length(consumer) between 1 and 100),
    event_id     uuid not null,
    source_id    uuid not null,
    reason_code  text not null check (reason_code ~ '^[a-z][a-z0-9_]{0,63}$'),
    reason       text not null check (length(reason) <= 2000),
    event        jsonb not null,
    attempts     integer not null default 1 check (attempts >= 1),
    created_at   timestamptz not null default now(),
    replayed_at  timestamptz,
    primary key (tenant_id, dlq_id),
    unique (tenant_id, consumer, event_id)
);
select app.enforce_tenant_rls('pipeline.dlq');
grant select on pipeline.dlq to tributary_tenant_owner, tributary_tenant_admin,
    tributary_tenant_operator;
grant select, insert, update (attempts, replayed_at), delete on pipeline.dlq
    to tributary_service;

-- A request recorded by the web (an intent) and carried out by the pipeline.
create table pipeline.replay_requests (
    tenant_id     uuid not null,
    request_id    uuid not null,
    kind          text not null check (kind in ('dlq', 'rebuild')),
    requested_by  uuid,
    requested_at  timestamptz not null default now(),
    status        text not null default 'pending'
                      check (status in ('pending', 'running', 'done', 'failed')),
    finished_at   timestamptz,
    detail        text check (length(detail) <= 2000),
    primary key (tenant_id, request_id)
);
select app.enforce_tenant_rls('pipeline.replay_requests');
grant select, insert on pipeline.replay_requests to tributary_tenant_owner,
    tributary_tenant_admin;
grant select, update (status, finished_at, detail) on pipeline.replay_requests
    to tributary_service;

-- Consumer-group checkpoints per bus partition. Partitions mix tenants, so this is not tenant
-- data; only the pipeline touches it.
create table pipeline.checkpoints (
    consumer_group  text not null check (length(consumer_group) between 1 and 100),
    partition       integer not null check (partition >= 0),
    position        bigint not null check (position >= 0),
    updated_at      timestamptz not null default now(),
    primary key (consumer_group, partition)
);
alter table pipeline.checkpoints enable row level security;
alter table pipeline.checkpoints force row level security;
create policy service_all on pipeline.checkpoints for all to tributary_service
    using (true) with check (true);
grant select, insert, update on pipeline.checkpoints to tributary_service;
