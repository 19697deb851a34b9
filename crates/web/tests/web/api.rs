//! The JSON API as every tenant role, tenant A against tenant B, and with bad tokens.

use domain::{Permission, Plan, Role, SourceId, TenantAttributes, TenantId, UserId};
use serde_json::Value;
use store::{Actor, Database, Scope, TenantTx};
use test_support::TestDatabase;

use crate::{request, serve};

pub async fn tenant(database: &Database, name: &str) -> TenantId {
    let attributes = TenantAttributes::parse(name, Plan::Team, "energy", "eu").unwrap();
    store::control::create_tenant(&database.app, Actor::Cli("test".into()), &attributes)
        .await
        .unwrap()
        .tenant_id
}

/// A transaction as an owner of `tenant` (a user who need not exist).
pub async fn owner(database: &Database, tenant: TenantId) -> TenantTx {
    TenantTx::begin(
        &database.app,
        Scope::Member {
            tenant,
            user: UserId::new_random(),
            role: Role::Owner,
        },
    )
    .await
    .unwrap()
}

pub async fn token(database: &Database, tenant: TenantId, role: Role) -> String {
    let mut tx = owner(database, tenant).await;
    let (_, text) = store::api_tokens::create(&mut tx, "test", role, time::Duration::days(1))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    text
}

pub async fn source(database: &Database, tenant: TenantId) -> SourceId {
    let mut tx = owner(database, tenant).await;
    let name = format!("source {}", uuid::Uuid::new_v4());
    let (source, _) = store::sources::create_source(&mut tx, &name, "simulator")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    source.source_id
}

/// A PostgreSQL source of `tenant`'s (the kind whose tables are chosen).
pub async fn postgres_source(database: &Database, tenant: TenantId) -> SourceId {
    let mut tx = owner(database, tenant).await;
    let name = format!("database {}", uuid::Uuid::new_v4());
    let (source, _) = store::sources::create_source(&mut tx, &name, "postgres")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    source.source_id
}

/// Records a certificate for `source`'s agent as the edge does when it pairs (serial `serial`).
pub async fn paired(database: &Database, tenant: TenantId, source: SourceId, serial: &str) {
    let now = time::OffsetDateTime::now_utc();
    let mut tx = store::TenantTx::begin_service(
        &database.service,
        Some(tenant),
        store::Actor::Agent(source),
    )
    .await
    .unwrap();
    let certificate = store::sources::IssuedCertificate {
        source,
        serial: serial.into(),
        fingerprint_sha256: [9; 32],
        not_before: now - time::Duration::minutes(1),
        not_after: now + time::Duration::days(30),
    };
    store::sources::record_certificate(&mut tx, &certificate, "source.pair")
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// A dead letter of `source`'s, recorded as the bronze writer records one: its id.
pub async fn dead_letter(database: &Database, tenant: TenantId, source: SourceId) -> uuid::Uuid {
    let event_id = domain::EventId::from_uuid(uuid::Uuid::new_v4());
    let event = serde_json::json!({
        "tenant_id": tenant, "source_id": source,
        "event": { "event_id": event_id, "schema": "public", "table": "refused" },
    });
    store::service::dlq::record(
        &database.service,
        &store::dlq::DeadLetter {
            tenant,
            consumer: "bronze",
            event_id,
            source,
            reason_code: "bronze_rejected",
            reason: "the database refused the event".into(),
            message: serde_json::to_vec(&event).unwrap(),
            event,
        },
    )
    .await
    .unwrap();
    let mut tx = owner(database, tenant).await;
    let page = store::dlq::page(
        &mut tx,
        source,
        &store::dlq::LetterFilter::default(),
        None,
        10,
    )
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    page.letters[0].dlq_id
}

/// An open invitation of `tenant` to `email` as a viewer: its id.
async fn invitation(database: &Database, tenant: TenantId, email: &str) -> uuid::Uuid {
    let mut tx = owner(database, tenant).await;
    let email = domain::Email::parse(email).unwrap();
    let (invitation, _) =
        store::invitations::create(&mut tx, &email, Role::Viewer, time::Duration::days(7))
            .await
            .unwrap();
    tx.commit().await.unwrap();
    invitation
}

/// One site, device and session of `tenant` named after `prefix`, with a typed extra, and a
/// minute of `temperature` readings (and of `{prefix}_only`) for the device, with its hour,
/// written as the materializer would. The app's pages seed with it too.
pub async fn read_models(
    admin: &mut sqlx::PgConnection,
    tenant: TenantId,
    source: SourceId,
    prefix: &str,
) {
    for statement in [
        "insert into analytics.sites (tenant_id, site_id, source_id, name, pos_lsn, pos_seq) \
         values ($1, $3 || '-site', $2, $3 || ' site', 1, 0)",
        "insert into analytics.devices (tenant_id, device_id, source_id, site_id, name, status, \
             pos_lsn, pos_seq) \
         values ($1, $3 || '-device', $2, $3 || '-site', $3 || ' device', 'online', 1, 0)",
        "insert into analytics.sessions (tenant_id, session_id, source_id, device_id, site_id, \
             status, started_at, pos_lsn, pos_seq) \
         values ($1, $3 || '-session', $2, $3 || '-device', $3 || '-site', 'open', now(), 1, 0)",
        "insert into analytics.extras_text (tenant_id, entity_kind, entity_id, key, value) \
         values ($1, 'device', $3 || '-device', $3 || '_extra', 'x')",
        "insert into analytics.metrics_min (tenant_id, entity_kind, entity_id, metric_key, \
             minute, value_sum, value_sum_exact, value_count, value_min, value_max, last_value, \
             last_pos_lsn, last_pos_seq, last_measured_at, last_reading_id) \
         select $1, 'device', $3 || '-device', key, date_trunc('minute', now()) - interval '5 minutes', \
             42, 42, 1, 42, 42, 42, 1, 0, date_trunc('minute', now()) - interval '5 minutes', 'r1' \
         from unnest(array['temperature', $3 || '_only']) key",
    ] {
        sqlx::query(statement)
            .bind(tenant.as_uuid())
            .bind(source.as_uuid())
            .bind(prefix)
            .execute(&mut *admin)
            .await
            .unwrap();
    }
    sqlx::query(
        "insert into analytics.metrics_hour (tenant_id, entity_kind, entity_id, metric_key, \
             hour, value_sum, value_sum_exact, value_count, value_min, value_max, last_value, \
             last_pos_lsn, last_pos_seq, last_measured_at, last_reading_id) \
         select tenant_id, entity_kind, entity_id, metric_key, date_trunc('hour', minute, 'UTC'), \
             value_sum, value_sum_exact, value_count, value_min, value_max, last_value, \
             last_pos_lsn, last_pos_seq, last_measured_at, last_reading_id \
         from analytics.metrics_min where tenant_id = $1",
    )
    .bind(tenant.as_uuid())
    .execute(&mut *admin)
    .await
    .unwrap();
}

/// A `temperature` reading of 7 for [`read_models`]' device twenty minutes ago: in another
/// five-minute bucket than the seeded one, so a chart of the last hour gains a point.
pub async fn late_reading(admin: &mut sqlx::PgConnection, tenant: TenantId) {
    sqlx::query(
        "insert into analytics.metrics_min (tenant_id, entity_kind, entity_id, metric_key, \
             minute, value_sum, value_sum_exact, value_count, value_min, value_max, last_value, \
             last_pos_lsn, last_pos_seq, last_measured_at, last_reading_id) \
         select $1, 'device', device_id, 'temperature', \
             date_trunc('minute', now()) - interval '20 minutes', 7, 7, 1, 7, 7, 7, 2, 0, \
             date_trunc('minute', now()) - interval '20 minutes', 'r2' \
         from analytics.devices where tenant_id = $1",
    )
    .bind(tenant.as_uuid())
    .execute(admin)
    .await
    .unwrap();
}

/// The id inside an API token's text (`tat1.<tenant>.<id>.<secret>`).
fn token_id(text: &str) -> uuid::Uuid {
    text.split('.').nth(2).unwrap().parse().unwrap()
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"))
}

#[tokio::test]
async fn every_route_as_every_role_and_tenant_a_never_reaches_tenant_b() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let a = tenant(&database, "Acme").await;
    let b = tenant(&database, "Globex").await;
    let b_source = source(&database, b).await;
    let b_admin = token(&database, b, Role::Admin).await;
    let b_owner = token(&database, b, Role::Owner).await;
    let b_member = crate::auth::member(&database, b, "viewer@globex.example", Role::Viewer).await;
    let b_invitation = invitation(&database, b, "invited@globex.example").await;
    let b_viewer_token = token(&database, b, Role::Viewer).await;
    let b_sso = r#"{"issuer": "https://login.globex.example", "client_id": "globex", "client_secret": "globex secret", "domains": ["globex.example"], "default_role": "operator", "enabled": false}"#;
    let (status, _, _) = request(&addr, "PUT", "/api/v1/sso", Some(&b_owner), b_sso).await;
    assert_eq!(status, 200);
    crate::masking::rule(&database, b, "*", "globex_secret_field", "drop").await;
    let mut admin = test_database.admin().await;
    for (tenant, table) in [(b, "globex_unmapped"), (a, "acme_unmapped")] {
        sqlx::query(
            "insert into pipeline.unmapped_tables (tenant_id, source_id, schema_name, table_name, \
                 events, first_seen_at, last_seen_at) values ($1, $2, 'public', $3, 1, now(), now())",
        )
        .bind(tenant.as_uuid())
        .bind(b_source.as_uuid())
        .bind(table)
        .execute(&mut admin)
        .await
        .unwrap();
    }
    let a_source_of_read_models = source(&database, a).await;
    read_models(&mut admin, a, a_source_of_read_models, "acme").await;
    read_models(&mut admin, b, b_source, "globex").await;
    // A drift field of each tenant (tenant A's table maps by convention: not promotable).
    let a_drift =
        crate::drift::drift_field(&mut admin, a, a_source_of_read_models, "acme_colour").await;
    let b_drift = crate::drift::drift_field(&mut admin, b, b_source, "globex_colour").await;
    drop(admin);
    let mut tx = owner(&database, a).await;
    let replay = store::replay::request(&mut tx, &store::replay::ReplayKind::DeadLetters)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // A dead letter of each tenant's source, recorded as the pipeline records one.
    let a_letter_source = source(&database, a).await;
    let a_letter = dead_letter(&database, a, a_letter_source).await;
    let b_letter = dead_letter(&database, b, b_source).await;

    let mut failures = Vec::new();
    for role in Role::TENANT_ROLES {
        let bearer = token(&database, a, role).await;
        let a_source = source(&database, a).await;
        let a_postgres = postgres_source(&database, a).await;
        let serial = format!("{:x}", uuid::Uuid::new_v4().as_u128());
        paired(&database, a, a_postgres, &serial).await;
        crate::masking::rule(&database, a, "*", &format!("seed_{role}"), "hash").await;
        let member = crate::auth::member(
            &database,
            a,
            &format!("member-{role}@acme.example"),
            Role::Viewer,
        )
        .await;
        let a_invitation = invitation(&database, a, &format!("invited-{role}@acme.example")).await;
        let a_token = token_id(&token(&database, a, Role::Viewer).await);
        let mut routes: Vec<(&str, String, String, Permission, u16)> = [
            "/api/v1/analytics/series?key=temperature",
            "/api/v1/analytics/series?key=temperature&group_by=device&step=5m",
            "/api/v1/analytics/keys",
            "/api/v1/analytics/sites",
            "/api/v1/analytics/sites/acme-site",
            "/api/v1/analytics/devices?site=acme-site&sort=name&order=desc",
            "/api/v1/analytics/devices/acme-device",
            "/api/v1/analytics/sessions?device=acme-device",
            "/api/v1/analytics/sessions/acme-session",
        ]
        .into_iter()
        .map(|path| {
            (
                "GET",
                path.to_owned(),
                String::new(),
                Permission::ViewDashboards,
                200,
            )
        })
        .collect();
        routes.extend(vec![
            (
                "GET",
                "/api/v1/sources".into(),
                String::new(),
                Permission::ViewSources,
                200,
            ),
            (
                "POST",
                "/api/v1/sources".into(),
                format!(r#"{{"name": "made by {role}", "kind": "simulator"}}"#),
                Permission::ManageSources,
                201,
            ),
            (
                "GET",
                format!("/api/v1/sources/{a_source}"),
                String::new(),
                Permission::ViewSources,
                200,
            ),
            (
                "GET",
                format!("/api/v1/sources/{a_source}/status-history"),
                String::new(),
                Permission::ViewSources,
                200,
            ),
            (
                "POST",
                format!("/api/v1/sources/{a_source}/pairing-tokens"),
                String::new(),
                Permission::ManageSources,
                201,
            ),
            (
                "POST",
                format!("/api/v1/sources/{a_source}/pause"),
                format!(r#"{{"reason": "paused by {role}"}}"#),
                Permission::ManageSources,
                200,
            ),
            (
                "POST",
                format!("/api/v1/sources/{a_source}/resume"),
                String::new(),
                Permission::ManageSources,
                200,
            ),
            (
                "GET",
                format!("/api/v1/sources/{a_postgres}/setup"),
                String::new(),
                Permission::ManageSources,
                200,
            ),
            (
                "POST",
                format!("/api/v1/sources/{a_postgres}/resync"),
                String::new(),
                Permission::ManageSources,
                200,
            ),
            (
                "POST",
                format!("/api/v1/sources/{a_postgres}/rotate-certificate"),
                String::new(),
                Permission::ManageSources,
                200,
            ),
            (
                "PUT",
                format!("/api/v1/sources/{a_postgres}/tables"),
                r#"{"tables": ["public.devices"]}"#.into(),
                Permission::ManageSources,
                200,
            ),
            (
                "POST",
                format!("/api/v1/sources/{a_source}/revoke"),
                r#"{"reason": "test"}"#.into(),
                Permission::ManageSources,
                200,
            ),
            (
                "POST",
                "/api/v1/replays".into(),
                r#"{"kind": "dlq"}"#.into(),
                Permission::ManageReplays,
                202,
            ),
            (
                "GET",
                format!("/api/v1/replays/{replay}"),
                String::new(),
                Permission::ManageReplays,
                200,
            ),
            (
                "GET",
                "/api/v1/dead-letters".into(),
                String::new(),
                Permission::ViewDeadLetters,
                200,
            ),
            (
                "GET",
                format!("/api/v1/sources/{a_letter_source}/dead-letters?reason=bronze_rejected"),
                String::new(),
                Permission::ViewDeadLetters,
                200,
            ),
            (
                "GET",
                format!("/api/v1/dead-letters/{a_letter}"),
                String::new(),
                Permission::ViewDeadLetters,
                200,
            ),
            (
                "POST",
                format!("/api/v1/sources/{a_letter_source}/dead-letters/replay"),
                format!(r#"{{"ids": ["{a_letter}"]}}"#),
                Permission::ManageReplays,
                202,
            ),
            (
                "GET",
                "/api/v1/unmapped-tables".into(),
                String::new(),
                Permission::ManageSources,
                200,
            ),
            (
                "GET",
                "/api/v1/drift".into(),
                String::new(),
                Permission::ManageSources,
                200,
            ),
            // Its table maps by convention: told to map it first.
            (
                "POST",
                "/api/v1/drift/promote".into(),
                format!(r#"{{"drift_id": "{a_drift}", "typed_column": "model"}}"#),
                Permission::ManageSources,
                409,
            ),
            (
                "POST",
                "/api/v1/drift/dismiss".into(),
                format!(r#"{{"drift_id": "{a_drift}"}}"#),
                Permission::ManageSources,
                204,
            ),
            (
                "PUT",
                "/api/v1/sso".into(),
                format!(
                    r#"{{"issuer": "https://idp.example.com", "client_id": "set by {role}", "client_secret": "s", "domains": ["acme.example"], "default_role": "viewer", "enabled": true}}"#
                ),
                Permission::ManageSso,
                200,
            ),
            (
                "GET",
                "/api/v1/sso".into(),
                String::new(),
                Permission::ManageSso,
                200,
            ),
            // acme.example publishes no record for the workspace: told so.
            (
                "POST",
                "/api/v1/sso/domains/acme.example/verify".into(),
                String::new(),
                Permission::ManageSso,
                409,
            ),
            (
                "GET",
                "/api/v1/masking-policies".into(),
                String::new(),
                Permission::ManageMasking,
                200,
            ),
            (
                "POST",
                "/api/v1/masking-policies".into(),
                format!(r#"{{"field_path": "made_by_{role}", "action": "hash"}}"#),
                Permission::ManageMasking,
                201,
            ),
            (
                "PUT",
                format!("/api/v1/masking-policies?field_path=seed_{role}"),
                format!(r#"{{"field_path": "seed_{role}", "action": "redact"}}"#),
                Permission::ManageMasking,
                200,
            ),
            (
                "POST",
                "/api/v1/masking-policies/preview".into(),
                r#"{"table": "public.customers", "sample": {"key": {"id": 1}, "after": {"id": 1, "email": "a@example.com"}}}"#.into(),
                Permission::ManageMasking,
                200,
            ),
            (
                "DELETE",
                "/api/v1/sso".into(),
                String::new(),
                Permission::ManageSso,
                204,
            ),
            (
                "GET",
                "/api/v1/workspace".into(),
                String::new(),
                Permission::ViewWorkspace,
                200,
            ),
            // Every role may ask who it is.
            (
                "GET",
                "/api/v1/me".into(),
                String::new(),
                Permission::ViewWorkspace,
                200,
            ),
            (
                "GET",
                "/api/v1/activity".into(),
                String::new(),
                Permission::ViewBronze,
                200,
            ),
            (
                "PATCH",
                "/api/v1/workspace".into(),
                format!(r#"{{"region": "set by {role}"}}"#),
                Permission::ManageWorkspace,
                200,
            ),
            (
                "GET",
                "/api/v1/members".into(),
                String::new(),
                Permission::ManageMembers,
                200,
            ),
            (
                "PATCH",
                format!("/api/v1/members/{member}"),
                r#"{"role": "operator"}"#.into(),
                Permission::ManageMembers,
                200,
            ),
            (
                "DELETE",
                format!("/api/v1/members/{member}"),
                String::new(),
                Permission::ManageMembers,
                204,
            ),
            (
                "GET",
                "/api/v1/invitations".into(),
                String::new(),
                Permission::ManageMembers,
                200,
            ),
            (
                "POST",
                "/api/v1/invitations".into(),
                format!(r#"{{"email": "new-{role}@acme.example", "role": "viewer"}}"#),
                Permission::ManageMembers,
                201,
            ),
            (
                "DELETE",
                format!("/api/v1/invitations/{a_invitation}"),
                String::new(),
                Permission::ManageMembers,
                204,
            ),
            (
                "GET",
                "/api/v1/api-tokens".into(),
                String::new(),
                Permission::ManageApiTokens,
                200,
            ),
            (
                "POST",
                "/api/v1/api-tokens".into(),
                format!(r#"{{"name": "made by {role}", "role": "viewer", "days": 7}}"#),
                Permission::ManageApiTokens,
                201,
            ),
            (
                "POST",
                format!("/api/v1/api-tokens/{a_token}/revoke"),
                String::new(),
                Permission::ManageApiTokens,
                204,
            ),
            (
                "GET",
                "/api/v1/retention".into(),
                String::new(),
                Permission::ManageRetention,
                200,
            ),
            (
                "PUT",
                "/api/v1/retention".into(),
                r#"{"bronze_days": 45}"#.into(),
                Permission::ManageRetention,
                200,
            ),
            (
                "GET",
                "/api/v1/audit".into(),
                String::new(),
                Permission::ViewAudit,
                200,
            ),
            (
                "DELETE",
                format!("/api/v1/masking-policies?field_path=seed_{role}"),
                String::new(),
                Permission::ManageMasking,
                204,
            ),
        ]);
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
            if status >= 400 {
                let error = json(&response);
                assert!(error["error"]["code"].is_string(), "{response}");
                assert!(
                    !response.to_lowercase().contains("select "),
                    "SQL leaked: {response}"
                );
            }
        }

        // Tenant B's source does not exist for tenant A's tokens.
        if role.allows(Permission::ViewSources) {
            for path in [
                format!("/api/v1/sources/{b_source}"),
                format!("/api/v1/sources/{b_source}/status-history"),
            ] {
                let (status, _, response) = request(&addr, "GET", &path, Some(&bearer), "").await;
                if status != 404 || response.contains("globex") {
                    failures.push(format!(
                        "{role} GET {path} of tenant B: expected 404, got {status} {response}"
                    ));
                }
            }
        }
        // Tenant B's source does not exist for tenant A's tokens.
        if role.allows(Permission::ManageSources) {
            for path in [
                format!("/api/v1/sources/{b_source}/pairing-tokens"),
                format!("/api/v1/sources/{b_source}/pause"),
                format!("/api/v1/sources/{b_source}/resume"),
                format!("/api/v1/sources/{b_source}/revoke"),
                format!("/api/v1/sources/{b_source}/resync"),
                format!("/api/v1/sources/{b_source}/rotate-certificate"),
            ] {
                let (status, _, response) = request(&addr, "POST", &path, Some(&bearer), "").await;
                if status != 404 {
                    failures.push(format!(
                        "{role} POST {path} of tenant B: expected 404, got {status} {response}"
                    ));
                }
            }
            for (method, path, body) in [
                ("GET", format!("/api/v1/sources/{b_source}/setup"), ""),
                (
                    "PUT",
                    format!("/api/v1/sources/{b_source}/tables"),
                    r#"{"tables": ["public.devices"]}"#,
                ),
            ] {
                let (status, _, response) =
                    request(&addr, method, &path, Some(&bearer), body).await;
                if status != 404 || response.contains("globex") {
                    failures.push(format!(
                        "{role} {method} {path} of tenant B: expected 404, got {status} {response}"
                    ));
                }
            }
        }
        // Sessions belong to a person: no token of any role lists or ends them.
        for (method, path) in [
            ("GET", "/api/v1/sessions"),
            ("DELETE", "/api/v1/sessions/00"),
        ] {
            let (status, _, response) = request(&addr, method, path, Some(&bearer), "").await;
            if status != 403 {
                failures.push(format!(
                    "{role} token {method} {path}: expected 403, got {status} {response}"
                ));
            }
        }
        let (_, _, response) = request(&addr, "GET", "/api/v1/me", Some(&bearer), "").await;
        let me = json(&response);
        assert_eq!(
            (
                me["kind"].as_str(),
                me["workspace"]["tenant_id"].as_str(),
                me["workspace"]["role"].as_str()
            ),
            (
                Some("api_token"),
                Some(a.to_string().as_str()),
                Some(role.as_str())
            ),
            "{response}"
        );

        // Tenant B's member, invitation, token and drift field do not exist for tenant A's
        // tokens.
        let b_promotion = format!(r#"{{"drift_id": "{b_drift}", "typed_column": "model"}}"#);
        let b_dismissal = format!(r#"{{"drift_id": "{b_drift}"}}"#);
        let b_letter_choice = format!(r#"{{"ids": ["{b_letter}"]}}"#);
        let b_objects = [
            (
                "GET",
                format!("/api/v1/sources/{b_source}/dead-letters"),
                "",
                Permission::ViewDeadLetters,
            ),
            (
                "GET",
                format!("/api/v1/dead-letters/{b_letter}"),
                "",
                Permission::ViewDeadLetters,
            ),
            (
                "POST",
                format!("/api/v1/sources/{b_source}/dead-letters/replay"),
                r#"{"all": true}"#,
                Permission::ManageReplays,
            ),
            (
                "POST",
                format!("/api/v1/sources/{a_letter_source}/dead-letters/replay"),
                b_letter_choice.as_str(),
                Permission::ManageReplays,
            ),
            (
                "PATCH",
                format!("/api/v1/members/{b_member}"),
                r#"{"role": "operator"}"#,
                Permission::ManageMembers,
            ),
            (
                "DELETE",
                format!("/api/v1/members/{b_member}"),
                "",
                Permission::ManageMembers,
            ),
            (
                "DELETE",
                format!("/api/v1/invitations/{b_invitation}"),
                "",
                Permission::ManageMembers,
            ),
            (
                "POST",
                format!("/api/v1/api-tokens/{}/revoke", token_id(&b_viewer_token)),
                "",
                Permission::ManageApiTokens,
            ),
            (
                "POST",
                "/api/v1/sso/domains/globex.example/verify".to_owned(),
                "",
                Permission::ManageSso,
            ),
            (
                "POST",
                "/api/v1/drift/promote".to_owned(),
                b_promotion.as_str(),
                Permission::ManageSources,
            ),
            (
                "POST",
                "/api/v1/drift/dismiss".to_owned(),
                b_dismissal.as_str(),
                Permission::ManageSources,
            ),
        ];
        for (method, path, body, permission) in b_objects {
            if !role.allows(permission) {
                continue;
            }
            let (status, _, response) = request(&addr, method, &path, Some(&bearer), body).await;
            if status != 404 {
                failures.push(format!(
                    "{role} {method} {path} of tenant B: expected 404, got {status} {response}"
                ));
            }
        }
        // What tenant A reads is tenant A's only.
        let (_, _, response) = request(&addr, "GET", "/api/v1/workspace", Some(&bearer), "").await;
        assert_eq!(json(&response)["workspace"]["name"], "Acme", "{response}");
        let a_dead_letters = format!("/api/v1/sources/{a_letter_source}/dead-letters");
        for (path, permission) in [
            ("/api/v1/members", Permission::ManageMembers),
            ("/api/v1/invitations", Permission::ManageMembers),
            ("/api/v1/api-tokens", Permission::ManageApiTokens),
            ("/api/v1/audit?limit=1000", Permission::ViewAudit),
            ("/api/v1/drift", Permission::ManageSources),
            ("/api/v1/dead-letters", Permission::ViewDeadLetters),
            (a_dead_letters.as_str(), Permission::ViewDeadLetters),
        ] {
            if !role.allows(permission) {
                continue;
            }
            let (status, _, response) = request(&addr, "GET", path, Some(&bearer), "").await;
            assert_eq!(status, 200, "{path}: {response}");
            for foreign in [
                "globex".to_owned(),
                b.to_string(),
                b_member.to_string(),
                b_invitation.to_string(),
                token_id(&b_viewer_token).to_string(),
                b_letter.to_string(),
            ] {
                assert!(
                    !response.to_lowercase().contains(&foreign),
                    "{role} {path} shows tenant B's {foreign}: {response}"
                );
            }
        }

        // Tenant B's read models do not exist for tenant A: its ids are not found, its
        // entities, keys and readings are not listed; tenant A's are.
        for kind in ["sites", "devices", "sessions"] {
            let singular = kind.trim_end_matches('s');
            let path = format!("/api/v1/analytics/{kind}/globex-{singular}");
            let (status, _, response) = request(&addr, "GET", &path, Some(&bearer), "").await;
            if status != 404 {
                failures.push(format!(
                    "{role} GET {path} of tenant B: expected 404, got {status} {response}"
                ));
            }
            let path = format!("/api/v1/analytics/{kind}");
            let (_, _, listed) = request(&addr, "GET", &path, Some(&bearer), "").await;
            assert!(!listed.contains("globex"), "{role} {path}: {listed}");
            assert!(
                listed.contains(&format!("acme-{singular}")),
                "{role} {path}: {listed}"
            );
        }
        let (_, _, keys) = request(&addr, "GET", "/api/v1/analytics/keys", Some(&bearer), "").await;
        assert!(!keys.contains("globex"), "{role}: {keys}");
        assert!(
            keys.contains("acme_only") && keys.contains("acme_extra"),
            "{role}: {keys}"
        );
        for path in [
            "/api/v1/analytics/series?key=globex_only",
            "/api/v1/analytics/series?key=temperature&device=globex-device",
            "/api/v1/analytics/series?key=temperature&site=globex-site",
        ] {
            let (status, _, response) = request(&addr, "GET", path, Some(&bearer), "").await;
            let series = json(&response)["series"].clone();
            let points: usize = series
                .as_array()
                .unwrap_or_else(|| panic!("{role} {path}: {status} {response}"))
                .iter()
                .map(|series| series["points"].as_array().map_or(0, Vec::len))
                .sum();
            assert_eq!(
                points, 0,
                "{role} {path} shows tenant B's readings: {response}"
            );
        }
        let (_, _, response) = request(
            &addr,
            "GET",
            "/api/v1/analytics/series?key=temperature&group_by=device",
            Some(&bearer),
            "",
        )
        .await;
        let series = json(&response)["series"].clone();
        assert_eq!(
            series.as_array().map(|series| series
                .iter()
                .map(|series| series["group"].clone())
                .collect::<Vec<_>>()),
            Some(vec![Value::String("acme-device".into())]),
            "{role}: {response}"
        );
        assert_eq!(series[0]["points"][0]["value"], 42.0, "{role}: {response}");

        // Tenant B's unmapped tables do not show; tenant A's do.
        if role.allows(Permission::ManageSources) {
            let (_, _, listed) =
                request(&addr, "GET", "/api/v1/unmapped-tables", Some(&bearer), "").await;
            assert!(!listed.contains("globex_unmapped"), "{listed}");
            assert!(listed.contains("acme_unmapped"), "{listed}");
        }

        // Tenant B's masking rule neither shows nor can be changed.
        if role.allows(Permission::ManageMasking) {
            let (_, _, listed) =
                request(&addr, "GET", "/api/v1/masking-policies", Some(&bearer), "").await;
            assert!(!listed.contains("globex_secret_field"), "{listed}");
            for (method, body) in [
                ("DELETE", ""),
                (
                    "PUT",
                    r#"{"field_path": "globex_secret_field", "action": "hash"}"#,
                ),
            ] {
                let path = "/api/v1/masking-policies?field_path=globex_secret_field";
                let (status, _, response) = request(&addr, method, path, Some(&bearer), body).await;
                if status != 404 {
                    failures.push(format!(
                        "{role} {method} tenant B's masking rule: expected 404, got {status} {response}"
                    ));
                }
            }
        }
        if role.allows(Permission::ViewSources) {
            let (_, _, response) =
                request(&addr, "GET", "/api/v1/sources", Some(&bearer), "").await;
            let listed = json(&response)["sources"].as_array().unwrap().clone();
            assert!(!listed.is_empty());
            assert!(
                listed
                    .iter()
                    .all(|source| source["source_id"] != Value::String(b_source.to_string())),
                "tenant B's source listed for tenant A"
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // B's SSO configuration was untouched by all of that, and its secret is never answered.
    let (status, _, response) = request(&addr, "GET", "/api/v1/sso", Some(&b_owner), "").await;
    assert_eq!(status, 200);
    let b_config = json(&response);
    assert_eq!(b_config["sso"]["client_id"], "globex");
    assert_eq!(b_config["sso"]["issuer"], "https://login.globex.example");
    assert!(!response.contains("globex secret") && !response.contains("client_secret"));

    // B's workspace, member, invitation and token were untouched by all of that.
    let (_, _, response) = request(&addr, "GET", "/api/v1/workspace", Some(&b_admin), "").await;
    assert_eq!(
        (
            json(&response)["workspace"]["name"].as_str(),
            json(&response)["workspace"]["region"].as_str()
        ),
        (Some("Globex"), Some("eu"))
    );
    let (_, _, response) = request(&addr, "GET", "/api/v1/members", Some(&b_admin), "").await;
    let b_members = json(&response)["members"].clone();
    assert!(
        b_members
            .as_array()
            .unwrap()
            .iter()
            .any(|member| member["user_id"] == b_member.to_string() && member["role"] == "viewer"),
        "{response}"
    );
    let (_, _, response) = request(&addr, "GET", "/api/v1/invitations", Some(&b_admin), "").await;
    assert!(response.contains(&b_invitation.to_string()), "{response}");
    let (status, _, _) =
        request(&addr, "GET", "/api/v1/workspace", Some(&b_viewer_token), "").await;
    assert_eq!(status, 200, "tenant B's token still works");

    // B's sources and masking rules were untouched by all of that.
    let mut tx = owner(&database, b).await;
    let sources = store::sources::list_sources(&mut tx).await.unwrap();
    assert_eq!((sources.len(), sources[0].status.as_str()), (1, "pending"));
    let rules = store::masking::list(&mut tx).await.unwrap();
    assert_eq!(
        rules,
        [store::masking::MaskingRule::every_table(
            "globex_secret_field",
            "drop"
        )]
    );
}

#[tokio::test]
async fn missing_malformed_revoked_and_expired_tokens_are_refused_alike() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let a = tenant(&database, "Acme").await;
    let valid = token(&database, a, Role::Admin).await;
    let (status, _, _) = request(&addr, "GET", "/api/v1/sources", Some(&valid), "").await;
    assert_eq!(status, 200);

    let revoked = token(&database, a, Role::Admin).await;
    let token_id: uuid::Uuid = revoked.split('.').nth(2).unwrap().parse().unwrap();
    let mut tx = owner(&database, a).await;
    store::api_tokens::revoke(&mut tx, token_id).await.unwrap();
    tx.commit().await.unwrap();
    let expired = token(&database, a, Role::Admin).await;
    let expired_id: uuid::Uuid = expired.split('.').nth(2).unwrap().parse().unwrap();
    let mut admin = test_database.admin().await;
    sqlx::query("update control.api_tokens set expires_at = now() - interval '1 second' where token_id = $1")
        .bind(expired_id)
        .execute(&mut admin)
        .await
        .unwrap();
    // The secret with its last character changed (to another one, whatever it was).
    let mut forged = valid.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == '0' { '1' } else { '0' });
    assert_ne!(forged, valid);

    for (name, bearer) in [
        ("none", None),
        ("garbage", Some("garbage")),
        ("forged secret", Some(forged.as_str())),
        ("revoked", Some(revoked.as_str())),
        ("expired", Some(expired.as_str())),
    ] {
        let (status, headers, body) = request(&addr, "GET", "/api/v1/sources", bearer, "").await;
        assert_eq!(status, 401, "{name}: {body}");
        assert_eq!(json(&body)["error"]["code"], "unauthenticated", "{name}");
        assert!(
            headers
                .iter()
                .any(|(header, value)| header == "www-authenticate" && value == "Bearer")
        );
    }

    // Bad bodies get a clear error, not a stack trace.
    let (status, _, body) =
        request(&addr, "POST", "/api/v1/sources", Some(&valid), "{not json").await;
    assert_eq!(
        (status, json(&body)["error"]["code"].as_str()),
        (400, Some("invalid_json"))
    );
    let (status, _, body) = request(
        &addr,
        "POST",
        "/api/v1/sources",
        Some(&valid),
        r#"{"name": "x", "kind": "mysql"}"#,
    )
    .await;
    assert_eq!(
        (status, json(&body)["error"]["code"].as_str()),
        (400, Some("invalid"))
    );

    // Actions through the API are audited under the token.
    let (status, _, _) = request(
        &addr,
        "POST",
        "/api/v1/sources",
        Some(&valid),
        r#"{"name": "audited", "kind": "postgres"}"#,
    )
    .await;
    assert_eq!(status, 201);
    let reports = store::service::audit::verify(&database.service, Some(a))
        .await
        .unwrap();
    assert!(reports[0].is_intact());
    let mut tx = owner(&database, a).await;
    let actors: Vec<String> = store::audit::list(&mut tx, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|record| record.actor_type)
        .collect();
    assert!(
        actors.iter().any(|actor| actor == "api_token"),
        "{actors:?}"
    );
}

/// The settings pages' rules, through the API: nobody grants more than they hold, only an owner
/// touches an owner, the last owner stays, each refusal names its field, a new token is shown
/// once and works, a revoked one does not, the plan is the owner's, the audit log pages and
/// records every change under the caller, and a browser session needs its anti-forgery header.
#[tokio::test]
async fn members_tokens_and_the_workspace_follow_the_settings_rules_through_the_api() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let a = tenant(&database, "Acme").await;
    let owner_user = crate::auth::member(&database, a, "owner@acme.example", Role::Owner).await;
    let viewer = crate::auth::member(&database, a, "viewer@acme.example", Role::Viewer).await;
    let owner_token = token(&database, a, Role::Owner).await;
    let admin_token = token(&database, a, Role::Admin).await;
    let call = |bearer: &str, method: &'static str, path: String, body: &'static str| {
        let (addr, bearer) = (addr.clone(), bearer.to_owned());
        async move {
            let (status, _, response) = request(&addr, method, &path, Some(&bearer), body).await;
            let error = if status >= 400 {
                json(&response)["error"].clone()
            } else {
                Value::Null
            };
            (status, response, error)
        }
    };

    // An admin cannot grant the owner role, in any of the three ways, nor touch an owner.
    for (method, path, body) in [
        (
            "POST",
            "/api/v1/invitations".to_owned(),
            r#"{"email": "boss@acme.example", "role": "owner"}"#,
        ),
        (
            "POST",
            "/api/v1/api-tokens".to_owned(),
            r#"{"name": "root", "role": "owner"}"#,
        ),
        (
            "PATCH",
            format!("/api/v1/members/{viewer}"),
            r#"{"role": "owner"}"#,
        ),
        (
            "PATCH",
            format!("/api/v1/members/{owner_user}"),
            r#"{"role": "viewer"}"#,
        ),
        ("DELETE", format!("/api/v1/members/{owner_user}"), ""),
    ] {
        let (status, response, error) = call(&admin_token, method, path.clone(), body).await;
        assert_eq!(
            (status, error["code"].as_str()),
            (403, Some("forbidden")),
            "{method} {path}: {response}"
        );
    }
    // Each bad field is named.
    for (method, path, body, field) in [
        (
            "POST",
            "/api/v1/invitations",
            r#"{"email": "not an address", "role": "viewer"}"#,
            "email",
        ),
        (
            "POST",
            "/api/v1/invitations",
            r#"{"email": "a@acme.example", "role": "superuser"}"#,
            "role",
        ),
        (
            "POST",
            "/api/v1/api-tokens",
            r#"{"name": "", "role": "viewer"}"#,
            "name",
        ),
        (
            "POST",
            "/api/v1/api-tokens",
            r#"{"name": "x", "role": "viewer", "days": 367}"#,
            "days",
        ),
        (
            "PUT",
            "/api/v1/retention",
            r#"{"bronze_days": 0}"#,
            "bronze_days",
        ),
        (
            "PATCH",
            "/api/v1/workspace",
            r#"{"region": "  "}"#,
            "region",
        ),
        (
            "PATCH",
            "/api/v1/workspace",
            r#"{"plan": "platinum"}"#,
            "plan",
        ),
    ] {
        let (status, response, error) = call(&owner_token, method, path.to_owned(), body).await;
        assert_eq!(status, 422, "{method} {path} {body}: {response}");
        assert_eq!(error["details"]["field"], field, "{response}");
    }
    let (status, _, error) = call(
        &owner_token,
        "PATCH",
        "/api/v1/workspace".into(),
        r#"{"colour": "red"}"#,
    )
    .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (400, Some("invalid_json"))
    );

    // The plan is billing: the owner's, not an admin's.
    let (status, _, error) = call(
        &admin_token,
        "PATCH",
        "/api/v1/workspace".into(),
        r#"{"plan": "enterprise"}"#,
    )
    .await;
    assert_eq!(
        (status, error["details"]["field"].as_str()),
        (403, Some("plan"))
    );
    let (status, response, _) = call(
        &admin_token,
        "PATCH",
        "/api/v1/workspace".into(),
        r#"{"name": "Acme Energy", "plan": "team"}"#,
    )
    .await;
    assert_eq!(
        status, 200,
        "an unchanged plan is no billing change: {response}"
    );
    let (status, response, _) = call(
        &owner_token,
        "PATCH",
        "/api/v1/workspace".into(),
        r#"{"plan": "enterprise"}"#,
    )
    .await;
    assert_eq!(status, 200, "{response}");
    let workspace = json(&response)["workspace"].clone();
    assert_eq!(
        (
            workspace["name"].as_str(),
            workspace["plan"].as_str(),
            workspace["industry"].as_str()
        ),
        (Some("Acme Energy"), Some("enterprise"), Some("energy"))
    );

    // The last owner stays; once there is another, the first can step down.
    let (status, _, error) = call(
        &owner_token,
        "PATCH",
        format!("/api/v1/members/{owner_user}"),
        r#"{"role": "admin"}"#,
    )
    .await;
    assert_eq!((status, error["code"].as_str()), (409, Some("last_owner")));
    let (status, _, error) = call(
        &owner_token,
        "DELETE",
        format!("/api/v1/members/{owner_user}"),
        "",
    )
    .await;
    assert_eq!((status, error["code"].as_str()), (409, Some("last_owner")));
    let (status, response, _) = call(
        &owner_token,
        "PATCH",
        format!("/api/v1/members/{viewer}"),
        r#"{"role": "owner"}"#,
    )
    .await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(
        (
            json(&response)["role"].as_str(),
            json(&response)["previous_role"].as_str()
        ),
        (Some("owner"), Some("viewer"))
    );
    let (status, response, _) = call(
        &owner_token,
        "DELETE",
        format!("/api/v1/members/{owner_user}"),
        "",
    )
    .await;
    assert_eq!(status, 204, "{response}");
    let (_, response, _) = call(&owner_token, "GET", "/api/v1/members".into(), "").await;
    let members = json(&response)["members"].clone();
    assert_eq!(members.as_array().unwrap().len(), 1, "{response}");
    assert_eq!(
        (members[0]["email"].as_str(), members[0]["role"].as_str()),
        (Some("viewer@acme.example"), Some("owner"))
    );
    let (status, _, _) = call(
        &owner_token,
        "DELETE",
        format!("/api/v1/members/{owner_user}"),
        "",
    )
    .await;
    assert_eq!(status, 404, "a removed member is not a member");

    // An invitation is listed, its link never answered, and it can be withdrawn.
    let (status, response, _) = call(
        &admin_token,
        "POST",
        "/api/v1/invitations".into(),
        r#"{"email": "New.Hire@Acme.example", "role": "operator"}"#,
    )
    .await;
    assert_eq!(status, 201, "{response}");
    assert!(
        !response.contains("tin1."),
        "the invitation link is for the invitee only: {response}"
    );
    let invitation = json(&response)["invitation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, response, _) = call(&admin_token, "GET", "/api/v1/invitations".into(), "").await;
    assert!(
        response.contains(&invitation) && response.contains("\"role\":\"operator\""),
        "{response}"
    );
    let (status, _, _) = call(
        &admin_token,
        "DELETE",
        format!("/api/v1/invitations/{invitation}"),
        "",
    )
    .await;
    assert_eq!(status, 204);
    let (_, response, _) = call(&admin_token, "GET", "/api/v1/invitations".into(), "").await;
    assert!(!response.contains(&invitation), "{response}");

    // A token's text is answered once; it works with its role, and not after its revocation.
    let (status, response, _) = call(
        &admin_token,
        "POST",
        "/api/v1/api-tokens".into(),
        r#"{"name": "dashboards", "role": "operator", "days": 30}"#,
    )
    .await;
    assert_eq!(status, 201, "{response}");
    let created = json(&response);
    let text = created["token"].as_str().unwrap().to_owned();
    assert_eq!(
        (
            created["api_token"]["role"].as_str(),
            created["api_token"]["status"].as_str()
        ),
        (Some("operator"), Some("active"))
    );
    let (_, listed, _) = call(&admin_token, "GET", "/api/v1/api-tokens".into(), "").await;
    assert!(
        !listed.contains(&text) && listed.contains("dashboards"),
        "{listed}"
    );
    assert_eq!(
        call(&text, "GET", "/api/v1/sources".into(), "").await.0,
        200
    );
    assert_eq!(
        call(&text, "GET", "/api/v1/members".into(), "").await.0,
        403
    );
    let revoke = format!("/api/v1/api-tokens/{}/revoke", token_id(&text));
    assert_eq!(call(&admin_token, "POST", revoke, "").await.0, 204);
    assert_eq!(
        call(&text, "GET", "/api/v1/sources".into(), "").await.0,
        401
    );
    let (_, listed, _) = call(&admin_token, "GET", "/api/v1/api-tokens".into(), "").await;
    let revoked = json(&listed)["api_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|token| token["name"] == "dashboards")
        .unwrap()
        .clone();
    assert_eq!(revoked["status"], "revoked");

    let (status, response, _) = call(
        &admin_token,
        "PUT",
        "/api/v1/retention".into(),
        r#"{"bronze_days": 14}"#,
    )
    .await;
    assert_eq!(
        (status, json(&response)["bronze_days"].as_i64()),
        (200, Some(14)),
        "{response}"
    );
    assert_eq!(
        json(
            &call(&admin_token, "GET", "/api/v1/retention".into(), "")
                .await
                .1
        )["bronze_days"],
        14
    );

    // Every change above is in the log, under the token that made it, and the chain verifies;
    // pages follow `next_before` with no entry twice.
    let (status, response, _) = call(
        &owner_token,
        "GET",
        "/api/v1/audit?actor=api_token&limit=1000".into(),
        "",
    )
    .await;
    assert_eq!(status, 200, "{response}");
    let log = json(&response);
    assert_eq!(log["chain"]["intact"], true);
    assert_eq!(log["tenant_id"], a.to_string());
    let actions: Vec<&str> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["action"].as_str().unwrap())
        .collect();
    for action in [
        "member.change_role",
        "member.remove",
        "member.invite",
        "member.invite_revoke",
        "api_token.create",
        "api_token.revoke",
        "tenant.update",
        "retention.set",
    ] {
        assert!(
            actions.contains(&action),
            "{action} missing from {actions:?}"
        );
    }
    let mut seen = Vec::new();
    let mut path = "/api/v1/audit?limit=3".to_owned();
    loop {
        let (status, response, _) = call(&owner_token, "GET", path.clone(), "").await;
        assert_eq!(status, 200, "{response}");
        let page = json(&response);
        let entries = page["entries"].as_array().unwrap();
        assert!(entries.len() <= 3);
        seen.extend(entries.iter().map(|entry| entry["seq"].as_i64().unwrap()));
        match page["next_before"].as_i64() {
            Some(before) => path = format!("/api/v1/audit?limit=3&before={before}"),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort_unstable_by(|x, y| y.cmp(x));
    sorted.dedup();
    assert_eq!(seen, sorted, "newest first, none twice");
    assert_eq!(seen.len() as u64, log["chain"]["entries"].as_u64().unwrap());
    let (status, _, error) = call(&owner_token, "GET", "/api/v1/audit?actor=root".into(), "").await;
    assert_eq!(
        (status, error["details"]["parameter"].as_str()),
        (400, Some("actor"))
    );

    // A browser session acts through the API only with the page's anti-forgery header.
    let mut browser = crate::auth::signed_in(&addr, "viewer@acme.example").await;
    let csrf = browser.get("/app/settings").await.csrf();
    let page = crate::ops::api(
        &mut browser,
        "PUT",
        "/api/v1/retention",
        r#"{"bronze_days": 21}"#,
        None,
    )
    .await;
    assert_eq!(page.status, 403, "{}", page.body);
    let page = crate::ops::api(
        &mut browser,
        "PUT",
        "/api/v1/retention",
        r#"{"bronze_days": 21}"#,
        Some(&csrf),
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let page = crate::ops::api(&mut browser, "GET", "/api/v1/members", "", None).await;
    assert_eq!(page.status, 200, "{}", page.body);

    // The account's own sessions: listed with the current one marked, and another ended.
    let other = crate::auth::signed_in(&addr, "viewer@acme.example").await;
    let page = crate::ops::api(&mut browser, "GET", "/api/v1/me", "", None).await;
    let me = json(&page.body);
    assert_eq!(
        (me["kind"].as_str(), me["user_id"].as_str()),
        (Some("member"), Some(viewer.to_string().as_str()))
    );
    assert_eq!(me["workspaces"][0]["name"], "Acme Energy");
    let page = crate::ops::api(&mut browser, "GET", "/api/v1/sessions", "", None).await;
    let sessions = json(&page.body)["sessions"].as_array().unwrap().clone();
    assert_eq!(sessions.len(), 2, "{}", page.body);
    let current: Vec<bool> = sessions
        .iter()
        .map(|session| session["current"].as_bool().unwrap())
        .collect();
    assert_eq!(current.iter().filter(|current| **current).count(), 1);
    let other_id = sessions
        .iter()
        .find(|session| session["current"] == false)
        .unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/api/v1/sessions/{other_id}");
    let page = crate::ops::api(&mut browser, "DELETE", &path, "", None).await;
    assert_eq!(
        page.status, 403,
        "ending a session needs the anti-forgery header"
    );
    let page = crate::ops::api(&mut browser, "DELETE", &path, "", Some(&csrf)).await;
    assert_eq!(page.status, 204, "{}", page.body);
    let mut other = other;
    assert_eq!(
        crate::ops::api(&mut other, "GET", "/api/v1/me", "", None)
            .await
            .status,
        401,
        "the ended session is signed out"
    );
    let page = crate::ops::api(&mut browser, "DELETE", &path, "", Some(&csrf)).await;
    assert_eq!(page.status, 404);
}

/// One request with exactly the given header lines: (status, headers, body).
async fn raw(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> (u16, Vec<(String, String)>, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let extra: String = headers.iter().map(|line| format!("{line}\r\n")).collect();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap();
    let headers = lines
        .filter_map(|line| line.split_once(": "))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.to_owned()))
        .collect();
    let body = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body:?}"));
    (status.parse().unwrap(), headers, body)
}

/// A request and how it is refused: method, path, header lines, body; status, error code and
/// details.
type Refusal<'a> = (&'a str, String, Vec<&'a str>, &'a str, u16, &'a str, Value);

/// Every way a request can fail to be read answers the API's JSON error, `details` naming
/// what was wrong: no body, another content type, a body its schema refuses, a query or path
/// that does not decode, a method the path does not serve.
#[tokio::test]
async fn every_rejection_is_the_json_error_naming_what_was_wrong() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let acme = tenant(&database, "Acme").await;
    let owner_token = token(&database, acme, Role::Owner).await;
    let bearer = format!("Authorization: Bearer {owner_token}");
    let json_body = "Content-Type: application/json";
    let (_, _, document) = raw(&addr, "GET", "/api/v1/openapi.json", &[], "").await;
    let name_pattern =
        document["components"]["schemas"]["NewApiToken"]["properties"]["name"]["pattern"]
            .as_str()
            .unwrap()
            .to_owned();
    let cases: Vec<Refusal> = vec![
        (
            "PATCH",
            "/api/v1/workspace".into(),
            vec![&bearer],
            "",
            400,
            "missing_body",
            serde_json::json!({ "body": "required" }),
        ),
        (
            "POST",
            "/api/v1/sources".into(),
            vec![&bearer, "Content-Type: text/plain"],
            r#"{"name": "db", "kind": "postgres"}"#,
            415,
            "unsupported_media_type",
            serde_json::json!({ "header": "Content-Type", "expected": "application/json" }),
        ),
        (
            "POST",
            "/api/v1/sources".into(),
            vec![&bearer],
            r#"{"name": "db", "kind": "postgres"}"#,
            415,
            "unsupported_media_type",
            serde_json::json!({ "header": "Content-Type", "expected": "application/json" }),
        ),
        (
            "DELETE",
            "/api/v1/masking-policies?source_table=*".into(),
            vec![&bearer],
            "",
            400,
            "invalid_query",
            serde_json::json!({ "query": "missing field `field_path`" }),
        ),
        (
            "GET",
            "/api/v1/audit?limit=many".into(),
            vec![&bearer],
            "",
            400,
            "invalid_query",
            serde_json::json!({ "query": "limit: invalid digit found in string" }),
        ),
        (
            "GET",
            "/api/v1/audit?action=%00".into(),
            vec![&bearer],
            "",
            400,
            "invalid_query",
            serde_json::json!({ "query": "U+0000" }),
        ),
        (
            "GET",
            "/api/v1/replays/%FF".into(),
            vec![&bearer],
            "",
            400,
            "invalid_path_parameter",
            serde_json::json!({ "path": "Invalid UTF-8 in `request`" }),
        ),
        (
            "POST",
            "/api/v1/api-tokens".into(),
            vec![&bearer, json_body],
            r#"{"name": "deploy\u0007", "role": "viewer"}"#,
            422,
            "invalid",
            serde_json::json!({
                "field": "name",
                "pointer": "/name",
                "problem": format!("must match {name_pattern}"),
            }),
        ),
        (
            "PUT",
            "/api/v1/retention".into(),
            vec![&bearer, json_body],
            r#"{"bronze_days": 30, "keep": "forever"}"#,
            400,
            "invalid_json",
            serde_json::json!({ "line": 1, "column": 26 }),
        ),
    ];
    for (method, path, headers, body, status, code, details) in cases {
        let (given, _, answer) = raw(&addr, method, &path, &headers, body).await;
        assert_eq!(
            (given, &answer["error"]["code"], &answer["error"]["details"]),
            (status, &Value::from(code), &details),
            "{method} {path} {body}"
        );
        assert!(answer["error"]["message"].is_string(), "{answer}");
    }

    // A method the path does not serve: 405, the methods it does in `Allow`, the JSON error.
    let (status, headers, answer) = raw(&addr, "PUT", "/api/v1/sources", &[&bearer], "").await;
    assert_eq!(status, 405);
    assert_eq!(answer["error"]["code"], "method_not_allowed");
    assert_eq!(
        answer["error"]["details"],
        serde_json::json!({ "method": "PUT" })
    );
    let allow = headers
        .iter()
        .find(|(name, _)| name == "allow")
        .map(|(_, value)| value.as_str());
    assert_eq!(allow, Some("GET,HEAD,POST"));

    // The first SSO configuration needs its secret: a conflict with what is stored.
    let (status, _, answer) = raw(
        &addr,
        "PUT",
        "/api/v1/sso",
        &[&bearer, json_body],
        r#"{"issuer": "https://idp.example.com", "client_id": "c", "domains": ["acme.test"], "default_role": "viewer"}"#,
    )
    .await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (409, &Value::from("secret_required"))
    );
    let (status, _, answer) = raw(&addr, "DELETE", "/api/v1/sso", &[&bearer], "").await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (404, &Value::from("not_found"))
    );
}

/// What the document says each operation may answer is what it answers: the statuses of
/// failures particular to an operation are documented, and creating operations link to
/// what uses what they return.
#[tokio::test]
async fn the_document_lists_every_status_and_links_created_objects_onward() {
    let test_database = TestDatabase::new().await;
    let (addr, _stop) = serve(test_database.connect().await).await;
    let (status, _, document) = raw(&addr, "GET", "/api/v1/openapi.json", &[], "").await;
    assert_eq!(status, 200);
    let responses = |method: &str, path: &str| -> Vec<String> {
        document["paths"][path][method]["responses"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    for (method, path, status) in [
        ("delete", "/api/v1/sso", "404"),
        ("get", "/api/v1/sso", "404"),
        ("put", "/api/v1/sso", "409"),
        ("post", "/api/v1/sso/domains/{domain}/verify", "409"),
        ("post", "/api/v1/invitations", "429"),
        ("post", "/api/v1/masking-policies", "409"),
        ("post", "/api/v1/sources", "415"),
        ("patch", "/api/v1/members/{user}", "409"),
        ("get", "/api/v1/audit", "400"),
    ] {
        assert!(
            responses(method, path).contains(&status.to_owned()),
            "{method} {path}: {status}"
        );
    }
    assert_eq!(
        document["paths"]["/api/v1/workspace"]["patch"]["requestBody"]["required"],
        true
    );
    assert_eq!(
        document["paths"]["/api/v1/sources/{source}/revoke"]["post"]["requestBody"]["required"],
        false
    );
    let links = &document["paths"]["/api/v1/api-tokens"]["post"]["responses"]["201"]["links"];
    assert_eq!(
        links["RevokeToken"]["parameters"]["token"],
        "$response.body#/api_token/token_id"
    );
    let links = &document["paths"]["/api/v1/sources"]["post"]["responses"]["201"]["links"];
    assert_eq!(
        links["IssuePairingToken"]["parameters"]["source"],
        "$response.body#/source/source_id"
    );
}

/// Credentials follow their holder, through the API: when the owner demotes an admin to
/// operator, the admin token the admin made on the settings page stops working, and so does one
/// that token made; their operator token keeps working until the owner removes them, and the
/// revocations are in the audit log with the change that caused them.
#[tokio::test]
async fn an_admins_tokens_stop_working_when_the_owner_demotes_then_removes_them() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let a = tenant(&database, "Acme").await;
    crate::auth::member(&database, a, "owner@acme.example", Role::Owner).await;
    let admin = crate::auth::member(&database, a, "admin@acme.example", Role::Admin).await;
    let mut owner_browser = crate::browser::Browser::new(&addr);
    crate::auth::sign_in(
        &mut owner_browser,
        "owner@acme.example",
        crate::auth::PASSWORD,
    )
    .await;
    let owner_token = page_token(&mut owner_browser, "owner's", "owner").await;
    let mut admin_browser = crate::browser::Browser::new(&addr);
    crate::auth::sign_in(
        &mut admin_browser,
        "admin@acme.example",
        crate::auth::PASSWORD,
    )
    .await;
    let admin_token = page_token(&mut admin_browser, "admin's", "admin").await;
    let operator_token = page_token(&mut admin_browser, "admin's operator", "operator").await;
    let call = |bearer: &str, method: &'static str, path: String, body: &'static str| {
        let (addr, bearer) = (addr.clone(), bearer.to_owned());
        async move {
            let (status, _, response) = request(&addr, method, &path, Some(&bearer), body).await;
            (status, response)
        }
    };
    let (status, response) = call(
        &admin_token,
        "POST",
        "/api/v1/api-tokens".into(),
        r#"{"name": "made by a token", "role": "admin"}"#,
    )
    .await;
    assert_eq!(status, 201, "{response}");
    let child_token = json(&response)["token"].as_str().unwrap().to_owned();
    for bearer in [&admin_token, &child_token] {
        let (status, response) = call(bearer, "GET", "/api/v1/api-tokens".into(), "").await;
        assert_eq!(status, 200, "{response}");
    }

    // The owner demotes the admin to operator: what they made above operator stops working.
    let (status, response) = call(
        &owner_token,
        "PATCH",
        format!("/api/v1/members/{admin}"),
        r#"{"role": "operator"}"#,
    )
    .await;
    assert_eq!(status, 200, "{response}");
    for bearer in [&admin_token, &child_token] {
        let (status, response) = call(bearer, "GET", "/api/v1/sources".into(), "").await;
        assert_eq!(status, 401, "a revoked admin token still works: {response}");
    }
    let (status, response) = call(&operator_token, "GET", "/api/v1/sources".into(), "").await;
    assert_eq!(
        status, 200,
        "the operator token is within their role: {response}"
    );
    let (status, response) = call(&owner_token, "GET", "/api/v1/sources".into(), "").await;
    assert_eq!(status, 200, "the owner's own token is theirs: {response}");

    // Removed: nothing they made works.
    let (status, response) = call(
        &owner_token,
        "DELETE",
        format!("/api/v1/members/{admin}"),
        "",
    )
    .await;
    assert_eq!(status, 204, "{response}");
    let (status, _) = call(&operator_token, "GET", "/api/v1/sources".into(), "").await;
    assert_eq!(status, 401);

    // Each revocation is audited, naming the creator and the member change.
    let (status, response) = call(
        &owner_token,
        "GET",
        "/api/v1/audit?action=api_token.revoke".into(),
        "",
    )
    .await;
    assert_eq!(status, 200, "{response}");
    let mut reasons: Vec<(String, String)> = json(&response)["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            assert_eq!(entry["details"]["created_by"], admin.to_string());
            (
                entry["details"]["role"].as_str().unwrap().to_owned(),
                entry["details"]["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    reasons.sort();
    let expected = [
        ("admin", "member.change_role"),
        ("admin", "member.change_role"),
        ("operator", "member.remove"),
    ]
    .map(|(role, reason)| (role.to_owned(), reason.to_owned()));
    assert_eq!(reasons, expected);
}

/// A token created on the settings page by the signed-in browser: its one-time text.
pub async fn page_token(browser: &mut crate::browser::Browser, name: &str, role: &str) -> String {
    let page = browser
        .submit(
            "/app/settings/api-tokens",
            "/app/settings/api-tokens",
            &[("name", name), ("role", role), ("days", "30")],
        )
        .await;
    assert_eq!(page.status, 201, "{}", page.body);
    let start = page.body.find("tat1.").expect("the token is shown");
    let end = page.body[start..].find('<').unwrap() + start;
    page.body[start..end].to_owned()
}

/// Invitations mail strangers at an inviter's choosing: at most 20 an hour per inviter and 50
/// per workspace, counted the same whether sent on the settings page or through the API (with a
/// token the inviter holds), and refused the same: 429, `Retry-After`, nothing created or sent.
#[tokio::test]
async fn invitations_are_limited_per_inviter_and_per_workspace_on_pages_and_the_api_alike() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let acme = tenant(&database, "Acme").await;
    crate::auth::member(&database, acme, "ada@acme.example", Role::Owner).await;
    crate::auth::member(&database, acme, "bob@acme.example", Role::Admin).await;
    let mut ada = crate::auth::signed_in(&addr, "ada@acme.example").await;
    let adas_token = page_token(&mut ada, "ada's", "admin").await;
    let mut bob = crate::auth::signed_in(&addr, "bob@acme.example").await;
    let bobs_token = page_token(&mut bob, "bob's", "admin").await;
    let invite_by_page = |browser: &mut crate::browser::Browser, n: usize| {
        let mut browser = browser.clone();
        async move {
            let email = format!("page{n}@invited.example");
            let page = browser
                .submit(
                    "/app/settings",
                    "/app/settings/invitations",
                    &[("email", &email), ("role", "viewer")],
                )
                .await;
            (
                page.status,
                page.header("retry-after").map(str::to_owned),
                page.body,
            )
        }
    };
    let invite_by_api = |bearer: &str, n: usize| {
        let (addr, bearer) = (addr.clone(), bearer.to_owned());
        async move {
            let body = format!(r#"{{"email": "api{n}@invited.example", "role": "viewer"}}"#);
            let (status, headers, response) =
                request(&addr, "POST", "/api/v1/invitations", Some(&bearer), &body).await;
            let retry_after = headers
                .iter()
                .find(|(name, _)| name == "retry-after")
                .map(|(_, value)| value.clone());
            (status, retry_after, response)
        }
    };

    // Ada sends 10 on the page and 10 with her token: her 20.
    for n in 0..10 {
        let (status, _, body) = invite_by_page(&mut ada, n).await;
        assert_eq!(status, 303, "{body}");
        let (status, _, body) = invite_by_api(&adas_token, n).await;
        assert_eq!(status, 201, "{body}");
    }
    // The 21st is refused both ways, saying so and when to come back.
    let (status, retry_after, body) = invite_by_page(&mut ada, 100).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(retry_after.as_deref(), Some("3600"));
    assert!(body.contains("Too many invitations"), "{body}");
    let (status, retry_after, body) = invite_by_api(&adas_token, 100).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(retry_after.as_deref(), Some("3600"));
    let refusal = json(&body);
    assert_eq!(refusal["error"]["code"], "invitations_rate_limited");
    assert_eq!(refusal["error"]["details"]["limit"], "inviter");

    // Bob, the page and the API in turn, has his own 20 (Ada's refused attempts did not count
    // against the workspace's 50, so 30 are left for it).
    let mut sent = 0;
    loop {
        let (status, retry_after, body) = if sent % 2 == 0 {
            invite_by_api(&bobs_token, 200 + sent).await
        } else {
            invite_by_page(&mut bob, 200 + sent).await
        };
        match status {
            201 | 303 => sent += 1,
            429 => {
                assert_eq!(retry_after.as_deref(), Some("3600"));
                if sent % 2 == 0 {
                    assert_eq!(json(&body)["error"]["code"], "invitations_rate_limited");
                } else {
                    assert!(body.contains("Too many invitations"), "{body}");
                }
                break;
            }
            other => panic!("unexpected {other}: {body}"),
        }
        assert!(sent <= 20, "Bob's own limit was not kept");
    }
    assert_eq!(sent, 20, "Bob reaches his own limit first");

    // With 40 sent, a third inviter gets the workspace's last 10, then is refused both ways for
    // the workspace's limit, though within her own.
    crate::auth::member(&database, acme, "carol@acme.example", Role::Admin).await;
    let mut carol = crate::auth::signed_in(&addr, "carol@acme.example").await;
    let carols_token = page_token(&mut carol, "carol's", "admin").await;
    for n in 0..10 {
        let (status, _, body) = invite_by_api(&carols_token, 300 + n).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, retry_after, body) = invite_by_api(&carols_token, 399).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(retry_after.as_deref(), Some("3600"));
    assert_eq!(json(&body)["error"]["details"]["limit"], "workspace");
    let (status, _, body) = invite_by_page(&mut carol, 399).await;
    assert_eq!(status, 429, "{body}");

    // Exactly 50 were created; another workspace is not held back by Acme's count.
    let (status, _, response) =
        request(&addr, "GET", "/api/v1/invitations", Some(&adas_token), "").await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(json(&response)["invitations"].as_array().unwrap().len(), 50);
    let globex = tenant(&database, "Globex").await;
    let globex_token = token(&database, globex, Role::Owner).await;
    let (status, _, body) = invite_by_api(&globex_token, 500).await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn replay_ranges_are_bounded_and_one_bronze_replay_runs_at_a_time() {
    use time::format_description::well_known::Rfc3339;
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let a = tenant(&database, "Acme").await;
    let b = tenant(&database, "Globex").await;
    let a_admin = token(&database, a, Role::Admin).await;
    let b_admin = token(&database, b, Role::Admin).await;
    let now = time::OffsetDateTime::now_utc();
    let at = |offset: time::Duration| (now + offset).format(&Rfc3339).unwrap();
    let range = |from: String, to: String| {
        format!(r#"{{"kind": "range", "from": "{from}", "to": "{to}"}}"#)
    };
    let hour = time::Duration::hours(1);
    // POST /api/v1/replays with `body` as the holder of `token`: (status, body).
    let replay = async |token: &str, body: &str| {
        let (status, _, answer) =
            request(&addr, "POST", "/api/v1/replays", Some(token), body).await;
        (status, answer)
    };
    let replay_requests = async |tenant: TenantId| -> i64 {
        let mut tx = owner(&database, tenant).await;
        let count = sqlx::query_scalar("select count(*) from pipeline.replay_requests")
            .fetch_one(tx.connection_for_tests())
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        count
    };

    // Each bound refused with its own code, naming the field; nothing recorded.
    for (from, to, field, code) in [
        (at(-hour), at(-hour * 2), "to", "range_inverted"),
        (at(-hour), at(-hour), "to", "range_empty"),
        (at(hour), at(hour * 2), "from", "range_in_future"),
        (at(-hour), at(hour), "to", "range_ends_too_late"),
        (at(-hour * 24 * 8), at(-hour), "from", "range_too_long"),
    ] {
        let (status, body) = replay(&a_admin, &range(from, to)).await;
        assert_eq!(status, 422, "{code}: {body}");
        let body = json(&body);
        assert_eq!(body["error"]["code"], code);
        assert_eq!(body["error"]["details"]["field"], field, "{code}");
    }
    assert_eq!(replay_requests(a).await, 0);

    // Just under seven days, to 4 minutes ahead, is in bounds; while it is pending, neither another range
    // nor a rebuild is taken (409), a dead-letter replay is, and another tenant's range is.
    let (status, body) = replay(
        &a_admin,
        &range(
            at(-hour * 24 * 7 + time::Duration::minutes(5)),
            at(time::Duration::minutes(4)),
        ),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let first: uuid::Uuid = json(&body)["request_id"].as_str().unwrap().parse().unwrap();
    for body in [
        range(at(-hour), at(-hour / 2)),
        r#"{"kind": "rebuild"}"#.into(),
    ] {
        let (status, answer) = replay(&a_admin, &body).await;
        assert_eq!(status, 409, "{body}: {answer}");
        assert_eq!(json(&answer)["error"]["code"], "replay_under_way");
    }
    let (status, _) = replay(&a_admin, r#"{"kind": "dlq"}"#).await;
    assert_eq!(status, 202);
    let (status, body) = replay(&b_admin, r#"{"kind": "rebuild"}"#).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(replay_requests(a).await, 2);

    // Once the pipeline has finished the first, the next is taken.
    let mut service = test_database.service().await;
    sqlx::query(
        "update pipeline.replay_requests set status = 'done', finished_at = now() \
         where tenant_id = $1 and request_id = $2",
    )
    .bind(a.as_uuid())
    .bind(first)
    .execute(&mut service)
    .await
    .unwrap();
    let (status, body) = replay(&a_admin, r#"{"kind": "rebuild"}"#).await;
    assert_eq!(status, 202, "{body}");

    // Two requests at once: exactly one is taken.
    sqlx::query("update pipeline.replay_requests set status = 'failed' where tenant_id = $1")
        .bind(a.as_uuid())
        .execute(&mut service)
        .await
        .unwrap();
    let both =
        futures_util::future::join_all((0..2).map(|_| replay(&a_admin, r#"{"kind": "rebuild"}"#)))
            .await;
    let mut statuses: Vec<u16> = both.iter().map(|(status, _)| *status).collect();
    statuses.sort();
    assert_eq!(statuses, [202, 409]);
}
