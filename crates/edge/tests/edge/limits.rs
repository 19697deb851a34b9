//! Exhausting the edge without a certificate: thousands of idle sockets, handshakes that never
//! finish and slow-loris clients cannot keep a paired agent out, every one of them is closed at
//! its deadline, and one address or one source cannot hold more than its share of connections.
//!
//! All traffic goes to the edge on loopback; attackers connect from other loopback addresses
//! (127.0.0.2 and up, all routed to `lo` on Linux) so that the per-address cap can be told
//! apart from the pool they fill.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use edge::EdgeConfig;
use edge::config::ConnectionLimits;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::client::{Client, tls_connector};
use crate::support::TestEdge;

/// Raises this process's open-file limit to `wanted` (or the hard limit if lower): the attacks
/// below hold thousands of sockets, twice over since the edge runs in this process too.
fn raise_fd_limit(wanted: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    let target = wanted.min(hard);
    if soft < target {
        setrlimit(Resource::RLIMIT_NOFILE, target, hard).expect("setrlimit");
    }
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    assert!(
        soft >= wanted.min(hard),
        "the open-file limit is {soft}, the test needs {wanted}"
    );
}

/// A TCP connection to `edge` from the loopback address 127.0.0.`host`.
async fn connect_from(host: u8, edge: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from((Ipv4Addr::new(127, 0, 0, host), 0)))
        .unwrap();
    socket.connect(edge).await.expect("connect to the edge")
}

/// Whether the peer has closed (or reset) `stream`, without waiting.
fn is_closed(stream: &TcpStream) -> bool {
    let mut buffer = [0u8; 64];
    match stream.try_read(&mut buffer) {
        Ok(0) => true,
        Ok(_) => false,
        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

/// The start of a TLS record that announces a 512-byte ClientHello and then one byte of it:
/// the handshake never finishes.
const PARTIAL_CLIENT_HELLO: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01];

/// A request whose headers never end.
const UNFINISHED_HEADERS: &[u8] = b"POST /v1/pair HTTP/1.1\r\nhost: localhost\r\n";

/// A pairing request whose body never ends.
const UNFINISHED_BODY: &[u8] = b"POST /v1/pair HTTP/1.1\r\nhost: localhost\r\n\
    content-type: application/json\r\ntributary-protocol: 1\r\ncontent-length: 1000\r\n\r\n{";

/// Slow-loris clients: each completes the TLS handshake without a certificate, writes `prefix`
/// and then trickles one more byte every `every`, forever. Counts the ones still open; each
/// task returns how long the edge let it stay and what the edge answered.
struct SlowLoris {
    open: Arc<AtomicUsize>,
    tasks: tokio::task::JoinSet<(Duration, Vec<u8>)>,
}

impl SlowLoris {
    async fn start(
        edge: &TestEdge,
        hosts: impl Iterator<Item = u8>,
        prefix: &'static [u8],
        every: Duration,
    ) -> Self {
        let open = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        let connector = tls_connector(&edge.ca_pem, None, &[b"http/1.1"]);
        for host in hosts {
            let tcp = connect_from(host, edge.addr).await;
            let opened = Instant::now();
            let mut tls = connector
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .expect("the slow-loris handshake");
            tls.write_all(prefix).await.unwrap();
            open.fetch_add(1, Ordering::SeqCst);
            let still_open = open.clone();
            tasks.spawn(async move {
                let mut tick = tokio::time::interval(every);
                let mut buffer = [0u8; 256];
                let mut answer = Vec::new();
                let (mut reader, mut writer) = tokio::io::split(tls);
                loop {
                    tokio::select! {
                        read = reader.read(&mut buffer) => match read {
                            Ok(0) | Err(_) => break,
                            Ok(n) => answer.extend_from_slice(&buffer[..n]),
                        },
                        _ = tick.tick() => {
                            if writer.write_all(b" ").await.is_err() || writer.flush().await.is_err() {
                                break;
                            }
                        }
                    }
                }
                still_open.fetch_sub(1, Ordering::SeqCst);
                (opened.elapsed(), answer)
            });
        }
        Self { open, tasks }
    }

    fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

/// Polls `condition` every 100 ms until it holds or `within` passes; panics with `what`.
async fn eventually(within: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(Instant::now() < deadline, "{what} (waited {within:?})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Pairs a new source and sends one batch with its certificate, returning the ingest answer.
async fn pair_and_send(edge: &TestEdge, token: &str, n: u32) -> serde_json::Value {
    let (identity, paired) = edge.pair(token).await.unwrap_or_else(|response| {
        panic!(
            "pairing failed: {} {}",
            response.status,
            String::from_utf8_lossy(&response.body)
        )
    });
    let source: domain::SourceId =
        serde_json::from_value(paired["source_id"].clone()).expect("the paired source");
    let mut client = edge
        .client(Some(&identity))
        .await
        .expect("connect with the certificate");
    let response = client
        .post_json(
            "/v1/events",
            &json!({ "events": [crate::support::event_for(source, n)] }),
        )
        .await;
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    response.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_handshaking_and_slow_clients_cannot_keep_an_agent_out() {
    raise_fd_limit(12_000);
    // Deadlines far longer than the agent is given below: it gets in because the edge makes
    // room, not because the attackers timed out.
    let limits = ConnectionLimits {
        handshake_timeout: Duration::from_secs(120),
        first_request_timeout: Duration::from_secs(120),
        max_anonymous_connections: 500,
        max_connections_per_address: 100,
        ..ConnectionLimits::default()
    };
    let pool = limits.max_anonymous_connections;
    let edge = TestEdge::start_with(EdgeConfig {
        connections: limits,
        ..EdgeConfig::default()
    })
    .await;
    let tenant = edge.tenant("Acme").await;
    let (_, token) = edge.source(tenant, "db").await;

    // 2,000 TCP connections that never send a byte, 50 from each of 40 addresses.
    let mut silent = Vec::new();
    for host in 2..42u8 {
        for _ in 0..50 {
            silent.push(connect_from(host, edge.addr).await);
        }
    }
    // 300 that start a TLS handshake and never finish it.
    let mut half_handshakes = Vec::new();
    for host in 42..48u8 {
        for _ in 0..50 {
            let mut tcp = connect_from(host, edge.addr).await;
            tcp.write_all(PARTIAL_CLIENT_HELLO).await.unwrap();
            half_handshakes.push(tcp);
        }
    }
    // 100 slow-loris clients, two per address.
    let loris = SlowLoris::start(
        &edge,
        (48..98u8).flat_map(|host| [host, host]),
        UNFINISHED_HEADERS,
        Duration::from_millis(500),
    )
    .await;

    // The agent, from 127.0.0.1: pairs, sends and is acknowledged, all well within seconds.
    let started = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(10), pair_and_send(&edge, &token, 1))
        .await
        .expect("the agent paired, sent and was acked within 10 s of the attack");
    assert_eq!(answer["accepted"], 1, "{answer}");
    eprintln!(
        "agent paired and acked in {:?} with 2,400 attacking connections",
        started.elapsed()
    );

    // The attackers hold no more than the anonymous pool: the rest were closed to make room.
    let attackers_open = |silent: &[TcpStream], half: &[TcpStream], loris: &SlowLoris| {
        silent.iter().filter(|tcp| !is_closed(tcp)).count()
            + half.iter().filter(|tcp| !is_closed(tcp)).count()
            + loris.open()
    };
    eventually(
        Duration::from_secs(20),
        "the edge holds more attacking connections than its anonymous pool",
        || attackers_open(&silent, &half_handshakes, &loris) <= pool,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_closed_at_their_handshake_first_request_and_idle_deadlines() {
    raise_fd_limit(4_000);
    let limits = ConnectionLimits {
        handshake_timeout: Duration::from_secs(2),
        first_request_timeout: Duration::from_secs(3),
        idle_timeout: Duration::from_secs(3),
        anonymous_request_timeout: Duration::from_secs(3),
        ..ConnectionLimits::default()
    };
    let edge = TestEdge::start_with(EdgeConfig {
        connections: limits,
        ..EdgeConfig::default()
    })
    .await;
    let agent = edge.agent("Acme").await;
    let opened = Instant::now();
    let every = Duration::from_millis(200);

    let mut silent = Vec::new();
    for host in 2..6u8 {
        for _ in 0..50 {
            silent.push(connect_from(host, edge.addr).await);
        }
    }
    let mut half_handshakes = Vec::new();
    for _ in 0..50 {
        let mut tcp = connect_from(6, edge.addr).await;
        tcp.write_all(PARTIAL_CLIENT_HELLO).await.unwrap();
        half_handshakes.push(tcp);
    }
    let mut loris = SlowLoris::start(&edge, 7..27u8, UNFINISHED_HEADERS, every).await;
    // Pairing requests whose bodies trickle in: busy, so never shed, but only for so long.
    let mut slow_bodies = SlowLoris::start(&edge, 28..38u8, UNFINISHED_BODY, every).await;
    // Handshakes done, no request: without and with a certificate.
    let mut quiet = Vec::new();
    for identity in [None, Some(&agent.identity)] {
        let connector = tls_connector(&edge.ca_pem, identity, &[b"h2"]);
        for _ in 0..10 {
            let tcp = connect_from(27, edge.addr).await;
            let tls = connector
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .expect("handshake");
            quiet.push(tls);
        }
    }
    // An agent's HTTP/2 connection that sends one batch and then goes quiet, and an HTTP/1.1
    // one that asks one question and goes quiet.
    let tls = tls_connector(&edge.ca_pem, Some(&agent.identity), &[b"h2"])
        .connect(
            ServerName::try_from("localhost").unwrap(),
            TcpStream::connect(edge.addr).await.unwrap(),
        )
        .await
        .unwrap();
    let (mut h2, h2_connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    let h2_open = tokio::spawn(h2_connection);
    let request = hyper::Request::post("https://localhost/v1/events")
        .header("content-type", "application/json")
        .header("tributary-protocol", "1")
        .body(Full::new(Bytes::from(
            serde_json::to_vec(&json!({ "events": [agent.event(1)] })).unwrap(),
        )))
        .unwrap();
    let response = h2.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let _ = response.into_body().collect().await;
    let h1 = Client::connect(edge.addr, &edge.ca_pem, Some(&agent.identity))
        .await
        .unwrap();
    assert_eq!(h1.whoami.as_ref().unwrap().status, 200);

    // Every deadline here is at most 3 s (from accept, or from the last answer); 20 s is the
    // margin for a loaded 2-core machine.
    let within = Duration::from_secs(20);
    eventually(within, "silent TCP connections still open", || {
        silent.iter().all(is_closed)
    })
    .await;
    eventually(within, "unfinished handshakes still open", || {
        half_handshakes.iter().all(is_closed)
    })
    .await;
    eventually(within, "slow-loris clients still open", || {
        loris.open() == 0
    })
    .await;
    for tls in &mut quiet {
        let mut buffer = [0u8; 64];
        let closed = tokio::time::timeout(within, async {
            loop {
                match tls.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "a handshaken connection without a request still open"
        );
    }
    tokio::time::timeout(within, h2_open)
        .await
        .expect("the idle HTTP/2 connection was closed")
        .unwrap()
        .expect("closed cleanly, with GOAWAY");
    eventually(within, "the idle HTTP/1.1 connection still open", || {
        h1.is_closed()
    })
    .await;
    // The slow-loris clients, writing all along, were not let stay past their deadline.
    while let Some(outcome) = loris.tasks.join_next().await {
        let (stayed, _) = outcome.unwrap();
        assert!(stayed < within, "a slow-loris client stayed {stayed:?}");
    }
    // Slow pairing bodies were answered 408 at their deadline and closed.
    while let Some(outcome) = slow_bodies.tasks.join_next().await {
        let (stayed, answer) = outcome.unwrap();
        assert!(stayed < within, "a slow pairing body stayed {stayed:?}");
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 408") && answer.contains("request_timeout"),
            "a slow pairing body was answered {answer}"
        );
    }
    eprintln!(
        "all idle, handshaking and slow connections closed within {:?}",
        opened.elapsed()
    );
    // The edge still serves.
    let mut client = edge.client(Some(&agent.identity)).await.unwrap();
    let response = client
        .post_json("/v1/events", &json!({ "events": [agent.event(2)] }))
        .await;
    assert_eq!(response.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_and_one_source_cannot_hold_more_than_their_caps() {
    let limits = ConnectionLimits {
        max_connections_per_address: 20,
        max_connections_per_source: 3,
        handshake_timeout: Duration::from_secs(120),
        first_request_timeout: Duration::from_secs(120),
        ..ConnectionLimits::default()
    };
    let edge = TestEdge::start_with(EdgeConfig {
        connections: limits,
        ..EdgeConfig::default()
    })
    .await;
    let agent = edge.agent("Acme").await;

    let mut from_one_address = Vec::new();
    for _ in 0..30 {
        from_one_address.push(connect_from(50, edge.addr).await);
    }
    // The ten past the cap are closed at once; the first twenty stay (their deadlines are
    // minutes away).
    eventually(
        Duration::from_secs(10),
        "connections past the per-address cap were not closed",
        || from_one_address[20..].iter().all(is_closed),
    )
    .await;
    assert!(
        from_one_address[..20].iter().all(|tcp| !is_closed(tcp)),
        "a connection within the per-address cap was closed"
    );
    // Other addresses are not affected.
    let other = edge
        .client(None)
        .await
        .expect("served from another address");
    assert_eq!(other.whoami.as_ref().unwrap().status, 401);

    let mut connections = Vec::new();
    for _ in 0..3 {
        connections.push(edge.client(Some(&agent.identity)).await.unwrap());
    }
    for client in &connections {
        assert_eq!(client.whoami.as_ref().unwrap().status, 200);
    }
    assert!(
        edge.client(Some(&agent.identity)).await.is_err(),
        "a fourth connection of one source was served"
    );
    // Another source of the same tenant has its own count.
    let (_, token) = edge.source(agent.tenant, "other").await;
    let answer = pair_and_send(&edge, &token, 7).await;
    assert_eq!(answer["accepted"], 1);
    // Closed connections give their places back.
    drop(connections);
    let deadline = Instant::now() + Duration::from_secs(10);
    while edge.client(Some(&agent.identity)).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the source's closed connections were not given back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A request body fed from a channel, as slowly as the test sends it.
struct Fed(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for Fed {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(context)
            .map(|chunk| chunk.map(|chunk| Ok(hyper::body::Frame::data(chunk))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_longer_than_the_idle_timeout_is_answered() {
    let limits = ConnectionLimits {
        idle_timeout: Duration::from_secs(1),
        ..ConnectionLimits::default()
    };
    let edge = TestEdge::start_with(EdgeConfig {
        connections: limits,
        ..EdgeConfig::default()
    })
    .await;
    let agent = edge.agent("Acme").await;
    let tls = tls_connector(&edge.ca_pem, Some(&agent.identity), &[b"h2"])
        .connect(
            ServerName::try_from("localhost").unwrap(),
            TcpStream::connect(edge.addr).await.unwrap(),
        )
        .await
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake::<_, _, Fed>(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    let batch = serde_json::to_vec(&json!({ "events": [agent.event(1)] })).unwrap();
    let (chunks, receiver) = tokio::sync::mpsc::channel(4);
    let request = hyper::Request::post("https://localhost/v1/events")
        .header("content-type", "application/json")
        .header("tributary-protocol", "1")
        .body(Fed(receiver))
        .unwrap();
    let response = tokio::spawn(sender.send_request(request));
    // The body arrives over three idle timeouts (well within the 30 s it may take).
    let (first, rest) = batch.split_at(batch.len() / 2);
    chunks.send(Bytes::copy_from_slice(first)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    chunks.send(Bytes::copy_from_slice(rest)).await.unwrap();
    drop(chunks);
    let response = response.await.unwrap().expect("the connection stayed open");
    assert_eq!(response.status(), 200);
}
