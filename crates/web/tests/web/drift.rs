//! `/app/drift` and `/api/v1/drift`: an admin sees a field left to the typed extras and promotes
//! it (a mapping edit and a rebuild request, audited); viewers and operators are refused; another
//! workspace's field ids act on nothing.

use std::collections::BTreeMap;

use domain::{Role, SourceId, TenantId};
use serde_json::Value;
use store::Database;
use test_support::TestDatabase;
use uuid::Uuid;

use crate::api::{owner, source, tenant, token};
use crate::auth::{member, signed_in};
use crate::{request, serve};

/// A drift row of `tenant`'s `public.devices` as the materializer writes it: its id.
pub async fn drift_field(
    admin: &mut sqlx::PgConnection,
    tenant: TenantId,
    source: SourceId,
    field: &str,
) -> Uuid {
    sqlx::query_scalar(
        "insert into pipeline.drift_fields (tenant_id, source_id, schema_name, table_name, \
             entity_kind, field_name, json_type, row_count, first_seen_at, last_seen_at) \
         values ($1, $2, 'public', 'devices', 'device', $3, 'string', 3, now(), now()) \
         returning drift_id",
    )
    .bind(tenant.as_uuid())
    .bind(source.as_uuid())
    .bind(field)
    .fetch_one(admin)
    .await
    .unwrap()
}

/// Maps `tenant`'s `public.devices` of `source` as devices, naming one column.
pub async fn map_devices(database: &Database, tenant: TenantId, source: SourceId) {
    let mut tx = owner(database, tenant).await;
    store::read_models::put_mapping(
        &mut tx,
        &store::read_models::MappingRow {
            source_id: *source.as_uuid(),
            source_table: "public.devices".into(),
            entity_kind: "device".into(),
            id_column: None,
            columns: BTreeMap::from([("name".into(), "name".into())]),
            reading_entity_kind: None,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"))
}

async fn mapping_columns(database: &Database, tenant: TenantId) -> Vec<BTreeMap<String, String>> {
    let mut tx = owner(database, tenant).await;
    let mappings = store::read_models::list_mappings(&mut tx).await.unwrap();
    tx.commit().await.unwrap();
    mappings
        .into_iter()
        .map(|mapping| mapping.columns)
        .collect()
}

#[tokio::test]
async fn an_admin_promotes_a_drift_field_others_are_refused_and_tenant_b_is_out_of_reach() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let a = tenant(&database, "Acme").await;
    let b = tenant(&database, "Globex").await;
    let a_source = source(&database, a).await;
    let b_source = source(&database, b).await;
    map_devices(&database, a, a_source).await;
    map_devices(&database, b, b_source).await;
    let mut admin = test_database.admin().await;
    let a_field = drift_field(&mut admin, a, a_source, "acme_colour").await;
    let b_field = drift_field(&mut admin, b, b_source, "globex_colour").await;
    drop(admin);

    // Viewers and operators: the page and every route are refused, and nothing changes.
    for role in [Role::Viewer, Role::Operator] {
        let email = format!("{role}@acme.example.com");
        member(&database, a, &email, role).await;
        let mut browser = signed_in(&addr, &email).await;
        let page = browser.get("/app/drift").await;
        assert_eq!(page.status, 403, "{role}");
        assert!(!page.body.contains("acme_colour"), "{role}");
        let bearer = token(&database, a, role).await;
        for (method, path, body) in [
            ("GET", "/api/v1/drift", String::new()),
            (
                "POST",
                "/api/v1/drift/promote",
                format!(r#"{{"drift_id": "{a_field}", "typed_column": "model"}}"#),
            ),
            (
                "POST",
                "/api/v1/drift/dismiss",
                format!(r#"{{"drift_id": "{a_field}"}}"#),
            ),
        ] {
            let (status, _, response) = request(&addr, method, path, Some(&bearer), &body).await;
            assert_eq!(status, 403, "{role} {method} {path}: {response}");
            assert_eq!(json(&response)["error"]["code"], "forbidden");
        }
    }

    // An admin sees the workspace's own field, not tenant B's.
    member(&database, a, "admin@acme.example.com", Role::Admin).await;
    let mut browser = signed_in(&addr, "admin@acme.example.com").await;
    let page = browser.get("/app/drift").await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("<code>acme_colour</code>"),
        "{}",
        page.body
    );
    assert!(page.body.contains("<code>public.devices</code>"));
    assert!(
        !page.body.contains("globex"),
        "tenant B's field is not shown"
    );
    let bearer = token(&database, a, Role::Admin).await;
    let (status, _, response) = request(&addr, "GET", "/api/v1/drift", Some(&bearer), "").await;
    assert_eq!(status, 200, "{response}");
    let listed = json(&response);
    let fields = listed["drift_fields"].as_array().unwrap();
    assert_eq!(fields.len(), 1, "{response}");
    assert_eq!(fields[0]["drift_id"], a_field.to_string());
    assert_eq!(
        (
            &fields[0]["field_name"],
            &fields[0]["json_type"],
            &fields[0]["rows"]
        ),
        (
            &Value::from("acme_colour"),
            &Value::from("string"),
            &Value::from(3)
        )
    );

    // Tenant B's id, on the page and through the API: not found, and B's data unchanged.
    for action in ["/app/drift/promote", "/app/drift/dismiss"] {
        let refused = browser
            .submit(
                "/app/drift",
                action,
                &[
                    ("drift_id", &b_field.to_string()),
                    ("typed_column", "model"),
                ],
            )
            .await;
        assert_eq!(refused.status, 404, "{action}");
    }
    for (path, body) in [
        (
            "/api/v1/drift/promote",
            format!(r#"{{"drift_id": "{b_field}", "typed_column": "model"}}"#),
        ),
        (
            "/api/v1/drift/dismiss",
            format!(r#"{{"drift_id": "{b_field}"}}"#),
        ),
    ] {
        let (status, _, response) = request(&addr, "POST", path, Some(&bearer), &body).await;
        assert_eq!(status, 404, "{path}: {response}");
        assert_eq!(json(&response)["error"]["code"], "not_found");
    }
    assert_eq!(
        mapping_columns(&database, b).await,
        [BTreeMap::from([("name".to_owned(), "name".to_owned())])]
    );
    let b_dismissed: Option<time::OffsetDateTime> =
        sqlx::query_scalar("select dismissed_at from pipeline.drift_fields where drift_id = $1")
            .bind(b_field)
            .fetch_one(&mut test_database.admin().await)
            .await
            .unwrap();
    assert_eq!(b_dismissed, None);

    // A column of another type is refused with the reason; a fitting one is promoted.
    let refused = browser
        .submit(
            "/app/drift",
            "/app/drift/promote",
            &[
                ("drift_id", &a_field.to_string()),
                ("typed_column", "last_seen_at"),
            ],
        )
        .await;
    assert_eq!(refused.status, 409);
    assert!(
        refused.body.contains("cannot always hold"),
        "{}",
        refused.body
    );
    let promoted = browser
        .submit(
            "/app/drift",
            "/app/drift/promote",
            &[
                ("drift_id", &a_field.to_string()),
                ("typed_column", "model"),
            ],
        )
        .await;
    assert_eq!(promoted.status, 303, "{}", promoted.body);
    assert_eq!(
        promoted.header("location"),
        Some("/app/drift?done=promoted")
    );
    let after = browser.get("/app/drift?done=promoted").await;
    assert!(after.body.contains("a rebuild is requested"));
    assert!(after.body.contains("No drift"), "the mapping claims it now");
    assert_eq!(
        mapping_columns(&database, a).await,
        [BTreeMap::from([
            ("acme_colour".to_owned(), "model".to_owned()),
            ("name".to_owned(), "name".to_owned()),
        ])]
    );
    let pending: Vec<String> = sqlx::query_scalar(
        "select kind from pipeline.replay_requests where tenant_id = $1 and status = 'pending'",
    )
    .bind(a.as_uuid())
    .fetch_all(&mut test_database.admin().await)
    .await
    .unwrap();
    assert_eq!(
        pending,
        ["rebuild"],
        "the rebuild is recorded for the pipeline"
    );

    // Audited, in the audit log the owner reads.
    member(&database, a, "owner@acme.example.com", Role::Owner).await;
    let mut owner_browser = signed_in(&addr, "owner@acme.example.com").await;
    let log = owner_browser.get("/app/audit").await;
    assert_eq!(log.status, 200);
    for action in ["drift.promote", "mapping.put", "replay.request"] {
        assert!(
            log.body.contains(action),
            "{action} is not in the audit log"
        );
    }
    let (status, _, response) = request(
        &addr,
        "GET",
        "/api/v1/audit?action=drift.",
        Some(&bearer),
        "",
    )
    .await;
    assert_eq!(status, 200, "{response}");
    let entries = json(&response)["entries"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 1, "{response}");
    assert_eq!(entries[0]["target"], a_field.to_string());
    assert_eq!(entries[0]["details"]["typed_column"], "model");

    // A second promotion while the rebuild is pending is refused.
    let mut admin = test_database.admin().await;
    let another = drift_field(&mut admin, a, a_source, "acme_rating").await;
    drop(admin);
    let (status, _, response) = request(
        &addr,
        "POST",
        "/api/v1/drift/promote",
        Some(&bearer),
        &format!(r#"{{"drift_id": "{another}", "typed_column": "status"}}"#),
    )
    .await;
    assert_eq!(status, 409, "{response}");
    assert_eq!(json(&response)["error"]["code"], "replay_under_way");

    // Dismissed through the API: gone from the list, audited.
    let (status, _, response) = request(
        &addr,
        "POST",
        "/api/v1/drift/dismiss",
        Some(&bearer),
        &format!(r#"{{"drift_id": "{another}"}}"#),
    )
    .await;
    assert_eq!(status, 204, "{response}");
    let (_, _, response) = request(&addr, "GET", "/api/v1/drift", Some(&bearer), "").await;
    assert_eq!(json(&response)["drift_fields"], Value::Array(Vec::new()));
    let (_, _, response) = request(
        &addr,
        "GET",
        "/api/v1/audit?action=drift.dismiss",
        Some(&bearer),
        "",
    )
    .await;
    assert_eq!(json(&response)["entries"].as_array().unwrap().len(), 1);

    // Schema-invalid bodies are refused naming the field.
    for body in [
        r#"{"drift_id": "not-a-uuid", "typed_column": "model"}"#,
        r#"{"drift_id": "00000000-0000-0000-0000-000000000000", "typed_column": "colour"}"#,
        r#"{"drift_id": "00000000-0000-0000-0000-000000000000"}"#,
    ] {
        let (status, _, response) =
            request(&addr, "POST", "/api/v1/drift/promote", Some(&bearer), body).await;
        assert_eq!(status, 422, "{body}: {response}");
    }
}
