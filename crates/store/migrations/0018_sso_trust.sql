-- Single sign-on cannot raise anyone's privileges or pick where someone works (docs/sso.md,
-- docs/security.md "Single sign-on").

-- Where an account last worked: its next password sign-in lands there, never in the workspace
-- whose name sorts first (a name is whoever created that workspace's choice). The control role
-- records it when a session switches workspace or starts through a workspace's IdP.
alter table control.users add column last_tenant_id uuid;
grant update (last_tenant_id) on control.users to tributary_control;

-- Configuring single sign-on is an owner's action (domain::Permission::ManageSso): whoever runs
-- the IdP vouches for everyone who signs in through it. Admins keep no access to it.
revoke all on control.sso_configs from tributary_tenant_admin;
revoke all on control.sso_domains from tributary_tenant_admin;

-- Whether owners and admins may sign in through the workspace's IdP. Off by default: whoever runs
-- the IdP could otherwise act as them. Just-in-time members join as admin only when it is on.
alter table control.sso_configs add column privileged_sign_in boolean not null default false;
alter table control.sso_configs add constraint sso_configs_admin_default_needs_privileged
    check (default_role <> 'admin' or privileged_sign_in);
grant update (privileged_sign_in) on control.sso_configs to tributary_tenant_owner;

-- The client secret is sealed bound to the workspace, issuer and client id it was entered for
-- (authenticated data of its AES-GCM ciphertext, store::sso): it opens for no other issuer, even
-- if the row around it changes. Secrets sealed before this migration are not bound: they are
-- never used again, and the owner enters the secret once more.
alter table control.sso_configs add column client_secret_bound boolean not null default false;
grant update (client_secret_bound) on control.sso_configs to tributary_tenant_owner;
