//! `tributary-bench capture`: the agent's PostgreSQL capture against `pg_recvlogical` on the
//! same source and the same WAL, then commit-to-bronze latency through the whole platform at a
//! fixed rate.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::{Connection, PgConnection};
use tokio::sync::{Notify, watch};
use tributary::ingestion::Ingestion;
use tributary::{Connected, DatabaseChoice, Settings};

use crate::machine;

#[derive(Debug, clap::Args)]
pub struct CaptureArgs {
    /// Rows written to the source for the capture comparison.
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: u64,
    /// Rows per source transaction.
    #[arg(long, default_value_t = 1_000)]
    pub transaction_rows: u64,
    /// Rows per second written during the latency run.
    #[arg(long, default_value_t = 5_000)]
    pub rate: u64,
    /// How long the latency run writes.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// A source database to use (needs wal_level=logical and a role that may replicate)
    /// instead of a private cluster started for the run.
    #[arg(long, env = "TRIBUTARY_BENCH_SOURCE_URL", hide_env_values = true)]
    pub source_url: Option<String>,
    /// Only the capture comparison, not the latency run through the platform.
    #[arg(long)]
    pub skip_latency: bool,
}

pub async fn capture(args: CaptureArgs, settings: Settings) -> anyhow::Result<ExitCode> {
    if args.rows == 0 || args.transaction_rows == 0 || args.rate == 0 {
        bail!("--rows, --transaction-rows and --rate must be at least 1");
    }
    let scratch = std::env::temp_dir().join(format!(
        "tributary-bench-capture-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&scratch)?;
    let outcome = run(&args, settings, &scratch).await;
    let _ = std::fs::remove_dir_all(&scratch);
    outcome?;
    Ok(ExitCode::SUCCESS)
}

async fn run(args: &CaptureArgs, settings: Settings, scratch: &Path) -> anyhow::Result<()> {
    let (_cluster, url) = start_source(scratch, args.source_url.as_deref()).await?;
    let mut source = PgConnection::connect(&url)
        .await
        .context("connecting to the source")?;
    let capture =
        capture_comparison(args.rows, args.transaction_rows, &url, &mut source, scratch).await?;
    let snapshot = keyless_snapshot(args, &url, &mut source, scratch).await?;
    let latency = if args.skip_latency {
        None
    } else {
        Some(latency_run(args, settings, &url, &mut source, scratch).await?)
    };
    println!();
    println!(
        "capture: {} rows in transactions of {} on {}",
        args.rows,
        args.transaction_rows,
        machine::describe()
    );
    println!(
        "  pg_recvlogical (pgoutput to /dev/null)   {:>9.0} rows/s  ({:.2} s, mean of a run before and after the agent)",
        capture.baseline_rate(),
        capture.baseline.as_secs_f64()
    );
    println!(
        "  tributary-agent (decoded into the spool)  {:>9.0} rows/s  ({:.2} s)",
        capture.agent_rate(),
        capture.agent.as_secs_f64()
    );
    println!(
        "  ratio agent / pg_recvlogical              {:>9.2}   (goal >= 1.0)",
        capture.agent_rate() / capture.baseline_rate()
    );
    println!(
        "snapshot: {} rows of a table without a key, read through a cursor into the spool",
        args.rows
    );
    println!(
        "  {:.2} s   peak RSS {:.1} MiB   (goal < 64 MiB)",
        snapshot.took.as_secs_f64(),
        snapshot.peak_rss as f64 / (1024.0 * 1024.0)
    );
    if let Some(latency) = latency {
        println!(
            "latency: commit in the source -> row in bronze, {} rows/s for {} s ({} rows)",
            args.rate, args.seconds, latency.rows
        );
        println!(
            "  p50 {:.3} s   p99 {:.3} s   max {:.3} s   (goal p99 < 1 s)",
            latency.p50, latency.p99, latency.max
        );
    }
    Ok(())
}

/// Starts a private source cluster (`wal_level=logical`) under `scratch`, unless `given` names
/// a source database; returns the cluster (stopped when dropped) and the URL to connect to.
pub(crate) async fn start_source(
    scratch: &Path,
    given: Option<&str>,
) -> anyhow::Result<(Option<store::cluster::ScratchCluster>, String)> {
    if let Some(url) = given {
        return Ok((None, url.to_owned()));
    }
    println!("starting a source cluster (wal_level=logical) ...");
    let dir = scratch.join("source");
    let cluster = tokio::task::spawn_blocking(move || {
        store::cluster::ScratchCluster::start(
            &dir,
            &[
                ("wal_level", "logical"),
                ("max_replication_slots", "8"),
                ("max_wal_senders", "8"),
                ("max_wal_size", "4GB"),
                ("shared_buffers", "256MB"),
            ],
        )
    })
    .await??;
    let url = cluster.url("postgres");
    Ok((Some(cluster), url))
}

/// The agent's capture of the same rows against `pg_recvlogical`'s.
pub(crate) struct Capture {
    pub(crate) rows: u64,
    /// The mean of `pg_recvlogical`'s two runs.
    pub(crate) baseline: Duration,
    pub(crate) agent: Duration,
    /// CPU of `pg_recvlogical` itself over its two runs (the server's decoding not counted).
    pub(crate) baseline_cpu: machine::CpuUse,
    /// CPU of this process while the agent captured (the server's decoding not counted).
    pub(crate) agent_cpu: machine::CpuUse,
}

impl Capture {
    pub(crate) fn baseline_rate(&self) -> f64 {
        self.rows as f64 / self.baseline.as_secs_f64()
    }

    pub(crate) fn agent_rate(&self) -> f64 {
        self.rows as f64 / self.agent.as_secs_f64()
    }
}

async fn execute(source: &mut PgConnection, sql: &str) -> anyhow::Result<()> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(source)
        .await
        .with_context(|| format!("running {sql}"))?;
    Ok(())
}

/// The agent's reader alone (source to spool), as `tributary-agent run` runs it.
struct Reader {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    status: agent::status::StatusCell,
}

fn start_reader(settings: agent::postgres::Settings, state_dir: &Path) -> anyhow::Result<Reader> {
    let spool = Arc::new(agent::spool::Spool::open(state_dir, u64::MAX)?);
    let status = agent::status::StatusCell::new("postgres");
    let (stop, stop_rx) = watch::channel(false);
    let (_confirm_tx, confirm) = watch::channel(0);
    let shared = agent::postgres::Shared {
        state_dir: state_dir.to_owned(),
        source: domain::SourceId::new_random(),
        spool,
        spooled: Arc::new(Notify::new()),
        status: status.clone(),
        confirm,
    };
    let task = tokio::spawn(agent::postgres::stream::run(settings, shared, stop_rx));
    Ok(Reader { stop, task, status })
}

impl Reader {
    async fn wait(
        &self,
        what: &str,
        done: impl Fn(&agent::status::AgentStatus) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(1800);
        loop {
            let status = self.status.get();
            if done(&status) {
                return Ok(());
            }
            if self.task.is_finished() || status.state == "failed" {
                bail!("the agent's reader stopped: {:?}", status.last_error);
            }
            if Instant::now() > deadline {
                bail!("timed out waiting until {what}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.task.await?
    }
}

fn reader_settings(url: &str, slot: &str, table: &str) -> agent::postgres::Settings {
    agent::postgres::Settings {
        url: url.to_owned(),
        tables: vec![table.to_owned()],
        slot: slot.to_owned(),
        publication: slot.to_owned(),
        heartbeat: Duration::from_secs(10),
    }
}

pub(crate) async fn capture_comparison(
    rows: u64,
    transaction_rows: u64,
    url: &str,
    source: &mut PgConnection,
    scratch: &Path,
) -> anyhow::Result<Capture> {
    execute(
        source,
        "drop table if exists bench_capture; \
         create table bench_capture (id bigserial primary key, device int not null, \
         value double precision, note text, at timestamptz not null default now())",
    )
    .await?;
    // The agent sets up its publication and slot (an empty snapshot), then pauses.
    let state_dir = scratch.join("capture-agent");
    std::fs::create_dir_all(&state_dir)?;
    let settings = reader_settings(url, "bench_capture", "public.bench_capture");
    let reader = start_reader(settings.clone(), &state_dir)?;
    reader
        .wait("the agent streams", |status| status.state == "streaming")
        .await?;
    reader.stop().await?;
    // pg_recvlogical runs before and after the agent (cache effects then favour neither).
    execute(
        source,
        "select pg_create_logical_replication_slot('bench_recvlogical_a', 'pgoutput'); \
         select pg_create_logical_replication_slot('bench_recvlogical_b', 'pgoutput')",
    )
    .await?;

    println!(
        "writing {} rows to the source in transactions of {} ...",
        rows, transaction_rows
    );
    let mut written = 0;
    let mut last_lsn = String::new();
    while written < rows {
        let batch = transaction_rows.min(rows - written);
        last_lsn = sqlx::query_scalar(
            "with inserted as (insert into bench_capture (device, value, note) \
               select g % 100, g * 0.25, 'reading ' || g from generate_series(1, $1::int8) g \
               returning 1) \
             select pg_current_wal_lsn()::text from (select count(*) from inserted) done",
        )
        .bind(batch as i64)
        .fetch_one(&mut *source)
        .await?;
        written += batch;
    }
    let end: String = sqlx::query_scalar("select pg_current_wal_lsn()::text")
        .fetch_one(&mut *source)
        .await?;
    let last_commit: domain::Lsn = last_lsn
        .parse()
        .map_err(|_| anyhow::anyhow!("unexpected LSN {last_lsn}"))?;

    println!("pg_recvlogical decoding them to /dev/null ...");
    let cpu_at_start = machine::CpuSample::take(None);
    let before = pg_recvlogical(url, "bench_recvlogical_a", &end).await?;
    let before_cpu = machine::CpuSample::take(None).since(&cpu_at_start);
    println!("  {:.2} s", before.as_secs_f64());

    println!("tributary-agent capturing them into its spool ...");
    let cpu_at_start = machine::CpuSample::take(None);
    let started = Instant::now();
    let reader = start_reader(settings, &state_dir)?;
    reader
        .wait("the agent captured the last transaction", |status| {
            status.captured_lsn.is_some_and(|lsn| lsn >= last_commit)
        })
        .await?;
    // The captured position is the last spooled event's, whose transaction may continue in the
    // next batch: done once every row is spooled (bounded wait, then counted as it is).
    let deadline = Instant::now() + Duration::from_secs(60);
    // A batch being written may not read whole yet: counted as nothing until it does.
    while spooled_events(&state_dir).unwrap_or(0) < rows && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let agent = started.elapsed();
    let agent_cpu = machine::CpuSample::take(None).since(&cpu_at_start);
    reader.stop().await?;
    // Every row is in the spool, once.
    let spooled = spooled_events(&state_dir)?;
    if spooled != rows {
        bail!("the agent spooled {spooled} events for {rows} rows");
    }
    println!("  {:.2} s ({spooled} events spooled)", agent.as_secs_f64());
    println!("pg_recvlogical again, on its second slot ...");
    let cpu_at_start = machine::CpuSample::take(None);
    let after = pg_recvlogical(url, "bench_recvlogical_b", &end).await?;
    let after_cpu = machine::CpuSample::take(None).since(&cpu_at_start);
    println!("  {:.2} s", after.as_secs_f64());
    execute(
        source,
        "select pg_drop_replication_slot('bench_recvlogical_a'); \
         select pg_drop_replication_slot('bench_recvlogical_b'); \
         select pg_drop_replication_slot('bench_capture'); drop table bench_capture",
    )
    .await?;
    Ok(Capture {
        rows,
        baseline: (before + after) / 2,
        agent,
        baseline_cpu: before_cpu + after_cpu,
        agent_cpu,
    })
}

/// The events in an agent's spool.
fn spooled_events(state_dir: &Path) -> anyhow::Result<u64> {
    let spool = agent::spool::Spool::open(state_dir, u64::MAX)?;
    let mut spooled = 0;
    for number in spool.numbers() {
        spooled += spool.read(number)?.header.events as u64;
    }
    Ok(spooled)
}

struct Snapshot {
    took: Duration,
    /// The process's peak resident set size during the snapshot, in bytes.
    peak_rss: u64,
}

/// The agent's snapshot of a table without a key (read by cursor), timed, with the peak
/// resident memory it took (the peak is reset first, so earlier phases do not count).
async fn keyless_snapshot(
    args: &CaptureArgs,
    url: &str,
    source: &mut PgConnection,
    scratch: &Path,
) -> anyhow::Result<Snapshot> {
    execute(
        source,
        "drop table if exists bench_keyless; \
         create table bench_keyless (device int not null, value double precision, note text, \
         at timestamptz not null default now())",
    )
    .await?;
    println!("writing {} rows to a table without a key ...", args.rows);
    sqlx::query(
        "insert into bench_keyless (device, value, note) \
         select g % 100, g * 0.25, 'reading ' || g from generate_series(1, $1::int8) g",
    )
    .bind(args.rows as i64)
    .execute(&mut *source)
    .await?;
    let state_dir = scratch.join("snapshot-agent");
    std::fs::create_dir_all(&state_dir)?;
    println!("tributary-agent reading its snapshot into the spool ...");
    reset_peak_rss();
    let started = Instant::now();
    let reader = start_reader(
        reader_settings(url, "bench_keyless", "public.bench_keyless"),
        &state_dir,
    )?;
    reader
        .wait("the snapshot is read", |status| status.state == "streaming")
        .await?;
    let took = started.elapsed();
    let peak_rss = peak_rss()?;
    reader.stop().await?;
    let spooled = spooled_events(&state_dir)?;
    if spooled != args.rows {
        bail!(
            "the snapshot spooled {spooled} events for {} rows",
            args.rows
        );
    }
    println!(
        "  {:.2} s, peak RSS {:.1} MiB",
        took.as_secs_f64(),
        peak_rss as f64 / (1024.0 * 1024.0)
    );
    execute(
        source,
        "select pg_drop_replication_slot('bench_keyless'); drop table bench_keyless; \
         drop publication if exists bench_keyless, bench_keyless_insert_only",
    )
    .await?;
    Ok(Snapshot { took, peak_rss })
}

/// Resets the kernel's record of this process's peak resident set size (Linux: `5` to
/// `/proc/self/clear_refs`); without it the peak is the whole run's.
fn reset_peak_rss() {
    if let Err(error) = std::fs::write("/proc/self/clear_refs", "5") {
        println!("  (cannot reset the peak RSS: {error}; it covers the whole run)");
    }
}

/// This process's peak resident set size in bytes (`VmHWM` of `/proc/self/status`).
fn peak_rss() -> anyhow::Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let kilobytes = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .context("no VmHWM in /proc/self/status")?;
    Ok(kilobytes * 1024)
}

/// Runs `pg_recvlogical` on `slot` until `end`, timing it.
async fn pg_recvlogical(url: &str, slot: &str, end: &str) -> anyhow::Result<Duration> {
    let binaries = store::cluster::PgBinaries::locate().context("finding pg_recvlogical")?;
    let started = Instant::now();
    let output = tokio::process::Command::new(binaries.path("pg_recvlogical"))
        .args(["--start", "--slot", slot, "--dbname"])
        .arg(url)
        .args([
            "-o",
            "proto_version=1",
            "-o",
            "publication_names=bench_capture",
            "--no-loop",
            "-f",
            "/dev/null",
            "--endpos",
            end,
        ])
        .output()
        .await
        .context("running pg_recvlogical")?;
    if !output.status.success() {
        bail!(
            "pg_recvlogical failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(started.elapsed())
}

struct Latency {
    rows: usize,
    p50: f64,
    p99: f64,
    max: f64,
}

async fn latency_run(
    args: &CaptureArgs,
    mut settings: Settings,
    url: &str,
    source: &mut PgConnection,
    scratch: &Path,
) -> anyhow::Result<Latency> {
    println!("starting the platform (edge, bus, bronze writer) ...");
    if matches!(settings.database, DatabaseChoice::Managed) {
        settings.data_dir = scratch.join("platform");
        std::fs::create_dir_all(&settings.data_dir)?;
    }
    let connected = Connected::open(&settings, true).await?;
    let outcome = latency_with_platform(args, &settings, &connected, url, source, scratch).await;
    let closed = connected.close().await;
    let latency = outcome?;
    closed?;
    Ok(latency)
}

async fn latency_with_platform(
    args: &CaptureArgs,
    settings: &Settings,
    connected: &Connected,
    url: &str,
    source: &mut PgConnection,
    scratch: &Path,
) -> anyhow::Result<Latency> {
    let database = &connected.database;
    let bus_config: bus::BusConfig = settings.bus.parse()?;
    let ingestion = Ingestion::start(
        settings,
        database,
        &bus_config,
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await?;
    execute(
        source,
        "drop table if exists bench_latency; \
         create table bench_latency (id bigserial primary key, device int, value double precision)",
    )
    .await?;
    let agent = StreamingAgent::start(
        database,
        &ingestion,
        url,
        &["public.bench_latency"],
        "bench_latency",
        &scratch.join("latency-agent"),
    )
    .await?;
    let tenant = agent.tenant;

    println!(
        "writing {} rows/s for {} s through agent, edge, bus and bronze ...",
        args.rate, args.seconds
    );
    // A transaction every 10 ms.
    let per_tick = (args.rate / 100).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let ticks = args.seconds * 100;
    for _ in 0..ticks {
        tick.tick().await;
        sqlx::query(
            "insert into bench_latency (device, value) select g % 100, g from generate_series(1, $1::int8) g",
        )
        .bind(per_tick as i64)
        .execute(&mut *source)
        .await?;
    }
    let rows = per_tick * ticks;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let in_bronze =
            store::service::bench_support::bronze_count(&database.service, &[tenant]).await?;
        if in_bronze as u64 >= rows {
            break;
        }
        if Instant::now() > deadline {
            bail!("bronze holds {in_bronze} of {rows} rows");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    agent.stop().await?;
    ingestion.stop().await;
    let mut latencies =
        store::service::bench_support::bronze_commit_latencies(&database.service, tenant, "insert")
            .await?;
    latencies.sort_by(f64::total_cmp);
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(f64::NAN)
    };
    execute(
        source,
        "select pg_drop_replication_slot('bench_latency'); drop table bench_latency",
    )
    .await?;
    Ok(Latency {
        rows: latencies.len(),
        p50: percentile(0.50),
        p99: percentile(0.99),
        max: latencies.last().copied().unwrap_or(f64::NAN),
    })
}

/// A tenant with a Postgres source paired to the edge, and the agent streaming the source's
/// tables to it, as `tributary-agent run` does.
pub(crate) struct StreamingAgent {
    pub(crate) tenant: domain::TenantId,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl StreamingAgent {
    /// Creates the tenant and its source, pairs a client with the edge of `ingestion`, and
    /// starts the agent on `tables` of the source at `url` with its slot and publication named
    /// `slot`; returns once the agent streams.
    pub(crate) async fn start(
        database: &store::Database,
        ingestion: &Ingestion,
        url: &str,
        tables: &[&str],
        slot: &str,
        state_dir: &Path,
    ) -> anyhow::Result<Self> {
        let edge_url = format!("https://{}/", ingestion.edge_addr);
        let (tenant, _, token) =
            crate::ingest::tenant_with_source(database, &format!("bench {slot}"), "postgres")
                .await?;
        std::fs::create_dir_all(state_dir)?;
        edge_client::pair(
            &edge_url,
            edge_client::ServerTrust::Ca(&ingestion.ca_pem),
            &token,
        )
        .await?
        .save(state_dir)?;
        let mut config = agent::config::Config::simulator(edge_url, state_dir.to_owned(), 1);
        config.source.kind = "postgres".into();
        config.source.url = Some(url.to_owned());
        config.source.tables = tables.iter().map(|table| (*table).to_owned()).collect();
        config.source.slot = slot.to_owned();
        config.source.publication = slot.to_owned();
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(agent::run_until(config, async move {
            let _ = stopped.changed().await;
        }));
        // Until the agent streams: its status file says so.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let status = std::fs::read(state_dir.join("status.json"))
                .ok()
                .and_then(|bytes| {
                    serde_json::from_slice::<agent::status::AgentStatus>(&bytes).ok()
                });
            if status.is_some_and(|status| status.state == "streaming") {
                break;
            }
            if Instant::now() > deadline || task.is_finished() {
                bail!("the agent did not start streaming");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Self { tenant, stop, task })
    }

    /// Stops the agent and waits for it to end.
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.task.await?
    }
}
