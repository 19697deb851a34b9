//! Alerts as a customer meets them, on what the demo's simulated agent streams: in a real
//! headless Chromium against `tributary up`, the demo owner makes a rule on the simulator's
//! power readings, sees it fire when the platform's own evaluator takes it, acknowledges it and
//! silences it.

use std::time::{Duration, Instant};

use test_support::browser::{
    click, console_errors, fill, screenshot, start_chromium, wait_for_text,
};

use crate::support::{DataDir, demo_with_readings, sign_in_as_demo_owner};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_on_the_simulators_readings_fires_and_is_acknowledged_and_silenced_in_a_browser() {
    let data_dir = DataDir::new();
    let (platform, demo) = demo_with_readings(&data_dir, Duration::from_secs(90)).await;
    let base = format!("http://{}", platform.web_addr);
    let (_driver, client) = start_chromium().await;
    sign_in_as_demo_owner(&client, &base, &demo).await;
    client.goto(&format!("{base}/app/alerts")).await.unwrap();
    // Readings arrive every few seconds from 20 devices: more than one in five minutes, per
    // device, fires at once.
    fill(&client, "#rule-name", "Chargers reporting").await;
    fill(&client, "#rule-key", "power_kw").await;
    client
        .find(test_support::browser::Locator::Css("#rule-aggregation"))
        .await
        .unwrap()
        .select_by_value("count")
        .await
        .unwrap();
    client
        .find(test_support::browser::Locator::Css("#rule-group"))
        .await
        .unwrap()
        .select_by_value("device")
        .await
        .unwrap();
    fill(&client, "#rule-threshold", "0").await;
    fill(&client, "#rule-labels", "team=field").await;
    click(&client, "#new-rule button[type=submit]").await;
    wait_for_text(&client, "Rule saved: it is evaluated within seconds.").await;
    wait_for_text(&client, "count of power_kw over 5 min &gt; 0, per device").await;
    let rule_path: String = client.current_url().await.unwrap().path().to_owned();
    assert!(rule_path.starts_with("/app/alerts/rules/"), "{rule_path}");

    // `tributary up` evaluates every few seconds: the page shows the firing series by device.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        client.goto(&format!("{base}{rule_path}")).await.unwrap();
        let body = client.source().await.unwrap();
        if body.contains(r#"<tr data-phase="firing">"#) {
            assert!(body.contains("<code>device:"), "series by device:\n{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rule did not fire within a minute:\n{body}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    screenshot(&client, "alert-simulator-firing").await;

    click(&client, r#"form[action="/app/alerts/acknowledge"] button"#).await;
    wait_for_text(&client, "Acknowledged: no reminders until it resolves").await;

    let rule = rule_path.trim_start_matches("/app/alerts/rules/");
    fill(&client, &format!("#reason-{rule}"), "site visit").await;
    click(&client, r#"form[action="/app/alerts/silences"] button"#).await;
    wait_for_text(&client, "Silenced: no notices until the silence ends").await;
    wait_for_text(&client, "site visit").await;
    screenshot(&client, "alert-simulator-silenced").await;
    assert_eq!(console_errors(&client).await, Vec::<String>::new());
    drop(platform);
}
