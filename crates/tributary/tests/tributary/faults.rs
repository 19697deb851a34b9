//! Fault injection against the real binary (reliability plan, section 4.2, F1 and F4): a client
//! streams 200,000 events with retries while `tributary up` — edge, bus publisher and bronze
//! writer in one process — is killed with SIGKILL mid-stream and started again on the same data
//! directory, on the embedded bus and on NATS JetStream. Afterwards bronze must hold every event
//! the edge acknowledged, exactly once: lost = 0, duplicated = 0, and count and checksum equal
//! to what the client was told was stored.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::{EventId, Lsn, SourceId, TenantId};
use edge_client::{Credentials, EdgeClient, EncodedBatch, Encoding, ServerTrust};
use nix::sys::signal::Signal;
use protocol::{ChangeEvent, EventBatch, EventStatus, Op};
use tokio::sync::watch;

use crate::support::{
    DataDir, Platform, assert_no_server_left, platform_database, start_platform_with, stdout,
    tributary,
};

const EVENTS: u32 = 200_000;
const BATCH: u32 = 1_000;
/// Acked events after which the platform is killed (and started again), and how long after
/// that ack: the next batch is then somewhere between decoding, publishing and answering.
const KILLS: [(usize, Duration); 2] = [
    (60_000, Duration::from_millis(40)),
    (130_000, Duration::from_millis(90)),
];
/// How long one batch may keep failing before the test gives up on it.
const BATCH_DEADLINE: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_platform_while_a_client_streams_200k_events_with_retries() {
    kill_the_platform_mid_stream(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_platform_on_the_nats_bus_while_a_client_streams_200k_events() {
    // Fails (never skips) when nats-server is missing.
    let nats = test_support::nats::NatsServer::start();
    kill_the_platform_mid_stream(Some(nats.url())).await;
}

async fn kill_the_platform_mid_stream(nats_url: Option<String>) {
    let label = if nats_url.is_some() {
        "nats"
    } else {
        "embedded"
    };
    let data_dir = Arc::new(DataDir::new());
    let extra: Vec<String> = match &nats_url {
        Some(url) => vec!["--bus".into(), url.clone()],
        None => vec![],
    };
    let mut platform = Running(Some(start(&data_dir, &extra).await));
    let (tenant, token) = tenant_and_source(&data_dir).await;

    // The test cannot read the CA from the platform: trust on first use for pairing, then the
    // returned CA is pinned (and checked against the certificate the edge presented).
    let edge_url = platform.0.as_ref().expect("running").1.clone();
    let credentials = edge_client::pair(&edge_url, ServerTrust::TrustOnFirstUse, &token)
        .await
        .expect("pair with the edge");
    assert_eq!(credentials.tenant_id, tenant);

    let (url_tx, url_rx) = watch::channel(edge_url);
    let (acked_tx, mut acked_rx) = watch::channel(0usize);
    let streamer = tokio::spawn(stream(credentials.clone(), url_rx, acked_tx));

    let mut downtimes = Vec::new();
    for (kill_after, delay) in KILLS {
        tokio::time::timeout(
            Duration::from_secs(90),
            acked_rx.wait_for(|acked| *acked >= kill_after),
        )
        .await
        .unwrap_or_else(|_| panic!("[{label}] fewer than {kill_after} events acked within 90 s"))
        .expect("the streamer is running");
        tokio::time::sleep(delay).await;
        let (running, _) = platform.0.take().expect("running");
        let killed_at = Instant::now();
        let (status, _) = tokio::task::spawn_blocking(move || running.stop_with(Signal::SIGKILL))
            .await
            .unwrap();
        assert!(!status.success());
        eprintln!(
            "[{label}] SIGKILL after {} acked events; restarting on the same data directory",
            *acked_rx.borrow()
        );
        let restarted = start(&data_dir, &extra).await;
        downtimes.push(killed_at.elapsed());
        url_tx
            .send(restarted.1.clone())
            .expect("the streamer is running");
        platform.0 = Some(restarted);
    }
    let report = streamer.await.expect("the streamer finished");

    // Every batch was eventually acked; wait (with a deadline) until bronze has them all.
    let database = platform_database(&data_dir).await;
    let expected = report.acked.len() as i64;
    assert_eq!(expected, i64::from(EVENTS), "every batch was acked");
    let deadline = Instant::now() + Duration::from_secs(60);
    let drain_started = Instant::now();
    loop {
        let (count, _) = store::service::bronze::tenant_fingerprint(&database.service, tenant)
            .await
            .unwrap();
        if count >= expected {
            break;
        }
        if Instant::now() > deadline {
            let log: Vec<String> = platform
                .0
                .as_ref()
                .expect("running")
                .0
                .stderr
                .try_iter()
                .collect();
            panic!(
                "[{label}] bronze holds {count} of {expected} acked events 60 s after the last \
                 ack; the platform's log:\n{}",
                log.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let drain = drain_started.elapsed();

    let mut acked = report.acked.clone();
    acked.sort();
    acked.dedup();
    assert_eq!(
        acked.len(),
        report.acked.len(),
        "the client acked no id twice"
    );
    let stored: Vec<EventId> = store::service::bronze::tenant_event_ids(&database.service, tenant)
        .await
        .unwrap()
        .into_iter()
        .map(EventId::from_uuid)
        .collect();
    let lost = acked
        .iter()
        .filter(|id| stored.binary_search(id).is_err())
        .count();
    let duplicated = store::service::bench_support::bronze_duplicates(&database.service, tenant)
        .await
        .unwrap();
    let unexpected = stored
        .iter()
        .filter(|id| acked.binary_search(id).is_err())
        .count();
    let bronze_fingerprint = store::service::bronze::tenant_fingerprint(&database.service, tenant)
        .await
        .unwrap();
    let acked_fingerprint =
        store::service::bench_support::fingerprint_of(&database.service, &acked)
            .await
            .unwrap();

    let seconds = report.elapsed.as_secs_f64();
    eprintln!(
        "[{label}] {} events acked in {seconds:.1} s ({:.0} events/s including {} kill/restart cycles; \
         downtime per restart {:?}); {} retried requests {:?}; {} events answered `duplicate` \
         (resent after a lost answer); bronze caught up {:.1} s after the last ack",
        report.acked.len(),
        report.acked.len() as f64 / seconds,
        downtimes.len(),
        downtimes
            .iter()
            .map(|downtime| format!("{:.1}s", downtime.as_secs_f64()))
            .collect::<Vec<_>>(),
        report.retries,
        report.failures,
        report.duplicates,
        drain.as_secs_f64(),
    );
    eprintln!(
        "[{label}] lost {lost}, duplicated {duplicated}, unexpected {unexpected}; bronze {} rows \
         md5 {}, acked {} ids md5 {}",
        bronze_fingerprint.0, bronze_fingerprint.1, acked_fingerprint.0, acked_fingerprint.1
    );
    assert_eq!(lost, 0, "[{label}] acked events missing from bronze");
    assert_eq!(duplicated, 0, "[{label}] events stored more than once");
    assert_eq!(unexpected, 0, "[{label}] bronze holds events nobody acked");
    assert_eq!(
        bronze_fingerprint, acked_fingerprint,
        "[{label}] bronze's count and checksum equal what the client was told"
    );
    assert!(
        report.retries > 0,
        "[{label}] the kills were noticed by the client"
    );

    database.close().await;
    let (running, _) = platform.0.take().expect("running");
    let (status, stderr) = tokio::task::spawn_blocking(move || running.stop_with(Signal::SIGTERM))
        .await
        .unwrap();
    assert!(
        status.success(),
        "tributary up exits 0 on SIGTERM: {status}\n{}",
        stderr.join("\n")
    );
    assert_no_server_left(&data_dir.pgdata());
}

/// The running platform and its edge URL. If the test fails before stopping it, it is stopped
/// with SIGTERM here, so that neither it nor its PostgreSQL server outlives the test.
struct Running(Option<(Platform, String)>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some((platform, _)) = self.0.take() {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                platform.stop_with(Signal::SIGTERM)
            }));
        }
    }
}

/// Starts `tributary up` off the async threads (it blocks until the platform is ready).
async fn start(data_dir: &Arc<DataDir>, extra: &[String]) -> (Platform, String) {
    let data_dir = data_dir.clone();
    let extra = extra.to_vec();
    tokio::task::spawn_blocking(move || {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        start_platform_with(&data_dir, &extra)
    })
    .await
    .unwrap()
}

/// Creates a tenant and a simulator source with the CLI; returns the tenant and the pairing
/// token.
async fn tenant_and_source(data_dir: &Arc<DataDir>) -> (TenantId, String) {
    let data_dir = data_dir.clone();
    tokio::task::spawn_blocking(move || {
        let created = tributary(
            &data_dir,
            &[
                "tenant",
                "create",
                "--name",
                "Faults",
                "--industry",
                "energy",
                "--region",
                "eu",
            ],
        );
        assert!(created.status.success(), "{created:?}");
        let tenant: TenantId = stdout(&created)
            .split_whitespace()
            .nth(2)
            .expect("created tenant <id> (<name>)")
            .parse()
            .unwrap();
        let tenant_text = tenant.to_string();
        let source = tributary(
            &data_dir,
            &[
                "source",
                "create",
                "--tenant",
                &tenant_text,
                "--name",
                "simulated-db",
                "--kind",
                "simulator",
            ],
        );
        assert!(source.status.success(), "{source:?}");
        let printed = stdout(&source);
        let mut lines = printed.lines();
        lines
            .by_ref()
            .find(|line| line.starts_with("pairing token"))
            .expect("the pairing token heading");
        let token = lines.next().expect("the token line").trim().to_owned();
        (tenant, token)
    })
    .await
    .unwrap()
}

/// What the streaming client saw.
struct StreamReport {
    acked: Vec<EventId>,
    retries: u64,
    /// Retried failures by kind.
    failures: BTreeMap<String, u64>,
    /// Events the edge answered `duplicate` (stored by an attempt whose answer was lost).
    duplicates: u64,
    elapsed: Duration,
}

/// Sends every event in batches, one batch at a time, each until the edge acks it; follows the
/// edge to its new address when the platform restarts (a real agent's address does not change,
/// but `up` here listens on port 0).
async fn stream(
    credentials: Credentials,
    mut urls: watch::Receiver<String>,
    acked_tx: watch::Sender<usize>,
) -> StreamReport {
    let started = Instant::now();
    let mut client = EdgeClient::new(&urls.borrow_and_update(), &credentials).unwrap();
    let mut report = StreamReport {
        acked: Vec::with_capacity(EVENTS as usize),
        retries: 0,
        failures: BTreeMap::new(),
        duplicates: 0,
        elapsed: Duration::ZERO,
    };
    // Commit times of now (bronze's retention removes old ones), one millisecond apart.
    let base_millis =
        i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
            .expect("a current time");
    for first in (0..EVENTS).step_by(BATCH as usize) {
        let batch = batch(credentials.source_id, base_millis, first..first + BATCH);
        let encoded = EncodedBatch::new(&batch, Encoding::Zstd).unwrap();
        let deadline = Instant::now() + BATCH_DEADLINE;
        let mut backoff = Duration::from_millis(50);
        let response = loop {
            if urls.has_changed().unwrap_or(false) {
                client = EdgeClient::new(&urls.borrow_and_update(), &credentials).unwrap();
            }
            match client.send_encoded(&encoded).await {
                Ok(response) => break response,
                Err(error) if error.is_retryable() => {
                    report.retries += 1;
                    let kind = match error.status() {
                        Some(status) => format!("status {status}"),
                        None => format!("{error}"),
                    };
                    *report.failures.entry(kind).or_default() += 1;
                    assert!(
                        Instant::now() < deadline,
                        "a batch kept failing for {BATCH_DEADLINE:?}: {error}"
                    );
                    tokio::time::sleep(error.retry_after().unwrap_or(backoff)).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(error) => panic!("the edge refused a valid batch: {error}"),
            }
        };
        for (result, event) in response.results.iter().zip(&batch.events) {
            assert_ne!(
                result.status,
                EventStatus::Rejected,
                "valid event rejected: {:?}",
                result.message
            );
            assert_eq!(result.event_id, Some(event.event_id));
            if result.status == EventStatus::Duplicate {
                report.duplicates += 1;
            }
            report.acked.push(event.event_id);
        }
        acked_tx.send_replace(report.acked.len());
    }
    report.elapsed = started.elapsed();
    report
}

/// Inserts of rows `range` of public.devices, one per transaction committed at `base_millis`
/// plus the row number, ids derived as an agent derives them.
fn batch(source: SourceId, base_millis: i64, range: std::ops::Range<u32>) -> EventBatch {
    let events = range
        .map(|n| {
            let millis = base_millis + i64::from(n);
            let lsn = Lsn(0x1_0000_0000 + u64::from(n) * 64);
            let mut after = serde_json::Map::new();
            after.insert("id".into(), n.into());
            after.insert("name".into(), format!("device {n}").into());
            after.insert("email".into(), format!("owner{n}@example.com").into());
            after.insert("firmware".into(), "4.2.1".into());
            after.insert("last_seen".into(), "2026-05-28T20:26:40Z".into());
            let mut key = serde_json::Map::new();
            key.insert("id".into(), n.into());
            ChangeEvent {
                event_id: EventId::derive(source, millis, lsn, 0),
                op: Op::Insert,
                schema: "public".into(),
                table: "devices".into(),
                lsn,
                seq: 0,
                xid: Some(1000 + u64::from(n)),
                event_time: time::OffsetDateTime::from_unix_timestamp_nanos(
                    i128::from(millis) * 1_000_000,
                )
                .unwrap(),
                key,
                after: Some(after),
                before: None,
                unchanged: Vec::new(),
                types: Default::default(),
            }
        })
        .collect();
    EventBatch {
        tenant_id: None,
        source_id: Some(source),
        events,
        types: Vec::new(),
    }
}
