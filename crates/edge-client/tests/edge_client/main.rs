//! The client against a stand-in edge: pairing and what it pins, how answers are classified,
//! keep-alive, reconnecting after the edge went away, and timeouts. (Against the real edge and
//! the real binary: crates/tributary/tests/tributary/faults.rs.)

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use domain::{SourceId, TenantId};
use edge_client::{
    ClientOptions, Credentials, EdgeClient, Encoding, PairError, SendError, ServerTrust, Stage,
};

use crate::support::{
    Handler, Received, Reply, StandIn, TestCa, accept_all, batch, certificate_response,
};

const ANY_PORT: &str = "127.0.0.1:0";

/// A stand-in edge that pairs (issuing from `ca`, returning `returned_ca_pem`), answers whoami
/// and accepts every batch.
fn pairing_edge(ca: Arc<TestCa>, returned_ca_pem: String, ids: (TenantId, SourceId)) -> Handler {
    Arc::new(move |received: &Received| match received.path.as_str() {
        "/v1/pair" => certificate_response(&ca, &returned_ca_pem, received, ids.0, ids.1),
        "/v1/whoami" if received.client_certificate => Reply::json(
            200,
            serde_json::json!({ "tenant_id": ids.0, "source_id": ids.1, "protocol_versions": [1] }),
        ),
        "/v1/events" if received.client_certificate => accept_all(received),
        "/v1/renew" if received.client_certificate => {
            let request: protocol::RenewRequest = serde_json::from_slice(&received.body).unwrap();
            Reply::json(
                200,
                serde_json::to_value(protocol::CertificateResponse {
                    tenant_id: ids.0,
                    source_id: ids.1,
                    certificate_pem: ca.sign_client(&request.csr_pem),
                    ca_certificate_pem: returned_ca_pem.clone(),
                    not_after: time::OffsetDateTime::now_utc() + time::Duration::days(7),
                })
                .unwrap(),
            )
        }
        _ => Reply::error(401, "client_certificate_required", "no certificate"),
    })
}

async fn paired(stand_in: &StandIn, ca: &TestCa) -> Credentials {
    edge_client::pair(&stand_in.url(), ServerTrust::Ca(&ca.pem), "token")
        .await
        .unwrap()
}

#[tokio::test]
async fn pairing_on_first_use_pins_the_ca_that_issued_the_edges_certificate() {
    let ca = Arc::new(TestCa::new("platform CA"));
    let ids = (TenantId::new_random(), SourceId::new_random());
    let stand_in = StandIn::start(
        &ca,
        ANY_PORT.parse().unwrap(),
        pairing_edge(ca.clone(), ca.pem.clone(), ids),
    )
    .await;

    let credentials = edge_client::pair(&stand_in.url(), ServerTrust::TrustOnFirstUse, "token")
        .await
        .unwrap();
    assert_eq!((credentials.tenant_id, credentials.source_id), ids);
    assert_eq!(credentials.ca_pem, ca.pem);
    assert!(credentials.key_pem.contains("PRIVATE KEY"));

    let client = EdgeClient::new(&stand_in.url(), &credentials).unwrap();
    let whoami = client.whoami().await.unwrap();
    assert_eq!((whoami.tenant_id, whoami.source_id), ids);
    assert_eq!(whoami.protocol_versions, [1]);

    // Renewal: a new key and certificate for the same source, which work on their own.
    let renewed = client.renew().await.unwrap();
    assert_eq!((renewed.tenant_id, renewed.source_id), ids);
    assert_ne!(renewed.key_pem, credentials.key_pem);
    assert_ne!(renewed.certificate_pem, credentials.certificate_pem);
    let whoami = edge_client::whoami(&stand_in.url(), &renewed)
        .await
        .unwrap();
    assert_eq!(whoami.source_id, ids.1);
    let again = edge_client::renew(&stand_in.url(), &renewed).await.unwrap();
    assert_ne!(again.key_pem, renewed.key_pem);
}

#[tokio::test]
async fn pairing_refuses_a_returned_ca_that_did_not_issue_the_edges_certificate() {
    let ca = Arc::new(TestCa::new("platform CA"));
    let impostor = TestCa::new("someone else's CA");
    let ids = (TenantId::new_random(), SourceId::new_random());
    let stand_in = StandIn::start(
        &ca,
        ANY_PORT.parse().unwrap(),
        pairing_edge(ca.clone(), impostor.pem.clone(), ids),
    )
    .await;
    let error = edge_client::pair(&stand_in.url(), ServerTrust::TrustOnFirstUse, "token")
        .await
        .unwrap_err();
    assert!(matches!(error, PairError::CaMismatch(_)), "{error:?}");
    assert!(!error.is_retryable());

    // With the operator's CA, an edge whose certificate another CA issued is refused before
    // the token is sent.
    let error = edge_client::pair(&stand_in.url(), ServerTrust::Ca(&impostor.pem), "token")
        .await
        .unwrap_err();
    assert!(
        matches!(error, PairError::Request(SendError::Certificate(_))),
        "{error:?}"
    );
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn refused_tokens_and_answers_are_classified_for_the_retry_logic() {
    let ca = Arc::new(TestCa::new("platform CA"));
    let ids = (TenantId::new_random(), SourceId::new_random());
    let pairing = pairing_edge(ca.clone(), ca.pem.clone(), ids);
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let handler: Handler = Arc::new(move |received: &Received| {
        if received.path != "/v1/events" {
            return pairing(received);
        }
        assert_eq!(received.method, "POST");
        assert_eq!(received.headers["tributary-protocol"], "1");
        assert_eq!(received.headers["content-type"], "application/json");
        match counter.fetch_add(1, Ordering::SeqCst) {
            0 => {
                let mut reply = Reply::error(429, "rate_limited", "slow down");
                reply.headers.push(("retry-after", "2".into()));
                reply
            }
            1 => Reply::error(503, "temporarily_unavailable", "retry later"),
            2 => Reply::error(
                400,
                "invalid_json",
                "the body is not a JSON object with an `events` array",
            ),
            3 => Reply {
                status: 502,
                headers: vec![],
                body: "<html>bad gateway</html>".into(),
                delay: Duration::ZERO,
            },
            4 => {
                // Every event rejected: 422 with the per-event reasons.
                let batch: protocol::EventBatch = serde_json::from_slice(&received.body).unwrap();
                let results = batch
                    .events
                    .iter()
                    .enumerate()
                    .map(|(index, event)| {
                        protocol::EventResult::rejected(
                            index as u32,
                            Some(event.event_id),
                            protocol::ReasonCode::PolicyDropsKey,
                            "a key column would be dropped",
                        )
                    })
                    .collect();
                Reply::json(
                    422,
                    serde_json::to_value(protocol::BatchResponse::from_results(results)).unwrap(),
                )
            }
            _ => accept_all(received),
        }
    });
    let stand_in = StandIn::start(&ca, ANY_PORT.parse().unwrap(), handler).await;
    let credentials = paired(&stand_in, &ca).await;
    let client = EdgeClient::new(&stand_in.url(), &credentials).unwrap();
    let events = batch(ids.1, 3);

    let limited = client.send(&events, Encoding::Identity).await.unwrap_err();
    assert!(limited.is_retryable());
    assert_eq!(limited.status(), Some(429));
    assert_eq!(limited.code(), Some("rate_limited"));
    assert_eq!(limited.retry_after(), Some(Duration::from_secs(2)));

    let unavailable = client.send(&events, Encoding::Identity).await.unwrap_err();
    assert!(unavailable.is_retryable());
    assert_eq!(unavailable.code(), Some("temporarily_unavailable"));

    let refused = client.send(&events, Encoding::Identity).await.unwrap_err();
    assert!(!refused.is_retryable());
    let SendError::Status(status) = &refused else {
        panic!("{refused:?}")
    };
    assert_eq!(
        (status.status, status.code.as_str(), status.message.as_str()),
        (
            400,
            "invalid_json",
            "the body is not a JSON object with an `events` array"
        )
    );

    let gateway = client.send(&events, Encoding::Identity).await.unwrap_err();
    assert!(gateway.is_retryable(), "{gateway:?}");
    assert_eq!((gateway.status(), gateway.code()), (Some(502), None));

    let all_rejected = client.send(&events, Encoding::Identity).await.unwrap();
    assert_eq!((all_rejected.accepted, all_rejected.rejected), (0, 3));

    for encoding in [Encoding::Identity, Encoding::Gzip, Encoding::Zstd] {
        let accepted = client.send(&events, encoding).await.unwrap();
        assert_eq!(accepted.accepted, 3);
    }
    assert_eq!(
        stand_in.accepted.load(Ordering::SeqCst),
        2,
        "one connection for pairing, then one kept alive for every batch"
    );

    // A token the edge refuses is not worth retrying.
    let refusing: Handler =
        Arc::new(|_: &Received| Reply::error(401, "pairing_refused", "token used"));
    let refuser = StandIn::start(&ca, ANY_PORT.parse().unwrap(), refusing).await;
    let error = edge_client::pair(&refuser.url(), ServerTrust::Ca(&ca.pem), "token")
        .await
        .unwrap_err();
    assert!(!error.is_retryable(), "{error:?}");
}

#[tokio::test]
async fn a_restarted_edge_is_reached_again_on_the_first_attempt() {
    let ca = Arc::new(TestCa::new("platform CA"));
    let ids = (TenantId::new_random(), SourceId::new_random());
    let handler = pairing_edge(ca.clone(), ca.pem.clone(), ids);
    let stand_in = StandIn::start(&ca, ANY_PORT.parse().unwrap(), handler.clone()).await;
    let addr: SocketAddr = stand_in.addr;
    let credentials = paired(&stand_in, &ca).await;
    let client = EdgeClient::new(&stand_in.url(), &credentials).unwrap();
    let events = batch(ids.1, 10);
    client.send(&events, Encoding::Zstd).await.unwrap();

    // The edge goes away with the client's kept-alive connection, and comes back.
    stand_in.stop().await;
    let stand_in = StandIn::start(&ca, addr, handler.clone()).await;
    let response = client.send(&events, Encoding::Zstd).await.unwrap();
    assert_eq!(
        response.accepted, 10,
        "the dead connection cost no failed attempt"
    );

    // While it is down, the failure is retryable, and the next attempt after it is back works.
    stand_in.stop().await;
    let error = client.send(&events, Encoding::Zstd).await.unwrap_err();
    assert!(
        matches!(error, SendError::Connect(_)) && error.is_retryable(),
        "{error:?}"
    );
    let _stand_in = StandIn::start(&ca, addr, handler).await;
    client.send(&events, Encoding::Zstd).await.unwrap();
}

#[tokio::test]
async fn a_silent_edge_runs_into_bounded_timeouts() {
    let ca = Arc::new(TestCa::new("platform CA"));
    let ids = (TenantId::new_random(), SourceId::new_random());
    let pairing = pairing_edge(ca.clone(), ca.pem.clone(), ids);
    let handler: Handler = Arc::new(move |received: &Received| {
        let mut reply = pairing(received);
        if received.path == "/v1/events" {
            reply.delay = Duration::from_secs(5);
        }
        reply
    });
    let stand_in = StandIn::start(&ca, ANY_PORT.parse().unwrap(), handler).await;
    let credentials = paired(&stand_in, &ca).await;
    let options = ClientOptions {
        connect_timeout: Duration::from_millis(500),
        handshake_timeout: Duration::from_millis(300),
        request_timeout: Duration::from_millis(300),
        max_idle_connections: 2,
    };
    let client = EdgeClient::with_options(&stand_in.url(), &credentials, options.clone()).unwrap();
    let error = client
        .send(&batch(ids.1, 1), Encoding::Identity)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            SendError::Timeout {
                stage: Stage::Request,
                ..
            }
        ) && error.is_retryable(),
        "{error:?}"
    );

    // A server that accepts TCP connections and never speaks TLS.
    let mute = tokio::net::TcpListener::bind(ANY_PORT).await.unwrap();
    let mute_addr = mute.local_addr().unwrap();
    let _held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((tcp, _)) = mute.accept().await {
            open.push(tcp);
        }
    });
    let client =
        EdgeClient::with_options(&format!("https://{mute_addr}"), &credentials, options).unwrap();
    let started = std::time::Instant::now();
    let error = client.whoami().await.unwrap_err();
    assert!(
        matches!(
            error,
            SendError::Timeout {
                stage: Stage::Handshake,
                ..
            }
        ) && error.is_retryable(),
        "{error:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_for_good() {
    let ca = Arc::new(TestCa::new("platform CA"));
    let other = Arc::new(TestCa::new("another platform"));
    let ids = (TenantId::new_random(), SourceId::new_random());
    // Paired with the other platform, pointed at this one (whose certificate the other CA
    // did not issue either): the handshake fails, and retrying will not help.
    let other_edge = StandIn::start(
        &other,
        ANY_PORT.parse().unwrap(),
        pairing_edge(other.clone(), other.pem.clone(), ids),
    )
    .await;
    let mut credentials = paired(&other_edge, &other).await;
    let this_edge = StandIn::start(
        &ca,
        ANY_PORT.parse().unwrap(),
        pairing_edge(ca.clone(), ca.pem.clone(), ids),
    )
    .await;
    let client = EdgeClient::new(&this_edge.url(), &credentials).unwrap();
    let error = client.whoami().await.unwrap_err();
    assert!(
        matches!(error, SendError::Certificate(_)) && !error.is_retryable(),
        "{error:?}"
    );

    // Trusting this edge's CA but presenting the other CA's client certificate: the edge
    // refuses the certificate.
    credentials.ca_pem = ca.pem.clone();
    let client = EdgeClient::new(&this_edge.url(), &credentials).unwrap();
    let error = client.whoami().await.unwrap_err();
    assert!(
        matches!(error, SendError::Certificate(_)) && !error.is_retryable(),
        "{error:?}"
    );
}
