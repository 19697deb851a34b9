//! `/api/v1/sources/{source}/mappings`: edited by owners and admins, read by operators, refused
//! to viewers, validated, audited, and invisible to another tenant.

use domain::{Plan, Role, TenantAttributes, TenantId, UserId};
use serde_json::Value;
use store::{Actor, Database, Scope, TenantTx};
use test_support::TestDatabase;

use crate::{request, serve};

async fn tenant(database: &Database, name: &str) -> TenantId {
    let attributes = TenantAttributes::parse(name, Plan::Team, "energy", "eu").unwrap();
    store::control::create_tenant(&database.app, Actor::Cli("test".into()), &attributes)
        .await
        .unwrap()
        .tenant_id
}

async fn token(database: &Database, tenant: TenantId, role: Role) -> String {
    let mut tx = TenantTx::begin(
        &database.app,
        Scope::Member {
            tenant,
            user: UserId::new_random(),
            role: Role::Owner,
        },
    )
    .await
    .unwrap();
    let (_, text) = store::api_tokens::create(&mut tx, "test", role, time::Duration::days(1))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    text
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"))
}

#[tokio::test]
async fn mappings_are_edited_by_admins_validated_audited_and_tenant_scoped() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let acme = tenant(&database, "Acme").await;
    let globex = tenant(&database, "Globex").await;
    let source = uuid::Uuid::new_v4();
    let path = format!("/api/v1/sources/{source}/mappings/gadgets");
    let body = r#"{"entity_kind": "device", "id_column": "gid", "columns": {"label": "name"}}"#;

    let viewer = token(&database, acme, Role::Viewer).await;
    let (status, _, _) = request(&addr, "PUT", &path, Some(&viewer), body).await;
    assert_eq!(status, 403);

    let admin = token(&database, acme, Role::Admin).await;
    let (status, _, response) = request(&addr, "PUT", &path, Some(&admin), body).await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(json(&response)["columns"]["label"], "name");

    for (bad, why) in [
        (r#"{"entity_kind": "gizmo"}"#, "entity_kind"),
        (
            r#"{"entity_kind": "site", "columns": {"lat": "latitude", "y": "latitude"}}"#,
            "conflict",
        ),
        (
            r#"{"entity_kind": "site", "columns": {"x": "firmware"}}"#,
            "not a typed column",
        ),
        (r#"{"entity_kind": "site", "colums": {}}"#, "body must be"),
    ] {
        let (status, _, response) = request(&addr, "PUT", &path, Some(&admin), bad).await;
        assert_eq!(status, 400, "{bad}: {response}");
        let message = json(&response)["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(message.contains(why), "{bad}: {message}");
    }

    let operator = token(&database, acme, Role::Operator).await;
    let list = format!("/api/v1/sources/{source}/mappings");
    let (status, _, response) = request(&addr, "GET", &list, Some(&operator), "").await;
    assert_eq!(status, 200);
    let listed = json(&response);
    assert_eq!(listed["mappings"].as_array().unwrap().len(), 1);
    assert_eq!(listed["typed_columns"]["site"]["latitude"], "number");

    let other = token(&database, globex, Role::Owner).await;
    let (_, _, response) = request(&addr, "GET", &list, Some(&other), "").await;
    assert_eq!(json(&response)["mappings"].as_array().unwrap().len(), 0);
    let (status, _, _) = request(&addr, "DELETE", &path, Some(&other), "").await;
    assert_eq!(status, 404, "another tenant's mapping is not found");

    let (status, _, _) = request(&addr, "DELETE", &path, Some(&admin), "").await;
    assert_eq!(status, 204);
    let (status, _, _) = request(&addr, "DELETE", &path, Some(&admin), "").await;
    assert_eq!(status, 404);

    let mut tx = TenantTx::begin(
        &database.app,
        Scope::Member {
            tenant: acme,
            user: UserId::new_random(),
            role: Role::Owner,
        },
    )
    .await
    .unwrap();
    let actions: Vec<String> = store::audit::list(&mut tx, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.action)
        .filter(|action| action.starts_with("mapping."))
        .collect();
    assert_eq!(actions.len(), 2, "{actions:?}");
    assert!(
        actions.contains(&"mapping.put".to_owned())
            && actions.contains(&"mapping.delete".to_owned())
    );
}
