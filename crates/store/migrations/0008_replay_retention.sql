-- Replay of dead letters and of bronze ranges, and bronze retention.

-- The exact bus message of a dead letter, so a replay re-drives precisely what failed (the
-- `event` column keeps a readable copy when PostgreSQL's jsonb can hold it).
alter table pipeline.dlq add column message bytea;
-- The first failure is `created_at`; the latest, and its reason, are kept too.
alter table pipeline.dlq add column last_failed_at timestamptz not null default now();
grant update (reason_code, reason, last_failed_at) on pipeline.dlq to tributary_service;

-- Replay requests: of the DLQ, of a time range of bronze, or a rebuild (later work).
alter table pipeline.replay_requests drop constraint replay_requests_kind_check;
alter table pipeline.replay_requests add constraint replay_requests_kind_check
    check (kind in ('dlq', 'range', 'rebuild'));
alter table pipeline.replay_requests
    add column range_from timestamptz,
    add column range_to timestamptz,
    add column started_at timestamptz,
    add column events_replayed bigint not null default 0,
    add column events_failed bigint not null default 0,
    add constraint replay_requests_range_check
        check (kind <> 'range' or (range_from is not null and range_to is not null
                                   and range_from < range_to));
grant update (status, started_at, finished_at, detail, events_replayed, events_failed)
    on pipeline.replay_requests to tributary_service;
grant select, insert on pipeline.replay_requests to tributary_control;
grant usage on schema pipeline to tributary_control;

-- Operators set a tenant's retention from the CLI.
grant update (bronze_retention_days, updated_at) on control.tenant_settings to tributary_control;

-- Drops every daily bronze partition that ends on or before `cutoff` (no tenant keeps data that
-- old); returns the names dropped. Only the pipeline's retention job calls it.
create function bronze.drop_partitions_before(cutoff date) returns setof text
    language plpgsql
    security definer
    set search_path = pg_catalog
as $$
declare
    partition record;
begin
    for partition in
        select c.relname::text as name
        from pg_inherits i join pg_class c on c.oid = i.inhrelid
        where i.inhparent = 'bronze.cdc_events'::regclass
          and c.relname ~ '^cdc_events_p[0-9]{8}$'
          and to_date(substring(c.relname from 13), 'YYYYMMDD') + 1 <= cutoff
        order by 1
    loop
        execute format('drop table bronze.%I', partition.name);
        return next partition.name;
    end loop;
end
$$;
grant execute on function bronze.drop_partitions_before(date) to tributary_service;

-- A revocation is final: neither a revoked source nor a revoked certificate can be brought back
-- (an owner could otherwise revive a stolen agent's certificate without any audit entry).
create function control.refuse_unrevoke() returns trigger
    language plpgsql
    set search_path = pg_catalog
as $$
begin
    -- Nested, not joined with `and`: a row of one table has no column of the other.
    if tg_table_name = 'sources' then
        if old.status = 'revoked' and new.status <> 'revoked' then
            raise exception 'a revoked source stays revoked: create a new source'
                using errcode = 'insufficient_privilege';
        end if;
    elsif old.revoked_at is not null
          and (new.revoked_at is null or new.revoked_at <> old.revoked_at) then
        raise exception 'a revoked certificate stays revoked'
            using errcode = 'insufficient_privilege';
    end if;
    return new;
end
$$;
create trigger refuse_unrevoke before update on control.sources
    for each row execute function control.refuse_unrevoke();
create trigger refuse_unrevoke before update on control.certificates
    for each row execute function control.refuse_unrevoke();
