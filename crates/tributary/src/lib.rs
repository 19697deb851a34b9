//! The `tributary` server: command line, configuration and the wiring of its roles. `main`
//! parses and dispatches; each command is a plain async function.

mod bench;
mod bench_capture;
mod bench_materialize;
mod cli;
mod commands;
mod demo;
mod ingestion;
mod settings;
mod up;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

pub use cli::Cli;
pub use settings::{DatabaseChoice, LogFormat, Settings};

/// Exit status of a check that ran and found problems.
const EXIT_CHECK_FAILED: u8 = 3;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let up = match &cli.command {
        cli::Command::Up(args) => Some(args),
        _ => None,
    };
    let settings = match Settings::resolve(&cli.global, up) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(settings.log_format);
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
    match runtime.block_on(commands::run(cli.command, settings)) {
        Ok(outcome) => outcome,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("TRIBUTARY_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_target(false).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
