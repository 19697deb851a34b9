//! One ingest batch can be followed through the logs: the spans of the edge, of the bus and of
//! both consumers carry its tenant, source and batch ids, and no customer value is ever logged.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::TestEdge;

/// Everything the formatted log writes while the test runs.
#[derive(Clone, Default)]
pub(crate) struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The lines of `logs` that hold every one of `needles`.
fn lines_with<'a>(logs: &'a str, needles: &[&str]) -> Vec<&'a str> {
    logs.lines()
        .filter(|line| needles.iter().all(|needle| line.contains(needle)))
        .collect()
}

#[tokio::test]
async fn one_batch_is_followed_from_the_edge_through_the_bus_to_both_consumers() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "info,edge=debug,bus=debug,pipeline=debug",
        ))
        .with_ansi(false)
        .finish();
    // Every task of this test runs on this thread (a current-thread runtime), so they all log
    // here whatever global subscriber another test installed.
    let _guard = tracing::subscriber::set_default(subscriber);

    let edge = TestEdge::start().await;
    let agent = edge.agent("Acme").await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut receiver: tokio::sync::watch::Receiver<bool>| async move {
        let _ = receiver.wait_for(|stop| *stop).await;
    };
    tokio::spawn(pipeline::bronze::run(
        edge.database.service.clone(),
        edge.bus.clone(),
        pipeline::bronze::BronzeConfig::default(),
        until_stopped(stopped.clone()),
    ));
    tokio::spawn(pipeline::materializer::run(
        edge.database.service.clone(),
        edge.bus.clone(),
        pipeline::materializer::MaterializerConfig::default(),
        until_stopped(stopped),
    ));

    let customer_value = "customer-value-5c1e9b7d";
    let mut events: Vec<serde_json::Value> = (0..3).map(|n| agent.event(n)).collect();
    events[1]["after"]["name"] = json!(customer_value);
    let batch = events[0]["event_id"].as_str().unwrap().to_owned();
    let mut client = edge.client(Some(&agent.identity)).await.unwrap();
    let response = client
        .post_json("/v1/events", &json!({ "events": events }))
        .await;
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(response.json()["accepted"].as_u64(), Some(3));

    let (tenant, source) = (agent.tenant.to_string(), agent.source.to_string());
    let tenant_field = format!("tenant={tenant}");
    let source_field = format!("source={source}");
    let batch_field = format!("batch={batch}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let logs = loop {
        let logs = captured.text();
        let applied = |consumer: &str| {
            !lines_with(
                &logs,
                &[&format!("consumer=\"{consumer}\""), "batch applied"],
            )
            .is_empty()
        };
        if applied("bronze") && applied("materializer") {
            break logs;
        }
        assert!(
            Instant::now() < deadline,
            "both consumers should log the batch they applied; the logs:\n{logs}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = stop.send(true);

    let edge_lines = lines_with(
        &logs,
        &["edge_ingest{", &tenant_field, &source_field, &batch_field],
    );
    assert!(
        !edge_lines.is_empty(),
        "the edge's span names the tenant, source and batch; the logs:\n{logs}"
    );
    let published = lines_with(
        &logs,
        &[
            "bus_publish{",
            &tenant_field,
            &batch_field,
            "batch published",
        ],
    );
    assert!(
        !published.is_empty(),
        "the bus's publish span names the tenant and batch; the logs:\n{logs}"
    );
    for consumer in ["bronze", "materializer"] {
        let group = format!("group=\"{consumer}\"");
        let delivered = lines_with(
            &logs,
            &["bus_deliver{", &group, &tenant_field, &batch_field],
        );
        assert!(
            !delivered.is_empty(),
            "the bus's delivery span names the {consumer} group, tenant and batch; the \
             logs:\n{logs}"
        );
        let consumer_field = format!("consumer=\"{consumer}\"");
        let applying = lines_with(
            &logs,
            &[
                "consumer_batch{",
                &consumer_field,
                &batch_field,
                &tenant_field,
                &source_field,
            ],
        );
        assert!(
            !applying.is_empty(),
            "the {consumer}'s batch span holds the tenant and source of the batch; the \
             logs:\n{logs}"
        );
    }
    assert!(
        !logs.contains(customer_value),
        "a customer's value reached the logs:\n{logs}"
    );
}
