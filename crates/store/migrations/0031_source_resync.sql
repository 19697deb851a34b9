-- A resync requested from the app or the API (`source.resync.request`, audited): the source's
-- running agent learns it from the edge's answer to its status heartbeat, drops its replication
-- slot, forgets its positions, takes a new snapshot, and names the request in its following
-- heartbeats; the edge then clears it (`source.resync.done`). One request at a time: asking
-- again while one waits keeps the first.
alter table control.sources
    add column resync_request_id   uuid,
    add column resync_requested_at timestamptz,
    add column resync_requested_by text check (length(resync_requested_by) <= 200),
    add constraint sources_resync_whole
        check ((resync_request_id is null) = (resync_requested_at is null)
               and (resync_request_id is not null or resync_requested_by is null));

-- Requesting is managing the source (ManageSources); the edge clears what the agent did.
grant update (resync_request_id, resync_requested_at, resync_requested_by) on control.sources
    to tributary_tenant_owner, tributary_tenant_admin, tributary_service;
