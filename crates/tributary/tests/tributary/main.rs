//! End-to-end tests of the `tributary` binary: the managed cluster's whole life, and the CLI.

mod alerts;
mod cli;
mod end_to_end;
mod faults;
mod managed_cluster;
mod operations;
mod overview;
mod support;
mod tidy;
mod wizard;
