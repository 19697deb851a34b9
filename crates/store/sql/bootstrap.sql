-- Cluster-level bootstrap, run by the administrative connection before every migration run.
-- Idempotent. Roles are cluster objects, so they cannot live in a per-database migration; every
-- statement here converges an existing cluster to the documented role layout (ARCHITECTURE.md,
-- "Database roles") instead of assuming a fresh one.
do $bootstrap$
declare
    role_name text;
begin
    -- Roles nobody logs in as: the migration owner and the roles the request path switches to
    -- with `set local role` inside a tenant-scoped transaction.
    foreach role_name in array array[
        'tributary_owner',
        'tributary_control',
        'tributary_internal_ops',
        'tributary_tenant_owner',
        'tributary_tenant_admin',
        'tributary_tenant_operator',
        'tributary_tenant_viewer'
    ] loop
        if not exists (select 1 from pg_catalog.pg_roles where rolname = role_name) then
            execute format('create role %I nologin', role_name);
        end if;
        execute format(
            'alter role %I nologin nosuperuser nocreatedb nocreaterole noreplication nobypassrls',
            role_name);
    end loop;

    -- The request path's login role: owns nothing, inherits nothing, cannot bypass RLS. It can
    -- only `set local role` to one of the roles granted to it below.
    if not exists (select 1 from pg_catalog.pg_roles where rolname = 'tributary_app') then
        create role tributary_app login;
    end if;
    alter role tributary_app
        login noinherit nosuperuser nocreatedb nocreaterole noreplication nobypassrls;

    -- The pipeline's login role: the one documented role that bypasses RLS.
    if not exists (select 1 from pg_catalog.pg_roles where rolname = 'tributary_service') then
        create role tributary_service login;
    end if;
    alter role tributary_service
        login noinherit nosuperuser nocreatedb nocreaterole noreplication bypassrls;

    -- The global aggregator: the only writer of the cross-tenant rollups, and the one reader of
    -- every tenant's per-minute metrics besides the service login. Nobody logs in as it; the
    -- service login switches to it (`set local role`) for an aggregation round and, not
    -- inheriting it, holds none of its privileges otherwise.
    if not exists (select 1 from pg_catalog.pg_roles where rolname = 'tributary_aggregator') then
        create role tributary_aggregator nologin;
    end if;
    alter role tributary_aggregator
        nologin nosuperuser nocreatedb nocreaterole noreplication bypassrls;

    execute format('grant connect, temporary on database %I to tributary_app, tributary_service',
        current_database());
    execute format('grant create on database %I to tributary_owner', current_database());
end
$bootstrap$;

grant tributary_control, tributary_internal_ops,
      tributary_tenant_owner, tributary_tenant_admin,
      tributary_tenant_operator, tributary_tenant_viewer
   to tributary_app;

grant tributary_aggregator to tributary_service;

-- The administrative connection runs migrations as the owner role.
grant tributary_owner to current_user;

create schema if not exists tributary_meta authorization tributary_owner;
