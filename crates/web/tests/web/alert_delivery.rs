//! Alert notifications delivered to real receivers started by the tests: a webhook receiver
//! that verifies the signature and fails twice before it takes the notification (retried with
//! backoff, the channel showing its last error, then its delivery), an SMTP server that receives
//! the mail, and webhook targets on internal addresses refused by the outbound client's guard
//! without a connection being made.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use secrecy::SecretString;
use store::alerts::ChannelKind;
use test_support::TestDatabase;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use uuid::Uuid;
use web::alerting::Deliverer;
use web::outbound::{Outbound, OutboundPolicy};

use crate::TEST_MASTER_SECRET;
use crate::api::{owner, tenant};
use crate::mail::SmtpSink;

fn master() -> SecretString {
    SecretString::from(TEST_MASTER_SECRET.to_owned())
}

/// One request as the receiver read it: its headers (lower-case names) and body.
#[derive(Debug, Clone)]
struct Hook {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Hook {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// An HTTP/1.1 receiver on a free loopback port: answers the first `failures` requests 500, the
/// rest 204, and keeps every request. Counts connections, whatever they send.
struct Receiver {
    port: u16,
    hooks: Arc<std::sync::Mutex<Vec<Hook>>>,
    connections: Arc<AtomicUsize>,
}

impl Receiver {
    async fn start(failures: usize) -> Self {
        Self::start_answering(failures, "HTTP/1.1 204 No Content\r\n\r\n").await
    }

    /// Answers the first `failures` requests 500, the rest with `answer`.
    async fn start_answering(failures: usize, answer: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hooks = Arc::new(std::sync::Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (kept, counted) = (hooks.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let kept = kept.clone();
                tokio::spawn(async move {
                    let Some(hook) = read_request(&mut stream).await else {
                        return;
                    };
                    let seen = {
                        let mut hooks = kept.lock().unwrap();
                        hooks.push(hook);
                        hooks.len()
                    };
                    let answer = if seen <= failures {
                        "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n"
                    } else {
                        answer
                    };
                    let _ = stream.write_all(answer.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Self {
            port,
            hooks,
            connections,
        }
    }

    fn hooks(&self) -> Vec<Hook> {
        self.hooks.lock().unwrap().clone()
    }
}

async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<Hook> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
        let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
        let headers: Vec<(String, String)> = head
            .lines()
            .skip(1)
            .filter_map(|line| line.split_once(": "))
            .map(|(name, value)| (name.to_ascii_lowercase(), value.to_owned()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(name, _)| name == "content-length")
            .and_then(|(_, value)| value.parse().ok())
            .unwrap_or(0);
        while buffer.len() < end + 4 + length {
            let read = stream.read(&mut chunk).await.ok()?;
            if read == 0 {
                return None;
            }
            buffer.extend_from_slice(&chunk[..read]);
        }
        return Some(Hook {
            headers,
            body: buffer[end + 4..end + 4 + length].to_vec(),
        });
    }
}

/// A channel of a new workspace, and a test notice queued to it.
async fn channel_with_notice(
    database: &store::Database,
    kind: ChannelKind,
    target: &str,
) -> (Uuid, Option<String>) {
    let acme = tenant(database, &format!("Acme {}", Uuid::new_v4().simple())).await;
    let mut tx = owner(database, acme).await;
    let created = store::alerts::create_channel(
        &mut tx,
        &web::alerting::channel_secrets(&master()),
        "Receiver",
        kind,
        target,
    )
    .await
    .unwrap();
    store::alerts::send_test(&mut tx, created.id).await.unwrap();
    tx.commit().await.unwrap();
    (created.id, created.secret)
}

/// The channel's last error and last delivery, as its managers see them.
async fn channel_state(
    admin: &mut sqlx::PgConnection,
    channel: Uuid,
) -> (Option<String>, Option<OffsetDateTime>) {
    sqlx::query_as(
        "select last_error, last_delivered_at from control.alert_channels where channel_id = $1",
    )
    .bind(channel)
    .fetch_one(admin)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_webhook_receives_a_signed_notification_after_failing_twice() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let mut admin = test_database.admin().await;
    let receiver = Receiver::start(2).await;
    let (channel, secret) = channel_with_notice(
        &database,
        ChannelKind::Webhook,
        &format!("http://127.0.0.1:{}/tributary", receiver.port),
    )
    .await;
    let secret = secret.expect("a webhook's secret, shown once");
    assert!(secret.starts_with("whsec_"));
    // Loopback over plain http: the development setting, as a receiver on this machine needs.
    let deliverer = Deliverer::new(
        store::service::alerts::outbox(database.service.clone()),
        Outbound::new(OutboundPolicy::development()),
        None,
        &master(),
    );
    let start = OffsetDateTime::now_utc();
    assert_eq!(deliverer.deliver_round(start).await.unwrap(), 1);
    let (error, delivered) = channel_state(&mut admin, channel).await;
    assert_eq!(error.as_deref(), Some("HTTP 500"));
    assert!(delivered.is_none());
    // Not due again before its backoff (30 s).
    assert_eq!(
        deliverer
            .deliver_round(start + time::Duration::seconds(10))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        deliverer
            .deliver_round(start + time::Duration::seconds(31))
            .await
            .unwrap(),
        1
    );
    // The second backoff doubles to 60 s.
    assert_eq!(
        deliverer
            .deliver_round(start + time::Duration::seconds(60))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        deliverer
            .deliver_round(start + time::Duration::seconds(92))
            .await
            .unwrap(),
        1
    );
    let (_, delivered) = channel_state(&mut admin, channel).await;
    assert!(delivered.is_some(), "the third attempt was taken");
    let (attempts, delivered_at): (i32, Option<OffsetDateTime>) = sqlx::query_as(
        "select attempts, delivered_at from pipeline.alert_outbox where channel_id = $1",
    )
    .bind(channel)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(attempts, 3);
    assert!(delivered_at.is_some());
    assert_eq!(
        deliverer
            .deliver_round(start + time::Duration::seconds(600))
            .await
            .unwrap(),
        0,
        "delivered once, never again"
    );

    // Each attempt carried the same notification id and a valid, fresh signature.
    let hooks = receiver.hooks();
    assert_eq!(hooks.len(), 3);
    let id = hooks[0]
        .header("tributary-notification-id")
        .unwrap()
        .to_owned();
    for hook in &hooks {
        assert_eq!(hook.header("tributary-notification-id"), Some(id.as_str()));
        assert_eq!(hook.header("content-type"), Some("application/json"));
        let timestamp: i64 = hook.header("tributary-timestamp").unwrap().parse().unwrap();
        assert!((timestamp - start.unix_timestamp()).abs() < 300);
        assert_eq!(
            hook.header("tributary-signature"),
            Some(web::alerting::sign(secret.as_bytes(), timestamp, &hook.body).as_str()),
            "the receiver's own HMAC of timestamp.body under the channel's secret"
        );
        let body: serde_json::Value = serde_json::from_slice(&hook.body).unwrap();
        assert_eq!(body["notice"], "test");
        assert_eq!(body["id"], id);
    }
    // A different secret gives a different signature: the receiver can tell.
    let forged = web::alerting::sign(b"whsec_guess", 1, &hooks[0].body);
    assert_ne!(
        hooks[0].header("tributary-signature"),
        Some(forged.as_str())
    );
}

/// This machine's host name, checked to resolve to internal addresses only (the case it stands
/// for in the SSRF list: a name, not an address, that leads inside).
async fn machine_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("the kernel's host name")
        .trim()
        .to_owned();
    let addresses: Vec<std::net::SocketAddr> = tokio::net::lookup_host((name.as_str(), 443))
        .await
        .unwrap_or_else(|error| panic!("this machine's name {name} does not resolve: {error}"))
        .collect();
    assert!(
        !addresses.is_empty()
            && addresses
                .iter()
                .all(|address| web::outbound::is_internal(address.ip())),
        "this machine's name {name} must resolve to internal addresses only: {addresses:?}"
    );
    name
}

#[tokio::test]
async fn webhooks_to_internal_addresses_are_refused_without_a_connection() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let mut admin = test_database.admin().await;
    let receiver = Receiver::start(0).await;
    let port = receiver.port;
    // The production guard: https to public addresses only.
    let deliverer = Deliverer::new(
        store::service::alerts::outbox(database.service.clone()),
        Outbound::new(OutboundPolicy::production()),
        None,
        &master(),
    );
    for target in [
        format!("http://127.0.0.1:{port}/"),
        format!("https://127.0.0.1:{port}/"),
        format!("https://localhost:{port}/"),
        format!("https://2130706433:{port}/"),
        format!("https://0x7f000001:{port}/"),
        format!("https://0177.0.0.1:{port}/"),
        format!("https://[::1]:{port}/"),
        format!("https://[::ffff:127.0.0.1]:{port}/"),
        format!("https://[64:ff9b::7f00:1]:{port}/"),
        format!("https://[2002:7f00:1::]:{port}/"),
        "https://10.0.0.1/".to_owned(),
        "https://169.254.169.254/latest/meta-data/".to_owned(),
        "https://100.64.0.1/".to_owned(),
        "https://[fd00::1]/".to_owned(),
        // A DNS name (not one that says loopback) whose addresses are internal: this machine's
        // own name, which its resolver maps to a local address.
        format!("https://{}:{port}/", machine_name().await),
    ] {
        let (channel, _) = channel_with_notice(&database, ChannelKind::Webhook, &target).await;
        assert_eq!(
            deliverer
                .deliver_round(OffsetDateTime::now_utc())
                .await
                .unwrap(),
            1
        );
        let (error, delivered) = channel_state(&mut admin, channel).await;
        let error = error.unwrap_or_default();
        assert!(
            error.contains("not allowed"),
            "{target}: refused by the guard, not by the network: {error}"
        );
        assert!(delivered.is_none(), "{target}");
    }
    assert_eq!(
        receiver.connections.load(Ordering::SeqCst),
        0,
        "nothing connected to the loopback receiver"
    );
}

/// A receiver that redirects to the cloud metadata service: the redirect is not followed (a
/// webhook is never bounced to an address the guard would refuse), and the channel says why.
#[tokio::test]
async fn a_redirect_from_a_webhook_is_not_followed() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let mut admin = test_database.admin().await;
    let receiver = Receiver::start_answering(
        0,
        "HTTP/1.1 302 Found\r\nlocation: http://169.254.169.254/latest/meta-data/\r\n\
         content-length: 0\r\n\r\n",
    )
    .await;
    let (channel, _) = channel_with_notice(
        &database,
        ChannelKind::Webhook,
        &format!("http://127.0.0.1:{}/moved", receiver.port),
    )
    .await;
    let deliverer = Deliverer::new(
        store::service::alerts::outbox(database.service.clone()),
        Outbound::new(OutboundPolicy::development()),
        None,
        &master(),
    );
    assert_eq!(
        deliverer
            .deliver_round(OffsetDateTime::now_utc())
            .await
            .unwrap(),
        1
    );
    let (error, delivered) = channel_state(&mut admin, channel).await;
    assert_eq!(
        error.as_deref(),
        Some("HTTP 302 (redirects are not followed)")
    );
    assert!(delivered.is_none());
    assert_eq!(receiver.hooks().len(), 1, "one request, no hop after it");
}

#[tokio::test]
async fn an_email_channel_sends_through_the_mail_server() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let mut admin = test_database.admin().await;
    let sink = SmtpSink::start().await;
    let mailer = web::mail::Mailer::new(crate::mail::settings(&sink, "http://127.0.0.1:9"))
        .expect("mail settings");
    let (channel, secret) =
        channel_with_notice(&database, ChannelKind::Email, "ops@acme.example").await;
    assert!(secret.is_none(), "only webhooks are signed");
    let deliverer = Deliverer::new(
        store::service::alerts::outbox(database.service.clone()),
        Outbound::new(OutboundPolicy::production()),
        Some(Arc::new(mailer)),
        &master(),
    );
    assert_eq!(
        deliverer
            .deliver_round(OffsetDateTime::now_utc())
            .await
            .unwrap(),
        1
    );
    let message = sink.message(1).await;
    assert_eq!(message.to, ["<ops@acme.example>"]);
    assert!(
        message.data.contains("A test notice from Tributary"),
        "{}",
        message.data
    );
    assert!(message.data.contains("/app/alerts"), "{}", message.data);
    let (error, delivered) = channel_state(&mut admin, channel).await;
    assert!(error.is_none());
    assert!(delivered.is_some());
}

/// A workspace with three hours of readings of 4 devices, a report of them in `format`,
/// scheduled hourly (saved with an API token, so its runs read in the token's owner role) to a
/// new channel of `kind`, and made due by an hour of downtime; returns the workspace, the
/// channel, its secret, and how many rows the due occurrence exports.
async fn scheduled_report(
    database: &store::Database,
    admin: &mut sqlx::PgConnection,
    format: store::reports::Format,
    kind: ChannelKind,
    target: &str,
) -> (domain::TenantId, Uuid, Option<String>, i64) {
    let acme = tenant(database, &format!("Acme {}", Uuid::new_v4().simple())).await;
    let occurrence = OffsetDateTime::now_utc()
        .replace_minute(0)
        .unwrap()
        .replace_second(0)
        .unwrap()
        .replace_nanosecond(0)
        .unwrap();
    let rows: i64 = sqlx::query_scalar(
        "with written as ( \
             insert into analytics.metrics_min (tenant_id, entity_kind, entity_id, metric_key, \
                 minute, value_sum, value_count, value_min, value_max, last_value, \
                 last_pos_lsn, last_pos_seq) \
             select $1, 'device', 'dev-' || d, 'power_kw', $2 - m * interval '1 minute', \
                 d * 10 + m, 1, d, d + m, m, m, 0 \
             from generate_series(1, 4) d, generate_series(0, 179) m returning minute) \
         select count(*) from written where minute >= $2 - interval '24 hours' and minute < $2",
    )
    .bind(acme.as_uuid())
    .bind(occurrence)
    .fetch_one(&mut *admin)
    .await
    .unwrap();
    let mut tx = store::TenantTx::begin(
        &database.app,
        store::Scope::ApiToken {
            tenant: acme,
            token: Uuid::new_v4(),
            role: domain::Role::Owner,
            holder: None,
        },
    )
    .await
    .unwrap();
    let channel = store::alerts::create_channel(
        &mut tx,
        &web::alerting::channel_secrets(&master()),
        "Finance",
        kind,
        target,
    )
    .await
    .unwrap();
    let mut input = store::reports::ReportInput::new(
        "Power, hourly",
        store::reports::Dataset::MetricsMinute,
        format,
    );
    input.filters.key = Some("power_kw".into());
    let report = store::reports::create_report(&mut tx, &input)
        .await
        .unwrap();
    let schedule = store::reports::create_schedule(
        &mut tx,
        report,
        domain::Role::Owner,
        &store::reports::ScheduleInput {
            cron: "0 * * * *".into(),
            time_zone: "UTC".into(),
            channels: vec![channel.id],
            enabled: true,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    sqlx::query(
        "update control.report_schedules set since = now() - interval '1 hour', \
             next_run_at = now() - interval '1 hour' where schedule_id = $1",
    )
    .bind(schedule.id)
    .execute(admin)
    .await
    .unwrap();
    (acme, channel.id, channel.secret, rows)
}

/// Runs the due occurrence: the scheduler asks for it, the runner writes it; returns the run
/// and its file.
async fn run_occurrence(database: &store::Database, runner: &::reports::Runner) -> (Uuid, Vec<u8>) {
    let round = runner.schedule(OffsetDateTime::now_utc()).await.unwrap();
    let run = round
        .iter()
        .find_map(|done| done.run)
        .expect("an occurrence was due");
    let finished = runner.run_next().await.unwrap().unwrap();
    assert_eq!((finished.run, finished.failure), (run, None));
    let mut tx = store::TenantTx::begin(
        &database.app,
        store::Scope::Job {
            tenant: finished.tenant,
            job: "test",
        },
    )
    .await
    .unwrap();
    let key = store::reports::get_run(&mut tx, run)
        .await
        .unwrap()
        .object_key
        .unwrap();
    tx.commit().await.unwrap();
    let (_, stream) = runner.exports().open(&key).await.unwrap();
    let chunks: Vec<bytes::Bytes> = futures_util::TryStreamExt::try_collect(stream)
        .await
        .unwrap();
    (run, chunks.concat())
}

/// The attachment of a received mail, decoded from base64: its headers and content.
fn attachment(data: &str) -> Option<(String, Vec<u8>)> {
    use base64::Engine;
    let start = data.find("Content-Disposition: attachment")?;
    let part = &data[start..];
    let body_at = part.find("\n\n")?;
    let headers = part[..body_at].to_owned();
    let body = &part[body_at + 2..];
    let end = body.find("\n--").unwrap_or(body.len());
    let encoded: String = body[..end].split_whitespace().collect();
    Some((
        headers,
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?,
    ))
}

#[tokio::test]
async fn a_scheduled_report_is_mailed_with_its_file_attached_or_linked_when_too_large() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let mut admin = test_database.admin().await;
    let sink = SmtpSink::start().await;
    let mailer = Arc::new(
        web::mail::Mailer::new(crate::mail::settings(&sink, "https://tributary.example"))
            .expect("mail settings"),
    );
    let directory = tempfile::tempdir().unwrap();
    let exports = ::reports::ExportStore::local(directory.path()).unwrap();
    let runner = ::reports::Runner::new(database.clone(), exports.clone());
    let deliverer = Deliverer::new(
        store::service::alerts::outbox(database.service.clone()),
        Outbound::new(OutboundPolicy::production()),
        Some(mailer.clone()),
        &master(),
    )
    .with_reports(exports.clone(), Some("https://tributary.example".into()));

    // Parquet (binary, so base64 in the mail), small: attached, byte for byte.
    let (_, channel, _, rows) = scheduled_report(
        &database,
        &mut admin,
        store::reports::Format::Parquet,
        ChannelKind::Email,
        "finance@acme.example",
    )
    .await;
    let (run, file) = run_occurrence(&database, &runner).await;
    assert!(!file.is_empty());
    assert_eq!(
        deliverer
            .deliver_round(OffsetDateTime::now_utc())
            .await
            .unwrap(),
        1
    );
    let message = sink.message(1).await;
    assert_eq!(message.to, ["<finance@acme.example>"]);
    assert!(
        message.data.contains("Subject: Report =?utf-8?"),
        "{}",
        message.data
    );
    assert!(
        message.data.contains(&format!(" is ready: {rows} rows,")),
        "{}",
        message.data
    );
    let (headers, content) = attachment(&message.data).expect("a file attached");
    assert!(
        headers.contains(&format!(
            "Power--hourly-{}.parquet",
            OffsetDateTime::now_utc().date()
        )),
        "{headers}"
    );
    assert!(
        message
            .data
            .contains("Content-Type: application/vnd.apache.parquet"),
        "{}",
        message.data
    );
    assert_eq!(content, file, "the attachment is the run's file");
    let (error, delivered) = channel_state(&mut admin, channel).await;
    assert_eq!(error, None);
    assert!(delivered.is_some());
    let (delivered_run,): (Option<Uuid>,) = sqlx::query_as(
        "select run_id from pipeline.alert_outbox where channel_id = $1 and delivered_at is not null",
    )
    .bind(channel)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(delivered_run, Some(run));

    // Larger than a mail carries: the link, which asks the reader to sign in, instead.
    let small = deliverer.clone().with_attachment_limit(16);
    scheduled_report(
        &database,
        &mut admin,
        store::reports::Format::Csv,
        ChannelKind::Email,
        "board@acme.example",
    )
    .await;
    let (run, _) = run_occurrence(&database, &runner).await;
    assert_eq!(
        small
            .deliver_round(OffsetDateTime::now_utc())
            .await
            .unwrap(),
        1
    );
    let message = sink.message(2).await;
    assert_eq!(message.to, ["<board@acme.example>"]);
    assert!(attachment(&message.data).is_none(), "{}", message.data);
    let text = message.data.replace("=\n", "");
    assert!(
        text.contains(&format!(
            "https://tributary.example/api/v1/report-runs/{run}/download"
        )),
        "{text}"
    );
}

#[tokio::test]
async fn a_scheduled_reports_webhook_is_signed_and_carries_its_download_link() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let mut admin = test_database.admin().await;
    let receiver = Receiver::start(0).await;
    let directory = tempfile::tempdir().unwrap();
    let exports = ::reports::ExportStore::local(directory.path()).unwrap();
    let runner = ::reports::Runner::new(database.clone(), exports.clone());
    let (_, channel, secret, rows) = scheduled_report(
        &database,
        &mut admin,
        store::reports::Format::Jsonl,
        ChannelKind::Webhook,
        &format!("http://127.0.0.1:{}/reports", receiver.port),
    )
    .await;
    let secret = secret.expect("a webhook's secret");
    let (run, file) = run_occurrence(&database, &runner).await;
    let deliverer = Deliverer::new(
        store::service::alerts::outbox(database.service.clone()),
        Outbound::new(OutboundPolicy::development()),
        None,
        &master(),
    )
    .with_reports(exports, Some("https://tributary.example/".into()));
    let start = OffsetDateTime::now_utc();
    assert_eq!(deliverer.deliver_round(start).await.unwrap(), 1);
    let hooks = receiver.hooks();
    assert_eq!(hooks.len(), 1);
    let hook = &hooks[0];
    let timestamp: i64 = hook.header("tributary-timestamp").unwrap().parse().unwrap();
    assert!((timestamp - start.unix_timestamp()).abs() < 300);
    assert_eq!(
        hook.header("tributary-signature"),
        Some(web::alerting::sign(secret.as_bytes(), timestamp, &hook.body).as_str()),
        "the receiver's own HMAC of timestamp.body under the channel's secret"
    );
    let body: serde_json::Value = serde_json::from_slice(&hook.body).unwrap();
    assert_eq!(body["kind"], "report");
    assert_eq!(body["status"], "succeeded");
    assert_eq!(body["run"], run.to_string());
    assert_eq!(body["format"], "jsonl");
    assert_eq!(body["bytes"], file.len() as u64);
    assert_eq!(body["rows"], rows);
    assert_eq!(
        file.iter().filter(|byte| **byte == b'\n').count() as i64,
        rows
    );
    assert_eq!(
        body["download_url"],
        format!("https://tributary.example/api/v1/report-runs/{run}/download")
    );
    assert_eq!(
        hook.header("tributary-notification-id"),
        body["id"].as_str()
    );
    let (error, delivered) = channel_state(&mut admin, channel).await;
    assert_eq!(error, None);
    assert!(delivered.is_some());
}
