//! Reports through the API and the pages as every tenant role, tenant A against tenant B: every
//! route answers as the role model says, a download is refused to another tenant, to a role
//! that may not read the dataset and once expired; and in a real browser an admin defines a
//! report, runs it and downloads its file.

use domain::{Permission, Role, TenantId, UserId};
use serde_json::Value;
use store::Database;
use test_support::TestDatabase;
use uuid::Uuid;

use crate::api::{tenant, token};
use crate::{request, serve};

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"))
}

/// Defines `body` as `bearer`; returns the report's id.
async fn define(addr: &str, bearer: &str, body: &str) -> Uuid {
    let (status, _, response) = request(addr, "POST", "/api/v1/reports", Some(bearer), body).await;
    assert_eq!(status, 201, "{response}");
    json(&response)["id"].as_str().unwrap().parse().unwrap()
}

/// A finished run of `report` asked by `user` (a member in `role`), its file written.
async fn finished_run(
    database: &Database,
    tenant: TenantId,
    report: Uuid,
    user: UserId,
    role: Role,
) -> Uuid {
    let mut tx = store::TenantTx::begin(&database.app, store::Scope::Member { tenant, user, role })
        .await
        .unwrap();
    let run = store::reports::request_run(&mut tx, report, Some(user), role)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let finished = ::reports::Runner::new(database.clone(), crate::exports())
        .run_next()
        .await
        .unwrap()
        .unwrap();
    assert_eq!((finished.run, finished.failure), (run.id, None));
    run.id
}

/// Schedules `report` as `bearer` with `body`; returns the schedule's id.
async fn schedule(addr: &str, bearer: &str, report: Uuid, body: &str) -> Uuid {
    let (status, _, response) = request(
        addr,
        "POST",
        &format!("/api/v1/reports/{report}/schedules"),
        Some(bearer),
        body,
    )
    .await;
    assert_eq!(status, 201, "{response}");
    json(&response)["id"].as_str().unwrap().parse().unwrap()
}

/// A mail channel of `tenant`, made by an owner.
async fn channel(database: &Database, tenant: TenantId, name: &str) -> Uuid {
    let mut tx = crate::api::owner(database, tenant).await;
    let created = store::alerts::create_channel(
        &mut tx,
        &web::alerting::channel_secrets(&secrecy::SecretString::from(
            crate::TEST_MASTER_SECRET.to_owned(),
        )),
        name,
        store::alerts::ChannelKind::Email,
        "finance@example.com",
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    created.id
}

/// A status, and for a 409 the parameter it names.
type Expected = (u16, Option<&'static str>);

const WEEKDAYS: &str = r#"{"cron": "0 8 * * 1-5", "time_zone": "Europe/Berlin"}"#;

const DEVICES: &str =
    r#"{"name": "devices", "dataset": "devices", "format": "csv", "columns": ["id", "name"]}"#;
const AUDIT: &str = r#"{"name": "audit", "dataset": "audit_log", "format": "jsonl", "filters": {"last_hours": 24}}"#;

#[tokio::test]
async fn every_report_route_as_every_role_and_tenant_b_is_never_reached() {
    let test_database = TestDatabase::new().await;
    let database: Database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let a = tenant(&database, "Acme").await;
    let b = tenant(&database, "Globex").await;
    let a_admin = token(&database, a, Role::Admin).await;
    let b_admin = token(&database, b, Role::Admin).await;
    let mut admin = test_database.admin().await;
    let source = crate::api::source(&database, a).await;
    crate::api::read_models(&mut admin, a, source, "acme").await;
    let b_source = crate::api::source(&database, b).await;
    crate::api::read_models(&mut admin, b, b_source, "globex").await;

    let a_devices = define(&addr, &a_admin, DEVICES).await;
    let a_audit = define(&addr, &a_admin, AUDIT).await;
    let b_devices = define(&addr, &b_admin, DEVICES).await;
    let a_owner = crate::auth::member(&database, a, "owner@acme.example.com", Role::Owner).await;
    let b_owner = crate::auth::member(&database, b, "owner@globex.example.com", Role::Owner).await;
    let a_devices_run = finished_run(&database, a, a_devices, a_owner, Role::Owner).await;
    let a_audit_run = finished_run(&database, a, a_audit, a_owner, Role::Owner).await;
    let b_run = finished_run(&database, b, b_devices, b_owner, Role::Owner).await;

    let mut failures = Vec::new();
    for role in Role::TENANT_ROLES {
        let bearer = token(&database, a, role).await;
        let manages = role.allows(Permission::ManageReports);
        let audits = role.allows(Permission::ViewAudit);
        let cases: Vec<(&str, String, String, u16)> = vec![
            ("GET", "/api/v1/reports".into(), String::new(), 200),
            (
                "POST",
                "/api/v1/reports".into(),
                format!(
                    r#"{{"name": "by {role}", "dataset": "metrics_hour", "format": "parquet", "filters": {{"last_hours": 48, "key": "temperature"}}}}"#
                ),
                if manages { 201 } else { 403 },
            ),
            (
                "GET",
                format!("/api/v1/reports/{a_devices}"),
                String::new(),
                200,
            ),
            (
                "PUT",
                format!("/api/v1/reports/{a_devices}"),
                DEVICES.into(),
                if manages { 200 } else { 403 },
            ),
            (
                "GET",
                format!("/api/v1/reports/{a_devices}/runs"),
                String::new(),
                200,
            ),
            (
                "POST",
                format!("/api/v1/reports/{a_devices}/runs"),
                String::new(),
                202,
            ),
            (
                "POST",
                format!("/api/v1/reports/{a_audit}/runs"),
                String::new(),
                if audits { 202 } else { 403 },
            ),
            (
                "GET",
                format!("/api/v1/report-runs/{a_devices_run}"),
                String::new(),
                200,
            ),
            (
                "GET",
                format!("/api/v1/report-runs/{a_devices_run}/download"),
                String::new(),
                200,
            ),
            (
                "GET",
                format!("/api/v1/report-runs/{a_audit_run}/download"),
                String::new(),
                if audits { 200 } else { 403 },
            ),
            // A definition the schema admits but whose range ends before it starts.
            (
                "POST",
                "/api/v1/reports".into(),
                r#"{"name": "backwards", "dataset": "audit_log", "format": "csv", "filters": {"from": "2026-02-02T00:00:00Z", "to": "2026-02-01T00:00:00Z"}}"#.into(),
                if manages { 409 } else { 403 },
            ),
            (
                "POST",
                "/api/v1/reports".into(),
                r#"{"name": "no such day", "dataset": "audit_log", "format": "csv", "filters": {"from": "2026-02-30T00:00:00Z", "to": "2026-03-02T00:00:00Z"}}"#.into(),
                if manages { 409 } else { 403 },
            ),
            // Tenant B's report and run do not exist for tenant A.
            (
                "GET",
                format!("/api/v1/reports/{b_devices}"),
                String::new(),
                404,
            ),
            (
                "PUT",
                format!("/api/v1/reports/{b_devices}"),
                DEVICES.into(),
                if manages { 404 } else { 403 },
            ),
            (
                "DELETE",
                format!("/api/v1/reports/{b_devices}"),
                String::new(),
                if manages { 404 } else { 403 },
            ),
            (
                "POST",
                format!("/api/v1/reports/{b_devices}/runs"),
                String::new(),
                404,
            ),
            (
                "GET",
                format!("/api/v1/report-runs/{b_run}"),
                String::new(),
                404,
            ),
            (
                "GET",
                format!("/api/v1/report-runs/{b_run}/download"),
                String::new(),
                404,
            ),
        ];
        for (method, path, body, expected) in cases {
            let (status, _, response) = request(&addr, method, &path, Some(&bearer), &body).await;
            if status != expected {
                failures.push(format!(
                    "{role} {method} {path}: {status} (expected {expected}) {response}"
                ));
            }
            if response.contains("globex") || response.contains("Globex") {
                failures.push(format!("{role} {method} {path}: shows tenant B"));
            }
        }
        if manages {
            let (_, _, response) =
                request(&addr, "GET", "/api/v1/reports", Some(&bearer), "").await;
            let names: Vec<String> = json(&response)["reports"]
                .as_array()
                .unwrap()
                .iter()
                .map(|report| report["name"].as_str().unwrap().to_owned())
                .collect();
            if !names.contains(&format!("by {role}")) {
                failures.push(format!("{role}: its report is not listed: {names:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The file is what the run wrote: Acme's devices, never Globex's.
    let (status, headers, body) = request(
        &addr,
        "GET",
        &format!("/api/v1/report-runs/{a_devices_run}/download"),
        Some(&a_admin),
        "",
    )
    .await;
    assert_eq!(status, 200);
    let header = |name: &str| {
        headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.clone())
            .unwrap_or_default()
    };
    assert_eq!(header("content-type"), "text/csv; charset=utf-8");
    assert!(header("content-disposition").starts_with("attachment; filename=\"devices-"));
    assert!(body.starts_with("id,name\r\n") && body.contains("acme") && !body.contains("globex"));

    // An expired file is gone, and says so.
    sqlx::query(
        "update control.report_runs set expires_at = now() - interval '1 minute' where run_id = $1",
    )
    .bind(a_devices_run)
    .execute(&mut admin)
    .await
    .unwrap();
    let (status, _, response) = request(
        &addr,
        "GET",
        &format!("/api/v1/report-runs/{a_devices_run}/download"),
        Some(&a_admin),
        "",
    )
    .await;
    assert_eq!(status, 410, "{response}");
    assert_eq!(json(&response)["error"]["code"], "expired");
    // Deleting a report keeps its runs; a run not finished has no file yet.
    let (status, _, _) = request(
        &addr,
        "DELETE",
        &format!("/api/v1/reports/{a_audit}"),
        Some(&a_admin),
        "",
    )
    .await;
    assert_eq!(status, 204);
    let (status, _, response) = request(
        &addr,
        "GET",
        &format!("/api/v1/report-runs/{a_audit_run}"),
        Some(&a_admin),
        "",
    )
    .await;
    assert_eq!(status, 200, "{response}");
    assert!(json(&response)["report_id"].is_null());
    let queued: Uuid = sqlx::query_scalar(
        "select run_id from control.report_runs where tenant_id = $1 and status = 'queued' limit 1",
    )
    .bind(a.as_uuid())
    .fetch_one(&mut admin)
    .await
    .unwrap();
    let (status, _, response) = request(
        &addr,
        "GET",
        &format!("/api/v1/report-runs/{queued}/download"),
        Some(&a_admin),
        "",
    )
    .await;
    assert_eq!(status, 409, "{response}");
    assert_eq!(json(&response)["error"]["code"], "not_ready");
}

#[tokio::test]
async fn every_schedule_route_as_every_role_and_tenant_b_is_never_reached() {
    let test_database = TestDatabase::new().await;
    let database: Database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let a = tenant(&database, "Acme").await;
    let b = tenant(&database, "Globex").await;
    let a_admin = token(&database, a, Role::Admin).await;
    let b_admin = token(&database, b, Role::Admin).await;
    let a_report = define(&addr, &a_admin, DEVICES).await;
    let b_report = define(&addr, &b_admin, DEVICES).await;
    let a_channel = channel(&database, a, "acme finance").await;
    let b_channel = channel(&database, b, "globex finance").await;
    let a_schedule = schedule(
        &addr,
        &a_admin,
        a_report,
        &format!(r#"{{"cron": "30 6 1 * *", "time_zone": "UTC", "channels": ["{a_channel}"]}}"#),
    )
    .await;
    let b_schedule = schedule(&addr, &b_admin, b_report, WEEKDAYS).await;

    let mut failures = Vec::new();
    for role in Role::TENANT_ROLES {
        let bearer = token(&database, a, role).await;
        let manages = role.allows(Permission::ManageReports);
        let refused = |parameter: &'static str| (if manages { 409 } else { 403 }, Some(parameter));
        let cases: Vec<(&str, String, String, Expected)> = vec![
            (
                "GET",
                format!("/api/v1/reports/{a_report}/schedules"),
                String::new(),
                (200, None),
            ),
            (
                "POST",
                format!("/api/v1/reports/{a_report}/schedules"),
                format!(
                    r#"{{"cron": "0 7 * * 1", "time_zone": "America/New_York", "channels": ["{a_channel}"], "enabled": false}}"#
                ),
                (if manages { 201 } else { 403 }, None),
            ),
            (
                "POST",
                format!("/api/v1/reports/{a_report}/schedules"),
                r#"{"cron": "*/1 * * * *", "time_zone": "UTC"}"#.into(),
                refused("cron"),
            ),
            (
                "POST",
                format!("/api/v1/reports/{a_report}/schedules"),
                r#"{"cron": "0 8 * * mon-fri", "time_zone": "Mars/Olympus"}"#.into(),
                refused("time_zone"),
            ),
            (
                "POST",
                format!("/api/v1/reports/{a_report}/schedules"),
                format!(
                    r#"{{"cron": "0 8 * * *", "time_zone": "UTC", "channels": ["{b_channel}"]}}"#
                ),
                refused("channels"),
            ),
            (
                "GET",
                format!("/api/v1/report-schedules/{a_schedule}"),
                String::new(),
                (200, None),
            ),
            (
                "PUT",
                format!("/api/v1/report-schedules/{a_schedule}"),
                format!(
                    r#"{{"cron": "30 6 1 * *", "time_zone": "UTC", "channels": ["{a_channel}"]}}"#
                ),
                (if manages { 200 } else { 403 }, None),
            ),
            // Tenant B's report and schedule do not exist for tenant A.
            (
                "GET",
                format!("/api/v1/reports/{b_report}/schedules"),
                String::new(),
                (404, None),
            ),
            (
                "POST",
                format!("/api/v1/reports/{b_report}/schedules"),
                WEEKDAYS.into(),
                (if manages { 404 } else { 403 }, None),
            ),
            (
                "GET",
                format!("/api/v1/report-schedules/{b_schedule}"),
                String::new(),
                (404, None),
            ),
            (
                "PUT",
                format!("/api/v1/report-schedules/{b_schedule}"),
                WEEKDAYS.into(),
                (if manages { 404 } else { 403 }, None),
            ),
            (
                "DELETE",
                format!("/api/v1/report-schedules/{b_schedule}"),
                String::new(),
                (if manages { 404 } else { 403 }, None),
            ),
        ];
        for (method, path, body, (expected, parameter)) in cases {
            let (status, _, response) = request(&addr, method, &path, Some(&bearer), &body).await;
            if status != expected {
                failures.push(format!(
                    "{role} {method} {path} {body}: {status} (expected {expected}) {response}"
                ));
            } else if status == 409
                && json(&response)["error"]["details"]["parameter"] != parameter.unwrap()
            {
                failures.push(format!(
                    "{role} {method} {body}: names the wrong field {response}"
                ));
            }
            if response.contains("globex") {
                failures.push(format!("{role} {method} {path}: shows tenant B"));
            }
        }
        // A run's deliveries are shown to those who see the channels' deliveries.
        let (_, _, response) = request(
            &addr,
            "POST",
            &format!("/api/v1/reports/{a_report}/runs"),
            Some(&bearer),
            "",
        )
        .await;
        let run = json(&response)["id"].as_str().unwrap().to_owned();
        let (_, _, response) = request(
            &addr,
            "GET",
            &format!("/api/v1/report-runs/{run}"),
            Some(&bearer),
            "",
        )
        .await;
        let shown = json(&response).get("deliveries").is_some();
        if shown != role.allows(Permission::AcknowledgeAlerts) {
            failures.push(format!("{role}: deliveries shown = {shown}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The schedule reads back as saved, with its next occurrences in its time zone.
    let (status, _, response) = request(
        &addr,
        "GET",
        &format!("/api/v1/report-schedules/{a_schedule}"),
        Some(&a_admin),
        "",
    )
    .await;
    assert_eq!(status, 200);
    let found = json(&response);
    assert_eq!(found["cron"], "30 6 1 * *");
    assert_eq!(found["channels"][0], a_channel.to_string());
    let upcoming = found["upcoming"].as_array().unwrap();
    assert_eq!(upcoming.len(), 3);
    assert!(
        upcoming
            .iter()
            .all(|at| at.as_str().unwrap().ends_with("-01T06:30:00Z")),
        "{upcoming:?}"
    );
    assert_eq!(found["next_run_at"], upcoming[0]);
    // Deleting it keeps the report; B's schedule is untouched.
    let (status, _, _) = request(
        &addr,
        "DELETE",
        &format!("/api/v1/report-schedules/{a_schedule}"),
        Some(&a_admin),
        "",
    )
    .await;
    assert_eq!(status, 204);
    let (status, _, _) = request(
        &addr,
        "GET",
        &format!("/api/v1/report-schedules/{a_schedule}"),
        Some(&a_admin),
        "",
    )
    .await;
    assert_eq!(status, 404);
    let mut admin = test_database.admin().await;
    let b_schedules: i64 =
        sqlx::query_scalar("select count(*) from control.report_schedules where tenant_id = $1")
            .bind(b.as_uuid())
            .fetch_one(&mut admin)
            .await
            .unwrap();
    assert_eq!(b_schedules, 1);
    let audited: Vec<String> = sqlx::query_scalar(
        "select distinct action from audit.log where tenant_id = $1 \
             and action like 'report_schedule.%' order by 1",
    )
    .bind(a.as_uuid())
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(
        audited,
        [
            "report_schedule.create",
            "report_schedule.delete",
            "report_schedule.update"
        ]
    );
}

#[tokio::test]
async fn the_reports_page_and_its_forms_as_every_role() {
    use crate::auth::{PASSWORD, member, sign_in};
    use crate::browser::Browser;

    let test_database = TestDatabase::new().await;
    let database: Database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let a = tenant(&database, "Acme").await;
    let b = tenant(&database, "Globex").await;
    let a_admin = token(&database, a, Role::Admin).await;
    let b_admin = token(&database, b, Role::Admin).await;
    let a_report = define(&addr, &a_admin, DEVICES).await;
    let a_audit = define(&addr, &a_admin, AUDIT).await;
    let b_report = define(
        &addr,
        &b_admin,
        r#"{"name": "globex devices", "dataset": "devices", "format": "csv"}"#,
    )
    .await;
    let a_channel = channel(&database, a, "acme finance").await;
    let a_schedule = schedule(&addr, &a_admin, a_report, WEEKDAYS).await;
    let b_schedule = schedule(&addr, &b_admin, b_report, WEEKDAYS).await;
    let mut failures = Vec::new();
    for role in Role::TENANT_ROLES {
        let email = format!("{role}@acme.example.com");
        member(&database, a, &email, role).await;
        let mut browser = Browser::new(&addr);
        assert_eq!(sign_in(&mut browser, &email, PASSWORD).await.status, 303);
        let manages = role.allows(Permission::ManageReports);
        let page = browser.get("/app/reports").await;
        crate::site::assert_security_headers(&page, "/app/reports");
        if page.status != 200 || !page.body.contains(">devices<") || page.body.contains("globex") {
            failures.push(format!(
                "{role} /app/reports: {} {}",
                page.status,
                page.body.len()
            ));
        }
        if page.body.contains(r#"id="new-report""#) != manages {
            failures.push(format!("{role}: the definition form shown = {}", !manages));
        }
        if page.body.contains(r#"id="new-schedule""#) != manages
            || !page
                .body
                .contains(&format!(r#"href="/app/reports/schedules/{a_schedule}""#))
        {
            failures.push(format!("{role}: the schedules as listed"));
        }
        let schedule_page = browser
            .get(&format!("/app/reports/schedules/{a_schedule}"))
            .await;
        if schedule_page.status != 200
            || !schedule_page.body.contains("Europe/Berlin")
            || !schedule_page.body.contains(r#"id="upcoming""#)
            || schedule_page.body.contains(r#"id="edit-schedule""#) != manages
        {
            failures.push(format!(
                "{role} the schedule's page: {}",
                schedule_page.status
            ));
        }
        let b_page = browser
            .get(&format!("/app/reports/schedules/{b_schedule}"))
            .await;
        if b_page.status != 404 || b_page.body.contains("globex") {
            failures.push(format!(
                "{role} tenant B's schedule page: {}",
                b_page.status
            ));
        }
        let doomed_schedule = schedule(&addr, &a_admin, a_report, WEEKDAYS).await;
        let a_report_text = a_report.to_string();
        let b_report_text = b_report.to_string();
        let a_channel_text = a_channel.to_string();
        for (action, fields, allowed, status) in [
            (
                "/app/reports/schedules".to_owned(),
                vec![
                    ("report", a_report_text.as_str()),
                    ("cron", "15 7 * * *"),
                    ("time_zone", "Asia/Tokyo"),
                    ("channel", a_channel_text.as_str()),
                    ("enabled", "on"),
                ],
                manages,
                303,
            ),
            (
                "/app/reports/schedules".to_owned(),
                vec![
                    ("report", a_report_text.as_str()),
                    ("cron", "every day"),
                    ("time_zone", "UTC"),
                ],
                manages,
                422,
            ),
            (
                "/app/reports/schedules".to_owned(),
                vec![
                    ("report", b_report_text.as_str()),
                    ("cron", "0 8 * * *"),
                    ("time_zone", "UTC"),
                ],
                manages,
                404,
            ),
            (
                format!("/app/reports/schedules/{a_schedule}"),
                vec![
                    ("cron", "0 9 * * 1-5"),
                    ("time_zone", "Europe/Berlin"),
                    ("enabled", "on"),
                ],
                manages,
                303,
            ),
            (
                format!("/app/reports/schedules/{a_schedule}"),
                vec![("cron", "0 9 * * 1-5"), ("time_zone", "Europe/Atlantis")],
                manages,
                422,
            ),
            (
                format!("/app/reports/schedules/{b_schedule}"),
                vec![("cron", "0 9 * * 1-5"), ("time_zone", "UTC")],
                manages,
                404,
            ),
            (
                format!("/app/reports/schedules/{b_schedule}/delete"),
                vec![],
                manages,
                404,
            ),
            (
                format!("/app/reports/schedules/{doomed_schedule}/delete"),
                vec![],
                manages,
                303,
            ),
        ] {
            let page = browser.submit("/app/reports", &action, &fields).await;
            let expected = if allowed { status } else { 403 };
            if page.status != expected {
                failures.push(format!(
                    "{role} POST {action}: {} (expected {expected})",
                    page.status
                ));
            }
            if expected == 422 && !(page.body.contains("cron:") || page.body.contains("time_zone:"))
            {
                failures.push(format!(
                    "{role} POST {action}: the refusal does not say why"
                ));
            }
        }
        let runs_audit = page
            .body
            .contains(&format!(r#"action="/app/reports/{a_audit}/run""#));
        if runs_audit != role.allows(Permission::ViewAudit) {
            failures.push(format!(
                "{role}: offered to run the audit log = {runs_audit}"
            ));
        }
        let doomed = define(
            &addr,
            &a_admin,
            &format!(r#"{{"name": "doomed {role}", "dataset": "sites", "format": "jsonl"}}"#),
        )
        .await;
        let name = format!("page {role}");
        for (action, fields, allowed, status) in [
            (
                "/app/reports".to_owned(),
                vec![
                    ("name", name.as_str()),
                    ("dataset", "metrics_minute"),
                    ("format", "csv"),
                    ("columns", "minute, entity_id, avg"),
                    ("last_hours", "6"),
                    ("key", "temperature"),
                ],
                manages,
                303,
            ),
            (
                "/app/reports".to_owned(),
                vec![
                    ("name", "bad columns"),
                    ("dataset", "sites"),
                    ("format", "csv"),
                    ("columns", "colour"),
                ],
                manages,
                422,
            ),
            (format!("/app/reports/{a_report}/run"), vec![], true, 303),
            (
                format!("/app/reports/{a_audit}/run"),
                vec![],
                role.allows(Permission::ViewAudit),
                303,
            ),
            (format!("/app/reports/{b_report}/run"), vec![], true, 404),
            (
                format!("/app/reports/{doomed}/delete"),
                vec![],
                manages,
                303,
            ),
            (
                format!("/app/reports/{b_report}/delete"),
                vec![],
                manages,
                404,
            ),
        ] {
            let page = browser.submit("/app/reports", &action, &fields).await;
            let expected = if allowed { status } else { 403 };
            if page.status != expected {
                failures.push(format!(
                    "{role} POST {action}: {} (expected {expected})",
                    page.status
                ));
            }
            if expected == 422 && !page.body.contains("columns: sites has no column") {
                failures.push(format!(
                    "{role} POST {action}: the refusal does not say why"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Tenant B's report is untouched and never run by A.
    let mut admin = test_database.admin().await;
    let (runs, reports): (i64, i64) = sqlx::query_as(
        "select (select count(*) from control.report_runs where tenant_id = $1), \
                (select count(*) from control.reports where tenant_id = $1)",
    )
    .bind(b.as_uuid())
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!((runs, reports), (0, 1));
    let (cron, zone): (String, String) = sqlx::query_as(
        "select cron, time_zone from control.report_schedules where schedule_id = $1",
    )
    .bind(b_schedule)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(
        (cron.as_str(), zone.as_str()),
        ("0 8 * * 1-5", "Europe/Berlin")
    );
}

/// In a real headless Chromium: an admin defines a report of the device list, runs it, watches
/// the run finish on the page, downloads the file with the browser's own session, then schedules
/// it to a mail channel and opens the schedule's page with its next runs.
#[tokio::test]
async fn an_admin_defines_a_report_runs_it_and_downloads_the_file_in_a_real_browser() {
    use test_support::browser::{
        click, console_errors, fill, screenshot, script, start_chromium, wait_for_text,
    };

    let test_database = TestDatabase::new().await;
    let database: Database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let acme = tenant(&database, "Acme").await;
    crate::auth::member(&database, acme, "admin@acme.example.com", Role::Admin).await;
    let source = crate::api::source(&database, acme).await;
    let mut admin = test_database.admin().await;
    crate::api::read_models(&mut admin, acme, source, "acme").await;

    let (_driver, client) = start_chromium().await;
    let base = format!("http://{addr}");
    client.goto(&format!("{base}/auth")).await.unwrap();
    fill(&client, "#signin-email", "admin@acme.example.com").await;
    fill(&client, "#signin-password", crate::auth::PASSWORD).await;
    click(&client, "form.form button[type=submit]").await;
    wait_for_text(&client, r#"href="/app/reports""#).await;
    client.goto(&format!("{base}/app/reports")).await.unwrap();
    wait_for_text(&client, "No reports yet.").await;
    fill(&client, "#report-name", "Acme devices").await;
    client
        .find(test_support::browser::Locator::Css("#report-dataset"))
        .await
        .unwrap()
        .select_by_value("devices")
        .await
        .unwrap();
    fill(&client, "#report-columns", "id, name").await;
    click(&client, "#new-report button[type=submit]").await;
    wait_for_text(&client, "Report saved.").await;
    click(&client, r#"form[action$="/run"] button"#).await;
    wait_for_text(&client, "Run queued").await;
    wait_for_text(&client, r#"data-status="queued""#).await;
    // The runner (a job of `tributary up`) writes the file; the table follows by itself.
    ::reports::Runner::new(database.clone(), crate::exports())
        .run_next()
        .await
        .unwrap()
        .unwrap();
    wait_for_text(&client, r#"data-status="succeeded""#).await;
    screenshot(&client, "reports").await;
    let downloaded = script(
        &client,
        "const link = document.querySelector('#runs-table a[download]'); \
         return fetch(link.href).then(async r => [r.status, r.headers.get('content-type'), await r.text()]);",
    )
    .await;
    assert_eq!(downloaded[0], 200, "{downloaded}");
    assert_eq!(downloaded[1], "text/csv; charset=utf-8");
    let text = downloaded[2].as_str().unwrap();
    assert!(
        text.starts_with("id,name\r\n") && text.contains("acme"),
        "{text}"
    );

    // Scheduled: weekdays at 07:30 in Berlin, mailed to the finance channel.
    channel(&database, acme, "Finance mail").await;
    client.goto(&format!("{base}/app/reports")).await.unwrap();
    fill(&client, "#schedule-cron", "30 7 * * 1-5").await;
    fill(&client, "#schedule-zone", "Europe/Berlin").await;
    click(&client, "#schedule-channel-1").await;
    click(&client, "#new-schedule button[type=submit]").await;
    wait_for_text(
        &client,
        "Schedule saved: the report runs at its next occurrence.",
    )
    .await;
    wait_for_text(&client, "Finance mail").await;
    click(&client, "#schedules-table a").await;
    wait_for_text(&client, r#"id="upcoming""#).await;
    let page = client.source().await.unwrap();
    assert!(page.contains("30 7 * * 1-5") && page.contains("Europe/Berlin"));
    // Its next runs are 07:30 in Berlin: 06:30 UTC in winter, 05:30 in summer.
    assert!(
        page.contains(" 06:30:00 <span class=\"muted\">(") || page.contains(" 05:30:00 <span"),
        "the next runs in UTC: {page}"
    );
    assert!(page.contains(" 07:30 CET)") || page.contains(" 07:30 CEST)"));
    screenshot(&client, "report-schedule").await;
    assert_eq!(console_errors(&client).await, Vec::<String>::new());
}
