//! The overview as the demo's owner meets it, on what the demo's simulated agent streams: in a
//! real headless Chromium against `tributary up`, the charts hold points within a minute, the
//! range selector moves the window, and a new minute's point appears without a reload.

use std::time::{Duration, Instant};

use serde_json::json;
use test_support::browser::{
    Client, click, console_errors, poll, screenshot, script, sign_in_as, start_chromium,
    wait_for_text,
};

use crate::support::{DataDir, platform_database, start_platform_with};

/// The points each chart on the page draws (`data-points` of each panel).
async fn panel_points(client: &Client) -> Vec<u64> {
    let value = script(
        client,
        "return [...document.querySelectorAll('figure.panel')].map(f => Number(f.dataset.points))",
    )
    .await;
    serde_json::from_value(value).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_owners_overview_charts_the_simulator_and_appends_live_in_a_browser() {
    let data_dir = DataDir::new();
    let started = Instant::now();
    let (platform, _) = start_platform_with(&data_dir, &[]);
    let demo: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data_dir.0.join("demo.json")).unwrap()).unwrap();
    let tenant: domain::TenantId = demo["tenant_id"].as_str().unwrap().parse().unwrap();
    // The simulator's power readings reach the read models within a minute of the start.
    let database = platform_database(&data_dir).await;
    loop {
        let (power, ..) =
            store::service::bench_support::metric_counts(&database.service, tenant, "power_kw")
                .await
                .unwrap();
        if power > 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no power readings materialized within a minute of the start"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    database.close().await;

    let base = format!("http://{}", platform.web_addr);
    let (_driver, client) = start_chromium().await;
    sign_in_as(
        &client,
        &base,
        demo["web_login"]["email"].as_str().unwrap(),
        demo["web_login"]["password"].as_str().unwrap(),
    )
    .await;

    // The default dashboard (built from the keys the simulator reports) draws its readings.
    client.goto(&format!("{base}/app/overview")).await.unwrap();
    wait_for_text(&client, "<h1>Overview</h1>").await;
    let points = panel_points(&client).await;
    assert!(
        points.iter().any(|&points| points > 0),
        "no chart has a point {} s after the start: {points:?}",
        started.elapsed().as_secs()
    );
    screenshot(&client, "demo-overview").await;

    // The range selector: the last week, then back to the last hour.
    click(&client, "nav[aria-label='Time range'] a[href$='range=7d']").await;
    wait_for_text(&client, r#"aria-current="page">Last week</a>"#).await;
    assert!(
        client
            .current_url()
            .await
            .unwrap()
            .as_str()
            .ends_with("range=7d")
    );
    assert!(panel_points(&client).await.iter().any(|&points| points > 0));
    click(&client, "nav[aria-label='Time range'] a[href$='range=1h']").await;
    wait_for_text(&client, r#"aria-current="page">Last hour</a>"#).await;

    // The simulator keeps streaming: the default charts draw five-minute buckets, and the next
    // bucket's point appears while the page stays open, through the page's live stream.
    script(&client, "window.__notReloaded = true; return null").await;
    let before: u64 = panel_points(&client).await.into_iter().sum();
    poll(Duration::from_secs(330), async || {
        let now: u64 = panel_points(&client).await.into_iter().sum();
        if now > before {
            Ok(())
        } else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Err(format!("the charts still draw {now} points, as before"))
        }
    })
    .await;
    assert_eq!(
        script(&client, "return window.__notReloaded === true").await,
        json!(true),
        "appended live, not by a page load"
    );
    screenshot(&client, "demo-overview-live").await;
    assert_eq!(console_errors(&client).await, Vec::<String>::new());
    drop(platform);
}
