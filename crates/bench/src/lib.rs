//! `tributary-bench`: benchmarks of the platform that print figures against a baseline measured
//! in the same run (docs/benchmarks.md). They start the server's own roles through the
//! `tributary` library; `main` parses and calls [`run`].

mod alerts;
mod capture;
mod dashboard;
mod export;
mod ingest;
mod machine;
mod materialize;
mod pipeline;
mod scratch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tributary::{GlobalOptions, Settings};

/// Benchmarks that print figures against a baseline measured in the same run.
#[derive(Debug, Parser)]
#[command(
    name = "tributary-bench",
    version,
    about,
    long_about = "Benchmarks of Tributary that print figures against a baseline measured in the \
same run: ingest against a raw COPY, the agent's capture against pg_recvlogical, the materializer \
against the bronze writer, the analytics API against hand-written SQL, report exports against \
COPY TO STDOUT; `pipeline` runs every stage against its baseline and then the whole path from \
source commits to read models and rollups. They print figures; they are not tests.\n\n\
Each starts a private platform (and what else it measures) in temporary directories and removes \
them afterwards, unless a database is given. The options of the platform are those of \
`tributary`, with the same TRIBUTARY_* environment variables and --config file.",
    after_help = "Examples:\n  \
tributary-bench ingest                          1M events through edge, bus and bronze\n  \
tributary-bench capture --rows 200000 --skip-latency\n  \
tributary-bench materialize --events 50000 --rate 2000 --seconds 10\n  \
tributary-bench dashboard --events 1000000 --tenants 5\n  \
tributary-bench alerts --rules 10000 --tenants 20\n  \
tributary-bench export                          10M metric rows as CSV and Parquet\n  \
tributary-bench pipeline --json figures.json     every stage, its baseline and the whole path\n\n\
Build with --release for meaningful figures."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOptions,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ingest throughput and ack latency through edge -> bus -> bronze over mTLS, against a raw
    /// COPY of the same rows into the same bronze table. Runs a private platform in a temporary
    /// data directory (or on --database-url) and removes it afterwards.
    Ingest(ingest::IngestArgs),
    /// The agent's PostgreSQL capture rate against pg_recvlogical on the same source and WAL,
    /// then commit-to-bronze latency through agent, edge, bus and bronze at a fixed rate. Starts
    /// a private source cluster and platform in temporary directories and removes them after.
    Capture(capture::CaptureArgs),
    /// Tenant materializer throughput against the bronze writer alone on the same events (a
    /// ratio), and the time from an event's ack to its visibility in analytics.* and in the
    /// global rollups at a steady offered rate. Runs a private platform in a temporary
    /// directory unless a database is given.
    Materialize(materialize::MaterializeArgs),
    /// Server time of each dashboard and explorer query through the JSON API against the same
    /// question as hand-written SQL on the same data (a ratio), over one tenant's read models
    /// worth 10M events beside 20 other tenants, and whether a week of 1-hour buckets is read
    /// from the hourly rollup. Runs a private platform in a temporary directory unless a
    /// database is given.
    Dashboard(dashboard::DashboardArgs),
    /// How long the alert evaluator takes to evaluate every rule of many tenants once (10,000
    /// rules over 20 tenants by default), against the rules' interval (a ratio). Runs a private
    /// platform database in a temporary directory unless a database is given.
    Alerts(alerts::AlertsArgs),
    /// The report runner's export of 10M metric rows as CSV and as Parquet into the export
    /// store, against PostgreSQL's own COPY (query) TO STDOUT of the same rows (a ratio), with
    /// the peak growth of resident memory. Runs a private platform database in a temporary
    /// directory unless a database is given.
    Export(export::ExportArgs),
    /// The whole data path and each stage against its baseline, in one run: raw COPY into
    /// bronze (one transaction and 1,000-row durable transactions), the edge into bronze,
    /// pg_recvlogical and the agent's capture of the same WAL, the bronze writer and the
    /// materializer alone, each --runs times (medians); then source -> agent -> edge -> bus ->
    /// bronze, read models and rollups at open-loop rates and at the most it takes with read
    /// models current within a second,
    /// with commit-to-visibility percentiles, CPU and WAL per event, lag and resident memory,
    /// and the goals met or missed. Starts a private source cluster and platform in temporary
    /// directories and removes them afterwards.
    Pipeline(pipeline::PipelineArgs),
}

/// Runs a parsed command line to its exit status.
pub fn run(cli: Cli) -> ExitCode {
    let settings = Settings::resolve(&cli.global, None);
    tributary::launch(settings, async |settings| match cli.command {
        Command::Ingest(args) => ingest::ingest(args, settings).await,
        Command::Capture(args) => capture::capture(args, settings).await,
        Command::Materialize(args) => materialize::materialize(args, settings).await,
        Command::Dashboard(args) => dashboard::dashboard(args, settings).await,
        Command::Alerts(args) => alerts::alerts(args, settings).await,
        Command::Export(args) => export::export(args, settings).await,
        Command::Pipeline(args) => pipeline::pipeline(args, settings).await,
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
