//! Operations: what an agent reports about itself is masked at the edge before it is stored,
//! shown or logged.

use serde_json::json;

use crate::support::TestEdge;
use crate::tracing_spans::Captured;

#[tokio::test]
async fn an_agents_last_error_is_masked_before_it_is_stored_shown_or_logged() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "debug,edge=trace,store=trace",
        ))
        .with_ansi(false)
        .finish();
    // A current-thread runtime: every task of this test logs here.
    let _guard = tracing::subscriber::set_default(subscriber);

    let edge = TestEdge::start().await;
    let agent = edge.agent("Acme").await;
    let secrets = [
        "ada.lovelace@example.com",
        "4111 1111 1111 1111",
        "+44 20 7946 0958",
        "198.51.100.23",
        "hunter2-s3cret",
        "Lovelace Street 12",
        "Ada's vault",
    ];
    let last_error = format!(
        "duplicate key value violates unique constraint \"customers_email_key\"\n\
         DETAIL: Key (email)=({}) already exists.",
        secrets[0]
    );
    let warnings = [
        format!("card {} declined for row", secrets[1]),
        format!("phone {} invalid; peer {}", secrets[2], secrets[3]),
        format!("connect failed: password={} host=db", secrets[4]),
        format!("invalid input syntax for type integer: \"{}\"", secrets[5]),
        format!(
            "syntax error at or near '{}'",
            secrets[6].replace('\'', "''")
        ),
    ];
    let mut client = edge.client(Some(&agent.identity)).await.unwrap();
    let response = client
        .post_json(
            "/v1/status",
            &json!({
                "agent_version": "0.1.0", "source_kind": "postgres", "state": "failed",
                "spool_batches": 0, "spool_bytes": 0, "backpressure": false,
                "warnings": warnings, "last_error": last_error,
                "updated_at": "2026-12-05T08:00:00Z",
            }),
        )
        .await;
    assert_eq!(
        response.status,
        204,
        "{}",
        String::from_utf8_lossy(&response.body)
    );

    // Stored (and so shown: the sources page and the API read this very row) masked, with the
    // words that explain the error kept.
    let mut tx = edge.owner_tx(agent.tenant).await;
    let sources = store::sources::list_sources(&mut tx).await.unwrap();
    tx.rollback().await.unwrap();
    let stored = serde_json::to_value(&sources).unwrap();
    let status = &stored[0]["agent"];
    assert_eq!(
        status["last_error"],
        "duplicate key value violates unique constraint \"customers_email_key\"\n\
         DETAIL: Key (email)=([masked]) already exists."
    );
    assert_eq!(
        status["warnings"],
        json!([
            "card [masked] declined for row",
            "phone [masked] invalid; peer [masked]",
            "connect failed: password=[masked] host=[masked]",
            "invalid input syntax for type integer: \"[masked]\"",
            "syntax error at or near '[masked]'",
        ])
    );
    let logs = captured.text();
    assert!(!logs.is_empty(), "the log was not captured");
    for secret in secrets {
        let escaped = secret.replace('\'', "''");
        assert!(
            !stored.to_string().contains(secret) && !stored.to_string().contains(&escaped),
            "{secret} stored"
        );
        assert!(
            !logs.contains(secret) && !logs.contains(&escaped),
            "{secret} logged"
        );
    }
}

/// Whether `text` holds anything shaped like a UUID (8-4-4-4-12 hex digits).
fn has_uuid(text: &str) -> bool {
    let bytes = text.as_bytes();
    let shape = [8, 4, 4, 4, 12];
    (0..bytes.len()).any(|start| {
        let mut at = start;
        for (index, length) in shape.iter().enumerate() {
            for _ in 0..*length {
                if !bytes.get(at).is_some_and(u8::is_ascii_hexdigit) {
                    return false;
                }
                at += 1;
            }
            if index < shape.len() - 1 {
                if bytes.get(at) != Some(&b'-') {
                    return false;
                }
                at += 1;
            }
        }
        true
    })
}

#[tokio::test]
async fn the_metrics_of_two_tenants_traffic_name_no_tenant_or_source() {
    // The process's recorder, as `tributary up` installs it; this is the only test of this
    // binary that installs one, and whatever the other tests record lands in it as well.
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("the only recorder of this test binary");
    let edge = TestEdge::start().await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(pipeline::bronze::run(
        edge.database.service.clone(),
        edge.bus.clone(),
        pipeline::bronze::BronzeConfig::default(),
        async move {
            let mut stopped = stopped;
            let _ = stopped.wait_for(|stop| *stop).await;
        },
    ));
    let mut ids = Vec::new();
    for name in ["Acme", "Globex"] {
        let agent = edge.agent(name).await;
        ids.extend([agent.tenant.to_string(), agent.source.to_string()]);
        let mut client = edge.client(Some(&agent.identity)).await.unwrap();
        let events: Vec<_> = (0..5).map(|n| agent.event(n)).collect();
        let accepted = client
            .post_json("/v1/events", &json!({ "events": events }))
            .await;
        assert_eq!(accepted.status, 200);
        let mut bad = agent.event(6);
        bad["op"] = json!("merge");
        let rejected = client
            .post_json("/v1/events", &json!({ "events": [bad] }))
            .await;
        assert_eq!(rejected.status, 422);
    }
    // A refused pairing: a token (which names its tenant) used twice.
    let tenant = edge.tenant("Initech").await;
    let (source, token) = edge.source(tenant, "db").await;
    ids.extend([tenant.to_string(), source.to_string()]);
    assert!(edge.pair(&token).await.is_ok());
    assert!(edge.pair(&token).await.is_err());
    let _ = stop.send(true);

    let text = handle.render();
    for series in [
        "tributary_edge_events_total{status=\"accepted\"}",
        "tributary_edge_events_total{status=\"rejected\"}",
        "tributary_edge_pairings_total{outcome=\"paired\"}",
        "tributary_edge_pairings_total{outcome=\"refused\"}",
    ] {
        assert!(text.contains(series), "{series} missing from:\n{text}");
    }
    for id in &ids {
        assert!(!text.contains(id.as_str()), "{id} in the metrics:\n{text}");
    }
    assert!(!has_uuid(&text), "an id in the metrics:\n{text}");
    // Every label is one of the kinds the docs list: statuses, codes, outcomes, reasons and
    // consumers, never a tenant or a source.
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let Some((_, labels)) = line.split_once('{') else {
            continue;
        };
        for pair in labels.split('}').next().unwrap_or_default().split(',') {
            let key = pair.split('=').next().unwrap_or_default();
            assert!(
                [
                    "status", "code", "outcome", "reason", "consumer", "quantile", "le"
                ]
                .contains(&key),
                "label {key} in {line}"
            );
        }
    }
    assert!(!has_uuid("a tenant's name") && has_uuid(&uuid::Uuid::new_v4().to_string()));
}
