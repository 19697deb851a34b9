//! A source's health as the edge records it and the app shows it: heartbeats recorded through
//! the store's own function (as the edge does) with a growing retained WAL, then the list, the
//! source's page with its slot-safety panel, and the JSON API, tenant A against tenant B.

use domain::{Role, SourceId, TenantId};
use serde_json::Value;
use store::{Actor, TenantTx};
use test_support::TestDatabase;
use time::{Duration, OffsetDateTime};

use crate::auth::{member, signed_in};
use crate::{request, serve};

const MIB: i64 = 1 << 20;

/// A heartbeat of `source` received at `at`, its slot retaining `retained` bytes of WAL of
/// 1000 MiB allowed, in `wal_status`.
async fn heartbeat(
    database: &store::Database,
    tenant: TenantId,
    source: SourceId,
    at: OffsetDateTime,
    retained: i64,
    wal_status: &str,
) {
    let mut tx = TenantTx::begin_service(&database.service, Some(tenant), Actor::Agent(source))
        .await
        .unwrap();
    let report = store::sources::AgentReport {
        agent_version: "9.8.7".into(),
        source_kind: "postgres".into(),
        state: "streaming".into(),
        lag_bytes: Some(8192),
        lag_seconds: Some(1.5),
        caught_up: true,
        slot: Some(serde_json::json!({
            "name": "tributary_slot",
            "wal_status": wal_status,
            "retained_bytes": retained,
            "safe_wal_bytes": 1000 * MIB - retained,
            "max_keep_bytes": 1000 * MIB,
        })),
        warnings: vec!["the publication misses public.audit_log".into()],
        ..Default::default()
    };
    store::sources::record_agent_status_at(&mut tx, source, &report, Some(at))
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

async fn postgres_source(database: &store::Database, tenant: TenantId, name: &str) -> SourceId {
    let mut tx = crate::api::owner(database, tenant).await;
    let (source, _) = store::sources::create_source(&mut tx, name, "postgres")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    source.source_id
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|error| panic!("{error}: {body}"))
}

#[tokio::test]
async fn a_growing_slot_shows_its_history_status_and_forecast_on_the_page_and_in_the_api() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let a = crate::api::tenant(&database, "Acme").await;
    let b = crate::api::tenant(&database, "Globex").await;
    let growing = postgres_source(&database, a, "acme-orders-db").await;
    let lost = postgres_source(&database, a, "acme-lost-db").await;
    let b_source = postgres_source(&database, b, "globex-secret-db").await;
    let now = OffsetDateTime::now_utc();

    // A sample eight days old, then six heartbeats within one minute two hours ago: one
    // sample of that minute, and the old one pruned by the first of them.
    heartbeat(
        &database,
        a,
        growing,
        now - Duration::days(8),
        10 * MIB,
        "reserved",
    )
    .await;
    let minute = now - Duration::hours(2);
    let minute = minute - Duration::seconds(i64::from(minute.second()));
    let minute = minute - Duration::nanoseconds(i64::from(minute.nanosecond()));
    for second in [0, 10, 20, 30, 40, 50] {
        let at = minute + Duration::seconds(second);
        heartbeat(&database, a, growing, at, 150 * MIB + second, "reserved").await;
    }
    // The last hour: 100 MiB/h, every ten minutes, from 200 MiB fifty minutes ago.
    for step in 0..=5 {
        let ago = 50 - step * 10;
        let retained = 200 * MIB + 100 * MIB * (step * 10) / 60;
        heartbeat(
            &database,
            a,
            growing,
            now - Duration::minutes(ago),
            retained,
            "reserved",
        )
        .await;
    }
    // Another source's slot was invalidated; tenant B's source reports too.
    heartbeat(&database, a, lost, now, 2000 * MIB, "lost").await;
    heartbeat(&database, b, b_source, now, 900 * MIB, "unreserved").await;

    // Its agent's certificate (as the edge records it on pairing), a mapped table, and three
    // events: two this minute and one ten minutes ago.
    let mut tx = TenantTx::begin_service(&database.service, Some(a), Actor::System("test"))
        .await
        .unwrap();
    let certificate = store::sources::IssuedCertificate {
        source: growing,
        serial: "0abc12".into(),
        fingerprint_sha256: [7; 32],
        not_before: now - Duration::days(1),
        not_after: now + Duration::days(30) - Duration::minutes(5),
    };
    store::sources::record_certificate(&mut tx, &certificate, "source.pair")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = crate::api::owner(&database, a).await;
    let mapping = store::read_models::MappingRow {
        source_id: *growing.as_uuid(),
        source_table: "public.orders".into(),
        entity_kind: "device".into(),
        id_column: Some("order_id".into()),
        columns: std::collections::BTreeMap::new(),
        reading_entity_kind: None,
    };
    store::read_models::put_mapping(&mut tx, &mapping)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    for (lsn, minutes_ago) in [(100, 10), (200, 0), (300, 0)] {
        crate::masking::bronze_change(
            &database,
            a,
            growing,
            ("public", "orders"),
            ("insert", lsn, minutes_ago),
            serde_json::json!({ "order_id": lsn }),
        )
        .await;
    }

    let mut admin = test_database.admin().await;
    let counts: (i64, i64, i64) = sqlx::query_as(
        "select count(*) filter (where sampled_minute = $2), \
                count(*) filter (where sampled_at < now() - interval '7 days'), count(*) \
         from control.source_status_history where source_id = $1",
    )
    .bind(growing.as_uuid())
    .bind(minute)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(
        counts,
        (1, 0, 7),
        "one sample for the minute of six heartbeats, none beyond 7 days, 7 in all"
    );
    let first_of_minute: i64 = sqlx::query_scalar(
        "select retained_wal_bytes from control.source_status_history \
         where source_id = $1 and sampled_minute = $2",
    )
    .bind(growing.as_uuid())
    .bind(minute)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(
        first_of_minute,
        150 * MIB,
        "the minute keeps its first heartbeat"
    );
    drop(admin);

    // The list: each source's status in words, its agent version and lag, linked to its page.
    member(&database, a, "operator@acme.example.com", Role::Operator).await;
    let mut browser = signed_in(&addr, "operator@acme.example.com").await;
    let list = browser.get("/app/data-sources").await;
    assert_eq!(list.status, 200);
    for shown in [
        r#"<tr data-source-status="connected">"#,
        r#"<tr data-source-status="slot_invalidated">"#,
        ">Connected<",
        ">Slot invalidated<",
        "9.8.7",
        "1.5 s · 8.0 KiB",
        &format!(
            r#"<a href="/app/data-sources/{growing}"><span class="ref" title="source id {growing}">acme-orders-db</span></a>"#
        ),
        r#"class="sparkline""#,
        "3 events in the last hour, at most ",
    ] {
        assert!(list.body.contains(shown), "the list lacks {shown}");
    }
    assert!(!list.body.contains("globex"), "tenant B on A's list");

    // The source's page: the history charted, the slot's fields, the forecast in words.
    let page = browser.get(&format!("/app/data-sources/{growing}")).await;
    assert_eq!(page.status, 200);
    for shown in [
        "<h1>acme-orders-db</h1>",
        r#"data-status="connected""#,
        r#"<figure class="retained-chart" data-samples="7">"#,
        "Retained WAL over time",
        r#"<dd class="wal-status">reserved</dd>"#,
        r#"<dd class="max-keep">1000.0 MiB</dd>"#,
        r#"<dd class="retained">283.3 MiB</dd>"#,
        r#"data-forecast="invalidation""#,
        "at the current growth of 100.0 MiB/h the slot would be invalidated in about 7.2 h",
        "the publication misses public.audit_log",
        "<td><code>public.orders</code></td><td>device</td>",
        "Serial <code>0abc12</code>",
        "expires in 29 days",
    ] {
        assert!(page.body.contains(shown), "the page lacks {shown}");
    }
    assert!(
        !page
            .body
            .contains(r#"<dd class="last-event">none yet</dd>"#)
    );
    let lost_page = browser.get(&format!("/app/data-sources/{lost}")).await;
    assert!(
        lost_page
            .body
            .contains(r#"<dd class="last-event">none yet</dd>"#)
    );
    assert!(lost_page.body.contains(r#"data-status="slot_invalidated""#));
    assert!(lost_page.body.contains(r#"data-forecast="invalidated""#));
    // An operator sees the slot lost, not the resync it needs: asking for one is an admin's.
    let resync_action = format!(r#"action="/app/data-sources/{lost}/resync""#);
    assert!(!lost_page.body.contains(&resync_action));
    member(&database, a, "admin@acme.example.com", Role::Admin).await;
    let mut admin_browser = signed_in(&addr, "admin@acme.example.com").await;
    let lost_path = format!("/app/data-sources/{lost}");
    let admin_page = admin_browser.get(&lost_path).await;
    assert!(admin_page.body.contains(&resync_action));
    assert!(
        admin_page
            .body
            .contains(r#"class="button button-primary">Resync"#),
        "the invalidated slot's resync is the page's first action"
    );
    let asked = admin_browser
        .submit(&lost_path, &format!("{lost_path}/resync"), &[])
        .await;
    assert_eq!(asked.status, 303);
    let waiting = admin_browser.get(&lost_path).await;
    assert!(waiting.body.contains(r#"data-resync="waiting""#));
    assert!(!waiting.body.contains(&resync_action));

    // Tenant B's source and an id that is none: not found.
    for path in [
        format!("/app/data-sources/{b_source}"),
        "/app/data-sources/not-an-id".to_owned(),
    ] {
        let page = browser.get(&path).await;
        assert_eq!(page.status, 404, "{path}");
        assert!(!page.body.contains("globex"), "{path}");
    }

    // The API: the list's items carry the derived status; the detail its forecast; the
    // history its samples.
    let bearer = crate::api::token(&database, a, Role::Operator).await;
    let (status, _, body) = request(&addr, "GET", "/api/v1/sources", Some(&bearer), "").await;
    assert_eq!(status, 200, "{body}");
    let listed = json(&body);
    let statuses: Vec<(&str, &str)> = listed["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|source| {
            (
                source["name"].as_str().unwrap(),
                source["health"]["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("acme-lost-db", "slot_invalidated"),
            ("acme-orders-db", "connected")
        ]
    );
    let (status, _, body) = request(
        &addr,
        "GET",
        &format!("/api/v1/sources/{growing}"),
        Some(&bearer),
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let detail = json(&body);
    assert_eq!(detail["health"]["status"], "connected");
    assert_eq!(detail["slot"]["wal_status"], "reserved");
    assert_eq!(detail["forecast"]["kind"], "invalidation");
    let growth = detail["forecast"]["growth_bytes_per_hour"]
        .as_f64()
        .unwrap();
    assert!((growth - (100 * MIB) as f64).abs() < 16.0, "{growth}");
    let hours = detail["forecast"]["hours_until_invalidation"]
        .as_f64()
        .unwrap();
    assert!((hours - 7.1667).abs() < 0.001, "{hours}");

    let (status, _, body) = request(
        &addr,
        "GET",
        &format!("/api/v1/sources/{growing}/status-history"),
        Some(&bearer),
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let retained: Vec<i64> = json(&body)["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|sample| sample["retained_wal_bytes"].as_i64().unwrap())
        .collect();
    assert_eq!(retained.len(), 6, "the last hour by default: {retained:?}");
    assert!(
        retained.windows(2).all(|pair| pair[0] < pair[1]),
        "{retained:?}"
    );
    let from = (now - Duration::hours(3))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
        .replace('+', "%2B");
    let (status, _, body) = request(
        &addr,
        "GET",
        &format!("/api/v1/sources/{growing}/status-history?from={from}"),
        Some(&bearer),
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["samples"].as_array().unwrap().len(), 7);
    for (path, expected) in [
        (
            format!("/api/v1/sources/{growing}/status-history?from=yesterday"),
            400,
        ),
        (
            format!(
                "/api/v1/sources/{growing}/status-history?from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z"
            ),
            400,
        ),
        (format!("/api/v1/sources/{b_source}"), 404),
        (format!("/api/v1/sources/{b_source}/status-history"), 404),
    ] {
        let (status, _, body) = request(&addr, "GET", &path, Some(&bearer), "").await;
        assert_eq!(status, expected, "{path}: {body}");
        assert!(json(&body)["error"]["code"].is_string(), "{body}");
        assert!(!body.contains("globex"), "{body}");
    }
}
