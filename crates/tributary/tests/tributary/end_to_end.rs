//! End to end: the demo's simulated agent streams through the edge (mTLS) and the bus into
//! bronze, the tenant materializer and the global aggregator of a running `tributary up`; once
//! the platform has caught up, the read models and the rollups agree with bronze, and a rebuild
//! from bronze reproduces the read models exactly. And an alert rule on the demo source's health
//! fires when its agent stops, and the rule's webhook receives the signed notice.

use std::time::{Duration, Instant};

use domain::TenantId;
use nix::sys::signal::Signal;

use crate::support::{
    DataDir, Platform, http_get_with, http_post_json, platform_database, start_platform_with,
    tributary,
};

fn demo_tenant(data_dir: &DataDir) -> TenantId {
    let demo: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data_dir.0.join("demo.json")).unwrap()).unwrap();
    demo["tenant_id"].as_str().unwrap().parse().unwrap()
}

#[test]
fn the_simulator_through_agent_edge_bus_and_consumers_gives_read_models_consistent_with_bronze() {
    let data_dir = DataDir::new();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let platform = Platform::start(&data_dir);
    let allowed = tributary(&data_dir, &["rollups", "allow", "power_kw"]);
    assert!(allowed.status.success(), "{allowed:?}");
    let tenant = demo_tenant(&data_dir);
    // Let the demo agent stream a while.
    let deadline = Instant::now() + Duration::from_secs(60);
    runtime.block_on(async {
        let database = platform_database(&data_dir).await;
        loop {
            let (events, _) = store::service::bronze::tenant_fingerprint(&database.service, tenant)
                .await
                .unwrap();
            if events >= 300 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "only {events} demo events reached bronze"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        database.close().await;
    });
    // The cohort streams beside the demo: once the demo and the five cohort tenants of its cell
    // have readings in one minute and the aggregator has run over it, the cell is published.
    let deadline = Instant::now() + Duration::from_secs(120);
    while published_cells(&data_dir).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the demo's cell is not published within two minutes"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    let (status, _) = platform.stop_with(Signal::SIGTERM);
    assert!(status.success());

    // Again without the demo agent: nothing new arrives, and the consumers catch up with what
    // the bus holds.
    let (platform, _) = start_platform_with(&data_dir, &["--no-demo"]);
    runtime.block_on(async {
        let database = platform_database(&data_dir).await;
        let (bronze_events, _) =
            store::service::bronze::tenant_fingerprint(&database.service, tenant)
                .await
                .unwrap();
        let readings = store::service::bench_support::bronze_distinct_keys(
            &database.service,
            tenant,
            "readings",
            "reading_id",
        )
        .await
        .unwrap();
        let devices = store::service::bench_support::bronze_distinct_keys(
            &database.service,
            tenant,
            "devices",
            "device_id",
        )
        .await
        .unwrap();
        // Purged sessions stay as tombstones (deleted_at set), one row per key either way.
        let sessions = store::service::bench_support::bronze_distinct_keys(
            &database.service,
            tenant,
            "sessions",
            "session_id",
        )
        .await
        .unwrap();
        let sites = store::service::bench_support::bronze_distinct_keys(
            &database.service,
            tenant,
            "sites",
            "site_id",
        )
        .await
        .unwrap();
        assert!(bronze_events >= 300 && readings > 0 && devices == 20 && sessions > 0);
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let checksums = store::service::read_models::checksums(&database.service, tenant)
                .await
                .unwrap();
            // The simulator reads power and voltage.
            let power =
                store::service::bench_support::metric_counts(&database.service, tenant, "power_kw")
                    .await
                    .unwrap();
            let voltage = store::service::bench_support::metric_counts(
                &database.service,
                tenant,
                "voltage_v",
            )
            .await
            .unwrap();
            // Every reading counted once per minute, and rolled up once with the cohort's
            // (the demo allowlists both keys).
            let counts = (power, voltage);
            let caught_up = power.0 + voltage.0 == readings
                && (power.2, power.3) == (power.1, power.1)
                && (voltage.2, voltage.3) == (voltage.1, voltage.1)
                && checksums["analytics.devices"].0 == devices
                && checksums["analytics.sessions"].0 == sessions
                && checksums["analytics.sites"].0 == sites;
            if caught_up {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "read models disagree with bronze ({readings} readings, {devices} devices, \
                 {sessions} sessions, {sites} sites): metrics_min/rollup_min/rollup_hr count \
                 (power, voltage) {counts:?}, tables {checksums:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // Bronze is consistent with the read models down to the content: a rebuild from bronze
        // gives the same checksums.
        let before = store::service::read_models::checksums(&database.service, tenant)
            .await
            .unwrap();
        let rebuilt = tributary(
            &data_dir,
            &["replay", "--tenant", &tenant.to_string(), "--rebuild"],
        );
        assert!(rebuilt.status.success(), "{rebuilt:?}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let after = store::service::read_models::checksums(&database.service, tenant)
                .await
                .unwrap();
            if after == before {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the rebuild changed the read models"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        database.close().await;
    });
    // The demo and the five cohort tenants of its cell were published while they streamed;
    // the cohort's tenants alone in their cells are not.
    let cells = published_cells(&data_dir);
    assert!(!cells.is_empty(), "the demo's cell is still published");
    assert!(
        cells
            .iter()
            .all(|cell| cell["tenant_count"].as_i64().unwrap() >= 5),
        "no cell of fewer than the minimum cohort: {cells:?}"
    );
    let (status, _) = platform.stop_with(Signal::SIGTERM);
    assert!(status.success());
}

/// The global console's published cells of `power_kw` (`rollups show`).
fn published_cells(data_dir: &DataDir) -> Vec<serde_json::Value> {
    let shown = tributary(data_dir, &["rollups", "show", "power_kw", "--json"]);
    assert!(shown.status.success(), "{shown:?}");
    let cells: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    cells.as_array().cloned().unwrap_or_default()
}

/// A webhook receiver on a free loopback port, answering 204 and keeping every request as
/// (headers with lower-case names, body).
type Received = std::sync::Arc<std::sync::Mutex<Vec<(Vec<(String, String)>, Vec<u8>)>>>;

fn webhook_receiver() -> (u16, Received) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received: Received = Default::default();
    let kept = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut headers = Vec::new();
            let mut line = String::new();
            let _ = reader.read_line(&mut line); // the request line
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.trim_end().split_once(": ") {
                    headers.push((name.to_ascii_lowercase(), value.to_owned()));
                }
            }
            let length: usize = headers
                .iter()
                .find(|(name, _)| name == "content-length")
                .and_then(|(_, value)| value.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0u8; length];
            let _ = reader.read_exact(&mut body);
            kept.lock().unwrap().push((headers, body));
            let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        }
    });
    (port, received)
}

/// The demo's agent reports, then stops (the platform restarts without it): a rule on
/// `source_disconnected` fires in the running `tributary up`, and its webhook receives the
/// notice, signed with the channel's secret.
#[test]
fn a_stopped_agent_fires_source_disconnected_and_the_webhook_receives_it() {
    let data_dir = DataDir::new();
    let (port, received) = webhook_receiver();
    let platform = Platform::start(&data_dir);
    let web = platform.web_addr.clone();
    let demo: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data_dir.0.join("demo.json")).unwrap()).unwrap();
    let token = demo["api_token"].as_str().unwrap().to_owned();
    // The demo agent reports.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = http_get_with(&web, "/api/v1/sources", Some(&token));
        assert_eq!(status, 200, "{body}");
        let sources: serde_json::Value = serde_json::from_str(&body).unwrap();
        if sources["sources"][0]["agent"].is_object() {
            break;
        }
        assert!(Instant::now() < deadline, "the demo agent never reported");
        std::thread::sleep(Duration::from_millis(500));
    }
    let (status, body) = http_post_json(
        &web,
        "/api/v1/alert-channels",
        &token,
        &format!(
            r#"{{"name": "on-call", "kind": "webhook", "target": "http://127.0.0.1:{port}/hook"}}"#
        ),
    );
    assert_eq!(status, 201, "{body}");
    let channel: serde_json::Value = serde_json::from_str(&body).unwrap();
    let secret = channel["secret"].as_str().unwrap().to_owned();
    let (status, body) = http_post_json(
        &web,
        "/api/v1/alert-rules",
        &token,
        &format!(
            r#"{{"kind": "pipeline", "name": "Demo agent gone", "condition": "source_disconnected",
                "threshold": 0.25, "interval_secs": 10, "severity": "critical",
                "channels": ["{}"]}}"#,
            channel["id"].as_str().unwrap()
        ),
    );
    assert_eq!(status, 201, "{body}");
    let rule: serde_json::Value = serde_json::from_str(&body).unwrap();
    let (status, _) = platform.stop_with(Signal::SIGTERM);
    assert!(status.success());

    // Without the demo agent (and allowed to reach the receiver on loopback over http).
    let (platform, _) = start_platform_with(&data_dir, &["--no-demo", "--dev-allow-loopback-http"]);
    let deadline = Instant::now() + Duration::from_secs(90);
    let (headers, body) = loop {
        if let Some(first) = received.lock().unwrap().first().cloned() {
            break first;
        }
        assert!(
            Instant::now() < deadline,
            "the webhook received nothing within 90s"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let header = |name: &str| {
        headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
            .unwrap_or_default()
    };
    let timestamp: i64 = header("tributary-timestamp").parse().unwrap();
    assert_eq!(
        header("tributary-signature"),
        web::alerting::sign(secret.as_bytes(), timestamp, &body),
        "signed with the channel's secret"
    );
    let notice: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(notice["notice"], "firing");
    assert_eq!(notice["rule"]["name"], "Demo agent gone");
    assert_eq!(notice["rule"]["severity"], "critical");
    let series = notice["alerts"][0]["series"].as_str().unwrap();
    assert!(series.starts_with("source:"), "{notice}");
    assert!(notice["alerts"][0]["value"].as_f64().unwrap() > 0.25);

    // The platform shows it firing, and the delivery on the rule's timeline.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = http_get_with(
            &platform.web_addr,
            &format!("/api/v1/alert-rules/{}", rule["id"].as_str().unwrap()),
            Some(&token),
        );
        assert_eq!(status, 200, "{body}");
        let detail: serde_json::Value = serde_json::from_str(&body).unwrap();
        let delivered = detail["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|entry| entry["kind"] == "delivered");
        if detail["rule"]["state"] == "firing" && delivered {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not firing with its delivery on the timeline: {detail}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let (status, _) = platform.stop_with(Signal::SIGTERM);
    assert!(status.success());
}
