//! Everything done with the service handle ([`crate::ServiceDb`], login `tributary_service`,
//! BYPASSRLS): the edge's look-ups, the bus's log, the pipeline's writes, the scheduler's jobs and
//! the operator tools' checks. The web app holds no [`crate::ServiceDb`], so nothing here is
//! reachable from a request.
//!
//! Architecture invariant: a function that needs the service pool lives in this module and takes
//! a `&ServiceDb`; the modules outside it reach the database only through [`crate::TenantTx`] or
//! an [`crate::AppDb`].

pub mod alerts;
pub mod audit;
pub mod bench_support;
pub mod bronze;
pub mod bus_log;
pub mod dlq;
pub mod maintenance;
pub mod masking;
pub mod read_models;
pub mod replay;
pub mod reports;
pub mod retention;
pub mod rollups;
pub mod sources;
