//! Pausing a source's ingestion: owners and admins pause and resume it (audited, with who and
//! why), operators and viewers cannot even in SQL, another tenant cannot see it, the edge's
//! access lookup says it is paused, and the derived status shows it below revoked only.

use domain::{Role, SourceId};
use store::sources::{self, SourceHealth};
use store::{StoreError, audit};
use test_support::TestDatabase;

use crate::support::{member_tx, sqlstate, tenant};

#[tokio::test]
async fn owners_and_admins_pause_and_resume_a_source_audited_and_the_edge_sees_it() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let acme = tenant(&database, "Acme").await;
    let globex = tenant(&database, "Globex").await;

    let mut tx = member_tx(&database, acme, Role::Owner).await;
    let (source, _token) = sources::create_source(&mut tx, "orders", "postgres")
        .await
        .unwrap();
    let source_id = source.source_id;
    tx.commit().await.unwrap();
    pair(&database, acme, source_id).await;
    let access = sources_access(&database, acme, source_id).await;
    assert!(access.allowed && !access.paused, "a paired source sends");

    // An admin pauses it with a reason; pausing again changes nothing and records nothing.
    let mut tx = member_tx(&database, acme, Role::Admin).await;
    let paused = sources::pause_source(&mut tx, source_id, Some("  maintenance window "))
        .await
        .unwrap();
    assert!(paused.paused_at.is_some());
    assert_eq!(paused.pause_reason.as_deref(), Some("maintenance window"));
    assert!(paused.paused_by.as_deref().unwrap().starts_with("user:"));
    assert_eq!(paused.health.status, SourceHealth::Paused);
    let again = sources::pause_source(&mut tx, source_id, Some("another"))
        .await
        .unwrap();
    assert_eq!(again.paused_at, paused.paused_at);
    assert_eq!(again.pause_reason.as_deref(), Some("maintenance window"));
    tx.commit().await.unwrap();
    let access = sources_access(&database, acme, source_id).await;
    assert!(
        access.allowed && access.paused,
        "the edge's lookup sees the pause; the certificate stays good"
    );

    // Listed as paused; tenant B sees no such source and cannot pause or resume it.
    let mut tx = member_tx(&database, acme, Role::Operator).await;
    let listed = sources::list_sources(&mut tx).await.unwrap();
    assert_eq!(listed[0].health.status, SourceHealth::Paused);
    tx.rollback().await.unwrap();
    let mut tx = member_tx(&database, globex, Role::Owner).await;
    assert!(matches!(
        sources::resume_source(&mut tx, source_id).await,
        Err(StoreError::NotFound("source"))
    ));
    assert!(matches!(
        sources::pause_source(&mut tx, source_id, None).await,
        Err(StoreError::NotFound("source"))
    ));
    tx.rollback().await.unwrap();

    // An operator may look, not pause or resume: the database refuses the columns too.
    for role in [Role::Operator, Role::Viewer] {
        let mut tx = member_tx(&database, acme, role).await;
        let error = sqlx::query(
            "update control.sources set paused_at = null, paused_by = null, pause_reason = null \
             where source_id = $1",
        )
        .bind(source_id.as_uuid())
        .execute(tx.connection_for_tests())
        .await
        .unwrap_err();
        assert_eq!(sqlstate(&error), "42501", "{role:?}");
        tx.rollback().await.unwrap();
    }

    // The owner resumes it; resuming again records nothing.
    let mut tx = member_tx(&database, acme, Role::Owner).await;
    let resumed = sources::resume_source(&mut tx, source_id).await.unwrap();
    assert!(resumed.paused_at.is_none() && resumed.paused_by.is_none());
    assert!(resumed.pause_reason.is_none());
    assert_ne!(resumed.health.status, SourceHealth::Paused);
    sources::resume_source(&mut tx, source_id).await.unwrap();
    let entries = audit::list(&mut tx, 50).await.unwrap();
    let actions: Vec<&str> = entries
        .iter()
        .filter(|entry| entry.target == source_id.to_string())
        .map(|entry| entry.action.as_str())
        .collect();
    assert_eq!(
        actions,
        [
            "source.resume",
            "source.pause",
            "source.pair",
            "source.pairing_token.issue",
            "source.create"
        ]
    );
    let pause = entries
        .iter()
        .find(|entry| entry.action == "source.pause")
        .unwrap();
    assert_eq!(pause.details["reason"], "maintenance window");
    assert_eq!(pause.actor_type, "user");
    tx.commit().await.unwrap();
    assert!(!sources_access(&database, acme, source_id).await.paused);

    // A revoked source can be neither paused nor resumed.
    let mut tx = member_tx(&database, acme, Role::Owner).await;
    sources::revoke_source(&mut tx, source_id, "gone")
        .await
        .unwrap();
    assert!(matches!(
        sources::pause_source(&mut tx, source_id, None).await,
        Err(StoreError::Forbidden(_))
    ));
    tx.rollback().await.unwrap();
}

async fn sources_access(
    database: &store::Database,
    tenant: domain::TenantId,
    source: SourceId,
) -> sources::SourceAccess {
    store::service::sources::source_access(&database.service, tenant, source, "0a")
        .await
        .unwrap()
}

/// Pairs `source` as the edge does: a certificate with serial `0a`.
async fn pair(database: &store::Database, tenant: domain::TenantId, source: SourceId) {
    let mut tx = store::TenantTx::begin_service(
        &database.service,
        Some(tenant),
        store::Actor::System("edge"),
    )
    .await
    .unwrap();
    let now = time::OffsetDateTime::now_utc();
    let certificate = sources::IssuedCertificate {
        source,
        serial: "0a".into(),
        fingerprint_sha256: [7; 32],
        not_before: now,
        not_after: now + time::Duration::days(30),
    };
    sources::record_certificate(&mut tx, &certificate, "source.pair")
        .await
        .unwrap();
    tx.commit().await.unwrap();
}
