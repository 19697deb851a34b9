//! `tributary-agent run`: the reader (source → spool) and the sender (spool → edge), side by
//! side until SIGINT or SIGTERM.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use edge_client::{Credentials, EdgeClient, EncodedBatch, Encoding};
use protocol::EventBatch;
use tokio::sync::{Notify, watch};

use crate::config::Config;
use crate::simulator::{Position, Simulator};
use crate::sink::BATCH_EVENTS;
use crate::spool::{Resume, Spool, Spooled};
use crate::status::StatusCell;

const POSITION_FILE: &str = "simulator-position.json";

pub async fn run(config: Config) -> anyhow::Result<()> {
    run_until(config, async {
        if let Err(error) = wait_for_signal().await {
            tracing::error!(%error, "cannot wait for signals; stopping");
        }
    })
    .await
}

/// Runs until `shutdown` completes (the platform's demo runs an agent in its own process), or
/// until the source fails in a way only an operator can fix.
pub async fn run_until(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let credentials = Credentials::load(&config.state_dir)
        .context("no credentials in the state directory: pair first with `tributary-agent pair`")?;
    let spool = Arc::new(Spool::open(&config.state_dir, config.spool.max_bytes)?);
    let client = EdgeClient::new(&config.edge, &credentials)
        .with_context(|| format!("the edge URL {:?}", config.edge))?;
    let status = StatusCell::new(&config.source.kind);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (confirm_tx, confirm_rx) = watch::channel(0u64);
    // A resync the platform asks for (the reporter hears it in the edge's answer).
    let (resync_tx, mut resync_rx) = watch::channel(None::<uuid::Uuid>);
    let spooled = Arc::new(Notify::new());
    let start_reader = |stop: watch::Receiver<bool>| -> anyhow::Result<_> {
        Ok(match config.source.kind.as_str() {
            "postgres" => tokio::spawn(crate::postgres::stream::run(
                config.postgres()?,
                crate::postgres::Shared {
                    state_dir: config.state_dir.clone(),
                    source: credentials.source_id,
                    spool: spool.clone(),
                    spooled: spooled.clone(),
                    status: status.clone(),
                    confirm: confirm_rx.clone(),
                },
                stop,
            )),
            _ => tokio::spawn(read_simulator(
                config.clone(),
                credentials.source_id,
                spool.clone(),
                spooled.clone(),
                status.clone(),
                stop,
            )),
        })
    };
    // The reader stops on its own signal too, so that a resync can restart it alone.
    let (mut reader_stop_tx, reader_stop_rx) = watch::channel(false);
    let mut reader = start_reader(reader_stop_rx)?;
    let sender = tokio::spawn(send_spool(
        client,
        config.spool.retry_max(),
        config.state_dir.clone(),
        spool.clone(),
        spooled.clone(),
        status.clone(),
        confirm_tx,
        stop_rx.clone(),
    ));
    // Held while a heartbeat is in flight, so that the last word of a failing reader is never
    // overtaken by an older heartbeat still on its way.
    let heartbeat = Arc::new(tokio::sync::Mutex::new(()));
    let reporter = tokio::spawn(report_status(
        config.state_dir.clone(),
        spool.clone(),
        status.clone(),
        EdgeClient::new(&config.edge, &credentials)?,
        Heartbeat {
            in_flight: heartbeat.clone(),
            resync: resync_tx,
        },
        stop_rx.clone(),
    ));
    tokio::spawn(report_check_on_start(config.clone()));
    if let Some(listen) = config.health.listen {
        crate::health::serve(listen, status.clone(), stop_rx.clone()).await?;
    }
    tracing::info!(edge = %config.edge, source = %credentials.source_id, kind = %config.source.kind, "agent running");
    tokio::pin!(shutdown);
    let reader_result = loop {
        tokio::select! {
            _ = &mut shutdown => break None,
            result = &mut reader => {
                let Ok(Err(error)) = &result else { break Some(result) };
                // The platform hears why the reader stopped (the source's page shows it with the
                // fix), and its answer may carry the resync that fixes it: a lost slot recovers
                // once an admin asks, when the agent is started again.
                status.update(|status| {
                    status.state = "failed".into();
                    status.last_error = Some(format!("{error:#}"));
                });
                let asked = last_word(&config, &status, &heartbeat).await;
                let Some(request) = asked.filter(|_| config.source.kind == "postgres") else {
                    break Some(result);
                };
                match resync_when_released(&config).await {
                    Ok(message) => {
                        tracing::info!(%request, %message, "resync done, as the platform asked");
                        status.update(|status| {
                            status.resynced = Some(request);
                            status.last_error = None;
                            status.state = "starting".into();
                        });
                    }
                    Err(error) => {
                        tracing::error!(error = %format!("{error:#}"), "the resync the platform asked for failed");
                        break Some(result);
                    }
                }
                let (stop, stop_rx) = watch::channel(false);
                reader_stop_tx = stop;
                reader = start_reader(stop_rx)?;
            }
            Ok(()) = resync_rx.changed() => {
                let Some(request) = *resync_rx.borrow_and_update() else { continue };
                if config.source.kind != "postgres" || status.get().resynced == Some(request) {
                    continue;
                }
                tracing::info!(%request, "the platform asked for a resync: stopping the reader, dropping the slot, taking a new snapshot");
                let _ = reader_stop_tx.send(true);
                if let Err(error) = (&mut reader).await? {
                    tracing::warn!(error = %format!("{error:#}"), "the reader had stopped with an error before the resync");
                }
                match resync_when_released(&config).await {
                    Ok(message) => {
                        tracing::info!(%request, %message, "resync done");
                        status.update(|status| {
                            status.resynced = Some(request);
                            status.last_error = None;
                            status.state = "starting".into();
                        });
                    }
                    Err(error) => {
                        let message = format!("the resync the platform asked for failed: {error:#}");
                        tracing::error!(%request, error = %message, "resync");
                        status.update(|status| status.last_error = Some(message));
                    }
                }
                let (stop, stop_rx) = watch::channel(false);
                reader_stop_tx = stop;
                reader = start_reader(stop_rx)?;
            }
        }
    };
    tracing::info!("stopping");
    let _ = stop_tx.send(true);
    let _ = reader_stop_tx.send(true);
    let reader_result = match reader_result {
        Some(result) => result,
        None => reader.await,
    }?;
    sender.await??;
    reporter.await??;
    if let Err(error) = &reader_result {
        status.update(|status| {
            status.state = "failed".into();
            status.last_error = Some(format!("{error:#}"));
        });
    } else {
        status.update(|status| status.state = "stopped".into());
    }
    status.refresh(spool.len() as u64, spool.bytes());
    write_status(&config.state_dir, &status)?;
    reader_result
}

/// Sends the status now (within 5 s), and returns the resync the edge's answer asks for, if it
/// asks for one.
async fn last_word(
    config: &Config,
    status: &StatusCell,
    heartbeat: &tokio::sync::Mutex<()>,
) -> Option<uuid::Uuid> {
    let saved = Credentials::load(&config.state_dir).ok()?;
    let client = EdgeClient::new(&config.edge, &saved).ok()?;
    let now = status.get();
    let sent = tokio::time::timeout(Duration::from_secs(5), async {
        let _in_flight = heartbeat.lock().await;
        client.send_status(&now).await
    });
    match sent.await {
        Ok(Ok(answer)) => answer
            .resync
            .map(|request| request.request_id)
            .filter(|request| now.resynced != Some(*request)),
        _ => {
            tracing::debug!("the status did not reach the edge");
            None
        }
    }
}

/// [`crate::postgres::resync`] once the stopped reader's replication connection is gone: the
/// source may still count the slot as in use for a moment after the reader let go of it.
async fn resync_when_released(config: &Config) -> anyhow::Result<String> {
    let settings = config.postgres()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match crate::postgres::resync(&settings, &config.state_dir).await {
            Err(error)
                if format!("{error:#}").contains("is in use")
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            result => return result,
        }
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    Ok(())
}

fn load_position(state_dir: &Path, spool: &Spool) -> anyhow::Result<Position> {
    let path = state_dir.join(POSITION_FILE);
    let mut position = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is corrupt", path.display()))?,
        Err(_) => Position::start(),
    };
    // The spool may hold a batch whose position was not saved yet (a crash in between).
    if let Some(newest) = spool.newest()? {
        position.next_lsn = position.next_lsn.max(newest.end_position);
    }
    Ok(position)
}

fn save_position(state_dir: &Path, position: Position) -> anyhow::Result<()> {
    crate::spool::write_atomically(
        &state_dir.join(POSITION_FILE),
        &serde_json::to_vec(&position)?,
    )
}

async fn read_simulator(
    config: Config,
    source: domain::SourceId,
    spool: Arc<Spool>,
    spooled: Arc<Notify>,
    status: StatusCell,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let position = load_position(&config.state_dir, &spool)?;
    let mut simulator = Simulator::new(source, config.source.devices, config.source.seed, position);
    let rate = config.source.events_per_second.max(1) as usize;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    status.update(|status| status.state = "streaming".into());
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return Ok(()),
        }
        if spool.is_full() {
            tracing::warn!(
                "the spool is full; the source is not read until the edge takes batches again"
            );
            status.update(|status| status.backpressure = true);
            continue;
        }
        status.update(|status| status.backpressure = false);
        let mut remaining = rate;
        while remaining > 0 {
            let count = remaining.min(BATCH_EVENTS);
            remaining -= count;
            let events = simulator.next_changes(count);
            let end_position = simulator.position().next_lsn;
            spool.push(&Spooled {
                end_position,
                resume: Resume::default(),
                batch: EventBatch {
                    source_id: None,
                    tenant_id: None,
                    events,
                    types: Vec::new(),
                },
            })?;
            save_position(&config.state_dir, simulator.position())?;
            status.update(|status| status.captured_lsn = Some(domain::Lsn(end_position)));
        }
        spooled.notify_one();
    }
}

/// Replaces `client` by one with the credentials saved in `state_dir` when they hold another
/// certificate (renewed by another task of this agent).
fn use_saved_credentials(state_dir: &Path, client: &mut EdgeClient) {
    if let Ok(saved) = Credentials::load(state_dir)
        && saved.certificate_pem != client.credentials().certificate_pem
        && let Ok(renewed) = EdgeClient::new(&client.url().to_string(), &saved)
    {
        *client = renewed;
    }
}

/// A new key and certificate (`POST /v1/renew`), saved and used by `client` from now on; a
/// failure is logged and tried again later. Fails only when the new credentials cannot be
/// saved.
async fn renew_certificate(
    state_dir: &Path,
    client: &mut EdgeClient,
    why: &str,
) -> anyhow::Result<()> {
    match client.renew().await {
        Ok(renewed) => {
            renewed.save(state_dir)?;
            *client = EdgeClient::new(&client.url().to_string(), &renewed)?;
            tracing::info!(why, "client certificate renewed");
        }
        Err(error) => {
            tracing::warn!(%error, why, "renewing the client certificate failed; will retry");
        }
    }
    Ok(())
}

/// Renew the client certificate when less than this much of it is left.
const RENEW_BEFORE: time::Duration = time::Duration::days(2);

/// Sends the spool's batches oldest first, each until the edge takes it: as many of the oldest
/// as fit in one request ([`crate::request::gather`]). A batch is removed
/// and the source's position confirmed past it only once the edge acknowledged it; anything
/// else (the edge unreachable, the source paused on the platform) keeps it spooled, and the
/// next attempt waits longer, up to `retry_max`. While the platform answers `source_paused`
/// the status says `paused`; the first batch taken after it restores the state it replaced.
#[allow(
    clippy::too_many_arguments,
    reason = "the sender's channels, each used once"
)]
async fn send_spool(
    mut client: EdgeClient,
    retry_max: Duration,
    state_dir: PathBuf,
    spool: Arc<Spool>,
    spooled: Arc<Notify>,
    status: StatusCell,
    confirm: watch::Sender<u64>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut backoff = domain::Backoff::new(Duration::from_millis(250), retry_max);
    // The state `paused` replaced, while the platform refuses the source's batches.
    let mut paused_from: Option<String> = None;
    let mut credentials_checked = std::time::Instant::now();
    let mut pacing = crate::request::Pacing::default();
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        // A rotation the reporter carried out replaces this client's certificate too.
        if credentials_checked.elapsed() >= Duration::from_secs(1) {
            use_saved_credentials(&state_dir, &mut client);
            credentials_checked = std::time::Instant::now();
        }
        if client
            .credentials()
            .remaining_lifetime(time::OffsetDateTime::now_utc())
            < RENEW_BEFORE
        {
            renew_certificate(&state_dir, &mut client, "it expires soon").await?;
        }
        let Some(request) = crate::request::gather(&spool, pacing.max_batches)? else {
            status.update(|status| status.lag_seconds = Some(0.0));
            tokio::select! {
                _ = spooled.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.changed() => return Ok(()),
            }
            continue;
        };
        let started = std::time::Instant::now();
        let size = request.body.len() as u64;
        if let Some(first) = request.first_event_time() {
            let waited = time::OffsetDateTime::now_utc() - first;
            status.update(|status| status.lag_seconds = Some(waited.as_seconds_f64().max(0.0)));
        }
        let outcome = if request.events == 0 {
            // Only positions: nothing to send.
            Ok(None)
        } else {
            // The batches were serialised once when spooled; they are joined and compressed, not
            // parsed again.
            let encoded = EncodedBatch::from_json(request.body, request.events, Encoding::Zstd)
                .context("compressing spooled batches")?;
            client.send_encoded(&encoded).await.map(Some)
        };
        match outcome {
            Ok(response) => {
                if let Some(response) = &response {
                    spool.set_batch_types(response.reads_batch_types());
                }
                if let Some(response) = response.filter(|response| response.rejected > 0) {
                    // The edge will never take these as they are; keep them for the operator.
                    let rejected = state_dir.join("rejected.jsonl");
                    let mut lines = String::new();
                    for result in response
                        .results
                        .iter()
                        .filter(|result| result.code.is_some())
                    {
                        lines.push_str(&serde_json::to_string(result)?);
                        lines.push('\n');
                    }
                    use std::io::Write;
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&rejected)?
                        .write_all(lines.as_bytes())?;
                    tracing::warn!(rejected = response.rejected, file = %rejected.display(),
                        "the edge rejected events; their reasons are kept");
                }
                // The newest position first, then the files: a crash in between resends
                // batches the edge already has (duplicates), never skips one.
                if let Some(resume) = request
                    .batches
                    .iter()
                    .rev()
                    .map(|(_, header)| &header.resume)
                    .find(|resume| **resume != Resume::default())
                {
                    crate::spool::save_acked(&state_dir, resume)?;
                }
                for (number, _) in &request.batches {
                    spool.remove(*number)?;
                }
                if request.events > 0 {
                    status.sent(started, size);
                }
                if let Some(lsn) = request
                    .batches
                    .iter()
                    .filter_map(|(_, header)| header.resume.confirm)
                    .max()
                {
                    confirm.send_if_modified(|confirmed| {
                        let newer = lsn > *confirmed;
                        if newer {
                            *confirmed = lsn;
                        }
                        newer
                    });
                }
                if let Some(last) = request
                    .batches
                    .iter()
                    .rev()
                    .find_map(|(_, header)| header.last_lsn)
                {
                    status.update(|status| {
                        status.acked_lsn = Some(last);
                        status.last_error = None;
                    });
                }
                if let Some(previous) = paused_from.take() {
                    tracing::info!("the platform takes this source's batches again: resumed");
                    status.update(|status| {
                        if status.state == "paused" {
                            status.state = previous;
                        }
                    });
                }
                backoff.reset();
            }
            Err(error) if error.is_paused() => {
                // Not a failure: the platform holds the source's ingestion. The batch stays
                // spooled, the reader keeps filling the spool within its bound, and the
                // position is not confirmed past what the platform acknowledged.
                let wait = jittered(backoff.next());
                status.update(|status| {
                    if status.state != "paused" {
                        if paused_from.is_none() {
                            tracing::info!(retry_in = ?wait,
                                "the platform paused this source's ingestion; batches stay spooled");
                        }
                        paused_from = Some(std::mem::replace(&mut status.state, "paused".into()));
                    }
                    status.last_error = None;
                });
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => return Ok(()),
                }
            }
            Err(error)
                if error.is_too_large() && pacing.refused_as_too_large(request.batches.len()) =>
            {
                tracing::info!(
                    max_batches = pacing.max_batches,
                    "the edge refused a request as too large; sending fewer batches at a time"
                );
            }
            Err(error) => {
                let delay = backoff.next();
                let wait = error.retry_after().unwrap_or_else(|| jittered(delay));
                if error.is_retryable() {
                    tracing::warn!(%error, retry_in = ?wait, "sending failed; the batch stays spooled");
                } else {
                    tracing::error!(%error, retry_in = ?wait,
                        "the edge refused the batch; it stays spooled until the cause is fixed");
                }
                status.update(|status| {
                    status.last_error = Some(format!("sending to the edge: {error}"))
                });
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => return Ok(()),
                }
            }
        }
    }
}

/// `base` scaled by a random factor from 0.5 to 1.5, so that agents cut off together (an edge
/// restart) do not all come back at the same instant.
pub(crate) fn jittered(base: Duration) -> Duration {
    let random = (uuid::Uuid::new_v4().as_u128() % 1000) as f64 / 1000.0;
    domain::backoff::jittered(base, random)
}

const STATUS_FILE: &str = "status.json";

fn write_status(state_dir: &Path, status: &StatusCell) -> anyhow::Result<()> {
    status.update(|status| {
        status.updated_at = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
    });
    crate::spool::write_atomically(
        &state_dir.join(STATUS_FILE),
        &serde_json::to_vec_pretty(&status.get())?,
    )
}

/// What the reporter shares with the rest of the agent.
struct Heartbeat {
    /// Held while a heartbeat is in flight.
    in_flight: Arc<tokio::sync::Mutex<()>>,
    /// Where it passes on a resync the edge asks for.
    resync: watch::Sender<Option<uuid::Uuid>>,
}

/// Keeps the status current and on disk every two seconds, and sends it to the platform every
/// few seconds (the status heartbeat; a failure there is only logged).
async fn report_status(
    state_dir: PathBuf,
    spool: Arc<Spool>,
    status: StatusCell,
    mut client: EdgeClient,
    heartbeat: Heartbeat,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return Ok(()),
        }
        ticks += 1;
        status.refresh(spool.len() as u64, spool.bytes());
        if let Err(error) = write_status(&state_dir, &status) {
            tracing::warn!(error = %format!("{error:#}"), "cannot write status.json");
        }
        if ticks % 2 == 1 {
            use_saved_credentials(&state_dir, &mut client);
            let in_flight = heartbeat.in_flight.lock().await;
            let answer = client.send_status(&status.get()).await;
            drop(in_flight);
            match answer {
                // Asked again until the heartbeat names it done: each ask is handled once.
                Ok(answer) => {
                    if let Some(request) = answer.resync {
                        heartbeat.resync.send_replace(Some(request.request_id));
                    }
                    if answer.rotate_certificate {
                        renew_certificate(
                            &state_dir,
                            &mut client,
                            "the platform asked to rotate it",
                        )
                        .await?;
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, "the status heartbeat did not reach the edge");
                }
            }
        }
    }
}

/// `check`: what the agent finds (the edge's acceptance of its certificate; for a PostgreSQL
/// source, every prerequisite), printed one per line, and whether nothing must be fixed. The
/// findings and the source's tables are also reported to the platform, where the connector
/// wizard shows them.
pub async fn check(config: &Config) -> (String, bool) {
    let (findings, client) = check_findings(config).await;
    let ready = findings.iter().all(|finding| finding.level != "fix");
    let mut lines: Vec<String> = findings.iter().map(finding_line).collect();
    if let Some(client) = client {
        match report_check(config, findings, ready, &client).await {
            Ok(()) => lines.push(
                "ok      reported to the platform: its connector wizard shows these findings and \
                 the source's tables"
                    .to_owned(),
            ),
            Err(error) => lines.push(format!(
                "warning the platform did not take this report ({error:#}); the findings above stand"
            )),
        }
    }
    (lines.join("\n"), ready)
}

fn finding_line(finding: &protocol::CheckFinding) -> String {
    let label = match finding.level.as_str() {
        "ok" => "ok     ",
        "warning" => "warning",
        _ => "FIX    ",
    };
    format!("{label} {}", finding.message)
}

fn check_finding(level: &str, message: impl Into<String>) -> protocol::CheckFinding {
    protocol::CheckFinding {
        level: level.to_owned(),
        message: message.into(),
    }
}

/// The findings of `check`, and a client the edge accepted, if it did.
async fn check_findings(config: &Config) -> (Vec<protocol::CheckFinding>, Option<EdgeClient>) {
    let mut findings = Vec::new();
    let mut accepted = None;
    match Credentials::load(&config.state_dir) {
        Err(_) => findings.push(check_finding(
            "fix",
            "no credentials in the state directory: pair first with `tributary-agent pair`",
        )),
        Ok(credentials) => match EdgeClient::new(&config.edge, &credentials) {
            Err(error) => findings.push(check_finding(
                "fix",
                format!("the edge URL {:?}: {error:#}", config.edge),
            )),
            Ok(client) => match client.whoami().await {
                Ok(whoami) => {
                    findings.push(check_finding(
                        "ok",
                        format!(
                            "the edge at {} knows this agent as source {} of tenant {}",
                            config.edge, whoami.source_id, whoami.tenant_id
                        ),
                    ));
                    accepted = Some(client);
                }
                Err(error) => findings.push(check_finding(
                    "fix",
                    format!(
                        "the edge did not accept this agent's certificate (revoked, expired, or \
                         another platform's): {error}"
                    ),
                )),
            },
        },
    }
    if config.source.kind == "postgres" {
        match config.postgres() {
            Ok(settings) => {
                for finding in crate::postgres::check(&settings).await {
                    let level = match finding.level {
                        crate::postgres::Level::Ok => "ok",
                        crate::postgres::Level::Warning => "warning",
                        crate::postgres::Level::Fix => "fix",
                    };
                    findings.push(check_finding(level, finding.message));
                }
            }
            Err(error) => findings.push(check_finding("fix", format!("{error:#}"))),
        }
    }
    (findings, accepted)
}

/// Sends the platform `findings` and, for a PostgreSQL source it can read, the source's tables.
async fn report_check(
    config: &Config,
    mut findings: Vec<protocol::CheckFinding>,
    ready: bool,
    client: &EdgeClient,
) -> anyhow::Result<()> {
    let (tables, tables_omitted) = match config.postgres() {
        Ok(settings) if config.source.kind == "postgres" => {
            crate::postgres::source_tables(&settings)
                .await
                .unwrap_or_default()
        }
        _ => (Vec::new(), 0),
    };
    findings.truncate(protocol::MAX_CHECK_FINDINGS);
    let report = protocol::CheckReport {
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        source_kind: config.source.kind.clone(),
        ready,
        findings,
        tables,
        tables_omitted,
    };
    client.send_check(&report).await?;
    Ok(())
}

/// What `run` does as it starts: the same findings as `check`, reported to the platform (the
/// wizard shows them), and logged; a failure to report is only logged.
async fn report_check_on_start(config: Config) {
    let (findings, client) = check_findings(&config).await;
    let ready = findings.iter().all(|finding| finding.level != "fix");
    for finding in findings.iter().filter(|finding| finding.level != "ok") {
        tracing::warn!(level = %finding.level, message = %finding.message, "check");
    }
    if let Some(client) = client
        && let Err(error) = report_check(&config, findings, ready, &client).await
    {
        tracing::warn!(error = %format!("{error:#}"), "reporting the check to the platform failed");
    }
}

/// What `status` prints: the pairing, the spool, and the running agent's last status.
pub fn status(config: &Config) -> anyhow::Result<String> {
    let mut lines = Vec::new();
    match Credentials::load(&config.state_dir) {
        Ok(credentials) => lines.push(format!(
            "paired:     tenant {}, source {}, certificate valid until {}",
            credentials.tenant_id,
            credentials.source_id,
            credentials
                .not_after
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        )),
        Err(_) => lines.push("paired:     no (run `tributary-agent pair`)".into()),
    }
    let spool = Spool::open(&config.state_dir, config.spool.max_bytes)?;
    lines.push(format!(
        "spool:      {} batch(es), {} bytes waiting (bound {} bytes)",
        spool.len(),
        spool.bytes(),
        config.spool.max_bytes
    ));
    let path = config.state_dir.join(STATUS_FILE);
    let Ok(bytes) = std::fs::read(&path) else {
        lines.push("agent:      has not run yet".into());
        return Ok(lines.join("\n"));
    };
    let status: crate::status::AgentStatus =
        serde_json::from_slice(&bytes).with_context(|| format!("{} is corrupt", path.display()))?;
    let lsn = |lsn: Option<domain::Lsn>| lsn.map_or("-".to_owned(), |lsn| lsn.to_string());
    lines.push(format!(
        "state:      {} (as of {})",
        status.state, status.updated_at
    ));
    lines.push(format!(
        "caught up:  {}",
        if status.caught_up {
            "yes: everything captured was acknowledged by the platform".to_owned()
        } else {
            let rate = match (status.send_bytes_per_second, status.drain_seconds) {
                (Some(rate), Some(seconds)) => {
                    format!("sent at {rate:.0} bytes/s, drained in {seconds:.0} s")
                }
                _ => "nothing is being acknowledged now".to_owned(),
            };
            format!("no: {} bytes in the spool ({rate})", status.spool_bytes)
        }
    ));
    lines.push(format!("captured:   {}", lsn(status.captured_lsn)));
    lines.push(format!("acked:      {}", lsn(status.acked_lsn)));
    lines.push(format!("confirmed:  {}", lsn(status.confirmed_lsn)));
    if let Some(bytes) = status.lag_bytes {
        lines.push(format!("lag:        {bytes} bytes of WAL"));
    }
    if let Some(seconds) = status.lag_seconds {
        lines.push(format!(
            "delay:      {seconds:.1} s since the oldest unacknowledged commit"
        ));
    }
    if let Some(rows) = status.snapshot_rows {
        lines.push(format!("snapshot:   {rows} row(s) read"));
    }
    if let Some(slot) = &status.slot {
        lines.push(format!(
            "slot:       {} ({}), retaining {} bytes of WAL{}",
            slot.name,
            slot.wal_status.as_deref().unwrap_or("unknown"),
            slot.retained_bytes.unwrap_or_default(),
            slot.safe_wal_bytes
                .map(|safe| format!(", {safe} bytes before invalidation"))
                .unwrap_or_default()
        ));
    }
    if status.backpressure {
        lines.push("spool full: the source is not being read until the edge takes batches".into());
    }
    for table in &status.not_captured {
        let (schema, name) = table.split_once('.').unwrap_or(("public", table));
        lines.push(format!(
            "not captured: updates and deletes of {table} (no replica identity): {}",
            crate::postgres::publication::fix(schema, name)
        ));
    }
    for warning in &status.warnings {
        lines.push(format!("warning:    {warning}"));
    }
    if let Some(error) = &status.last_error {
        lines.push(format!("last error: {error}"));
    }
    Ok(lines.join("\n"))
}
