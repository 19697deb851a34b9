//! PII planted at random places in generated documents never reaches bronze, the DLQ or the
//! logs: masking happens at the edge, before anything is stored or logged.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};

use crate::support::TestEdge;

/// Every log line any component emits while the test runs.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Logs {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Fields<'a>(&'a mut String);
        impl tracing::field::Visit for Fields<'_> {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!(" {}={value:?}", field.name()));
            }
        }
        let mut line = String::new();
        event.record(&mut Fields(&mut line));
        self.0.lock().unwrap().push(line);
    }
}

/// A document with `secret` planted under a key named like `email` (in some casing) somewhere:
/// at the top, nested in objects, inside arrays of objects.
fn document() -> impl Strategy<Value = (Value, String)> {
    let key = prop::sample::select(vec!["email", "Email", "EMAIL", "eMail"]);
    let secret = "[a-z]{6,10}@pii\\.example".prop_map(String::from);
    let depth = 0usize..4;
    (key, secret, depth, any::<bool>()).prop_map(|(key, secret, depth, in_array)| {
        let mut value = json!({ key: secret.clone(), "kept": "visible" });
        for level in 0..depth {
            value = if in_array && level % 2 == 0 {
                json!({ "items": [ { "n": level }, value ] })
            } else {
                json!({ "nested": value, "n": level })
            };
        }
        (value, secret)
    })
}

#[tokio::test]
async fn planted_pii_never_reaches_bronze_the_dlq_or_the_logs() {
    let logs = Logs::default();
    let subscriber = tracing_subscriber::layer::SubscriberExt::with(
        tracing_subscriber::registry(),
        logs.clone(),
    );
    let _guard = tracing::subscriber::set_default(subscriber);

    let edge = TestEdge::start().await;
    let agent = edge.agent("Acme").await;
    let mut tx = edge.owner_tx(agent.tenant).await;
    for (path, action) in [("**.email", "hash"), ("profile.nested.email", "redact")] {
        store::masking::create(
            &mut tx,
            &store::masking::MaskingRule::every_table(path, action),
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(pipeline::bronze::run(
        edge.database.service.clone(),
        edge.bus.clone(),
        pipeline::bronze::BronzeConfig::default(),
        async move {
            let _ = stopped.await;
        },
    ));

    let mut runner = TestRunner::new(Config::default());
    let documents: Vec<(Value, String)> = (0..64)
        .map(|_| document().new_tree(&mut runner).unwrap().current())
        .collect();
    let mut client = edge.client(Some(&agent.identity)).await.unwrap();
    let events: Vec<Value> = documents
        .iter()
        .enumerate()
        .map(|(n, (document, _))| {
            let mut event = agent.event(n as u32);
            event["after"] = json!({ "id": n, "profile": document });
            event
        })
        .collect();
    let response = client
        .post_json("/v1/events", &json!({ "events": events }))
        .await;
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(
        response.json()["accepted"].as_u64(),
        Some(documents.len() as u64)
    );

    let mut admin = edge.test_database.admin().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let stored: Vec<String> = loop {
        let stored: Vec<String> = sqlx::query_scalar("select payload::text from bronze.cdc_events")
            .fetch_all(&mut admin)
            .await
            .unwrap();
        if stored.len() == documents.len() {
            break stored;
        }
        assert!(
            Instant::now() < deadline,
            "bronze holds {} of {} events",
            stored.len(),
            documents.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    drop(stop);
    let dead_letters: Vec<String> = sqlx::query_scalar(
        "select coalesce(event::text, '') || encode(coalesce(message, ''), 'escape') from pipeline.dlq",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    let logged = logs.0.lock().unwrap().join("\n");
    assert!(
        !logged.is_empty(),
        "the log capture must see the edge's lines, or it proves nothing"
    );
    let everything = format!(
        "{}\n{}\n{logged}",
        stored.join("\n"),
        dead_letters.join("\n")
    );
    for (_, secret) in &documents {
        assert!(
            !everything.contains(secret.as_str()),
            "{secret} escaped masking"
        );
    }
    assert!(
        stored.iter().all(|payload| payload.contains("visible")),
        "unmasked fields are kept"
    );
}
