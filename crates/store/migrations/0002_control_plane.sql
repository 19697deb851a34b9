-- Control plane: tenants, people, their memberships, sources and the edge's credentials.

grant usage on schema control to tributary_service, tributary_control, tributary_internal_ops,
    tributary_tenant_owner, tributary_tenant_admin, tributary_tenant_operator,
    tributary_tenant_viewer;

create table control.dim_tenant (
    tenant_id   uuid primary key,
    name        text not null check (length(name) between 1 and 200),
    plan        text not null check (plan in ('free', 'team', 'business', 'enterprise')),
    industry    text not null check (length(industry) between 1 and 100),
    region      text not null check (length(region) between 1 and 100),
    status      text not null default 'active' check (status in ('active', 'disabled')),
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now()
);
-- The tenant registry is the one tenant table internal operations may read across tenants;
-- writes stay bound to the transaction's tenant for everyone.
alter table control.dim_tenant enable row level security;
alter table control.dim_tenant force row level security;
create policy tenant_isolation on control.dim_tenant as restrictive for all to public
    using (tenant_id = (select app.current_tenant_id()) or (select app.acting_as_internal_ops()))
    with check (tenant_id = (select app.current_tenant_id()));
create policy tenant_access on control.dim_tenant as permissive for all to public
    using (tenant_id = (select app.current_tenant_id()) or (select app.acting_as_internal_ops()))
    with check (tenant_id = (select app.current_tenant_id()));
grant select on control.dim_tenant to tributary_tenant_owner, tributary_tenant_admin,
    tributary_tenant_operator, tributary_tenant_viewer, tributary_internal_ops,
    tributary_control, tributary_service;
grant update (name, plan, industry, region, updated_at) on control.dim_tenant
    to tributary_tenant_owner, tributary_tenant_admin;
grant insert, update on control.dim_tenant to tributary_control;

-- People. Not tenant data: one account may belong to several workspaces.
create table control.users (
    user_id        uuid primary key,
    email          text not null check (length(email) between 3 and 320 and email = lower(email)),
    display_name   text not null default '' check (length(display_name) <= 200),
    password_hash  text,
    created_at     timestamptz not null default now(),
    disabled_at    timestamptz
);
create unique index users_email_key on control.users (email);
alter table control.users enable row level security;
alter table control.users force row level security;
-- The control plane (sign-in, sign-up, operator CLI) sees every account; a tenant role sees the
-- accounts that are members of its own tenant (policy below control.members).
create policy control_all on control.users for all to tributary_control
    using (true) with check (true);
grant select, insert, update (display_name, password_hash, disabled_at) on control.users
    to tributary_control;
grant select (user_id, email, display_name, created_at, disabled_at) on control.users
    to tributary_tenant_owner, tributary_tenant_admin, tributary_tenant_operator,
       tributary_tenant_viewer;

create table control.members (
    tenant_id   uuid not null references control.dim_tenant (tenant_id) on delete cascade,
    user_id     uuid not null references control.users (user_id) on delete cascade,
    role        text not null check (role in ('owner', 'admin', 'operator', 'viewer')),
    created_at  timestamptz not null default now(),
    primary key (tenant_id, user_id)
);
select app.enforce_tenant_rls('control.members');
grant select on control.members to tributary_tenant_owner, tributary_tenant_admin,
    tributary_tenant_operator, tributary_tenant_viewer, tributary_control, tributary_service;
grant insert, update (role), delete on control.members
    to tributary_tenant_owner, tributary_tenant_admin, tributary_control;

-- A tenant role sees the accounts that are members of its own tenant, through control.members'
-- own tenant policy.
create policy tenant_members on control.users for select
    to tributary_tenant_owner, tributary_tenant_admin, tributary_tenant_operator,
       tributary_tenant_viewer
    using (exists (select 1 from control.members m where m.user_id = users.user_id));

-- Server-side sign-in sessions; the cookie carries a random token, this table its hash.
create table control.auth_sessions (
    session_hash         bytea primary key,
    user_id              uuid not null references control.users (user_id) on delete cascade,
    created_at           timestamptz not null default now(),
    last_seen_at         timestamptz not null default now(),
    idle_expires_at      timestamptz not null,
    absolute_expires_at  timestamptz not null,
    revoked_at           timestamptz,
    client_addr          inet,
    user_agent           text check (length(user_agent) <= 500)
);
alter table control.auth_sessions enable row level security;
alter table control.auth_sessions force row level security;
create policy control_all on control.auth_sessions for all to tributary_control
    using (true) with check (true);
grant select, insert, update (last_seen_at, idle_expires_at, revoked_at), delete
    on control.auth_sessions to tributary_control;

create table control.tenant_settings (
    tenant_id              uuid primary key references control.dim_tenant (tenant_id)
                               on delete cascade,
    bronze_retention_days  integer not null default 30
                               check (bronze_retention_days between 1 and 3650),
    updated_at             timestamptz not null default now()
);
select app.enforce_tenant_rls('control.tenant_settings');
grant select on control.tenant_settings to tributary_tenant_owner, tributary_tenant_admin,
    tributary_control, tributary_service;
grant update (bronze_retention_days, updated_at) on control.tenant_settings
    to tributary_tenant_owner, tributary_tenant_admin;
grant insert on control.tenant_settings to tributary_control;

-- PII masking applies at the edge, before the bus and before bronze.
create table control.pii_masking_policy (
    tenant_id   uuid not null references control.dim_tenant (tenant_id) on delete cascade,
    field_path  text not null check (length(field_path) between 1 and 500),
    action      text not null check (action in ('hash', 'redact', 'drop')),
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now(),
    primary key (tenant_id, field_path)
);
select app.enforce_tenant_rls('control.pii_masking_policy');
grant select on control.pii_masking_policy to tributary_tenant_owner, tributary_tenant_admin,
    tributary_service;
grant insert, update (action, updated_at), delete on control.pii_masking_policy
    to tributary_tenant_owner, tributary_tenant_admin;

-- Metric keys that may reach global_analytics.*. Platform-wide, managed by internal operations.
create table control.global_rollup_key_allowlist (
    key       text primary key check (key ~ '^[a-z][a-z0-9_.]{0,99}$'),
    added_by  text not null,
    added_at  timestamptz not null default now()
);
alter table control.global_rollup_key_allowlist enable row level security;
alter table control.global_rollup_key_allowlist force row level security;
create policy internal_ops_all on control.global_rollup_key_allowlist for all
    to tributary_internal_ops using (true) with check (true);
create policy service_read on control.global_rollup_key_allowlist for select
    to tributary_service using (true);
grant select, insert, delete on control.global_rollup_key_allowlist to tributary_internal_ops;
grant select on control.global_rollup_key_allowlist to tributary_service;

-- Sources: one per agent installation (a PostgreSQL database, a simulator, ...).
create table control.sources (
    tenant_id    uuid not null references control.dim_tenant (tenant_id) on delete cascade,
    source_id    uuid not null,
    name         text not null check (length(name) between 1 and 200),
    kind         text not null check (kind in ('postgres', 'simulator')),
    status       text not null default 'pending'
                     check (status in ('pending', 'active', 'disabled', 'revoked')),
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now(),
    primary key (tenant_id, source_id),
    unique (tenant_id, name)
);
select app.enforce_tenant_rls('control.sources');
grant select on control.sources to tributary_tenant_owner, tributary_tenant_admin,
    tributary_tenant_operator, tributary_service;
grant insert, update (name, status, updated_at), delete on control.sources
    to tributary_tenant_owner, tributary_tenant_admin;
grant update (status, updated_at) on control.sources to tributary_service;

-- One-time pairing tokens; only a hash of the secret is kept.
create table control.pairing_tokens (
    tenant_id   uuid not null,
    token_id    uuid not null,
    source_id   uuid not null,
    token_hash  bytea not null check (length(token_hash) = 32),
    created_at  timestamptz not null default now(),
    expires_at  timestamptz not null,
    used_at     timestamptz,
    primary key (tenant_id, token_id),
    foreign key (tenant_id, source_id) references control.sources (tenant_id, source_id)
        on delete cascade
);
select app.enforce_tenant_rls('control.pairing_tokens');
grant select, insert on control.pairing_tokens to tributary_tenant_owner,
    tributary_tenant_admin;
grant select, update (used_at) on control.pairing_tokens to tributary_service;

-- Client certificates issued to agents, and their revocation.
create table control.certificates (
    tenant_id           uuid not null,
    serial              text not null check (serial ~ '^[0-9a-f]{1,64}$'),
    source_id           uuid not null,
    fingerprint_sha256  bytea not null check (length(fingerprint_sha256) = 32),
    not_before          timestamptz not null,
    not_after           timestamptz not null,
    issued_at           timestamptz not null default now(),
    revoked_at          timestamptz,
    revocation_reason   text check (length(revocation_reason) <= 200),
    primary key (tenant_id, serial),
    foreign key (tenant_id, source_id) references control.sources (tenant_id, source_id)
        on delete cascade
);
create index certificates_source_idx on control.certificates (tenant_id, source_id);
select app.enforce_tenant_rls('control.certificates');
grant select on control.certificates to tributary_tenant_owner, tributary_tenant_admin,
    tributary_tenant_operator;
grant update (revoked_at, revocation_reason) on control.certificates
    to tributary_tenant_owner, tributary_tenant_admin;
grant select, insert, update (revoked_at, revocation_reason) on control.certificates
    to tributary_service;
