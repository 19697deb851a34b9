-- The dead-letter explorer: a source's letters grouped, filtered and paged by the table their
-- event came from and by when they last failed, and replays of a chosen part of them whose
-- progress is readable while they run.

-- The event's `schema.table`, read from the readable copy of the envelope (null when the event
-- could not be kept readable).
alter table pipeline.dlq add column source_table text
    generated always as ((event #>> '{event,schema}') || '.' || (event #>> '{event,table}')) stored;
-- The explorer pages a source's letters by latest failure, newest first.
create index dlq_by_source_failure
    on pipeline.dlq (tenant_id, source_id, last_failed_at desc, dlq_id desc);

-- A dead-letter replay may be limited to one source and, within it, to a reason code, a table,
-- chosen letters and a window of latest failures (`range_from`/`range_to`); every condition
-- given must hold. `events_total` is how many letters it found to replay when it started.
alter table pipeline.replay_requests
    add column source_id uuid,
    add column reason_code text check (reason_code ~ '^[a-z][a-z0-9_]{0,63}$'),
    add column source_table text check (length(source_table) between 1 and 300),
    add column dlq_ids uuid[] check (cardinality(dlq_ids) between 1 and 1000),
    add column events_total bigint check (events_total >= 0),
    add constraint replay_requests_selection_check
        check (kind = 'dlq' or (source_id is null and reason_code is null
                                and source_table is null and dlq_ids is null)),
    add constraint replay_requests_dlq_window_check
        check (kind <> 'dlq' or range_from is null or range_to is null or range_from < range_to);
grant update (events_total) on pipeline.replay_requests to tributary_service;
