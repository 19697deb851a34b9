//! `tributary-bench pipeline`: the whole data path and each of its stages against their
//! baselines, in one process and one run. The baselines (a raw `COPY` of the same rows into
//! bronze in one transaction and in 1,000-row durable transactions; `pg_recvlogical` draining
//! the same WAL as the agent) alternate with the stages they measure, `--runs` times, and the
//! medians are printed; then the whole path, from commits in a source PostgreSQL through the
//! agent, the edge, the bus, bronze, the read models and the rollups, at open-loop rates and at
//! the most it takes with its read models current within a second, with commit-to-visibility percentiles, CPU and WAL per event,
//! the bus's lag and the resident memory of the process. docs/benchmarks.md has the figures of
//! the development machine.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bus::{Bus, Consumer};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use tributary::ingestion::Ingestion;
use tributary::{Connected, Settings};

use crate::capture::{self, StreamingAgent};
use crate::ingest::{self, IngestArgs};
use crate::machine::{self, CpuSample, CpuUse, Measured, Residency};
use crate::materialize::{self, PROBE_KEY};

/// Devices of each source of the whole path.
const DEVICES: u32 = 1_000;
/// The pacing of the open-loop writer: a transaction per source every tick.
const TICK: Duration = Duration::from_millis(10);
/// A latency probe every this many ticks.
const PROBE_EVERY: u64 = 2;
/// The most pending probes one poll asks for, of each kind.
const POLLED: usize = 32;
/// Rows per source transaction at the most.
const MAX_TRANSACTION_ROWS: u64 = 1_000;
/// At the most, the writer goes as fast as the read models stay this current: the next
/// transaction waits while a probe older than this is not visible yet.
const CURRENT_WITHIN: Duration = Duration::from_secs(1);
/// At the most, how many of the writer's transactions may wait for their read models.
const IN_FLIGHT: usize = 3;
/// How long the path may take to show the last probe after the writing stopped.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(300);
/// The busy tenant's share of the rows; the quiet one has the rest.
const BUSY_SHARE: f64 = 0.8;

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:\n  \
tributary-bench pipeline                                    every stage, then 5k, 15k, 30k events/s and the most\n  \
tributary-bench pipeline --runs 1 --events 50000 --rates 5000 --seconds 10\n  \
tributary-bench pipeline --json figures.json\n  \
tributary-bench --bus nats://127.0.0.1:4222 pipeline        the NATS JetStream bus\n\n\
Build with --release for meaningful figures. It starts a private source cluster and a private \
platform in temporary directories and removes them afterwards (a given --source-url needs \
CREATEDB: the quiet tenant's source is a database of its own).")]
pub struct PipelineArgs {
    /// Events of each stage measured alone, and rows of each baseline.
    #[arg(long, default_value_t = 200_000, value_name = "N")]
    pub events: u64,
    /// How many times each stage and its baseline are measured, alternating; medians are
    /// printed.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub runs: u32,
    /// Tenants of the stages measured alone, each with its own source.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub tenants: u32,
    /// Offered rates of the whole path, in events per second, each held for --seconds; the
    /// most the path takes with its read models current within a second is measured after them.
    #[arg(
        long,
        value_delimiter = ',',
        default_values_t = [5_000u64, 15_000, 30_000],
        value_name = "EVENTS"
    )]
    pub rates: Vec<u64>,
    /// How long each rate of the whole path, and the maximum, is held.
    #[arg(long, default_value_t = 20, value_name = "SECONDS")]
    pub seconds: u64,
    /// A source database to use (needs wal_level=logical, a role that may replicate and
    /// CREATEDB) instead of a private cluster started for the run.
    #[arg(long, env = "TRIBUTARY_BENCH_SOURCE_URL", hide_env_values = true)]
    pub source_url: Option<String>,
    /// Also write every figure as JSON to this file ("-" for standard output), for tracking.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

pub async fn pipeline(args: PipelineArgs, settings: Settings) -> anyhow::Result<ExitCode> {
    let report = measure(&args, settings).await?;
    report.print();
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report.to_json())?;
        if path.as_os_str() == "-" {
            println!("{text}");
        } else {
            std::fs::write(path, text + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
            println!("figures written to {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the benchmark and returns what it measured.
pub(crate) async fn measure(args: &PipelineArgs, settings: Settings) -> anyhow::Result<Report> {
    if args.events == 0 || args.runs == 0 || args.tenants == 0 || args.seconds == 0 {
        bail!("--events, --runs, --tenants and --seconds must be at least 1");
    }
    if let Some(rate) = args.rates.iter().find(|rate| **rate < 200) {
        bail!("--rates: {rate} is below the smallest measurable rate, 200 events/s");
    }
    let scratch = std::env::temp_dir().join(format!(
        "tributary-bench-pipeline-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&scratch)?;
    let outcome = async {
        let (cluster, url) = capture::start_source(&scratch, args.source_url.as_deref()).await?;
        let source_pgdata = cluster
            .is_some()
            .then(|| scratch.join("source").join("postgres"));
        crate::scratch::with_scratch_database(settings, "pipeline", async |settings, connected| {
            run(
                args,
                settings,
                connected,
                &url,
                source_pgdata.as_deref(),
                &scratch,
            )
            .await
        })
        .await
    }
    .await;
    let _ = std::fs::remove_dir_all(&scratch);
    outcome
}

/// Everything one run measured.
#[derive(Debug)]
pub(crate) struct Report {
    build: &'static str,
    machine: String,
    bus: String,
    platform_settings: Vec<(String, String)>,
    /// The machine's load average (1, 5, 15 minutes) before the run and after it.
    load: (String, String),
    events: u64,
    runs: Vec<StageRun>,
    path: Vec<PathPhase>,
    residency: Option<Residency>,
}

/// One alternation of every baseline with its stage.
#[derive(Debug)]
struct StageRun {
    copy_one: Figure,
    copy_transactions: Figure,
    edge_acked: Figure,
    edge_to_bronze: Figure,
    recvlogical: Figure,
    capture: Figure,
    bronze_writer: Figure,
    materializer: Figure,
}

/// A stage's or a baseline's throughput and what it cost per event.
#[derive(Debug, Clone, Copy, Default)]
struct Figure {
    events_per_second: f64,
    /// CPU of the client side (this process, or `pg_recvlogical`) and of the platform's
    /// PostgreSQL, per event; the server's decoding of the source WAL is not counted.
    cpu_us_per_event: Option<f64>,
    wal_bytes_per_event: Option<f64>,
}

impl Figure {
    fn of(events: u64, measured: &Measured) -> Self {
        Self::from_parts(
            events,
            measured.elapsed,
            measured.cpu,
            Some(measured.wal_bytes),
        )
    }

    fn from_parts(events: u64, elapsed: Duration, cpu: CpuUse, wal: Option<u64>) -> Self {
        let events_f = events.max(1) as f64;
        let cpu_seconds = cpu.own + cpu.children + cpu.postgres.unwrap_or(0.0);
        Self {
            events_per_second: events as f64 / elapsed.as_secs_f64().max(1e-9),
            cpu_us_per_event: (cpu_seconds > 0.0).then(|| cpu_seconds * 1e6 / events_f),
            wal_bytes_per_event: wal.map(|bytes| bytes as f64 / events_f),
        }
    }

    fn to_json(self) -> Value {
        json!({
            "events_per_second": round(self.events_per_second),
            "cpu_us_per_event": self.cpu_us_per_event.map(round),
            "wal_bytes_per_event": self.wal_bytes_per_event.map(round),
        })
    }
}

/// One rate of the whole path.
#[derive(Debug)]
struct PathPhase {
    /// `None`: as fast as the read models stay current within [`CURRENT_WITHIN`].
    offered: Option<u64>,
    written: u64,
    /// Events per second the writer achieved at the source.
    written_per_second: f64,
    /// Events per second from the first write until the read models held the last one.
    sustained: f64,
    read_model: Percentiles,
    rollup: Percentiles,
    /// The most events the bronze writer and the materializer were behind, sampled every
    /// second.
    max_lag: (u64, u64),
    /// CPU of this process (agent, platform roles and the writer) and of the platform's
    /// PostgreSQL, per event.
    cpu_us_per_event: f64,
    /// CPU of the source's PostgreSQL (the writes and their decoding), per event, where known.
    source_cpu_us_per_event: Option<f64>,
    wal_bytes_per_event: f64,
}

impl PathPhase {
    /// Whether the path kept up with the writer: it finished within 5% of the writing time
    /// and showed 99% of the probes within a second (lag bounded, read models current).
    fn kept_up(&self) -> bool {
        self.sustained >= 0.95 * self.written_per_second && self.read_model.p99 <= 1000.0
    }
}

/// Latency percentiles of one phase's probes, in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
struct Percentiles {
    probes: usize,
    p50: f64,
    p95: f64,
    p99: f64,
}

impl Percentiles {
    fn of(mut latencies: Vec<Duration>) -> Self {
        latencies.sort();
        let at = |p: f64| {
            latencies
                .get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1))
                .map_or(f64::NAN, |latency| latency.as_secs_f64() * 1000.0)
        };
        Self {
            probes: latencies.len(),
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
        }
    }

    fn to_json(self) -> Value {
        json!({
            "probes": self.probes,
            "p50_ms": round(self.p50),
            "p95_ms": round(self.p95),
            "p99_ms": round(self.p99),
        })
    }
}

/// What every part of a run works with.
struct Bench<'a> {
    args: &'a PipelineArgs,
    settings: &'a Settings,
    connected: &'a Connected,
    bus_config: bus::BusConfig,
    /// The platform's managed cluster, when it is one.
    pgdata: Option<PathBuf>,
    source_url: &'a str,
    /// The source's cluster, when it is the private one.
    source_pgdata: Option<&'a Path>,
    scratch: &'a Path,
}

async fn run(
    args: &PipelineArgs,
    settings: &Settings,
    connected: &Connected,
    source_url: &str,
    source_pgdata: Option<&Path>,
    scratch: &Path,
) -> anyhow::Result<Report> {
    let database = &connected.database;
    let load_before = materialize::load_average();
    let bench = Bench {
        args,
        settings,
        connected,
        bus_config: settings
            .bus
            .parse()
            .with_context(|| format!("invalid bus setting {:?}", settings.bus))?,
        pgdata: crate::scratch::managed_pgdata(settings),
        source_url,
        source_pgdata,
        scratch,
    };
    let platform_settings = store::service::bench_support::server_settings(
        &database.service,
        &[
            "shared_buffers",
            "max_wal_size",
            "min_wal_size",
            "checkpoint_timeout",
            "wal_compression",
            "wal_buffers",
            "synchronous_commit",
            "commit_delay",
            "effective_io_concurrency",
            "max_connections",
        ],
    )
    .await?;
    println!("platform PostgreSQL:");
    for (name, value) in &platform_settings {
        println!("  {name} = {value}");
    }
    materialize::allow_keys(database).await?;
    let mut source = PgConnection::connect(source_url)
        .await
        .context("connecting to the source")?;

    // Every baseline, then its stage, `runs` times.
    let mut runs = Vec::new();
    for run in 1..=args.runs {
        println!();
        println!("== run {run} of {}: baselines and stages ==", args.runs);
        runs.push(bench.stage_run(&mut source, run).await?);
    }

    // The whole path.
    println!();
    println!(
        "== the whole path: source -> agent -> edge -> bus -> bronze, read models, rollups =="
    );
    let (residency_done, residency_stop) = tokio::sync::watch::channel(false);
    let residency = machine::sample_residency(residency_stop);
    let path = bench.whole_path(&mut source).await;
    let _ = residency_done.send(true);
    let residency = Residency::of(&residency.await?);
    Ok(Report {
        build: if cfg!(debug_assertions) {
            "debug (not representative: build with --release)"
        } else {
            "release"
        },
        machine: machine::describe(),
        bus: ingest::describe_bus(&bench.bus_config),
        platform_settings,
        load: (load_before, materialize::load_average()),
        events: args.events,
        runs,
        path: path?,
        residency,
    })
}

impl Bench<'_> {
    /// Every baseline and its stage, once.
    async fn stage_run(&self, source: &mut PgConnection, run: u32) -> anyhow::Result<StageRun> {
        let (args, database) = (self.args, &self.connected.database);
        // 1. COPY into bronze, then the edge into bronze (the ingest benchmark, which measures both).
        let ingest_args = IngestArgs {
            events: args.events,
            tenants: args.tenants,
            batch: 1000,
            senders: 4,
            payload_bytes: 250,
            encoding: protocol::Encoding::Zstd,
            skip_baseline: false,
        };
        let ingested = ingest::run(&ingest_args, self.settings, self.connected).await?;
        let baseline = ingested
            .baseline
            .as_ref()
            .context("the ingest stage ran without its baselines")?;
        let edge_acked = Figure::from_parts(
            ingested.events,
            ingested.ack_elapsed,
            ingested.sending,
            None,
        );
        let edge_to_bronze = Figure::from_parts(
            ingested.events,
            ingested.bronze_elapsed,
            ingested.sending + ingested.draining,
            Some(ingested.wal_bytes),
        );
        // The ingest stage runs no materializer: its events are not the materializer's to measure.
        skip_backlog(database, &self.bus_config, pipeline::materializer::GROUP).await?;

        // 2. pg_recvlogical, the agent's capture of the same WAL, pg_recvlogical again.
        let captured = capture::capture_comparison(
            args.events,
            ingest::BASELINE_TRANSACTION_ROWS,
            self.source_url,
            source,
            &self.scratch.join(format!("capture-{run}")),
        )
        .await?;
        // Two runs of pg_recvlogical: their rows, time and CPU together.
        let recvlogical = Figure::from_parts(
            captured.rows * 2,
            captured.baseline * 2,
            captured.baseline_cpu,
            None,
        );
        let capture = Figure::from_parts(captured.rows, captured.agent, captured.agent_cpu, None);

        // 3. The bronze writer alone, then the materializer alone, on the same simulator events.
        let bus = bus::AnyBus::connect(&self.bus_config, &database.service).await?;
        let run_name = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let throughput = materialize::throughput(
            database,
            &bus,
            args.events,
            args.tenants,
            1000,
            run_name,
            self.pgdata.as_deref(),
        )
        .await?;
        Ok(StageRun {
            copy_one: Figure::of(baseline.rows, &baseline.one),
            copy_transactions: Figure::of(baseline.rows, &baseline.transactions),
            edge_acked,
            edge_to_bronze,
            recvlogical,
            capture,
            bronze_writer: Figure::of(throughput.events, &throughput.bronze),
            materializer: Figure::of(throughput.events, &throughput.materializer),
        })
    }

    /// The whole path at each offered rate, then at the most it takes with its read models current.
    async fn whole_path(&self, source: &mut PgConnection) -> anyhow::Result<Vec<PathPhase>> {
        let database = &self.connected.database;
        println!(
            "starting the platform's roles (edge, bus, bronze writer, materializer, aggregator) ..."
        );
        let ingestion = Ingestion::start(
            self.settings,
            database,
            &self.bus_config,
            std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        )
        .await?;
        let outcome = async {
            // A busy tenant and a quiet one, each a database of the source with its own agent.
            sqlx::raw_sql("drop database if exists bench_quiet")
                .execute(&mut *source)
                .await?;
            sqlx::raw_sql("create database bench_quiet")
                .execute(&mut *source)
                .await
                .context("creating the quiet tenant's source database (needs CREATEDB)")?;
            let quiet_url = database_url(self.source_url, "bench_quiet")?;
            let mut tenants = Vec::new();
            for (url, slot, share) in [
                (self.source_url.to_owned(), "bench_busy", BUSY_SHARE),
                (quiet_url, "bench_quiet", 1.0 - BUSY_SHARE),
            ] {
                let mut connection = PgConnection::connect(&url).await?;
                create_source_tables(&mut connection).await?;
                println!("starting the agent of {slot} ...");
                let agent = StreamingAgent::start(
                    database,
                    &ingestion,
                    &url,
                    &["public.devices", "public.readings"],
                    slot,
                    &self.scratch.join(format!("agent-{slot}")),
                )
                .await?;
                tenants.push(SourceTenant {
                    connection,
                    agent,
                    share,
                });
            }
            // A minute of its own for each probe's reading, far enough back that thousands of
            // probes stay in the past.
            let base_minute = time::OffsetDateTime::now_utc()
                .replace_second(0)?
                .replace_nanosecond(0)?
                - time::Duration::days(10);
            let mut probes = 0u64;
            let mut phases = Vec::new();
            let offered = self
                .args
                .rates
                .iter()
                .copied()
                .map(Some)
                .chain(std::iter::once(None));
            for rate in offered {
                let phase = self
                    .path_phase(&ingestion.bus, &mut tenants, rate, base_minute, &mut probes)
                    .await?;
                phases.push(phase);
            }
            for tenant in tenants {
                tenant.agent.stop().await?;
            }
            anyhow::Ok(phases)
        }
        .await;
        ingestion.stop().await;
        outcome
    }

    /// One offered rate (or, for `None`, the most the read models stay current at) for
    /// `--seconds`, then until the read models hold the last write.
    async fn path_phase(
        &self,
        bus: &bus::AnyBus,
        tenants: &mut [SourceTenant],
        rate: Option<u64>,
        base_minute: time::OffsetDateTime,
        probes: &mut u64,
    ) -> anyhow::Result<PathPhase> {
        let (args, database) = (self.args, &self.connected.database);
        let (pgdata, source_pgdata) = (self.pgdata.as_deref(), self.source_pgdata);
        match rate {
            Some(rate) => println!("offering {rate} events/s for {} s ...", args.seconds),
            None => println!(
                "writing as fast as the read models stay within {} ms for {} s, {MAX_TRANSACTION_ROWS}-row transactions ...",
                CURRENT_WITHIN.as_millis(),
                args.seconds
            ),
        }
        let busy_tenant = tenants[0].agent.tenant;
        let pending_devices: Arc<Mutex<Vec<(String, Instant)>>> = Default::default();
        let pending_minutes: Arc<Mutex<Vec<(time::OffsetDateTime, Instant)>>> = Default::default();
        let (writing_done, writing) = tokio::sync::watch::channel(false);
        let poller = spawn_poller(
            database.clone(),
            busy_tenant,
            pending_devices.clone(),
            pending_minutes.clone(),
            writing,
        );
        let (lag_done, lag_stop) = tokio::sync::watch::channel(false);
        let lag = spawn_lag_sampler(bus.clone(), lag_stop);
        let cpu_at_start = CpuSample::take(pgdata);
        let source_cpu_at_start = CpuSample::take(source_pgdata);
        let wal_at_start = store::service::bench_support::wal_position(&database.service).await?;
        let started = Instant::now();
        let until = started + Duration::from_secs(args.seconds);
        let per_tick = rate.map(|rate| (rate as f64 * TICK.as_secs_f64()).round().max(2.0) as u64);
        let mut written = 0u64;
        let mut tick = 0u64;
        while Instant::now() < until {
            match rate {
                Some(_) => tokio::time::sleep_until((started + TICK * tick as u32).into()).await,
                None => {
                    // As fast as the path keeps its read models current: the next transaction
                    // (each has a probe) waits while a few are unseen or the oldest unseen
                    // probe is older than the bound, so the backlog stays a few transactions.
                    while {
                        let pending = pending_devices.lock().unwrap();
                        pending.len() >= IN_FLIGHT
                            || pending
                                .first()
                                .is_some_and(|(_, committed)| committed.elapsed() > CURRENT_WITHIN)
                    } && Instant::now() < until
                    {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
            }
            let rows = per_tick.unwrap_or(MAX_TRANSACTION_ROWS);
            let probe = rate.is_none() || tick.is_multiple_of(PROBE_EVERY);
            for (index, tenant) in tenants.iter_mut().enumerate() {
                let mut share = (rows as f64 * tenant.share).round() as u64;
                let probe_here = probe && index == 0;
                if probe_here {
                    share = share.saturating_sub(2);
                }
                let mut tx = tenant.connection.begin().await?;
                written += write_load(&mut tx, share, tick).await?;
                let probe_row = if probe_here {
                    let device = format!("probe-{}", *probes);
                    let minute = base_minute + time::Duration::minutes(*probes as i64);
                    *probes += 1;
                    sqlx::query(
                    "insert into public.devices (device_id, site_id, status) values ($1, 'probes', 'probe')",
                )
                .bind(&device)
                .execute(&mut *tx)
                .await?;
                    sqlx::query(
                        "insert into public.readings (device_id, metric, value, measured_at) \
                     values ($1, $2, 1, $3)",
                    )
                    .bind(&device)
                    .bind(PROBE_KEY)
                    .bind(minute)
                    .execute(&mut *tx)
                    .await?;
                    written += 2;
                    Some((device, minute))
                } else {
                    None
                };
                tx.commit().await?;
                if let Some((device, minute)) = probe_row {
                    let committed = Instant::now();
                    pending_devices.lock().unwrap().push((device, committed));
                    pending_minutes.lock().unwrap().push((minute, committed));
                }
            }
            tick += 1;
        }
        let writing_elapsed = started.elapsed();
        // The quiet tenant's last write, which its read models show once they hold everything
        // before it (a tenant's events keep their order).
        let quiet_end = format!("end-{}", *probes);
        *probes += 1;
        if let Some(quiet) = tenants.get_mut(1) {
            sqlx::query(
            "insert into public.devices (device_id, site_id, status) values ($1, 'probes', 'end')",
        )
        .bind(&quiet_end)
        .execute(&mut quiet.connection)
        .await?;
            written += 1;
        }
        println!(
            "  {written} events written in {:.1} s ({:.0}/s); waiting for the read models ...",
            writing_elapsed.as_secs_f64(),
            written as f64 / writing_elapsed.as_secs_f64()
        );
        let _ = writing_done.send(true);
        let (device_latencies, rollup_latencies) =
        tokio::time::timeout(DRAIN_TIMEOUT, poller)
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "probes not visible {} s after the last write: {} devices, {} rollup minutes pending",
                    DRAIN_TIMEOUT.as_secs(),
                    pending_devices.lock().unwrap().len(),
                    pending_minutes.lock().unwrap().len()
                )
            })???;
        if let Some(quiet) = tenants.get(1) {
            let deadline = Instant::now() + DRAIN_TIMEOUT;
            while store::service::bench_support::visible_devices(
                &database.service,
                quiet.agent.tenant,
                std::slice::from_ref(&quiet_end),
            )
            .await?
            .is_empty()
            {
                if Instant::now() > deadline {
                    bail!("the quiet tenant's last write never reached its read models");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let drained = started.elapsed();
        let cpu = CpuSample::take(pgdata).since(&cpu_at_start);
        let source_cpu = CpuSample::take(source_pgdata).since(&source_cpu_at_start);
        let wal_bytes = store::service::bench_support::wal_position(&database.service)
            .await?
            .saturating_sub(wal_at_start);
        let _ = lag_done.send(true);
        let max_lag = lag_max(lag.await?);
        let events = written.max(1) as f64;
        let phase = PathPhase {
            offered: rate,
            written,
            written_per_second: written as f64 / writing_elapsed.as_secs_f64(),
            sustained: written as f64 / drained.as_secs_f64(),
            read_model: Percentiles::of(device_latencies),
            rollup: Percentiles::of(rollup_latencies),
            max_lag,
            cpu_us_per_event: (cpu.own + cpu.postgres.unwrap_or(0.0)) * 1e6 / events,
            source_cpu_us_per_event: source_cpu.postgres.map(|seconds| seconds * 1e6 / events),
            wal_bytes_per_event: wal_bytes as f64 / events,
        };
        println!(
            "  sustained {:.0} events/s; commit -> read model p99 {:.1} ms, -> rollup_min p99 {:.1} ms",
            phase.sustained, phase.read_model.p99, phase.rollup.p99
        );
        Ok(phase)
    }
}

/// Acks, without applying them, what `group` has not consumed yet.
async fn skip_backlog(
    database: &store::Database,
    bus_config: &bus::BusConfig,
    group: &str,
) -> anyhow::Result<()> {
    let bus = bus::AnyBus::connect(bus_config, &database.service).await?;
    let mut consumer = bus.consumer(group, None).await?;
    let mut skipped = 0;
    loop {
        let deliveries = consumer
            .next_batch(5000, Duration::from_millis(500))
            .await?;
        if deliveries.is_empty() {
            break;
        }
        consumer.ack(&deliveries).await?;
        skipped += deliveries.len();
    }
    println!("  ({skipped} events of the ingest stage acked for the materializer unapplied)");
    Ok(())
}

/// The source's tables of one tenant (in its own database) and how the writer fills them.
struct SourceTenant {
    connection: PgConnection,
    agent: StreamingAgent,
    /// Share of each transaction's rows.
    share: f64,
}

/// `url` with its database replaced by `name` (a `postgres://` URL; its query is kept).
fn database_url(url: &str, name: &str) -> anyhow::Result<String> {
    let authority_start = url.find("://").context("the source URL has no scheme")? + 3;
    let (before_query, query) = url.split_at(url.find('?').unwrap_or(url.len()));
    let path_start = before_query[authority_start..]
        .find('/')
        .map_or(before_query.len(), |offset| authority_start + offset);
    Ok(format!("{}/{name}{query}", &before_query[..path_start]))
}

async fn create_source_tables(connection: &mut PgConnection) -> anyhow::Result<()> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "drop table if exists public.readings, public.devices; \
         create table public.devices (device_id text primary key, site_id text not null, \
             status text not null, firmware text, updated_at timestamptz not null default now()); \
         insert into public.devices (device_id, site_id, status, firmware) \
             select 'd-' || g, 's-' || (g % 20), 'online', '1.0' from generate_series(0, {last}) g; \
         create table public.readings (reading_id bigserial primary key, \
             device_id text not null, metric text not null, value double precision not null, \
             measured_at timestamptz not null default now())",
        last = DEVICES - 1
    )))
    .execute(connection)
    .await
    .context("creating the source's tables")?;
    Ok(())
}

/// Readings and device changes, `rows` of them, in the open transaction; returns how many
/// events they make (one a row).
async fn write_load(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    rows: u64,
    tick: u64,
) -> anyhow::Result<u64> {
    if rows == 0 {
        return Ok(0);
    }
    // One in ten events a device's change, the rest readings.
    let updates = rows / 10;
    let readings = rows - updates;
    let changed: i64 = sqlx::query_scalar(
        "with r as ( \
             insert into public.readings (device_id, metric, value) \
             select 'd-' || ((g * 7 + $3) % $4), 'power_kw', (g % 500) * 0.5 \
             from generate_series(1, $1::int8) g returning 1 \
         ), u as ( \
             update public.devices set status = (array['online', 'charging', 'idle'])[1 + ($3 % 3)::int], \
                 updated_at = now() \
             where device_id in (select 'd-' || ((g * 13 + $3 * 31) % $4) from generate_series(1, $2::int8) g) \
             returning 1 \
         ) select (select count(*) from r) + (select count(*) from u)",
    )
    .bind(readings as i64)
    .bind(updates as i64)
    .bind(tick as i64)
    .bind(i64::from(DEVICES))
    .fetch_one(&mut **tx)
    .await?;
    Ok(u64::try_from(changed).unwrap_or(0))
}

type Latencies = (Vec<Duration>, Vec<Duration>);

/// Polls the read models and the rollups for the probes every 5 ms until writing is over and
/// every probe was seen; returns the latencies to the read model and to the rollup. Only the
/// [`POLLED`] oldest pending probes are asked for: a tenant's events are applied in order, so
/// the oldest show first, and asking for thousands every 5 ms while the path is behind would
/// take the cores the path needs (the first runs of this benchmark did, and measured the
/// poller).
fn spawn_poller(
    database: store::Database,
    tenant: domain::TenantId,
    pending_devices: Arc<Mutex<Vec<(String, Instant)>>>,
    pending_minutes: Arc<Mutex<Vec<(time::OffsetDateTime, Instant)>>>,
    mut writing: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<anyhow::Result<Latencies>> {
    tokio::spawn(async move {
        let mut devices_seen = Vec::new();
        let mut minutes_seen = Vec::new();
        loop {
            poll_once(&pending_devices, &mut devices_seen, async |devices| {
                store::service::bench_support::visible_devices(&database.service, tenant, devices)
                    .await
            })
            .await?;
            poll_once(&pending_minutes, &mut minutes_seen, async |minutes| {
                store::service::bench_support::visible_rollup_minutes(
                    &database.service,
                    PROBE_KEY,
                    minutes,
                )
                .await
            })
            .await?;
            let done = *writing.borrow()
                && pending_devices.lock().unwrap().is_empty()
                && pending_minutes.lock().unwrap().is_empty();
            if done {
                return Ok((devices_seen, minutes_seen));
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                _ = writing.changed() => {}
            }
        }
    })
}

/// Asks `visible` which of the [`POLLED`] oldest `pending` probes are visible, moves those out
/// of `pending` and adds their latency (from their commit until now) to `seen`.
async fn poll_once<T: Clone + PartialEq>(
    pending: &Mutex<Vec<(T, Instant)>>,
    seen: &mut Vec<Duration>,
    visible: impl AsyncFnOnce(&[T]) -> Result<Vec<T>, store::StoreError>,
) -> anyhow::Result<()> {
    let asked: Vec<T> = pending
        .lock()
        .unwrap()
        .iter()
        .take(POLLED)
        .map(|(probe, _)| probe.clone())
        .collect();
    if asked.is_empty() {
        return Ok(());
    }
    let visible = visible(&asked).await?;
    let now = Instant::now();
    pending.lock().unwrap().retain(|(probe, committed)| {
        let shown = visible.contains(probe);
        if shown {
            seen.push(now - *committed);
        }
        !shown
    });
    Ok(())
}

/// Samples the bronze writer's and the materializer's lag every second until `stop` says so.
fn spawn_lag_sampler(
    bus: bus::AnyBus,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Vec<bus::PartitionLag>> {
    tokio::spawn(async move {
        let mut samples = Vec::new();
        loop {
            if let Ok(lags) = bus
                .lag(&[pipeline::bronze::GROUP, pipeline::materializer::GROUP])
                .await
            {
                samples.extend(lags);
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.changed() => return samples,
            }
        }
    })
}

/// The most the bronze writer and the materializer were behind in any sample.
fn lag_max(samples: Vec<bus::PartitionLag>) -> (u64, u64) {
    let most = |group: &str| {
        samples
            .iter()
            .filter(|lag| lag.group == group)
            .map(|lag| lag.behind)
            .max()
            .unwrap_or(0)
    };
    (
        most(pipeline::bronze::GROUP),
        most(pipeline::materializer::GROUP),
    )
}

/// The median of the figures of one stage over the runs.
fn median(runs: &[StageRun], of: impl Fn(&StageRun) -> Figure) -> Figure {
    let pick = |value: &dyn Fn(&Figure) -> Option<f64>| {
        let mut values: Vec<f64> = runs.iter().filter_map(|run| value(&of(run))).collect();
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied()
    };
    Figure {
        events_per_second: pick(&|figure| Some(figure.events_per_second)).unwrap_or(f64::NAN),
        cpu_us_per_event: pick(&|figure| figure.cpu_us_per_event),
        wal_bytes_per_event: pick(&|figure| figure.wal_bytes_per_event),
    }
}

fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// A stage or baseline: its key in the JSON, its label, and its figure in a run.
type Stage = (&'static str, &'static str, fn(&StageRun) -> Figure);

/// The stages and baselines, by the name the report and its JSON give them.
const STAGES: [Stage; 8] = [
    (
        "copy_one_transaction",
        "COPY into bronze, one transaction",
        |run| run.copy_one,
    ),
    (
        "copy_1000_row_transactions",
        "COPY into bronze, 1,000-row durable transactions",
        |run| run.copy_transactions,
    ),
    ("edge_acked", "edge, acked (bus durable)", |run| {
        run.edge_acked
    }),
    ("edge_to_bronze", "edge -> bronze, end to end", |run| {
        run.edge_to_bronze
    }),
    (
        "pg_recvlogical",
        "pg_recvlogical (pgoutput to /dev/null)",
        |run| run.recvlogical,
    ),
    ("agent_capture", "agent capture (source -> spool)", |run| {
        run.capture
    }),
    (
        "bronze_writer",
        "bronze writer alone, or log + bronze append",
        |run| run.bronze_writer,
    ),
    (
        "materializer",
        "materializer alone (bus -> analytics.*)",
        |run| run.materializer,
    ),
];

/// A goal of the table: its figure, the target and whether it was met.
struct Goal {
    name: &'static str,
    figure: f64,
    unit: &'static str,
    target: f64,
    at_least: bool,
}

impl Goal {
    fn met(&self) -> bool {
        if self.at_least {
            self.figure >= self.target
        } else {
            self.figure <= self.target
        }
    }
}

impl Report {
    fn stage(&self, name: &str) -> Figure {
        let (_, _, of) = STAGES
            .iter()
            .find(|(key, _, _)| *key == name)
            .expect("a known stage");
        median(&self.runs, of)
    }

    fn goals(&self) -> Vec<Goal> {
        let ratio = |stage: &str, baseline: &str| {
            self.stage(stage).events_per_second / self.stage(baseline).events_per_second
        };
        let at_5k = self
            .path
            .iter()
            .find(|phase| phase.offered == Some(5_000))
            .or_else(|| self.path.first());
        let sustained = self
            .path
            .iter()
            .filter(|phase| phase.kept_up())
            .map(|phase| phase.sustained)
            .fold(0.0, f64::max);
        vec![
            Goal {
                name: "edge -> bronze / COPY in 1,000-row durable transactions",
                figure: ratio("edge_to_bronze", "copy_1000_row_transactions"),
                unit: "x",
                target: 0.8,
                at_least: true,
            },
            Goal {
                name: "sustained end to end, kept up (read models current)",
                figure: sustained,
                unit: "events/s",
                target: 30_000.0,
                at_least: true,
            },
            Goal {
                name: "commit -> read model p99 at the first rate",
                figure: at_5k.map_or(f64::NAN, |phase| phase.read_model.p99),
                unit: "ms",
                target: 150.0,
                at_least: false,
            },
            Goal {
                name: "commit -> rollup_min p99 at the first rate",
                figure: at_5k.map_or(f64::NAN, |phase| phase.rollup.p99),
                unit: "ms",
                target: 1000.0,
                at_least: false,
            },
            Goal {
                name: "agent capture / pg_recvlogical",
                figure: ratio("agent_capture", "pg_recvlogical"),
                unit: "x",
                target: 1.0,
                at_least: true,
            },
        ]
    }

    fn print(&self) {
        println!();
        println!("Tributary pipeline benchmark");
        println!("  build:    {}", self.build);
        println!("  machine:  {}", self.machine);
        println!("  bus:      {}", self.bus);
        let settings: Vec<String> = self
            .platform_settings
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        println!("  platform PostgreSQL: {}", settings.join(", "));
        println!(
            "  load average (1, 5, 15 min): before {}, after {}",
            self.load.0, self.load.1
        );
        println!(
            "stages and baselines, {} events each, median of {} runs:",
            self.events,
            self.runs.len()
        );
        println!(
            "  {:<52} {:>11} {:>12} {:>11}",
            "", "events/s", "CPU µs/ev", "WAL B/ev"
        );
        let optional = |value: Option<f64>, decimals: usize| {
            value.map_or_else(|| "-".to_owned(), |value| format!("{value:.decimals$}"))
        };
        for (key, label, _) in STAGES {
            let figure = self.stage(key);
            println!(
                "  {label:<52} {:>11.0} {:>12} {:>11}",
                figure.events_per_second,
                optional(figure.cpu_us_per_event, 1),
                optional(figure.wal_bytes_per_event, 0)
            );
        }
        println!(
            "  (CPU: this process or pg_recvlogical, and the platform's PostgreSQL; not the source's decoding)"
        );
        println!(
            "the whole path (a busy tenant with 4/5 of the rows and a quiet one; 1 in 10 a device change):"
        );
        println!(
            "  {:>9} {:>9} {:>10} {:>7} {:>24} {:>24} {:>15} {:>10} {:>9}",
            "offered",
            "written",
            "sustained",
            "kept up",
            "read model p50/p95/p99",
            "rollup_min p50/p95/p99",
            "max lag br/mat",
            "CPU µs/ev",
            "WAL B/ev"
        );
        for phase in &self.path {
            let triple = |p: &Percentiles| format!("{:.0}/{:.0}/{:.0} ms", p.p50, p.p95, p.p99);
            println!(
                "  {:>9} {:>9.0} {:>10.0} {:>7} {:>24} {:>24} {:>15} {:>10.1} {:>9.0}",
                phase
                    .offered
                    .map_or_else(|| "most".to_owned(), |rate| rate.to_string()),
                phase.written_per_second,
                phase.sustained,
                if phase.kept_up() { "yes" } else { "no" },
                triple(&phase.read_model),
                triple(&phase.rollup),
                format!("{}/{}", phase.max_lag.0, phase.max_lag.1),
                phase.cpu_us_per_event,
                phase.wal_bytes_per_event
            );
        }
        if let Some(source) = self
            .path
            .iter()
            .filter_map(|phase| phase.source_cpu_us_per_event)
            .next_back()
        {
            println!("  (the source's PostgreSQL used {source:.1} µs per event at the most)");
        }
        match &self.residency {
            Some(residency) => println!(
                "  resident memory of this process (agents, platform roles, writer): {residency}"
            ),
            None => println!("  resident memory: not known on this system"),
        }
        println!("goals:");
        for goal in self.goals() {
            println!(
                "  {:<58} {:>10.2} {:<8} goal {} {} : {}",
                goal.name,
                goal.figure,
                goal.unit,
                if goal.at_least { ">=" } else { "<=" },
                goal.target,
                if goal.met() { "met" } else { "MISSED" }
            );
        }
    }

    fn to_json(&self) -> Value {
        let stages: serde_json::Map<String, Value> = STAGES
            .iter()
            .map(|(key, _, of)| {
                let runs: Vec<Value> = self.runs.iter().map(|run| of(run).to_json()).collect();
                (
                    (*key).to_owned(),
                    json!({ "median": median(&self.runs, of).to_json(), "runs": runs }),
                )
            })
            .collect();
        let path: Vec<Value> = self
            .path
            .iter()
            .map(|phase| {
                json!({
                    "offered_events_per_second": phase.offered,
                    "written": phase.written,
                    "written_per_second": round(phase.written_per_second),
                    "sustained_events_per_second": round(phase.sustained),
                    "kept_up": phase.kept_up(),
                    "commit_to_read_model": phase.read_model.to_json(),
                    "commit_to_rollup_min": phase.rollup.to_json(),
                    "max_lag_bronze": phase.max_lag.0,
                    "max_lag_materializer": phase.max_lag.1,
                    "cpu_us_per_event": round(phase.cpu_us_per_event),
                    "source_cpu_us_per_event": phase.source_cpu_us_per_event.map(round),
                    "wal_bytes_per_event": round(phase.wal_bytes_per_event),
                })
            })
            .collect();
        let goals: Vec<Value> = self
            .goals()
            .iter()
            .map(|goal| {
                json!({
                    "goal": goal.name,
                    "figure": round(goal.figure),
                    "unit": goal.unit,
                    "target": goal.target,
                    "at_least": goal.at_least,
                    "met": goal.met(),
                })
            })
            .collect();
        json!({
            "build": self.build,
            "machine": self.machine,
            "bus": self.bus,
            "platform_settings": self
                .platform_settings
                .iter()
                .map(|(name, value)| (name.clone(), Value::String(value.clone())))
                .collect::<serde_json::Map<String, Value>>(),
            "load_average_before": self.load.0,
            "load_average_after": self.load.1,
            "events_per_stage": self.events,
            "runs": self.runs.len(),
            "stages": stages,
            "path": path,
            "resident_bytes": self.residency.map(|residency| json!({
                "start": residency.start,
                "after_warm_up": residency.warm,
                "peak_after_warm_up": residency.peak_after_warm_up,
                "end": residency.end,
            })),
            "goals": goals,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// The command line of `tributary-bench pipeline` alone (the crate's root is not a
    /// dependency of its modules).
    #[derive(Debug, Parser)]
    struct PipelineCli {
        #[command(flatten)]
        global: tributary::GlobalOptions,
        #[command(flatten)]
        args: PipelineArgs,
    }

    #[tokio::test]
    async fn a_small_run_measures_every_stage_and_the_whole_path() {
        let cli = PipelineCli::try_parse_from([
            "tributary-bench",
            "--events",
            "3000",
            "--runs",
            "1",
            "--tenants",
            "2",
            "--rates",
            "1000",
            "--seconds",
            "3",
        ])
        .unwrap();
        let args = cli.args;
        let settings = Settings::resolve(&cli.global, None).unwrap();
        let report = measure(&args, settings).await.unwrap();
        assert_eq!(report.runs.len(), 1);
        for (key, _, _) in STAGES {
            let figure = report.stage(key);
            assert!(
                figure.events_per_second.is_finite() && figure.events_per_second > 0.0,
                "{key}: {figure:?}"
            );
        }
        assert_eq!(
            report.path.len(),
            2,
            "one rate and the most: {:?}",
            report.path
        );
        for phase in &report.path {
            assert!(phase.sustained > 0.0, "{phase:?}");
            assert!(
                phase.read_model.probes > 0 && phase.read_model.p99.is_finite(),
                "{phase:?}"
            );
            assert_eq!(phase.rollup.probes, phase.read_model.probes, "{phase:?}");
            assert!(phase.wal_bytes_per_event > 0.0, "{phase:?}");
        }
        let figures = report.to_json();
        assert_eq!(figures["goals"].as_array().unwrap().len(), 5, "{figures}");
        assert!(
            figures["stages"]["materializer"]["median"]["events_per_second"]
                .as_f64()
                .unwrap()
                > 0.0
        );
        assert_eq!(figures["path"][0]["offered_events_per_second"], 1000);
        assert!(figures["path"][1]["offered_events_per_second"].is_null());
    }
}
