//! Live updates by server-sent events, over real HTTP: a stream sends the page's fragment, then
//! a new one when the data changes; a role without the page's permission gets 403; another
//! tenant's data never appears; a stream ends when its session ends or its role loses the
//! permission; a session holds a bounded number of streams.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use domain::{Role, TenantId};
use serde_json::json;
use store::{Actor, TenantTx};
use test_support::TestDatabase;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::auth::{member, signed_in};
use crate::masking::bronze_event;
use crate::serve;

/// One server-sent event: its name (`message` when unnamed) and data.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SseEvent {
    pub(crate) name: String,
    pub(crate) data: String,
}

/// An open `text/event-stream` response, read as it arrives (HTTP/1.1 chunked).
pub(crate) struct EventStream {
    status: u16,
    headers: Vec<(String, String)>,
    reader: BufReader<TcpStream>,
    pending: String,
    closed: bool,
}

impl EventStream {
    pub(crate) async fn open(addr: &str, path: &str, cookies: &BTreeMap<String, String>) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut reader = BufReader::new(stream);
        let cookie: Vec<String> = cookies
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\nCookie: {}\r\n\r\n",
            cookie.join("; ")
        );
        reader
            .get_mut()
            .write_all(request.as_bytes())
            .await
            .unwrap();
        let mut status_line = String::new();
        reader.read_line(&mut status_line).await.unwrap();
        let status = status_line
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).await.unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(": ") {
                headers.push((name.to_ascii_lowercase(), value.to_owned()));
            }
        }
        Self {
            status,
            headers,
            reader,
            pending: String::new(),
            closed: false,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header == name)
            .map(|(_, value)| value.as_str())
    }

    /// Reads one chunk of the body into `pending`; false at the end of the stream.
    async fn read_chunk(&mut self) -> bool {
        let mut size_line = String::new();
        if self.reader.read_line(&mut size_line).await.unwrap_or(0) == 0 {
            return false;
        }
        let size = usize::from_str_radix(size_line.trim(), 16).unwrap_or(0);
        if size == 0 {
            return false;
        }
        let mut chunk = vec![0u8; size + 2];
        if self.reader.read_exact(&mut chunk).await.is_err() {
            return false;
        }
        self.pending
            .push_str(&String::from_utf8_lossy(&chunk[..size]));
        true
    }

    /// The next event (keep-alive comments skipped), or `None` when the stream ended; fails
    /// the test after `wait`.
    pub(crate) async fn next(&mut self, wait: Duration) -> Option<SseEvent> {
        let deadline = Instant::now() + wait;
        loop {
            while let Some(end) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..end + 2).collect();
                let mut name = "message".to_owned();
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        name = value.trim().to_owned();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push(value.strip_prefix(' ').unwrap_or(value).to_owned());
                    }
                }
                if !data.is_empty() {
                    return Some(SseEvent {
                        name,
                        data: data.join("\n"),
                    });
                }
            }
            if self.closed {
                return None;
            }
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("no event within {wait:?}; pending: {}", self.pending));
            match tokio::time::timeout(left, self.read_chunk()).await {
                Ok(true) => {}
                Ok(false) => self.closed = true,
                Err(_) => panic!("no event within {wait:?}; pending: {}", self.pending),
            }
        }
    }

    /// Waits for an event named `name` whose data contains `text`.
    async fn wait_for(&mut self, name: &str, text: &str) -> SseEvent {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("no {name} event with {text:?} within 15 s"));
            let event = self
                .next(left)
                .await
                .unwrap_or_else(|| panic!("the stream ended before a {name} event with {text:?}"));
            if event.name == name && event.data.contains(text) {
                return event;
            }
        }
    }
}

fn event(table: &str) -> serde_json::Value {
    json!({"key": {"id": 1}, "after": {"id": 1, "table": table}})
}

#[tokio::test]
async fn the_overview_stream_sends_new_counts_of_the_members_own_tenant_only() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let a = crate::api::tenant(&database, "Acme").await;
    let b = crate::api::tenant(&database, "Globex").await;
    member(&database, a, "owner@acme.example.com", Role::Owner).await;
    bronze_event(&database, a, ("public", "chargers"), 5, event("a")).await;
    for minutes in 1..=5 {
        bronze_event(
            &database,
            b,
            ("globex", "secret_table"),
            minutes,
            event("b"),
        )
        .await;
    }
    let browser = signed_in(&addr, "owner@acme.example.com").await;

    let mut page_browser = browser.clone();
    let overview = page_browser.get("/app/overview").await;
    assert!(
        overview
            .body
            .contains(r#"sse-connect="/app/overview/stream""#)
    );
    assert!(
        overview
            .body
            .contains(r#"<dd id="events-last-hour">1</dd>"#)
    );

    let mut stream = EventStream::open(&addr, "/app/overview/stream", &browser.cookies).await;
    assert_eq!(stream.status, 200);
    assert_eq!(stream.header("content-type"), Some("text/event-stream"));
    let first = stream
        .wait_for("activity", r#"id="events-last-hour">1<"#)
        .await;
    assert!(first.data.contains("public.chargers"));

    bronze_event(&database, a, ("public", "sessions"), 0, event("a")).await;
    bronze_event(&database, a, ("public", "sessions"), 0, event("a")).await;
    bronze_event(&database, b, ("globex", "secret_table"), 0, event("b")).await;
    let updated = stream
        .wait_for("activity", r#"id="events-last-hour">3<"#)
        .await;
    assert!(
        updated.data.contains(r#"id="events-last-day">3<"#),
        "{}",
        updated.data
    );
    assert!(updated.data.contains("public.sessions"));
    assert!(
        !updated.data.contains("globex") && !updated.data.contains("secret_table"),
        "tenant B's events leaked: {}",
        updated.data
    );
}

/// A viewer's dashboard stream draws a reading that lands after the page opened, and never
/// another workspace's.
#[tokio::test]
async fn a_dashboard_stream_appends_new_readings_of_the_members_own_tenant_only() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let a = crate::api::tenant(&database, "Acme").await;
    let b = crate::api::tenant(&database, "Globex").await;
    let mut admin = test_database.admin().await;
    for (tenant, prefix) in [(a, "acme"), (b, "globex")] {
        let source = crate::api::source(&database, tenant).await;
        crate::api::read_models(&mut admin, tenant, source, prefix).await;
    }
    member(&database, a, "viewer@acme.example.com", Role::Viewer).await;
    let viewer = signed_in(&addr, "viewer@acme.example.com").await;

    let path = "/app/dashboards/default/live?range=1h";
    assert!(
        viewer
            .clone()
            .get("/app/overview")
            .await
            .body
            .contains(&format!(r#"sse-connect="{path}""#))
    );
    let mut stream = EventStream::open(&addr, path, &viewer.cookies).await;
    assert_eq!(stream.status, 200);
    assert_eq!(stream.header("content-type"), Some("text/event-stream"));
    let first = stream.wait_for("dashboard", r#"data-points="1""#).await;
    assert!(!first.data.contains(r#"data-points="2""#));

    // A reading twenty minutes back, in another five-minute bucket: a second point.
    crate::api::late_reading(&mut admin, a).await;
    let appended = stream.wait_for("dashboard", r#"data-points="2""#).await;
    assert!(
        !appended.data.contains("globex"),
        "tenant B's keys leaked: {}",
        appended.data
    );

    // Another workspace's dashboard id is not found, as a status and not as a stream.
    let unknown = EventStream::open(
        &addr,
        &format!("/app/dashboards/{}/live", uuid::Uuid::new_v4()),
        &viewer.cookies,
    )
    .await;
    assert_eq!(unknown.status, 404);
}

async fn report(
    database: &store::Database,
    tenant: TenantId,
    source: domain::SourceId,
    state: &str,
) {
    let mut tx = TenantTx::begin_service(&database.service, Some(tenant), Actor::System("test"))
        .await
        .unwrap();
    let report = store::sources::AgentReport {
        agent_version: "test".into(),
        source_kind: "simulator".into(),
        state: state.into(),
        lag_bytes: Some(4096),
        lag_seconds: Some(2.5),
        spool_bytes: 3 * 1024 * 1024,
        send_bytes_per_second: Some(1024.0 * 1024.0),
        drain_seconds: Some(3.0),
        not_captured: vec!["public.pgbench_history".into()],
        ..Default::default()
    };
    store::sources::record_agent_status(&mut tx, source, &report)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

async fn source(database: &store::Database, tenant: TenantId, name: &str) -> domain::SourceId {
    let mut tx = crate::api::owner(database, tenant).await;
    let (source, _) = store::sources::create_source(&mut tx, name, "simulator")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    source.source_id
}

#[tokio::test]
async fn agent_status_streams_live_and_a_stream_ends_with_its_session_or_permission() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let a = crate::api::tenant(&database, "Acme").await;
    let b = crate::api::tenant(&database, "Globex").await;
    let a_source = source(&database, a, "acme-chargers").await;
    let b_source = source(&database, b, "globex-secret-db").await;
    report(&database, b, b_source, "globex-state").await;
    let operator = member(&database, a, "operator@acme.example.com", Role::Operator).await;
    member(&database, a, "viewer@acme.example.com", Role::Viewer).await;

    // Signed out: sent to sign in. A viewer has neither page's permission: 403, no stream.
    let anonymous = EventStream::open(&addr, "/app/data-sources/stream", &BTreeMap::new()).await;
    assert_eq!(anonymous.status, 303);
    let viewer = signed_in(&addr, "viewer@acme.example.com").await;
    for path in ["/app/overview/stream", "/app/data-sources/stream"] {
        let refused = EventStream::open(&addr, path, &viewer.cookies).await;
        assert_eq!(refused.status, 403, "{path}");
        assert_ne!(refused.header("content-type"), Some("text/event-stream"));
    }
    let overview = viewer.clone().get("/app/overview").await;
    assert!(
        !overview.body.contains("/app/overview/stream"),
        "no live event activity for a viewer"
    );

    let mut browser = signed_in(&addr, "operator@acme.example.com").await;
    let page = browser.get("/app/data-sources").await;
    assert!(
        page.body
            .contains(r#"sse-connect="/app/data-sources/stream""#)
    );
    assert!(page.body.contains("never reported"));
    let mut stream = EventStream::open(&addr, "/app/data-sources/stream", &browser.cookies).await;
    assert_eq!(stream.status, 200);
    let first = stream.wait_for("sources", "acme-chargers").await;
    assert!(first.data.contains("never reported"));
    assert!(!first.data.contains("globex"), "{}", first.data);

    report(&database, a, a_source, "streaming").await;
    let live = stream.wait_for("sources", "streaming").await;
    assert!(live.data.contains("2.5 s · 4.0 KiB"), "{}", live.data);
    assert!(
        live.data
            .contains("3.0 MiB waiting · sent at 1.0 MiB/s · drained in 3 s"),
        "{}",
        live.data
    );
    assert!(
        live.data.contains(
            "Updates and deletes of public.pgbench_history are not captured (no replica identity): \
             ALTER TABLE public.pgbench_history REPLICA IDENTITY FULL, or add a primary key"
        ),
        "{}",
        live.data
    );
    assert!(!live.data.contains("globex"), "{}", live.data);

    // At most eight streams per session.
    let mut extra = Vec::new();
    for _ in 0..7 {
        let other = EventStream::open(&addr, "/app/data-sources/stream", &browser.cookies).await;
        assert_eq!(other.status, 200);
        extra.push(other);
    }
    let over = EventStream::open(&addr, "/app/data-sources/stream", &browser.cookies).await;
    assert_eq!(over.status, 429);
    // A closed one frees its place.
    drop(extra.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let again = EventStream::open(&addr, "/app/data-sources/stream", &browser.cookies).await;
        if again.status == 200 {
            extra.push(again);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a closed stream's place was not freed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    drop(extra);

    // Demoted to viewer: the open stream ends.
    let operator_email = domain::Email::parse("operator@acme.example.com").unwrap();
    store::control::set_member(
        &database.app,
        Actor::System("test"),
        a,
        &operator_email,
        Role::Viewer,
    )
    .await
    .unwrap();
    stream.wait_for("end", "ended").await;
    assert_eq!(
        stream.next(Duration::from_secs(5)).await,
        None,
        "the stream closes after its end event"
    );
    assert_eq!(
        EventStream::open(&addr, "/app/data-sources/stream", &browser.cookies)
            .await
            .status,
        403
    );

    // Signing out ends the session's streams.
    store::control::set_member(
        &database.app,
        Actor::System("test"),
        a,
        &operator_email,
        Role::Operator,
    )
    .await
    .unwrap();
    let mut stream = EventStream::open(&addr, "/app/data-sources/stream", &browser.cookies).await;
    stream.wait_for("sources", "acme-chargers").await;
    let signed_out = browser.submit("/app/overview", "/auth/sign-out", &[]).await;
    assert_eq!(signed_out.status, 303);
    stream.wait_for("end", "ended").await;
    assert_eq!(stream.next(Duration::from_secs(5)).await, None);
    let _ = operator;
}
