-- Rotating a source's certificate on request (`source.certificate.rotate.request`, audited):
-- the edge asks the agent at its next status heartbeat to renew now; the renewal that follows
-- revokes every other certificate of the source and clears the request
-- (`source.certificate.rotate.done`). For a key that may have leaked, or a routine change.
alter table control.sources
    add column rotate_requested_at timestamptz;

-- Requesting is managing the source (ManageSources); the edge clears it on the renewal.
grant update (rotate_requested_at) on control.sources
    to tributary_tenant_owner, tributary_tenant_admin, tributary_service;
