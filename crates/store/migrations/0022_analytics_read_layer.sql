-- The read layer over the tenant read models (docs/materializer.md, "The read layer").
--
-- metrics_hour: the hourly rollup of metrics_min, so a series of hours or days never reads
-- minutes. The materializer recomputes every hour it touches from that hour's minutes in the
-- transaction that writes the minutes, so an hour is always exactly the sum of its minutes:
-- the exact sum of their exact sums, their counts, min, max, and the last value by the same
-- ordering as a minute's (measured at, then position, then reading id in byte order). Hours are
-- aligned in UTC whatever the session's time zone.
create table analytics.metrics_hour (
    tenant_id         uuid not null,
    entity_kind       text not null check (entity_kind in ('site', 'device', 'session')),
    entity_id         text not null,
    metric_key        text not null check (length(metric_key) between 1 and 200),
    hour              timestamptz not null check (date_trunc('hour', hour, 'UTC') = hour),
    value_sum         double precision not null,
    value_sum_exact   numeric not null,
    value_count       bigint not null check (value_count > 0),
    value_min         double precision not null,
    value_max         double precision not null,
    last_value        double precision not null,
    last_pos_lsn      bigint not null,
    last_pos_seq      integer not null,
    -- Null only when every minute of the hour was written before migration 0016 kept them.
    last_measured_at  timestamptz,
    last_reading_id   text,
    primary key (tenant_id, entity_kind, entity_id, metric_key, hour)
);
create index metrics_hour_key_idx on analytics.metrics_hour (tenant_id, metric_key, hour);
-- A key's minutes over a range are read through metrics_min_key_idx (tenant_id, metric_key,
-- minute) of migration 0004: no new index on metrics_min.

select app.enforce_tenant_rls('analytics.metrics_hour');
grant select on analytics.metrics_hour to tributary_tenant_owner, tributary_tenant_admin,
    tributary_tenant_operator, tributary_tenant_viewer;
grant select, insert, update, delete on analytics.metrics_hour to tributary_service;

-- The shortest decimal that reads back as the same double, for the sums of minutes written
-- before their exact sums were kept.
set local extra_float_digits = 1;

insert into analytics.metrics_hour (tenant_id, entity_kind, entity_id, metric_key, hour,
    value_sum, value_sum_exact, value_count, value_min, value_max, last_value, last_pos_lsn,
    last_pos_seq, last_measured_at, last_reading_id)
select tenant_id, entity_kind, entity_id, metric_key, date_trunc('hour', minute, 'UTC'),
    sum(coalesce(value_sum_exact, value_sum::text::numeric))::float8,
    sum(coalesce(value_sum_exact, value_sum::text::numeric)),
    sum(value_count)::bigint, min(value_min), max(value_max),
    (array_agg(last_value order by last_measured_at desc nulls last, last_pos_lsn desc,
        last_pos_seq desc, last_reading_id collate "C" desc nulls last))[1],
    (array_agg(last_pos_lsn order by last_measured_at desc nulls last, last_pos_lsn desc,
        last_pos_seq desc, last_reading_id collate "C" desc nulls last))[1],
    (array_agg(last_pos_seq order by last_measured_at desc nulls last, last_pos_lsn desc,
        last_pos_seq desc, last_reading_id collate "C" desc nulls last))[1],
    (array_agg(last_measured_at order by last_measured_at desc nulls last, last_pos_lsn desc,
        last_pos_seq desc, last_reading_id collate "C" desc nulls last))[1],
    (array_agg(last_reading_id order by last_measured_at desc nulls last, last_pos_lsn desc,
        last_pos_seq desc, last_reading_id collate "C" desc nulls last))[1]
from analytics.metrics_min
group by tenant_id, entity_kind, entity_id, metric_key, date_trunc('hour', minute, 'UTC');

-- When an extras value was written. The materializer deletes and re-inserts an entity's extras
-- whenever the entity changes, so the newest seen_at of a key is when it was last written and
-- the oldest is when the longest-unchanged entity that still has it was written (not when the
-- key first appeared: values no entity holds any more leave no trace). Rows that predate this
-- migration carry the migration's time.
alter table analytics.extras_text add column seen_at timestamptz not null default now();
alter table analytics.extras_num add column seen_at timestamptz not null default now();
alter table analytics.extras_bool add column seen_at timestamptz not null default now();
alter table analytics.extras_time add column seen_at timestamptz not null default now();
