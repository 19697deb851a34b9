-- The aggregator's reads, by the index that fits them (docs/materializer.md, "The global
-- aggregator"). Each round recomputes the queued (metric key, minute) pairs across every
-- tenant: a minute from metrics_min, its hour from metrics_hour (which the materializer keeps
-- exactly equal to the sum of the hour's minutes). The indexes of migrations 0004 and 0022 lead
-- on tenant_id, so "this key at this minute, every tenant" could only be read by scanning them
-- whole; these lead on the key and the bucket, so a round reads what it recomputes.
create index metrics_min_rollup_idx on analytics.metrics_min (metric_key, minute);
create index metrics_hour_rollup_idx on analytics.metrics_hour (metric_key, hour);

-- An hour is recomputed from its 1 row per (tenant, entity) instead of up to 60 minutes each.
grant select on analytics.metrics_hour to tributary_aggregator;
