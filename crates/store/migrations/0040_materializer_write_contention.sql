-- Two costs of the materializer's writes, found with pg_stat_statements and auto_explain on the
-- pipeline benchmark (docs/benchmarks.md):
--
-- 1. The aggregator's queue waited. rollup_dirty was keyed by (key, minute), and every reading
--    transaction marks the minutes it touched with `on conflict do nothing`: an insert of a pair
--    another transaction had inserted or deleted and not yet committed waits for that
--    transaction. Metric keys are shared by tenants, so the materializer's concurrent
--    transactions waited for each other's commit, and for the aggregator's round, on the pairs
--    of the current minute. The queue now takes duplicates and never waits; the aggregator
--    takes every copy of the pairs it recomputes (it runs alone, under its advisory lock).
-- 2. The buckets' updates could not stay on their page. A minute and its hour are updated by
--    every batch that adds readings to them, never on an indexed column; with full pages each
--    update moved the row and inserted into all three indexes. Free space on each page lets
--    PostgreSQL update in place (a heap-only tuple), and prune the old versions there.

alter table pipeline.rollup_dirty drop constraint rollup_dirty_pkey;
create index rollup_dirty_minute_idx on pipeline.rollup_dirty (minute, metric_key);

alter table analytics.metrics_min set (fillfactor = 70);
alter table analytics.metrics_hour set (fillfactor = 70);
alter table analytics.metric_series set (fillfactor = 70);
