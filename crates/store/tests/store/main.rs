//! Integration tests of the store against a real PostgreSQL, as the production roles.

mod audit_chain;
mod bronze_partitions;
mod catalog_lint;
mod control_plane;
mod credentials;
mod isolation;
mod source_pause;
mod support;
mod tuning;
