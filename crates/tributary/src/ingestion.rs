//! The ingestion roles, started the same way by `up` and by `bench ingest`: the stream bus, the
//! edge, and the pipeline's consumers (the bronze writer and the tenant materializer) and the
//! global aggregator's schedule.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::settings::Settings;

/// How often the consumers' lag is looked at, for backpressure and `/metrics`.
const LAG_INTERVAL: Duration = Duration::from_secs(1);

/// Running ingestion roles. [`Ingestion::stop`] stops them in order: the edge (no new batches),
/// then the bronze writer (its batch in flight is finished or left unacked, never half-applied).
pub struct Ingestion {
    pub bus: bus::AnyBus,
    pub edge_addr: SocketAddr,
    pub ca_pem: String,
    shutdown: watch::Sender<bool>,
    edge: JoinHandle<()>,
    bronze: JoinHandle<()>,
    materializer: Option<JoinHandle<()>>,
    aggregator: Option<JoinHandle<()>>,
}

/// A future that completes when `receiver` says stop.
pub async fn stopped(mut receiver: watch::Receiver<bool>) {
    let _ = receiver.wait_for(|stop| *stop).await;
}

impl Ingestion {
    /// Connects the bus named by `bus_config`, binds the edge on `edge_listen` and starts the
    /// bronze writer and the tenant materializer.
    pub async fn start(
        settings: &Settings,
        database: &store::Database,
        bus_config: &bus::BusConfig,
        edge_listen: SocketAddr,
    ) -> anyhow::Result<Self> {
        Self::start_with(settings, database, bus_config, edge_listen, true).await
    }

    /// As [`Ingestion::start`]; without the materializer when `materialize` is false (the
    /// ingest benchmark measures the bronze writer alone).
    pub async fn start_with(
        settings: &Settings,
        database: &store::Database,
        bus_config: &bus::BusConfig,
        edge_listen: SocketAddr,
        materialize: bool,
    ) -> anyhow::Result<Self> {
        let bus = bus::AnyBus::connect(bus_config, &database.service)
            .await
            .context("connecting to the stream bus")?;
        let edge = edge::Edge::bind(
            crate::operations::edge_config(
                &settings.operations,
                &settings.edge_hostnames,
                edge_listen,
            ),
            database.service.clone(),
            bus.clone(),
            &settings.master_secret()?,
        )
        .await
        .context("starting the edge")?;
        // Backpressure and the lag gauges: the consumers this process runs are watched (their
        // lag is the bus's, wherever they run).
        // A bus that keeps bronze has it written by the edge, in the transaction that acks: there
        // is no bronze writer, and no bronze lag, to watch.
        let watched = (!bus::Bus::keeps_bronze(&bus))
            .then_some(pipeline::bronze::GROUP)
            .into_iter()
            .chain(materialize.then_some(pipeline::materializer::GROUP))
            .map(str::to_owned)
            .collect();
        let edge = edge.watch_lag(bus::lag::LagWatch::spawn(
            bus.clone(),
            watched,
            LAG_INTERVAL,
        ));
        let edge_addr = edge.local_addr()?;
        let ca_pem = edge.ca_certificate_pem().to_owned();
        let (shutdown, receiver) = watch::channel(false);
        let edge = tokio::spawn(edge.run(stopped(receiver.clone())));
        metrics::describe_counter!(
            "tributary_consumer_restarts_total",
            "Restarts of a failed pipeline consumer, by consumer"
        );
        for consumer in SUPERVISED {
            metrics::counter!("tributary_consumer_restarts_total", "consumer" => consumer)
                .increment(0);
        }
        let materializer = materialize.then(|| {
            let (database, bus) = (database.clone(), bus.clone());
            tokio::spawn(supervise(
                pipeline::materializer::GROUP,
                receiver.clone(),
                move |shutdown| {
                    pipeline::materializer::run(
                        database.service.clone(),
                        bus.clone(),
                        pipeline::materializer::MaterializerConfig::default(),
                        stopped(shutdown),
                    )
                },
            ))
        });
        let aggregator = materialize.then(|| {
            tokio::spawn(pipeline::aggregator::run(
                database.service.clone(),
                pipeline::aggregator::AggregatorConfig::default(),
                stopped(receiver.clone()),
            ))
        });
        let bronze = start_bronze_writer(database, &bus, receiver);
        Ok(Self {
            bus,
            edge_addr,
            ca_pem,
            shutdown,
            edge,
            bronze,
            materializer,
            aggregator,
        })
    }

    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.edge.await;
        let _ = self.bronze.await;
        if let Some(materializer) = self.materializer {
            let _ = materializer.await;
        }
        if let Some(aggregator) = self.aggregator {
            let _ = aggregator.await;
        }
    }
}

/// Starts the bronze writer. On a bus that keeps bronze (the embedded bus) the edge writes bronze
/// itself, and the writer only drains what an earlier version appended for it to store, then
/// ends ([`pipeline::bronze::drain`]).
fn start_bronze_writer(
    database: &store::Database,
    bus: &bus::AnyBus,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let (database, bus) = (database.clone(), bus.clone());
    tokio::spawn(supervise(
        pipeline::bronze::GROUP,
        shutdown,
        move |shutdown| {
            let (database, bus) = (database.service.clone(), bus.clone());
            async move {
                let config = pipeline::bronze::BronzeConfig::default();
                match bus {
                    bus::AnyBus::Embedded(embedded) => {
                        pipeline::bronze::drain(database, embedded, config, stopped(shutdown)).await
                    }
                    bus => pipeline::bronze::run(database, bus, config, stopped(shutdown)).await,
                }
            }
        },
    ))
}

/// The consumers [`supervise`] restarts, as the restart counter's `consumer` label names them.
const SUPERVISED: [&str; 2] = [pipeline::bronze::GROUP, pipeline::materializer::GROUP];

/// Runs a consumer until shutdown, starting it again if it ends with an error or a panic: a
/// consumer that stopped while the edge keeps acknowledging would let bronze or the read models
/// fall behind unnoticed. What it had not acknowledged is delivered again to the new one. Each
/// restart counts in `tributary_consumer_restarts_total{consumer}`.
async fn supervise<F, E>(
    consumer: &'static str,
    shutdown: watch::Receiver<bool>,
    start: impl Fn(watch::Receiver<bool>) -> F,
) where
    F: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let mut backoff = domain::Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        match tokio::spawn(start(shutdown.clone())).await {
            Ok(Ok(())) => return,
            Ok(Err(error)) => {
                tracing::error!(consumer, %error, "a consumer stopped with an error; restarting it");
            }
            Err(error) => {
                tracing::error!(consumer, %error, "a consumer panicked; restarting it");
            }
        }
        metrics::counter!("tributary_consumer_restarts_total", "consumer" => consumer).increment(1);
        if *shutdown.borrow() {
            return;
        }
        tokio::time::sleep(backoff.next()).await;
    }
}
