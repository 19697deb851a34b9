//! The alert evaluator over a controlled clock, against the real read models and the
//! production roles: a metric rule goes pending, fires after its "for" duration and resolves,
//! each notice queued once although two evaluators run every round; it never sees another
//! tenant's data; acknowledging stops reminders and a silence holds notices; a pipeline-health
//! rule fires when a source's agent stops reporting.

use domain::{Role, SourceId, TenantId, UserId};
use secrecy::SecretString;
use sqlx::PgConnection;
use store::alerts::{ChannelKind, Comparison, Condition, RuleInput, RuleSpec};
use store::analytics::Aggregation;
use store::secret_box::SecretBox;
use store::{Database, Scope, TenantTx};
use test_support::TestDatabase;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::materializer::{base_time, event, materialize};
use crate::support::tenant;

fn secrets() -> SecretBox {
    SecretBox::new(
        &SecretString::from("test master secret".to_owned()),
        store::alerts::CHANNEL_SECRET_PURPOSE,
    )
}

async fn member_tx(database: &Database, tenant: TenantId, role: Role) -> TenantTx {
    TenantTx::begin(
        &database.app,
        Scope::Member {
            tenant,
            user: UserId::new_random(),
            role,
        },
    )
    .await
    .unwrap()
}

/// `value` of `power_kw` by device d1 at `minute` minutes and 5 seconds after the base time.
fn power(tenant: TenantId, source: SourceId, minute: i64, value: f64) -> protocol::Envelope {
    power_at(tenant, source, 1_000 + minute as u64, minute, value)
}

/// [`power`], as the reading at source position `lsn` (a second reading of a minute).
fn power_at(
    tenant: TenantId,
    source: SourceId,
    lsn: u64,
    minute: i64,
    value: f64,
) -> protocol::Envelope {
    let measured = (base_time() + time::Duration::seconds(minute * 60 + 5))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    event(
        tenant,
        source,
        protocol::Op::Insert,
        "readings",
        lsn,
        serde_json::json!({ "reading_id": lsn }),
        Some(serde_json::json!({
            "reading_id": lsn, "device_id": "d1", "metric": "power_kw", "value": value,
            "measured_at": measured,
        })),
        &[],
    )
}

/// A webhook channel and a rule of `tenant` on `spec` notifying it, due from the base time.
async fn rule_with_channel(
    database: &Database,
    admin: &mut PgConnection,
    tenant: TenantId,
    input: RuleInput,
) -> (Uuid, Uuid) {
    let mut tx = member_tx(database, tenant, Role::Admin).await;
    let channel = store::alerts::create_channel(
        &mut tx,
        &secrets(),
        "Receiver",
        ChannelKind::Webhook,
        "https://hooks.example.com/tributary",
    )
    .await
    .unwrap();
    let rule = store::alerts::create_rule(
        &mut tx,
        &RuleInput {
            channels: vec![channel.id],
            ..input
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    // The test's clock starts at the base time, before the rule was created.
    sqlx::query("update control.alert_rules set next_evaluation_at = $1 where rule_id = $2")
        .bind(base_time())
        .bind(rule)
        .execute(admin)
        .await
        .unwrap();
    (rule, channel.id)
}

/// Two evaluators, one round each, at the same moment.
async fn evaluate_twice(database: &Database, now: OffsetDateTime) {
    let (first, second) = tokio::join!(
        pipeline::alerts::evaluate_round(database, now, 100),
        pipeline::alerts::evaluate_round(database, now, 100)
    );
    let (first, second) = (first.unwrap(), second.unwrap());
    assert!(
        first.rules + second.rules <= 1,
        "a due rule is evaluated by one evaluator: {first:?} {second:?}"
    );
}

/// The notices queued for `rule`, oldest first.
async fn outbox(admin: &mut PgConnection, rule: Uuid) -> Vec<String> {
    sqlx::query_scalar(
        "select notice from pipeline.alert_outbox where rule_id = $1 order by created_at",
    )
    .bind(rule)
    .fetch_all(admin)
    .await
    .unwrap()
}

/// The timeline kinds of `rule` (with the notified notice), oldest first.
async fn timeline(admin: &mut PgConnection, rule: Uuid) -> Vec<String> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "select kind, detail from control.alert_events where rule_id = $1 order by event_id",
    )
    .bind(rule)
    .fetch_all(admin)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(kind, detail)| match kind.as_str() {
            "notified" => format!("notified {detail}"),
            _ => kind,
        })
        .collect()
}

fn at_minute(minute: i64) -> OffsetDateTime {
    base_time() + time::Duration::seconds(minute * 60 + 30)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metric_rule_goes_pending_fires_after_its_for_duration_and_resolves_each_notice_once() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let mut admin = test_database.admin().await;
    let a = tenant(&database, "Tenant A").await;
    let b = tenant(&database, "Tenant B").await;
    let (source_a, source_b) = (SourceId::new_random(), SourceId::new_random());
    // A: 10 for minutes 0-4, 100 for 5-9, 10 again from 10. B: 1000 throughout, which A's
    // rule would breach on from the start if it could see it.
    let mut readings = Vec::new();
    for minute in 0..15 {
        let value = if (5..10).contains(&minute) {
            100.0
        } else {
            10.0
        };
        readings.push(power(a, source_a, minute, value));
        readings.push(power(b, source_b, minute, 1_000.0));
    }
    materialize(&database, &readings).await;
    let mut input = RuleInput::new(
        "Power high",
        RuleSpec::Metric {
            key: "power_kw".into(),
            aggregation: Aggregation::Min,
            window_secs: 60,
            comparison: Comparison::Above,
            threshold: 50.0,
            site: None,
            device: None,
            group_by: None,
        },
    );
    input.for_secs = 120;
    input.description = "{{rule}}: {{value}} kW over {{threshold}}".into();
    let (rule, _) = rule_with_channel(&database, &mut admin, a, input).await;

    let mut phases = Vec::new();
    for minute in 0..14 {
        evaluate_twice(&database, at_minute(minute)).await;
        let phase: String = sqlx::query_scalar(
            "select phase from control.alert_states where rule_id = $1 and series = ''",
        )
        .bind(rule)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        phases.push(phase);
    }
    // Minute m's window holds minutes m-1 and m: the minimum breaches from minute 6 (5 and 6
    // both 100) to minute 9, fires two minutes in at 8, and clears at 10.
    assert_eq!(
        phases,
        [
            "ok", "ok", "ok", "ok", "ok", "ok", "pending", "pending", "firing", "firing", "ok",
            "ok", "ok", "ok"
        ]
    );
    assert_eq!(
        timeline(&mut admin, rule).await,
        [
            "pending",
            "firing",
            "notified firing",
            "resolved",
            "notified resolved"
        ]
    );
    assert_eq!(
        outbox(&mut admin, rule).await,
        ["firing", "resolved"],
        "each notice once, with two evaluators every round"
    );
    let payload: serde_json::Value = sqlx::query_scalar(
        "select payload from pipeline.alert_outbox where rule_id = $1 and notice = 'firing'",
    )
    .bind(rule)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(payload["rule"]["name"], "Power high");
    assert_eq!(payload["alerts"][0]["value"], 100.0);
    assert_eq!(
        payload["alerts"][0]["description"],
        "Power high: 100 kW over 50"
    );
    let b_rows: i64 = sqlx::query_scalar(
        "select (select count(*) from control.alert_states where tenant_id = $1) \
              + (select count(*) from pipeline.alert_outbox where tenant_id = $1)",
    )
    .bind(b.as_uuid())
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(
        b_rows, 0,
        "tenant B has no rule, so nothing of it is evaluated"
    );

    // The members' views of it: a viewer reads the rule and its timeline, not tenant B.
    let mut viewer = member_tx(&database, a, Role::Viewer).await;
    let rules = store::alerts::list_rules(&mut viewer).await.unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].state, "ok");
    let entries = store::alerts::timeline(&mut viewer, rule, None, 100)
        .await
        .unwrap();
    assert_eq!(entries.len(), 5);
    viewer.rollback().await.unwrap();
    let mut other = member_tx(&database, b, Role::Owner).await;
    assert!(
        store::alerts::list_rules(&mut other)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store::alerts::timeline(&mut other, rule, None, 100)
            .await
            .unwrap()
            .is_empty()
    );
    other.rollback().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledging_stops_reminders_and_a_silence_holds_notices() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let mut admin = test_database.admin().await;
    let a = tenant(&database, "Tenant A").await;
    let source = SourceId::new_random();
    let readings: Vec<_> = (0..40)
        .map(|minute| power(a, source, minute, 100.0))
        .collect();
    materialize(&database, &readings).await;
    let mut input = RuleInput::new(
        "Always high",
        RuleSpec::Metric {
            key: "power_kw".into(),
            aggregation: Aggregation::Avg,
            window_secs: 60,
            comparison: Comparison::AtLeast,
            threshold: 100.0,
            site: None,
            device: Some("d1".into()),
            group_by: None,
        },
    );
    input.remind_every_secs = 300;
    let (rule, _) = rule_with_channel(&database, &mut admin, a, input).await;

    for minute in 0..12 {
        if minute == 11 {
            // An operator acknowledges it; a viewer may not.
            let mut viewer = member_tx(&database, a, Role::Viewer).await;
            let refused = store::alerts::acknowledge(&mut viewer, rule, "").await;
            assert!(
                refused
                    .as_ref()
                    .is_err_and(|error| error.is_access_denied()),
                "{refused:?}"
            );
            let mut operator = member_tx(&database, a, Role::Operator).await;
            store::alerts::acknowledge(&mut operator, rule, "")
                .await
                .unwrap();
            operator.commit().await.unwrap();
        }
        evaluate_twice(&database, at_minute(minute)).await;
    }
    // Fired at 0, reminded at 5 and 10, acknowledged at 11.
    assert_eq!(
        outbox(&mut admin, rule).await,
        ["firing", "reminder", "reminder"]
    );
    for minute in 12..22 {
        evaluate_twice(&database, at_minute(minute)).await;
    }
    assert_eq!(
        outbox(&mut admin, rule).await.len(),
        3,
        "no reminder after the acknowledgement"
    );

    // A silence of the rule's label, on the test's clock, while it resolves and fires again:
    // nothing is sent under it; the firing still on when it ends is announced then.
    sqlx::query(
        "update control.alert_rules set labels = '{\"team\": \"grid\"}' where rule_id = $1",
    )
    .bind(rule)
    .execute(&mut admin)
    .await
    .unwrap();
    sqlx::query(
        "insert into control.alert_silences (tenant_id, label_key, label_value, starts_at, \
         ends_at, reason) values ($1, 'team', 'grid', $2, $3, 'maintenance')",
    )
    .bind(a.as_uuid())
    .bind(at_minute(22))
    .bind(at_minute(30))
    .execute(&mut admin)
    .await
    .unwrap();
    // A second, low reading in minutes 23 and 24: their averages drop below the threshold.
    let low: Vec<_> = (23..25)
        .map(|minute| power_at(a, source, 5_000 + minute as u64, minute, 1.0))
        .collect();
    materialize(&database, &low).await;
    for minute in 22..32 {
        evaluate_twice(&database, at_minute(minute)).await;
    }
    let kinds = timeline(&mut admin, rule).await;
    assert!(kinds.contains(&"resolved".to_owned()), "{kinds:?}");
    assert_eq!(
        outbox(&mut admin, rule).await,
        ["firing", "reminder", "reminder", "firing"],
        "silenced: no resolution and no re-firing notice; announced again when the silence ended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_whose_agent_stops_reporting_fires_source_disconnected() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let mut admin = test_database.admin().await;
    let a = tenant(&database, "Tenant A").await;
    let mut tx = member_tx(&database, a, Role::Owner).await;
    let (source, _token) = store::sources::create_source(&mut tx, "plant-db", "postgres")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let source = source.source_id;
    sqlx::query("update control.sources set status = 'active' where source_id = $1")
        .bind(source.as_uuid())
        .execute(&mut admin)
        .await
        .unwrap();
    let heartbeat = |at: OffsetDateTime| {
        let database = database.clone();
        async move {
            let mut tx =
                TenantTx::begin_service(&database.service, Some(a), store::Actor::Agent(source))
                    .await
                    .unwrap();
            let report = store::sources::AgentReport {
                agent_version: "test".into(),
                source_kind: "postgres".into(),
                state: "streaming".into(),
                ..Default::default()
            };
            store::sources::record_agent_status_at(&mut tx, source, &report, Some(at))
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
    };
    heartbeat(at_minute(0)).await;
    let mut input = RuleInput::new(
        "Agent gone",
        RuleSpec::Pipeline {
            condition: Condition::SourceDisconnected,
            source: None,
            threshold: Some(5.0),
            window_secs: None,
        },
    );
    input.severity = store::alerts::Severity::Critical;
    let (rule, _) = rule_with_channel(&database, &mut admin, a, input).await;
    let series = format!("source:{source}");
    for minute in 0..8 {
        evaluate_twice(&database, at_minute(minute)).await;
    }
    // Reported at minute 0: more than five minutes without a report from minute 6.
    let (phase, value): (String, Option<f64>) = sqlx::query_as(
        "select phase, last_value from control.alert_states where rule_id = $1 and series = $2",
    )
    .bind(rule)
    .bind(&series)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(phase, "firing");
    assert_eq!(value, Some(7.0));
    heartbeat(at_minute(8)).await;
    evaluate_twice(&database, at_minute(8)).await;
    assert_eq!(outbox(&mut admin, rule).await, ["firing", "resolved"]);
    let payload: serde_json::Value = sqlx::query_scalar(
        "select payload from pipeline.alert_outbox where rule_id = $1 and notice = 'firing'",
    )
    .bind(rule)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(payload["alerts"][0]["series"], series);
    assert_eq!(payload["rule"]["severity"], "critical");
}
