//! `tributary up`: every role of the platform in one process, until a signal stops it.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::connection::Connected;
use crate::ingestion::{self, Ingestion};
use crate::settings::Settings;

/// How many days of bronze partitions the scheduler keeps created ahead.
const BRONZE_DAYS_AHEAD: i32 = 7;

/// How many positions of each partition the embedded bus keeps below its slowest group's
/// checkpoint, so that a batch re-sent soon after it was acknowledged is recognised as a
/// duplicate on the bus (bronze recognises it forever). At 30,000 events/s over 16 partitions,
/// about a minute.
const BUS_DUPLICATE_MARGIN: u64 = 100_000;
/// How often the embedded bus's log is trimmed: each trim deletes a range of positions by
/// primary key, so the log stays about the size of the consumers' lag plus the margin.
const BUS_PRUNE_INTERVAL: Duration = Duration::from_secs(10);

pub async fn run(settings: Settings, demo: bool) -> anyhow::Result<ExitCode> {
    // Installed before anything starts, so a signal during start-up still stops what started.
    let signals = Signals::install()?;
    // The web address and the mail settings first: a mistake in either stops the start before
    // the database is.
    let listener = TcpListener::bind(settings.web_addr)
        .await
        .with_context(|| format!("cannot listen on {}", settings.web_addr))?;
    let web_addr = listener.local_addr()?;
    let metrics_listener = crate::operations::bind_metrics(&settings.operations).await?;
    let metrics_addr = metrics_listener.local_addr()?;
    let mail = mailer(&settings, web_addr)?;
    let connected = Connected::open(&settings, true).await?;
    let database = connected.database.clone();

    let bus_config: bus::BusConfig = settings
        .bus
        .parse()
        .context("invalid bus setting (TRIBUTARY_BUS / --bus)")?;
    let ingestion = Ingestion::start(&settings, &database, &bus_config, settings.edge_addr).await?;
    let edge_addr = ingestion.edge_addr;
    crate::edge_url::record(&settings, edge_addr)?;
    let bus = ingestion.bus.clone();

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let replays = tokio::spawn(pipeline::replay::run(
        database.service.clone(),
        bus.clone(),
        Duration::from_secs(2),
        ingestion::stopped(shutdown_rx.clone()),
    ));
    let outbound = outbound(&settings);
    let exports = match &settings.exports {
        crate::settings::ExportChoice::Local => {
            reports::ExportStore::local(&settings.data_dir.join("exports"))
        }
        crate::settings::ExportChoice::S3(location) => reports::ExportStore::s3(location),
    }
    .context("cannot open the export store")?;
    tracing::info!(store = ?exports, "report files are kept in the export store");
    let evaluator = tokio::spawn(pipeline::alerts::run(
        database.clone(),
        pipeline::alerts::EvaluatorConfig::default(),
        ingestion::stopped(shutdown_rx.clone()),
    ));
    let deliverer = tokio::spawn(web::alerting::run(
        web::alerting::Deliverer::new(
            store::service::alerts::outbox(database.service.clone()),
            outbound.clone(),
            mail.clone(),
            &settings.master_secret()?,
        )
        .with_reports(exports.clone(), Some(public_url(&settings, web_addr))),
        Duration::from_secs(2),
        ingestion::stopped(shutdown_rx.clone()),
    ));
    let report_runner = tokio::spawn(reports::run(
        reports::Runner::new(database.clone(), exports.clone()),
        Duration::from_secs(1),
        ingestion::stopped(shutdown_rx.clone()),
    ));
    let scheduler = tokio::spawn(scheduler(
        database.clone(),
        bus.clone(),
        shutdown_rx.clone(),
    ));
    let metrics = metrics_handle();
    let metrics_server = tokio::spawn(web::metrics::serve(
        metrics_listener,
        metrics.clone(),
        ingestion::stopped(shutdown_rx.clone()),
    ));
    let web = tokio::spawn(web::serve(
        listener,
        web::AppState {
            database: database.app.clone(),
            metrics: crate::operations::web_metrics(&settings.operations, metrics)?,
            min_cohort: settings.rollup_min_cohort,
            sso: web::sso::Sso::new(&settings.master_secret()?, outbound, settings.dns_resolver),
            mail,
            live: web::LiveStreams::default(),
            alert_secrets: web::alerting::channel_secrets(&settings.master_secret()?),
            exports: exports.clone(),
            trusted_proxies: settings.trusted_proxies.clone(),
            agents: web::agent_setup::AgentEndpoint {
                edge_url: crate::edge_url::published(&settings),
                ca_pem: ingestion.ca_pem.clone(),
            },
        },
        ingestion::stopped(shutdown_rx.clone()),
    ));

    // The demo: only on a managed cluster (a given server is someone's real platform).
    let edge_url = format!("https://{edge_addr}");
    let demo = if demo && matches!(settings.database, crate::settings::DatabaseChoice::Managed) {
        Some(
            crate::demo::ensure(
                &settings.data_dir,
                &database,
                &crate::demo::Edge {
                    url: &edge_url,
                    ca_pem: &ingestion.ca_pem,
                },
                settings.rollup_min_cohort,
            )
            .await
            .context("setting up the demo")?,
        )
    } else {
        None
    };
    let demo_agent = demo.as_ref().map(|_| {
        tokio::spawn(agent::run_until(
            crate::demo::agent_config(&settings.data_dir, &edge_url),
            ingestion::stopped(shutdown_rx.clone()),
        ))
    });
    let cohort_agents: Vec<_> = demo
        .as_ref()
        .map(|demo| crate::demo::cohort_agent_configs(&settings.data_dir, &edge_url, demo))
        .unwrap_or_default()
        .into_iter()
        .map(|config| {
            tokio::spawn(agent::run_until(
                config,
                ingestion::stopped(shutdown_rx.clone()),
            ))
        })
        .collect();

    println!("Tributary is running.");
    println!("  web:      http://{web_addr}/");
    println!("  health:   http://{web_addr}/healthz");
    println!("  metrics:  http://{metrics_addr}/metrics");
    println!("  edge:     https://{edge_addr}/ (agents pair and send here)");
    println!("  bus:      {}", describe_bus(&bus_config));
    println!("  database: {}", connected.describe());
    match connected.tuning() {
        Some(tuning) => println!("  postgres: {tuning}"),
        None => println!(
            "  postgres: `tributary db check` compares this server's settings with the workload's"
        ),
    }
    match &settings.smtp {
        Some(smtp) => println!(
            "  mail:     reset, sign-up and invitation links by SMTP via {} as {}",
            smtp.host, smtp.from
        ),
        None => println!(
            "  mail:     no SMTP server configured: reset, sign-up and invitation links go to the log"
        ),
    }
    if let Some(demo) = &demo {
        println!(
            "  demo:     tenant {} with a simulated agent streaming (source {})",
            demo.tenant_id, demo.source_id
        );
        println!(
            "  cohort:   {} more tenants with light simulators, so the global console has cells",
            demo.cohort.len()
        );
        if let Some(login) = &demo.web_login {
            println!(
                "  login:    http://{web_addr}/auth as {} with password {} (owner of the demo tenant)",
                login.email, login.password
            );
        }
        if let Some(login) = &demo.ops_login {
            println!(
                "  ops:      http://{web_addr}/auth as {} with password {} (internal operations)",
                login.email, login.password
            );
        }
        println!("  api:      API token for http://{web_addr}/api/v1 (admin of the demo tenant):");
        println!("            {}", demo.api_token);
        println!(
            "            e.g. curl -H 'Authorization: Bearer <token>' http://{web_addr}/api/v1/sources"
        );
    }
    println!("Stop with Ctrl-C (or SIGTERM).");
    tracing::info!(%web_addr, "platform ready");

    signals.wait().await;
    tracing::info!("shutting down");
    if let Some(agent) = demo_agent {
        // Stops with the shared signal below; its spool keeps whatever was not acknowledged.
        let _ = shutdown_tx.send(true);
        if let Ok(Err(error)) = agent.await {
            tracing::warn!(%error, "the demo agent stopped with an error");
        }
    }
    for agent in cohort_agents {
        let _ = shutdown_tx.send(true);
        if let Ok(Err(error)) = agent.await {
            tracing::warn!(%error, "a demo cohort agent stopped with an error");
        }
    }
    // The edge first, so no batch is accepted that the rest no longer processes; then the rest.
    ingestion.stop().await;
    let _ = shutdown_tx.send(true);
    match tokio::time::timeout(Duration::from_secs(30), web).await {
        Ok(Ok(Err(error))) => tracing::warn!(%error, "web server ended with an error"),
        Err(_) => tracing::warn!("web requests still in flight after 30s; closing anyway"),
        _ => {}
    }
    crate::operations::stop_metrics(metrics_server).await;
    // A replay in progress is left to be taken up again (its request is reclaimed later).
    if tokio::time::timeout(Duration::from_secs(10), replays)
        .await
        .is_err()
    {
        tracing::warn!("a replay was still running at shutdown; it will be taken up again");
    }
    let _ = scheduler.await;
    let _ = evaluator.await;
    let _ = deliverer.await;
    let _ = report_runner.await;
    connected.close().await?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Periodic housekeeping: hourly, bronze partitions ahead of time and bronze retention; every
/// few seconds, the embedded bus's log trimmed of what every consumer group has acknowledged.
async fn scheduler(
    database: store::Database,
    bus: bus::AnyBus,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    let mut prune = tokio::time::interval(BUS_PRUNE_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                match store::service::maintenance::ensure_bronze_partitions(&database.service, BRONZE_DAYS_AHEAD).await {
                    Ok(days) => tracing::debug!(days, "bronze partitions ensured"),
                    Err(error) => tracing::warn!(%error, "ensuring bronze partitions failed"),
                }
                match store::service::retention::enforce(&database.service).await {
                    Ok(report) => tracing::info!(deleted = report.deleted_events,
                        dropped_partitions = report.dropped_partitions.len(), "bronze retention applied"),
                    Err(error) => tracing::warn!(%error, "applying bronze retention failed"),
                }
                match store::accounts::prune(&database.app).await {
                    Ok(report) => tracing::debug!(sessions = report.sessions,
                        attempt_counters = report.attempt_counters,
                        trusted_devices = report.trusted_devices,
                        pending_sign_ups = report.pending_sign_ups, "sign-in state pruned"),
                    Err(error) => tracing::warn!(%error, "pruning sign-in state failed"),
                }
            }
            _ = prune.tick() => {
                if let bus::AnyBus::Embedded(embedded) = &bus {
                    match embedded.prune(BUS_DUPLICATE_MARGIN).await {
                        Ok(removed) => tracing::debug!(removed, "bus log pruned"),
                        Err(error) => tracing::warn!(%error, "pruning the bus log failed"),
                    }
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// Installs the process's metrics recorder once; `None` if another recorder is installed.
fn metrics_handle() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    match metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder() {
        Ok(handle) => {
            register_metrics();
            Some(handle)
        }
        Err(error) => {
            tracing::warn!(%error, "metrics recorder not installed; /metrics is off");
            None
        }
    }
}

/// Describes the platform's counters and shows them at zero from the start, so a scrape sees
/// every series before the first event rather than an empty page.
fn register_metrics() {
    use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram};

    describe_counter!(
        "tributary_alert_rules_evaluated_total",
        "Alert rules evaluated"
    );
    counter!("tributary_alert_rules_evaluated_total").increment(0);
    describe_counter!(
        "tributary_alert_deliveries_total",
        "Alert notifications sent, by outcome"
    );
    for outcome in ["delivered", "failed"] {
        counter!("tributary_alert_deliveries_total", "outcome" => outcome).increment(0);
    }
    describe_counter!(
        "tributary_report_runs_total",
        "Report runs finished, by outcome"
    );
    for outcome in ["succeeded", "failed"] {
        counter!("tributary_report_runs_total", "outcome" => outcome).increment(0);
    }
    describe_counter!(
        "tributary_report_rows_total",
        "Rows written into report files"
    );
    counter!("tributary_report_rows_total").increment(0);
    describe_counter!(
        "tributary_report_schedule_runs_total",
        "Runs asked for by report schedules"
    );
    counter!("tributary_report_schedule_runs_total").increment(0);
    describe_gauge!(
        bus::lag::LAG_GAUGE,
        "Messages a consumer group has not acked on a bus partition, by group and partition \
         (the embedded bus counts positions: an upper bound)"
    );

    describe_counter!(
        "tributary_edge_events_total",
        "Events answered by the edge, by status"
    );
    for status in ["accepted", "duplicate", "rejected"] {
        counter!("tributary_edge_events_total", "status" => status).increment(0);
    }
    describe_counter!(
        "tributary_edge_batches_refused_total",
        "Batches refused whole, by reason code"
    );
    describe_counter!(
        "tributary_edge_pairings_total",
        "Pairing attempts, by outcome"
    );
    for outcome in ["paired", "refused"] {
        counter!("tributary_edge_pairings_total", "outcome" => outcome).increment(0);
    }
    describe_counter!(
        "tributary_edge_connections_refused_total",
        "Connections closed on accept or after the handshake, by the cap they were over"
    );
    for reason in ["address", "anonymous_pool", "certified", "source"] {
        counter!("tributary_edge_connections_refused_total", "reason" => reason).increment(0);
    }
    describe_counter!(
        "tributary_edge_connections_shed_total",
        "Idle connections without a certificate closed to make room for a new one"
    );
    counter!("tributary_edge_connections_shed_total").increment(0);
    describe_counter!(
        "tributary_edge_connections_closed_total",
        "Connections closed at a deadline, by which"
    );
    for reason in ["handshake_timeout", "first_request_timeout", "idle"] {
        counter!("tributary_edge_connections_closed_total", "reason" => reason).increment(0);
    }
    describe_counter!(
        "tributary_edge_body_budget_refusals_total",
        "Requests refused with 503 because the body budget was taken"
    );
    counter!("tributary_edge_body_budget_refusals_total").increment(0);
    describe_histogram!(
        "tributary_edge_ingest_duration_seconds",
        Unit::Seconds,
        "Time to answer an ingest request"
    );
    describe_counter!(
        "tributary_bronze_events_written_total",
        "Events stored in bronze"
    );
    counter!("tributary_bronze_events_written_total").increment(0);
    describe_counter!(
        "tributary_bronze_events_duplicate_total",
        "Events bronze already had (redeliveries, replays)"
    );
    counter!("tributary_bronze_events_duplicate_total").increment(0);
    describe_histogram!(
        "tributary_bus_group_commit_batches",
        "Ingest batches the embedded bus appended in one transaction, when more than one waited"
    );
    describe_counter!(
        "tributary_bus_events_gone_total",
        "Events of the embedded bus's log no longer in bronze when a consumer read them, skipped"
    );
    counter!("tributary_bus_events_gone_total").increment(0);
    describe_counter!(
        "tributary_dlq_events_total",
        "Events sent to a dead-letter queue"
    );
    describe_counter!(
        "tributary_replay_events_total",
        "Events replayed, by outcome"
    );
    describe_counter!(
        "tributary_materializer_events_total",
        "Events the materializer applied or skipped (ignored tables, truncates)"
    );
    for outcome in ["applied", "skipped"] {
        counter!("tributary_materializer_events_total", "outcome" => outcome).increment(0);
    }
    describe_counter!(
        "tributary_aggregator_minutes_total",
        "Key-minutes the global aggregator recomputed"
    );
    counter!("tributary_aggregator_minutes_total").increment(0);
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

/// The web app's mailer, when a mail server is configured: checked at start, so a bad setting
/// stops the start instead of the first reset.
/// The web app's address as people reach it: the setting, else this server's address.
fn public_url(settings: &Settings, web_addr: std::net::SocketAddr) -> String {
    settings
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{web_addr}"))
}

fn mailer(
    settings: &Settings,
    web_addr: std::net::SocketAddr,
) -> anyhow::Result<Option<std::sync::Arc<web::mail::Mailer>>> {
    let Some(smtp) = &settings.smtp else {
        return Ok(None);
    };
    let mail = web::mail::MailSettings {
        host: smtp.host.clone(),
        port: smtp.port,
        tls: smtp.tls,
        ca_file: smtp.ca_file.clone(),
        credentials: smtp.credentials.clone(),
        from: smtp.from.clone(),
        public_url: public_url(settings, web_addr),
    };
    let mailer = web::mail::Mailer::new(mail).context("invalid mail settings (smtp_*)")?;
    Ok(Some(std::sync::Arc::new(mailer)))
}

/// The platform's one outbound HTTP client, as the settings allow: public `https` only, unless
/// the development setting lets it reach loopback hosts over plain http, or an on-premise
/// install lets it reach private networks.
fn outbound(settings: &Settings) -> web::outbound::Outbound {
    let mut policy = if settings.dev_allow_loopback_http {
        tracing::warn!(
            "development setting: outbound requests may use plain http to loopback hosts"
        );
        web::outbound::OutboundPolicy::development()
    } else {
        web::outbound::OutboundPolicy::production()
    };
    if settings.outbound_allow_private_targets {
        tracing::warn!(
            "on-premise setting: outbound requests (SSO issuers, alert webhooks) may reach private networks"
        );
        policy.allow_private_targets = true;
    }
    web::outbound::Outbound::new(policy)
}
