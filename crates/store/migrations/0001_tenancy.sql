-- Tenancy primitives every later migration uses.
--
-- The tenant of a transaction lives in the transaction-local setting `tributary.tenant_id`,
-- set only by the store crate's `TenantTx` with `set_config(.., true)`. An unset or empty
-- setting yields NULL, and `tenant_id = NULL` is never true: no tenant means no rows.

create schema app;
create schema control;
create schema bronze;
create schema analytics;
create schema pipeline;
create schema audit;
create schema global_analytics;

alter default privileges for role tributary_owner revoke execute on functions from public;

create function app.current_tenant_id() returns uuid
    language sql stable parallel safe
    set search_path = pg_catalog
as $$ select nullif(pg_catalog.current_setting('tributary.tenant_id', true), '')::uuid $$;

create function app.current_user_id() returns uuid
    language sql stable parallel safe
    set search_path = pg_catalog
as $$ select nullif(pg_catalog.current_setting('tributary.user_id', true), '')::uuid $$;

-- True inside a transaction that switched to the internal operations role.
create function app.acting_as_internal_ops() returns boolean
    language sql stable parallel safe
    set search_path = pg_catalog
as $$ select current_user = 'tributary_internal_ops' $$;

-- Applies the one tenant policy shape to a table or partition: RLS enabled and forced, a
-- restrictive policy so that any permissive policy added later can only narrow, and the
-- permissive policy that grants the tenant its own rows. Used by migrations and by
-- bronze.ensure_partition, so a partition can never be created without the parent's isolation.
create function app.enforce_tenant_rls(target regclass) returns void
    language plpgsql
    set search_path = pg_catalog
as $$
begin
    execute format('alter table %s enable row level security', target);
    execute format('alter table %s force row level security', target);
    execute format(
        'create policy tenant_isolation on %s as restrictive for all to public '
        'using (tenant_id = (select app.current_tenant_id())) '
        'with check (tenant_id = (select app.current_tenant_id()))', target);
    execute format(
        'create policy tenant_access on %s as permissive for all to public '
        'using (tenant_id = (select app.current_tenant_id())) '
        'with check (tenant_id = (select app.current_tenant_id()))', target);
end
$$;

grant usage on schema app to tributary_app, tributary_service, tributary_control,
    tributary_internal_ops, tributary_tenant_owner, tributary_tenant_admin,
    tributary_tenant_operator, tributary_tenant_viewer;
grant execute on function app.current_tenant_id(), app.current_user_id(),
    app.acting_as_internal_ops()
    to public;
