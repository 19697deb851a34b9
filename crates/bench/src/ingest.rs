//! `tributary-bench ingest`: ingest throughput and ack latency through edge -> bus -> bronze
//! over mutual TLS, against a raw `COPY` of the same rows into the same bronze table, measured in
//! the same run on the same database. Prints figures; it is not a test. docs/benchmarks.md says
//! how to run it and what the figures on the development machine were.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use domain::{EventId, Lsn, SourceId, TenantId};
use edge_client::{ClientOptions, EdgeClient, EncodedBatch, ServerTrust};
use protocol::{ChangeEvent, EventBatch, EventStatus, Op};
use serde_json::{Map, Value};
use store::service::bronze::BronzeRow;
use store::{Actor, Database, Scope, TenantTx};
use tokio::task::JoinSet;
use tributary::ingestion::Ingestion;
use tributary::{Connected, DatabaseChoice, Settings};

use crate::machine;

/// How often progress is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(3);
/// How long bronze may take to catch up after the last ack before the run is declared failed.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(600);
/// How long one batch may keep failing with retryable errors before the run is abandoned.
const BATCH_DEADLINE: Duration = Duration::from_secs(120);

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
tributary-bench ingest                                  1M events, embedded bus\n  \
tributary-bench ingest --events 200000 --senders 8\n  \
tributary-bench --bus nats://127.0.0.1:4222 ingest      the NATS JetStream bus\n\n\
Build with --release for meaningful figures. With --database-url the benchmark creates its \
tenants in that database (they stay in the tenant registry; their bronze rows are removed): use \
a scratch database.")]
pub struct IngestArgs {
    /// Events to send in all, spread evenly over the tenants.
    #[arg(long, default_value_t = 1_000_000, value_name = "N")]
    pub events: u64,

    /// Tenants, each with one source and one paired client.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub tenants: u32,

    /// Events per batch, i.e. per request (the protocol allows up to 5000).
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub batch: u32,

    /// Concurrent senders: requests in flight at once, each on its own kept-alive connection.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub senders: u32,

    /// Approximate size in bytes of each event as bronze stores it (the JSON of its key and
    /// row); the anchor measurements used about 225.
    #[arg(long, default_value_t = 250, value_name = "BYTES")]
    pub payload_bytes: usize,

    /// Compression of the request bodies: identity, gzip or zstd.
    #[arg(long, default_value = "zstd", value_parser = parse_encoding, value_name = "ENCODING")]
    pub encoding: protocol::Encoding,

    /// Skip the COPY baseline (and so the ratio).
    #[arg(long)]
    pub skip_baseline: bool,
}

fn parse_encoding(text: &str) -> Result<protocol::Encoding, String> {
    protocol::Encoding::from_header(Some(text))
        .map_err(|_| "one of identity, gzip, zstd".to_owned())
}

pub async fn ingest(args: IngestArgs, settings: Settings) -> anyhow::Result<ExitCode> {
    if args.events == 0 || args.tenants == 0 || args.senders == 0 {
        bail!("--events, --tenants and --senders must be at least 1");
    }
    if args.batch == 0 || args.batch as usize > protocol::Limits::default().max_events {
        bail!(
            "--batch must be between 1 and {}",
            protocol::Limits::default().max_events
        );
    }
    let outcome = crate::scratch::with_scratch_database(
        settings.clone(),
        "ingest",
        async |settings, connected| run(&args, settings, connected).await,
    )
    .await;
    let report = outcome?;
    report.print(&args, &settings);
    Ok(ExitCode::SUCCESS)
}

/// One tenant of the run: its source, the source's pairing token and how many events it sends.
struct BenchTenant {
    tenant: TenantId,
    source: SourceId,
    token: String,
    events: u64,
}

/// What the run measured.
pub(crate) struct Report {
    bus: String,
    pub(crate) baseline: Option<Baselines>,
    pub(crate) events: u64,
    pub(crate) ack_elapsed: Duration,
    pub(crate) bronze_elapsed: Duration,
    latencies: Vec<Duration>,
    retries: u64,
    duplicates: u64,
    average_body_bytes: usize,
    /// CPU used while sending (until the last ack) and while bronze caught up afterwards.
    pub(crate) sending: machine::CpuUse,
    pub(crate) draining: machine::CpuUse,
    /// WAL the platform's cluster wrote from the first send until bronze held every event.
    pub(crate) wal_bytes: u64,
}

pub(crate) async fn run(
    args: &IngestArgs,
    settings: &Settings,
    connected: &Connected,
) -> anyhow::Result<Report> {
    let database = &connected.database;
    let bus_config: bus::BusConfig = settings
        .bus
        .parse()
        .with_context(|| format!("invalid bus setting {:?}", settings.bus))?;
    let run_name = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let tenants = create_tenants(database, args, run_name).await?;
    let tenant_ids: Vec<TenantId> = tenants.iter().map(|tenant| tenant.tenant).collect();
    // Commit times start now (bronze retention removes old ones), one millisecond apart.
    let base_millis =
        i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
            .context("the clock is out of range")?;
    ensure_partitions(database, &tenants, base_millis).await?;

    let pgdata = crate::scratch::managed_pgdata(settings);
    let baseline = if args.skip_baseline {
        None
    } else {
        Some(copy_baseline(connected, args, &tenants, base_millis, pgdata.as_deref()).await?)
    };

    // The ingestion roles as `up` starts them, without the materializer: this measures bronze.
    let ingestion = Ingestion::start_with(
        settings,
        database,
        &bus_config,
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        false,
    )
    .await?;
    let edge_url = format!("https://{}/", ingestion.edge_addr);
    let ca_pem = ingestion.ca_pem.clone();

    println!(
        "pairing {} clients with the edge at {edge_url} ...",
        tenants.len()
    );
    let options = ClientOptions {
        max_idle_connections: args.senders as usize,
        ..ClientOptions::default()
    };
    let mut clients = Vec::with_capacity(tenants.len());
    for tenant in &tenants {
        let credentials = edge_client::pair(&edge_url, ServerTrust::Ca(&ca_pem), &tenant.token)
            .await
            .context("pairing a benchmark client")?;
        clients.push(EdgeClient::with_options(
            &edge_url,
            &credentials,
            options.clone(),
        )?);
    }

    println!(
        "encoding {} events into batches of {} ...",
        args.events, args.batch
    );
    let jobs = Arc::new(encode_batches(args, &tenants, base_millis)?);
    let average_body_bytes = jobs
        .iter()
        .map(|(_, batch)| batch.body_bytes())
        .sum::<usize>()
        / jobs.len().max(1);
    drop(tenants);

    println!(
        "sending with {} concurrent senders over {} ({}) ...",
        args.senders,
        describe_bus(&bus_config),
        encoding_name(args.encoding)
    );
    let cpu_at_start = machine::CpuSample::take(pgdata.as_deref());
    let wal_at_start = store::service::bench_support::wal_position(&database.service).await?;
    let started = Instant::now();
    let acked = Arc::new(AtomicU64::new(0));
    let retries = Arc::new(AtomicU64::new(0));
    let duplicates = Arc::new(AtomicU64::new(0));
    let next_job = Arc::new(AtomicUsize::new(0));
    let mut senders = JoinSet::new();
    for _ in 0..args.senders {
        senders.spawn(send_jobs(
            jobs.clone(),
            clients.clone(),
            next_job.clone(),
            acked.clone(),
            retries.clone(),
            duplicates.clone(),
        ));
    }
    let mut progress = Progress::new(started);
    let mut latencies = Vec::with_capacity(jobs.len());
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    tick.tick().await;
    while !senders.is_empty() {
        tokio::select! {
            joined = senders.join_next() => {
                if let Some(joined) = joined {
                    latencies.extend(joined.context("a sender panicked")??);
                }
            }
            _ = tick.tick() => {
                let in_bronze = store::service::bench_support::bronze_count(&database.service, &tenant_ids).await?;
                progress.print(acked.load(Ordering::Relaxed), in_bronze);
            }
        }
    }
    let ack_elapsed = started.elapsed();
    let cpu_at_last_ack = machine::CpuSample::take(pgdata.as_deref());
    let sending = cpu_at_last_ack.since(&cpu_at_start);
    let total = acked.load(Ordering::Relaxed);
    println!(
        "  all {total} events acked after {:.1} s; waiting for bronze ...",
        ack_elapsed.as_secs_f64()
    );
    let drain_deadline = Instant::now() + DRAIN_TIMEOUT;
    let bronze_elapsed = loop {
        let in_bronze =
            store::service::bench_support::bronze_count(&database.service, &tenant_ids).await?;
        if in_bronze as u64 >= total {
            break started.elapsed();
        }
        if Instant::now() > drain_deadline {
            bail!(
                "bronze holds {in_bronze} of {total} events {} s after the last ack",
                DRAIN_TIMEOUT.as_secs()
            );
        }
        if progress.due() {
            progress.print(total, in_bronze);
        }
        // Polling the count: the bronze writer has no completion signal to wait on.
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let draining = machine::CpuSample::take(pgdata.as_deref()).since(&cpu_at_last_ack);
    let wal_bytes = store::service::bench_support::wal_position(&database.service)
        .await?
        .saturating_sub(wal_at_start);
    // The clients' kept-alive connections close with them, so the edge stops without waiting.
    drop(clients);
    ingestion.stop().await;
    let removed =
        store::service::bench_support::empty_bronze(&connected.connection_settings, &tenant_ids)
            .await
            .context("removing the benchmark's bronze rows")?;
    tracing::debug!(removed, "benchmark rows removed from bronze");
    Ok(Report {
        bus: describe_bus(&bus_config),
        baseline,
        events: total,
        ack_elapsed,
        bronze_elapsed,
        latencies,
        retries: retries.load(Ordering::Relaxed),
        duplicates: duplicates.load(Ordering::Relaxed),
        average_body_bytes,
        sending,
        draining,
        wal_bytes,
    })
}

async fn create_tenants(
    database: &Database,
    args: &IngestArgs,
    run_name: &str,
) -> anyhow::Result<Vec<BenchTenant>> {
    let mut tenants = Vec::with_capacity(args.tenants as usize);
    let per_tenant = args.events / u64::from(args.tenants);
    let remainder = args.events % u64::from(args.tenants);
    for index in 0..args.tenants {
        let (tenant, source, token) =
            tenant_with_source(database, &format!("bench {run_name} {index}"), "simulator").await?;
        tenants.push(BenchTenant {
            tenant,
            source,
            token,
            events: per_tenant + u64::from(u64::from(index) < remainder),
        });
    }
    Ok(tenants)
}

/// A new tenant named `name` with a source of `kind` named "bench": the tenant, the source
/// and the source's pairing token.
pub(crate) async fn tenant_with_source(
    database: &Database,
    name: &str,
    kind: &str,
) -> anyhow::Result<(TenantId, SourceId, String)> {
    let tenant = crate::materialize::create_tenant(database, name).await?;
    let mut tx = TenantTx::begin(
        &database.app,
        Scope::Control {
            tenant: Some(tenant),
            actor: Actor::Cli("bench".into()),
        },
    )
    .await?;
    let (source, token) = store::sources::create_source(&mut tx, "bench", kind).await?;
    tx.commit().await?;
    Ok((tenant, source.source_id, token.token))
}

/// The daily partitions the run's commit times fall in (the bronze writer creates them too;
/// the baseline needs them first).
async fn ensure_partitions(
    database: &Database,
    tenants: &[BenchTenant],
    base_millis: i64,
) -> anyhow::Result<()> {
    let most = tenants
        .iter()
        .map(|tenant| tenant.events)
        .max()
        .unwrap_or(0);
    let day = |millis: i64| {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
            .map(|at| at.date())
    };
    let first = day(base_millis)?;
    let last = day(base_millis + i64::try_from(most)?)?;
    store::service::bench_support::ensure_bronze_days(&database.service, [first, last]).await?;
    Ok(())
}

/// Event `n` of `source`: an insert of row `n` of public.orders, committed alone at
/// `base_millis + n`, with a row sized so the stored payload is about `payload_bytes`.
fn event(source: SourceId, base_millis: i64, n: u64, payload_bytes: usize) -> ChangeEvent {
    let millis = base_millis + n as i64;
    let lsn = Lsn(0x1_0000_0000 + n * 64);
    let mut key = Map::new();
    key.insert("id".into(), n.into());
    let mut after = Map::new();
    after.insert("id".into(), n.into());
    after.insert(
        "status".into(),
        ["new", "paid", "shipped", "void"][(n % 4) as usize].into(),
    );
    after.insert("amount_cents".into(), ((n * 7919) % 1_000_000).into());
    after.insert("currency".into(), "EUR".into());
    after.insert(
        "sku".into(),
        format!("SKU-{:05}", (n * 31) % 100_000).into(),
    );
    after.insert("updated_at".into(), "2026-07-24T12:00:00.000000Z".into());
    // `{"key":{"id":N},"after":{...},"before":null}` without the note, then the note's padding.
    let unpadded = Value::Object(after.clone()).to_string().len()
        + Value::Object(key.clone()).to_string().len()
        + r#"{"key":,"after":,"before":null}"#.len();
    let padding = payload_bytes.saturating_sub(unpadded + r#","note":"""#.len());
    after.insert("note".into(), "x".repeat(padding).into());
    ChangeEvent {
        event_id: EventId::derive(source, millis, lsn, 0),
        op: Op::Insert,
        schema: "public".into(),
        table: "orders".into(),
        lsn,
        seq: 0,
        xid: Some(1000 + n),
        event_time: time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
            .expect("a current time"),
        key,
        after: Some(after),
        before: None,
        unchanged: Vec::new(),
        types: Default::default(),
    }
}

/// The row bronze keeps for `event` of `tenant` ([`bus::bronze::row_of`], what the edge and the
/// bronze writer store).
fn bronze_row(tenant: TenantId, source: SourceId, event: ChangeEvent) -> BronzeRow {
    bus::bronze::row_of(&protocol::Envelope {
        tenant_id: tenant,
        source_id: source,
        event,
        replay: None,
    })
    .expect("the benchmark's events fit bronze")
}

/// The same rows stored by PostgreSQL's fastest path, twice: in one `COPY` (one transaction),
/// and in `COPY`s of [`BASELINE_TRANSACTION_ROWS`] rows, each a durable transaction of its own,
/// as the platform's acknowledged batches are.
pub(crate) struct Baselines {
    pub(crate) rows: u64,
    pub(crate) one: machine::Measured,
    pub(crate) transactions: machine::Measured,
}

/// Rows per transaction of the second baseline.
pub(crate) const BASELINE_TRANSACTION_ROWS: u64 = 1_000;

/// The baselines: the same rows, made ahead of time, into the same indexed, partitioned bronze
/// table; removed again after each, so the platform starts from the same state.
async fn copy_baseline(
    connected: &Connected,
    args: &IngestArgs,
    tenants: &[BenchTenant],
    base_millis: i64,
    pgdata: Option<&std::path::Path>,
) -> anyhow::Result<Baselines> {
    println!("baseline: preparing {} rows for COPY ...", args.events);
    let mut transactions = Vec::new();
    let mut transaction = Vec::new();
    let mut in_transaction = 0;
    // Interleaved over tenants, as the platform's batches arrive.
    let most = tenants
        .iter()
        .map(|tenant| tenant.events)
        .max()
        .unwrap_or(0);
    for n in 0..most {
        for tenant in tenants.iter().filter(|tenant| n < tenant.events) {
            let event = event(tenant.source, base_millis, n, args.payload_bytes);
            store::service::bronze::copy_text_row(
                &bronze_row(tenant.tenant, tenant.source, event),
                &mut transaction,
            );
            in_transaction += 1;
            if in_transaction == BASELINE_TRANSACTION_ROWS {
                transactions.push(std::mem::take(&mut transaction));
                in_transaction = 0;
            }
        }
    }
    if in_transaction > 0 {
        transactions.push(transaction);
    }
    let bytes: usize = transactions.iter().map(Vec::len).sum();
    let tenant_ids: Vec<TenantId> = tenants.iter().map(|tenant| tenant.tenant).collect();
    let database = &connected.database;
    let measure = async |what: &str, one: bool| -> anyhow::Result<(u64, machine::Measured)> {
        checkpoint(connected).await;
        println!(
            "baseline: {what}: {} rows ({} MB of COPY text) into bronze.cdc_events ...",
            args.events,
            bytes / 1_000_000
        );
        let (copied, measured) = machine::Measured::of(database, pgdata, async || {
            let copied = if one {
                store::service::bench_support::copy_bronze(&database.service, &transactions).await
            } else {
                store::service::bench_support::copy_bronze_in_transactions(
                    &database.service,
                    &transactions,
                )
                .await
            };
            copied.context("the COPY baseline")
        })
        .await?;
        println!(
            "  {copied} rows in {:.1} s: {:.0} rows/s",
            measured.elapsed.as_secs_f64(),
            measured.rate(copied)
        );
        println!("baseline: removing its rows and vacuuming bronze ...");
        store::service::bench_support::empty_bronze(&connected.connection_settings, &tenant_ids)
            .await
            .context("removing the baseline's rows")?;
        Ok((copied, measured))
    };
    let (rows, one) = measure("one COPY, one transaction", true).await?;
    let (_, transactions) = measure(
        &format!("COPYs of {BASELINE_TRANSACTION_ROWS} rows, each a durable transaction"),
        false,
    )
    .await?;
    checkpoint(connected).await;
    Ok(Baselines {
        rows,
        one,
        transactions,
    })
}

async fn checkpoint(connected: &Connected) {
    if let Err(error) =
        store::service::bench_support::checkpoint(&connected.connection_settings).await
    {
        tracing::warn!(%error, "no checkpoint before a timed phase (needs a superuser login)");
    }
}

/// Every batch of every tenant, encoded once, interleaved over tenants: (tenant index, batch).
fn encode_batches(
    args: &IngestArgs,
    tenants: &[BenchTenant],
    base_millis: i64,
) -> anyhow::Result<Vec<(usize, EncodedBatch)>> {
    let batch = u64::from(args.batch);
    let mut jobs = Vec::new();
    let most = tenants
        .iter()
        .map(|tenant| tenant.events)
        .max()
        .unwrap_or(0);
    for first in (0..most).step_by(batch as usize) {
        for (index, tenant) in tenants.iter().enumerate() {
            if first >= tenant.events {
                continue;
            }
            let events = (first..(first + batch).min(tenant.events))
                .map(|n| event(tenant.source, base_millis, n, args.payload_bytes))
                .collect();
            let batch = EventBatch {
                tenant_id: None,
                source_id: None,
                events,
                types: Vec::new(),
            };
            jobs.push((index, EncodedBatch::new(&batch, args.encoding)?));
        }
    }
    Ok(jobs)
}

/// One sender: takes the next batch, sends it until the edge acks it, records how long the
/// acked request took; returns those latencies.
async fn send_jobs(
    jobs: Arc<Vec<(usize, EncodedBatch)>>,
    clients: Vec<EdgeClient>,
    next_job: Arc<AtomicUsize>,
    acked: Arc<AtomicU64>,
    retries: Arc<AtomicU64>,
    duplicates: Arc<AtomicU64>,
) -> anyhow::Result<Vec<Duration>> {
    let mut latencies = Vec::new();
    loop {
        let job = next_job.fetch_add(1, Ordering::Relaxed);
        let Some((tenant, batch)) = jobs.get(job) else {
            return Ok(latencies);
        };
        let deadline = Instant::now() + BATCH_DEADLINE;
        let mut backoff = domain::Backoff::new(Duration::from_millis(20), Duration::from_secs(1));
        let response = loop {
            let sent = Instant::now();
            match clients[*tenant].send_encoded(batch).await {
                Ok(response) => {
                    latencies.push(sent.elapsed());
                    break response;
                }
                Err(error) if error.is_retryable() && Instant::now() < deadline => {
                    retries.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%error, "retrying a batch");
                    let wait = backoff.next();
                    tokio::time::sleep(error.retry_after().unwrap_or(wait)).await;
                }
                Err(error) => return Err(error).context("sending a batch"),
            }
        };
        if let Some(rejected) = response
            .results
            .iter()
            .find(|result| result.status == EventStatus::Rejected)
        {
            bail!(
                "the edge rejected a benchmark event: {}",
                rejected.message.as_deref().unwrap_or("no reason given")
            );
        }
        duplicates.fetch_add(u64::from(response.duplicates), Ordering::Relaxed);
        acked.fetch_add(
            u64::from(response.accepted + response.duplicates),
            Ordering::Relaxed,
        );
    }
}

/// Progress lines: events acked and in bronze, and rates since the previous line.
struct Progress {
    started: Instant,
    last: Instant,
    last_acked: u64,
    last_bronze: i64,
}

impl Progress {
    fn new(started: Instant) -> Self {
        Self {
            started,
            last: started,
            last_acked: 0,
            last_bronze: 0,
        }
    }

    fn due(&self) -> bool {
        self.last.elapsed() >= PROGRESS_EVERY
    }

    fn print(&mut self, acked: u64, in_bronze: i64) {
        let interval = self.last.elapsed().as_secs_f64().max(0.001);
        println!(
            "  {:>6.1} s  acked {acked:>9} ({:>7.0}/s)  in bronze {in_bronze:>9} ({:>7.0}/s)",
            self.started.elapsed().as_secs_f64(),
            (acked - self.last_acked) as f64 / interval,
            (in_bronze - self.last_bronze) as f64 / interval,
        );
        self.last = Instant::now();
        self.last_acked = acked;
        self.last_bronze = in_bronze;
    }
}

impl Report {
    fn print(&self, args: &IngestArgs, settings: &Settings) {
        let rate = |events: u64, elapsed: Duration| events as f64 / elapsed.as_secs_f64();
        let mut latencies = self.latencies.clone();
        latencies.sort();
        let percentile = |p: f64| {
            latencies
                .get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1))
                .map_or(0.0, |latency| latency.as_secs_f64() * 1000.0)
        };
        let ack_rate = rate(self.events, self.ack_elapsed);
        let bronze_rate = rate(self.events, self.bronze_elapsed);
        println!();
        println!("Tributary ingest benchmark");
        println!(
            "  build:          {}",
            if cfg!(debug_assertions) {
                "debug (not representative: build with --release)"
            } else {
                "release"
            }
        );
        println!("  machine:        {}", machine::describe());
        println!("  bus:            {}", self.bus);
        println!(
            "  database:       {}",
            match settings.database {
                DatabaseChoice::Managed => "managed cluster in a temporary directory",
                DatabaseChoice::Given { .. } => "given by URL",
            }
        );
        println!(
            "  workload:       {} events, {} tenants, batches of {}, {} senders, ~{}-byte payloads, \
             {} bodies averaging {} bytes",
            self.events,
            args.tenants,
            args.batch,
            args.senders,
            args.payload_bytes,
            encoding_name(args.encoding),
            self.average_body_bytes
        );
        if let Some(baseline) = &self.baseline {
            println!(
                "  COPY baseline:  {:.0} rows/s ({} rows in {:.1} s, one COPY into bronze.cdc_events)",
                baseline.one.rate(baseline.rows),
                baseline.rows,
                baseline.one.elapsed.as_secs_f64()
            );
            println!(
                "                  {:.0} rows/s in COPYs of {BASELINE_TRANSACTION_ROWS} rows, each a durable transaction ({:.1} s)",
                baseline.transactions.rate(baseline.rows),
                baseline.transactions.elapsed.as_secs_f64()
            );
        }
        println!(
            "  acked:          {ack_rate:.0} events/s ({:.1} s to the last ack)",
            self.ack_elapsed.as_secs_f64()
        );
        println!(
            "  into bronze:    {bronze_rate:.0} events/s end to end ({:.1} s until bronze held every event)",
            self.bronze_elapsed.as_secs_f64()
        );
        if let Some(baseline) = &self.baseline {
            for (what, copy, goal) in [
                ("one COPY", baseline.one, ""),
                (
                    "the 1,000-row transactions",
                    baseline.transactions,
                    "; goal >= 0.8 end to end",
                ),
            ] {
                println!(
                    "  ratio:          {:.2} x {what} end to end ({:.2} x acked){goal}",
                    bronze_rate / copy.rate(baseline.rows),
                    ack_rate / copy.rate(baseline.rows)
                );
            }
        }
        println!(
            "  ack latency:    p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms per batch ({} requests)",
            percentile(0.50),
            percentile(0.99),
            percentile(1.0),
            latencies.len()
        );
        println!(
            "  retries:        {} ({} events answered duplicate)",
            self.retries, self.duplicates
        );
        if let Some(baseline) = &self.baseline {
            println!("  CPU, one COPY:  {}", Cores::of(baseline.one.cpu));
        }
        println!("  CPU, sending:   {}", Cores::of(self.sending));
        println!("  CPU, draining:  {}", Cores::of(self.draining));
    }
}

/// Cores busy on average over a phase: this process (client and platform roles together) and
/// the managed PostgreSQL server (every process of the cluster), when it is managed.
struct Cores {
    own: f64,
    postgres: Option<f64>,
}

impl Cores {
    fn of(used: machine::CpuUse) -> Self {
        Self {
            own: used.own / used.wall,
            postgres: used.postgres.map(|postgres| postgres / used.wall),
        }
    }
}

impl std::fmt::Display for Cores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.2} cores in tributary (clients + edge + bus + bronze writer)",
            self.own
        )?;
        match self.postgres {
            Some(postgres) => write!(f, ", {postgres:.2} cores in PostgreSQL"),
            None => write!(f, ", PostgreSQL not measured (not a managed cluster)"),
        }
    }
}

pub(crate) fn describe_bus(config: &bus::BusConfig) -> String {
    match &config.backend {
        bus::Backend::Embedded => format!("embedded ({} partitions)", config.partitions),
        bus::Backend::Nats(nats) => format!(
            "NATS JetStream at {} ({} partitions, {} replica(s))",
            nats.redacted_servers(),
            config.partitions,
            nats.replicas
        ),
    }
}

fn encoding_name(encoding: protocol::Encoding) -> &'static str {
    encoding.header_value().unwrap_or("identity")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_valid_and_stored_payloads_have_about_the_asked_size() {
        let (tenant, source) = (TenantId::new_random(), SourceId::new_random());
        for payload_bytes in [250, 1000] {
            let event = event(source, 1_780_000_000_000, 123_456, payload_bytes);
            assert_eq!(event.event_id, event.expected_event_id(source));
            let row = bronze_row(tenant, source, event);
            assert!(
                row.payload.len().abs_diff(payload_bytes) <= 2,
                "{} bytes: {}",
                row.payload.len(),
                row.payload
            );
        }
    }
}
