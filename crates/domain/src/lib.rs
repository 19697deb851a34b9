//! Tributary's vocabulary: typed ids, tenant attributes, the role model and its permission table.
//!
//! Architecture invariant: this crate does no I/O and depends on no other crate of the workspace.
//! Every layer above (store, edge, pipeline, web) consults [`Role::allows`] instead of keeping a
//! list of its own, so the role model lives in exactly one place.

pub mod alerting;
pub mod backoff;
mod event;
mod ids;
pub mod read_model;
mod roles;
mod tenant;

pub use backoff::Backoff;
pub use event::{EventId, Lsn, ParseLsnError};
pub use ids::{ParseIdError, SourceId, TenantId, UserId};
pub use roles::{Permission, Role, UnknownRole};
pub use tenant::{Email, InvalidTenantAttribute, Plan, TenantAttributes};
