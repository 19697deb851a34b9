//! Who a run reads as: the requester's role (lowered if it was lowered since), never another
//! tenant's rows, nothing for a requester who left; and two runners take a run once.

use domain::Role;
use reports::Runner;
use store::StoreError;
use store::reports::{Dataset, Format, ReportInput, RunStatus};
use store::{Scope, TenantTx};

use crate::{ask, ask_run, file_of, fixture, member, metric_report, metrics, tenant};

#[tokio::test]
async fn a_run_reads_in_its_requesters_role_and_never_another_tenants_rows() {
    let _shared = crate::SERIAL.read().await;
    let fixture = fixture().await;
    let database = &fixture.database;
    let mut admin = fixture._test_database.admin().await;
    let acme = tenant(database, "Acme").await;
    let globex = tenant(database, "Globex").await;
    let owner = member(database, acme, "owner@acme.example", Role::Owner).await;
    let operator = member(database, acme, "operator@acme.example", Role::Operator).await;
    let globex_owner = member(database, globex, "owner@globex.example", Role::Owner).await;
    metrics(&mut admin, acme, 2, 10, 0.0).await;
    metrics(&mut admin, globex, 2, 10, 1_000_000.0).await;

    // The audit log is for owners and admins: an operator's run is refused when asked.
    let audit = ReportInput::new("audit", Dataset::AuditLog, Format::Jsonl);
    let refused = ask(database, acme, owner, &audit, operator, Role::Operator).await;
    assert!(
        matches!(refused, Err(StoreError::Forbidden(_))),
        "{refused:?}"
    );
    // The owner's run of it holds Acme's entries only.
    let run = ask(database, acme, owner, &audit, owner, Role::Owner)
        .await
        .unwrap();
    let finished = fixture.runner.run_next().await.unwrap().unwrap();
    assert_eq!(finished.failure, None);
    let file = file_of(database, &fixture.exports, acme, run).await;
    let text = std::str::from_utf8(&file).unwrap();
    assert!(text.contains("\"action\":\"report.create\"") && !text.contains("globex"));

    // Tenant B's report is not found by tenant A's members; its metrics never reach A's file.
    let mut tx = TenantTx::begin(
        &database.app,
        Scope::Member {
            tenant: globex,
            user: globex_owner,
            role: Role::Owner,
        },
    )
    .await
    .unwrap();
    let globex_report =
        store::reports::create_report(&mut tx, &metric_report("globex power", Format::Csv))
            .await
            .unwrap();
    tx.commit().await.unwrap();
    let stolen = ask_run(database, acme, globex_report, owner, Role::Owner).await;
    assert!(matches!(stolen, Err(StoreError::NotFound(_))), "{stolen:?}");
    let run = ask(
        database,
        acme,
        owner,
        &metric_report("acme power", Format::Csv),
        owner,
        Role::Owner,
    )
    .await
    .unwrap();
    let finished = fixture.runner.run_next().await.unwrap().unwrap();
    assert_eq!(finished.rows, 20);
    let file = file_of(database, &fixture.exports, acme, run).await;
    assert!(!std::str::from_utf8(&file).unwrap().contains("100000"));

    // A run asked by an admin who is an operator by the time it runs reads as an operator: the
    // audit log is refused, and the run says why.
    let demoted = member(database, acme, "demoted@acme.example", Role::Admin).await;
    let run = ask(database, acme, owner, &audit, demoted, Role::Admin)
        .await
        .unwrap();
    member(database, acme, "demoted@acme.example", Role::Operator).await;
    let finished = fixture.runner.run_next().await.unwrap().unwrap();
    assert_eq!(finished.run, run);
    assert_eq!(
        finished.failure.as_deref(),
        Some("this role may not read the report's dataset")
    );
    // One asked by a member who then left is not run.
    let leaving = member(database, acme, "leaving@acme.example", Role::Viewer).await;
    let devices = ReportInput::new("devices", Dataset::Devices, Format::Csv);
    ask(database, acme, owner, &devices, leaving, Role::Viewer)
        .await
        .unwrap();
    sqlx::query("delete from control.members where user_id = $1")
        .bind(leaving.as_uuid())
        .execute(&mut admin)
        .await
        .unwrap();
    let finished = fixture.runner.run_next().await.unwrap().unwrap();
    assert_eq!(
        finished.failure.as_deref(),
        Some("the member who asked for it is no longer in the workspace")
    );
}

#[tokio::test]
async fn two_runners_take_each_run_once() {
    let _shared = crate::SERIAL.read().await;
    let fixture = fixture().await;
    let database = &fixture.database;
    let mut admin = fixture._test_database.admin().await;
    let acme = tenant(database, "Acme").await;
    let owner = member(database, acme, "owner@acme.example", Role::Owner).await;
    metrics(&mut admin, acme, 5, 60, 0.0).await;
    let mut runs = Vec::new();
    for n in 0..6 {
        runs.push(
            ask(
                database,
                acme,
                owner,
                &metric_report(&format!("power {n}"), Format::Parquet),
                owner,
                Role::Owner,
            )
            .await
            .unwrap(),
        );
    }
    let second = Runner::new(database.clone(), fixture.exports.clone());
    let drain = |runner: Runner| async move {
        let mut taken = Vec::new();
        while let Some(finished) = runner.run_next().await.unwrap() {
            assert_eq!(finished.failure, None);
            taken.push(finished.run);
        }
        taken
    };
    let (a, b) = tokio::join!(drain(fixture.runner.clone()), drain(second));
    let mut taken: Vec<_> = a.into_iter().chain(b).collect();
    taken.sort();
    runs.sort();
    assert_eq!(taken, runs, "every run taken, each once");
    let statuses: Vec<(String, i32)> =
        sqlx::query_as("select status, attempts from control.report_runs")
            .fetch_all(&mut admin)
            .await
            .unwrap();
    assert!(
        statuses
            .iter()
            .all(|(status, attempts)| status == RunStatus::Succeeded.as_str() && *attempts == 1),
        "{statuses:?}"
    );
}

/// The extras dataset: one row per live entity and field, its value in the column of its type;
/// a deleted entity's fields and tenant B's are left out; the field filter selects one key.
#[tokio::test]
async fn the_extras_dataset_lists_each_live_entitys_fields_in_their_typed_columns() {
    let _shared = crate::SERIAL.read().await;
    let fixture = fixture().await;
    let database = &fixture.database;
    let mut admin = fixture._test_database.admin().await;
    let acme = tenant(database, "Acme").await;
    let globex = tenant(database, "Globex").await;
    let owner = member(database, acme, "owner@acme.example", Role::Owner).await;
    let source = uuid::Uuid::new_v4();
    for (tenant, device, deleted) in [
        (acme, "dev-1", false),
        (acme, "dev-2", false),
        (acme, "dev-gone", true),
        (globex, "dev-1", false),
    ] {
        sqlx::query(
            "insert into analytics.devices (tenant_id, device_id, source_id, pos_lsn, pos_seq, \
                 deleted_at) values ($1, $2, $3, 1, 0, case when $4 then now() end)",
        )
        .bind(tenant.as_uuid())
        .bind(device)
        .bind(source)
        .bind(deleted)
        .execute(&mut admin)
        .await
        .unwrap();
        let owner_name = if tenant == acme { "acme" } else { "globex" };
        for statement in [
            "insert into analytics.extras_text (tenant_id, entity_kind, entity_id, key, value) \
             values ($1, 'device', $2, 'colour', $3)",
            "insert into analytics.extras_num (tenant_id, entity_kind, entity_id, key, value) \
             values ($1, 'device', $2, 'slots', length($3))",
            "insert into analytics.extras_bool (tenant_id, entity_kind, entity_id, key, value) \
             values ($1, 'device', $2, 'roofed', length($3) > 4)",
            "insert into analytics.extras_time (tenant_id, entity_kind, entity_id, key, value) \
             values ($1, 'device', $2, 'installed', '2026-01-02T03:04:05Z'::timestamptz + length($3) * interval '1 day')",
        ] {
            sqlx::query(statement)
                .bind(tenant.as_uuid())
                .bind(device)
                .bind(format!("{owner_name}-{device}"))
                .execute(&mut admin)
                .await
                .unwrap();
        }
    }
    let all = ReportInput::new("extras", Dataset::Extras, Format::Jsonl);
    let run = ask(database, acme, owner, &all, owner, Role::Owner)
        .await
        .unwrap();
    assert_eq!(
        fixture.runner.run_next().await.unwrap().unwrap().failure,
        None
    );
    let file = file_of(database, &fixture.exports, acme, run).await;
    let rows: Vec<serde_json::Value> = std::str::from_utf8(&file)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let got: Vec<(String, String, String)> = rows
        .iter()
        .map(|row| {
            (
                row["entity_id"].as_str().unwrap().to_owned(),
                row["key"].as_str().unwrap().to_owned(),
                row["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut expected = Vec::new();
    for device in ["dev-1", "dev-2"] {
        for (key, kind) in [
            ("colour", "text"),
            ("installed", "time"),
            ("roofed", "boolean"),
            ("slots", "number"),
        ] {
            expected.push((device.to_owned(), key.to_owned(), kind.to_owned()));
        }
    }
    assert_eq!(got, expected, "live entities only, by entity then field");
    let first = &rows[0];
    assert_eq!(first["text"], "acme-dev-1");
    assert!(first["number"].is_null() && first["boolean"].is_null() && first["time"].is_null());
    assert_eq!(rows[1]["time"], "2026-01-12T03:04:05Z");
    assert_eq!(rows[2]["boolean"], "true");
    assert_eq!(rows[3]["number"], 10.0);
    assert!(!std::str::from_utf8(&file).unwrap().contains("globex"));

    // One field, newest entity first, as Parquet with the declared column types.
    let mut slots = ReportInput::new("slots", Dataset::Extras, Format::Parquet);
    slots.filters.key = Some("slots".into());
    slots.descending = true;
    let run = ask(database, acme, owner, &slots, owner, Role::Owner)
        .await
        .unwrap();
    let finished = fixture.runner.run_next().await.unwrap().unwrap();
    assert_eq!((finished.failure, finished.rows), (None, 2));
    let file = file_of(database, &fixture.exports, acme, run).await;
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let schema = reader.schema().clone();
    assert_eq!(
        schema.field_with_name("number").unwrap().data_type(),
        &arrow_schema::DataType::Float64
    );
    let batch = reader.build().unwrap().next().unwrap().unwrap();
    let ids = batch
        .column_by_name("entity_id")
        .unwrap()
        .as_any()
        .downcast_ref::<arrow_array::StringArray>()
        .unwrap();
    assert_eq!((ids.value(0), ids.value(1)), ("dev-2", "dev-1"));

    // A range does not apply to what lists what is.
    let mut ranged = ReportInput::new("ranged", Dataset::Extras, Format::Csv);
    ranged.filters.last_hours = Some(24);
    assert!(matches!(
        ranged.validate(),
        Err(StoreError::InvalidParameter {
            parameter: "filters",
            ..
        })
    ));
}
