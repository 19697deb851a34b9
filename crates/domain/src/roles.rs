//! The role model and the one permission table every layer consults.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Who someone is in the platform. The first four are a member's role inside one tenant; the
/// last two are platform roles nobody can be invited to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Billing and everything an admin may do.
    Owner,
    /// Sources, alerts, members, retention, masking.
    Admin,
    /// Dashboards, and acknowledging or silencing alerts.
    Operator,
    /// Read-only dashboards.
    Viewer,
    /// The platform's operations staff: cross-tenant registry and allowlisted rollups only.
    InternalOps,
    /// The pipeline's backend writes; bypasses row-level security.
    ServiceRole,
}

/// Something a role may or may not do. Each variant names one capability a route, a CLI command
/// or a database grant checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    ViewDashboards,
    ViewWorkspace,
    ViewSources,
    ManageSources,
    ViewBronze,
    ViewDeadLetters,
    ManageReplays,
    ManageMembers,
    ManageApiTokens,
    ManageWorkspace,
    ManageRetention,
    ManageMasking,
    ManageAlertRules,
    AcknowledgeAlerts,
    /// Defining reports: a dataset, its columns, filters and format (docs/reports.md).
    ManageReports,
    /// Running a report and downloading its file, of data the member may already read: the
    /// run reads in the member's own role.
    RunReports,
    ManageBilling,
    /// Configuring single sign-on: the IdP, its client, the workspace's email domains and
    /// whether privileged members may sign in through it. An owner's action: whoever controls
    /// the IdP vouches for everyone who signs in through it.
    ManageSso,
    ViewAudit,
    AppendAudit,
    ViewTenantRegistry,
    ViewGlobalRollups,
    ManageRollupAllowlist,
    WritePipelineData,
}

use Permission as P;
use Role::{Admin, InternalOps, Operator, Owner, ServiceRole, Viewer};

/// The permission table: for each permission, the roles that hold it. The database grants in
/// the store crate's migrations mirror it; the role-matrix test checks both against each other.
const PERMISSION_TABLE: &[(Permission, &[Role])] = &[
    (P::ViewDashboards, &[Owner, Admin, Operator, Viewer]),
    (P::ViewWorkspace, &[Owner, Admin, Operator, Viewer]),
    (P::ViewSources, &[Owner, Admin, Operator]),
    (P::ManageSources, &[Owner, Admin]),
    (P::ViewBronze, &[Owner, Admin, Operator]),
    (P::ViewDeadLetters, &[Owner, Admin, Operator]),
    (P::ManageReplays, &[Owner, Admin]),
    (P::ManageMembers, &[Owner, Admin]),
    (P::ManageApiTokens, &[Owner, Admin]),
    (P::ManageWorkspace, &[Owner, Admin]),
    (P::ManageRetention, &[Owner, Admin]),
    (P::ManageMasking, &[Owner, Admin]),
    (P::ManageAlertRules, &[Owner, Admin]),
    (P::AcknowledgeAlerts, &[Owner, Admin, Operator]),
    (P::ManageReports, &[Owner, Admin]),
    (P::RunReports, &[Owner, Admin, Operator, Viewer]),
    (P::ManageBilling, &[Owner]),
    (P::ManageSso, &[Owner]),
    (P::ViewAudit, &[Owner, Admin, InternalOps]),
    (
        P::AppendAudit,
        &[Owner, Admin, Operator, InternalOps, ServiceRole],
    ),
    (P::ViewTenantRegistry, &[InternalOps]),
    (P::ViewGlobalRollups, &[InternalOps]),
    (P::ManageRollupAllowlist, &[InternalOps]),
    (P::WritePipelineData, &[ServiceRole]),
];

impl Role {
    pub const ALL: [Role; 6] = [Owner, Admin, Operator, Viewer, InternalOps, ServiceRole];

    /// The roles a member of a tenant can hold.
    pub const TENANT_ROLES: [Role; 4] = [Owner, Admin, Operator, Viewer];

    /// The roles a workspace's single sign-on may give the members it creates just in time:
    /// never owner (an IdP account must not take over the workspace).
    pub const SSO_DEFAULT_ROLES: [Role; 3] = [Admin, Operator, Viewer];

    pub fn allows(self, permission: Permission) -> bool {
        PERMISSION_TABLE
            .iter()
            .find(|(entry, _)| *entry == permission)
            .is_some_and(|(_, roles)| roles.contains(&self))
    }

    pub fn is_tenant_role(self) -> bool {
        Self::TENANT_ROLES.contains(&self)
    }

    /// Owner and admin: the roles that manage a workspace's members, sources and keys. Their
    /// members sign in through the workspace's IdP only when its owner allowed it, since
    /// whoever runs the IdP could otherwise act as them.
    pub fn is_privileged(self) -> bool {
        matches!(self, Owner | Admin)
    }

    /// Whether this role may give `role` to someone (an invitation, a role change, an API
    /// token): only tenant roles, none above its own (owner, then admin, operator, viewer), so
    /// nobody hands out more than they hold. Whether the role may manage members or tokens at
    /// all is the permission table's say.
    pub fn may_grant(self, role: Role) -> bool {
        self.is_tenant_role() && role.is_tenant_role() && role >= self
    }

    /// Whether this role may change a member who holds `current` to `new` (`None`: remove
    /// them). An owner's membership is changed only by an owner; the store separately keeps at
    /// least one owner.
    pub fn may_change_member(self, current: Role, new: Option<Role>) -> bool {
        let touches_owner = current == Owner || new == Some(Owner);
        self.allows(P::ManageMembers)
            && new.is_none_or(|role| self.may_grant(role))
            && (!touches_owner || self == Owner)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Owner => "owner",
            Admin => "admin",
            Operator => "operator",
            Viewer => "viewer",
            InternalOps => "internal_ops",
            ServiceRole => "service_role",
        }
    }
}

impl Permission {
    pub const ALL: [Permission; 24] = [
        P::ViewDashboards,
        P::ViewWorkspace,
        P::ViewSources,
        P::ManageSources,
        P::ViewBronze,
        P::ViewDeadLetters,
        P::ManageReplays,
        P::ManageMembers,
        P::ManageApiTokens,
        P::ManageWorkspace,
        P::ManageRetention,
        P::ManageMasking,
        P::ManageAlertRules,
        P::AcknowledgeAlerts,
        P::ManageReports,
        P::RunReports,
        P::ManageBilling,
        P::ManageSso,
        P::ViewAudit,
        P::AppendAudit,
        P::ViewTenantRegistry,
        P::ViewGlobalRollups,
        P::ManageRollupAllowlist,
        P::WritePipelineData,
    ];
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of [`Role::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown role {0:?}: expected one of owner, admin, operator, viewer, internal_ops, service_role"
)]
pub struct UnknownRole(String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(given: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == given.trim())
            .ok_or_else(|| UnknownRole(given.chars().take(64).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_sign_on_creates_no_owner_and_only_tenant_roles() {
        for role in Role::SSO_DEFAULT_ROLES {
            assert!(role.is_tenant_role(), "{role}");
            assert_ne!(role, Owner);
        }
        assert_eq!(
            Role::SSO_DEFAULT_ROLES.len(),
            Role::TENANT_ROLES.len() - 1,
            "every tenant role but owner"
        );
    }

    #[test]
    fn every_permission_has_exactly_one_row() {
        for permission in Permission::ALL {
            let rows = PERMISSION_TABLE
                .iter()
                .filter(|(entry, _)| *entry == permission)
                .count();
            assert_eq!(
                rows, 1,
                "{permission:?} must appear once in PERMISSION_TABLE"
            );
        }
        assert_eq!(PERMISSION_TABLE.len(), Permission::ALL.len());
    }

    #[test]
    fn the_seed_role_model_holds() {
        // owner — billing + everything an admin may do
        for permission in Permission::ALL {
            if Admin.allows(permission) {
                assert!(Owner.allows(permission), "owner lacks {permission:?}");
            }
        }
        assert!(Owner.allows(P::ManageBilling) && !Admin.allows(P::ManageBilling));
        // single sign-on decides who may act as the workspace's members: owners only
        assert!(Owner.allows(P::ManageSso) && !Admin.allows(P::ManageSso));
        assert!(Owner.is_privileged() && Admin.is_privileged());
        assert!(!Operator.is_privileged() && !Viewer.is_privileged());
        // admin — sources, alerts, members, retention, masking
        for permission in [
            P::ManageSources,
            P::ManageAlertRules,
            P::ManageMembers,
            P::ManageRetention,
            P::ManageMasking,
        ] {
            assert!(Admin.allows(permission));
            assert!(!Operator.allows(permission) && !Viewer.allows(permission));
        }
        // operator — dashboards + ack/silence alerts
        assert!(Operator.allows(P::ViewDashboards) && Operator.allows(P::AcknowledgeAlerts));
        // viewer — read-only dashboards
        let viewer: Vec<_> = Permission::ALL
            .into_iter()
            .filter(|permission| Viewer.allows(*permission))
            .collect();
        // (a report's run reads in the viewer's own role: what the dashboards already show)
        assert_eq!(viewer, [P::ViewDashboards, P::ViewWorkspace, P::RunReports]);
        // internal_ops — cross-tenant analytics (allowlisted only), never a tenant's read models
        assert!(InternalOps.allows(P::ViewGlobalRollups));
        assert!(!InternalOps.allows(P::ViewDashboards));
        // service_role — backend writes; no tenant role writes pipeline data or reads rollups
        for role in Role::TENANT_ROLES {
            assert!(!role.allows(P::WritePipelineData));
            assert!(!role.allows(P::ViewGlobalRollups));
        }
    }

    #[test]
    fn nobody_grants_more_than_they_hold() {
        for granter in Role::ALL {
            for role in Role::ALL {
                let rank = |role: Role| Role::TENANT_ROLES.iter().position(|r| *r == role);
                let expected = match (rank(granter), rank(role)) {
                    (Some(granter), Some(role)) => role >= granter,
                    _ => false,
                };
                assert_eq!(granter.may_grant(role), expected, "{granter} grants {role}");
            }
        }
        // Only an owner touches an owner's membership, in either direction.
        assert!(Owner.may_change_member(Owner, Some(Admin)));
        assert!(Owner.may_change_member(Admin, Some(Owner)));
        assert!(Owner.may_change_member(Owner, None));
        assert!(!Admin.may_change_member(Owner, Some(Viewer)));
        assert!(!Admin.may_change_member(Owner, None));
        assert!(!Admin.may_change_member(Viewer, Some(Owner)));
        assert!(Admin.may_change_member(Viewer, Some(Operator)));
        assert!(Admin.may_change_member(Admin, None));
        assert!(!Admin.may_change_member(Viewer, Some(InternalOps)));
        for role in [Operator, Viewer, InternalOps, ServiceRole] {
            assert!(!role.may_change_member(Viewer, None), "{role}");
        }
    }

    #[test]
    fn roles_parse_from_their_names() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert!("superuser".parse::<Role>().is_err());
    }
}
