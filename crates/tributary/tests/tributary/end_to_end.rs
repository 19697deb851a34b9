//! End to end: the demo's simulated agent streams through the edge (mTLS) and the bus into
//! bronze, the tenant materializer and the global aggregator of a running `tributary up`; once
//! the platform has caught up, the read models and the rollups agree with bronze, and a rebuild
//! from bronze reproduces the read models exactly.

use std::time::{Duration, Instant};

use domain::TenantId;
use nix::sys::signal::Signal;

use crate::support::{DataDir, Platform, platform_database, start_platform_with, tributary};

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
