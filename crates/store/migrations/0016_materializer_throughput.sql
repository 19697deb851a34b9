-- The materializer's batch apply and materialized truncates (docs/materializer.md).
--
-- metrics_min: what a bucket needs so a batch can add new readings to it instead of
-- recomputing it from every reading it holds, with the same result in any order. The sum is kept
-- exactly (each value as its shortest decimal, added as numeric, which is associative), and
-- value_sum is that exact sum rounded once to double precision; the last value's full ordering
-- key is kept so a newer reading can be compared with it. Rows written before this migration
-- have them null and are recomputed from their readings the first time they change.
alter table analytics.metrics_min
    add column value_sum_exact   numeric,
    add column last_measured_at  timestamptz,
    add column last_reading_id   text;

-- The newest TRUNCATE of each source table the materializer applied: an event of that table
-- older than it belongs to a truncated row, so it is tombstoned at the truncate's position even
-- when it arrives after the truncate.
create table pipeline.source_truncates (
    tenant_id     uuid not null,
    source_id     uuid not null,
    -- schema.table, as the source named it.
    source_table  text not null check (length(source_table) between 1 and 1000),
    pos_lsn       bigint not null,
    pos_seq       integer not null,
    truncated_at  timestamptz not null,
    primary key (tenant_id, source_id, source_table)
);
select app.enforce_tenant_rls('pipeline.source_truncates');
grant select, insert, update, delete on pipeline.source_truncates to tributary_service;
