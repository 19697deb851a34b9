//! Retention deletes each tenant's events past its own retention, and drops partitions no
//! tenant needs.

use domain::{Role, SourceId, UserId};
use store::{Scope, TenantTx};
use test_support::TestDatabase;

use crate::support::{envelope, tenant};

#[tokio::test]
async fn each_tenant_keeps_its_own_days_and_old_partitions_go() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let acme = tenant(&database, "Acme").await;
    let globex = tenant(&database, "Globex").await;
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
    store::retention::set_days(&mut tx, 2).await.unwrap();
    tx.commit().await.unwrap();
    let mut tx = TenantTx::begin(
        &database.app,
        Scope::Member {
            tenant: acme,
            user: UserId::new_random(),
            role: Role::Viewer,
        },
    )
    .await
    .unwrap();
    assert!(
        store::retention::set_days(&mut tx, 5).await.is_err(),
        "a viewer cannot change retention"
    );
    drop(tx);

    let source = SourceId::new_random();
    let mut rows = Vec::new();
    for (tenant, n, days) in [(acme, 1, 0), (acme, 2, 3), (globex, 3, 3), (globex, 4, 40)] {
        let envelope = envelope(tenant, source, n, time::Duration::days(days), "devices");
        rows.push(store::service::bronze::BronzeRow {
            tenant,
            event_id: envelope.event.event_id,
            event_time: envelope.event.event_time,
            source,
            op: "insert".into(),
            schema_name: "public".into(),
            table_name: "devices".into(),
            lsn: n as i64,
            seq: 0,
            xid: None,
            payload: "{}".into(),
        });
    }
    store::service::bronze::insert(&database.service, &rows)
        .await
        .unwrap();
    let forty_days_ago = (time::OffsetDateTime::now_utc() - time::Duration::days(40)).date();
    let old_partition = format!(
        "cdc_events_p{}",
        forty_days_ago
            .format(&time::macros::format_description!("[year][month][day]"))
            .unwrap()
    );
    assert!(
        store::service::maintenance::bronze_partitions(&database.service)
            .await
            .unwrap()
            .contains(&old_partition)
    );

    let report = store::service::retention::enforce(&database.service)
        .await
        .unwrap();
    assert_eq!(
        report.deleted_events, 2,
        "Acme's 3-day-old event (2 days kept) and Globex's 40-day-old one (30 kept)"
    );
    assert!(
        report.dropped_partitions.contains(&old_partition),
        "{:?}",
        report.dropped_partitions
    );
    assert_eq!(
        store::service::bronze::tenant_fingerprint(&database.service, acme)
            .await
            .unwrap()
            .0,
        1
    );
    assert_eq!(
        store::service::bronze::tenant_fingerprint(&database.service, globex)
            .await
            .unwrap()
            .0,
        1
    );
    let again = store::service::retention::enforce(&database.service)
        .await
        .unwrap();
    assert_eq!(again, store::service::retention::RetentionReport::default());
}
