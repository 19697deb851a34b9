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
