//! The `tributary` server: command line, configuration and the wiring of its roles. `main`
//! parses and calls [`run`]; each command is a plain async function. The benchmarks
//! (`tributary-bench`) start their commands the same way ([`launch`]) and reuse the settings,
//! the database connection and the ingestion roles.

mod cli;
mod commands;
mod connection;
mod demo;
mod edge_url;
// The running roles hold tasks and channels, nothing worth printing.
#[allow(missing_debug_implementations)]
pub mod ingestion;
mod launch;
mod logging;
mod operations;
mod settings;
mod up;

use std::process::ExitCode;

pub use cli::{Cli, GlobalOptions};
pub use connection::Connected;
pub use launch::launch;
pub use logging::LogFormat;
pub use settings::{DatabaseChoice, Settings};

/// Runs a parsed command line to its exit status.
pub fn run(cli: Cli) -> ExitCode {
    let up = match &cli.command {
        cli::Command::Up(args) => Some(args.as_ref()),
        _ => None,
    };
    let settings = Settings::resolve(&cli.global, up);
    launch(settings, async |settings| {
        commands::run(cli.command, settings).await
    })
}
