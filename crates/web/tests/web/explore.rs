//! The explorer's list as a member walks it: its "Next page" links visit every entity once,
//! search and filters narrow it, wrong parameters are named, and entity text is escaped.

use std::collections::BTreeSet;

use domain::Role;
use test_support::TestDatabase;

use crate::auth::{member, signed_in};
use crate::browser::Browser;
use crate::serve;

/// The entity ids a list page links to, in order.
fn listed_ids(body: &str, kind: &str) -> Vec<String> {
    let marker = format!(r#"<td><a href="/app/explore/{kind}/"#);
    body.match_indices(&marker)
        .map(|(start, _)| {
            let rest = &body[start + marker.len()..];
            rest[..rest.find('"').unwrap()].to_owned()
        })
        .collect()
}

/// The "Next page" link of a list page, its `&` entity decoded as a browser decodes it.
fn next_page(body: &str) -> Option<String> {
    let end = body.find(r#"">Next page</a>"#)?;
    let start = body[..end].rfind(r#"href=""#)? + r#"href=""#.len();
    Some(body[start..end].replace("&#38;", "&").replace("&amp;", "&"))
}

/// Every id the list at `path` shows, following its "Next page" links to the end.
async fn walk(browser: &mut Browser, path: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut next = Some(path.to_owned());
    let mut pages = 0;
    while let Some(path) = next {
        let page = browser.get(&path).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        let listed = listed_ids(&page.body, "devices");
        assert!(listed.len() <= 50, "{path}: {} rows", listed.len());
        ids.extend(listed);
        next = next_page(&page.body);
        pages += 1;
        assert!(pages <= 10, "the list does not end");
    }
    ids
}

#[tokio::test]
async fn a_member_pages_searches_and_filters_devices_and_sees_their_text_escaped() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let tenant = crate::api::tenant(&database, "Acme").await;
    member(&database, tenant, "viewer@acme.example.com", Role::Viewer).await;
    let mut browser = signed_in(&addr, "viewer@acme.example.com").await;

    // No devices yet: those who may open the sources page are sent there to pair one.
    let empty = browser.get("/app/explore/devices").await;
    assert_eq!(empty.status, 200);
    assert!(empty.body.contains("No devices yet"), "{}", empty.body);
    assert!(
        !empty
            .body
            .contains(r#"<a href="/app/data-sources">Pair a source</a>"#)
    );
    member(
        &database,
        tenant,
        "operator@acme.example.com",
        Role::Operator,
    )
    .await;
    let mut operator = signed_in(&addr, "operator@acme.example.com").await;
    let empty = operator.get("/app/explore/devices").await;
    assert!(
        empty
            .body
            .contains(r#"<a href="/app/data-sources">Pair a source</a>"#)
    );

    // 120 devices: the first 40 at site-a, every other one online; device 7's name and extra
    // are markup.
    let mut admin = test_database.admin().await;
    sqlx::query(
        "insert into analytics.devices (tenant_id, device_id, source_id, site_id, name, status, \
             pos_lsn, pos_seq) \
         select $1, 'dev-' || lpad(n::text, 3, '0'), gen_random_uuid(), \
             case when n < 40 then 'site-a' else 'site-b' end, \
             case when n = 7 then '<script>alert(\"name\")</script> & co' else 'Device ' || n end, \
             case when n % 2 = 0 then 'online' else 'offline' end, 1, 0 \
         from generate_series(0, 119) n",
    )
    .bind(tenant.as_uuid())
    .execute(&mut admin)
    .await
    .unwrap();
    sqlx::query(
        "insert into analytics.extras_text (tenant_id, entity_kind, entity_id, key, value) \
         values ($1, 'device', 'dev-007', 'note', '<img src=x onerror=alert(1)>')",
    )
    .bind(tenant.as_uuid())
    .execute(&mut admin)
    .await
    .unwrap();
    drop(admin);

    let ids = walk(&mut browser, "/app/explore/devices?limit=50").await;
    let expected: Vec<String> = (0..120).map(|n| format!("dev-{n:03}")).collect();
    assert_eq!(ids, expected, "every device once, in id order");
    let descending = walk(&mut browser, "/app/explore/devices?limit=50&order=desc").await;
    assert_eq!(
        descending.iter().rev().cloned().collect::<Vec<_>>(),
        expected
    );

    let searched = browser.get("/app/explore/devices?q=DEV-01").await;
    assert_eq!(
        listed_ids(&searched.body, "devices"),
        (10..20).map(|n| format!("dev-{n:03}")).collect::<Vec<_>>()
    );
    let filtered = walk(
        &mut browser,
        "/app/explore/devices?site=site-a&status=online",
    )
    .await;
    assert_eq!(
        filtered.into_iter().collect::<BTreeSet<_>>(),
        (0..40)
            .step_by(2)
            .map(|n| format!("dev-{n:03}"))
            .collect::<BTreeSet<_>>()
    );
    let none = browser.get("/app/explore/devices?q=no-such-device").await;
    assert!(none.body.contains("No devices match."), "{}", none.body);

    for (path, parameter) in [
        ("/app/explore/devices?sort=size", "sort"),
        ("/app/explore/devices?order=up", "order"),
        ("/app/explore/devices?limit=0", "limit"),
        ("/app/explore/devices?cursor=not-a-cursor", "cursor"),
        ("/app/explore/sessions?sort=name", "sort"),
        ("/app/explore/sites?status=online", "status"),
    ] {
        let page = browser.get(path).await;
        assert_eq!(page.status, 400, "{path}");
        assert!(
            page.body
                .contains(&format!("The {parameter} parameter is not valid")),
            "{path}: {}",
            page.body
        );
    }
    assert_eq!(browser.get("/app/explore/tenants").await.status, 404);

    for path in [
        "/app/explore/devices?q=dev-007",
        "/app/explore/devices/dev-007",
    ] {
        let page = browser.get(path).await;
        assert_eq!(page.status, 200, "{path}");
        for raw in ["<script>alert", "<img src=x"] {
            assert!(!page.body.contains(raw), "{path} shows {raw} unescaped");
        }
        assert!(
            page.body
                .contains("&#60;script&#62;alert(&#34;name&#34;)&#60;/script&#62; &#38; co"),
            "{path}: {}",
            page.body
        );
    }
    let detail = browser.get("/app/explore/devices/dev-007").await;
    assert!(detail.body.contains("&#60;img src=x onerror=alert(1)&#62;"));
    assert!(
        detail
            .body
            .contains(r#"<a href="/app/explore/sites/site-a">site-a</a>"#)
    );
}

#[tokio::test]
async fn a_device_and_its_site_chart_their_own_metrics_of_the_last_day() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let tenant = crate::api::tenant(&database, "Acme").await;
    member(&database, tenant, "viewer@acme.example.com", Role::Viewer).await;
    let source = crate::api::source(&database, tenant).await;
    let mut admin = test_database.admin().await;
    crate::api::read_models(&mut admin, tenant, source, "acme").await;
    drop(admin);
    let mut browser = signed_in(&addr, "viewer@acme.example.com").await;

    for path in [
        "/app/explore/devices/acme-device",
        "/app/explore/sites/acme-site",
    ] {
        let page = browser.get(path).await;
        assert_eq!(page.status, 200, "{path}");
        // One chart per key with readings that day, each with the seeded minute's point.
        assert_eq!(
            page.body
                .matches(r#"<figure class="card panel" data-points="1">"#)
                .count(),
            2,
            "{path}: {}",
            page.body
        );
        assert!(page.body.contains(r#"<svg class="ts-chart""#));
        assert!(page.body.contains("temperature · avg per 5m"));
        assert!(page.body.contains("acme_only · avg per 5m"));
    }
    // A session has no metrics of its own: no charts.
    let session = browser.get("/app/explore/sessions/acme-session").await;
    assert_eq!(session.status, 200);
    assert!(!session.body.contains("ts-chart"));
}

/// An event of `source`'s `public.chargers`.
async fn charger_event(
    database: &store::Database,
    tenant: domain::TenantId,
    source: domain::SourceId,
    change: (&str, i64, i64),
    payload: serde_json::Value,
) {
    crate::masking::bronze_change(
        database,
        tenant,
        source,
        ("public", "chargers"),
        change,
        payload,
    )
    .await;
}

#[tokio::test]
async fn an_entity_shows_its_source_rows_changes_to_those_who_read_bronze_and_only_its_own() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let acme = crate::api::tenant(&database, "Acme").await;
    let globex = crate::api::tenant(&database, "Globex").await;
    member(&database, acme, "operator@acme.example.com", Role::Operator).await;
    member(&database, acme, "viewer@acme.example.com", Role::Viewer).await;
    let source = crate::api::source(&database, acme).await;
    let globex_source = crate::api::source(&database, globex).await;
    let mut admin = test_database.admin().await;
    crate::api::read_models(&mut admin, acme, source, "acme").await;
    crate::api::read_models(&mut admin, globex, globex_source, "globex").await;
    // The device was last written from the event at (lsn 1, seq 0).
    let key = serde_json::json!({"device_id": "acme-device"});
    charger_event(
        &database,
        acme,
        source,
        ("insert", 1, 30),
        serde_json::json!({"key": key, "after": {"device_id": "acme-device", "status": "offline", "owner_email": "hmac-sha256:5e1f"}}),
    )
    .await;
    charger_event(
        &database,
        acme,
        source,
        ("update", 2, 10),
        serde_json::json!({"key": key, "before": {"device_id": "acme-device", "status": "offline", "owner_email": "hmac-sha256:5e1f"}, "after": {"device_id": "acme-device", "status": "online", "owner_email": "hmac-sha256:5e1f"}}),
    )
    .await;
    // Another row of the same table, and tenant B's row with the same key: neither listed.
    charger_event(
        &database,
        acme,
        source,
        ("insert", 3, 5),
        serde_json::json!({"key": {"device_id": "other"}, "after": {"device_id": "other", "status": "other-row"}}),
    )
    .await;
    sqlx::query(
        "update analytics.devices set pos_lsn = 1, pos_seq = 0 where device_id = 'acme-device'",
    )
    .execute(&mut admin)
    .await
    .unwrap();
    charger_event(
        &database,
        globex,
        globex_source,
        ("insert", 1, 5),
        serde_json::json!({"key": key, "after": {"device_id": "acme-device", "status": "globex-secret"}}),
    )
    .await;
    drop(admin);

    let mut operator = signed_in(&addr, "operator@acme.example.com").await;
    let page = operator.get("/app/explore/devices/acme-device").await;
    assert_eq!(page.status, 200);
    let history = &page.body[page.body.find("Changes at the source").expect("a history")..];
    let update = history.find("<td>update</td>").expect("the update");
    let insert = history.find("<td>insert</td>").expect("the insert");
    assert!(update < insert, "newest first");
    assert!(
        history.contains(r#"<li class="changed"><code>status</code> = online"#),
        "{history}"
    );
    assert!(
        history.contains("<code>owner_email</code> = hmac-sha256:5e1f"),
        "masked stays masked"
    );
    assert_eq!(history.matches("<code>public.chargers</code>").count(), 2);
    assert!(!history.contains("other-row") && !history.contains("globex-secret"));

    // A viewer does not read bronze: no history at all.
    let mut viewer = signed_in(&addr, "viewer@acme.example.com").await;
    let page = viewer.get("/app/explore/devices/acme-device").await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("Changes at the source"));
}
