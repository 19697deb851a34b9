//! Backpressure: when a watched consumer group falls behind the bound on a tenant's partition,
//! the edge refuses that tenant's batches with `429 consumers_behind` and `Retry-After` instead
//! of letting the bus grow; once the group catches up, the refused batch is taken, and every
//! event reaches the bus once.

use std::collections::BTreeSet;
use std::time::Duration;

use bus::{Bus, Consumer};
use edge::EdgeConfig;
use serde_json::json;

use crate::support::TestEdge;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_consumer_makes_the_edge_answer_429_and_nothing_is_lost_when_it_resumes() {
    let edge = TestEdge::start_watching(
        EdgeConfig {
            max_consumer_lag: 30,
            ..EdgeConfig::default()
        },
        &["stalled"],
    )
    .await;
    // The group has a consumer that reads nothing: stalled.
    let mut stalled = edge.bus.consumer("stalled", None).await.unwrap();
    let agent = edge.agent("Acme").await;
    let mut client = edge.client(Some(&agent.identity)).await.unwrap();
    let batch = |first: u32| json!({ "events": (first..first + 10).map(|n| agent.event(n)).collect::<Vec<_>>() });

    let mut accepted = 0u32;
    let refused = loop {
        assert!(accepted <= 100, "the edge kept accepting past the bound");
        let response = client.post_json("/v1/events", &batch(accepted)).await;
        match response.status {
            200 => accepted += 10,
            429 => break response,
            other => panic!(
                "unexpected {other}: {}",
                String::from_utf8_lossy(&response.body)
            ),
        }
        // Time for the watch to look again.
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(refused.error_code(), "consumers_behind");
    let retry_after: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1, "{retry_after}");
    assert!(
        accepted > 30,
        "refused only past the bound: {accepted} accepted"
    );
    // Another tenant on another partition is not held back by this one's.
    let other = loop {
        let other = edge
            .agent(&format!("Other {}", uuid::Uuid::new_v4().simple()))
            .await;
        if bus::partition_of(other.tenant, edge.bus.partitions())
            != bus::partition_of(agent.tenant, edge.bus.partitions())
        {
            break other;
        }
    };
    let mut other_client = edge.client(Some(&other.identity)).await.unwrap();
    let response = other_client
        .post_json("/v1/events", &json!({ "events": [other.event(1)] }))
        .await;
    assert_eq!(response.status, 200, "another partition is not behind");

    // The consumer resumes and catches up; the refused batch is then taken.
    let mut consumed = 0;
    while consumed < accepted as usize + 1 {
        let deliveries = stalled
            .next_batch(1_000, Duration::from_millis(500))
            .await
            .unwrap();
        stalled.ack(&deliveries).await.unwrap();
        consumed += deliveries.len();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let response = client.post_json("/v1/events", &batch(accepted)).await;
        if response.status == 200 {
            break;
        }
        assert_eq!(
            response.status,
            429,
            "{}",
            String::from_utf8_lossy(&response.body)
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "still refused after the consumer caught up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    accepted += 10;

    let published = edge.published().await;
    let ids: BTreeSet<String> = published
        .iter()
        .filter(|(tenant, _, _)| *tenant == agent.tenant)
        .map(|(_, id, _)| id.to_string())
        .collect();
    let expected: BTreeSet<String> = (0..accepted)
        .map(|n| agent.event(n)["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        published
            .iter()
            .filter(|(tenant, _, _)| *tenant == agent.tenant)
            .count(),
        accepted as usize,
        "each event once"
    );
    assert_eq!(ids, expected, "every event accepted, none lost");
}
