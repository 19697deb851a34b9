//! Pausing a source's ingestion: owners and admins pause and resume it (audited, with who and
//! why), operators and viewers cannot even in SQL, another tenant cannot see it, the edge's
//! access lookup says it is paused, and the derived status shows it below revoked only. And
//! asking a source's agent for a resync: the request waits until the agent's heartbeat names
//! it, audited at both ends.

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

#[tokio::test]
async fn a_resync_request_waits_for_the_agent_and_clears_when_its_heartbeat_names_it() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let acme = tenant(&database, "Acme").await;
    let globex = tenant(&database, "Globex").await;
    let mut tx = member_tx(&database, acme, Role::Owner).await;
    let (source, _) = sources::create_source(&mut tx, "orders", "postgres")
        .await
        .unwrap();
    let (simulator, _) = sources::create_source(&mut tx, "sim", "simulator")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let source_id = source.source_id;
    pair(&database, acme, source_id).await;
    // Nothing waits: the edge asks nothing of the agent.
    assert_eq!(
        status_ask(&database, acme, source_id, None).await.resync,
        None
    );

    // An admin asks; asking again keeps the first request and records nothing.
    let mut tx = member_tx(&database, acme, Role::Admin).await;
    let asked = sources::request_resync(&mut tx, source_id).await.unwrap();
    let requested_at = asked.resync_requested_at.expect("waiting");
    let again = sources::request_resync(&mut tx, source_id).await.unwrap();
    assert_eq!(again.resync_requested_at, Some(requested_at));
    // A simulator has no slot to drop.
    assert!(matches!(
        sources::request_resync(&mut tx, simulator.source_id).await,
        Err(StoreError::Forbidden(_))
    ));
    tx.commit().await.unwrap();

    // Tenant B cannot ask for it, and operators and viewers cannot even in SQL.
    let mut tx = member_tx(&database, globex, Role::Owner).await;
    assert!(matches!(
        sources::request_resync(&mut tx, source_id).await,
        Err(StoreError::NotFound("source"))
    ));
    tx.rollback().await.unwrap();
    for role in [Role::Operator, Role::Viewer] {
        let mut tx = member_tx(&database, acme, role).await;
        let error = sqlx::query(
            "update control.sources set resync_request_id = null, resync_requested_at = null, \
               resync_requested_by = null where source_id = $1",
        )
        .bind(source_id.as_uuid())
        .execute(tx.connection_for_tests())
        .await
        .unwrap_err();
        assert_eq!(sqlstate(&error), "42501", "{role:?}");
        tx.rollback().await.unwrap();
    }

    // The edge asks the agent at every heartbeat until one names the request as done.
    let request = status_ask(&database, acme, source_id, None)
        .await
        .resync
        .expect("the edge asks for the resync");
    let stale = uuid::Uuid::new_v4();
    assert_eq!(
        status_ask(&database, acme, source_id, Some(stale))
            .await
            .resync,
        Some(request),
        "another request's completion does not clear this one"
    );
    assert_eq!(
        status_ask(&database, acme, source_id, Some(request))
            .await
            .resync,
        None
    );
    assert_eq!(
        status_ask(&database, acme, source_id, Some(request))
            .await
            .resync,
        None
    );
    let mut tx = member_tx(&database, acme, Role::Owner).await;
    let cleared = sources::get_source(&mut tx, source_id).await.unwrap();
    assert!(cleared.resync_requested_at.is_none());
    let entries = audit::list(&mut tx, 50).await.unwrap();
    let resyncs: Vec<(&str, &str)> = entries
        .iter()
        .filter(|entry| entry.action.starts_with("source.resync"))
        .map(|entry| (entry.action.as_str(), entry.actor_type.as_str()))
        .collect();
    assert_eq!(
        resyncs,
        [
            ("source.resync.done", "agent"),
            ("source.resync.request", "user")
        ]
    );
    assert!(
        entries
            .iter()
            .all(|entry| !entry.action.starts_with("source.resync")
                || entry.details["request_id"] == request.to_string())
    );
    // A revoked source is not asked for.
    sources::revoke_source(&mut tx, source_id, "gone")
        .await
        .unwrap();
    assert!(matches!(
        sources::request_resync(&mut tx, source_id).await,
        Err(StoreError::Forbidden(_))
    ));
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn a_rotation_asks_the_agent_to_renew_and_its_renewal_revokes_the_other_certificates() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let acme = tenant(&database, "Acme").await;
    let globex = tenant(&database, "Globex").await;
    let mut tx = member_tx(&database, acme, Role::Owner).await;
    let (source, _) = sources::create_source(&mut tx, "orders", "postgres")
        .await
        .unwrap();
    let source_id = source.source_id;
    // Never paired: nothing to rotate.
    assert!(matches!(
        sources::request_rotation(&mut tx, source_id).await,
        Err(StoreError::Forbidden(_))
    ));
    tx.commit().await.unwrap();
    pair(&database, acme, source_id).await;
    // A renewal with no rotation waiting revokes nothing.
    let mut service = service_tx(&database, acme, source_id).await;
    assert_eq!(
        sources::complete_rotation(&mut service, source_id, "0a")
            .await
            .unwrap(),
        0
    );
    service.commit().await.unwrap();

    let mut tx = member_tx(&database, acme, Role::Admin).await;
    let asked = sources::request_rotation(&mut tx, source_id).await.unwrap();
    assert!(asked.rotate_requested_at.is_some());
    let again = sources::request_rotation(&mut tx, source_id).await.unwrap();
    assert_eq!(again.rotate_requested_at, asked.rotate_requested_at);
    tx.commit().await.unwrap();
    let mut tx = member_tx(&database, globex, Role::Owner).await;
    assert!(matches!(
        sources::request_rotation(&mut tx, source_id).await,
        Err(StoreError::NotFound("source"))
    ));
    tx.rollback().await.unwrap();
    assert!(
        status_ask(&database, acme, source_id, None)
            .await
            .rotate_certificate
    );

    // The renewal (a new certificate, `0b`) revokes `0a` and clears the request.
    let mut service = service_tx(&database, acme, source_id).await;
    let now = time::OffsetDateTime::now_utc();
    let renewed = sources::IssuedCertificate {
        source: source_id,
        serial: "0b".into(),
        fingerprint_sha256: [8; 32],
        not_before: now,
        not_after: now + time::Duration::days(30),
    };
    sources::record_certificate(&mut service, &renewed, "source.certificate.renew")
        .await
        .unwrap();
    assert_eq!(
        sources::complete_rotation(&mut service, source_id, "0b")
            .await
            .unwrap(),
        1
    );
    service.commit().await.unwrap();
    assert!(!sources_access(&database, acme, source_id).await.allowed);
    assert_eq!(
        status_ask(&database, acme, source_id, None).await,
        sources::StatusAsk::default()
    );
    let mut tx = member_tx(&database, acme, Role::Owner).await;
    assert!(
        sources::get_source(&mut tx, source_id)
            .await
            .unwrap()
            .rotate_requested_at
            .is_none()
    );
    let entries = audit::list(&mut tx, 50).await.unwrap();
    let done = entries
        .iter()
        .find(|entry| entry.action == "source.certificate.rotate.done")
        .expect("the rotation is audited");
    assert_eq!(done.details["certificates_revoked"], 1);
    assert!(
        entries
            .iter()
            .any(|entry| entry.action == "source.certificate.rotate.request")
    );
    tx.rollback().await.unwrap();
}

async fn service_tx(
    database: &store::Database,
    tenant: domain::TenantId,
    source: SourceId,
) -> store::TenantTx {
    store::TenantTx::begin_service(&database.service, Some(tenant), store::Actor::Agent(source))
        .await
        .unwrap()
}

/// What the edge asks of `source`'s agent in answer to a heartbeat naming `resynced`.
async fn status_ask(
    database: &store::Database,
    tenant: domain::TenantId,
    source: SourceId,
    resynced: Option<uuid::Uuid>,
) -> sources::StatusAsk {
    let mut tx = service_tx(database, tenant, source).await;
    let ask = sources::take_status_answer(&mut tx, source, resynced)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    ask
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
