//! The global aggregator and the allowlist invariants, held by the database: only allowlisted
//! keys reach `global_analytics.*` (also against a direct insert as the service role), tenant
//! roles cannot read it, buckets equal a brute-force recomputation from `metrics_min`, the
//! console suppresses cells below k tenants and every cell from which one could be recovered by
//! subtraction (the hour minus its minutes, a breakdown minus the others), late readings correct
//! old buckets, and removing a key stops its aggregation and can purge its history.

use std::collections::BTreeMap;

use domain::{Plan, SourceId, TenantAttributes, TenantId};
use sqlx::{Connection, PgConnection};
use store::rollups::{Granularity, RollupCell};
use store::{Actor, Database, Scope, TenantTx};
use test_support::TestDatabase;
use time::OffsetDateTime;

use crate::materializer::{base_time, materialize};

async fn tenant_with(database: &Database, name: &str, plan: Plan, region: &str) -> TenantId {
    let attributes = TenantAttributes::parse(name, plan, "energy", region).unwrap();
    store::control::create_tenant(&database.app, Actor::Cli("test".into()), &attributes)
        .await
        .unwrap()
        .tenant_id
}

async fn ops_tx(database: &Database) -> TenantTx {
    TenantTx::begin(
        &database.app,
        Scope::InternalOps {
            tenant: Some(TenantId::PLATFORM),
            actor: Actor::Cli("ops".into()),
        },
    )
    .await
    .unwrap()
}

async fn allow(database: &Database, key: &str) {
    let mut tx = ops_tx(database).await;
    store::rollups::allow_key(&mut tx, key).await.unwrap();
    tx.commit().await.unwrap();
}

/// A reading of `metric` by `device` of `tenant`, `second` seconds after the base time.
fn reading(
    tenant: TenantId,
    source: SourceId,
    lsn: u64,
    metric: &str,
    value: f64,
    second: i64,
) -> protocol::Envelope {
    let measured = (base_time() + time::Duration::seconds(second))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    crate::materializer::event(
        tenant,
        source,
        protocol::Op::Insert,
        "readings",
        lsn,
        serde_json::json!({ "reading_id": lsn }),
        Some(serde_json::json!({
            "reading_id": lsn, "device_id": "d1", "metric": metric, "value": value,
            "measured_at": measured,
        })),
        &[],
    )
}

/// A stored rollup row.
type StoredRow = (
    OffsetDateTime,
    String,
    String,
    String,
    String,
    f64,
    i64,
    i32,
);
/// A metrics_min row with its tenant's attributes.
type MinuteRow = (
    OffsetDateTime,
    String,
    uuid::Uuid,
    String,
    String,
    String,
    f64,
    i64,
);

type Cells = BTreeMap<(OffsetDateTime, String, String, String, String), (f64, i64, i32)>;

/// A connection as the aggregator, the rollups' one writer: the service login switched to
/// `tributary_aggregator` (it holds none of that role's privileges without switching).
async fn aggregator(test_database: &TestDatabase) -> PgConnection {
    let mut connection = test_database.service().await;
    sqlx::query("set role tributary_aggregator")
        .execute(&mut connection)
        .await
        .unwrap();
    connection
}

/// The rollups as stored, read as the aggregator.
async fn stored(service: &mut PgConnection, table: &str) -> Cells {
    let statement = match table {
        "rollup_min" => {
            "select bucket, key, plan, industry, region, value_sum, value_count, \
                         tenant_count from global_analytics.rollup_min"
        }
        _ => {
            "select bucket, key, plan, industry, region, value_sum, value_count, tenant_count \
              from global_analytics.rollup_hr"
        }
    };
    let rows: Vec<StoredRow> = sqlx::query_as(statement).fetch_all(service).await.unwrap();
    rows.into_iter()
        .map(|(b, k, p, i, r, s, c, t)| ((b, k, p, i, r), (s, c, t)))
        .collect()
}

/// The rollups recomputed by brute force from every tenant's metrics_min and attributes, for
/// the given allowlisted keys.
async fn brute_force(service: &mut PgConnection, keys: &[&str], hourly: bool) -> Cells {
    let rows: Vec<MinuteRow> = sqlx::query_as(
        "select m.minute, m.metric_key, m.tenant_id, d.plan, d.industry, d.region, \
                    m.value_sum, m.value_count \
             from analytics.metrics_min m join control.dim_tenant d using (tenant_id)",
    )
    .fetch_all(&mut *service)
    .await
    .unwrap();
    let mut sums: BTreeMap<_, (f64, i64, std::collections::BTreeSet<uuid::Uuid>)> = BTreeMap::new();
    for (minute, key, tenant, plan, industry, region, value_sum, value_count) in rows {
        if !keys.contains(&key.as_str()) {
            continue;
        }
        let bucket = if hourly {
            minute.replace_minute(0).unwrap()
        } else {
            minute
        };
        let entry = sums
            .entry((bucket, key, plan, industry, region))
            .or_default();
        entry.0 += value_sum;
        entry.1 += value_count;
        entry.2.insert(tenant);
    }
    sums.into_iter()
        .map(|(cell, (sum, count, tenants))| (cell, (sum, count, tenants.len() as i32)))
        .collect()
}

fn assert_close(actual: &Cells, expected: &Cells) {
    assert_eq!(
        actual.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (cell, (sum, count, tenants)) in expected {
        let (actual_sum, actual_count, actual_tenants) = actual[cell];
        assert!(
            (actual_sum - sum).abs() < 1e-9,
            "{cell:?}: {actual_sum} != {sum}"
        );
        assert_eq!(
            (actual_count, actual_tenants),
            (*count, *tenants),
            "{cell:?}"
        );
    }
}

#[tokio::test]
async fn only_allowlisted_keys_reach_the_rollups_and_buckets_match_a_brute_force_recount() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    allow(&database, "power_kw").await;
    let mut tenants = Vec::new();
    for (n, (plan, region)) in [
        (Plan::Team, "eu"),
        (Plan::Team, "eu"),
        (Plan::Business, "eu"),
        (Plan::Team, "us"),
    ]
    .into_iter()
    .enumerate()
    {
        tenants.push(tenant_with(&database, &format!("T{n}"), plan, region).await);
    }
    for (n, tenant) in tenants.iter().enumerate() {
        let source = SourceId::new_random();
        let mut events = Vec::new();
        for i in 0..12u64 {
            let second = (i as i64) * 17 + n as i64;
            events.push(reading(
                *tenant,
                source,
                100 + i,
                "power_kw",
                (i + n as u64) as f64,
                second,
            ));
            events.push(reading(
                *tenant,
                source,
                500 + i,
                "secret_metric",
                1.0,
                second,
            ));
        }
        materialize(&database, &events).await;
    }
    pipeline::aggregator::run_once(&database.service, 100)
        .await
        .unwrap();
    let mut service = aggregator(&test_database).await;
    let minutes = stored(&mut service, "rollup_min").await;
    assert!(!minutes.is_empty());
    assert!(
        minutes.keys().all(|cell| cell.1 == "power_kw"),
        "{minutes:?}"
    );
    assert_close(
        &minutes,
        &brute_force(&mut service, &["power_kw"], false).await,
    );
    assert_close(
        &stored(&mut service, "rollup_hr").await,
        &brute_force(&mut service, &["power_kw"], true).await,
    );

    // A direct write of a key that is not allowlisted fails, as the aggregator itself (the
    // allowlist trigger and foreign key) and as the service login.
    let mut service_login = test_database.service().await;
    for connection in [&mut service, &mut service_login] {
        for statement in [
            "insert into global_analytics.rollup_min (bucket, key, plan, industry, region, \
             value_sum, value_count, tenant_count) \
             values (date_trunc('minute', now()), 'secret_metric', 'team', 'energy', 'eu', 1, 1, 9)",
            "update global_analytics.rollup_hr set key = 'secret_metric'",
        ] {
            let error = sqlx::query(statement)
                .execute(&mut *connection)
                .await
                .unwrap_err();
            let code = error
                .as_database_error()
                .and_then(|e| e.code())
                .unwrap()
                .into_owned();
            assert!(
                ["23503", "42501"].contains(&code.as_str()),
                "{statement}: {code}"
            );
        }
    }
    // Only the aggregator writes: the service login cannot write (or read) the rollups even
    // for an allowlisted key.
    for statement in [
        "insert into global_analytics.rollup_min (bucket, key, plan, industry, region, \
         value_sum, value_count, tenant_count) \
         values (date_trunc('minute', now()), 'power_kw', 'team', 'energy', 'eu', 1, 1, 9)",
        "update global_analytics.rollup_min set value_count = value_count",
        "delete from global_analytics.rollup_hr",
        "select count(*) from global_analytics.rollup_min",
    ] {
        let error = sqlx::query(statement)
            .execute(&mut service_login)
            .await
            .unwrap_err();
        assert_eq!(
            error.as_database_error().and_then(|e| e.code()).as_deref(),
            Some("42501"),
            "service login: {statement}"
        );
    }
    let count: i64 = sqlx::query_scalar(
        "select (select count(*) from global_analytics.rollup_min where key <> 'power_kw') + \
                (select count(*) from global_analytics.rollup_hr where key <> 'power_kw')",
    )
    .fetch_one(&mut service)
    .await
    .unwrap();
    assert_eq!(count, 0);
}

#[tokio::test]
async fn tenant_roles_cannot_read_the_rollups_and_internal_ops_can() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let acme = tenant_with(&database, "Acme", Plan::Team, "eu").await;
    let mut app = PgConnection::connect_with(&test_database.settings().app_options())
        .await
        .unwrap();
    for role in [
        "tributary_tenant_owner",
        "tributary_tenant_admin",
        "tributary_tenant_operator",
        "tributary_tenant_viewer",
    ] {
        for table in ["global_analytics.rollup_min", "global_analytics.rollup_hr"] {
            let mut tx = app.begin().await.unwrap();
            sqlx::query("select set_config('tributary.tenant_id', $1, true)")
                .bind(acme.to_string())
                .execute(&mut *tx)
                .await
                .unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!("set local role {role}")))
                .execute(&mut *tx)
                .await
                .unwrap();
            let error = sqlx::query(sqlx::AssertSqlSafe(format!("select count(*) from {table}")))
                .execute(&mut *tx)
                .await
                .unwrap_err();
            let code = error
                .as_database_error()
                .and_then(|e| e.code())
                .unwrap()
                .into_owned();
            assert_eq!(code, "42501", "{role} read {table}");
            tx.rollback().await.unwrap();
        }
    }
    let mut tx = ops_tx(&database).await;
    let cells = store::rollups::cells(
        &mut tx,
        Granularity::Minute,
        "power_kw",
        base_time(),
        base_time() + time::Duration::hours(1),
        5,
    )
    .await
    .unwrap();
    assert!(cells.is_empty());
}

async fn console(database: &Database, granularity: Granularity, k: i64) -> Vec<RollupCell> {
    let mut tx = ops_tx(database).await;
    store::rollups::cells(
        &mut tx,
        granularity,
        "power_kw",
        base_time() - time::Duration::hours(1),
        base_time() + time::Duration::hours(2),
        k,
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn the_console_suppresses_cells_below_k_and_late_readings_fix_old_buckets() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    allow(&database, "power_kw").await;
    // Five Team/eu tenants and one Business/us tenant, each with a reading in minute 0.
    let mut sources = Vec::new();
    for n in 0..6 {
        let (plan, region) = if n < 5 {
            (Plan::Team, "eu")
        } else {
            (Plan::Business, "us")
        };
        let tenant = tenant_with(&database, &format!("T{n}"), plan, region).await;
        let source = SourceId::new_random();
        materialize(
            &database,
            &[reading(tenant, source, 10, "power_kw", 2.0, 5)],
        )
        .await;
        sources.push((tenant, source));
    }
    pipeline::aggregator::run_once(&database.service, 100)
        .await
        .unwrap();
    let cells = console(&database, Granularity::Minute, 5).await;
    assert_eq!(cells.len(), 1, "only the cohort of five: {cells:?}");
    assert_eq!(
        (
            cells[0].plan.as_str(),
            cells[0].region.as_str(),
            cells[0].tenant_count
        ),
        ("team", "eu", 5)
    );
    assert_eq!((cells[0].value_sum, cells[0].value_count), (10.0, 5));
    // k is configurable; a single tenant's cell is never shown whatever k is.
    assert_eq!(console(&database, Granularity::Minute, 1).await.len(), 1);
    assert_eq!(console(&database, Granularity::Minute, 6).await.len(), 0);

    // Late readings: one for minute 0 (old bucket), one for minute 30 of the same hour.
    let (tenant, source) = sources[0];
    materialize(
        &database,
        &[
            reading(tenant, source, 20, "power_kw", 3.0, 40),
            reading(tenant, source, 30, "power_kw", 4.0, 30 * 60),
        ],
    )
    .await;
    pipeline::aggregator::run_once(&database.service, 100)
        .await
        .unwrap();
    let hour = console(&database, Granularity::Hour, 5).await;
    assert_eq!(hour.len(), 1);
    assert_eq!(
        (hour[0].value_sum, hour[0].value_count, hour[0].tenant_count),
        (17.0, 7, 5)
    );
    // Minute 0 is corrected in the rollups, but the console withholds it now: minute 30 holds
    // one tenant, and the hour minus minute 0 would be that tenant's reading.
    let mut service = aggregator(&test_database).await;
    let team_eu = |bucket| {
        (
            bucket,
            "power_kw".to_owned(),
            "team".to_owned(),
            "energy".to_owned(),
            "eu".to_owned(),
        )
    };
    assert_eq!(
        stored(&mut service, "rollup_min").await[&team_eu(base_time())],
        (13.0, 6, 5)
    );
    assert_eq!(
        console(&database, Granularity::Minute, 5).await,
        Vec::<RollupCell>::new()
    );
    assert_close(
        &stored(&mut service, "rollup_min").await,
        &brute_force(&mut service, &["power_kw"], false).await,
    );
    assert_close(
        &stored(&mut service, "rollup_hr").await,
        &brute_force(&mut service, &["power_kw"], true).await,
    );
}

#[tokio::test]
async fn removing_a_key_stops_its_aggregation_and_a_purge_deletes_its_history() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    allow(&database, "power_kw").await;
    let tenant = tenant_with(&database, "Acme", Plan::Team, "eu").await;
    let source = SourceId::new_random();
    materialize(
        &database,
        &[reading(tenant, source, 10, "power_kw", 2.0, 5)],
    )
    .await;
    pipeline::aggregator::run_once(&database.service, 100)
        .await
        .unwrap();
    let mut service = aggregator(&test_database).await;
    assert_eq!(stored(&mut service, "rollup_min").await.len(), 1);

    let mut tx = ops_tx(&database).await;
    store::rollups::remove_key(&mut tx, "power_kw", false)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // A late reading no longer changes the retired key's history, and nobody can write it.
    materialize(
        &database,
        &[reading(tenant, source, 20, "power_kw", 5.0, 6)],
    )
    .await;
    pipeline::aggregator::run_once(&database.service, 100)
        .await
        .unwrap();
    let history = stored(&mut service, "rollup_min").await;
    assert_eq!(history.values().next().map(|cell| cell.1), Some(1));
    let error = sqlx::query("update global_analytics.rollup_min set value_count = 2")
        .execute(&mut service)
        .await
        .unwrap_err();
    assert_eq!(
        error.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("42501")
    );

    let mut tx = ops_tx(&database).await;
    store::rollups::remove_key(&mut tx, "power_kw", true)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    pipeline::aggregator::run_once(&database.service, 100)
        .await
        .unwrap();
    assert!(stored(&mut service, "rollup_min").await.is_empty());
    assert!(stored(&mut service, "rollup_hr").await.is_empty());

    // Allowlisted again, its whole history is aggregated from metrics_min.
    allow(&database, "power_kw").await;
    pipeline::aggregator::run_once(&database.service, 100)
        .await
        .unwrap();
    let back = stored(&mut service, "rollup_min").await;
    assert_eq!(back.values().next().map(|cell| cell.1), Some(2));
    // Every allowlist change is in the platform's audit chain.
    let actions: Vec<String> = sqlx::query_scalar(
        "select action from audit.log where tenant_id = $1 and action like 'rollup_allowlist.%' \
         order by seq",
    )
    .bind(TenantId::PLATFORM.as_uuid())
    .fetch_all(&mut test_database.service().await)
    .await
    .unwrap();
    assert_eq!(
        actions,
        [
            "rollup_allowlist.add",
            "rollup_allowlist.remove",
            "rollup_allowlist.remove",
            "rollup_allowlist.add"
        ]
    );
}

/// The cells of one breakdown, by bucket: (value sum, readings).
fn of_breakdown(cells: &[RollupCell], plan: &str, region: &str) -> Vec<(OffsetDateTime, f64, i64)> {
    cells
        .iter()
        .filter(|cell| cell.plan == plan && cell.region == region)
        .map(|cell| (cell.bucket, cell.value_sum, cell.value_count))
        .collect()
}

/// The hour-minus-minutes attack: a small cohort (2 tenants, k = 5) active in one minute of an
/// hour whose other minutes hold six tenants each. The hour is published (8 tenants), so
/// subtracting its published minutes would give the small cohort's sum and count; the console
/// withholds another minute with it, so what the subtraction gives is an aggregate of at least
/// k tenants — whichever windows the minutes are asked in.
#[tokio::test]
async fn the_hour_minus_its_published_minutes_reveals_nothing_about_a_small_cohort() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    allow(&database, "power_kw").await;
    for n in 0..6u64 {
        let tenant = tenant_with(&database, &format!("Big{n}"), Plan::Team, "eu").await;
        let source = SourceId::new_random();
        let events: Vec<_> = (0..3u64)
            .map(|minute| {
                let value = (n + 1) as f64 * (minute + 1) as f64;
                reading(
                    tenant,
                    source,
                    10 + minute,
                    "power_kw",
                    value,
                    minute as i64 * 60 + 5,
                )
            })
            .collect();
        materialize(&database, &events).await;
    }
    let small_cohort = [(1000.0, 1), (2000.0, 1)];
    for (n, (value, _)) in small_cohort.iter().enumerate() {
        let tenant = tenant_with(&database, &format!("Small{n}"), Plan::Team, "eu").await;
        let source = SourceId::new_random();
        materialize(
            &database,
            &[reading(tenant, source, 10, "power_kw", *value, 10 * 60 + 5)],
        )
        .await;
    }
    pipeline::aggregator::run_once(&database.service, 100)
        .await
        .unwrap();
    let secret: (f64, i64) = (
        small_cohort.iter().map(|(value, _)| value).sum(),
        small_cohort.iter().map(|(_, count)| count).sum(),
    );

    // The attack is real: against the cells of at least k tenants alone, the hour minus its
    // minutes is exactly the small cohort.
    let mut service = aggregator(&test_database).await;
    let stored_minutes = stored(&mut service, "rollup_min").await;
    let stored_hour = stored(&mut service, "rollup_hr").await;
    assert_eq!(stored_hour.len(), 1);
    let (hour_sum, hour_count, hour_tenants) = *stored_hour.values().next().unwrap();
    assert_eq!(hour_tenants, 8);
    let large: Vec<_> = stored_minutes
        .values()
        .filter(|(_, _, tenants)| *tenants >= 5)
        .collect();
    assert_eq!(large.len(), 3);
    assert_eq!(
        (
            hour_sum - large.iter().map(|cell| cell.0).sum::<f64>(),
            hour_count - large.iter().map(|cell| cell.1).sum::<i64>()
        ),
        secret
    );

    // The console publishes the hour, and withholds the smallest sibling with the small minute.
    let hours = console(&database, Granularity::Hour, 5).await;
    assert_eq!(
        of_breakdown(&hours, "team", "eu"),
        [(base_time(), hour_sum, hour_count)]
    );
    let minutes = console(&database, Granularity::Minute, 5).await;
    assert_eq!(minutes.len(), 2, "{minutes:?}");
    let remainder = (
        hour_sum - minutes.iter().map(|cell| cell.value_sum).sum::<f64>(),
        hour_count - minutes.iter().map(|cell| cell.value_count).sum::<i64>(),
    );
    assert_ne!(remainder, secret);
    assert!(remainder.1 > secret.1, "{remainder:?}");
    // What the subtraction gives holds at least k tenants' readings.
    let withheld: Vec<OffsetDateTime> = stored_minutes
        .keys()
        .map(|cell| cell.0)
        .filter(|bucket| !minutes.iter().any(|cell| cell.bucket == *bucket))
        .collect();
    let withheld_tenants: i64 = sqlx::query_scalar(
        "select count(distinct tenant_id) from analytics.metrics_min \
         where metric_key = 'power_kw' and minute = any($1)",
    )
    .bind(&withheld)
    .fetch_one(&mut service)
    .await
    .unwrap();
    assert!(
        withheld_tenants >= 5,
        "{withheld_tenants} tenants in {withheld:?}"
    );

    // Windows that cut the hour decide as the whole hour does: together they show no more.
    let mut tx = ops_tx(&database).await;
    let mut pieces = Vec::new();
    for (from, to) in [(0, 1), (1, 2), (2, 11), (11, 60)] {
        pieces.extend(
            store::rollups::cells(
                &mut tx,
                Granularity::Minute,
                "power_kw",
                base_time() + time::Duration::minutes(from),
                base_time() + time::Duration::minutes(to),
                5,
            )
            .await
            .unwrap(),
        );
    }
    assert_eq!(pieces, minutes);
}

/// The console of one scenario: three breakdowns in minutes 0 and 1, Team/eu and Team/us of
/// five tenants each and Business/eu of two (the small cohort, whose readings are
/// `small_values`).
async fn breakdown_scenario(small_values: [f64; 2]) -> (Vec<RollupCell>, Vec<RollupCell>) {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    allow(&database, "power_kw").await;
    let mut cohorts: Vec<(Plan, &str, f64)> = Vec::new();
    for n in 0..5 {
        cohorts.push((Plan::Team, "eu", 1.0 + n as f64));
        cohorts.push((Plan::Team, "us", 10.0 + n as f64));
    }
    for value in small_values {
        cohorts.push((Plan::Business, "eu", value));
    }
    for (n, (plan, region, value)) in cohorts.into_iter().enumerate() {
        let tenant = tenant_with(&database, &format!("T{n}"), plan, region).await;
        let source = SourceId::new_random();
        materialize(
            &database,
            &[
                reading(tenant, source, 10, "power_kw", value, 5),
                reading(tenant, source, 11, "power_kw", value * 2.0, 65),
            ],
        )
        .await;
    }
    pipeline::aggregator::run_once(&database.service, 100)
        .await
        .unwrap();
    let mut service = aggregator(&test_database).await;
    let business: Vec<_> = stored(&mut service, "rollup_min")
        .await
        .into_keys()
        .filter(|cell| cell.2 == "business")
        .collect();
    assert_eq!(business.len(), 2, "the small cohort is in the rollups");
    (
        console(&database, Granularity::Minute, 5).await,
        console(&database, Granularity::Hour, 5).await,
    )
}

/// The breakdown-minus-breakdown attack: a small cohort (2 tenants, k = 5) alone in one
/// breakdown value. The console publishes no total over breakdowns (nor over anything else a
/// breakdown could be subtracted from), and the small breakdown is withheld in minutes and
/// hours alike, so what it shows is the same whatever the small cohort's values are.
#[tokio::test]
async fn a_breakdown_minus_the_other_breakdowns_reveals_nothing_about_a_small_cohort() {
    let (minutes, hours) = breakdown_scenario([100.0, 200.0]).await;
    for (cells, buckets) in [(&minutes, 2), (&hours, 1)] {
        // Only the two large breakdowns, one cell each per bucket: no cell covers another.
        let breakdowns: BTreeMap<(OffsetDateTime, &str, &str, &str), i32> = cells
            .iter()
            .map(|cell| {
                let breakdown = (
                    cell.bucket,
                    cell.plan.as_str(),
                    cell.industry.as_str(),
                    cell.region.as_str(),
                );
                (breakdown, cell.tenant_count)
            })
            .collect();
        assert_eq!(breakdowns.len(), cells.len(), "a cell twice: {cells:?}");
        assert_eq!(cells.len(), 2 * buckets, "{cells:?}");
        assert!(
            breakdowns
                .iter()
                .all(|((_, plan, industry, region), tenants)| *plan == "team"
                    && *industry == "energy"
                    && ["eu", "us"].contains(region)
                    && *tenants == 5),
            "{cells:?}"
        );
    }
    // Everything published adds up to the large cohorts alone (minutes 0 and 1: values and
    // twice them), so no combination of published cells holds the small cohort's readings.
    let large: f64 = (0..5).map(|n| 3.0 * (11.0 + 2.0 * n as f64)).sum();
    for cells in [&minutes, &hours] {
        assert_eq!(cells.iter().map(|cell| cell.value_sum).sum::<f64>(), large);
        assert_eq!(cells.iter().map(|cell| cell.value_count).sum::<i64>(), 20);
    }
    // And the console is the same when the small cohort's readings are different.
    assert_eq!(breakdown_scenario([7.0, 90_000.0]).await, (minutes, hours));
}
