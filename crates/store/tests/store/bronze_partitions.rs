//! Bronze is partitioned by day, partitions are created ahead, and each partition is isolated
//! on its own (a partition is a table that can be queried directly).

use domain::Role;
use store::service::maintenance;
use test_support::TestDatabase;
use uuid::Uuid;

use crate::support::{member_tx, sqlstate, tenant};

#[tokio::test]
async fn partitions_are_created_ahead_and_isolated_one_by_one() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;

    // The template was migrated moments ago: yesterday up to a week ahead exist already.
    let initial = maintenance::bronze_partitions(&database.service)
        .await
        .unwrap();
    assert!(initial.len() >= 9, "{initial:?}");
    let covered = maintenance::ensure_bronze_partitions(&database.service, 30)
        .await
        .unwrap();
    assert_eq!(covered, 32, "yesterday, today and 30 days ahead");
    let partitions = maintenance::bronze_partitions(&database.service)
        .await
        .unwrap();
    assert!(partitions.len() >= 32);
    let today: String = {
        let mut service = test_database.service().await;
        sqlx::query_scalar("select to_char(now() at time zone 'UTC', 'YYYYMMDD')")
            .fetch_one(&mut service)
            .await
            .unwrap()
    };
    assert!(partitions.contains(&format!("cdc_events_p{today}")));

    // An event three days ahead lands in its day's partition through the parent.
    let acme = tenant(&database, "Acme").await;
    let mut service = test_database.service().await;
    let landed: String = sqlx::query_scalar(
        "insert into bronze.cdc_events (tenant_id, event_id, event_time, source_id, op, \
         schema_name, table_name, lsn, seq, payload) \
         values ($1, $2, now() + interval '3 days', $3, 'insert', 'public', 'devices', 1, 0, '{}') \
         returning tableoid::regclass::text",
    )
    .bind(acme.as_uuid())
    .bind(Uuid::new_v4())
    .bind(Uuid::new_v4())
    .fetch_one(&mut service)
    .await
    .unwrap();
    assert!(landed.starts_with("bronze.cdc_events_p"), "{landed}");

    // A day without a partition is refused rather than silently kept elsewhere, and creating
    // that day's partition (as the writer does) makes room for it.
    let old_event = "insert into bronze.cdc_events (tenant_id, event_id, event_time, source_id, op, \
                     schema_name, table_name, lsn, seq, payload) \
                     values ($1, $2, '2020-02-29 12:00:00+00', $3, 'read', 'public', 'devices', 1, 0, '{}')";
    let refused = sqlx::query(old_event)
        .bind(acme.as_uuid())
        .bind(Uuid::new_v4())
        .bind(Uuid::new_v4())
        .execute(&mut service)
        .await
        .unwrap_err();
    assert_eq!(
        sqlstate(&refused),
        "23514",
        "no partition of relation found for row"
    );
    let created: String = sqlx::query_scalar("select bronze.ensure_partition('2020-02-29')")
        .fetch_one(&mut service)
        .await
        .unwrap();
    assert_eq!(created, "cdc_events_p20200229");
    sqlx::query(old_event)
        .bind(acme.as_uuid())
        .bind(Uuid::new_v4())
        .bind(Uuid::new_v4())
        .execute(&mut service)
        .await
        .unwrap();

    // Read through the parent, a tenant sees its events; a partition read directly is refused.
    let mut tx = member_tx(&database, acme, Role::Owner).await;
    let seen: i64 = sqlx::query_scalar("select count(*) from bronze.cdc_events")
        .fetch_one(tx.connection_for_tests())
        .await
        .unwrap();
    assert_eq!(seen, 2);
    let direct = sqlx::query_scalar::<_, i64>("select count(*) from bronze.cdc_events_p20200229")
        .fetch_one(tx.connection_for_tests())
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&direct), "42501");
    tx.rollback().await.unwrap();

    // Tenant roles cannot create partitions.
    let mut tx = member_tx(&database, acme, Role::Admin).await;
    let denied = sqlx::query("select bronze.ensure_partition('2021-01-01')")
        .execute(tx.connection_for_tests())
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&denied), "42501");
    tx.rollback().await.unwrap();
}
