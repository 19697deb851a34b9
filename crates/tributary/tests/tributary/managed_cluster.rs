//! `tributary up` on an empty data directory: starts, migrates, answers `/healthz`, leaves no
//! process behind on SIGTERM, and reuses the same cluster on the next start.

use nix::sys::signal::Signal;

use crate::support::{
    DataDir, Platform, assert_no_server_left, http_get_signed_in, http_get_with, server_processes,
    sign_in, tributary,
};

#[test]
fn up_serves_health_stops_cleanly_and_reuses_its_cluster() {
    let data_dir = DataDir::new();

    let platform = Platform::start(&data_dir);
    let (status, body) = platform.get("/healthz");
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"status":"ok","database":"ok"}"#)
    );
    assert!(
        !server_processes(&data_dir.pgdata()).is_empty(),
        "the managed server runs"
    );
    // The demo: its agent streams into bronze through the edge, inside the platform.
    let demo: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data_dir.0.join("demo.json")).unwrap()).unwrap();
    assert!(demo["api_token"].as_str().unwrap().starts_with("tat1."));
    // The web app is served, with a login for the demo's owner.
    assert_eq!(demo["web_login"]["email"], "owner@demo.example.com");
    assert_eq!(demo["web_login"]["password"].as_str().unwrap().len(), 24);
    // And one for internal operations, listed by the staff command.
    assert_eq!(demo["ops_login"]["email"], "ops@demo.example.com");
    assert_eq!(demo["ops_login"]["password"].as_str().unwrap().len(), 24);
    let (status, home) = platform.get("/");
    assert_eq!(status, 200);
    assert!(home.contains("Tributary"), "{home}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, metrics) = platform.metrics();
        let written = metrics
            .lines()
            .find(|line| line.starts_with("tributary_bronze_events_written_total"))
            .and_then(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0);
        if written > 0.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the demo agent's events never reached bronze"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // Within a minute the demo's readings are in the read models and their hourly rollup:
    // the analytics API, which the overview's charts read, has a metric key with points.
    let token = demo["api_token"].as_str().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let key = loop {
        let (status, body) =
            http_get_with(&platform.web_addr, "/api/v1/analytics/keys", Some(token));
        assert_eq!(status, 200, "{body}");
        let catalogue: serde_json::Value = serde_json::from_str(&body).unwrap();
        if let Some(key) = catalogue["metrics"][0]["key"].as_str() {
            break key.to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no metric key within a minute: {body}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    let (status, body) = http_get_with(
        &platform.web_addr,
        &format!("/api/v1/analytics/series?key={key}&step=1m&agg=count"),
        Some(token),
    );
    assert_eq!(status, 200, "{body}");
    let series: serde_json::Value = serde_json::from_str(&body).unwrap();
    let points = series["series"][0]["points"].as_array().map_or(0, Vec::len);
    assert!(points > 0, "the last hour of {key} has points: {body}");
    // The demo's cohort: light tenants beside it, five in its plan, industry and region, so
    // that internal operations see published cells of an allowlisted key on the global
    // console within two minutes of the first start.
    let cohort = demo["cohort"].as_array().map_or(0, Vec::len);
    assert_eq!(
        cohort, 8,
        "five tenants in the demo's cell, three elsewhere: {demo}"
    );
    let ops = sign_in(
        &platform.web_addr,
        demo["ops_login"]["email"].as_str().unwrap(),
        demo["ops_login"]["password"].as_str().unwrap(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let (status, page) =
            http_get_signed_in(&platform.web_addr, "/app/global?key=power_kw&hours=1", &ops);
        assert_eq!(status, 200, "{page}");
        // A published cell is a row of the demo's cell with its tenant count.
        if page.contains("<td>team</td><td>energy</td><td>eu-west</td>") {
            assert!(!page.contains("<td>free</td><td>energy</td><td>us-east</td>"));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no published cell of power_kw on the global console within two minutes: {page}"
        );
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
    let (status, metrics) = platform.metrics();
    assert_eq!(status, 200);
    // Without a metrics token, the web listener serves no metrics.
    assert_eq!(platform.get("/metrics").0, 404);
    assert!(
        metrics.contains("tributary_edge_events_total{status=\"rejected\"} 0"),
        "{metrics}"
    );
    let settings = std::fs::read_to_string(data_dir.pgdata().join("postgresql.conf")).unwrap();
    assert!(settings.contains("wal_level = logical"));
    // Tuned for this machine at start: the server runs with every recommended setting, which
    // `db check` confirms one by one.
    assert!(settings.contains("include_if_exists = 'tributary-tuning.conf'"));
    let tuning = std::fs::read_to_string(data_dir.pgdata().join("tributary-tuning.conf")).unwrap();
    assert!(tuning.contains("shared_buffers = '"), "{tuning}");
    let checked = tributary(&data_dir, &["db", "check"]);
    let report = String::from_utf8_lossy(&checked.stdout).into_owned();
    assert!(checked.status.success(), "{report}");
    for name in [
        "shared_buffers",
        "max_wal_size",
        "checkpoint_timeout",
        "wal_compression",
    ] {
        assert!(report.contains(&format!("ok      {name} = ")), "{report}");
    }
    assert!(report.contains("0 setting(s) below the advice"), "{report}");
    let credentials = std::fs::read(data_dir.0.join("credentials.json")).unwrap();

    // The CLI uses the running platform's server and leaves it running.
    let created = tributary(
        &data_dir,
        &[
            "tenant",
            "create",
            "--name",
            "Acme",
            "--industry",
            "energy",
            "--region",
            "eu",
        ],
    );
    assert!(created.status.success(), "{created:?}");
    assert!(!server_processes(&data_dir.pgdata()).is_empty());
    let staff = tributary(&data_dir, &["staff", "list", "--json"]);
    assert!(staff.status.success(), "{staff:?}");
    let staff: serde_json::Value = serde_json::from_slice(&staff.stdout).unwrap();
    assert_eq!(staff[0]["email"], "ops@demo.example.com", "{staff}");

    let (status, _) = platform.stop_with(Signal::SIGTERM);
    assert!(
        status.success(),
        "tributary up exits 0 on SIGTERM: {status}"
    );
    assert_no_server_left(&data_dir.pgdata());
    assert!(!data_dir.pgdata().join("postmaster.pid").exists());

    // A CLI command with nothing running starts the server, and stops it again.
    let listed = tributary(&data_dir, &["tenant", "list", "--json"]);
    assert!(listed.status.success(), "{listed:?}");
    let tenants: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let (cohort, names): (Vec<&str>, Vec<&str>) = tenants
        .as_array()
        .unwrap()
        .iter()
        .map(|tenant| tenant["name"].as_str().unwrap())
        .partition(|name| name.starts_with("Demo Cohort "));
    assert_eq!(
        names,
        ["Demo Charging", "Acme"],
        "the second start sees the first one's data, and the demo tenant is made once"
    );
    assert_eq!(cohort.len(), 8, "the cohort is made once: {cohort:?}");
    assert_no_server_left(&data_dir.pgdata());

    let platform = Platform::start(&data_dir);
    assert_eq!(platform.get("/healthz").0, 200);
    let migrations = store::migrate::embedded_migrations().count();
    let (status, stderr) = platform.stop_with(Signal::SIGINT);
    assert!(status.success(), "tributary up exits 0 on SIGINT: {status}");
    assert!(
        stderr
            .iter()
            .any(|line| line.contains(&format!("already_applied={migrations} applied_now=0"))),
        "the second start found its migrations applied: {stderr:?}"
    );
    assert_eq!(
        std::fs::read(data_dir.0.join("credentials.json")).unwrap(),
        credentials,
        "same cluster"
    );
    assert_no_server_left(&data_dir.pgdata());
}

#[test]
fn up_adopts_a_server_left_behind_by_a_killed_platform() {
    let data_dir = DataDir::new();
    let platform = Platform::start(&data_dir);
    let (status, _) = platform.stop_with(Signal::SIGKILL);
    assert!(!status.success());
    let orphans = server_processes(&data_dir.pgdata());
    assert!(
        !orphans.is_empty(),
        "SIGKILL gives the platform no chance to stop its server"
    );

    let platform = Platform::start(&data_dir);
    assert_eq!(platform.get("/healthz").0, 200);
    let (status, stderr) = platform.stop_with(Signal::SIGTERM);
    assert!(status.success());
    assert!(
        stderr.iter().any(|line| line.contains("already running")),
        "the restart adopted the running server: {stderr:?}"
    );
    assert_no_server_left(&data_dir.pgdata());
}
