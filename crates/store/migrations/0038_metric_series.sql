-- The metric-key catalogue (store::analytics::catalogue, docs/web.md) counted each key's readings
-- and entities by aggregating every hour of metrics_hour: seconds for a tenant with millions of
-- hours, on every dashboard that asks which keys exist. metric_series keeps, per series (an
-- entity's key), how many readings its hours hold, so the catalogue sums one row per series.
--
-- Kept by statement triggers on metrics_hour, whoever writes it (the materializer's hour
-- recompute, a rebuild's clear, a bench's seeding), in the writer's transaction: each statement
-- adds what it inserted and subtracts what it deleted, the delta of what it updated, per series,
-- in one sorted upsert (concurrent writers lock series rows in the same order); a series left
-- with no readings is removed. Exact at every commit: it is a sum over metrics_hour.

create table analytics.metric_series (
    tenant_id    uuid not null,
    metric_key   text not null check (length(metric_key) between 1 and 200),
    entity_kind  text not null check (entity_kind in ('site', 'device', 'session')),
    entity_id    text not null,
    -- No check on the sign: an upsert checks the row it proposes (a negative delta) before it
    -- finds the row to add it to.
    readings     bigint not null,
    primary key (tenant_id, metric_key, entity_kind, entity_id)
);
select app.enforce_tenant_rls('analytics.metric_series');
grant select on analytics.metric_series to tributary_tenant_owner, tributary_tenant_admin,
    tributary_tenant_operator, tributary_tenant_viewer;
grant select, insert, update, delete on analytics.metric_series to tributary_service;

create function analytics.count_metric_series() returns trigger
    language plpgsql
    set search_path = pg_catalog
as $$
begin
    if tg_op = 'INSERT' then
        insert into analytics.metric_series as s
            (tenant_id, metric_key, entity_kind, entity_id, readings)
        select tenant_id, metric_key, entity_kind, entity_id, sum(value_count)
        from inserted group by 1, 2, 3, 4 order by 1, 2, 3, 4
        on conflict (tenant_id, metric_key, entity_kind, entity_id)
        do update set readings = s.readings + excluded.readings;
    elsif tg_op = 'UPDATE' then
        insert into analytics.metric_series as s
            (tenant_id, metric_key, entity_kind, entity_id, readings)
        select tenant_id, metric_key, entity_kind, entity_id, sum(change)
        from (
            select tenant_id, metric_key, entity_kind, entity_id, value_count as change
            from inserted
            union all
            select tenant_id, metric_key, entity_kind, entity_id, -value_count from removed
        ) changes
        group by 1, 2, 3, 4 having sum(change) <> 0 order by 1, 2, 3, 4
        on conflict (tenant_id, metric_key, entity_kind, entity_id)
        do update set readings = s.readings + excluded.readings;
    else
        update analytics.metric_series s set readings = s.readings - gone.readings
        from (
            select tenant_id, metric_key, entity_kind, entity_id, sum(value_count) as readings
            from removed group by 1, 2, 3, 4
        ) gone
        where s.tenant_id = gone.tenant_id and s.metric_key = gone.metric_key
          and s.entity_kind = gone.entity_kind and s.entity_id = gone.entity_id;
        -- A series whose hours are all gone is gone too.
        delete from analytics.metric_series s using (
            select distinct tenant_id, metric_key, entity_kind, entity_id from removed
        ) gone
        where s.readings = 0 and s.tenant_id = gone.tenant_id
          and s.metric_key = gone.metric_key and s.entity_kind = gone.entity_kind
          and s.entity_id = gone.entity_id;
    end if;
    return null;
end
$$;

create trigger metrics_hour_count_inserted after insert on analytics.metrics_hour
    referencing new table as inserted
    for each statement execute function analytics.count_metric_series();
create trigger metrics_hour_count_updated after update on analytics.metrics_hour
    referencing old table as removed new table as inserted
    for each statement execute function analytics.count_metric_series();
create trigger metrics_hour_count_deleted after delete on analytics.metrics_hour
    referencing old table as removed
    for each statement execute function analytics.count_metric_series();

insert into analytics.metric_series (tenant_id, metric_key, entity_kind, entity_id, readings)
select tenant_id, metric_key, entity_kind, entity_id, sum(value_count)
from analytics.metrics_hour group by 1, 2, 3, 4;
