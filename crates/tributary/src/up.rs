//! `tributary up`: every role of the platform in one process, until a signal stops it.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::commands::Connected;
use crate::settings::Settings;

/// How many days of bronze partitions the scheduler keeps created ahead.
const BRONZE_DAYS_AHEAD: i32 = 7;

/// How long the embedded bus keeps acknowledged messages, so that a re-sent batch within it is
/// recognised as a duplicate on the bus (bronze recognises it forever).
const BUS_DUPLICATE_WINDOW: Duration = Duration::from_secs(24 * 3600);

pub async fn run(settings: Settings) -> anyhow::Result<ExitCode> {
    // Installed before anything starts, so a signal during start-up still stops what started.
    let signals = Signals::install()?;
    let connected = Connected::open(&settings, true).await?;
    let database = connected.database.clone();

    let listener = TcpListener::bind(settings.web_addr)
        .await
        .with_context(|| format!("cannot listen on {}", settings.web_addr))?;
    let web_addr = listener.local_addr()?;

    let bus_config: bus::BusConfig = settings
        .bus
        .parse()
        .with_context(|| format!("invalid bus setting {:?}", settings.bus))?;
    let bus = bus::AnyBus::connect(&bus_config, &database)
        .await
        .context("connecting to the stream bus")?;
    let edge_config = edge::EdgeConfig {
        listen: settings.edge_addr,
        hostnames: settings.edge_hostnames.clone(),
        ..edge::EdgeConfig::default()
    };
    let edge = edge::Edge::bind(
        edge_config,
        database.clone(),
        bus.clone(),
        &settings.master_secret()?,
    )
    .await
    .context("starting the edge")?;
    let edge_addr = edge.local_addr()?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let stopped = |mut receiver: watch::Receiver<bool>| async move {
        let _ = receiver.wait_for(|stop| *stop).await;
    };
    let edge_task = tokio::spawn(edge.run(stopped(shutdown_rx.clone())));
    let bronze = tokio::spawn(pipeline::bronze::run(
        database.clone(),
        bus.clone(),
        pipeline::bronze::BronzeConfig::default(),
        stopped(shutdown_rx.clone()),
    ));
    let scheduler = tokio::spawn(scheduler(
        database.clone(),
        bus.clone(),
        shutdown_rx.clone(),
    ));
    let mut web_shutdown = shutdown_rx.clone();
    let web = tokio::spawn(web::serve(
        listener,
        web::AppState {
            database: database.clone(),
        },
        async move {
            let _ = web_shutdown.wait_for(|stop| *stop).await;
        },
    ));

    println!("Tributary is running.");
    println!("  web:      http://{web_addr}/");
    println!("  health:   http://{web_addr}/healthz");
    println!("  edge:     https://{edge_addr}/ (agents pair and send here)");
    println!("  bus:      {}", describe_bus(&bus_config));
    println!("  database: {}", connected.describe());
    println!("Stop with Ctrl-C (or SIGTERM).");
    tracing::info!(%web_addr, "platform ready");

    signals.wait().await;
    tracing::info!("shutting down");
    let _ = shutdown_tx.send(true);
    match tokio::time::timeout(Duration::from_secs(30), web).await {
        Ok(Ok(Err(error))) => tracing::warn!(%error, "web server ended with an error"),
        Err(_) => tracing::warn!("web requests still in flight after 30s; closing anyway"),
        _ => {}
    }
    let _ = edge_task.await;
    match bronze.await {
        Ok(Err(error)) => tracing::warn!(%error, "the bronze writer stopped with an error"),
        Err(error) => tracing::warn!(%error, "the bronze writer panicked"),
        Ok(Ok(())) => {}
    }
    let _ = scheduler.await;
    connected.close().await?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Periodic housekeeping, hourly: bronze partitions ahead of time, and the embedded bus's log
/// trimmed of what every consumer group has acknowledged.
async fn scheduler(
    database: store::Database,
    bus: bus::AnyBus,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                match store::maintenance::ensure_bronze_partitions(&database, BRONZE_DAYS_AHEAD).await {
                    Ok(days) => tracing::debug!(days, "bronze partitions ensured"),
                    Err(error) => tracing::warn!(%error, "ensuring bronze partitions failed"),
                }
                if let bus::AnyBus::Embedded(embedded) = &bus {
                    match embedded.prune(BUS_DUPLICATE_WINDOW).await {
                        Ok(removed) => tracing::debug!(removed, "bus log pruned"),
                        Err(error) => tracing::warn!(%error, "pruning the bus log failed"),
                    }
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

fn describe_bus(config: &bus::BusConfig) -> String {
    match &config.backend {
        bus::Backend::Embedded => format!(
            "embedded, in the platform database ({} partitions)",
            config.partitions
        ),
        bus::Backend::Nats(nats) => format!(
            "NATS JetStream at {} ({} partitions)",
            nats.redacted_servers(),
            config.partitions
        ),
    }
}

/// SIGINT and SIGTERM, both meaning "stop cleanly".
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            terminate: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
