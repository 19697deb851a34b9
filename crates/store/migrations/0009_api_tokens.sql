-- API tokens: how programs (and, until the web app's sign-in lands, operators' scripts) call the
-- JSON API on behalf of a tenant, with one of the tenant roles. Shown once, stored as a hash.

create table control.api_tokens (
    tenant_id     uuid not null references control.dim_tenant (tenant_id) on delete cascade,
    token_id      uuid not null,
    name          text not null check (length(name) between 1 and 100),
    role          text not null check (role in ('owner', 'admin', 'operator', 'viewer')),
    token_hash    bytea not null check (length(token_hash) = 32),
    created_at    timestamptz not null default now(),
    expires_at    timestamptz not null,
    last_used_at  timestamptz,
    revoked_at    timestamptz,
    primary key (tenant_id, token_id)
);
select app.enforce_tenant_rls('control.api_tokens');
grant select (tenant_id, token_id, name, role, created_at, expires_at, last_used_at, revoked_at),
      insert, update (revoked_at) on control.api_tokens
    to tributary_tenant_owner, tributary_tenant_admin;
grant select, insert, update (revoked_at, last_used_at) on control.api_tokens to tributary_control;

-- Actions taken with an API token are audited as such.
alter table audit.log drop constraint log_actor_type_check;
alter table audit.log add constraint log_actor_type_check
    check (actor_type in ('user', 'cli', 'system', 'agent', 'api_token'));
