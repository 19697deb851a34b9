-- Single sign-on with OpenID Connect, per workspace (docs/sso.md): the workspace's IdP
-- configuration (the client secret sealed by the platform's key), its email domains and which of
-- them a test sign-in through that IdP verified, and the sign-in flows in progress.

-- One IdP per workspace. Owners and admins manage it; the control role reads it to run a
-- sign-in (nobody is a member yet at that point). The client secret is AES-256-GCM ciphertext
-- under a key derived from the platform's master secret: the database never holds it in clear.
create table control.sso_configs (
    tenant_id                 uuid primary key references control.dim_tenant (tenant_id)
                                  on delete cascade,
    issuer                    text not null check (length(issuer) between 8 and 500),
    client_id                 text not null check (length(client_id) between 1 and 500),
    client_secret_ciphertext  bytea not null check (length(client_secret_ciphertext) <= 2048),
    client_secret_nonce       bytea not null check (length(client_secret_nonce) = 12),
    -- Just-in-time members join with this role; never owner.
    default_role              text not null check (default_role in ('admin', 'operator', 'viewer')),
    enabled                   boolean not null default false,
    updated_at                timestamptz not null default now()
);
select app.enforce_tenant_rls('control.sso_configs');
grant select, insert, update (issuer, client_id, client_secret_ciphertext, client_secret_nonce,
                              default_role, enabled, updated_at), delete
    on control.sso_configs to tributary_tenant_owner, tributary_tenant_admin;
grant select on control.sso_configs to tributary_control;

-- The workspace's email domains. A domain is verified when an admin completes a test sign-in
-- through the workspace's IdP with an ID token carrying `email_verified=true` for an address on
-- it; only the control role running that callback sets `verified_at` (tenant roles may add and
-- remove domains, never mark one verified). Only verified domains route SSO sign-in.
create table control.sso_domains (
    tenant_id    uuid not null references control.dim_tenant (tenant_id) on delete cascade,
    domain       text not null check (length(domain) between 3 and 253 and domain = lower(domain)
                                      and domain ~ '^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$'),
    verified_at  timestamptz,
    verified_by  uuid,
    created_at   timestamptz not null default now(),
    primary key (tenant_id, domain)
);
select app.enforce_tenant_rls('control.sso_domains');
-- A domain routes to one workspace: at most one workspace holds it verified. This index is the
-- one deliberate exception to "tenant_id leads every key" (store::catalog::GLOBAL_INDEXES): the
-- claim is global by nature, and a second workspace learning "already verified elsewhere" is
-- what the rule means to tell it.
create unique index sso_domains_verified_once on control.sso_domains (domain)
    where verified_at is not null;
-- SSO sign-in starts from an email address, before any tenant is known: the control role,
-- outside any tenant, may read which workspace holds a verified domain, and nothing else.
alter policy tenant_isolation on control.sso_domains
    using (tenant_id = (select app.current_tenant_id())
           or (current_user = 'tributary_control' and (select app.current_tenant_id()) is null
               and verified_at is not null));
alter policy tenant_access on control.sso_domains
    using (tenant_id = (select app.current_tenant_id())
           or (current_user = 'tributary_control' and (select app.current_tenant_id()) is null
               and verified_at is not null));
grant select, insert (tenant_id, domain), delete on control.sso_domains
    to tributary_tenant_owner, tributary_tenant_admin;
grant select (tenant_id, domain, verified_at), update (verified_at, verified_by)
    on control.sso_domains to tributary_control;

-- Sign-in flows in progress: state, nonce and PKCE verifier kept server-side, bound to the
-- browser that started the flow by the hash of its `__Host-` flow cookie, single use, short.
-- The PKCE verifier is sealed like the client secret. `purpose` is `sign_in`, or `test` for an
-- admin's test sign-in (which verifies domains instead of signing anyone in; `user_id` is that
-- admin).
create table control.sso_flows (
    tenant_id            uuid not null references control.dim_tenant (tenant_id) on delete cascade,
    state_hash           bytea not null check (length(state_hash) = 32),
    binding_hash         bytea not null check (length(binding_hash) = 32),
    purpose              text not null check (purpose in ('sign_in', 'test')),
    user_id              uuid,
    nonce                text not null check (length(nonce) between 16 and 200),
    verifier_ciphertext  bytea not null check (length(verifier_ciphertext) <= 512),
    verifier_nonce       bytea not null check (length(verifier_nonce) = 12),
    redirect_uri         text not null check (length(redirect_uri) <= 500),
    created_at           timestamptz not null default now(),
    expires_at           timestamptz not null,
    used_at              timestamptz,
    primary key (tenant_id, state_hash)
);
select app.enforce_tenant_rls('control.sso_flows');
grant select, insert, update (used_at), delete on control.sso_flows to tributary_control;

-- A session started through a workspace's IdP acts in that workspace only: that IdP vouches for
-- the address, not for the account's other workspaces.
alter table control.auth_sessions add column sso_tenant_id uuid;
