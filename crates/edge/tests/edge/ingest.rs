//! Ingest: what is accepted, what is refused with which code, and that nothing refused is
//! published.

use std::io::Write;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;

use crate::support::TestEdge;

/// A bad request and what the edge must answer: (name, extra headers, body, status, code).
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Bytes, u16, &'a str);

fn raw_batch(events: &str) -> Bytes {
    Bytes::from(format!("{{\"events\":[{events}]}}"))
}

#[tokio::test]
async fn valid_events_are_published_and_bad_ones_refused_with_their_code() {
    let edge = TestEdge::start().await;
    let agent = edge.agent("Acme").await;
    let other = edge.agent("Globex").await;
    let mut client = edge.client(Some(&agent.identity)).await.unwrap();
    let headers = [
        ("content-type", "application/json"),
        ("tributary-protocol", "1"),
    ];

    let valid = agent.event(1).to_string();
    let with = |field: &str, value: serde_json::Value| {
        let mut event = agent.event(2);
        event[field] = value;
        event.to_string()
    };
    let unknown_op = with("op", json!("upsert"));
    let wrong_type = with("seq", json!("first"));
    let no_zone = with("event_time", json!("2026-05-28T12:00:00"));
    let no_key = with("key", json!({}));
    let nul = with("after", json!({ "id": 2, "name": "a\u{0}b" }));
    let forged_id = with("event_id", json!(uuid::Uuid::now_v7()));
    let duplicate_keys = valid.replacen(
        "\"op\":\"insert\"",
        "\"op\":\"insert\",\"op\":\"delete\"",
        1,
    );
    assert_ne!(duplicate_keys, valid);
    let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));

    let mut gzip_bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gzip_bomb.write_all(b"{\"events\":[\"").unwrap();
    for _ in 0..100 {
        gzip_bomb.write_all(&[b'a'; 1 << 20]).unwrap();
    }
    let gzip_bomb = gzip_bomb.finish().unwrap();

    let cases: Vec<Case> = vec![
        (
            "invalid UTF-8",
            vec![],
            Bytes::from(b"{\"events\":[{\"op\":\"\xff\"}]}".to_vec()),
            400,
            "invalid_utf8",
        ),
        (
            "NUL in a string",
            vec![],
            raw_batch(&nul),
            422,
            "nul_in_string",
        ),
        (
            "duplicate keys",
            vec![],
            raw_batch(&duplicate_keys),
            422,
            "duplicate_key",
        ),
        (
            "10,000-deep nesting",
            vec![],
            raw_batch(&deep),
            400,
            "nesting_too_deep",
        ),
        (
            "oversized body",
            vec![],
            Bytes::from(vec![b' '; protocol::Limits::default().max_body_bytes + 1]),
            413,
            "body_too_large",
        ),
        (
            "gzip bomb",
            vec![("content-encoding", "gzip")],
            Bytes::from(gzip_bomb),
            413,
            "decompressed_too_large",
        ),
        (
            "unknown encoding",
            vec![("content-encoding", "br")],
            raw_batch(&valid),
            415,
            "unsupported_encoding",
        ),
        (
            "unknown op",
            vec![],
            raw_batch(&unknown_op),
            422,
            "unknown_op",
        ),
        (
            "missing key columns",
            vec![],
            raw_batch(&no_key),
            422,
            "missing_key",
        ),
        (
            "wrong type",
            vec![],
            raw_batch(&wrong_type),
            422,
            "invalid_type",
        ),
        (
            "timestamp without zone",
            vec![],
            raw_batch(&no_zone),
            422,
            "invalid_timestamp",
        ),
        (
            "invented event id",
            vec![],
            raw_batch(&forged_id),
            422,
            "event_id_mismatch",
        ),
        (
            "another tenant",
            vec![],
            Bytes::from(
                json!({ "tenant_id": other.tenant, "events": [agent.event(3)] }).to_string(),
            ),
            403,
            "tenant_mismatch",
        ),
        (
            "another source",
            vec![],
            Bytes::from(
                json!({ "source_id": other.source, "events": [agent.event(3)] }).to_string(),
            ),
            403,
            "source_mismatch",
        ),
        ("empty batch", vec![], raw_batch(""), 400, "empty_batch"),
        (
            "not an object",
            vec![],
            Bytes::from_static(b"[1,2]"),
            400,
            "invalid_json",
        ),
        (
            "future protocol",
            vec![("tributary-protocol", "2")],
            raw_batch(&valid),
            400,
            "unsupported_version",
        ),
    ];
    for (name, extra, body, status, code) in cases {
        let mut request_headers: Vec<(&str, &str)> = headers.to_vec();
        for (header, value) in &extra {
            request_headers.retain(|(existing, _)| existing != header);
            request_headers.push((header, value));
        }
        let started = Instant::now();
        let response = client
            .request("POST", "/v1/events", &request_headers, body)
            .await
            .unwrap();
        assert_eq!(
            response.status,
            status,
            "{name}: {}",
            String::from_utf8_lossy(&response.body)
        );
        let found = if response.status == 422 {
            response.json()["results"][0]["code"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        } else {
            response.error_code()
        };
        assert_eq!(found, code, "{name}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{name} took {:?}",
            started.elapsed()
        );
        let text = String::from_utf8_lossy(&response.body);
        assert!(
            !text.contains("owner2@example.com"),
            "{name} echoed a customer value"
        );
    }
    assert!(
        edge.published().await.is_empty(),
        "nothing refused reaches the bus"
    );

    // The same connection, and another tenant, keep working.
    let accepted = client
        .post_json("/v1/events", &json!({ "events": [agent.event(7)] }))
        .await;
    assert_eq!(accepted.status, 200);
    let mut other_client = edge.client(Some(&other.identity)).await.unwrap();
    let accepted = other_client
        .post_json("/v1/events", &json!({ "events": [other.event(1)] }))
        .await;
    assert_eq!(accepted.status, 200);
    assert_eq!(edge.published().await.len(), 2);
}

#[tokio::test]
async fn valid_events_of_a_batch_are_kept_when_others_are_rejected() {
    let edge = TestEdge::start().await;
    let agent = edge.agent("Acme").await;
    let mut client = edge.client(Some(&agent.identity)).await.unwrap();
    let mut bad = agent.event(2);
    bad["op"] = json!("merge");
    let response = client
        .post_json(
            "/v1/events",
            &json!({ "events": [agent.event(1), bad, agent.event(3)] }),
        )
        .await;
    assert_eq!(response.status, 200);
    let body = response.json();
    let statuses: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|result| result["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["accepted", "rejected", "accepted"]);
    assert_eq!(body["results"][1]["index"], 1);
    assert_eq!(body["results"][1]["code"], "unknown_op");
    assert_eq!(
        (body["accepted"].as_u64(), body["rejected"].as_u64()),
        (Some(2), Some(1))
    );
    let published: Vec<_> = edge
        .published()
        .await
        .into_iter()
        .map(|(_, id, _)| id)
        .collect();
    assert_eq!(published.len(), 2);
}

#[tokio::test]
async fn compressed_batches_are_accepted() {
    let edge = TestEdge::start().await;
    let agent = edge.agent("Acme").await;
    let mut client = edge.client(Some(&agent.identity)).await.unwrap();
    let body = json!({ "events": [agent.event(1), agent.event(2)] }).to_string();
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(body.as_bytes()).unwrap();
    let zstd = zstd::encode_all(body.as_bytes(), 3).unwrap();
    for (encoding, bytes) in [("gzip", gzip.finish().unwrap()), ("zstd", zstd)] {
        let response = client
            .request(
                "POST",
                "/v1/events",
                &[("tributary-protocol", "1"), ("content-encoding", encoding)],
                Bytes::from(bytes),
            )
            .await
            .unwrap();
        assert_eq!(
            response.status,
            200,
            "{encoding}: {}",
            String::from_utf8_lossy(&response.body)
        );
    }
    assert_eq!(
        edge.published().await.len(),
        2,
        "the second encoding resent the same events"
    );
}

#[tokio::test]
async fn the_same_batch_sent_ten_times_or_by_two_senders_at_once_is_published_once() {
    let edge = TestEdge::start().await;
    let agent = edge.agent("Acme").await;
    let batch = json!({ "events": (0..50).map(|n| agent.event(n)).collect::<Vec<_>>() });
    let mut client = edge.client(Some(&agent.identity)).await.unwrap();
    for attempt in 0..10 {
        let response = client.post_json("/v1/events", &batch).await;
        assert_eq!(response.status, 200);
        let body = response.json();
        let expected = if attempt == 0 { (50, 0) } else { (0, 50) };
        assert_eq!(
            (
                body["accepted"].as_u64().unwrap(),
                body["duplicates"].as_u64().unwrap()
            ),
            expected,
            "attempt {attempt}"
        );
    }
    let second = json!({ "events": (100..300).map(|n| agent.event(n)).collect::<Vec<_>>() });
    let mut first_sender = edge.client(Some(&agent.identity)).await.unwrap();
    let mut second_sender = edge.client(Some(&agent.identity)).await.unwrap();
    let (a, b) = tokio::join!(
        first_sender.post_json("/v1/events", &second),
        second_sender.post_json("/v1/events", &second)
    );
    assert_eq!((a.status, b.status), (200, 200));
    let accepted = a.json()["accepted"].as_u64().unwrap() + b.json()["accepted"].as_u64().unwrap();
    assert_eq!(
        accepted, 200,
        "each event accepted by exactly one of the two senders"
    );
    let published = edge.published().await;
    let mut ids: Vec<_> = published.iter().map(|(_, id, _)| *id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!((published.len(), ids.len()), (250, 250));
}

#[tokio::test]
async fn pii_is_masked_before_it_reaches_the_bus_and_policy_changes_apply_within_seconds() {
    let edge = TestEdge::start().await;
    let agent = edge.agent("Acme").await;
    let mut tx = edge.owner_tx(agent.tenant).await;
    store::masking::create(
        &mut tx,
        &store::masking::MaskingRule::every_table("email", "hash"),
    )
    .await
    .unwrap();
    store::masking::create(
        &mut tx,
        &store::masking::MaskingRule::every_table("name", "redact"),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let mut client = edge.client(Some(&agent.identity)).await.unwrap();
    let response = client
        .post_json(
            "/v1/events",
            &json!({ "events": [agent.event(1), agent.event(2)] }),
        )
        .await;
    assert_eq!(response.status, 200);
    let published = edge.published().await;
    let text = serde_json::to_string(
        &published
            .iter()
            .map(|(_, _, payload)| payload)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    assert!(
        !text.contains("@example.com") && !text.contains("device 1"),
        "raw PII published: {text}"
    );
    let hashed = published[0].2["event"]["after"]["email"].as_str().unwrap();
    assert!(hashed.starts_with("hmac-sha256:"), "{hashed}");
    assert_eq!(published[0].2["event"]["after"]["name"], "[redacted]");

    // Dropping a key column is refused per event, and the edge picks the change up by itself.
    let mut tx = edge.owner_tx(agent.tenant).await;
    store::masking::create(
        &mut tx,
        &store::masking::MaskingRule::every_table("id", "drop"),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let response = client
            .post_json("/v1/events", &json!({ "events": [agent.event(9)] }))
            .await;
        if response.status == 422 {
            assert_eq!(response.json()["results"][0]["code"], "policy_drops_key");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the policy change did not take effect within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The published event with the given id, as the bus holds it.
async fn published_event(edge: &TestEdge, event: &serde_json::Value) -> serde_json::Value {
    let id = event["event_id"].as_str().unwrap().to_owned();
    edge.published()
        .await
        .into_iter()
        .find(|(_, published, _)| published.to_string() == id)
        .map(|(_, _, payload)| payload["event"].clone())
        .unwrap_or_else(|| panic!("event {id} was not published"))
}

#[tokio::test]
async fn table_scoped_rules_mask_only_their_table_and_an_edit_applies_within_the_cache_ttl() {
    use store::masking::MaskingRule;

    let edge = TestEdge::start().await;
    let agent = edge.agent("Acme").await;
    let mut tx = edge.owner_tx(agent.tenant).await;
    for (table, path, action) in [
        ("public.devices", "email", "hash"),
        ("orders", "name", "redact"),
    ] {
        let rule = MaskingRule {
            source_table: table.into(),
            field_path: path.into(),
            action: action.into(),
        };
        store::masking::create(&mut tx, &rule).await.unwrap();
    }
    tx.commit().await.unwrap();
    let mut client = edge.client(Some(&agent.identity)).await.unwrap();
    let first = agent.event(1);
    let response = client
        .post_json("/v1/events", &json!({ "events": [first.clone()] }))
        .await;
    assert_eq!(response.status, 200);
    let published = published_event(&edge, &first).await;
    assert!(
        published["after"]["email"]
            .as_str()
            .unwrap()
            .starts_with("hmac-sha256:"),
        "the rule for public.devices applies: {published}"
    );
    assert_eq!(
        published["after"]["name"], "device 1",
        "the rule for another table does not"
    );

    // An admin moves the `orders` rule to `devices` (any schema) and makes it a drop: the edge
    // picks the edit up by itself within its cache lifetime (200 ms here, 1 s by default).
    let mut tx = edge.owner_tx(agent.tenant).await;
    let moved = MaskingRule {
        source_table: "devices".into(),
        field_path: "name".into(),
        action: "drop".into(),
    };
    store::masking::update(&mut tx, "orders", "name", &moved)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let edited_at = Instant::now();
    let mut n = 2;
    loop {
        let event = agent.event(n);
        let response = client
            .post_json("/v1/events", &json!({ "events": [event.clone()] }))
            .await;
        assert_eq!(response.status, 200);
        let published = published_event(&edge, &event).await;
        if published["after"].get("name").is_none() {
            break;
        }
        assert_eq!(published["after"]["name"], format!("device {n}"));
        assert!(
            edited_at.elapsed() < Duration::from_secs(3),
            "the edit did not take effect within 3 s (cache lifetime 200 ms)"
        );
        n += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_tenant_over_its_rate_gets_429_with_retry_after() {
    let config = edge::EdgeConfig {
        tenant_events_per_second: 1,
        tenant_burst_events: 20,
        ..Default::default()
    };
    let edge = TestEdge::start_with(config).await;
    let agent = edge.agent("Acme").await;
    let mut client = edge.client(Some(&agent.identity)).await.unwrap();
    let batch = |from: u32| json!({ "events": (from..from + 10).map(|n| agent.event(n)).collect::<Vec<_>>() });
    assert_eq!(client.post_json("/v1/events", &batch(0)).await.status, 200);
    assert_eq!(client.post_json("/v1/events", &batch(10)).await.status, 200);
    let limited = client.post_json("/v1/events", &batch(20)).await;
    assert_eq!(
        (limited.status, limited.error_code().as_str()),
        (429, "rate_limited")
    );
    let retry_after: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((5..=10).contains(&retry_after), "{retry_after}");
    // Another tenant is not affected.
    let other = edge.agent("Globex").await;
    let mut other_client = edge.client(Some(&other.identity)).await.unwrap();
    assert_eq!(
        other_client
            .post_json("/v1/events", &json!({ "events": [other.event(1)] }))
            .await
            .status,
        200
    );
    assert_eq!(edge.published().await.len(), 21);
}

/// Waits until bronze holds `expected` events of `tenant`, the bronze writer running.
async fn wait_for_bronze(edge: &TestEdge, tenant: domain::TenantId, expected: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (count, _) = store::service::bronze::tenant_fingerprint(&edge.database.service, tenant)
            .await
            .unwrap();
        if count == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "bronze holds {count} events, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn values_reach_bronze_as_sent_and_refusals_name_the_event() {
    let edge = TestEdge::start().await;
    let agent = edge.agent("Acme").await;
    let mut client = edge.client(Some(&agent.identity)).await.unwrap();
    let composed = "caf\u{e9}";
    let decomposed = "cafe\u{301}";
    // A negative zero as the source wrote it, and a key in decomposed form.
    let as_sent = agent.event(1).to_string().replacen(
        "\"id\":1,",
        &format!("\"id\":1,\"delta\":-0,\"ratio\":-0.0,\"{decomposed}\":\"open\","),
        1,
    );
    // Two keys that are one in NFC; a repeated key; a NUL: each refused, each naming its event.
    let event = |n: u32, extra: &str| {
        agent.event(n).to_string().replacen(
            &format!("\"id\":{n},"),
            &format!("\"id\":{n},{extra}"),
            1,
        )
    };
    let colliding = event(2, &format!("\"{composed}\":1,\"{decomposed}\":2,"));
    let repeated = event(3, "\"note\":1,\"note\":2,");
    let nul = event(4, "\"note\":\"a\\u0000b\",");
    // Committed before the others: the newest event of the table, the preview's sample, is
    // the one with the negative zeros.
    let plain = agent.event(0).to_string();
    for text in [&as_sent, &colliding, &repeated, &nul] {
        assert_ne!(text, &agent.event(1).to_string());
    }
    let response = client
        .request(
            "POST",
            "/v1/events",
            &[
                ("content-type", "application/json"),
                ("tributary-protocol", "1"),
            ],
            raw_batch(&[as_sent.as_str(), &colliding, &repeated, &nul, &plain].join(",")),
        )
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    let body = response.json();
    let results = body["results"].as_array().unwrap();
    let answers: Vec<(&str, &str, &serde_json::Value)> = results
        .iter()
        .map(|result| {
            (
                result["status"].as_str().unwrap(),
                result["code"].as_str().unwrap_or(""),
                &result["event_id"],
            )
        })
        .collect();
    assert_eq!(
        answers,
        [
            ("accepted", "", &agent.event(1)["event_id"]),
            (
                "rejected",
                "keys_collide_after_normalisation",
                &agent.event(2)["event_id"]
            ),
            ("rejected", "duplicate_key", &agent.event(3)["event_id"]),
            ("rejected", "nul_in_string", &agent.event(4)["event_id"]),
            ("accepted", "", &agent.event(0)["event_id"]),
        ]
    );

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(pipeline::bronze::run(
        edge.database.service.clone(),
        edge.bus.clone(),
        pipeline::bronze::BronzeConfig::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    wait_for_bronze(&edge, agent.tenant, 2).await;
    drop(stop);

    // What a member reads of bronze: the negative zeros as sent, the key in NFC.
    let mut tx = edge.owner_tx(agent.tenant).await;
    let sample = store::masking::latest_bronze_sample(&mut tx, Some("public.devices"))
        .await
        .unwrap()
        .unwrap();
    tx.commit().await.unwrap();
    let read: Vec<(String, bool)> = sqlx::query_as(
        "select coalesce(payload_exact, payload::json)::text, payload_exact is not null \
         from bronze.cdc_events where tenant_id = $1 order by lsn",
    )
    .bind(agent.tenant.as_uuid())
    .fetch_all(&mut edge.test_database.service().await)
    .await
    .unwrap();
    assert_eq!(read.len(), 2);
    let (first, kept_exact) = &read[1];
    assert!(*kept_exact, "a payload with a negative zero keeps its text");
    let first: serde_json::Value = serde_json::from_str(first).unwrap();
    for value in [&first["after"], &sample.payload["after"]] {
        for column in ["delta", "ratio"] {
            let number = value[column].as_f64().unwrap();
            assert!(
                number == 0.0 && number.is_sign_negative(),
                "{column}: {value}"
            );
        }
        assert_eq!(value[composed], "open");
        assert!(value.get(decomposed).is_none(), "{value}");
    }
    assert!(
        !read[0].1,
        "a payload jsonb keeps as is is not stored twice"
    );
    // Rebuilds and replays read bronze back as sent too.
    let rows = store::service::bronze::events_in_range(
        &edge.database.service,
        agent.tenant,
        time::OffsetDateTime::UNIX_EPOCH,
        time::OffsetDateTime::now_utc() + time::Duration::days(1),
        None,
        10,
    )
    .await
    .unwrap();
    let envelope = pipeline::bronze::envelope_of(&rows[1], None).unwrap();
    let after = envelope.event.after.unwrap();
    assert!(after["delta"].as_f64().unwrap().is_sign_negative());
    assert!(
        serde_json::to_string(&after)
            .unwrap()
            .contains("\"ratio\":-0.0")
    );
}
