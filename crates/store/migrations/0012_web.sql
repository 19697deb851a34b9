-- The web app: which workspace a session looks at, the account list shown while signing in,
-- sign-in and form throttling, browsers trusted after a successful sign-in, password reset
-- links, invitations (the one tenant table here), and the public site's book-a-demo requests.

-- The workspace a signed-in session is looking at. The membership is checked again on every
-- request; this only remembers the choice.
alter table control.auth_sessions add column active_tenant_id uuid;
grant update (active_tenant_id) on control.auth_sessions to tributary_control;

-- Signing in lists the workspaces of the account signing in, across tenants. The control role,
-- outside any tenant and acting for one user (`tributary.user_id`, which TenantTx sets only for a
-- tenantless control scope acting as that user), may read that user's memberships and the
-- registry rows of those tenants. Inside a tenant nothing widens.
alter policy tenant_isolation on control.members
    using (tenant_id = (select app.current_tenant_id())
           or (current_user = 'tributary_control' and (select app.current_tenant_id()) is null
               and user_id = (select app.current_user_id())));
alter policy tenant_access on control.members
    using (tenant_id = (select app.current_tenant_id())
           or (current_user = 'tributary_control' and (select app.current_tenant_id()) is null
               and user_id = (select app.current_user_id())));
-- Whether the transaction is the control role signing a user in (no tenant set, a user set) and
-- that user is a member of `tenant`. PL/pgSQL so that the membership query is only planned, and
-- its privileges only checked, when the caller is the control role: the registry policy below
-- is evaluated for every role that reads control.dim_tenant, and most cannot read members.
create function app.signing_in_member_of(tenant uuid) returns boolean
    language plpgsql stable
    set search_path = pg_catalog
as $$
begin
    if current_user <> 'tributary_control' or app.current_tenant_id() is not null
       or app.current_user_id() is null then
        return false;
    end if;
    return exists (select 1 from control.members m
                   where m.tenant_id = tenant and m.user_id = app.current_user_id());
end
$$;
grant execute on function app.signing_in_member_of(uuid) to public;

alter policy tenant_isolation on control.dim_tenant
    using (tenant_id = (select app.current_tenant_id()) or (select app.acting_as_internal_ops())
           or app.signing_in_member_of(tenant_id));
alter policy tenant_access on control.dim_tenant
    using (tenant_id = (select app.current_tenant_id()) or (select app.acting_as_internal_ops())
           or app.signing_in_member_of(tenant_id));

-- Attempt counters for sign-in, sign-up and the contact form, one row per bucket (a hashed
-- account, client address or trusted device) and fixed window.
create table control.auth_throttle (
    bucket_hash        bytea primary key check (length(bucket_hash) = 32),
    window_started_at  timestamptz not null,
    attempts           integer not null check (attempts >= 0)
);
alter table control.auth_throttle enable row level security;
alter table control.auth_throttle force row level security;
create policy control_all on control.auth_throttle for all to tributary_control
    using (true) with check (true);
grant select, insert, update, delete on control.auth_throttle to tributary_control;

-- Browsers that signed in successfully as an account: their sign-in attempts are counted apart
-- from everyone else's, so nobody can lock the real user out by failing on purpose.
create table control.trusted_devices (
    device_hash  bytea primary key check (length(device_hash) = 32),
    user_id      uuid not null references control.users (user_id) on delete cascade,
    created_at   timestamptz not null default now(),
    expires_at   timestamptz not null
);
create index trusted_devices_user_idx on control.trusted_devices (user_id);
alter table control.trusted_devices enable row level security;
alter table control.trusted_devices force row level security;
create policy control_all on control.trusted_devices for all to tributary_control
    using (true) with check (true);
grant select, insert, delete on control.trusted_devices to tributary_control;

-- One-time password reset links: only the token's hash is kept; single use, short-lived.
create table control.password_resets (
    token_hash  bytea primary key check (length(token_hash) = 32),
    user_id     uuid not null references control.users (user_id) on delete cascade,
    created_at  timestamptz not null default now(),
    expires_at  timestamptz not null,
    used_at     timestamptz
);
create index password_resets_user_idx on control.password_resets (user_id);
alter table control.password_resets enable row level security;
alter table control.password_resets force row level security;
create policy control_all on control.password_resets for all to tributary_control
    using (true) with check (true);
grant select, insert, update (used_at), delete on control.password_resets to tributary_control;

-- Invitations to a workspace with a role, for one email address; accepted by signing in (or
-- creating an account) with that address. Only the link's hash is kept.
create table control.invitations (
    tenant_id      uuid not null references control.dim_tenant (tenant_id) on delete cascade,
    invitation_id  uuid not null,
    email          text not null check (length(email) between 3 and 320 and email = lower(email)),
    role           text not null check (role in ('owner', 'admin', 'operator', 'viewer')),
    token_hash     bytea not null check (length(token_hash) = 32),
    created_at     timestamptz not null default now(),
    expires_at     timestamptz not null,
    accepted_at    timestamptz,
    revoked_at     timestamptz,
    primary key (tenant_id, invitation_id)
);
select app.enforce_tenant_rls('control.invitations');
grant select (tenant_id, invitation_id, email, role, created_at, expires_at, accepted_at,
              revoked_at),
      insert, update (revoked_at) on control.invitations
    to tributary_tenant_owner, tributary_tenant_admin;
grant select, update (accepted_at) on control.invitations to tributary_control;

-- Book-a-demo requests from the public site. Prospects have no tenant yet; internal operations
-- reads them.
create table control.contact_requests (
    request_id   uuid primary key,
    name         text not null check (length(name) between 1 and 200),
    email        text not null check (length(email) between 3 and 320),
    company      text not null check (length(company) between 1 and 200),
    fleet_size   text not null check (length(fleet_size) between 1 and 50),
    message      text not null check (length(message) <= 4000),
    created_at   timestamptz not null default now()
);
alter table control.contact_requests enable row level security;
alter table control.contact_requests force row level security;
create policy control_insert on control.contact_requests for insert to tributary_control
    with check (true);
create policy internal_ops_read on control.contact_requests for select
    to tributary_internal_ops using (true);
grant insert on control.contact_requests to tributary_control;
grant select on control.contact_requests to tributary_internal_ops;
