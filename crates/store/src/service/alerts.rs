//! The alert evaluator's and deliverer's side of the alert tables (service handle).
//!
//! **Evaluating.** [`claim_due`] opens a transaction that locks the enabled rules due at `now`
//! (`for update skip locked`), so a second evaluator takes other rules, never the same ones; the
//! evaluator reads each rule's data through the read layer in tenant transactions of its own,
//! then [`Round::record`]s each series' step and [`Round::notify`]s, and [`Round::commit`]s the
//! states, timeline, outbox rows and the rules' next evaluation together. A notice is decided
//! exactly once: two evaluators never both decide it.
//!
//! **Delivering.** [`claim_deliveries`] leases due outbox rows (`for update skip locked`, then
//! a lease in `next_attempt_at`), so two deliverers never send one row at once; a deliverer
//! that dies mid-send leaves the row to be sent again when its lease ends (delivery is
//! at-least-once; receivers dedupe on the notification id every delivery carries).

use std::collections::HashMap;

use domain::TenantId;
use domain::alerting::{Notice, SeriesState, Step};
use sqlx::{Postgres, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::alerts::{Delivery, RULE_COLUMNS, RuleInput, rule_input};
use crate::{ServiceDb, StoreError};

/// A rule due for evaluation.
#[derive(Debug, Clone)]
pub struct DueRule {
    pub tenant: TenantId,
    pub id: Uuid,
    pub input: RuleInput,
}

/// A series' stored state.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSeries {
    pub series: String,
    pub state: SeriesState,
}

/// An evaluation round: the due rules, locked until [`Round::commit`], and what the round
/// decided, written together at the commit (a few statements for the whole round, not a few per
/// series).
#[derive(Debug)]
pub struct Round {
    tx: Transaction<'static, Postgres>,
    pub rules: Vec<DueRule>,
    /// The time the round evaluates at.
    now: OffsetDateTime,
    states: Vec<StateWrite>,
    events: Vec<EventWrite>,
    /// (tenant, rule, series kept): a rule's `ok` series not kept are forgotten.
    kept: Vec<(Uuid, Uuid, Vec<String>)>,
    next: Vec<(Uuid, Uuid, OffsetDateTime)>,
}

#[derive(Debug)]
struct StateWrite {
    tenant: Uuid,
    rule: Uuid,
    series: String,
    phase: &'static str,
    since: OffsetDateTime,
    flapping: bool,
    machine: serde_json::Value,
    value: Option<f64>,
}

#[derive(Debug)]
struct EventWrite {
    tenant: Uuid,
    rule: Uuid,
    series: String,
    kind: &'static str,
    value: Option<f64>,
    detail: String,
}

/// A silence active at the round's time: of a rule, or of a label's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveSilence {
    pub tenant: TenantId,
    pub rule: Option<Uuid>,
    pub label: Option<(String, String)>,
}

impl ActiveSilence {
    /// Whether it covers `rule`.
    pub fn covers(&self, rule: &DueRule) -> bool {
        self.tenant == rule.tenant
            && (self.rule == Some(rule.id)
                || self.label.as_ref().is_some_and(|(key, value)| {
                    rule.input.labels.get(key).is_some_and(|own| own == value)
                }))
    }
}

/// Locks and returns up to `limit` enabled rules due at `now`, oldest due first.
pub async fn claim_due(
    database: &ServiceDb,
    now: OffsetDateTime,
    limit: i64,
) -> Result<Round, StoreError> {
    let mut tx = database.pool().begin().await?;
    let statement = format!(
        "select {RULE_COLUMNS}, r.tenant_id from control.alert_rules r \
         where r.enabled and r.next_evaluation_at <= $1 \
         order by r.next_evaluation_at limit $2 for update skip locked"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(statement))
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
    let mut rules = Vec::with_capacity(rows.len());
    for row in rows {
        use sqlx::Row;
        let base = crate::alerts::rule_row(&row)?;
        let tenant: Uuid = row.try_get(25)?;
        rules.push(DueRule {
            tenant: TenantId::from(tenant),
            id: base.0,
            input: rule_input(&base)?,
        });
    }
    Ok(Round {
        tx,
        rules,
        now,
        states: Vec::new(),
        events: Vec::new(),
        kept: Vec::new(),
        next: Vec::new(),
    })
}

/// What one notification says, for its outbox row.
#[derive(Debug, Clone)]
pub struct Notification {
    pub notice: Notice,
    pub payload: serde_json::Value,
}

impl Round {
    /// The stored series of every rule of the round, by rule.
    pub async fn series(&mut self) -> Result<HashMap<Uuid, Vec<StoredSeries>>, StoreError> {
        let tenants: Vec<Uuid> = self
            .rules
            .iter()
            .map(|rule| *rule.tenant.as_uuid())
            .collect();
        let ids: Vec<Uuid> = self.rules.iter().map(|rule| rule.id).collect();
        let rows: Vec<(Uuid, String, serde_json::Value, bool)> = sqlx::query_as(
            "select s.rule_id, s.series, s.machine, s.acked_at is not null \
             from unnest($1::uuid[], $2::uuid[]) as r(tenant_id, rule_id) \
             join control.alert_states s on s.tenant_id = r.tenant_id and s.rule_id = r.rule_id \
             order by s.rule_id, s.series",
        )
        .bind(&tenants)
        .bind(&ids)
        .fetch_all(&mut *self.tx)
        .await?;
        let mut by_rule: HashMap<Uuid, Vec<StoredSeries>> = HashMap::new();
        for (rule, series, machine, acked) in rows {
            // A state this version cannot read starts over (ok), rather than failing the rule.
            let mut state: SeriesState = serde_json::from_value(machine).unwrap_or_default();
            // Someone acknowledged it since the last evaluation (crate::alerts::acknowledge).
            state.acked |= acked;
            by_rule
                .entry(rule)
                .or_default()
                .push(StoredSeries { series, state });
        }
        Ok(by_rule)
    }

    /// The silences active at `now` in the round's tenants.
    pub async fn silences(
        &mut self,
        now: OffsetDateTime,
    ) -> Result<Vec<ActiveSilence>, StoreError> {
        let mut tenants: Vec<Uuid> = self
            .rules
            .iter()
            .map(|rule| *rule.tenant.as_uuid())
            .collect();
        tenants.sort_unstable();
        tenants.dedup();
        type Row = (Uuid, Option<Uuid>, Option<String>, Option<String>);
        let rows: Vec<Row> = sqlx::query_as(
            "select tenant_id, rule_id, label_key, label_value from control.alert_silences \
             where tenant_id = any($1) and ended_at is null and starts_at <= $2 and ends_at > $2",
        )
        .bind(&tenants)
        .bind(now)
        .fetch_all(&mut *self.tx)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(tenant, rule, key, value)| ActiveSilence {
                tenant: TenantId::from(tenant),
                rule,
                label: key.zip(value),
            })
            .collect())
    }

    /// Stores one series' step at `now`, with its value, and puts its phase changes, flapping
    /// changes and notice on the timeline (written at the commit).
    pub fn record(
        &mut self,
        rule: &DueRule,
        series: &str,
        step: &Step,
        value: Option<f64>,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let since =
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(step.state.since_ms) * 1_000_000)
                .unwrap_or(now);
        let machine = serde_json::to_value(&step.state)
            .map_err(|_| StoreError::Invalid("an alert state".into()))?;
        let tenant = *rule.tenant.as_uuid();
        self.states.push(StateWrite {
            tenant,
            rule: rule.id,
            series: series.to_owned(),
            phase: step.state.phase.as_str(),
            since,
            flapping: step.state.flapping,
            machine,
            value,
        });
        let mut event = |kind: &'static str, detail: String| {
            self.events.push(EventWrite {
                tenant,
                rule: rule.id,
                series: series.to_owned(),
                kind,
                value,
                detail,
            });
        };
        if let Some((from, to)) = step.transition {
            let kind = match (from, to) {
                (domain::alerting::Phase::Firing, _) => "resolved",
                (_, domain::alerting::Phase::Firing) => "firing",
                (_, domain::alerting::Phase::Pending) => "pending",
                _ => "ok",
            };
            event(kind, String::new());
        }
        match step.flapping_changed {
            Some(true) => event(
                "flapping",
                "notices held until it stops flipping".to_owned(),
            ),
            Some(false) => event("settled", String::new()),
            None => {}
        }
        if let Some(notice) = step.notice {
            event("notified", notice.as_str().to_owned());
        }
        Ok(())
    }

    /// Forgets (at the commit) the series of `rule` not in `keep` (a group that left the data,
    /// a source that was deleted), unless they are firing or pending.
    pub fn forget_others(&mut self, rule: &DueRule, keep: Vec<String>) {
        self.kept.push((*rule.tenant.as_uuid(), rule.id, keep));
    }

    /// Queues one notification of `rule` to each of its channels that still exists.
    pub async fn notify(
        &mut self,
        rule: &DueRule,
        notification: &Notification,
    ) -> Result<u64, StoreError> {
        let queued = sqlx::query(
            "insert into pipeline.alert_outbox (tenant_id, rule_id, channel_id, notice, payload) \
             select $1, $2, c.channel_id, $3, $4 from control.alert_channels c \
             where c.tenant_id = $1 and c.channel_id = any($5)",
        )
        .bind(rule.tenant.as_uuid())
        .bind(rule.id)
        .bind(notification.notice.as_str())
        .bind(&notification.payload)
        .bind(&rule.input.channels)
        .execute(&mut *self.tx)
        .await?
        .rows_affected();
        Ok(queued)
    }

    /// Sets when `rule` is next due (at the commit).
    pub fn reschedule(&mut self, rule: &DueRule, next: OffsetDateTime) {
        self.next.push((*rule.tenant.as_uuid(), rule.id, next));
    }

    /// Writes what the round decided and releases its rules.
    pub async fn commit(mut self) -> Result<(), StoreError> {
        let states = std::mem::take(&mut self.states);
        if !states.is_empty() {
            let column = |f: fn(&StateWrite) -> Uuid| states.iter().map(f).collect::<Vec<_>>();
            // A series that resolves keeps no acknowledgement.
            sqlx::query(
                "insert into control.alert_states (tenant_id, rule_id, series, phase, since, \
                 flapping, machine, last_value, evaluated_at) \
                 select t, r, s, p, si, f, m, v, $9 from unnest($1::uuid[], $2::uuid[], \
                   $3::text[], $4::text[], $5::timestamptz[], $6::bool[], $7::jsonb[], \
                   $8::float8[]) as w(t, r, s, p, si, f, m, v) \
                 on conflict (tenant_id, rule_id, series) do update set phase = excluded.phase, \
                   since = excluded.since, flapping = excluded.flapping, \
                   machine = excluded.machine, last_value = excluded.last_value, \
                   evaluated_at = excluded.evaluated_at, \
                   acked_by = case when excluded.phase = 'firing' then alert_states.acked_by end, \
                   acked_at = case when excluded.phase = 'firing' then alert_states.acked_at end",
            )
            .bind(column(|w| w.tenant))
            .bind(column(|w| w.rule))
            .bind(states.iter().map(|w| w.series.as_str()).collect::<Vec<_>>())
            .bind(states.iter().map(|w| w.phase).collect::<Vec<_>>())
            .bind(states.iter().map(|w| w.since).collect::<Vec<_>>())
            .bind(states.iter().map(|w| w.flapping).collect::<Vec<_>>())
            .bind(states.iter().map(|w| w.machine.clone()).collect::<Vec<_>>())
            .bind(states.iter().map(|w| w.value).collect::<Vec<_>>())
            .bind(self.now)
            .execute(&mut *self.tx)
            .await?;
        }
        let events = std::mem::take(&mut self.events);
        if !events.is_empty() {
            sqlx::query(
                "insert into control.alert_events (tenant_id, rule_id, series, at, kind, value, \
                 detail) select t, r, s, $7, k, v, d from unnest($1::uuid[], $2::uuid[], \
                   $3::text[], $4::text[], $5::float8[], $6::text[]) \
                   with ordinality as e(t, r, s, k, v, d, n) order by n",
            )
            .bind(events.iter().map(|e| e.tenant).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.rule).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.series.as_str()).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.kind).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.value).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.detail.as_str()).collect::<Vec<_>>())
            .bind(self.now)
            .execute(&mut *self.tx)
            .await?;
        }
        let kept = std::mem::take(&mut self.kept);
        if !kept.is_empty() {
            let mut rules = (Vec::new(), Vec::new());
            let mut keep = (Vec::new(), Vec::new());
            for (tenant, rule, series) in &kept {
                rules.0.push(*tenant);
                rules.1.push(*rule);
                for one in series {
                    keep.0.push(*rule);
                    keep.1.push(one.as_str());
                }
            }
            sqlx::query(
                "delete from control.alert_states s \
                 using unnest($1::uuid[], $2::uuid[]) as r(t, id) \
                 where s.tenant_id = r.t and s.rule_id = r.id and s.phase = 'ok' \
                   and not exists (select 1 from unnest($3::uuid[], $4::text[]) as k(id, series) \
                                   where k.id = s.rule_id and k.series = s.series)",
            )
            .bind(&rules.0)
            .bind(&rules.1)
            .bind(&keep.0)
            .bind(&keep.1)
            .execute(&mut *self.tx)
            .await?;
        }
        let next = std::mem::take(&mut self.next);
        if !next.is_empty() {
            sqlx::query(
                "update control.alert_rules a set next_evaluation_at = n.at \
                 from unnest($1::uuid[], $2::uuid[], $3::timestamptz[]) as n(t, id, at) \
                 where a.tenant_id = n.t and a.rule_id = n.id",
            )
            .bind(next.iter().map(|n| n.0).collect::<Vec<_>>())
            .bind(next.iter().map(|n| n.1).collect::<Vec<_>>())
            .bind(next.iter().map(|n| n.2).collect::<Vec<_>>())
            .execute(&mut *self.tx)
            .await?;
        }
        self.tx.commit().await?;
        Ok(())
    }
}

/// Leases up to `limit` notifications due at `now` for `lease`: none is handed to two
/// deliverers at once.
pub async fn claim_deliveries(
    database: &ServiceDb,
    now: OffsetDateTime,
    lease: time::Duration,
    limit: i64,
) -> Result<Vec<Delivery>, StoreError> {
    type Row = (
        Uuid,
        Uuid,
        Option<Uuid>,
        String,
        serde_json::Value,
        i32,
        Uuid,
        String,
        String,
        String,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Option<Uuid>,
        Option<String>,
        Option<i64>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "with due as ( \
             select tenant_id, notification_id from pipeline.alert_outbox \
             where delivered_at is null and failed_at is null and next_attempt_at <= $1 \
             order by next_attempt_at limit $3 for update skip locked), \
         leased as ( \
             update pipeline.alert_outbox o set attempts = o.attempts + 1, \
                 next_attempt_at = $1 + $2 \
             from due where o.tenant_id = due.tenant_id \
               and o.notification_id = due.notification_id \
             returning o.*) \
         select l.tenant_id, l.notification_id, l.rule_id, l.notice, l.payload, l.attempts, \
                c.channel_id, c.name, c.kind, c.target, c.secret_ciphertext, c.secret_nonce, \
                l.run_id, r.object_key, r.bytes_written \
         from leased l join control.alert_channels c \
           on c.tenant_id = l.tenant_id and c.channel_id = l.channel_id \
         left join control.report_runs r on r.tenant_id = l.tenant_id and r.run_id = l.run_id \
           and r.status = 'succeeded' and r.expires_at > $1 \
         order by l.created_at",
    )
    .bind(now)
    .bind(lease)
    .bind(limit)
    .fetch_all(database.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| Delivery {
            tenant: TenantId::from(row.0),
            id: row.1,
            rule: row.2,
            notice: row.3,
            payload: row.4,
            attempts: row.5,
            channel: row.6,
            channel_name: row.7,
            kind: row.8,
            target: row.9,
            sealed_secret: row.10.zip(row.11),
            run: row.12,
            file: row.13.zip(row.14),
        })
        .collect())
}

/// Records a delivery's outcome: delivered; or failed with `error` (no customer value, no
/// secret), to be tried again at `retry_at` or, without one, given up. The channel shows its
/// last delivery or error; a rule's timeline gets the result.
pub async fn finish_delivery(
    database: &ServiceDb,
    delivery: &Delivery,
    outcome: Result<(), &str>,
    retry_at: Option<OffsetDateTime>,
) -> Result<(), StoreError> {
    let mut tx = database.pool().begin().await?;
    let error = outcome.err().map(|error| cut(error, 500));
    match &error {
        None => {
            sqlx::query(
                "update pipeline.alert_outbox set delivered_at = now(), last_error = null \
                 where tenant_id = $1 and notification_id = $2",
            )
            .bind(delivery.tenant.as_uuid())
            .bind(delivery.id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "update control.alert_channels set last_delivered_at = now() \
                 where tenant_id = $1 and channel_id = $2",
            )
            .bind(delivery.tenant.as_uuid())
            .bind(delivery.channel)
            .execute(&mut *tx)
            .await?;
        }
        Some(error) => {
            sqlx::query(
                "update pipeline.alert_outbox set last_error = $3, \
                 next_attempt_at = coalesce($4, next_attempt_at), \
                 failed_at = case when $4::timestamptz is null then now() end \
                 where tenant_id = $1 and notification_id = $2",
            )
            .bind(delivery.tenant.as_uuid())
            .bind(delivery.id)
            .bind(error)
            .bind(retry_at)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "update control.alert_channels set last_error = $3, last_error_at = now() \
                 where tenant_id = $1 and channel_id = $2",
            )
            .bind(delivery.tenant.as_uuid())
            .bind(delivery.channel)
            .bind(error)
            .execute(&mut *tx)
            .await?;
        }
    }
    if let Some(rule) = delivery.rule {
        let series = delivery.payload["alerts"][0]["series"]
            .as_str()
            .unwrap_or_default();
        let (kind, detail) = match &error {
            None => (
                "delivered",
                format!("{} to {}", delivery.notice, delivery.channel_name),
            ),
            Some(error) => (
                "delivery_failed",
                format!(
                    "{} to {} (attempt {}): {error}",
                    delivery.notice, delivery.channel_name, delivery.attempts
                ),
            ),
        };
        sqlx::query(
            "insert into control.alert_events (tenant_id, rule_id, series, kind, detail) \
             select $1, $2, $3, $4, $5 \
             where exists (select 1 from control.alert_rules where tenant_id = $1 and rule_id = $2)",
        )
        .bind(delivery.tenant.as_uuid())
        .bind(rule)
        .bind(series)
        .bind(kind)
        .bind(cut(&detail, 1_000))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

fn cut(text: &str, chars: usize) -> String {
    text.chars().take(chars).collect()
}

/// The outbox on the service handle, for a deliverer that must not hold the handle itself (the
/// web crate's, which holds the app handle only).
pub fn outbox(database: ServiceDb) -> std::sync::Arc<dyn crate::alerts::Outbox> {
    std::sync::Arc::new(ServiceOutbox(database))
}

struct ServiceOutbox(ServiceDb);

impl crate::alerts::Outbox for ServiceOutbox {
    fn claim(
        &self,
        now: OffsetDateTime,
        lease: time::Duration,
        limit: i64,
    ) -> futures_util::future::BoxFuture<'_, Result<Vec<Delivery>, StoreError>> {
        Box::pin(claim_deliveries(&self.0, now, lease, limit))
    }

    fn finish<'a>(
        &'a self,
        delivery: &'a Delivery,
        outcome: Result<(), &'a str>,
        retry_at: Option<OffsetDateTime>,
    ) -> futures_util::future::BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(finish_delivery(&self.0, delivery, outcome, retry_at))
    }
}
