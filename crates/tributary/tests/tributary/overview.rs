//! The overview as the demo's owner meets it, on what the demo's simulated agent streams: in a
//! real headless Chromium against `tributary up`, the charts hold points within a minute, the
//! range selector moves the window, and the next five-minute bucket's point appears without a
//! reload.

use std::time::{Duration, Instant};

use serde_json::json;
use test_support::browser::{
    choose_range, console_errors, panel_points, poll, screenshot, script, start_chromium,
    wait_for_text,
};

use crate::support::{DataDir, demo_with_readings, sign_in_as_demo_owner};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_owners_overview_charts_the_simulator_and_appends_live_in_a_browser() {
    let data_dir = DataDir::new();
    let started = Instant::now();
    let (platform, demo) = demo_with_readings(&data_dir, Duration::from_secs(60)).await;
    let base = format!("http://{}", platform.web_addr);
    let (_driver, client) = start_chromium().await;
    sign_in_as_demo_owner(&client, &base, &demo).await;

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
    choose_range(&client, "7d", "Last week").await;
    assert!(panel_points(&client).await.iter().any(|&points| points > 0));
    choose_range(&client, "1h", "Last hour").await;

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
