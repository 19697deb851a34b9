//! The alerts API (`/api/v1/alert-rules`, `/api/v1/alert-channels`, `/api/v1/alerts`) as every
//! tenant role, tenant A against tenant B: every route answers as the role model says, and
//! nothing of tenant B's is ever reached or listed.

use domain::{Permission, Role, TenantId};
use serde_json::Value;
use store::Database;
use test_support::TestDatabase;
use uuid::Uuid;

use crate::api::{tenant, token};
use crate::{request, serve};

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"))
}

/// Creates through the API as `bearer`; returns the created object's id.
async fn create(addr: &str, bearer: &str, path: &str, body: &str) -> Uuid {
    let (status, _, response) = request(addr, "POST", path, Some(bearer), body).await;
    assert_eq!(status, 201, "POST {path}: {response}");
    json(&response)["id"].as_str().unwrap().parse().unwrap()
}

/// A firing state of `rule`'s only series, as the evaluator would leave it.
async fn firing(admin: &mut sqlx::PgConnection, tenant: TenantId, rule: Uuid) {
    sqlx::query(
        "insert into control.alert_states (tenant_id, rule_id, series, phase, since) \
         values ($1, $2, '', 'firing', now()) on conflict do nothing",
    )
    .bind(tenant.as_uuid())
    .bind(rule)
    .execute(admin)
    .await
    .unwrap();
}

fn metric_rule(name: &str, channel: Uuid) -> String {
    format!(
        r#"{{"kind": "metric", "name": "{name}", "key": "temperature", "aggregation": "avg",
            "window_secs": 300, "comparison": ">", "threshold": 80, "for_secs": 60,
            "severity": "critical", "labels": {{"team": "grid"}}, "channels": ["{channel}"],
            "description": "{{{{rule}}}} at {{{{value}}}}"}}"#
    )
}

#[tokio::test]
async fn every_alert_route_as_every_role_and_tenant_a_never_reaches_tenant_b() {
    let test_database = TestDatabase::new().await;
    let database: Database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let a = tenant(&database, "Acme").await;
    let b = tenant(&database, "Globex").await;
    let a_admin = token(&database, a, Role::Admin).await;
    let b_admin = token(&database, b, Role::Admin).await;
    let mut admin = test_database.admin().await;

    // Tenant B's channel, rule (firing) and silence.
    let b_channel = create(
        &addr,
        &b_admin,
        "/api/v1/alert-channels",
        r#"{"name": "globex-hook", "kind": "webhook", "target": "https://hooks.globex.example/x"}"#,
    )
    .await;
    let b_rule = create(
        &addr,
        &b_admin,
        "/api/v1/alert-rules",
        &metric_rule("globex-rule", b_channel),
    )
    .await;
    firing(&mut admin, b, b_rule).await;
    let b_silence = create(
        &addr,
        &b_admin,
        "/api/v1/alerts/silences",
        &format!(r#"{{"rule": "{b_rule}", "duration_secs": 3600, "reason": "globex upgrade"}}"#),
    )
    .await;
    // Tenant A's, to read and act on.
    let a_channel = create(
        &addr,
        &a_admin,
        "/api/v1/alert-channels",
        r#"{"name": "acme-slack", "kind": "slack", "target": "https://hooks.slack.example/services/T0/B0/SECRETPART"}"#,
    )
    .await;
    let a_rule = create(
        &addr,
        &a_admin,
        "/api/v1/alert-rules",
        &metric_rule("acme-rule", a_channel),
    )
    .await;
    firing(&mut admin, a, a_rule).await;

    let mut failures = Vec::new();
    for role in Role::TENANT_ROLES {
        let bearer = token(&database, a, role).await;
        // Per role, what it may delete: a rule, a channel and a silence made by the admin.
        let doomed_channel = create(
            &addr,
            &a_admin,
            "/api/v1/alert-channels",
            &format!(r#"{{"name": "doomed-{role}", "kind": "email", "target": "ops-{role}@acme.example"}}"#),
        )
        .await;
        let doomed_rule = create(
            &addr,
            &a_admin,
            "/api/v1/alert-rules",
            &format!(
                r#"{{"kind": "pipeline", "name": "doomed-{role}", "condition": "slot_at_risk"}}"#
            ),
        )
        .await;
        let doomed_silence = create(
            &addr,
            &a_admin,
            "/api/v1/alerts/silences",
            &format!(
                r#"{{"label_key": "team", "label_value": "grid", "duration_secs": 600, "reason": "for {role}"}}"#
            ),
        )
        .await;
        let routes: Vec<(&str, String, String, Permission, u16)> = vec![
            (
                "GET",
                "/api/v1/alert-rules".into(),
                String::new(),
                Permission::ViewDashboards,
                200,
            ),
            (
                "POST",
                "/api/v1/alert-rules".into(),
                metric_rule(&format!("made by {role}"), a_channel),
                Permission::ManageAlertRules,
                201,
            ),
            (
                "GET",
                format!("/api/v1/alert-rules/{a_rule}"),
                String::new(),
                Permission::ViewDashboards,
                200,
            ),
            (
                "PUT",
                format!("/api/v1/alert-rules/{a_rule}"),
                metric_rule("acme-rule", a_channel),
                Permission::ManageAlertRules,
                200,
            ),
            (
                "DELETE",
                format!("/api/v1/alert-rules/{doomed_rule}"),
                String::new(),
                Permission::ManageAlertRules,
                204,
            ),
            (
                "GET",
                "/api/v1/alert-channels".into(),
                String::new(),
                Permission::ViewDashboards,
                200,
            ),
            (
                "POST",
                "/api/v1/alert-channels".into(),
                format!(
                    r#"{{"name": "hook of {role}", "kind": "webhook", "target": "https://hooks.acme.example/{role}"}}"#
                ),
                Permission::ManageAlertRules,
                201,
            ),
            (
                "POST",
                format!("/api/v1/alert-channels/{a_channel}/test"),
                String::new(),
                Permission::ManageAlertRules,
                202,
            ),
            (
                "DELETE",
                format!("/api/v1/alert-channels/{doomed_channel}"),
                String::new(),
                Permission::ManageAlertRules,
                204,
            ),
            (
                "GET",
                "/api/v1/alerts".into(),
                String::new(),
                Permission::ViewDashboards,
                200,
            ),
            (
                "POST",
                "/api/v1/alerts/acknowledge".into(),
                format!(r#"{{"rule": "{a_rule}", "series": ""}}"#),
                Permission::AcknowledgeAlerts,
                204,
            ),
            (
                "POST",
                "/api/v1/alerts/silences".into(),
                format!(r#"{{"rule": "{a_rule}", "duration_secs": 60, "reason": "by {role}"}}"#),
                Permission::AcknowledgeAlerts,
                201,
            ),
            (
                "DELETE",
                format!("/api/v1/alerts/silences/{doomed_silence}"),
                String::new(),
                Permission::AcknowledgeAlerts,
                204,
            ),
        ];
        for (method, path, body, permission, success) in routes {
            let (status, _, response) = request(&addr, method, &path, Some(&bearer), &body).await;
            let expected = if role.allows(permission) {
                success
            } else {
                403
            };
            if status != expected {
                failures.push(format!(
                    "{role} {method} {path}: expected {expected}, got {status} {response}"
                ));
            }
            if status == 200 && method == "GET" && response.to_lowercase().contains("globex") {
                failures.push(format!("{role} GET {path} shows tenant B's: {response}"));
            }
        }

        // Channels' targets: only for the roles that manage rules, and the Slack URL's secret
        // part never.
        let (_, _, listed) =
            request(&addr, "GET", "/api/v1/alert-channels", Some(&bearer), "").await;
        let listed = json(&listed);
        let slack = listed["alert_channels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|channel| channel["name"] == "acme-slack")
            .cloned()
            .unwrap();
        if role.allows(Permission::ManageAlertRules) {
            assert_eq!(
                slack["target"], "https://hooks.slack.example/services/…",
                "{role}"
            );
        } else {
            assert!(slack["target"].is_null(), "{role}: {slack}");
        }
        assert!(!listed.to_string().contains("SECRETPART"));

        // Tenant B's objects do not exist for tenant A's tokens.
        let b_objects: Vec<(&str, String, String, Permission)> = vec![
            (
                "GET",
                format!("/api/v1/alert-rules/{b_rule}"),
                String::new(),
                Permission::ViewDashboards,
            ),
            (
                "PUT",
                format!("/api/v1/alert-rules/{b_rule}"),
                metric_rule("stolen", a_channel),
                Permission::ManageAlertRules,
            ),
            (
                "DELETE",
                format!("/api/v1/alert-rules/{b_rule}"),
                String::new(),
                Permission::ManageAlertRules,
            ),
            (
                "DELETE",
                format!("/api/v1/alert-channels/{b_channel}"),
                String::new(),
                Permission::ManageAlertRules,
            ),
            (
                "POST",
                format!("/api/v1/alert-channels/{b_channel}/test"),
                String::new(),
                Permission::ManageAlertRules,
            ),
            (
                "POST",
                "/api/v1/alerts/acknowledge".into(),
                format!(r#"{{"rule": "{b_rule}", "series": ""}}"#),
                Permission::AcknowledgeAlerts,
            ),
            (
                "POST",
                "/api/v1/alerts/silences".into(),
                format!(r#"{{"rule": "{b_rule}", "duration_secs": 60, "reason": "x"}}"#),
                Permission::AcknowledgeAlerts,
            ),
            (
                "DELETE",
                format!("/api/v1/alerts/silences/{b_silence}"),
                String::new(),
                Permission::AcknowledgeAlerts,
            ),
        ];
        for (method, path, body, permission) in b_objects {
            if !role.allows(permission) {
                continue;
            }
            let (status, _, response) = request(&addr, method, &path, Some(&bearer), &body).await;
            if status != 404 || response.contains("globex") {
                failures.push(format!(
                    "{role} {method} {path} of tenant B: expected 404, got {status} {response}"
                ));
            }
        }
        // A rule naming tenant B's channel is refused, naming the parameter.
        if role.allows(Permission::ManageAlertRules) {
            let (status, _, response) = request(
                &addr,
                "POST",
                "/api/v1/alert-rules",
                Some(&bearer),
                &metric_rule(&format!("borrowing {role}"), b_channel),
            )
            .await;
            assert_eq!(status, 409, "{response}");
            assert_eq!(json(&response)["error"]["details"]["parameter"], "channels");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Tenant B's rule, silence and channel are untouched.
    let (status, _, response) = request(
        &addr,
        "GET",
        &format!("/api/v1/alert-rules/{b_rule}"),
        Some(&b_admin),
        "",
    )
    .await;
    assert_eq!(status, 200, "{response}");
    let detail = json(&response);
    assert_eq!(detail["rule"]["name"], "globex-rule");
    assert!(detail["series"][0]["acked_by"].is_null());
    assert_eq!(detail["rule"]["silenced"], true);

    // What tenant A's members did is on the rule's timeline and in the audit log.
    let (_, _, response) = request(
        &addr,
        "GET",
        &format!("/api/v1/alert-rules/{a_rule}"),
        Some(&a_admin),
        "",
    )
    .await;
    let detail = json(&response);
    let kinds: Vec<&str> = detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"acked"), "{kinds:?}");
    assert!(kinds.contains(&"silenced"), "{kinds:?}");
    assert_eq!(detail["rule"]["severity"], "critical");
    assert_eq!(detail["rule"]["labels"]["team"], "grid");
    let audited: Vec<String> = sqlx::query_scalar(
        "select distinct action from audit.log where tenant_id = $1 and action like 'alert%' \
         order by 1",
    )
    .bind(a.as_uuid())
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(
        audited,
        [
            "alert.acknowledge",
            "alert.silence",
            "alert.unsilence",
            "alert_channel.create",
            "alert_channel.delete",
            "alert_channel.test",
            "alert_rule.create",
            "alert_rule.delete",
            "alert_rule.update"
        ]
    );
}

/// The alert pages and their forms as every tenant role: every member sees the alerts and a
/// rule's page, operators and above acknowledge and silence, owners and admins manage rules and
/// channels; tenant B's rule, channel and silence are not found whatever the role may do, and a
/// rule form naming B's channel is refused naming the parameter.
#[tokio::test]
async fn every_alert_page_and_form_as_every_role_and_tenant_b_is_not_found() {
    use crate::auth::{PASSWORD, member, sign_in};
    use crate::browser::Browser;

    let test_database = TestDatabase::new().await;
    let database: Database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let a = tenant(&database, "Acme").await;
    let b = tenant(&database, "Globex").await;
    let a_admin = token(&database, a, Role::Admin).await;
    let b_admin = token(&database, b, Role::Admin).await;
    let mut admin = test_database.admin().await;
    let b_channel = create(
        &addr,
        &b_admin,
        "/api/v1/alert-channels",
        r#"{"name": "globex-hook", "kind": "webhook", "target": "https://hooks.globex.example/x"}"#,
    )
    .await;
    let b_rule = create(
        &addr,
        &b_admin,
        "/api/v1/alert-rules",
        &metric_rule("globex-rule", b_channel),
    )
    .await;
    firing(&mut admin, b, b_rule).await;
    let b_silence = create(
        &addr,
        &b_admin,
        "/api/v1/alerts/silences",
        &format!(r#"{{"rule": "{b_rule}", "duration_secs": 3600, "reason": "globex upgrade"}}"#),
    )
    .await;
    let a_channel = create(
        &addr,
        &a_admin,
        "/api/v1/alert-channels",
        r#"{"name": "acme-hook", "kind": "webhook", "target": "https://hooks.acme.example/x"}"#,
    )
    .await;
    let a_rule = create(
        &addr,
        &a_admin,
        "/api/v1/alert-rules",
        &metric_rule("acme-rule", a_channel),
    )
    .await;
    firing(&mut admin, a, a_rule).await;
    let (a_channel, b_channel) = (a_channel.to_string(), b_channel.to_string());

    let mut failures = Vec::new();
    for role in Role::TENANT_ROLES {
        let email = format!("{role}@acme.example.com");
        member(&database, a, &email, role).await;
        let mut browser = Browser::new(&addr);
        assert_eq!(sign_in(&mut browser, &email, PASSWORD).await.status, 303);
        let manages = role.allows(Permission::ManageAlertRules);
        let acts = role.allows(Permission::AcknowledgeAlerts);

        for (path, expected) in [
            ("/app/alerts".to_owned(), 200),
            (format!("/app/alerts/rules/{a_rule}"), 200),
            (format!("/app/alerts/rules/{b_rule}"), 404),
            ("/app/alerts/rules/not-a-rule".to_owned(), 404),
        ] {
            let page = browser.get(&path).await;
            crate::site::assert_security_headers(&page, &path);
            if page.status != expected {
                failures.push(format!(
                    "{role} GET {path}: {} (expected {expected})",
                    page.status
                ));
            }
            if page.body.contains("globex") || page.body.contains("Globex") {
                failures.push(format!("{role} GET {path}: shows tenant B"));
            }
            if expected == 200 {
                if !page.body.contains("acme-rule") {
                    failures.push(format!("{role} GET {path}: its own rule is missing"));
                }
                let editor = page.body.contains(r#"name="labels""#);
                if editor != manages {
                    failures.push(format!("{role} GET {path}: rule form shown = {editor}"));
                }
            }
        }

        let doomed_rule = create(
            &addr,
            &a_admin,
            "/api/v1/alert-rules",
            &format!(
                r#"{{"kind": "pipeline", "name": "doomed-{role}", "condition": "slot_at_risk"}}"#
            ),
        )
        .await;
        let doomed_channel = create(
            &addr,
            &a_admin,
            "/api/v1/alert-channels",
            &format!(r#"{{"name": "doomed-{role}", "kind": "email", "target": "ops-{role}@acme.example"}}"#),
        )
        .await;
        let doomed_silence = create(
            &addr,
            &a_admin,
            "/api/v1/alerts/silences",
            &format!(r#"{{"rule": "{a_rule}", "duration_secs": 60, "reason": "doomed {role}"}}"#),
        )
        .await;
        let new_name = format!("made by {role}");
        let rule_fields = |name: &'static str, channel: &str| -> Vec<(&'static str, String)> {
            vec![
                ("name", name.to_owned()),
                ("kind", "metric".into()),
                ("key", "temperature".into()),
                ("aggregation", "max".into()),
                ("window_minutes", "10".into()),
                ("comparison", ">".into()),
                ("threshold", "90".into()),
                ("group_by", "device".into()),
                ("for_minutes", "2".into()),
                ("severity", "critical".into()),
                ("labels", "team=grid, area=north".into()),
                ("channel", channel.to_owned()),
                ("enabled", "on".into()),
            ]
        };
        let own = rule_fields("acme-rule", &a_channel);
        let borrowing = rule_fields("borrowing", &b_channel);
        let mut created = rule_fields("made here", &a_channel);
        created[0].1.clone_from(&new_name);
        // The action, its fields, whether the role may, and the answer when it may.
        type PageForm<'a> = (String, Vec<(&'a str, String)>, bool, u16);
        let forms: Vec<PageForm> = vec![
            ("/app/alerts/rules".into(), created, manages, 303),
            // Tenant B's channel does not exist here: refused, naming the parameter.
            ("/app/alerts/rules".into(), borrowing, manages, 422),
            (
                format!("/app/alerts/rules/{a_rule}"),
                own.clone(),
                manages,
                303,
            ),
            (format!("/app/alerts/rules/{b_rule}"), own, manages, 404),
            (
                format!("/app/alerts/rules/{doomed_rule}/delete"),
                vec![],
                manages,
                303,
            ),
            (
                format!("/app/alerts/rules/{b_rule}/delete"),
                vec![],
                manages,
                404,
            ),
            (
                "/app/alerts/channels".into(),
                vec![
                    ("name", format!("page-{role}")),
                    ("kind", "email".into()),
                    ("target", format!("page-{role}@acme.example")),
                ],
                manages,
                201,
            ),
            (
                format!("/app/alerts/channels/{a_channel}/test"),
                vec![],
                manages,
                303,
            ),
            (
                format!("/app/alerts/channels/{b_channel}/test"),
                vec![],
                manages,
                404,
            ),
            (
                format!("/app/alerts/channels/{doomed_channel}/delete"),
                vec![],
                manages,
                303,
            ),
            (
                format!("/app/alerts/channels/{b_channel}/delete"),
                vec![],
                manages,
                404,
            ),
            (
                "/app/alerts/acknowledge".into(),
                vec![("rule", a_rule.to_string()), ("series", String::new())],
                acts,
                303,
            ),
            (
                "/app/alerts/acknowledge".into(),
                vec![("rule", b_rule.to_string()), ("series", String::new())],
                acts,
                404,
            ),
            (
                "/app/alerts/silences".into(),
                vec![
                    ("rule", a_rule.to_string()),
                    ("hours", "1".into()),
                    ("reason", format!("by {role}")),
                ],
                acts,
                303,
            ),
            (
                "/app/alerts/silences".into(),
                vec![
                    ("rule", b_rule.to_string()),
                    ("hours", "1".into()),
                    ("reason", "x".into()),
                ],
                acts,
                404,
            ),
            (
                format!("/app/alerts/silences/{doomed_silence}/end"),
                vec![],
                acts,
                303,
            ),
            (
                format!("/app/alerts/silences/{b_silence}/end"),
                vec![],
                acts,
                404,
            ),
        ];
        for (action, fields, allowed, allowed_status) in forms {
            let fields: Vec<(&str, &str)> = fields
                .iter()
                .map(|(name, value)| (*name, value.as_str()))
                .collect();
            let page = browser.submit("/app/alerts", &action, &fields).await;
            let expected = if allowed { allowed_status } else { 403 };
            if page.status != expected {
                failures.push(format!(
                    "{role} POST {action}: {} (expected {expected})",
                    page.status
                ));
            }
            if expected == 422 && !page.body.contains("channels: every channel must be") {
                failures.push(format!(
                    "{role} POST {action}: the refusal does not say why"
                ));
            }
            if page.body.contains("globex") || page.body.contains("Globex") {
                failures.push(format!("{role} POST {action}: shows tenant B"));
            }
        }
        if manages {
            // The form saved what it showed: the rule made here, as the API reads it.
            let (_, _, response) =
                request(&addr, "GET", "/api/v1/alert-rules", Some(&a_admin), "").await;
            let listed = json(&response);
            let made = listed["alert_rules"]
                .as_array()
                .unwrap()
                .iter()
                .find(|rule| rule["name"] == new_name.as_str())
                .cloned()
                .unwrap_or_default();
            if made["group_by"] != "device"
                || made["labels"]["area"] != "north"
                || made["for_secs"] != 120
                || made["channels"][0] != a_channel.as_str()
            {
                failures.push(format!("{role}: the created rule reads back as {made}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Tenant B's objects are as B left them.
    let (untouched,): (bool,) = sqlx::query_as(
        "select (select count(*) = 1 from control.alert_rules where tenant_id = $1)             and (select acked_at is null from control.alert_states where rule_id = $2)             and (select ended_at is null from control.alert_silences where silence_id = $3)",
    )
    .bind(b.as_uuid())
    .bind(b_rule)
    .bind(b_silence)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(untouched);
}

/// In a real headless Chromium: an admin adds a channel, creates a rule on the device's
/// temperature, sees on the rule's page where it would have breached over the last day, sees it
/// fire once the evaluator runs, acknowledges it and silences it; nothing in the console.
#[tokio::test]
async fn an_admin_creates_a_rule_sees_it_fire_acknowledges_and_silences_it_in_a_real_browser() {
    use test_support::browser::{
        click, console_errors, fill, screenshot, start_chromium, wait_for_text,
    };

    let test_database = TestDatabase::new().await;
    let database: Database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let acme = tenant(&database, "Acme").await;
    crate::auth::member(&database, acme, "admin@acme.example.com", Role::Admin).await;
    let source = crate::api::source(&database, acme).await;
    let mut admin = test_database.admin().await;
    // A device with a temperature reading of 42 five minutes ago, as the materializer writes.
    crate::api::read_models(&mut admin, acme, source, "acme").await;

    let (_driver, client) = start_chromium().await;
    let base = format!("http://{addr}");
    client.goto(&format!("{base}/auth")).await.unwrap();
    fill(&client, "#signin-email", "admin@acme.example.com").await;
    fill(&client, "#signin-password", crate::auth::PASSWORD).await;
    click(&client, "form.form button[type=submit]").await;
    wait_for_text(&client, r#"href="/app/alerts""#).await;

    client.goto(&format!("{base}/app/alerts")).await.unwrap();
    wait_for_text(&client, "Nothing is firing or pending").await;
    fill(&client, "#channel-name", "On-call hook").await;
    fill(
        &client,
        "#channel-target",
        "https://hooks.acme.example/tributary",
    )
    .await;
    click(&client, "#new-channel button[type=submit]").await;
    wait_for_text(&client, "Its signing secret, shown only now: whsec_").await;

    fill(&client, "#rule-name", "Hot device").await;
    fill(&client, "#rule-key", "temperature").await;
    client
        .find(test_support::browser::Locator::Css("#rule-aggregation"))
        .await
        .unwrap()
        .select_by_value("max")
        .await
        .unwrap();
    fill(&client, "#rule-threshold", "40").await;
    client
        .find(test_support::browser::Locator::Css("#rule-window"))
        .await
        .unwrap()
        .clear()
        .await
        .unwrap();
    fill(&client, "#rule-window", "10").await;
    click(&client, "#rule-channel-1").await;
    click(&client, "#new-rule button[type=submit]").await;
    // The rule's page: the last day against the threshold.
    wait_for_text(&client, "The condition held in 1 of 1 five-minute buckets").await;
    assert!(client.source().await.unwrap().contains("<svg"));
    screenshot(&client, "alert-rule").await;

    // The evaluator (a job of `tributary up`) takes it: it fires.
    let report = pipeline::alerts::evaluate_round(&database, time::OffsetDateTime::now_utc(), 100)
        .await
        .unwrap();
    assert_eq!(report.rules, 1);
    assert_eq!(report.notifications, 1, "one notice to the one channel");
    client.goto(&format!("{base}/app/alerts")).await.unwrap();
    wait_for_text(&client, r#"data-phase="firing""#).await;
    screenshot(&client, "alerts-firing").await;

    click(&client, r#"form[action="/app/alerts/acknowledge"] button"#).await;
    wait_for_text(&client, "Acknowledged: no reminders until it resolves").await;
    assert!(
        !client
            .source()
            .await
            .unwrap()
            .contains(r#"action="/app/alerts/acknowledge""#),
        "acknowledged: no second acknowledgement offered"
    );

    let rule: Uuid = sqlx::query_scalar("select rule_id from control.alert_rules")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    fill(&client, &format!("#reason-{rule}"), "planned maintenance").await;
    click(&client, r#"form[action="/app/alerts/silences"] button"#).await;
    wait_for_text(&client, "Silenced: no notices until the silence ends").await;
    wait_for_text(&client, "planned maintenance").await;
    screenshot(&client, "alerts-silenced").await;
    assert_eq!(console_errors(&client).await, Vec::<String>::new());

    // What the page did is what the store holds.
    let (acked, silenced): (bool, bool) = sqlx::query_as(
        "select (select acked_at is not null from control.alert_states where rule_id = $1), \
                exists (select 1 from control.alert_silences where rule_id = $1 \
                        and reason = 'planned maintenance')",
    )
    .bind(rule)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(acked && silenced);

    // The rest of the page's actions: end the silence, test the channel, silence a label, edit
    // and delete the rule.
    click(&client, r#"form[action$="/end"] button"#).await;
    wait_for_text(&client, "Silence ended.").await;
    click(&client, r#"form[action$="/test"] button"#).await;
    wait_for_text(&client, "Test notice queued").await;
    // A silence of a label's value, for every rule that carries it.
    fill(&client, "#silence-key", "team").await;
    fill(&client, "#silence-value", "grid").await;
    fill(&client, "#silence-reason", "substation maintenance").await;
    click(&client, "#silence-label button[type=submit]").await;
    wait_for_text(&client, "Silenced: no notices until the silence ends").await;
    wait_for_text(&client, "label team = grid").await;
    client
        .goto(&format!("{base}/app/alerts/rules/{rule}"))
        .await
        .unwrap();
    // The editor: a threshold above the reading, and the preview says it would not have fired.
    client
        .find(test_support::browser::Locator::Css(
            "#edit-rule #rule-threshold",
        ))
        .await
        .unwrap()
        .clear()
        .await
        .unwrap();
    fill(&client, "#edit-rule #rule-threshold", "50").await;
    // What it watches is the editor's too: the aggregation.
    client
        .find(test_support::browser::Locator::Css(
            "#edit-rule #rule-aggregation",
        ))
        .await
        .unwrap()
        .select_by_value("min")
        .await
        .unwrap();
    click(&client, "#edit-rule button[type=submit]").await;
    wait_for_text(&client, "The condition held in 0 of 1 five-minute buckets").await;
    wait_for_text(&client, "min of temperature over 10 min &gt; 50").await;
    screenshot(&client, "alert-rule-edited").await;
    click(&client, r#"form[action$="/delete"] button"#).await;
    wait_for_text(&client, "Rule deleted, with its states and timeline.").await;
    let (rules, tests): (i64, i64) = sqlx::query_as(
        "select (select count(*) from control.alert_rules), \
                (select count(*) from pipeline.alert_outbox where notice = 'test')",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!((rules, tests), (0, 1));
    assert_eq!(console_errors(&client).await, Vec::<String>::new());
}
