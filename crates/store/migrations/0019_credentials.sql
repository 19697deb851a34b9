-- Credentials follow their holder. API tokens and invitations record the account that created
-- them, so that removing or demoting that member can revoke what they handed out; and the
-- database itself holds the line between owners and admins, whatever SQL an admin's
-- transaction runs.

-- The creator: the transaction's user (`tributary.user_id`, which TenantTx sets for a member and
-- for an API token's holder), never a value the caller chooses. NULL for what the operator's CLI
-- or the platform made, and for credentials created before this migration. Not a foreign key:
-- it is history, like an audit entry's actor, and no account change may rewrite it.
alter table control.api_tokens add column created_by uuid default app.current_user_id();
alter table control.invitations add column created_by uuid default app.current_user_id();
create index api_tokens_created_by_idx on control.api_tokens (tenant_id, created_by)
    where revoked_at is null;
create index invitations_created_by_idx on control.invitations (tenant_id, created_by)
    where accepted_at is null and revoked_at is null;
grant select (created_by) on control.api_tokens, control.invitations
    to tributary_tenant_owner, tributary_tenant_admin;
-- The operator's member commands revoke what a removed or demoted member created.
grant update (revoked_at) on control.invitations to tributary_control;

-- A tenant role records itself as the creator, never someone else (nor nobody, which would
-- let a credential outlive its holder).
create policy creator_is_caller on control.api_tokens as restrictive for insert
    to tributary_tenant_owner, tributary_tenant_admin
    with check (created_by is not distinct from (select app.current_user_id()));
create policy creator_is_caller on control.invitations as restrictive for insert
    to tributary_tenant_owner, tributary_tenant_admin
    with check (created_by is not distinct from (select app.current_user_id()));

-- An admin cannot mint an owner's credential. Tenant roles may update only `revoked_at` of
-- either table (column grants), so an insert is the one way to write a role.
create policy below_owner on control.api_tokens as restrictive for insert
    to tributary_tenant_admin
    with check (role <> 'owner');
create policy below_owner on control.invitations as restrictive for insert
    to tributary_tenant_admin
    with check (role <> 'owner');

-- A revoked token or withdrawn invitation stays revoked, for every role: revocation on a
-- member's removal must not be undone by a later update.
create function control.refuse_credential_unrevoke() returns trigger
    language plpgsql
    set search_path = pg_catalog
as $$
begin
    if old.revoked_at is not null
       and (new.revoked_at is null or new.revoked_at <> old.revoked_at) then
        raise exception 'a revoked credential stays revoked'
            using errcode = 'insufficient_privilege';
    end if;
    return new;
end
$$;
create trigger refuse_unrevoke before update on control.api_tokens
    for each row execute function control.refuse_credential_unrevoke();
create trigger refuse_unrevoke before update on control.invitations
    for each row execute function control.refuse_credential_unrevoke();

-- Only an owner makes or unmakes an owner. A tenant role below owner cannot insert an owner's
-- membership, change a membership's role to or from owner (a no-op update that keeps the role
-- is harmless and allowed), nor delete an owner's membership (hidden from its deletes below).
create function control.refuse_owner_change() returns trigger
    language plpgsql
    set search_path = pg_catalog
as $$
begin
    if current_user in ('tributary_tenant_admin', 'tributary_tenant_operator',
                        'tributary_tenant_viewer')
       and (new.role = 'owner' or (tg_op = 'UPDATE' and old.role = 'owner'))
       and (tg_op = 'INSERT' or new.role is distinct from old.role) then
        raise exception 'only an owner makes or unmakes an owner'
            using errcode = 'insufficient_privilege';
    end if;
    return new;
end
$$;
create trigger refuse_owner_change before insert or update on control.members
    for each row execute function control.refuse_owner_change();
create policy owners_stay on control.members as restrictive for delete
    to tributary_tenant_admin
    using (role <> 'owner');

-- The plan is billing (`ManageBilling`: owners only). An admin keeps the other workspace fields.
revoke update (plan) on control.dim_tenant from tributary_tenant_admin;
