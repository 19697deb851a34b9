-- Live devices in the order of a list sorted by most recently seen (`entity_page!`: devices never
-- seen last, then the last sighting, then the id, in byte order), as migration 0028 did for the
-- sessions' start: a page is the first rows of the index after the cursor, read forwards or
-- backwards, not `analytics.sort_time` called on every device and a sort of them all.
create index devices_live_recent_idx on analytics.devices (
    tenant_id,
    (analytics.sort_time(last_seen_at) is null),
    (coalesce(analytics.sort_time(last_seen_at), '') collate "C"),
    device_id collate "C"
) where deleted_at is null;
