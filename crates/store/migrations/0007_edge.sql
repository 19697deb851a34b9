-- What the edge needs: the platform's internal certificate authority, each tenant's masking
-- secret, and control-plane grants for managing sources from the operator CLI.

-- The internal CA that signs the edge's server certificate and every agent's client
-- certificate. Its private key is stored encrypted (AES-256-GCM) with a key from the platform's
-- configuration, never in the clear. Platform data, not tenant data: only the service role.
create table control.certificate_authority (
    ca_id             text primary key check (ca_id = 'internal'),
    certificate_pem   text not null,
    key_ciphertext    bytea not null,
    key_nonce         bytea not null check (length(key_nonce) = 12),
    created_at        timestamptz not null default now()
);
alter table control.certificate_authority enable row level security;
alter table control.certificate_authority force row level security;
create policy service_all on control.certificate_authority for all to tributary_service
    using (true) with check (true);
grant select, insert on control.certificate_authority to tributary_service;

-- Each tenant's HMAC secret for the `hash` masking action: hashes are stable within a tenant and
-- unlinkable across tenants. Encrypted like the CA key. Nobody but the edge reads it.
create table control.tenant_secrets (
    tenant_id                uuid primary key references control.dim_tenant (tenant_id)
                                 on delete cascade,
    masking_key_ciphertext   bytea not null,
    masking_key_nonce        bytea not null check (length(masking_key_nonce) = 12),
    created_at               timestamptz not null default now()
);
select app.enforce_tenant_rls('control.tenant_secrets');
grant select, insert on control.tenant_secrets to tributary_service;

-- The operator CLI manages sources through the control role (`tributary source ...`).
grant select, insert, update (status, updated_at) on control.sources to tributary_control;
grant select, insert on control.pairing_tokens to tributary_control;
grant select, update (revoked_at, revocation_reason) on control.certificates to tributary_control;
