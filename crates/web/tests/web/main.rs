//! The HTTP surface against a real database: health, the headers every response carries, the
//! public site, sign-up and sign-in, the app's route × role × tenant matrix, and the JSON API as
//! every role of two tenants.

mod alert_delivery;
mod alerts;
mod api;
mod app_matrix;
mod auth;
mod browser;
mod chromium;
mod connectors;
mod dashboards;
mod dead_letters;
mod dns;
mod drift;
mod explore;
mod layers;
mod live;
mod mail;
mod mappings;
mod masking;
mod ops;
mod proxy;
mod reports;
mod site;
mod sources;
mod sso;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The platform master secret of the test servers (SSO client secrets are sealed under it).
pub const TEST_MASTER_SECRET: &str = "web tests master secret";

/// The token the test app serves `/metrics` behind on its listener.
pub const METRICS_TOKEN: &str = "metrics-token-of-the-web-tests";

pub async fn serve(database: store::Database) -> (String, tokio::sync::oneshot::Sender<()>) {
    serve_with_mail(database, None).await
}

/// The app with `mail` as its mailer (`None`: links go to the log). Its outbound client runs
/// with the development setting on, explicitly: the tests' OpenID provider listens on loopback
/// over plain http.
pub async fn serve_with_mail(
    database: store::Database,
    mail: Option<std::sync::Arc<web::mail::Mailer>>,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    serve_with(database, mail, web::outbound::OutboundPolicy::development()).await
}

/// The app with `mail` and the outbound client's `policy`.
pub async fn serve_with(
    database: store::Database,
    mail: Option<std::sync::Arc<web::mail::Mailer>>,
    policy: web::outbound::OutboundPolicy,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    serve_state(state(database, mail, policy)).await
}

/// The state the test servers run with: `mail`, the outbound client's `policy`, the tests' DNS
/// server, and no trusted proxy.
pub fn state(
    database: store::Database,
    mail: Option<std::sync::Arc<web::mail::Mailer>>,
    policy: web::outbound::OutboundPolicy,
) -> web::AppState {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        metrics::counter!("tributary_edge_events_total", "status" => "accepted").increment(3);
    });
    web::AppState {
        database: database.app.clone(),
        metrics: Some(
            web::metrics::TokenMetrics::new(handle, &secrecy::SecretString::from(METRICS_TOKEN))
                .unwrap(),
        ),
        min_cohort: 3,
        sso: web::sso::Sso::new(
            &secrecy::SecretString::from(TEST_MASTER_SECRET.to_owned()),
            web::outbound::Outbound::new(policy),
            Some(dns::server().addr),
        ),
        mail,
        live: web::LiveStreams::default(),
        alert_secrets: web::alerting::channel_secrets(&secrecy::SecretString::from(
            TEST_MASTER_SECRET.to_owned(),
        )),
        trusted_proxies: web::client_addr::TrustedProxies::none(),
        exports: exports(),
        agents: web::agent_setup::AgentEndpoint {
            edge_url: "https://edge.example.test:8443".to_owned(),
            ca_pem:
                "-----BEGIN CERTIFICATE-----\nnot a real certificate\n-----END CERTIFICATE-----\n"
                    .to_owned(),
        },
    }
}

/// The export store of every server a test starts: one directory for the test process.
pub fn exports() -> ::reports::ExportStore {
    static DIRECTORY: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let directory = DIRECTORY.get_or_init(|| tempfile::tempdir().unwrap());
    ::reports::ExportStore::local(directory.path()).unwrap()
}

/// Serves `state` on a free loopback port: its address, and what stops it.
pub async fn serve_state(state: web::AppState) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(web::serve(listener, state, async move {
        let _ = stop_rx.await;
    }));
    (addr, stop_tx)
}

async fn get(addr: &str, path: &str) -> (u16, Vec<(String, String)>, String) {
    request(addr, "GET", path, None, "").await
}

/// One HTTP/1.1 request on its own connection: (status, headers, body).
pub async fn request(
    addr: &str,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let authorization = bearer
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{authorization}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|line| line.split_once(": "))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

#[tokio::test]
async fn healthz_reports_the_database_and_every_response_carries_security_headers() {
    let test_database = test_support::TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;

    let (status, headers, body) = get(&addr, "/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(body, r#"{"status":"ok","database":"ok"}"#);
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
    ] {
        assert!(
            headers
                .iter()
                .any(|(header, given)| header == name && given == value),
            "{name}: {value} missing from {headers:?}"
        );
    }
    assert!(
        headers
            .iter()
            .any(|(name, value)| name == "content-security-policy"
                && value.contains("frame-ancestors 'none'"))
    );

    // Metrics on the app's listener: to the metrics token only.
    for bearer in [None, Some("metrics-token-of-the-web-test"), Some("")] {
        let (status, headers, body) = request(&addr, "GET", "/metrics", bearer, "").await;
        assert_eq!(status, 401, "{bearer:?}");
        assert!(headers.contains(&("www-authenticate".into(), "Bearer".into())));
        assert!(!body.contains("tributary_"), "{body}");
    }
    let (status, headers, body) = request(&addr, "GET", "/metrics", Some(METRICS_TOKEN), "").await;
    assert_eq!(status, 200);
    assert!(
        headers
            .iter()
            .any(|(name, value)| name == "content-type" && value.starts_with("text/plain"))
    );
    assert!(
        body.contains("tributary_edge_events_total{status=\"accepted\"} 3"),
        "{body}"
    );

    // Unknown routes get the headers too.
    let (status, headers, _) = get(&addr, "/no-such-page").await;
    assert_eq!(status, 404);
    assert!(
        headers
            .iter()
            .any(|(name, _)| name == "x-content-type-options")
    );

    // With the database gone, health says so without saying why.
    database.close().await;
    let (status, _, body) = get(&addr, "/healthz").await;
    assert_eq!(status, 503);
    assert_eq!(body, r#"{"status":"unavailable","database":"unavailable"}"#);
}
