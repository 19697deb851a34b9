//! The report scheduler: each occurrence runs once whichever schedulers are up, missed
//! occurrences run once after downtime, a scheduled run reads in its owner's current role and
//! ends in the schedule's channels' outbox, and an owner who left makes the occurrence fail,
//! saying so, rather than run as nobody.

use domain::Role;
use reports::Runner;
use store::reports::{Format, RunStatus, ScheduleInput};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::{fixture, member, member_tx, metric_report, metrics, tenant};

fn hourly() -> ScheduleInput {
    ScheduleInput {
        cron: "0 * * * *".into(),
        time_zone: "Europe/Berlin".into(),
        channels: Vec::new(),
        enabled: true,
    }
}

/// Makes a schedule look saved `ago` before now, so that the occurrences since are due.
async fn saved_ago(admin: &mut sqlx::PgConnection, schedule: Uuid, ago: Duration) {
    sqlx::query(
        "update control.report_schedules set since = now() - $2, next_run_at = now() - $2 \
         where schedule_id = $1",
    )
    .bind(schedule)
    .bind(ago)
    .execute(admin)
    .await
    .unwrap();
}

/// The latest top of the hour at or before `at`.
fn hour_of(at: OffsetDateTime) -> OffsetDateTime {
    at.replace_minute(0)
        .unwrap()
        .replace_second(0)
        .unwrap()
        .replace_nanosecond(0)
        .unwrap()
}

#[tokio::test]
async fn missed_occurrences_run_once_after_a_restart_and_then_on_time() {
    let _shared = crate::SERIAL.read().await;
    let fixture = fixture().await;
    let database = &fixture.database;
    let mut admin = fixture._test_database.admin().await;
    let acme = tenant(database, "Acme").await;
    let owner = member(database, acme, "owner@acme.example", Role::Owner).await;
    // Seven hours of readings: the run's six hours end at its occurrence, before now.
    metrics(&mut admin, acme, 2, 420, 0.0).await;
    let mut tx = member_tx(database, acme, owner, Role::Owner).await;
    let report =
        store::reports::create_report(&mut tx, &metric_report("hourly power", Format::Csv))
            .await
            .unwrap();
    let schedule = store::reports::create_schedule(&mut tx, report, Role::Owner, &hourly())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let now = OffsetDateTime::now_utc();
    assert_eq!(
        schedule.next_run_at,
        Some(hour_of(now) + Duration::hours(1)),
        "a new schedule waits for its first occurrence"
    );
    assert!(
        fixture.runner.schedule(now).await.unwrap().is_empty(),
        "nothing is due before the first occurrence"
    );

    // The platform was down for five hours: five occurrences passed; one run is asked, for the
    // latest.
    saved_ago(&mut admin, schedule.id, Duration::hours(5)).await;
    let round = fixture.runner.schedule(now).await.unwrap();
    assert_eq!(round.len(), 1, "{round:?}");
    assert_eq!(round[0].occurrence, Some(hour_of(now)));
    assert!(round[0].run.is_some());
    assert_eq!(
        round[0].next_run_at,
        Some(hour_of(now) + Duration::hours(1))
    );
    assert!(
        fixture.runner.schedule(now).await.unwrap().is_empty(),
        "once"
    );
    let next = hour_of(now) + Duration::hours(1);
    assert!(
        fixture
            .runner
            .schedule(next - Duration::seconds(1))
            .await
            .unwrap()
            .is_empty(),
        "nothing more before the next occurrence"
    );

    // The next occurrence, on time.
    let round = fixture
        .runner
        .schedule(next + Duration::seconds(2))
        .await
        .unwrap();
    assert_eq!(round.len(), 1);
    assert_eq!(round[0].occurrence, Some(next));

    let occurrences: Vec<(OffsetDateTime, String)> = sqlx::query_as(
        "select occurrence, run_as from control.report_runs where schedule_id = $1 \
         order by occurrence",
    )
    .bind(schedule.id)
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(
        occurrences,
        vec![
            (hour_of(now), "owner".to_owned()),
            (next, "owner".to_owned())
        ]
    );

    // The runner writes the first; its relative range ends at the occurrence.
    let finished = fixture.runner.run_next().await.unwrap().unwrap();
    assert_eq!(finished.failure, None);
    assert!(finished.rows > 0);
}

#[tokio::test]
async fn two_schedulers_ask_for_each_occurrence_once() {
    let _shared = crate::SERIAL.read().await;
    let fixture = fixture().await;
    let database = &fixture.database;
    let mut admin = fixture._test_database.admin().await;
    let acme = tenant(database, "Acme").await;
    let owner = member(database, acme, "owner@acme.example", Role::Owner).await;
    let mut schedules = Vec::new();
    let mut tx = member_tx(database, acme, owner, Role::Owner).await;
    for n in 0..20 {
        let report = store::reports::create_report(
            &mut tx,
            &metric_report(&format!("power {n}"), Format::Jsonl),
        )
        .await
        .unwrap();
        let mut input = hourly();
        input.cron = "*/15 * * * *".into();
        schedules.push(
            store::reports::create_schedule(&mut tx, report, Role::Owner, &input)
                .await
                .unwrap()
                .id,
        );
    }
    tx.commit().await.unwrap();
    for schedule in &schedules {
        saved_ago(&mut admin, *schedule, Duration::hours(1)).await;
    }
    // Two servers' schedulers looking at the same moments (they share the wall clock), every
    // simulated minute for two hours, at once.
    let second = Runner::new(database.clone(), fixture.exports.clone());
    let start = OffsetDateTime::now_utc();
    let asked = |round: Vec<store::service::reports::Scheduled>| {
        round.iter().filter(|done| done.run.is_some()).count()
    };
    let (mut a, mut b) = (0, 0);
    for minute in 0..120 {
        let at = start + Duration::minutes(minute);
        let (first, other) = tokio::join!(fixture.runner.schedule(at), second.schedule(at));
        a += asked(first.unwrap());
        b += asked(other.unwrap());
    }
    let per_occurrence: Vec<(Uuid, OffsetDateTime, i64)> = sqlx::query_as(
        "select schedule_id, occurrence, count(*) from control.report_runs \
         group by schedule_id, occurrence order by 1, 2",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(
        per_occurrence.iter().all(|(_, _, runs)| *runs == 1),
        "{per_occurrence:?}"
    );
    // Per schedule: the missed hour's latest quarter (at or before the start), then each
    // quarter after the start. A start within a quarter's minute is that quarter already, so
    // the count of later quarters begins at the next minute.
    let expected_each = 1
        + (1..120)
            .map(|minute| start + Duration::minutes(minute))
            .filter(|at| at.minute() % 15 == 0)
            .count();
    assert_eq!(
        per_occurrence.len(),
        schedules.len() * expected_each,
        "from {start}: {:?}",
        per_occurrence
            .iter()
            .filter(|(schedule, _, _)| *schedule == schedules[0])
            .map(|(_, at, _)| at.to_string())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        a + b,
        per_occurrence.len(),
        "each scheduler counts only its own"
    );
}

#[tokio::test]
async fn a_scheduled_run_reads_in_its_owners_role_and_is_queued_to_its_channels() {
    let _shared = crate::SERIAL.read().await;
    let fixture = fixture().await;
    let database = &fixture.database;
    let mut admin = fixture._test_database.admin().await;
    let acme = tenant(database, "Acme").await;
    let owner = member(database, acme, "owner@acme.example", Role::Owner).await;
    let admin_user = member(database, acme, "admin@acme.example", Role::Admin).await;
    metrics(&mut admin, acme, 2, 30, 0.0).await;
    let channel = Uuid::new_v4();
    sqlx::query(
        "insert into control.alert_channels (tenant_id, channel_id, name, kind, target) \
         values ($1, $2, 'finance mail', 'email', 'finance@acme.example')",
    )
    .bind(acme.as_uuid())
    .bind(channel)
    .execute(&mut admin)
    .await
    .unwrap();

    // An audit log report, scheduled by an admin (who may read it).
    let mut tx = member_tx(database, acme, admin_user, Role::Admin).await;
    let audit = store::reports::create_report(
        &mut tx,
        &store::reports::ReportInput::new("audit", store::reports::Dataset::AuditLog, Format::Csv),
    )
    .await
    .unwrap();
    let mut input = hourly();
    input.channels = vec![channel];
    let schedule = store::reports::create_schedule(&mut tx, audit, Role::Admin, &input)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(schedule.owner, Some(*admin_user.as_uuid()));

    // Delivered when it ends: the outbox holds the summary for the channel.
    saved_ago(&mut admin, schedule.id, Duration::hours(1)).await;
    let now = OffsetDateTime::now_utc();
    let round = fixture.runner.schedule(now).await.unwrap();
    let run = round[0].run.unwrap();
    let finished = fixture.runner.run_next().await.unwrap().unwrap();
    assert_eq!((finished.run, finished.failure.clone()), (run, None));
    let (notice, payload, run_id): (String, serde_json::Value, Option<Uuid>) = sqlx::query_as(
        "select notice, payload, run_id from pipeline.alert_outbox where channel_id = $1",
    )
    .bind(channel)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!((notice.as_str(), run_id), ("report", Some(run)));
    assert_eq!(payload["status"], "succeeded");
    assert_eq!(payload["rows"], finished.rows);
    assert_eq!(
        payload["download_path"],
        format!("/api/v1/report-runs/{run}/download")
    );
    assert!(
        payload["text"]
            .as_str()
            .unwrap()
            .starts_with("Report “audit” is ready")
    );
    // The export is audited as the schedule's owner.
    let audited: i64 = sqlx::query_scalar(
        "select count(*) from audit.log where action = 'report.run' and actor_type = 'user' \
             and actor_id = $1 and details->>'schedule' = $2",
    )
    .bind(admin_user.as_uuid().to_string())
    .bind(schedule.id.to_string())
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(audited, 1);

    // The owner is lowered to viewer, who may not read the audit log: the next occurrence is
    // refused, recorded as a failed run, and the channel is told why.
    store::control::set_member(
        &database.app,
        store::Actor::System("test"),
        acme,
        &domain::Email::parse("admin@acme.example").unwrap(),
        Role::Viewer,
    )
    .await
    .unwrap();
    let later = hour_of(now) + Duration::hours(1) + Duration::seconds(1);
    let round = fixture.runner.schedule(later).await.unwrap();
    let refused = round[0].refused.clone().unwrap();
    assert!(refused.contains("viewer"), "{refused}");
    let (status, error): (String, Option<String>) =
        sqlx::query_as("select status, error from control.report_runs where run_id = $1")
            .bind(round[0].run.unwrap())
            .fetch_one(&mut admin)
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), error.as_deref()),
        (RunStatus::Failed.as_str(), Some(refused.as_str()))
    );
    let failures: i64 = sqlx::query_scalar(
        "select count(*) from pipeline.alert_outbox where channel_id = $1 \
             and payload->>'status' = 'failed'",
    )
    .bind(channel)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(failures, 1);

    // The owner leaves: the occurrence after is refused, naming why.
    sqlx::query("delete from control.members where user_id = $1")
        .bind(admin_user.as_uuid())
        .execute(&mut admin)
        .await
        .unwrap();
    let round = fixture
        .runner
        .schedule(later + Duration::hours(1))
        .await
        .unwrap();
    assert!(
        round[0]
            .refused
            .as_deref()
            .unwrap()
            .contains("has left the workspace"),
        "{round:?}"
    );
    let _ = owner;
}
