-- Entity lists of the read layer in byte order (crates/store/src/analytics.rs, `entity_page!`).
--
-- A list sorted by id orders by the id `collate "C"`, whatever the database's collation, so
-- that pages are the same on every server; the primary keys are in the database's collation and
-- cannot serve that order, so a first page sorted every live row of the tenant. These indexes
-- hold the live rows in that order: a page is the first rows of the index after the cursor.
create index sites_live_id_idx on analytics.sites (tenant_id, site_id collate "C")
    where deleted_at is null;
create index devices_live_id_idx on analytics.devices (tenant_id, device_id collate "C")
    where deleted_at is null;
create index sessions_live_id_idx on analytics.sessions (tenant_id, session_id collate "C")
    where deleted_at is null;
