//! The edge's memory under one tenant's concurrent large bodies, and under stalled bodies from
//! clients without a certificate: bodies are read under the body budget and anonymous
//! connections buffer little, so this process's resident memory stays within a bound derived
//! from the budget, not from how many streams and connections a client opens.
//!
//! Its own test binary, with this one test: resident memory is the whole process's, and the
//! other edge tests running beside it would blur it.

#[path = "edge/client.rs"]
#[allow(dead_code)]
mod client;
#[path = "edge/support.rs"]
#[allow(dead_code)]
mod support;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use edge::EdgeConfig;
use edge::config::{BodyBudget, ConnectionLimits};
use http_body_util::BodyExt;
use hyper::body::{Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use serde_json::json;
use tokio::net::TcpStream;

use crate::client::{Identity, tls_connector};
use crate::support::{TestEdge, event_for};

const MIB: usize = 1024 * 1024;
/// Each batch: one event, padded with JSON whitespace to this size.
const BODY_BYTES: usize = 4 * MIB;
const CONNECTIONS: usize = 4;
const STREAMS_PER_CONNECTION: usize = 16;
/// What the tenant can hold at once; the whole budget is twice that.
const TENANT_BUDGET: usize = 24 * MIB;
/// Allowance above the tenant's share for everything else the flood costs in this process:
/// HTTP/2 windows and buffers on both sides, decoding, the bus client, allocator slack.
const MARGIN: usize = 64 * MIB;

/// A request body sent as a few chunks, the padding shared between requests (the client side
/// costs no memory per request), with its exact length declared.
struct Chunks(VecDeque<Bytes>, u64);

impl Chunks {
    fn new(chunks: Vec<Bytes>) -> Self {
        let length = chunks.iter().map(|chunk| chunk.len() as u64).sum();
        Self(chunks.into(), length)
    }
}

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|chunk| Ok(Frame::data(chunk))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.1)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

/// Samples this process's resident memory every few milliseconds from `start` to `stop`.
struct PeakSampler {
    baseline: usize,
    peak: Arc<AtomicU64>,
    sampling: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl PeakSampler {
    fn start() -> Self {
        let baseline = resident_bytes();
        let peak = Arc::new(AtomicU64::new(baseline as u64));
        let sampling = Arc::new(AtomicBool::new(true));
        let task = tokio::spawn({
            let (peak, sampling) = (peak.clone(), sampling.clone());
            async move {
                while sampling.load(Ordering::SeqCst) {
                    peak.fetch_max(resident_bytes() as u64, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        });
        Self {
            baseline,
            peak,
            sampling,
            task,
        }
    }

    /// The baseline and the peak's growth over it, in bytes.
    async fn stop(self) -> (usize, usize) {
        self.sampling.store(false, Ordering::SeqCst);
        self.task.await.unwrap();
        let peak = self.peak.load(Ordering::SeqCst) as usize;
        (self.baseline, peak.saturating_sub(self.baseline))
    }
}

fn resident_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .expect("VmRSS");
    let kib: usize = line
        .split_whitespace()
        .nth(1)
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS in kB");
    kib * 1024
}

/// A batch of event `n` of `source`, padded to exactly `BODY_BYTES` with whitespace after it.
fn padded_batch(source: domain::SourceId, n: u32, padding: &Bytes) -> Chunks {
    let json = serde_json::to_vec(&json!({ "events": [event_for(source, n)] })).unwrap();
    let padding = padding.slice(..BODY_BYTES - json.len());
    Chunks::new(vec![Bytes::from(json), padding])
}

type Sender = hyper::client::conn::http2::SendRequest<Chunks>;

async fn h2_connection(edge: &TestEdge, identity: &Identity) -> Sender {
    let tls = tls_connector(&edge.ca_pem, Some(identity), &[b"h2"])
        .connect(
            ServerName::try_from("localhost").unwrap(),
            TcpStream::connect(edge.addr).await.unwrap(),
        )
        .await
        .expect("handshake with the agent's certificate");
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("HTTP/2");
    tokio::spawn(connection);
    sender
}

/// Sends `body` and returns the status, `Retry-After` and JSON answer.
async fn send(mut sender: Sender, body: Chunks) -> (u16, Option<String>, serde_json::Value) {
    let request = hyper::Request::post("https://localhost/v1/events")
        .header("content-type", "application/json")
        .header("tributary-protocol", "1")
        .body(body)
        .unwrap();
    sender.ready().await.unwrap();
    let response = sender.send_request(request).await.expect("an answer");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|value| value.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    (status, retry_after, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenants_concurrent_large_bodies_stay_within_the_body_budget() {
    let edge = TestEdge::start_with(EdgeConfig {
        connections: ConnectionLimits {
            anonymous_request_timeout: Duration::from_secs(4),
            ..ConnectionLimits::default()
        },
        body_budget: BodyBudget {
            total_bytes: 2 * TENANT_BUDGET,
            tenant_bytes: TENANT_BUDGET,
            ..BodyBudget::default()
        },
        ..EdgeConfig::default()
    })
    .await;
    let agent = edge.agent("Acme").await;
    let other = edge.agent("Globex").await;
    let padding = Bytes::from(vec![b' '; BODY_BYTES]);
    let mut senders = Vec::new();
    for _ in 0..CONNECTIONS {
        senders.push(h2_connection(&edge, &agent.identity).await);
    }
    // Warm up every connection, the bus and the allocator's arenas with one large batch each,
    // one at a time, before the baseline.
    for (n, sender) in senders.iter().enumerate() {
        let (status, _, answer) = send(
            sender.clone(),
            padded_batch(agent.source, 1000 + n as u32, &padding),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
    }
    let sampler = PeakSampler::start();

    let started = Instant::now();
    let mut flood = tokio::task::JoinSet::new();
    let total = CONNECTIONS * STREAMS_PER_CONNECTION;
    for n in 0..total {
        let sender = senders[n % CONNECTIONS].clone();
        let body = padded_batch(agent.source, n as u32, &padding);
        flood.spawn(async move { (n, send(sender, body).await) });
    }
    // Another tenant's batch during the flood: its share of the budget is its own.
    let other_connection = h2_connection(&edge, &other.identity).await;
    let other_answer = send(other_connection, padded_batch(other.source, 1, &padding)).await;
    let mut refused = Vec::new();
    let mut accepted = 0;
    while let Some(outcome) = flood.join_next().await {
        let (n, (status, retry_after, answer)) = outcome.unwrap();
        match status {
            200 => {
                assert_eq!(answer["accepted"], 1, "{answer}");
                accepted += 1;
            }
            503 => {
                assert_eq!(answer["error"]["code"], "temporarily_unavailable");
                assert_eq!(retry_after.as_deref(), Some("1"), "503 without Retry-After");
                refused.push(n);
            }
            other => panic!("unexpected answer {other}: {answer}"),
        }
    }
    let flood_time = started.elapsed();
    let (baseline, growth) = sampler.stop().await;
    eprintln!(
        "{total} concurrent bodies of {} MiB ({} MiB unbounded) from one certificate over \
         {CONNECTIONS} HTTP/2 connections: {accepted} acked, {} refused with 503 in {flood_time:?}; \
         resident memory grew {} MiB over a baseline of {} MiB (bound {} MiB)",
        BODY_BYTES / MIB,
        total * BODY_BYTES / MIB,
        refused.len(),
        growth / MIB,
        baseline / MIB,
        (TENANT_BUDGET + MARGIN) / MIB,
    );
    assert_eq!(other_answer.0, 200, "the other tenant: {}", other_answer.2);
    assert!(accepted > 0, "nothing was accepted");
    assert!(
        growth < TENANT_BUDGET + MARGIN,
        "resident memory grew {} MiB under the flood; the bound is the tenant's {} MiB share \
         plus {} MiB",
        growth / MIB,
        TENANT_BUDGET / MIB,
        MARGIN / MIB
    );

    // What was refused is taken when sent again after the given delay: nothing is lost.
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Some(n) = refused.pop() {
        assert!(
            Instant::now() < deadline,
            "refused batches still refused after 60 s"
        );
        let body = padded_batch(agent.source, n as u32, &padding);
        match send(senders[0].clone(), body).await {
            (200, _, answer) => assert_eq!(answer["accepted"], 1, "{answer}"),
            (503, _, _) => {
                refused.push(n);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            (status, _, answer) => panic!("unexpected answer {status}: {answer}"),
        }
    }
    let published = edge.published().await;
    let acked: std::collections::HashSet<_> = published
        .iter()
        .filter(|(tenant, _, _)| *tenant == agent.tenant)
        .map(|(_, id, _)| *id)
        .collect();
    assert_eq!(
        acked.len(),
        total + CONNECTIONS,
        "every batch (and the warm-up ones) on the bus"
    );

    anonymous_slow_bodies_stay_within_their_buffers(&edge).await;
}

/// A request body that sends `first` and then never ends.
struct NeverEnds(Option<Bytes>, u64);

impl hyper::body::Body for NeverEnds {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.0.take() {
            Some(first) => Poll::Ready(Some(Ok(Frame::data(first)))),
            None => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.1)
    }
}

const ANONYMOUS_CONNECTIONS: usize = 200;
/// More than the edge allows a connection without a certificate (8): the rest wait their turn
/// in the client.
const ANONYMOUS_STREAMS: usize = 16;
const PAIRING_BODY: usize = 64 * 1024;
/// Allowance above the share of the body budget that clients without a certificate have, for
/// what their connections cost besides: TLS and HTTP/2 state on both sides, and the 64 KiB each
/// may buffer unread.
const ANONYMOUS_MARGIN: usize = 96 * MIB;

/// Without a certificate: many HTTP/2 connections, each with many pairing requests that declare
/// a 64 KiB body, send all of it but one byte and stall. Each is answered (503 when the budget's
/// anonymous share is taken, 408 at the anonymous request deadline) and memory stays within that
/// share plus what the connections may buffer.
async fn anonymous_slow_bodies_stay_within_their_buffers(edge: &TestEdge) {
    let padding = Bytes::from(vec![b' '; PAIRING_BODY]);
    let connector = tls_connector(&edge.ca_pem, None, &[b"h2"]);
    let mut senders = Vec::new();
    for _ in 0..ANONYMOUS_CONNECTIONS {
        let tls = connector
            .connect(
                ServerName::try_from("localhost").unwrap(),
                TcpStream::connect(edge.addr).await.unwrap(),
            )
            .await
            .expect("handshake without a certificate");
        let (sender, connection) = hyper::client::conn::http2::handshake::<_, _, NeverEnds>(
            TokioExecutor::new(),
            TokioIo::new(tls),
        )
        .await
        .expect("HTTP/2");
        tokio::spawn(connection);
        senders.push(sender);
    }
    let sampler = PeakSampler::start();
    let started = Instant::now();
    let mut flood = tokio::task::JoinSet::new();
    for sender in &senders {
        for _ in 0..ANONYMOUS_STREAMS {
            let mut sender = sender.clone();
            let body = NeverEnds(Some(padding.slice(..PAIRING_BODY - 1)), PAIRING_BODY as u64);
            flood.spawn(async move {
                let request = hyper::Request::post("https://localhost/v1/pair")
                    .header("content-type", "application/json")
                    .header("tributary-protocol", "1")
                    .body(body)
                    .unwrap();
                sender.ready().await.ok()?;
                let response = sender.send_request(request).await.ok()?;
                Some((
                    response.status().as_u16(),
                    response.headers().contains_key("retry-after"),
                ))
            });
        }
    }
    let (mut timed_out, mut refused, mut reset) = (0, 0, 0);
    let within = Duration::from_secs(120);
    while let Some(outcome) = tokio::time::timeout(within, flood.join_next())
        .await
        .expect("every stalled pairing request ends within 120 s")
    {
        match outcome.unwrap() {
            Some((408, _)) => timed_out += 1,
            Some((503, true)) => refused += 1,
            // The edge closes the connection after a 408: streams queued behind it end so.
            None => reset += 1,
            Some((status, retry_after)) => {
                panic!("unexpected answer {status} (retry-after: {retry_after})")
            }
        }
    }
    let (baseline, growth) = sampler.stop().await;
    let total = ANONYMOUS_CONNECTIONS * ANONYMOUS_STREAMS;
    eprintln!(
        "{total} stalled pairing requests of 64 KiB over {ANONYMOUS_CONNECTIONS} HTTP/2 \
         connections without a certificate: {timed_out} timed out (408), {refused} refused \
         (503), {reset} ended with their connection, in {:?}; resident memory grew {} MiB over \
         {} MiB (bound {} MiB)",
        started.elapsed(),
        growth / MIB,
        baseline / MIB,
        (TENANT_BUDGET + ANONYMOUS_MARGIN) / MIB,
    );
    assert!(timed_out > 0, "no stalled pairing request was timed out");
    assert!(
        growth < TENANT_BUDGET + ANONYMOUS_MARGIN,
        "resident memory grew {} MiB under stalled anonymous bodies; the bound is their {} MiB \
         share plus {} MiB",
        growth / MIB,
        TENANT_BUDGET / MIB,
        ANONYMOUS_MARGIN / MIB
    );
}
