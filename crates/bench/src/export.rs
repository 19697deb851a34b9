//! `tributary-bench export`: the report runner's export of many metric rows as CSV and as
//! Parquet into the export store, against PostgreSQL's own `COPY (query) TO STDOUT` of the
//! same rows in the same run (a ratio: the export's rows per second over COPY's), with the peak
//! growth of the process's resident memory while each export runs. Prints figures; it is not a
//! test. docs/benchmarks.md has the figures of the development machine.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use domain::{Email, Plan, Role, TenantAttributes};
use store::reports::{Dataset, Format, MAX_LAST_HOURS, ReportInput};
use store::{Actor, Scope, TenantTx};
use tributary::{Connected, Settings};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
tributary-bench export                      10,000,000 rows (20 devices × 250,000 minutes × 2 keys)\n  \
tributary-bench export --devices 4 --minutes 125000   1,000,000 rows\n\n\
Build with --release for meaningful figures.")]
pub struct ExportArgs {
    /// Devices, each reading two metric keys every minute.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub devices: i32,
    /// Minutes of readings per device and key (at most a year: a report's range reaches back
    /// 8,808 hours).
    #[arg(long, default_value_t = 250_000, value_name = "N")]
    pub minutes: i32,
}

pub async fn export(args: ExportArgs, settings: Settings) -> anyhow::Result<ExitCode> {
    if args.devices < 1
        || args.minutes < 1
        || i64::from(args.minutes) > i64::from(MAX_LAST_HOURS) * 60 - 60
    {
        bail!(
            "--devices must be at least 1 and --minutes 1 to {}",
            MAX_LAST_HOURS * 60 - 60
        );
    }
    crate::scratch::with_scratch_database(settings, "export", async |settings, connected| {
        // The files, beside the data (removed with it, or here for a given database).
        let directory = settings
            .data_dir
            .join(format!("bench-exports-{}", uuid::Uuid::new_v4().simple()));
        let outcome = run(&args, connected, &directory).await;
        let _ = std::fs::remove_dir_all(&directory);
        outcome
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// The process's resident memory now, in bytes.
fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

/// Runs `work`, sampling resident memory every 10 ms: its result, its time, and the peak
/// growth of resident memory over what the process held before.
async fn measured<T>(work: impl Future<Output = T>) -> (T, Duration, u64) {
    let before = resident_bytes();
    let peak = Arc::new(AtomicU64::new(before));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(resident_bytes(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let started = Instant::now();
    let result = work.await;
    let elapsed = started.elapsed();
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.join();
    (
        result,
        elapsed,
        peak.load(Ordering::Relaxed).saturating_sub(before),
    )
}

async fn run(
    args: &ExportArgs,
    connected: &Connected,
    directory: &std::path::Path,
) -> anyhow::Result<()> {
    let database = &connected.database;
    let attributes = TenantAttributes::parse("Export", Plan::Team, "energy", "eu")?;
    let tenant =
        store::control::create_tenant(&database.app, Actor::Cli("bench".into()), &attributes)
            .await?
            .tenant_id;
    let email = Email::parse("owner@export.example").context("the bench's email")?;
    let user =
        store::control::create_user(&database.app, Actor::Cli("bench".into()), &email, "Owner")
            .await?
            .user_id;
    store::control::set_member(
        &database.app,
        Actor::Cli("bench".into()),
        tenant,
        &email,
        Role::Owner,
    )
    .await?;
    let rows = 2 * i64::from(args.devices) * i64::from(args.minutes);
    println!(
        "seeding {rows} rows of analytics.metrics_min ({} devices × {} minutes × 2 keys) ...",
        args.devices, args.minutes
    );
    let now = time::OffsetDateTime::now_utc();
    let started = Instant::now();
    store::service::bench_support::seed_metric_minutes(
        &connected.connection_settings,
        tenant,
        args.devices,
        args.minutes,
        now,
    )
    .await?;
    println!("  seeded in {:.1} s", started.elapsed().as_secs_f64());

    let exports = reports::ExportStore::local(directory)?;
    let runner = reports::Runner::new(database.clone(), exports);
    println!();
    println!(
        "{:<34} {:>12} {:>10} {:>14} {:>12} {:>14}",
        "", "rows", "seconds", "rows/s", "MiB", "peak RSS +MiB"
    );
    let mut baseline_rate = None;
    for format in [None, Some(Format::Csv), Some(Format::Parquet)] {
        let (label, outcome, elapsed, grown) = match format {
            None => {
                // The run's range, as the report's: the `last_hours` before the run was asked.
                let from = now - time::Duration::hours(i64::from(MAX_LAST_HOURS));
                let ((copied, bytes), elapsed, grown) = {
                    let (result, elapsed, grown) =
                        measured(store::service::bench_support::copy_out_metric_minutes(
                            &database.service,
                            tenant,
                            from,
                            time::OffsetDateTime::now_utc(),
                        ))
                        .await;
                    (result?, elapsed, grown)
                };
                (
                    "COPY (query) TO STDOUT, csv",
                    (copied, bytes),
                    elapsed,
                    grown,
                )
            }
            Some(format) => {
                let mut input = ReportInput::new(
                    &format!("bench {}", format.as_str()),
                    Dataset::MetricsMinute,
                    format,
                );
                input.filters.last_hours = Some(MAX_LAST_HOURS);
                let mut tx = TenantTx::begin(
                    &database.app,
                    Scope::Member {
                        tenant,
                        user,
                        role: Role::Owner,
                    },
                )
                .await?;
                let report = store::reports::create_report(&mut tx, &input).await?;
                store::reports::request_run(&mut tx, report, Some(user), Role::Owner).await?;
                tx.commit().await?;
                let (finished, elapsed, grown) = measured(runner.run_next()).await;
                let finished = finished?.context("the run was not taken")?;
                if let Some(failure) = finished.failure {
                    bail!("the {} export failed: {failure}", format.as_str());
                }
                let label = match format {
                    Format::Csv => "report export, CSV",
                    Format::Parquet => "report export, Parquet (zstd)",
                    Format::Jsonl => "report export, JSON lines",
                };
                (label, (finished.rows, finished.bytes), elapsed, grown)
            }
        };
        let rate = outcome.0 as f64 / elapsed.as_secs_f64();
        println!(
            "{label:<34} {:>12} {:>10.2} {:>14.0} {:>12.1} {:>14.1}",
            outcome.0,
            elapsed.as_secs_f64(),
            rate,
            outcome.1 as f64 / 1_048_576.0,
            grown as f64 / 1_048_576.0
        );
        match baseline_rate {
            None => baseline_rate = Some(rate),
            Some(baseline) => println!(
                "{:<34} ratio to COPY: {:.2}{}",
                "",
                rate / baseline,
                if format == Some(Format::Csv) {
                    "  (target >= 0.5)"
                } else {
                    ""
                }
            ),
        }
    }
    Ok(())
}
