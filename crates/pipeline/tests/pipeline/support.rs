//! Fixtures: tenants, envelopes as the edge publishes them, a running bronze writer or
//! materializer.

use std::time::{Duration, Instant};

use bus::{Bus, Message};
use domain::{EventId, Lsn, Plan, SourceId, TenantAttributes, TenantId};
use store::{Actor, Database, Scope, TenantTx};
use time::OffsetDateTime;

pub async fn tenant(database: &Database, name: &str) -> TenantId {
    let attributes = TenantAttributes::parse(name, Plan::Team, "energy", "eu").unwrap();
    store::control::create_tenant(&database.app, Actor::Cli("test".into()), &attributes)
        .await
        .unwrap()
        .tenant_id
}

/// A transaction as an admin of `tenant` (a member the test made up), as the request path has.
pub async fn admin_tx(database: &Database, tenant: TenantId) -> TenantTx {
    TenantTx::begin(
        &database.app,
        Scope::Member {
            tenant,
            user: domain::UserId::new_random(),
            role: domain::Role::Admin,
        },
    )
    .await
    .unwrap()
}

/// Event `n` of `source`, committed `age` ago, as the edge would publish it.
pub fn envelope(
    tenant: TenantId,
    source: SourceId,
    n: u32,
    age: time::Duration,
    table: &str,
) -> protocol::Envelope {
    let event_time = (OffsetDateTime::now_utc() - age)
        .replace_nanosecond(0)
        .unwrap();
    let millis = (event_time.unix_timestamp_nanos() / 1_000_000) as i64;
    let lsn = Lsn(0x1_0000_0000 + u64::from(n) * 64);
    protocol::Envelope {
        tenant_id: tenant,
        source_id: source,
        event: protocol::ChangeEvent {
            event_id: EventId::derive(source, millis, lsn, 0),
            op: protocol::Op::Insert,
            schema: "public".into(),
            table: table.into(),
            lsn,
            seq: 0,
            xid: Some(u64::from(n)),
            event_time,
            key: serde_json::json!({ "id": n }).as_object().unwrap().clone(),
            after: Some(
                serde_json::json!({ "id": n, "name": format!("device {n}") })
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
            before: None,
            unchanged: Vec::new(),
            types: Default::default(),
        },
        replay: None,
    }
}

pub fn message(envelope: &protocol::Envelope) -> Message {
    Message {
        tenant: envelope.tenant_id,
        id: envelope.event.event_id,
        payload: serde_json::to_vec(envelope).unwrap().into(),
    }
}

/// A consumer's shutdown: it runs until the returned sender is dropped.
fn until_dropped() -> (
    tokio::sync::oneshot::Sender<()>,
    impl std::future::Future<Output = ()>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    (stop, async move {
        let _ = stopped.await;
    })
}

/// Runs the bronze writer until the returned sender is dropped.
pub fn start_bronze_writer<B: Bus + 'static>(
    database: &Database,
    bus: B,
) -> tokio::sync::oneshot::Sender<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
    let (stop, stopped) = until_dropped();
    let config = pipeline::bronze::BronzeConfig {
        batch_size: 100,
        wait: Duration::from_millis(50),
    };
    tokio::spawn(pipeline::bronze::run(
        database.service.clone(),
        bus,
        config,
        stopped,
    ));
    stop
}

/// Runs the materializer as `tributary up` does until the returned sender is dropped.
pub fn start_materializer<B: Bus + 'static>(
    database: &Database,
    bus: B,
) -> tokio::sync::oneshot::Sender<()> {
    let (stop, stopped) = until_dropped();
    let config = pipeline::materializer::MaterializerConfig {
        batch_size: 100,
        wait: Duration::from_millis(50),
    };
    tokio::spawn(pipeline::materializer::run(
        database.service.clone(),
        bus,
        config,
        stopped,
    ));
    stop
}

/// Waits until `tenant` has `expected` bronze rows, or fails naming what it saw.
pub async fn wait_for_bronze(database: &Database, tenant: TenantId, expected: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (count, _) = store::service::bronze::tenant_fingerprint(&database.service, tenant)
            .await
            .unwrap();
        if count == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "bronze holds {count} rows of the tenant, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
