//! The settings advice against a server on PostgreSQL's defaults: each setting below the
//! workload's is named with its value, the recommendation and why; one already above is ok.

use sqlx::{Connection, PgConnection};
use store::tuning::{Machine, check_on};
use test_support::SourceCluster;

#[tokio::test]
async fn a_server_on_the_defaults_is_advised_setting_by_setting() {
    let server = SourceCluster::start(&[("checkpoint_timeout", "30min")]);
    let mut connection = PgConnection::connect(&server.url("postgres"))
        .await
        .unwrap();
    let machine = Machine {
        memory_bytes: 16 << 30,
        cpus: 4,
    };
    let advice = check_on(&mut connection, &machine).await.unwrap();
    let of = |name: &str| {
        advice
            .iter()
            .find(|item| item.name == name)
            .unwrap_or_else(|| panic!("no advice on {name}: {advice:?}"))
    };
    let buffers = of("shared_buffers");
    assert!(!buffers.ok);
    assert_eq!(buffers.current, "128MB");
    assert_eq!(buffers.recommended, "4GB");
    assert!(buffers.why.contains("quarter of the memory"));
    assert!(!of("max_wal_size").ok);
    assert_eq!(of("max_wal_size").current, "1GB");
    // Above the advice already: ok.
    assert!(of("checkpoint_timeout").ok);
    assert_eq!(of("checkpoint_timeout").current, "1800s");
    assert_eq!(advice.len(), store::tuning::recommended(&machine).len());
}
