//! `tributary-agent run`: the reader (source → spool) and the sender (spool → edge), side by
//! side until SIGINT or SIGTERM.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use edge_client::{Credentials, EdgeClient, Encoding};
use protocol::EventBatch;
use tokio::sync::{Notify, watch};

use crate::config::Config;
use crate::simulator::{Position, Simulator};
use crate::spool::{Spool, Spooled};

const POSITION_FILE: &str = "simulator-position.json";

/// Changes per spooled batch at most.
const BATCH_EVENTS: usize = 500;

/// Spooled batches beyond which the reader pauses (the edge is unreachable for a while):
/// the source is read no further rather than the disk filled.
const MAX_SPOOLED: usize = 10_000;

pub async fn run(config: Config) -> anyhow::Result<()> {
    run_until(config, async {
        if let Err(error) = wait_for_signal().await {
            tracing::error!(%error, "cannot wait for signals; stopping");
        }
    })
    .await
}

/// Runs until `shutdown` completes (the platform's demo runs an agent in its own process).
pub async fn run_until(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let credentials = Credentials::load(&config.state_dir)
        .context("no credentials in the state directory: pair first with `tributary-agent pair`")?;
    let spool = Spool::open(&config.state_dir)?;
    let client = EdgeClient::new(&config.edge, &credentials)
        .with_context(|| format!("the edge URL {:?}", config.edge))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let spooled = Arc::new(Notify::new());
    let reader = tokio::spawn(read_source(
        config.clone(),
        credentials.source_id,
        spool.clone(),
        spooled.clone(),
        stop_rx.clone(),
    ));
    let sender = tokio::spawn(send_spool(
        client,
        config.state_dir.clone(),
        spool,
        spooled,
        stop_rx,
    ));
    tracing::info!(edge = %config.edge, source = %credentials.source_id, "agent running");
    shutdown.await;
    tracing::info!("stopping");
    let _ = stop_tx.send(true);
    reader.await??;
    sender.await??;
    Ok(())
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
    if let Some(end) = spool.end_position()? {
        position.next_lsn = position.next_lsn.max(end);
    }
    Ok(position)
}

fn save_position(state_dir: &Path, position: Position) -> anyhow::Result<()> {
    let path = state_dir.join(POSITION_FILE);
    let temporary: PathBuf = state_dir.join(format!("{POSITION_FILE}.tmp"));
    std::fs::write(&temporary, serde_json::to_vec(&position)?)?;
    std::fs::File::open(&temporary)?.sync_all()?;
    std::fs::rename(&temporary, &path)?;
    Ok(())
}

async fn read_source(
    config: Config,
    source: domain::SourceId,
    spool: Spool,
    spooled: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let position = load_position(&config.state_dir, &spool)?;
    let mut simulator = Simulator::new(source, config.source.devices, position);
    let rate = config.source.events_per_second.max(1) as usize;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return Ok(()),
        }
        if spool.files()?.len() >= MAX_SPOOLED {
            tracing::warn!(
                "the spool is full; the source is not read until the edge takes batches again"
            );
            continue;
        }
        let mut remaining = rate;
        while remaining > 0 {
            let count = remaining.min(BATCH_EVENTS);
            remaining -= count;
            let events = simulator.next_changes(count);
            let end_position = simulator.position().next_lsn;
            spool.push(&Spooled {
                end_position,
                batch: EventBatch {
                    source_id: None,
                    tenant_id: None,
                    events,
                },
            })?;
            save_position(&config.state_dir, simulator.position())?;
        }
        spooled.notify_one();
    }
}

/// Renew the client certificate when less than this much of it is left.
const RENEW_BEFORE: time::Duration = time::Duration::days(2);

async fn send_spool(
    mut client: EdgeClient,
    state_dir: PathBuf,
    spool: Spool,
    spooled: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut backoff = Duration::from_millis(250);
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        if client
            .credentials()
            .remaining_lifetime(time::OffsetDateTime::now_utc())
            < RENEW_BEFORE
        {
            match client.renew().await {
                Ok(renewed) => {
                    renewed.save(&state_dir)?;
                    client = EdgeClient::new(&client.url().to_string(), &renewed)?;
                    tracing::info!("client certificate renewed");
                }
                Err(error) => {
                    tracing::warn!(%error, "renewing the client certificate failed; will retry")
                }
            }
        }
        let Some(path) = spool.files()?.into_iter().next() else {
            tokio::select! {
                _ = spooled.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.changed() => return Ok(()),
            }
            continue;
        };
        let batch = spool.read(&path)?;
        match client.send(&batch.batch, Encoding::Zstd).await {
            Ok(response) => {
                if response.rejected > 0 {
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
                spool.remove(&path)?;
                backoff = Duration::from_millis(250);
                tracing::debug!(
                    accepted = response.accepted,
                    duplicates = response.duplicates,
                    "batch acknowledged"
                );
            }
            Err(error) => {
                let wait = error.retry_after().unwrap_or(backoff);
                if error.is_retryable() {
                    tracing::warn!(%error, retry_in = ?wait, "sending failed; the batch stays spooled");
                } else {
                    tracing::error!(%error, retry_in = ?wait,
                        "the edge refused the batch; it stays spooled until the cause is fixed");
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// What `check` verifies: the configuration, the credentials, and that the edge answers to them.
pub async fn check(config: &Config) -> anyhow::Result<String> {
    let credentials = Credentials::load(&config.state_dir)
        .context("no credentials in the state directory: pair first with `tributary-agent pair`")?;
    let client = EdgeClient::new(&config.edge, &credentials)
        .with_context(|| format!("the edge URL {:?}", config.edge))?;
    let whoami = client.whoami().await.context(
        "the edge did not accept this agent's certificate (revoked, expired, or another platform)",
    )?;
    Ok(format!(
        "ok: the edge at {} knows this agent as source {} of tenant {}",
        config.edge, whoami.source_id, whoami.tenant_id
    ))
}

/// What `status` prints.
pub fn status(config: &Config) -> anyhow::Result<String> {
    let mut lines = Vec::new();
    match Credentials::load(&config.state_dir) {
        Ok(credentials) => lines.push(format!(
            "paired:   tenant {}, source {}, certificate valid until {}",
            credentials.tenant_id,
            credentials.source_id,
            credentials
                .not_after
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        )),
        Err(_) => lines.push("paired:   no (run `tributary-agent pair`)".into()),
    }
    let spool = Spool::open(&config.state_dir)?;
    let files = spool.files()?;
    let events: usize = files
        .iter()
        .filter_map(|path| spool.read(path).ok())
        .map(|batch| batch.batch.events.len())
        .sum();
    lines.push(format!(
        "spool:    {} batch(es), {events} event(s) waiting",
        files.len()
    ));
    let position = load_position(&config.state_dir, &spool)?;
    lines.push(format!("position: {}", domain::Lsn(position.next_lsn)));
    Ok(lines.join("\n"))
}
