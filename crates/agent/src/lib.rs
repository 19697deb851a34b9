//! The customer-site agent: pairs with the platform's edge once, then reads its source's changes
//! and ships them outbound over mTLS. Every batch is written to a durable spool before it is
//! sent and removed only after the edge acknowledged it, so a crash, a restart or an unreachable
//! edge loses nothing; event ids derived from the source's positions make a resend harmless.
//!
//! Architecture invariant: the agent depends on the wire contract (`protocol`, `domain`) and
//! the edge client only, never on the platform's storage, bus or web code.

mod cli;
pub mod config;
mod health;
pub mod postgres;
mod request;
mod run;
pub mod simulator;
mod sink;
pub mod spool;
pub mod status;

pub use run::run_until;

use std::process::ExitCode;

use clap::Parser;

pub fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TRIBUTARY_AGENT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
