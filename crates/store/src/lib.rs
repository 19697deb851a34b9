//! The only crate that speaks SQL: the managed cluster, bootstrap and migrations, the
//! tenant-scoped transaction every request-path query runs in, repositories and the audit log.
//!
//! Two handles reach the database, and the type says which a caller holds: [`AppDb`] (login
//! `tributary_app`, never bypasses row-level security; the request path) and [`ServiceDb`]
//! (login `tributary_service`, BYPASSRLS; the edge, the bus, the pipeline, the scheduler and
//! operator tools). The top-level modules work through [`TenantTx`] or an [`AppDb`]; [`service`]
//! holds every function that needs a [`ServiceDb`].
//!
//! Architecture invariant: outside this crate, tenant data is reachable only through
//! [`TenantTx`], which sets the transaction-local tenant and switches to the database role of the
//! caller's platform role. Row-level security in the database does the filtering; this crate
//! never adds `where tenant_id = ...` as its only line of defence.

pub mod accounts;
pub mod alerts;
pub mod analytics;
pub mod api_tokens;
pub mod audit;
pub mod catalog;
pub mod cluster;
pub mod cohort;
mod connect;
pub mod connectors;
pub mod contact;
pub mod control;
pub mod dashboards;
pub mod dlq;
pub mod drift;
mod error;
pub mod invitations;
pub mod live;
pub mod masking;
pub mod members;
pub mod migrate;
pub mod read_models;
pub mod replay;
pub mod reports;
pub mod retention;
pub mod rollups;
pub mod schedule;
pub mod secret_box;
mod secret_token;
pub mod service;
pub mod sources;
pub mod sso;
mod tenant_tx;
pub mod tuning;

pub use connect::{
    APP_ROLE, AppDb, ConnectionSettings, Database, RoleCredentials, SERVICE_ROLE, ServiceDb,
};
pub use error::StoreError;
pub use tenant_tx::{Actor, Scope, TenantTx};

/// A random token of `bytes` bytes from the operating system's CSPRNG, hex-encoded.
pub fn random_token(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer).expect("the operating system's random source is available");
    hex::encode(buffer)
}
