//! The connector wizard end to end, as a customer goes through it: in a real headless Chromium
//! against `tributary up`, the wizard creates a PostgreSQL source; the test runs the `pair`,
//! `check` and `run` commands the page prints, as a real `tributary-agent` process against a
//! real PostgreSQL source; the page follows the agent live (pair → check → tables → run) and
//! ends with the source's first events.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use sqlx::{Connection, PgConnection};
use test_support::SourceCluster;
use test_support::browser::{
    Client, click, console_errors, fill, screenshot, script, sign_in_as, start_chromium,
    wait_for_element_within,
};

use crate::support::{BINARY, DataDir, start_platform_with};

/// The agent binary, built beside the platform's by a workspace build.
fn agent_binary() -> PathBuf {
    let path = Path::new(BINARY).with_file_name("tributary-agent");
    assert!(
        path.exists(),
        "{} is missing: the wizard's end-to-end test runs the agent (cargo build -p agent, or run the whole workspace's tests)",
        path.display()
    );
    path
}

/// A printed command (`tributary-agent ARGS`) run as printed, in `dir`, with `env`.
fn run_printed(command: &str, dir: &Path, env: &[(&str, &str)]) -> Output {
    let mut words = command.split_whitespace();
    assert_eq!(words.next(), Some("tributary-agent"), "{command}");
    let output = Command::new(agent_binary())
        .args(words)
        .current_dir(dir)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{command}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// GET `path` from the page's own origin, with its session: the body (a download link's
/// file, as the browser would save it).
async fn download(client: &Client, path: &str) -> String {
    let answer = client
        .execute(
            "const request = new XMLHttpRequest(); request.open('GET', arguments[0], false); \
             request.send(); return [request.status, request.responseText];",
            vec![serde_json::json!(path)],
        )
        .await
        .unwrap();
    assert_eq!(answer[0], 200, "GET {path}: {answer}");
    answer[1].as_str().unwrap().to_owned()
}

/// Waits until the wizard shows `step` (it follows the agent by server-sent events, without
/// a reload).
async fn wait_for_step(client: &Client, step: &str, limit: Duration) {
    wait_for_element_within(
        client,
        limit,
        &format!(".wizard-body[data-step={step}] h2"),
        &format!("the {step} step"),
        |_| true,
    )
    .await;
}

/// The text of the element `css` as the page shows it, read in one step in the page (the live
/// stream may replace the element at any moment); fails when there is none.
async fn shown(client: &Client, css: &str) -> String {
    let text = client
        .execute(
            "const element = document.querySelector(arguments[0]); \
             return element ? element.innerText : null;",
            vec![serde_json::json!(css)],
        )
        .await
        .unwrap();
    text.as_str()
        .unwrap_or_else(|| panic!("the page has no {css}"))
        .to_owned()
}

/// Scrolls the step into view, for its screenshot.
async fn show_step(client: &Client) {
    script(
        client,
        "document.querySelector('.wizard-steps').scrollIntoView(); return null;",
    )
    .await;
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wizard_pairs_a_real_agent_checks_its_database_and_shows_the_first_events() {
    // The customer's database: a keyed table a read model knows by name, and another.
    let source = SourceCluster::logical();
    let mut database = PgConnection::connect(&source.url("postgres"))
        .await
        .unwrap();
    for statement in [
        "create table devices (device_id text primary key, site_id text, kind text, \
         firmware_version text, colour text)",
        "insert into devices values ('dev-1', 'site-1', 'charger', '1.2.0', 'red'), \
         ('dev-2', 'site-1', 'charger', '1.3.1', 'blue')",
        "create table orders (id bigint primary key, total numeric)",
        "insert into orders values (1, 9.5)",
    ] {
        sqlx::query(statement).execute(&mut database).await.unwrap();
    }

    let data_dir = DataDir::new();
    let (platform, _) = start_platform_with(&data_dir, &[]);
    let base = format!("http://{}", platform.web_addr);
    let demo: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data_dir.0.join("demo.json")).unwrap()).unwrap();
    let (email, password) = (
        demo["web_login"]["email"].as_str().unwrap(),
        demo["web_login"]["password"].as_str().unwrap(),
    );

    let (_driver, client) = start_chromium().await;
    sign_in_as(&client, &base, email, password).await;

    // Kind and name: the source and its one-time pairing token, with the commands to run.
    client
        .goto(&format!("{base}/app/connectors"))
        .await
        .unwrap();
    click(&client, ".connector-new input[name=kind][value=postgres]").await;
    fill(&client, "#source-name", "Warehouse").await;
    click(&client, ".connector-new button[type=submit]").await;
    wait_for_step(&client, "pair", Duration::from_secs(15)).await;
    // The token is shown once, on the answer to the form; the wizard's own address has the rest.
    let agent_toml_path = script(
        &client,
        "return document.querySelector('.wizard-body a[href$=\"/agent.toml\"]').getAttribute('href');",
    )
    .await
    .as_str()
    .unwrap()
    .to_owned();
    let wizard_url = format!("{base}{}", agent_toml_path.trim_end_matches("/agent.toml"));
    let pair_command = shown(&client, "#pair-command").await;
    assert!(
        pair_command.starts_with("tributary-agent pair --edge https://127.0.0.1:")
            && pair_command.contains(" --ca tributary-ca.pem --token tpt1."),
        "{pair_command}"
    );
    let prerequisites = shown(&client, ".prerequisites").await;
    assert!(
        prerequisites.contains("wal_level = logical") && prerequisites.contains("REPLICATION"),
        "{prerequisites}"
    );
    screenshot(&client, "connector-pair").await;

    // The files the page links, saved beside the agent as the page says.
    let machine = tempfile::tempdir().unwrap();
    let state_dir = machine.path().join("state");
    let ca = download(&client, "/app/connectors/tributary-ca.pem").await;
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    std::fs::write(machine.path().join("tributary-ca.pem"), ca).unwrap();
    let source_url = source.url("postgres");
    let env = [
        ("TRIBUTARY_AGENT_STATE_DIR", state_dir.to_str().unwrap()),
        ("TRIBUTARY_AGENT_SOURCE_URL", source_url.as_str()),
    ];
    run_printed(&pair_command, machine.path(), &env);

    // Paired: the page moves on by itself and asks for the agent's check.
    wait_for_step(&client, "check", Duration::from_secs(20)).await;
    let config = machine.path().join("agent.toml");
    std::fs::write(&config, download(&client, &agent_toml_path).await).unwrap();
    show_step(&client).await;
    screenshot(&client, "connector-check").await;
    let checked = run_printed(
        "tributary-agent check --config agent.toml",
        machine.path(),
        &env,
    );
    assert!(
        String::from_utf8_lossy(&checked.stdout).contains("reported to the platform"),
        "{}",
        String::from_utf8_lossy(&checked.stdout)
    );

    // The check's findings and the database's tables, with the default mapping.
    wait_for_step(&client, "tables", Duration::from_secs(20)).await;
    let findings = shown(&client, ".check-findings").await;
    assert!(findings.contains("wal_level"), "{findings}");
    let devices = shown(&client, ".table-choice tr[data-table='public.devices']").await;
    assert!(
        devices.contains("device") && devices.contains("firmware_version"),
        "{devices}"
    );
    show_step(&client).await;
    screenshot(&client, "connector-tables").await;
    // Capture both tables: devices as proposed, orders into the raw store only.
    script(
        &client,
        "const box = document.querySelector(\".table-choice input[name=table][value='public.orders']\"); \
         if (!box.checked) box.click(); return null;",
    )
    .await;
    click(&client, ".table-choice button[type=submit]").await;
    wait_for_step(&client, "run", Duration::from_secs(15)).await;

    // The file again, now naming the tables, and the agent run as printed.
    let toml = download(&client, &agent_toml_path).await;
    assert!(
        toml.contains(r#"tables = ["public.devices", "public.orders"]"#),
        "{toml}"
    );
    std::fs::write(&config, toml).unwrap();
    let log = std::fs::File::create(machine.path().join("agent.log")).unwrap();
    let _agent = Running(
        Command::new(agent_binary())
            .args(["run", "--config", "agent.toml"])
            .current_dir(machine.path())
            .envs(env)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );

    // The snapshot's first events, live on the page.
    let agent_log =
        || std::fs::read_to_string(machine.path().join("agent.log")).unwrap_or_default();
    let streaming = tokio::time::timeout(
        Duration::from_secs(120),
        wait_for_step(&client, "done", Duration::from_secs(120)),
    )
    .await;
    assert!(
        streaming.is_ok(),
        "no first events; the agent's log:\n{}",
        agent_log()
    );
    let events = shown(&client, ".first-events tbody").await;
    assert!(
        events.contains("public.devices") || events.contains("public.orders"),
        "{events}"
    );
    show_step(&client).await;
    screenshot(&client, "connector-done").await;

    // Coming back later resumes at the same step; the connectors list says where it stands.
    client.goto(&wizard_url).await.unwrap();
    wait_for_step(&client, "done", Duration::from_secs(15)).await;
    client
        .goto(&format!("{base}/app/connectors"))
        .await
        .unwrap();
    let row = script(
        &client,
        "return [...document.querySelectorAll('.connector-list tr[data-step]')]\
         .filter(row => row.textContent.includes('Warehouse')).map(row => row.dataset.step);",
    )
    .await;
    assert_eq!(row, serde_json::json!(["done"]));
    // The source's own page, where its admin pauses, resyncs, rotates or revokes it.
    let source_page = wizard_url.replace("/app/connectors/", "/app/data-sources/");
    client.goto(&source_page).await.unwrap();
    wait_for_element_within(
        &client,
        Duration::from_secs(15),
        ".slot-panel h2",
        "the slot-safety panel",
        |_| true,
    )
    .await;
    for form in [".resync-form", ".rotate-form", ".revoke-form"] {
        shown(&client, form).await;
    }
    screenshot(&client, "source-page").await;
    script(
        &client,
        "document.querySelector('.slot-panel').scrollIntoView(); return null;",
    )
    .await;
    screenshot(&client, "source-actions").await;
    assert_eq!(console_errors(&client).await, Vec::<String>::new());
    client.close().await.unwrap();
}
