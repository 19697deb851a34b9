//! Newtype ids, so a tenant id can never be passed where a user id is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An id that is not a UUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} id must be a UUID, got {given:?}")]
pub struct ParseIdError {
    kind: &'static str,
    given: String,
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh random id.
            pub fn new_random() -> Self {
                Self(Uuid::new_v4())
            }

            pub const fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }

            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;

            fn from_str(given: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(given.trim()).map(Self).map_err(|_| ParseIdError {
                    kind: $kind,
                    given: given.chars().take(64).collect(),
                })
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }
    };
}

uuid_id!(
    /// A tenant (a customer workspace). Leads every key of tenant data.
    TenantId,
    "tenant"
);
uuid_id!(
    /// A person's account; one account may be a member of several tenants.
    UserId,
    "user"
);
uuid_id!(
    /// One agent installation (a source database or a simulator) of a tenant.
    SourceId,
    "source"
);

impl TenantId {
    /// The audit chain of platform-wide actions (creating accounts, changing the rollup
    /// allowlist) that belong to no tenant.
    pub const PLATFORM: TenantId = TenantId(Uuid::nil());

    pub fn is_platform(&self) -> bool {
        self.0.is_nil()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trips_and_rejects_garbage() {
        let id = TenantId::new_random();
        assert_eq!(id.to_string().parse::<TenantId>().unwrap(), id);
        let error = "not-a-uuid".parse::<TenantId>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "tenant id must be a UUID, got \"not-a-uuid\""
        );
    }

    #[test]
    fn platform_tenant_is_nil() {
        assert!(TenantId::PLATFORM.is_platform());
        assert!(!TenantId::new_random().is_platform());
    }
}
