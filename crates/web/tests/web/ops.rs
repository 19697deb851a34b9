//! Internal operations: staff accounts (granted by the operator CLI) reach the tenant registry,
//! any tenant's audit log, contact requests and the global analytics console, in the app and
//! through `/api/v1/ops`; every tenant role gets 403 there and sees only its own workspace in
//! the registry; the console never shows a cell of fewer than k tenants, nor a minute whose
//! hour minus the shown minutes would reveal one. Also the JSON API
//! authenticated by a browser session, with its anti-forgery header.

use domain::{Email, Role, TenantId};
use serde_json::Value;
use store::{Actor, Database};
use test_support::TestDatabase;

use crate::api::{tenant, token};
use crate::auth::{PASSWORD, member, sign_in};
use crate::browser::{Browser, Page};
use crate::serve;
use crate::site::{assert_designed_html, assert_security_headers};

/// Every operations page, as a path template (`{a}`, `{b}`: the two tenants' ids).
const OPS_PAGES: [&str; 6] = [
    "/app/global",
    "/app/global/export?key=power_kw&format=csv",
    "/app/contact-requests",
    "/app/tenants/{b}/audit",
    "/app/tenants/{a}/audit",
    "/app/tenants/{b}/audit.csv",
];

/// Every operations API endpoint, as (method, path template, JSON body).
const OPS_API: [(&str, &str, &str); 7] = [
    ("GET", "/api/v1/ops/tenants", ""),
    ("GET", "/api/v1/ops/tenants/{b}/audit", ""),
    ("GET", "/api/v1/ops/contact-requests", ""),
    ("GET", "/api/v1/ops/rollups/allowlist", ""),
    (
        "POST",
        "/api/v1/ops/rollups/allowlist",
        r#"{"key": "voltage_v"}"#,
    ),
    ("DELETE", "/api/v1/ops/rollups/allowlist/voltage_v", ""),
    ("GET", "/api/v1/ops/rollups/power_kw", ""),
];

fn fill(template: &str, a: TenantId, b: TenantId) -> String {
    template
        .replace("{a}", &a.to_string())
        .replace("{b}", &b.to_string())
}

fn json(page: &Page) -> Value {
    serde_json::from_str(&page.body).unwrap_or_else(|_| panic!("not JSON: {}", page.body))
}

/// A signed-in staff account with no workspace of its own.
async fn staff(database: &Database, addr: &str) -> Browser {
    let email = Email::parse("ops@tributary.example.com").unwrap();
    let user = store::control::create_user(&database.app, Actor::System("test"), &email, "Ops")
        .await
        .unwrap()
        .user_id;
    store::accounts::set_password_hash(&database.app, user, &web::auth::password::hash(PASSWORD))
        .await
        .unwrap();
    store::accounts::grant_staff(&database.app, Actor::Cli("test".into()), &email)
        .await
        .unwrap();
    let mut browser = Browser::new(addr);
    assert_eq!(
        sign_in(&mut browser, email.as_str(), PASSWORD).await.status,
        303
    );
    browser
}

/// Sends a JSON API call as the browser, with its anti-forgery header when `csrf` is given.
pub async fn api(
    browser: &mut Browser,
    method: &str,
    path: &str,
    body: &str,
    csrf: Option<&str>,
) -> Page {
    let saved = browser.extra_headers.clone();
    if let Some(csrf) = csrf {
        browser
            .extra_headers
            .push(("X-CSRF-Token".into(), csrf.to_owned()));
    }
    let body = (!body.is_empty()).then(|| body.to_owned());
    if body.is_some() {
        browser
            .extra_headers
            .push(("Content-Type".into(), "application/json".into()));
    }
    let page = browser.send(method, path, body).await;
    browser.extra_headers = saved;
    page
}

/// A rollup cell written as the aggregator (the one role that may), `tenants` distinct tenants.
async fn rollup_cell(test_database: &TestDatabase, minutes_ago: i64, region: &str, tenants: i32) {
    let mut aggregator = test_database.service().await;
    sqlx::query("set role tributary_aggregator")
        .execute(&mut aggregator)
        .await
        .unwrap();
    sqlx::query(
        "insert into global_analytics.rollup_min (bucket, key, plan, industry, region, \
         value_sum, value_count, tenant_count) \
         values (date_trunc('minute', now()) - make_interval(mins => $1::int), 'power_kw', \
                 'team', 'energy', $2, 40, 8, $3)",
    )
    .bind(minutes_ago as i32)
    .bind(region)
    .bind(tenants)
    .execute(&mut aggregator)
    .await
    .unwrap();
}

#[tokio::test]
async fn operations_are_for_staff_only_and_tenants_stay_in_their_lane() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let a = tenant(&database, "Acme").await;
    let b = tenant(&database, "Globex").await;
    store::contact::record(
        &database.app,
        &store::contact::ContactRequest {
            name: "Grace Prospect".into(),
            email: "grace@prospect.example.com".into(),
            company: "Prospect Fleet".into(),
            fleet_size: "50-200".into(),
            message: "We run 120 chargers.".into(),
        },
    )
    .await
    .unwrap();

    // Signed out: pages send the browser to sign in; the API answers 401.
    let mut anonymous = Browser::new(&addr);
    for template in OPS_PAGES {
        let path = fill(template, a, b);
        let page = anonymous.get(&path).await;
        assert_eq!(page.status, 303, "{path}");
    }
    for (method, template, body) in OPS_API {
        let page = api(&mut anonymous, method, &fill(template, a, b), body, None).await;
        assert_eq!(page.status, 401, "{method} {template}");
    }

    // Every tenant role: 403 on every operations page and endpoint; the registry is its own
    // workspace only. An API token of the tenant is refused as well.
    let mut failures = Vec::new();
    for role in Role::TENANT_ROLES {
        let email = format!("{role}@acme.example.com");
        member(&database, a, &email, role).await;
        let mut browser = Browser::new(&addr);
        assert_eq!(sign_in(&mut browser, &email, PASSWORD).await.status, 303);
        let overview = browser.get("/app/overview").await;
        let csrf = overview.csrf();
        for template in OPS_PAGES {
            let path = fill(template, a, b);
            let page = browser.get(&path).await;
            if page.status != 403 || page.body.contains("Globex") {
                failures.push(format!("{role} GET {path}: {}", page.status));
            }
        }
        for (path, fields) in [
            ("/app/global/allowlist", vec![("key", "power_kw")]),
            ("/app/global/allowlist/power_kw/remove", vec![]),
        ] {
            let mut fields = fields;
            fields.push(("csrf", &csrf));
            let page = browser.post(path, &fields).await;
            if page.status != 403 {
                failures.push(format!("{role} POST {path}: {}", page.status));
            }
        }
        for (method, template, body) in OPS_API {
            let page = api(
                &mut browser,
                method,
                &fill(template, a, b),
                body,
                Some(&csrf),
            )
            .await;
            if page.status != 403 || json(&page)["error"]["code"] != "forbidden" {
                failures.push(format!(
                    "{role} session {method} {template}: {}",
                    page.status
                ));
            }
        }
        let registry = browser.get("/app/tenants?q=globex").await;
        if registry.status != 200
            || !registry.body.contains("Acme")
            || registry.body.contains("Globex")
        {
            failures.push(format!("{role} /app/tenants: {}", registry.status));
        }
        if overview.body.contains(r#"<a href="/app/global""#) {
            failures.push(format!("{role}: the console is in the navigation"));
        }
    }
    let admin_token = token(&database, a, Role::Admin).await;
    let mut with_token = Browser::new(&addr);
    with_token
        .extra_headers
        .push(("Authorization".into(), format!("Bearer {admin_token}")));
    for (method, template, body) in OPS_API {
        let page = api(&mut with_token, method, &fill(template, a, b), body, None).await;
        if page.status != 403 {
            failures.push(format!("API token {method} {template}: {}", page.status));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Staff: the app starts at the registry, every tenant with its volume, searchable.
    let mut ops = staff(&database, &addr).await;
    let start = ops.get("/app/overview").await;
    assert_eq!(
        (start.status, start.header("location")),
        (303, Some("/app/tenants"))
    );
    let registry = ops.get("/app/tenants").await;
    assert_eq!(registry.status, 200);
    assert_security_headers(&registry, "/app/tenants as staff");
    assert_designed_html(&registry, "/app/tenants as staff");
    assert!(registry.body.contains("Acme") && registry.body.contains("Globex"));
    for (href, _) in web::OPS_PAGES {
        assert!(
            registry.body.contains(&format!(r#"<a href="{href}""#)),
            "staff navigation lacks {href}"
        );
    }
    let searched = ops.get("/app/tenants?q=GLOB").await;
    assert!(searched.body.contains("Globex") && !searched.body.contains(">Acme<"));

    // Any tenant's audit log (and its CSV); an unknown tenant is a 404.
    let audit = ops.get(&format!("/app/tenants/{b}/audit")).await;
    assert_eq!(audit.status, 200);
    assert!(audit.body.contains("Audit log of Globex"), "{}", audit.body);
    assert!(audit.body.contains("tenant.create"));
    assert!(audit.body.contains("Chain verified"));
    let csv = ops.get(&format!("/app/tenants/{b}/audit.csv")).await;
    assert_eq!(csv.status, 200);
    assert!(csv.body.contains("tenant.create"));
    for path in [
        format!("/app/tenants/{}/audit", uuid::Uuid::new_v4()),
        "/app/tenants/not-a-tenant/audit".to_owned(),
    ] {
        assert_eq!(ops.get(&path).await.status, 404, "{path}");
    }
    let contact = ops.get("/app/contact-requests").await;
    assert_eq!(contact.status, 200);
    assert!(contact.body.contains("Prospect Fleet"));

    // The console: allowlist through the page (audited), then cells above k only (k = 3 here).
    let added = ops
        .submit(
            "/app/global",
            "/app/global/allowlist",
            &[("key", "power_kw")],
        )
        .await;
    assert_eq!(added.status, 303);
    let bad = ops
        .submit(
            "/app/global",
            "/app/global/allowlist",
            &[("key", "Power KW")],
        )
        .await;
    assert_eq!(bad.header("location"), Some("/app/global?error=key"));
    rollup_cell(&test_database, 5, "eu", 3).await;
    rollup_cell(&test_database, 4, "us", 2).await;
    rollup_cell(&test_database, 3, "eu", 4).await;
    let console = ops.get("/app/global?key=power_kw&hours=1").await;
    assert_eq!(console.status, 200);
    assert!(
        console.body.contains("<polyline points="),
        "the console draws its chart"
    );
    assert!(console.body.contains("<td>eu</td>"));
    assert!(
        !console.body.contains("<td>us</td>"),
        "a 2-tenant cell is shown"
    );
    assert!(console.body.contains("fewer than 3 distinct tenants"));

    // Exported, the same cells and nothing else, in each format; recorded in the platform chain.
    let before_platform = audit_of(&database, TenantId::PLATFORM).await.len();
    assert!(console.body.contains(
        "/app/global/export?key=power_kw&amp;hours=1&amp;grain=minute&amp;format=parquet"
    ));
    let csv = ops
        .get("/app/global/export?key=power_kw&hours=1&grain=minute&format=csv")
        .await;
    assert_eq!(csv.status, 200);
    assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
    let lines: Vec<&str> = csv
        .body
        .split("\r\n")
        .filter(|line| !line.is_empty())
        .collect();
    assert_eq!(
        lines[0],
        "bucket,key,plan,industry,region,mean,sum,readings,tenants"
    );
    let shown = console.body.matches("<td>eu</td>").count();
    assert_eq!(lines.len() - 1, shown, "{}", csv.body);
    assert!(
        lines[1..]
            .iter()
            .all(|line| line.contains(",power_kw,") && line.contains(",eu,"))
    );
    assert!(!csv.body.contains(",us,"), "a 2-tenant cell is exported");
    let parquet = ops
        .get("/app/global/export?key=power_kw&hours=1&grain=minute&format=parquet")
        .await;
    assert_eq!(parquet.status, 200);
    assert_eq!(
        parquet.header("content-type"),
        Some("application/vnd.apache.parquet")
    );
    assert!(
        parquet
            .header("content-disposition")
            .unwrap()
            .ends_with(".parquet\"")
    );
    let unknown = ops
        .get("/app/global/export?key=nothing_here&format=csv")
        .await;
    assert_eq!(unknown.status, 404);
    let platform = audit_of(&database, TenantId::PLATFORM).await;
    let exports: Vec<_> = platform[..platform.len() - before_platform]
        .iter()
        .filter(|entry| entry.action == "global_analytics.export")
        .collect();
    assert_eq!(exports.len(), 2);
    assert_eq!(exports[1].details["format"], "csv");
    assert_eq!(exports[1].details["cells"], shown);
    assert_eq!(exports[0].details["format"], "parquet");

    // The same through the operations API with the staff session.
    let csrf = ops.get("/app/global").await.csrf();
    let tenants = api(&mut ops, "GET", "/api/v1/ops/tenants?q=acme", "", None).await;
    assert_eq!(tenants.status, 200);
    let tenants = json(&tenants);
    assert_eq!(tenants["tenants"].as_array().unwrap().len(), 1);
    assert_eq!(tenants["tenants"][0]["name"], "Acme");
    assert!(tenants["tenants"][0]["events_7d"].is_i64());
    let cells = json(&api(&mut ops, "GET", "/api/v1/ops/rollups/power_kw", "", None).await);
    assert_eq!(cells["min_cohort"], 3);
    let counts: Vec<i64> = cells["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|cell| cell["tenant_count"].as_i64().unwrap())
        .collect();
    assert_eq!(counts, [3, 4]);
    let bad_range = api(
        &mut ops,
        "GET",
        "/api/v1/ops/rollups/power_kw?granularity=week",
        "",
        None,
    )
    .await;
    assert_eq!(bad_range.status, 400);
    assert_eq!(
        json(&bad_range)["error"]["details"]["parameter"],
        "granularity"
    );
    let audit = json(
        &api(
            &mut ops,
            "GET",
            &format!("/api/v1/ops/tenants/{b}/audit"),
            "",
            None,
        )
        .await,
    );
    assert_eq!(audit["chain"]["intact"], true);
    let entries = audit["entries"].as_array().unwrap();
    assert!(
        entries
            .iter()
            .any(|entry| entry["action"] == "tenant.create")
    );
    assert!(
        !audit.to_string().contains(&a.to_string()),
        "tenant B's log mentions tenant A"
    );

    // State changes from a session need the anti-forgery header; bad keys say which field.
    let forged = api(
        &mut ops,
        "POST",
        "/api/v1/ops/rollups/allowlist",
        r#"{"key": "voltage_v"}"#,
        None,
    )
    .await;
    assert_eq!(forged.status, 403);
    assert_eq!(json(&forged)["error"]["details"]["header"], "X-CSRF-Token");
    let wrong = api(
        &mut ops,
        "POST",
        "/api/v1/ops/rollups/allowlist",
        r#"{"key": "voltage_v"}"#,
        Some("0000"),
    )
    .await;
    assert_eq!(wrong.status, 403);
    let invalid = api(
        &mut ops,
        "POST",
        "/api/v1/ops/rollups/allowlist",
        r#"{"key": "Volts!"}"#,
        Some(&csrf),
    )
    .await;
    assert_eq!(invalid.status, 400);
    assert_eq!(json(&invalid)["error"]["details"]["field"], "key");
    let created = api(
        &mut ops,
        "POST",
        "/api/v1/ops/rollups/allowlist",
        r#"{"key": "voltage_v"}"#,
        Some(&csrf),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let removed = api(
        &mut ops,
        "DELETE",
        "/api/v1/ops/rollups/allowlist/voltage_v?purge=true",
        "",
        Some(&csrf),
    )
    .await;
    assert_eq!(
        (removed.status, json(&removed)["status"].as_str()),
        (200, Some("purging"))
    );
    let unknown = api(
        &mut ops,
        "DELETE",
        "/api/v1/ops/rollups/allowlist/never_added",
        "",
        Some(&csrf),
    )
    .await;
    assert_eq!(unknown.status, 404);
    let keys = json(&api(&mut ops, "GET", "/api/v1/ops/rollups/allowlist", "", None).await);
    let listed: Vec<(&str, bool)> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| (key["key"].as_str().unwrap(), key["retired_at"].is_null()))
        .collect();
    assert_eq!(listed, [("power_kw", true), ("voltage_v", false)]);
    // Staff work is audited in the platform chain under the staff member's own name.
    let mut service = test_database.service().await;
    let actions: Vec<(String, String)> = sqlx::query_as(
        "select action, actor_type from audit.log where tenant_id = $1 \
         and action like 'rollup_allowlist.%' order by seq",
    )
    .bind(TenantId::PLATFORM.as_uuid())
    .fetch_all(&mut service)
    .await
    .unwrap();
    assert_eq!(
        actions,
        [
            ("rollup_allowlist.add".to_owned(), "user".to_owned()),
            ("rollup_allowlist.add".to_owned(), "user".to_owned()),
            ("rollup_allowlist.remove".to_owned(), "user".to_owned()),
        ]
    );

    // A revoked staff member's session ends at once.
    store::accounts::revoke_staff(
        &database.app,
        Actor::Cli("test".into()),
        &Email::parse("ops@tributary.example.com").unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(ops.get("/app/global").await.status, 303);
}

#[tokio::test]
async fn the_json_api_takes_a_browser_session_with_its_anti_forgery_header() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let a = tenant(&database, "Acme").await;
    let b = tenant(&database, "Globex").await;
    member(&database, a, "owner@acme.example.com", Role::Owner).await;
    member(&database, a, "viewer@acme.example.com", Role::Viewer).await;
    member(&database, b, "owner@globex.example.com", Role::Owner).await;

    let mut owner = Browser::new(&addr);
    sign_in(&mut owner, "owner@acme.example.com", PASSWORD).await;
    let csrf = owner.get("/app/overview").await.csrf();
    let body = r#"{"name": "acme-db", "kind": "postgres"}"#;
    let forged = api(&mut owner, "POST", "/api/v1/sources", body, None).await;
    assert_eq!(forged.status, 403);
    assert_eq!(json(&forged)["error"]["code"], "forbidden");
    // From another site, even with the right token.
    owner
        .extra_headers
        .push(("Sec-Fetch-Site".into(), "cross-site".into()));
    let cross = api(&mut owner, "POST", "/api/v1/sources", body, Some(&csrf)).await;
    assert_eq!(cross.status, 403);
    owner.extra_headers.clear();
    let created = api(&mut owner, "POST", "/api/v1/sources", body, Some(&csrf)).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let listed = json(&api(&mut owner, "GET", "/api/v1/sources", "", None).await);
    let names: Vec<&str> = listed["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|source| source["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["acme-db"]);

    // Another tenant's session sees its own (none), and a viewer's role is the limit.
    let mut globex = Browser::new(&addr);
    sign_in(&mut globex, "owner@globex.example.com", PASSWORD).await;
    let theirs = json(&api(&mut globex, "GET", "/api/v1/sources", "", None).await);
    assert_eq!(theirs["sources"].as_array().unwrap().len(), 0);
    let mut viewer = Browser::new(&addr);
    sign_in(&mut viewer, "viewer@acme.example.com", PASSWORD).await;
    let viewer_csrf = viewer.get("/app/overview").await.csrf();
    let refused = api(&mut viewer, "GET", "/api/v1/sources", "", None).await;
    assert_eq!(refused.status, 403);
    let refused = api(
        &mut viewer,
        "POST",
        "/api/v1/sources",
        body,
        Some(&viewer_csrf),
    )
    .await;
    assert_eq!(refused.status, 403);
    assert_eq!(
        json(&refused)["error"]["message"],
        "the viewer role does not allow this"
    );

    // A bad bearer token is judged alone, even next to a valid session cookie.
    owner
        .extra_headers
        .push(("Authorization".into(), "Bearer tat1.nonsense".into()));
    assert_eq!(
        api(&mut owner, "GET", "/api/v1/sources", "", None)
            .await
            .status,
        401
    );
    owner.extra_headers.clear();

    // The API describes itself, to anyone.
    let document = api(
        &mut Browser::new(&addr),
        "GET",
        "/api/v1/openapi.json",
        "",
        None,
    )
    .await;
    assert_eq!(document.status, 200);
    let document = json(&document);
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(
        document["paths"]["/api/v1/sources"]["post"]["requestBody"]["content"]["application/json"]
            ["schema"]["$ref"],
        "#/components/schemas/NewSource"
    );
    assert!(
        document["paths"]["/api/v1/ops/rollups/{key}"]["get"]["description"]
            .as_str()
            .unwrap()
            .contains("Internal operations staff only")
    );

    // Signed out, the cookie no longer authenticates.
    let signed_out = owner.submit("/app/overview", "/auth/sign-out", &[]).await;
    assert_eq!(signed_out.status, 303);
    let after = api(&mut owner, "GET", "/api/v1/sources", "", None).await;
    assert_eq!(after.status, 401);
    assert_eq!(json(&after)["error"]["details"], serde_json::json!({}));
}

/// The hour-minus-minutes attack through the console and the API (k = 3 here): an hour of 8
/// tenants whose minutes hold 6, 6 and 2 tenants. Subtracting the two large minutes from the
/// hour would give the 2-tenant minute, so both callers withhold one large minute with it.
#[tokio::test]
async fn the_console_and_the_api_withhold_a_minute_that_would_reveal_a_cohort_by_subtraction() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let mut ops = staff(&database, &addr).await;
    let added = ops
        .submit(
            "/app/global",
            "/app/global/allowlist",
            &[("key", "power_kw")],
        )
        .await;
    assert_eq!(added.status, 303);
    let mut aggregator = test_database.service().await;
    sqlx::query("set role tributary_aggregator")
        .execute(&mut aggregator)
        .await
        .unwrap();
    // (minutes after the hour, or none for the hour cell; readings, tenants)
    for (minute, readings, tenants) in [
        (None, 14, 8),
        (Some(0), 6, 6),
        (Some(1), 6, 6),
        (Some(10), 2, 2),
    ] {
        let table = if minute.is_some() {
            "rollup_min"
        } else {
            "rollup_hr"
        };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "insert into global_analytics.{table} (bucket, key, plan, industry, region, \
             value_sum, value_count, tenant_count) \
             values (date_trunc('hour', now()) - interval '2 hours' \
                         + make_interval(mins => $1::int), \
                     'power_kw', 'team', 'energy', 'apac', $2, $2, $3)"
        )))
        .bind(minute.unwrap_or(0))
        .bind(readings)
        .bind(tenants)
        .execute(&mut aggregator)
        .await
        .unwrap();
    }
    let cells = |body: &Value| -> Vec<(i64, i64)> {
        body["cells"]
            .as_array()
            .unwrap()
            .iter()
            .map(|cell| {
                (
                    cell["value_count"].as_i64().unwrap(),
                    cell["tenant_count"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    let hours = json(
        &api(
            &mut ops,
            "GET",
            "/api/v1/ops/rollups/power_kw?granularity=hour",
            "",
            None,
        )
        .await,
    );
    assert_eq!(cells(&hours), [(14, 8)]);
    let minutes = json(&api(&mut ops, "GET", "/api/v1/ops/rollups/power_kw", "", None).await);
    // Minute 0 is withheld with minute 10: the hour minus minute 1 holds 8 readings.
    assert_eq!(cells(&minutes), [(6, 6)]);
    assert!(
        minutes["cells"][0]["bucket"]
            .as_str()
            .unwrap()
            .contains(":01:00")
    );
    let console = ops
        .get("/app/global?key=power_kw&hours=24&grain=minute")
        .await;
    assert_eq!(console.status, 200);
    assert_eq!(console.body.matches("<td>apac</td>").count(), 1);
    assert!(console.body.contains("recovered by subtraction"));
}

/// A tenant's audit entries, newest first.
async fn audit_of(database: &Database, tenant: TenantId) -> Vec<store::audit::AuditRecord> {
    let mut tx = store::TenantTx::begin(
        &database.app,
        store::Scope::InternalOps {
            tenant: Some(tenant),
            actor: Actor::System("test"),
        },
    )
    .await
    .unwrap();
    let entries = store::audit::list(&mut tx, 1000).await.unwrap();
    tx.rollback().await.unwrap();
    entries
}

#[tokio::test]
async fn staff_reads_of_a_tenants_audit_log_are_recorded_in_that_tenants_chain_only() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let a = tenant(&database, "Acme").await;
    let b = tenant(&database, "Globex").await;
    let mut ops = staff(&database, &addr).await;
    let staff_id = store::accounts::list_staff(&database.app).await.unwrap()[0]
        .user_id
        .to_string();
    let before_a = audit_of(&database, a).await.len();
    let before_platform = audit_of(&database, TenantId::PLATFORM).await.len();

    // The page, the CSV and the API, each with its filter.
    let page = ops
        .get(&format!("/app/tenants/{b}/audit?action=tenant.&actor=cli"))
        .await;
    assert_eq!(page.status, 200);
    let csv = ops.get(&format!("/app/tenants/{b}/audit.csv")).await;
    assert_eq!(csv.status, 200);
    let api_read = api(
        &mut ops,
        "GET",
        &format!("/api/v1/ops/tenants/{b}/audit?action=member.&limit=7"),
        "",
        None,
    )
    .await;
    assert_eq!(api_read.status, 200);
    assert_eq!(json(&api_read)["chain"]["intact"], true);
    // A refused read (a bad filter) and an unknown tenant record nothing anywhere.
    let bad = api(
        &mut ops,
        "GET",
        &format!("/api/v1/ops/tenants/{b}/audit?actor=root"),
        "",
        None,
    )
    .await;
    assert_eq!(bad.status, 400);
    let unknown = uuid::Uuid::new_v4();
    assert_eq!(
        ops.get(&format!("/app/tenants/{unknown}/audit.csv"))
            .await
            .status,
        404
    );

    let entries = audit_of(&database, b).await;
    let reads: Vec<(String, Value)> = entries
        .iter()
        .filter(|entry| entry.actor_id == staff_id)
        .map(|entry| {
            assert_eq!(
                (entry.action.as_str(), entry.actor_type.as_str()),
                ("audit.read_by_staff", "user"),
                "staff wrote something other than a read record: {entry:?}"
            );
            (entry.target.clone(), entry.details.clone())
        })
        .collect();
    assert_eq!(
        reads,
        [
            (
                "audit.log".to_owned(),
                serde_json::json!({"view": "api", "action_prefix": "member.", "actor_type": null,
                                   "before_seq": null, "limit": 7})
            ),
            (
                "audit.log".to_owned(),
                serde_json::json!({"view": "csv", "action_prefix": null, "actor_type": null,
                                   "before_seq": null, "limit": null})
            ),
            (
                "audit.log".to_owned(),
                serde_json::json!({"view": "page", "action_prefix": "tenant.",
                                   "actor_type": "cli", "before_seq": null, "limit": 50})
            ),
        ],
        "newest first"
    );
    // The page shows its own read to whoever opens the log next; the chain verifies.
    let again = ops.get(&format!("/app/tenants/{b}/audit")).await;
    assert!(again.body.contains("audit.read_by_staff"));
    assert!(again.body.contains("Chain verified"), "{}", again.body);
    let reports = store::service::audit::verify(&database.service, None)
        .await
        .unwrap();
    assert!(
        reports.iter().all(|report| report.is_intact()),
        "{reports:?}"
    );

    // Acme's chain and the platform's are untouched by reads of Globex.
    assert_eq!(audit_of(&database, a).await.len(), before_a);
    assert_eq!(
        audit_of(&database, TenantId::PLATFORM).await.len(),
        before_platform
    );
    // A tenant's admins see the read in their own log.
    member(&database, b, "admin@globex.example.com", Role::Admin).await;
    let mut browser = Browser::new(&addr);
    sign_in(&mut browser, "admin@globex.example.com", PASSWORD).await;
    let own = browser.get("/app/audit?action=audit.read_by_staff").await;
    assert_eq!(own.status, 200);
    assert_eq!(
        own.body.matches("<code>audit.read_by_staff</code>").count(),
        4
    );
}
