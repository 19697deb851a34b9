//! `tributary-bench materialize`: the tenant materializer's throughput against the bronze
//! writer alone on the same events in the same run (a ratio), then the time from an event's
//! acknowledgement (durable on the bus, what the edge's 200 means) to its visibility in
//! `analytics.*` and in `global_analytics.rollup_min`, at a steady offered rate. Prints figures;
//! it is not a test. docs/benchmarks.md has the figures of the development machine.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bus::bronze::StoredEvent;
use bus::{Bus, Consumer, Delivery};
use domain::{Plan, SourceId, TenantAttributes, TenantId};
use store::{Actor, Database, Scope, TenantTx};
use tributary::{Connected, Settings};

/// The allowlisted key of the latency probes' readings.
pub(crate) const PROBE_KEY: &str = "bench_probe";

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
tributary-bench materialize                       200k events, then 20 s at 5,000 events/s\n  \
tributary-bench materialize --events 50000 --rate 2000 --seconds 10\n\n\
Build with --release for meaningful figures.")]
pub struct MaterializeArgs {
    /// Simulator events for the throughput comparison, spread over the tenants.
    #[arg(long, default_value_t = 200_000, value_name = "N")]
    pub events: u64,
    /// Tenants, each with one simulated source of 100 devices.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub tenants: u32,
    /// Deliveries per batch, for both consumers.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub batch: usize,
    /// Offered rate of the latency run, in events per second.
    #[arg(long, default_value_t = 5000, value_name = "EVENTS")]
    pub rate: u64,
    /// Length of the latency run.
    #[arg(long, default_value_t = 20, value_name = "SECONDS")]
    pub seconds: u64,
}

pub async fn materialize(args: MaterializeArgs, settings: Settings) -> anyhow::Result<ExitCode> {
    if args.events == 0 || args.tenants == 0 || args.batch == 0 || args.rate < 50 {
        bail!("--events, --tenants and --batch must be at least 1, --rate at least 50");
    }
    let outcome = crate::scratch::with_scratch_database(
        settings,
        "materialize",
        async |settings, connected| run(&args, settings, connected).await,
    )
    .await;
    outcome?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn create_tenant(database: &Database, name: &str) -> anyhow::Result<TenantId> {
    let attributes = TenantAttributes::parse(name, Plan::Team, "energy", "eu")?;
    Ok(
        store::control::create_tenant(&database.app, Actor::Cli("bench".into()), &attributes)
            .await?
            .tenant_id,
    )
}

/// `event` of `tenant` as the edge publishes it ([`bus::Bus::publish_events`]).
pub(crate) fn event(
    tenant: TenantId,
    source: SourceId,
    event: protocol::ChangeEvent,
) -> StoredEvent {
    StoredEvent::new(protocol::Envelope {
        tenant_id: tenant,
        source_id: source,
        event,
        replay: None,
    })
    .expect("the simulator's events fit bronze")
}

async fn run(
    args: &MaterializeArgs,
    settings: &Settings,
    connected: &Connected,
) -> anyhow::Result<()> {
    let database = &connected.database;
    let bus_config: bus::BusConfig = settings
        .bus
        .parse()
        .with_context(|| format!("invalid bus setting {:?}", settings.bus))?;
    let bus = bus::AnyBus::connect(&bus_config, &database.service).await?;
    let run_name = &uuid::Uuid::new_v4().simple().to_string()[..8];
    allow_keys(database).await?;

    // 1. Throughput: the same events through the bronze writer alone, then the materializer
    //    alone, each as one consumer group reading batches, applying and acking.
    let load_before = load_average();
    let measured = throughput(
        database,
        &bus,
        args.events,
        args.tenants,
        args.batch,
        run_name,
        crate::scratch::managed_pgdata(settings).as_deref(),
    )
    .await?;
    let (total, bronze, materializer) = (
        measured.events,
        measured.bronze.elapsed,
        measured.materializer.elapsed,
    );
    let load_after_throughput = load_average();
    let aggregation = Instant::now();
    let rounds = pipeline::aggregator::run_once(&database.service, 5000).await?;
    println!(
        "  aggregator:     {} key-minutes in {:.2} s",
        rounds.minutes,
        aggregation.elapsed().as_secs_f64()
    );

    // 2. Latency: the consumers and the aggregator as `up` runs them; a publisher at the offered
    //    rate, with one probe per tick (a new device, and a reading of the probe key in a minute
    //    of its own), polled for visibility.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until =
        |receiver: tokio::sync::watch::Receiver<bool>| tributary::ingestion::stopped(receiver);
    let mut roles = tokio::task::JoinSet::new();
    // On a bus that keeps bronze the edge's publish writes it: no bronze writer runs there.
    if !bus.keeps_bronze() {
        let (database, bus) = (database.clone(), bus.clone());
        let stopped = until(stopped.clone());
        roles.spawn(async move {
            let _ = pipeline::bronze::run(database.service, bus, Default::default(), stopped).await;
        });
    }
    {
        let (database, bus) = (database.clone(), bus.clone());
        let stopped = until(stopped.clone());
        roles.spawn(async move {
            let _ = pipeline::materializer::run(database.service, bus, Default::default(), stopped)
                .await;
        });
    }
    {
        let database = database.clone();
        let stopped = until(stopped.clone());
        roles.spawn(pipeline::aggregator::run(
            database.service,
            Default::default(),
            stopped,
        ));
    }
    let probe_tenant = create_tenant(database, &format!("bench {run_name} probe")).await?;
    let probe_source = SourceId::new_random();
    let load_tenant = create_tenant(database, &format!("bench {run_name} load")).await?;
    let load_source = SourceId::new_random();
    let mut load =
        agent::simulator::Simulator::new(load_source, 100, 0, agent::simulator::Position::start());
    let tick = Duration::from_millis(20);
    let per_tick = (args.rate as f64 * tick.as_secs_f64()).round().max(2.0) as usize;
    let ticks = (args.seconds * 1000 / tick.as_millis() as u64).max(1);
    let base_minute = time::OffsetDateTime::now_utc()
        .replace_second(0)?
        .replace_nanosecond(0)?
        - time::Duration::days(1);
    // Publishing is over (the poller then stops once every probe was seen).
    let (published_all, publishing) = tokio::sync::watch::channel(false);
    let pending_devices: Arc<Mutex<BTreeMap<String, Instant>>> = Default::default();
    let pending_minutes: Arc<Mutex<BTreeMap<time::OffsetDateTime, Instant>>> = Default::default();
    let device_latencies: Arc<Mutex<Vec<Duration>>> = Default::default();
    let rollup_latencies: Arc<Mutex<Vec<Duration>>> = Default::default();
    let poller = {
        let database = database.clone();
        let (pending_devices, pending_minutes) = (pending_devices.clone(), pending_minutes.clone());
        let (device_latencies, rollup_latencies) =
            (device_latencies.clone(), rollup_latencies.clone());
        let mut stopped = publishing;
        tokio::spawn(async move {
            loop {
                let devices: Vec<String> =
                    pending_devices.lock().unwrap().keys().cloned().collect();
                if !devices.is_empty() {
                    let seen =
                        store::service::bench_support::visible_devices(&database.service, probe_tenant, &devices)
                            .await
                            .unwrap_or_else(|error| {
                                tracing::warn!(%error, source = ?std::error::Error::source(&error), "polling the probes failed");
                                Vec::new()
                            });
                    let now = Instant::now();
                    let mut pending = pending_devices.lock().unwrap();
                    for device in seen {
                        if let Some(acked) = pending.remove(&device) {
                            device_latencies.lock().unwrap().push(now - acked);
                        }
                    }
                }
                let minutes: Vec<time::OffsetDateTime> =
                    pending_minutes.lock().unwrap().keys().copied().collect();
                if !minutes.is_empty() {
                    let seen = store::service::bench_support::visible_rollup_minutes(
                        &database.service,
                        PROBE_KEY,
                        &minutes,
                    )
                    .await
                    .unwrap_or_default();
                    let now = Instant::now();
                    let mut pending = pending_minutes.lock().unwrap();
                    for minute in seen {
                        if let Some(acked) = pending.remove(&minute) {
                            rollup_latencies.lock().unwrap().push(now - acked);
                        }
                    }
                }
                let done = *stopped.borrow()
                    && pending_devices.lock().unwrap().is_empty()
                    && pending_minutes.lock().unwrap().is_empty();
                if done {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                    _ = stopped.changed() => {}
                }
            }
        })
    };
    println!(
        "offering {} events/s for {} s with a probe every {} ms ...",
        args.rate,
        args.seconds,
        tick.as_millis()
    );
    let (residency_done, residency_stop) = tokio::sync::watch::channel(false);
    let residency = crate::machine::sample_residency(residency_stop);
    let started = Instant::now();
    let mut published = 0u64;
    for index in 0..ticks {
        let due = started + tick * index as u32;
        tokio::time::sleep_until(due.into()).await;
        let mut batch: Vec<StoredEvent> = load
            .next_changes(per_tick - 2)
            .into_iter()
            .map(|change| event(load_tenant, load_source, change))
            .collect();
        let lsn = 64 * (index + 1);
        let minute = base_minute + time::Duration::minutes(index as i64);
        let device = format!("probe-{index}");
        let probe_time = time::OffsetDateTime::now_utc();
        let probe = |op_table: &str, key: serde_json::Value, after: serde_json::Value, seq: u32| {
            protocol::ChangeEvent {
                event_id: domain::EventId::derive(
                    probe_source,
                    (probe_time.unix_timestamp_nanos() / 1_000_000) as i64,
                    domain::Lsn(lsn),
                    seq,
                ),
                op: protocol::Op::Insert,
                schema: "public".into(),
                table: op_table.into(),
                lsn: domain::Lsn(lsn),
                seq,
                xid: Some(lsn),
                event_time: probe_time,
                key: key.as_object().cloned().unwrap_or_default(),
                after: after.as_object().cloned(),
                before: None,
                unchanged: Vec::new(),
                types: Default::default(),
            }
        };
        batch.push(event(
            probe_tenant,
            probe_source,
            probe(
                "devices",
                serde_json::json!({ "device_id": device }),
                serde_json::json!({ "device_id": device, "status": "probe" }),
                0,
            ),
        ));
        batch.push(event(
            probe_tenant,
            probe_source,
            probe(
                "readings",
                serde_json::json!({ "reading_id": index }),
                serde_json::json!({
                    "reading_id": index, "device_id": device, "metric": PROBE_KEY,
                    "value": 1.0,
                    "measured_at": minute
                        .format(&time::format_description::well_known::Rfc3339)?,
                }),
                1,
            ),
        ));
        let size = batch.len() as u64;
        bus.publish_events(batch).await?;
        let acked = Instant::now();
        published += size;
        pending_devices.lock().unwrap().insert(device, acked);
        pending_minutes.lock().unwrap().insert(minute, acked);
    }
    let offered = published as f64 / started.elapsed().as_secs_f64();
    let _ = residency_done.send(true);
    let residency = crate::machine::Residency::of(&residency.await?);
    let _ = published_all.send(true);
    let drained = tokio::time::timeout(Duration::from_secs(120), poller).await;
    let _ = stop.send(true);
    while roles.join_next().await.is_some() {}
    if drained.is_err() {
        bail!(
            "probes did not become visible within two minutes of the last publish: {} devices \
             and {} rollup minutes still pending",
            pending_devices.lock().unwrap().len(),
            pending_minutes.lock().unwrap().len()
        );
    }

    let load_after_latency = load_average();
    let rate = |elapsed: Duration| total as f64 / elapsed.as_secs_f64();
    println!();
    println!("throughput ({total} events, batches of {}):", args.batch);
    println!("  bronze writer alone   {:>9.0} events/s", rate(bronze));
    println!(
        "  materializer          {:>9.0} events/s",
        rate(materializer)
    );
    println!(
        "  ratio materializer / bronze writer: {:.2}",
        rate(materializer) / rate(bronze)
    );
    println!("  load average (1, 5, 15 min) before: {load_before}; after: {load_after_throughput}");
    println!("latency from ack to visibility at {offered:.0} events/s offered:");
    for (what, latencies) in [
        ("analytics.devices", &device_latencies),
        ("global_analytics.rollup_min", &rollup_latencies),
    ] {
        let mut latencies = latencies.lock().unwrap().clone();
        latencies.sort();
        let percentile = |p: f64| {
            latencies
                .get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or_default()
        };
        println!(
            "  {what:<28} p50 {:>7.1} ms   p99 {:>7.1} ms   ({} probes)",
            percentile(0.50).as_secs_f64() * 1000.0,
            percentile(0.99).as_secs_f64() * 1000.0,
            latencies.len()
        );
    }
    println!(
        "  (the aggregator runs every {} ms; the poll interval is 5 ms)",
        pipeline::aggregator::AggregatorConfig::default()
            .interval
            .as_millis()
    );
    match residency {
        Some(residency) => println!("  resident memory of the platform's roles: {residency}"),
        None => println!("  resident memory of the platform's roles: not known on this system"),
    }
    println!("  load average (1, 5, 15 min) after: {load_after_latency}");
    Ok(())
}

/// Lets the simulator's metric and the latency probes' key into the global rollups.
pub(crate) async fn allow_keys(database: &Database) -> anyhow::Result<()> {
    let mut tx = TenantTx::begin(
        &database.app,
        Scope::InternalOps {
            tenant: Some(TenantId::PLATFORM),
            actor: Actor::Cli("bench".into()),
        },
    )
    .await?;
    store::rollups::allow_key(&mut tx, "power_kw").await?;
    store::rollups::allow_key(&mut tx, PROBE_KEY).await?;
    tx.commit().await?;
    Ok(())
}

/// Bronze, then the materializer alone, over the same simulator events.
pub(crate) struct Throughput {
    pub(crate) events: u64,
    /// The bronze writer alone; on a bus that keeps bronze, the publishing itself (the log and
    /// bronze in one transaction per batch, as the edge appends).
    pub(crate) bronze: crate::machine::Measured,
    pub(crate) materializer: crate::machine::Measured,
}

/// Publishes `events` simulator events of `tenants` new tenants (100 devices each) on `bus`,
/// then times the bronze writer's consumer group and the materializer's over them, each alone,
/// with the CPU (this process and, given its data directory, the cluster's) and the WAL each
/// used. On a bus that keeps bronze there is no bronze writer: the publishing is timed instead.
pub(crate) async fn throughput(
    database: &Database,
    bus: &bus::AnyBus,
    events: u64,
    tenants: u32,
    batch: usize,
    run_name: &str,
    pgdata: Option<&std::path::Path>,
) -> anyhow::Result<Throughput> {
    println!("publishing {events} simulator events of {tenants} tenants ...");
    let mut published = Vec::with_capacity(events as usize);
    let per_tenant = events / u64::from(tenants);
    for index in 0..tenants {
        let tenant = create_tenant(database, &format!("bench {run_name} {index}")).await?;
        let source = SourceId::new_random();
        let mut simulator =
            agent::simulator::Simulator::new(source, 100, 0, agent::simulator::Position::start());
        let count = per_tenant + u64::from(u64::from(index) < events % u64::from(tenants));
        for change in simulator.next_changes(count as usize) {
            published.push(event(tenant, source, change));
        }
    }
    let total = published.len() as u64;
    let mut chunks: Vec<Vec<StoredEvent>> = Vec::new();
    let mut rest = published.into_iter().peekable();
    while rest.peek().is_some() {
        chunks.push(rest.by_ref().take(batch.max(1)).collect());
    }
    let publish = async || {
        let started = Instant::now();
        for chunk in chunks {
            bus.publish_events(chunk).await?;
        }
        anyhow::Ok(started.elapsed())
    };
    let keeps_bronze = bus.keeps_bronze();
    let appended = if keeps_bronze {
        let (elapsed, measured) = crate::machine::Measured::of(database, pgdata, publish).await?;
        println!(
            "  {:<15} {total} events in {:.2} s",
            "log + bronze:",
            elapsed.as_secs_f64()
        );
        Some(measured)
    } else {
        publish().await?;
        None
    };
    let measure = async |stage: Stage| {
        let (elapsed, measured) = crate::machine::Measured::of(database, pgdata, async || {
            consume(bus, stage.group(), batch, total, async |deliveries| {
                stage.apply(database, deliveries).await
            })
            .await
        })
        .await?;
        println!(
            "  {:<15} {total} events in {:.2} s",
            stage.label(),
            elapsed.as_secs_f64()
        );
        anyhow::Ok(measured)
    };
    let bronze = match appended {
        Some(appended) => appended,
        None => measure(Stage::BronzeWriter).await?,
    };
    let materializer = measure(Stage::Materializer).await?;
    Ok(Throughput {
        events: total,
        bronze,
        materializer,
    })
}

/// The consumers [`throughput`] times.
#[derive(Debug, Clone, Copy)]
enum Stage {
    BronzeWriter,
    Materializer,
}

impl Stage {
    fn label(self) -> &'static str {
        match self {
            Self::BronzeWriter => "bronze writer:",
            Self::Materializer => "materializer:",
        }
    }

    fn group(self) -> &'static str {
        match self {
            Self::BronzeWriter => pipeline::bronze::GROUP,
            Self::Materializer => pipeline::materializer::GROUP,
        }
    }

    async fn apply(
        self,
        database: &Database,
        deliveries: &[Delivery],
    ) -> Result<(), store::StoreError> {
        match self {
            Self::BronzeWriter => pipeline::bronze::write(&database.service, deliveries)
                .await
                .map(|_| ()),
            Self::Materializer => pipeline::materializer::apply(&database.service, deliveries)
                .await
                .map(|_| ()),
        }
    }
}

/// The machine's load average, to print beside the figures: on a shared machine they mean
/// little without it.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Consumes `total` deliveries of `group` in batches, applying and acking each; returns the
/// time it took.
async fn consume(
    bus: &bus::AnyBus,
    group: &str,
    batch: usize,
    total: u64,
    apply: impl AsyncFn(&[Delivery]) -> Result<(), store::StoreError>,
) -> anyhow::Result<Duration> {
    let mut consumer = bus.consumer(group, None).await?;
    let started = Instant::now();
    let mut consumed = 0u64;
    while consumed < total {
        let deliveries = consumer
            .next_batch(batch, Duration::from_millis(200))
            .await?;
        if deliveries.is_empty() {
            if started.elapsed() > Duration::from_secs(600) {
                bail!("{group}: only {consumed} of {total} events consumed in ten minutes");
            }
            continue;
        }
        apply(&deliveries).await?;
        consumer.ack(&deliveries).await?;
        consumed += deliveries.len() as u64;
    }
    Ok(started.elapsed())
}
