-- Pausing a source's ingestion: while `paused_at` is set the edge refuses the source's batches
-- with `source_paused` (its agent keeps them spooled and sends them again on resume); its
-- status heartbeats are still taken. Who paused it, when and why is kept beside it and in the
-- audit trail (`source.pause`, `source.resume`).
alter table control.sources
    add column paused_at    timestamptz,
    add column paused_by    text check (length(paused_by) <= 200),
    add column pause_reason text check (length(pause_reason) <= 200),
    add constraint sources_pause_whole
        check (paused_at is not null or (paused_by is null and pause_reason is null));

-- Pausing is managing the source: the roles that may edit its status (ManageSources).
grant update (paused_at, paused_by, pause_reason) on control.sources
    to tributary_tenant_owner, tributary_tenant_admin;
