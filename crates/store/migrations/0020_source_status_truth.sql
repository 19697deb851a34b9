-- What an agent's status heartbeat says beyond its positions: whether everything captured was
-- acknowledged (`caught_up`), the rate the edge acknowledges spooled bytes at and the time the
-- spool takes to drain at it, and the tables whose updates and deletes are not captured
-- because they have no replica identity. Older agents do not send them: the defaults.
alter table control.source_status
    add column caught_up             boolean not null default false,
    add column send_bytes_per_second double precision check (send_bytes_per_second >= 0),
    add column drain_seconds         double precision check (drain_seconds >= 0),
    add column not_captured          jsonb not null default '[]'
        check (jsonb_typeof(not_captured) = 'array' and jsonb_array_length(not_captured) <= 200);
