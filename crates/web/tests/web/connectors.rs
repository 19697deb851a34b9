//! The connector wizard over HTTP with a signed-in admin: each step as the edge's records move
//! it on (pairing recorded as the edge records a certificate, the agent's `check` as the edge
//! records its report, events as the bronze writer stores them), coming back to the same step,
//! re-issuing the token, choosing tables with a read model override, the `agent.toml` that
//! lists them, the JSON twin, CSRF, and tenant B's admin against tenant A's source. The real
//! agent against a real database runs in the platform's browser test (crates/tributary).

use domain::{Role, SourceId};
use serde_json::Value;
use store::{Actor, TenantTx};
use test_support::TestDatabase;

use crate::auth::{member, signed_in};
use crate::{request, serve};

fn step_of(body: &str) -> &str {
    let start = body
        .find(r#"class="wizard-body" data-step=""#)
        .unwrap_or_else(|| panic!("no wizard step in {body}"))
        + r#"class="wizard-body" data-step=""#.len();
    let end = body[start..].find('"').unwrap() + start;
    &body[start..end]
}

fn source_of(body: &str) -> SourceId {
    let start = body.find("/app/connectors/").unwrap();
    let rest = &body[start + "/app/connectors/".len()..];
    let candidate = rest
        .split(['/', '"'])
        .find(|part| part.len() == 36)
        .unwrap_or_else(|| panic!("no source id in {body}"));
    candidate.parse().unwrap()
}

/// The text of the element with `id`, without its tags.
fn text_of<'a>(body: &'a str, id: &str) -> &'a str {
    let marker = format!(r#"id="{id}">"#);
    let start = body
        .find(&marker)
        .unwrap_or_else(|| panic!("no #{id} in {body}"))
        + marker.len();
    let end = body[start..].find('<').unwrap() + start;
    &body[start..end]
}

#[tokio::test]
async fn the_wizard_pairs_checks_chooses_tables_and_shows_the_first_events_of_a_source() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let a = crate::api::tenant(&database, "Acme").await;
    let b = crate::api::tenant(&database, "Globex").await;
    member(&database, a, "admin@acme.example", Role::Admin).await;
    member(&database, b, "admin@globex.example", Role::Admin).await;
    let mut admin = signed_in(&addr, "admin@acme.example").await;

    // A name the store refuses is said on the form, nothing is created.
    let refused = admin
        .submit(
            "/app/connectors",
            "/app/connectors",
            &[("kind", "postgres"), ("name", "   ")],
        )
        .await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert!(refused.body.contains("source name"), "{}", refused.body);

    // Kind and name: the source and its token, shown once with the exact pair command.
    let created = admin
        .submit(
            "/app/connectors",
            "/app/connectors",
            &[("kind", "postgres"), ("name", "orders db")],
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    let source = source_of(&created.body);
    let pair = text_of(&created.body, "pair-command").to_owned();
    assert!(
        pair.starts_with(
            "tributary-agent pair --edge https://edge.example.test:8443 --ca tributary-ca.pem --token tpt1."
        ),
        "{pair}"
    );
    assert_eq!(
        text_of(&created.body, "state-dir-command"),
        "export TRIBUTARY_AGENT_STATE_DIR=/var/lib/tributary-agent"
    );
    assert_eq!(step_of(&created.body), "pair");
    assert!(
        created
            .body
            .contains("ALTER SYSTEM SET wal_level = logical")
    );
    let wizard = format!("/app/connectors/{source}");

    // Leaving and coming back: the same step, the token no longer shown but said waiting.
    let again = admin.get(&wizard).await;
    assert_eq!(again.status, 200);
    assert_eq!(step_of(&again.body), "pair");
    assert!(!again.body.contains("pairing-token-text"));
    assert!(again.body.contains(r#"data-token="waiting""#));
    let list = admin.get("/app/connectors").await;
    assert!(
        list.body.contains("Waiting for the agent to pair"),
        "{}",
        list.body
    );
    assert!(list.body.contains(&format!("{wizard}\"")), "{}", list.body);

    // A new token, shown once, another than the first.
    let reissued = admin.submit(&wizard, &format!("{wizard}/token"), &[]).await;
    assert_eq!(reissued.status, 200, "{}", reissued.body);
    let second = text_of(&reissued.body, "pair-command").to_owned();
    assert_ne!(second, pair);

    // The CA certificate and agent.toml download.
    let ca = admin.get("/app/connectors/tributary-ca.pem").await;
    assert_eq!(ca.status, 200);
    assert!(ca.body.starts_with("-----BEGIN CERTIFICATE-----"));

    // The agent pairs (the edge records its certificate): the check is next.
    crate::api::paired(&database, a, source, "0c0ffee").await;
    let paired = admin.get(&wizard).await;
    assert_eq!(step_of(&paired.body), "check", "{}", paired.body);
    assert!(
        paired
            .body
            .contains("tributary-agent check --config agent.toml"),
        "{}",
        paired.body
    );
    assert!(paired.body.contains("export TRIBUTARY_AGENT_SOURCE_URL="));

    // The agent's check (as the edge records it): findings and three tables.
    let mut tx = TenantTx::begin_service(&database.service, Some(a), Actor::Agent(source))
        .await
        .unwrap();
    let column = |names: &[&str]| names.iter().map(|name| (*name).to_owned()).collect();
    store::connectors::record_check(
        &mut tx,
        source,
        &store::connectors::NewCheck {
            agent_version: "0.1.0".into(),
            ready: true,
            findings: vec![
                store::connectors::CheckFinding {
                    level: "ok".into(),
                    message: "wal_level = logical".into(),
                },
                store::connectors::CheckFinding {
                    level: "warning".into(),
                    message: "\"public\".\"audit\" has no primary key or replica identity".into(),
                },
            ],
            tables: vec![
                store::connectors::ReportedTable {
                    name: "public.audit".into(),
                    has_key: false,
                    readable: true,
                    columns: column(&["at", "what"]),
                },
                store::connectors::ReportedTable {
                    name: "public.devices".into(),
                    has_key: true,
                    readable: true,
                    columns: column(&["device_id", "site_id", "firmware_version", "colour"]),
                },
                store::connectors::ReportedTable {
                    name: "public.orders".into(),
                    has_key: true,
                    readable: true,
                    columns: column(&["id", "name", "status", "total"]),
                },
            ],
            tables_omitted: 0,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let checked = admin.get(&wizard).await;
    assert_eq!(step_of(&checked.body), "tables", "{}", checked.body);
    assert!(checked.body.contains(r#"data-ready="true""#));
    assert!(checked.body.contains("no primary key or replica identity"));
    assert!(checked.body.contains("no key: inserts only"));
    // Proposed: the table a read model recognises by name, with its default columns.
    assert!(
        checked
            .body
            .contains(r#"value="public.devices" aria-label="Capture public.devices" checked"#),
        "{}",
        checked.body
    );
    assert!(
        checked
            .body
            .contains(r#"value="public.orders" aria-label="Capture public.orders">"#)
    );
    assert!(checked.body.contains("device (by its name)"));
    assert!(
        checked
            .body
            .contains("<code>firmware_version</code> → firmware")
    );

    // Without the form's token, nothing is chosen.
    let forged = admin
        .post(&format!("{wizard}/tables"), &[("table", "public.audit")])
        .await;
    assert_eq!(forged.status, 403);

    // Devices by name, orders as devices too: a stored mapping with that kind's columns.
    let chosen = admin
        .submit(
            &wizard,
            &format!("{wizard}/tables"),
            &[
                ("table", "public.devices"),
                ("kind:public.devices", "default"),
                ("table", "public.orders"),
                ("kind:public.orders", "device"),
                ("kind:public.audit", "site"),
            ],
        )
        .await;
    assert_eq!(chosen.status, 303, "{}", chosen.body);
    let running = admin.get(&wizard).await;
    assert_eq!(step_of(&running.body), "run", "{}", running.body);
    assert!(
        running
            .body
            .contains("tributary-agent run --config agent.toml")
    );
    let toml = admin.get(&format!("{wizard}/agent.toml")).await;
    assert_eq!(toml.status, 200);
    assert_eq!(
        toml.header("content-disposition"),
        Some("attachment; filename=\"agent.toml\"")
    );
    let slot = format!("tributary_{}", &source.to_string().replace('-', "")[..12]);
    for line in [
        "edge = \"https://edge.example.test:8443\"".to_owned(),
        "kind = \"postgres\"".to_owned(),
        "tables = [\"public.devices\", \"public.orders\"]".to_owned(),
        format!("slot = \"{slot}\""),
        format!("publication = \"{slot}\""),
    ] {
        assert!(
            toml.body.lines().any(|got| got == line),
            "{line} in {}",
            toml.body
        );
    }
    let mut tx = crate::api::owner(&database, a).await;
    let mappings = store::read_models::list_mappings(&mut tx).await.unwrap();
    tx.commit().await.unwrap();
    let orders: Vec<_> = mappings
        .iter()
        .filter(|mapping| mapping.source_id == *source.as_uuid())
        .collect();
    assert_eq!(orders.len(), 1, "only the override is stored: {orders:?}");
    assert_eq!(orders[0].source_table, "public.orders");
    assert_eq!(orders[0].entity_kind, "device");
    assert_eq!(orders[0].id_column.as_deref(), Some("id"));
    assert_eq!(
        orders[0].columns.get("status").map(String::as_str),
        Some("status")
    );
    assert!(
        !orders[0].columns.contains_key("total"),
        "extras stay extras"
    );

    // The first events: the last step lists the newest.
    crate::masking::bronze_change(
        &database,
        a,
        source,
        ("public", "orders"),
        ("insert", 500, 0),
        serde_json::json!({ "id": 1 }),
    )
    .await;
    let done = admin.get(&wizard).await;
    assert_eq!(step_of(&done.body), "done", "{}", done.body);
    assert!(done.body.contains("<code>public.orders</code>"));
    assert!(
        !done.body.contains("sse-connect"),
        "a finished setup is not followed live"
    );

    // The JSON twin says the same.
    let token = crate::api::token(&database, a, Role::Admin).await;
    let (status, _, body) = request(
        &addr,
        "GET",
        &format!("/api/v1/sources/{source}/setup"),
        Some(&token),
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let setup: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(setup["step"], "done");
    assert_eq!(setup["paired"], true);
    assert_eq!(
        setup["capture_tables"],
        serde_json::json!(["public.devices", "public.orders"])
    );
    assert_eq!(setup["check"]["tables"].as_array().unwrap().len(), 3);
    assert_eq!(setup["recent_events"][0]["table"], "public.orders");
    assert!(setup["agent_toml"].as_str().unwrap().contains(&slot));
    // Tables of a simulator are refused as such.
    let simulator = crate::api::source(&database, a).await;
    let (status, _, body) = request(
        &addr,
        "PUT",
        &format!("/api/v1/sources/{simulator}/tables"),
        Some(&token),
        r#"{"tables": ["public.devices"]}"#,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("PostgreSQL"), "{body}");

    // Tenant B's admin finds none of it.
    let mut intruder = signed_in(&addr, "admin@globex.example").await;
    for path in [
        wizard.clone(),
        format!("{wizard}/agent.toml"),
        format!("{wizard}/stream"),
    ] {
        let page = intruder.get(&path).await;
        assert_eq!(page.status, 404, "{path}: {}", page.body);
    }
    let refused = intruder
        .submit(
            "/app/connectors",
            &format!("{wizard}/tables"),
            &[("table", "public.orders")],
        )
        .await;
    assert_eq!(refused.status, 404, "{}", refused.body);
    let list = intruder.get("/app/connectors").await;
    assert!(!list.body.contains("orders db"));
}
