//! The report runner against a real PostgreSQL with the production roles: each format's file
//! holds exactly what a direct query of the same rows holds (count and checksum), Parquet reads
//! back with its declared types, CSV neutralises formula cells, a run reads in its requester's
//! role and never another tenant's rows, and two runners take a run once.

use std::collections::BTreeMap;

use bytes::Bytes;
use domain::{Role, TenantId, UserId};
use futures_util::TryStreamExt;
use reports::{ExportStore, Runner};
use store::reports::{Dataset, Filters, Format, ReportInput, RunStatus};
use store::{Actor, Database, Scope, TenantTx};
use test_support::TestDatabase;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

mod runs;
mod s3;
mod schedules;

/// Taken for reading by every test, for writing by the memory test: it runs alone.
pub(crate) static SERIAL: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

async fn tenant(database: &Database, name: &str) -> TenantId {
    let attributes =
        domain::TenantAttributes::parse(name, domain::Plan::Team, "energy", "eu").unwrap();
    store::control::create_tenant(&database.app, Actor::Cli("test".into()), &attributes)
        .await
        .unwrap()
        .tenant_id
}

/// A member of `tenant` in `role` (an account made for the test).
async fn member(database: &Database, tenant: TenantId, email: &str, role: Role) -> UserId {
    let email = domain::Email::parse(email).unwrap();
    let user = match store::accounts::credentials(&database.app, &email)
        .await
        .unwrap()
    {
        Some(existing) => existing.user_id,
        None => {
            store::control::create_user(&database.app, Actor::System("test"), &email, "Test")
                .await
                .unwrap()
                .user_id
        }
    };
    store::control::set_member(&database.app, Actor::System("test"), tenant, &email, role)
        .await
        .unwrap();
    user
}

async fn member_tx(database: &Database, tenant: TenantId, user: UserId, role: Role) -> TenantTx {
    TenantTx::begin(&database.app, Scope::Member { tenant, user, role })
        .await
        .unwrap()
}

/// Defines `input` as an admin of `tenant` and asks for a run of it as `user` in `role`.
async fn ask(
    database: &Database,
    tenant: TenantId,
    admin: UserId,
    input: &ReportInput,
    user: UserId,
    role: Role,
) -> Result<Uuid, store::StoreError> {
    let mut tx = member_tx(database, tenant, admin, Role::Admin).await;
    let report = match store::reports::create_report(&mut tx, input).await {
        Ok(report) => report,
        Err(store::StoreError::AlreadyExists(_)) => {
            drop(tx);
            let mut tx = member_tx(database, tenant, admin, Role::Admin).await;
            let found = store::reports::list_reports(&mut tx)
                .await
                .unwrap()
                .into_iter()
                .find(|report| report.input.name == input.name)
                .unwrap();
            tx.commit().await.unwrap();
            return ask_run(database, tenant, found.id, user, role).await;
        }
        Err(error) => return Err(error),
    };
    tx.commit().await.unwrap();
    ask_run(database, tenant, report, user, role).await
}

async fn ask_run(
    database: &Database,
    tenant: TenantId,
    report: Uuid,
    user: UserId,
    role: Role,
) -> Result<Uuid, store::StoreError> {
    let mut tx = member_tx(database, tenant, user, role).await;
    let run = store::reports::request_run(&mut tx, report, Some(user), role).await?;
    tx.commit().await?;
    Ok(run.id)
}

/// The file a finished run wrote.
async fn file_of(database: &Database, exports: &ExportStore, tenant: TenantId, run: Uuid) -> Bytes {
    let mut tx = TenantTx::begin(
        &database.app,
        Scope::Job {
            tenant,
            job: "test",
        },
    )
    .await
    .unwrap();
    let found = store::reports::get_run(&mut tx, run).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(found.status, RunStatus::Succeeded, "{found:?}");
    let (_, stream) = exports
        .open(found.object_key.as_deref().unwrap())
        .await
        .unwrap();
    let chunks: Vec<Bytes> = stream.try_collect().await.unwrap();
    Bytes::from(chunks.concat())
}

/// `rows` minutes of `power_kw` and `voltage_v` for each of `devices` devices of `tenant`, up to
/// now, written as the materializer writes them; the values say whose they are.
async fn metrics(
    admin: &mut sqlx::PgConnection,
    tenant: TenantId,
    devices: i32,
    minutes: i32,
    offset: f64,
) {
    sqlx::query(
        "insert into analytics.metrics_min (tenant_id, entity_kind, entity_id, metric_key, minute, \
             value_sum, value_count, value_min, value_max, last_value, last_pos_lsn, last_pos_seq) \
         select $1, 'device', 'dev-' || d, k, date_trunc('minute', now()) - m * interval '1 minute', \
             $4 + d * 10 + m * 0.25, 1 + m % 3, $4 + d, $4 + d + m, $4 + m * 0.5, m, 0 \
         from generate_series(1, $2) d, generate_series(0, $3 - 1) m, \
             unnest(array['power_kw', 'voltage_v']) k",
    )
    .bind(tenant.as_uuid())
    .bind(devices)
    .bind(minutes)
    .bind(offset)
    .execute(admin)
    .await
    .unwrap();
}

fn metric_report(name: &str, format: Format) -> ReportInput {
    let mut input = ReportInput::new(name, Dataset::MetricsMinute, format);
    input.filters = Filters {
        last_hours: Some(6),
        key: Some("power_kw".into()),
        ..Filters::default()
    };
    input
}

/// The rows a direct query gives for [`metric_report`]'s selection, as text cells in the CSV's
/// columns, keyed by entity and minute.
async fn expected_rows(
    admin: &mut sqlx::PgConnection,
    tenant: TenantId,
) -> BTreeMap<(String, i64), (i64, f64, f64, f64, f64)> {
    let rows: Vec<(String, OffsetDateTime, i64, f64, f64, f64, f64)> = sqlx::query_as(
        "select entity_id, minute, value_count, value_sum, value_min, value_max, last_value \
         from analytics.metrics_min where tenant_id = $1 and metric_key = 'power_kw' \
             and minute >= now() - interval '6 hours'",
    )
    .bind(tenant.as_uuid())
    .fetch_all(admin)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(entity, minute, count, sum, min, max, last)| {
            (
                (entity, minute.unix_timestamp()),
                (count, sum, min, max, last),
            )
        })
        .collect()
}

struct Fixture {
    _test_database: TestDatabase,
    database: Database,
    exports: ExportStore,
    _directory: tempfile::TempDir,
    runner: Runner,
}

async fn fixture() -> Fixture {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let directory = tempfile::tempdir().unwrap();
    let exports = ExportStore::local(directory.path()).unwrap();
    let runner = Runner::new(database.clone(), exports.clone());
    Fixture {
        _test_database: test_database,
        database,
        exports,
        _directory: directory,
        runner,
    }
}

#[tokio::test]
async fn each_format_holds_exactly_what_a_direct_query_of_the_same_rows_holds() {
    let _shared = SERIAL.read().await;
    let fixture = fixture().await;
    let database = &fixture.database;
    let mut admin = fixture._test_database.admin().await;
    let acme = tenant(database, "Acme").await;
    let globex = tenant(database, "Globex").await;
    let owner = member(database, acme, "owner@acme.example", Role::Owner).await;
    let viewer = member(database, acme, "viewer@acme.example", Role::Viewer).await;
    // 20 devices × 300 minutes of two keys; tenant B's rows are the same shape, other values.
    metrics(&mut admin, acme, 20, 300, 0.0).await;
    metrics(&mut admin, globex, 20, 300, 1_000_000.0).await;
    let expected = expected_rows(&mut admin, acme).await;
    assert_eq!(expected.len(), 20 * 300);

    for format in Format::ALL {
        let run = ask(
            database,
            acme,
            owner,
            &metric_report(&format!("power {}", format.as_str()), format),
            viewer,
            Role::Viewer,
        )
        .await
        .unwrap();
        let finished = fixture.runner.run_next().await.unwrap().unwrap();
        assert_eq!(finished.run, run);
        assert_eq!(finished.failure, None);
        assert_eq!(finished.rows, expected.len() as u64, "{format:?}");
        let file = file_of(database, &fixture.exports, acme, run).await;
        assert_eq!(finished.bytes, file.len() as u64);
        let got = match format {
            Format::Csv => rows_of_csv(&file),
            Format::Jsonl => rows_of_jsonl(&file),
            Format::Parquet => rows_of_parquet(file),
        };
        assert_eq!(got.len(), expected.len(), "{format:?}: one row per row");
        assert_eq!(got, expected, "{format:?}: the same values");
    }
    assert!(fixture.runner.run_next().await.unwrap().is_none());
}

type Values = (i64, f64, f64, f64, f64);

fn minute_of(text: &str) -> i64 {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap()
        .unix_timestamp()
}

fn rows_of_csv(file: &[u8]) -> BTreeMap<(String, i64), Values> {
    let mut reader = csv::Reader::from_reader(file);
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        header,
        [
            "minute",
            "entity_kind",
            "entity_id",
            "metric_key",
            "count",
            "sum",
            "min",
            "max",
            "avg",
            "last"
        ]
    );
    reader
        .records()
        .map(|record| {
            let record = record.unwrap();
            let number = |index: usize| record[index].parse::<f64>().unwrap();
            assert_eq!(&record[3], "power_kw");
            (
                (record[2].to_owned(), minute_of(&record[0])),
                (
                    record[4].parse().unwrap(),
                    number(5),
                    number(6),
                    number(7),
                    number(9),
                ),
            )
        })
        .collect()
}

fn rows_of_jsonl(file: &[u8]) -> BTreeMap<(String, i64), Values> {
    std::str::from_utf8(file)
        .unwrap()
        .lines()
        .map(|line| {
            let row: serde_json::Value = serde_json::from_str(line).unwrap();
            let number = |name: &str| row[name].as_f64().unwrap();
            (
                (
                    row["entity_id"].as_str().unwrap().to_owned(),
                    minute_of(row["minute"].as_str().unwrap()),
                ),
                (
                    row["count"].as_i64().unwrap(),
                    number("sum"),
                    number("min"),
                    number("max"),
                    number("last"),
                ),
            )
        })
        .collect()
}

fn rows_of_parquet(file: Bytes) -> BTreeMap<(String, i64), Values> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int64Type, TimestampMicrosecondType};
    use arrow_schema::{DataType, TimeUnit};

    let builder =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    // The declared types: times in UTC microseconds, counts as integers, values as doubles.
    let schema = builder.schema().clone();
    let types: Vec<(&str, DataType)> = schema
        .fields()
        .iter()
        .map(|field| (field.name().as_str(), field.data_type().clone()))
        .collect();
    assert_eq!(
        types,
        [
            (
                "minute",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
            ),
            ("entity_kind", DataType::Utf8),
            ("entity_id", DataType::Utf8),
            ("metric_key", DataType::Utf8),
            ("count", DataType::Int64),
            ("sum", DataType::Float64),
            ("min", DataType::Float64),
            ("max", DataType::Float64),
            ("avg", DataType::Float64),
            ("last", DataType::Float64),
        ]
    );
    let mut rows = BTreeMap::new();
    for batch in builder.build().unwrap() {
        let batch = batch.unwrap();
        let minute = batch.column(0).as_primitive::<TimestampMicrosecondType>();
        let entity = batch.column(2).as_string::<i32>();
        let count = batch.column(4).as_primitive::<Int64Type>();
        let float = |index: usize| batch.column(index).as_primitive::<Float64Type>().clone();
        let (sum, min, max, last) = (float(5), float(6), float(7), float(9));
        for row in 0..batch.num_rows() {
            rows.insert(
                (entity.value(row).to_owned(), minute.value(row) / 1_000_000),
                (
                    count.value(row),
                    sum.value(row),
                    min.value(row),
                    max.value(row),
                    last.value(row),
                ),
            );
        }
    }
    rows
}

#[tokio::test]
async fn csv_cells_a_spreadsheet_would_run_are_neutralised() {
    let _shared = SERIAL.read().await;
    let fixture = fixture().await;
    let database = &fixture.database;
    let mut admin = fixture._test_database.admin().await;
    let acme = tenant(database, "Acme").await;
    let owner = member(database, acme, "owner@acme.example", Role::Owner).await;
    let source = Uuid::new_v4();
    for (id, name) in [
        ("dev-1", "=HYPERLINK(\"http://evil.example\")"),
        ("dev-2", "+1"),
        ("dev-3", "-2"),
        ("dev-4", "@SUM(A1)"),
        ("dev-5", "\tTabbed"),
        ("dev-6", "\rReturned"),
        ("dev-7", "Plain, with a comma"),
    ] {
        sqlx::query(
            "insert into analytics.devices (tenant_id, device_id, source_id, name, pos_lsn, \
                 pos_seq) values ($1, $2, $3, $4, 1, 0)",
        )
        .bind(acme.as_uuid())
        .bind(id)
        .bind(source)
        .bind(name)
        .execute(&mut admin)
        .await
        .unwrap();
    }
    let mut input = ReportInput::new("devices", Dataset::Devices, Format::Csv);
    input.columns = vec!["id".into(), "name".into()];
    let run = ask(database, acme, owner, &input, owner, Role::Owner)
        .await
        .unwrap();
    fixture.runner.run_next().await.unwrap().unwrap();
    let file = file_of(database, &fixture.exports, acme, run).await;
    let mut reader = csv::Reader::from_reader(&file[..]);
    let names: BTreeMap<String, String> = reader
        .records()
        .map(|record| {
            let record = record.unwrap();
            (record[0].to_owned(), record[1].to_owned())
        })
        .collect();
    assert_eq!(names["dev-1"], "'=HYPERLINK(\"http://evil.example\")");
    assert_eq!(names["dev-2"], "'+1");
    assert_eq!(names["dev-3"], "'-2");
    assert_eq!(names["dev-4"], "'@SUM(A1)");
    assert_eq!(names["dev-5"], "'\tTabbed");
    assert_eq!(names["dev-6"], "'\rReturned");
    assert_eq!(names["dev-7"], "Plain, with a comma");
}

/// Absolute ranges select exactly their rows; `last_hours` ends at the time the run was asked.
#[tokio::test]
async fn an_absolute_range_and_a_device_filter_select_exactly_their_rows() {
    let _shared = SERIAL.read().await;
    let fixture = fixture().await;
    let database = &fixture.database;
    let mut admin = fixture._test_database.admin().await;
    let acme = tenant(database, "Acme").await;
    let owner = member(database, acme, "owner@acme.example", Role::Owner).await;
    metrics(&mut admin, acme, 3, 120, 0.0).await;
    let to = OffsetDateTime::now_utc()
        .replace_second(0)
        .unwrap()
        .replace_nanosecond(0)
        .unwrap()
        - Duration::minutes(30);
    let from = to - Duration::minutes(45);
    let mut input = ReportInput::new("window", Dataset::MetricsMinute, Format::Jsonl);
    input.filters = Filters {
        from: Some(from),
        to: Some(to),
        device: Some("dev-2".into()),
        ..Filters::default()
    };
    input.columns = vec!["minute".into(), "entity_id".into(), "metric_key".into()];
    input.descending = true;
    let run = ask(database, acme, owner, &input, owner, Role::Owner)
        .await
        .unwrap();
    let finished = fixture.runner.run_next().await.unwrap().unwrap();
    // 45 minutes of two keys of one device.
    assert_eq!(finished.rows, 90, "{finished:?}");
    let file = file_of(database, &fixture.exports, acme, run).await;
    let lines: Vec<serde_json::Value> = std::str::from_utf8(&file)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(
        lines
            .iter()
            .all(|line| line["entity_id"] == "dev-2" && line.as_object().unwrap().len() == 3)
    );
    let minutes: Vec<i64> = lines
        .iter()
        .map(|line| minute_of(line["minute"].as_str().unwrap()))
        .collect();
    assert!(
        minutes.windows(2).all(|pair| pair[0] >= pair[1]),
        "newest first"
    );
    assert_eq!(minutes[0], (to - Duration::minutes(1)).unix_timestamp());
    assert_eq!(*minutes.last().unwrap(), from.unix_timestamp());
}

/// The process's resident memory now, in bytes (`VmRSS` of /proc/self/status).
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// What an export may add to the process's resident memory, whatever its size: a row group, a
/// chunk and the parts in flight, with room for the allocator.
const EXPORT_MEMORY_BOUND: u64 = 64 << 20;

/// Two million metric rows exported as Parquet: the process's resident memory, sampled every
/// 10 ms while the runner works, never grows by more than [`EXPORT_MEMORY_BOUND`] over what it
/// held before (the rows alone are hundreds of MiB as values). The other tests of this binary
/// wait, so that the measure is this export's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_million_row_export_holds_bounded_memory() {
    let _alone = SERIAL.write().await;
    let fixture = fixture().await;
    let database = &fixture.database;
    let mut admin = fixture._test_database.admin().await;
    let acme = tenant(database, "Acme").await;
    let owner = member(database, acme, "owner@acme.example", Role::Owner).await;
    // 10 devices × 100,000 minutes × 2 keys.
    metrics(&mut admin, acme, 10, 100_000, 0.0).await;
    let mut input = ReportInput::new("two million", Dataset::MetricsMinute, Format::Parquet);
    input.filters.last_hours = Some(store::reports::MAX_LAST_HOURS);
    let run = ask(database, acme, owner, &input, owner, Role::Owner)
        .await
        .unwrap();

    let before = resident_bytes();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before));
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        std::thread::spawn(move || {
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                peak.fetch_max(resident_bytes(), std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        })
    };
    let finished = fixture.runner.run_next().await.unwrap().unwrap();
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    sampler.join().unwrap();
    assert_eq!((finished.run, finished.failure.as_deref()), (run, None));
    assert_eq!(finished.rows, 2_000_000);
    let grown = peak
        .load(std::sync::atomic::Ordering::Relaxed)
        .saturating_sub(before);
    println!(
        "export of 2,000,000 rows as Parquet ({} bytes): resident memory grew by {} MiB at most",
        finished.bytes,
        grown >> 20
    );
    assert!(
        grown < EXPORT_MEMORY_BOUND,
        "the export grew resident memory by {} MiB",
        grown >> 20
    );
}
