-- Single sign-on cannot raise anyone's privileges or pick where someone works (docs/sso.md,
-- docs/security.md "Single sign-on").

-- Where an account last worked: its next password sign-in lands there, never in the workspace
-- whose name sorts first (a name is whoever created that workspace's choice). The control role
-- records it when a session switches workspace or starts through a workspace's IdP.
alter table control.users add column last_tenant_id uuid;
grant update (last_tenant_id) on control.users to tributary_control;
