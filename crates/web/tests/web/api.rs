//! The JSON API as every tenant role, tenant A against tenant B, and with bad tokens.

use domain::{Permission, Plan, Role, SourceId, TenantAttributes, TenantId, UserId};
use serde_json::Value;
use store::{Actor, Database, Scope, TenantTx};
use test_support::TestDatabase;

use crate::{request, serve};

pub async fn tenant(database: &Database, name: &str) -> TenantId {
    let attributes = TenantAttributes::parse(name, Plan::Team, "energy", "eu").unwrap();
    store::control::create_tenant(database, Actor::Cli("test".into()), &attributes)
        .await
        .unwrap()
        .tenant_id
}

/// A transaction as an owner of `tenant` (a user who need not exist).
pub async fn owner(database: &Database, tenant: TenantId) -> TenantTx {
    TenantTx::begin(
        database,
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

async fn source(database: &Database, tenant: TenantId) -> SourceId {
    let mut tx = owner(database, tenant).await;
    let name = format!("source {}", uuid::Uuid::new_v4());
    let (source, _) = store::sources::create_source(&mut tx, &name, "simulator")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    source.source_id
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
    let b_sso = r#"{"issuer": "https://login.globex.example", "client_id": "globex", "client_secret": "globex secret", "domains": ["globex.example"], "default_role": "operator", "enabled": false}"#;
    let (status, _, _) = request(&addr, "PUT", "/api/v1/sso", Some(&b_admin), b_sso).await;
    assert_eq!(status, 200);
    crate::masking::rule(&database, b, "*", "globex_secret_field", "drop").await;
    let mut tx = owner(&database, a).await;
    let replay = store::replay::request(&mut tx, &store::replay::ReplayKind::DeadLetters)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let mut failures = Vec::new();
    for role in Role::TENANT_ROLES {
        let bearer = token(&database, a, role).await;
        let a_source = source(&database, a).await;
        crate::masking::rule(&database, a, "*", &format!("seed_{role}"), "hash").await;
        let routes: Vec<(&str, String, String, Permission, u16)> = vec![
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
                "POST",
                format!("/api/v1/sources/{a_source}/pairing-tokens"),
                String::new(),
                Permission::ManageSources,
                201,
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
                "PUT",
                "/api/v1/sso".into(),
                format!(
                    r#"{{"issuer": "https://idp.example.com", "client_id": "set by {role}", "client_secret": "s", "domains": ["acme.example"], "default_role": "viewer", "enabled": true}}"#
                ),
                Permission::ManageWorkspace,
                200,
            ),
            (
                "GET",
                "/api/v1/sso".into(),
                String::new(),
                Permission::ManageWorkspace,
                200,
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
                Permission::ManageWorkspace,
                204,
            ),
            (
                "DELETE",
                format!("/api/v1/masking-policies?field_path=seed_{role}"),
                String::new(),
                Permission::ManageMasking,
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
        if role.allows(Permission::ManageSources) {
            for path in [
                format!("/api/v1/sources/{b_source}/pairing-tokens"),
                format!("/api/v1/sources/{b_source}/revoke"),
            ] {
                let (status, _, response) = request(&addr, "POST", &path, Some(&bearer), "").await;
                if status != 404 {
                    failures.push(format!(
                        "{role} POST {path} of tenant B: expected 404, got {status} {response}"
                    ));
                }
            }
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
    let (status, _, response) = request(&addr, "GET", "/api/v1/sso", Some(&b_admin), "").await;
    assert_eq!(status, 200);
    let b_config = json(&response);
    assert_eq!(b_config["sso"]["client_id"], "globex");
    assert_eq!(b_config["sso"]["issuer"], "https://login.globex.example");
    assert!(!response.contains("globex secret") && !response.contains("client_secret"));

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
    let mut forged = valid.clone();
    forged.replace_range(forged.len() - 2.., "00");

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
    let reports = store::audit::verify(&database, Some(a)).await.unwrap();
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
