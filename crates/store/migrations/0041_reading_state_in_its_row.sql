-- A reading's materialized state (the fields with the positions that set them, as in
-- pipeline.entity_state) is kept in its reading row: a reading was written twice, once as its
-- state and once as its row, each with its own index entry, and the state was the largest part of
-- the materializer's writes (pipeline benchmark, docs/benchmarks.md). Text, not jsonb: nothing
-- queries into it, so it is neither parsed on the way in nor rendered on the way out.
--
-- Readings without a row (deleted, or lacking a field a reading needs) keep their state in
-- entity_state, as do readings stored before this column: such a state moves into the row the
-- next time its reading changes (store::service::read_models::StatePlace).
alter table pipeline.metric_readings add column state text;
