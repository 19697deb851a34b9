//! The alert evaluator: a scheduled job, like the aggregator, not a bus consumer. Each round
//! locks the rules that are due ([`store::service::alerts::claim_due`]; a second evaluator takes
//! others), observes each rule's series, steps each series' state machine
//! ([`domain::alerting::step`]), and commits the states, the timeline and one notification per
//! rule and channel for everything its series announced in the round (so a rule over fifty
//! devices that all fire sends one message, not fifty). docs/alerts.md.
//!
//! Metric rules read through the analytics read layer ([`store::analytics::series`]), pipeline
//! rules through the sources' heartbeats, bronze and the dead letters, each in a transaction of
//! the rule's tenant as [`store::Scope::Job`]: under the tenant's row-level security, so a rule
//! of one tenant can never observe another's data.
//!
//! Late data: a metric rule looks at the window that ends at the evaluation; a reading that
//! arrives after its window was evaluated counts in the windows of later evaluations while it
//! is still inside them, and a past evaluation is not redone.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use domain::alerting::{self, Notice, Observation, Timing};
use store::alerts::{Condition, RuleSpec};
use store::analytics::{Aggregation, GroupBy, SeriesQuery, Step};
use store::service::alerts::{DueRule, Notification};
use store::{Database, Scope, StoreError, TenantTx};
use time::OffsetDateTime;

/// How the evaluator is scheduled.
#[derive(Debug, Clone)]
pub struct EvaluatorConfig {
    /// How often it looks for due rules (each rule has its own interval).
    pub tick: Duration,
    /// Rules per round.
    pub batch: i64,
}

impl Default for EvaluatorConfig {
    fn default() -> Self {
        Self {
            tick: Duration::from_secs(5),
            batch: 200,
        }
    }
}

/// What a round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundReport {
    pub rules: usize,
    pub series: usize,
    /// Notifications queued (one per rule and channel).
    pub notifications: u64,
    /// Rules whose data could not be read this round (tried again at their next interval).
    pub failed: usize,
}

/// One series as observed now.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub series: String,
    pub observation: Observation,
    pub value: Option<f64>,
}

/// Evaluates the rules due at `now` (at most `batch`), in one transaction: each tenant's rules
/// observed in one transaction of that tenant, the states, timeline and next evaluations of the
/// whole round written together.
pub async fn evaluate_round(
    database: &Database,
    now: OffsetDateTime,
    batch: i64,
) -> Result<RoundReport, StoreError> {
    let mut round = store::service::alerts::claim_due(&database.service, now, batch).await?;
    let mut report = RoundReport {
        rules: round.rules.len(),
        ..RoundReport::default()
    };
    if round.rules.is_empty() {
        round.commit().await?;
        return Ok(report);
    }
    let rules = round.rules.clone();
    let mut stored_by_rule = round.series().await?;
    let silences = round.silences(now).await?;
    let now_ms = (now.unix_timestamp_nanos() / 1_000_000) as i64;
    let mut by_tenant: BTreeMap<domain::TenantId, Vec<&DueRule>> = BTreeMap::new();
    for rule in &rules {
        by_tenant.entry(rule.tenant).or_default().push(rule);
    }
    for (tenant, tenant_rules) in by_tenant {
        let observed = observe_tenant(database, tenant, &tenant_rules, now).await;
        for (rule, observed) in tenant_rules.iter().zip(observed) {
            let next = now + time::Duration::seconds(i64::from(rule.input.interval_secs));
            round.reschedule(rule, next);
            let observed = match observed {
                Ok(observed) => observed,
                Err(error) => {
                    tracing::warn!(rule = %rule.id, %tenant, %error,
                        "an alert rule's data could not be read; it is tried again at its next interval");
                    report.failed += 1;
                    continue;
                }
            };
            let stored = stored_by_rule.remove(&rule.id).unwrap_or_default();
            let silenced = silences.iter().any(|silence| silence.covers(rule));
            let timing = timing_of(rule);
            // Every series observed now, and every stored one that was not (no data: it keeps
            // its phase, so a firing alert whose data stopped does not resolve by itself).
            let mut all: BTreeMap<String, (Observation, Option<f64>)> = stored
                .iter()
                .map(|stored| (stored.series.clone(), (Observation::NoData, None)))
                .collect();
            for observed in observed {
                all.insert(observed.series, (observed.observation, observed.value));
            }
            let mut announced = Vec::new();
            let mut keep = Vec::new();
            for (series, (observation, value)) in &all {
                let state = stored
                    .iter()
                    .find(|stored| &stored.series == series)
                    .map(|stored| stored.state.clone())
                    .unwrap_or_default();
                let step = alerting::step(&state, *observation, now_ms, &timing, silenced);
                // A series that stays ok without data and was never stored needs no row.
                let unchanged_ok = step.state == state
                    && step.state.phase == alerting::Phase::Ok
                    && *observation == Observation::NoData;
                if !unchanged_ok {
                    round.record(rule, series, &step, *value, now)?;
                }
                if *observation != Observation::NoData || step.state.phase != alerting::Phase::Ok {
                    keep.push(series.clone());
                }
                if let Some(notice) = step.notice {
                    announced.push((series.clone(), notice, *value));
                }
                report.series += 1;
            }
            round.forget_others(rule, keep);
            if !announced.is_empty() && !rule.input.channels.is_empty() {
                let notification = notification(rule, &announced, now);
                report.notifications += round.notify(rule, &notification).await?;
            }
        }
    }
    round.commit().await?;
    metrics::counter!("tributary_alert_rules_evaluated_total").increment(report.rules as u64);
    Ok(report)
}

fn timing_of(rule: &DueRule) -> Timing {
    Timing {
        for_ms: i64::from(rule.input.for_secs) * 1_000,
        remind_every_ms: i64::from(rule.input.remind_every_secs) * 1_000,
        flap_window_ms: i64::from(rule.input.flap_window_secs) * 1_000,
        flap_limit: rule.input.flap_limit.max(0) as u32,
    }
}

/// The series of each of one tenant's `rules` as they stand at `now`, in the rules' order,
/// read in one transaction of the tenant. A rule whose data cannot be read fails alone.
async fn observe_tenant(
    database: &Database,
    tenant: domain::TenantId,
    rules: &[&DueRule],
    now: OffsetDateTime,
) -> Vec<Result<Vec<Observed>, StoreError>> {
    let begin = || {
        TenantTx::begin(
            &database.app,
            Scope::Job {
                tenant,
                job: "alerts",
            },
        )
    };
    let mut tx: Option<TenantTx> = None;
    let mut health = SourceHealthCache::default();
    let mut observed = Vec::with_capacity(rules.len());
    for rule in rules {
        if tx.is_none() {
            match begin().await {
                Ok(begun) => tx = Some(begun),
                Err(error) => {
                    observed.push(Err(error));
                    continue;
                }
            }
        }
        let Some(open) = tx.as_mut() else { continue };
        let result = observe(open, &mut health, rule, now).await;
        if result.is_err() {
            // The failed statement ended the transaction: the next rule reads in a new one.
            if let Some(failed) = tx.take() {
                let _ = failed.rollback().await;
            }
        }
        observed.push(result);
    }
    if let Some(open) = tx {
        let _ = open.rollback().await;
    }
    observed
}

/// What a tenant's pipeline rules read, read once per round.
#[derive(Default)]
struct SourceHealthCache {
    sources: Option<Vec<store::sources::Source>>,
    last_events: Option<std::collections::HashMap<domain::SourceId, OffsetDateTime>>,
    dead_letters: BTreeMap<i32, BTreeMap<uuid::Uuid, i64>>,
}

/// The series of `rule` as they stand at `now`, read in `tx` (a transaction of the rule's
/// tenant as [`Scope::Job`]); `health` keeps what the tenant's pipeline rules share.
async fn observe(
    tx: &mut TenantTx,
    health: &mut SourceHealthCache,
    rule: &DueRule,
    now: OffsetDateTime,
) -> Result<Vec<Observed>, StoreError> {
    let observed = match &rule.input.spec {
        RuleSpec::Metric {
            key,
            aggregation,
            window_secs,
            comparison,
            threshold,
            site,
            device,
            group_by,
        } => {
            let query = SeriesQuery {
                key: key.clone(),
                from: now - time::Duration::seconds(i64::from(*window_secs)),
                to: now,
                step: Step::Minute,
                aggregation: *aggregation,
                site: site.clone(),
                device: device.clone(),
                group_by: *group_by,
                limit: 50,
            };
            store::analytics::series(tx, &query)
                .await?
                .into_iter()
                .map(|line| {
                    let series = match (group_by, &line.group) {
                        (Some(GroupBy::Site), Some(group)) => format!("site:{group}"),
                        (Some(GroupBy::Device), Some(group)) => format!("device:{group}"),
                        _ => String::new(),
                    };
                    let value = window_value(*aggregation, &line.points);
                    Observed {
                        series,
                        observation: match value {
                            None => Observation::NoData,
                            Some(value) if comparison.holds(value, *threshold) => {
                                Observation::Breaching
                            }
                            Some(_) => Observation::Clear,
                        },
                        value,
                    }
                })
                .collect()
        }
        RuleSpec::Pipeline {
            condition,
            source,
            threshold,
            window_secs,
        } => {
            observe_sources(
                tx,
                health,
                *condition,
                *source,
                threshold.unwrap_or(0.0),
                *window_secs,
                now,
            )
            .await?
        }
    };
    Ok(observed)
}

/// The value of a window from its minutes: each minute's aggregate combined as the whole
/// window's would be (an average weighted by the minutes' reading counts).
pub fn window_value(aggregation: Aggregation, points: &[store::analytics::Point]) -> Option<f64> {
    if points.is_empty() {
        return None;
    }
    let values = points.iter().map(|point| point.value);
    Some(match aggregation {
        Aggregation::Avg => {
            let count: i64 = points.iter().map(|point| point.count).sum();
            if count == 0 {
                return None;
            }
            points
                .iter()
                .map(|point| point.value * point.count as f64)
                .sum::<f64>()
                / count as f64
        }
        Aggregation::Min => values.fold(f64::INFINITY, f64::min),
        Aggregation::Max => values.fold(f64::NEG_INFINITY, f64::max),
        Aggregation::Sum | Aggregation::Count => values.sum(),
        Aggregation::Last => points.last().map(|point| point.value)?,
    })
}

/// How far back a source must have sent events for `no_events` to expect more.
const USUALLY_SENDS: time::Duration = time::Duration::days(1);

async fn observe_sources(
    tx: &mut TenantTx,
    health: &mut SourceHealthCache,
    condition: Condition,
    only: Option<uuid::Uuid>,
    threshold: f64,
    window_secs: Option<i32>,
    now: OffsetDateTime,
) -> Result<Vec<Observed>, StoreError> {
    if health.sources.is_none() {
        health.sources = Some(store::sources::list_sources(tx).await?);
    }
    let sources: Vec<store::sources::Source> = health
        .sources
        .iter()
        .flatten()
        .filter(|source| only.is_none_or(|only| *source.source_id.as_uuid() == only))
        // A revoked, paused or never paired source is not expected to send or report.
        .filter(|source| source.effective_status() == "active")
        .cloned()
        .collect();
    if condition == Condition::NoEvents && health.last_events.is_none() {
        health.last_events = Some(store::sources::last_events(tx).await?);
    }
    let empty_events = Default::default();
    let last_events = health.last_events.as_ref().unwrap_or(&empty_events);
    let window = window_secs.unwrap_or(3_600);
    if condition == Condition::DlqGrowth && !health.dead_letters.contains_key(&window) {
        let since = now - time::Duration::seconds(i64::from(window));
        let counts = store::alerts::dead_letters_since(tx, since).await?;
        health.dead_letters.insert(window, counts);
    }
    let empty_letters = BTreeMap::new();
    let dead_letters = health.dead_letters.get(&window).unwrap_or(&empty_letters);
    let mut observed = Vec::with_capacity(sources.len());
    for source in &sources {
        let heartbeat = source.heartbeat();
        let slot = heartbeat.as_ref().and_then(|beat| beat.slot.clone());
        let minutes_since = |at: OffsetDateTime| (now - at).as_seconds_f64() / 60.0;
        let (value, breaching): (Option<f64>, Option<bool>) = match condition {
            Condition::SourceDisconnected => {
                let value = heartbeat
                    .as_ref()
                    .and_then(|beat| beat.reported_at)
                    .map(minutes_since);
                (value, value.map(|minutes| minutes > threshold))
            }
            Condition::LagAbove => {
                let value = heartbeat.as_ref().and_then(|beat| beat.lag_seconds);
                (value, value.map(|seconds| seconds > threshold))
            }
            Condition::RetainedWalAbove => {
                let value = slot
                    .as_ref()
                    .and_then(|slot| slot.retained_bytes)
                    .map(|bytes| bytes as f64);
                (value, value.map(|bytes| bytes > threshold))
            }
            Condition::SlotAtRisk => match &slot {
                Some(slot) => {
                    let risk = slot.at_risk() || slot.lost();
                    (Some(if risk { 1.0 } else { 0.0 }), Some(risk))
                }
                None => (None, None),
            },
            Condition::DlqGrowth => {
                let added = dead_letters
                    .get(source.source_id.as_uuid())
                    .copied()
                    .unwrap_or(0) as f64;
                (Some(added), Some(added > threshold))
            }
            Condition::NoEvents => match last_events.get(&source.source_id) {
                Some(at) if now - *at <= USUALLY_SENDS => {
                    let minutes = minutes_since(*at);
                    (Some(minutes), Some(minutes > threshold))
                }
                // Nothing within a day: not a source that usually sends.
                _ => (None, None),
            },
            Condition::SlotForecast => {
                let detail = store::sources::source_detail(tx, source.source_id).await?;
                match detail.forecast.kind {
                    store::sources::ForecastKind::Invalidated => (Some(0.0), Some(true)),
                    store::sources::ForecastKind::Invalidation => {
                        let hours = detail.forecast.hours_until_invalidation;
                        (hours, hours.map(|hours| hours < threshold))
                    }
                    store::sources::ForecastKind::Unknown => (None, None),
                    _ => (None, Some(false)),
                }
            }
        };
        observed.push(Observed {
            series: format!("source:{}", source.source_id),
            observation: match breaching {
                None => Observation::NoData,
                Some(true) => Observation::Breaching,
                Some(false) => Observation::Clear,
            },
            value,
        });
    }
    Ok(observed)
}

/// The one notification of `rule` for everything its series announced in a round. The most
/// pressing notice names it: firing over reminder over resolved.
fn notification(
    rule: &DueRule,
    announced: &[(String, Notice, Option<f64>)],
    now: OffsetDateTime,
) -> Notification {
    let notice = [Notice::Firing, Notice::Reminder, Notice::Resolved]
        .into_iter()
        .find(|wanted| announced.iter().any(|(_, notice, _)| notice == wanted))
        .unwrap_or(Notice::Firing);
    let threshold = match &rule.input.spec {
        RuleSpec::Metric { threshold, .. } => Some(*threshold),
        RuleSpec::Pipeline { threshold, .. } => *threshold,
    };
    let alerts: Vec<serde_json::Value> = announced
        .iter()
        .map(|(series, notice, value)| {
            serde_json::json!({
                "series": series,
                "notice": notice.as_str(),
                "value": value,
                "description": describe(&rule.input.description, &rule.input.name, series,
                    *value, threshold),
            })
        })
        .collect();
    let lines: Vec<String> = announced
        .iter()
        .map(|(series, notice, value)| {
            let series = if series.is_empty() {
                String::new()
            } else {
                format!(" ({series})")
            };
            let value = value
                .map(|value| format!(" = {}", number(value)))
                .unwrap_or_default();
            format!("{}{series}{value}", notice.as_str())
        })
        .collect();
    let text = format!(
        "[{}] {} — {}",
        rule.input.severity.as_str(),
        rule.input.name,
        lines.join("; ")
    );
    Notification {
        notice,
        payload: serde_json::json!({
            "notice": notice.as_str(),
            "rule": {
                "id": rule.id,
                "name": rule.input.name,
                "severity": rule.input.severity.as_str(),
                "labels": rule.input.labels,
            },
            "alerts": alerts,
            "text": text,
            "at": now.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
        }),
    }
}

/// A rule's description with `{{rule}}`, `{{series}}`, `{{value}}` and `{{threshold}}`
/// replaced (nothing else is interpreted).
pub fn describe(
    template: &str,
    rule: &str,
    series: &str,
    value: Option<f64>,
    threshold: Option<f64>,
) -> String {
    let shown = |value: Option<f64>| value.map(number).unwrap_or_else(|| "no data".to_owned());
    template
        .replace("{{rule}}", rule)
        .replace("{{series}}", if series.is_empty() { "all" } else { series })
        .replace("{{value}}", &shown(value))
        .replace("{{threshold}}", &shown(threshold))
}

/// A value as people read it: at most three decimals, no trailing zeros.
fn number(value: f64) -> String {
    let text = format!("{value:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Runs rounds every `tick` until `shutdown`: each round takes what is due at that moment.
/// A failed round is tried again at the next tick (nothing of it was committed).
pub async fn run(database: Database, config: EvaluatorConfig, shutdown: impl Future<Output = ()>) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        match evaluate_round(&database, OffsetDateTime::now_utc(), config.batch).await {
            Ok(report) if report.rules as i64 >= config.batch => continue,
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "an alert evaluation round failed; retrying at the next tick")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(config.tick) => {}
            _ = &mut shutdown => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use store::analytics::Point;

    fn point(minute: i64, value: f64, count: i64) -> Point {
        Point {
            at: OffsetDateTime::UNIX_EPOCH + time::Duration::minutes(minute),
            value,
            count,
        }
    }

    #[test]
    fn a_window_combines_its_minutes_as_the_whole_window_would() {
        let points = [point(0, 10.0, 1), point(1, 20.0, 3)];
        assert_eq!(window_value(Aggregation::Avg, &points), Some(17.5));
        assert_eq!(window_value(Aggregation::Min, &points), Some(10.0));
        assert_eq!(window_value(Aggregation::Max, &points), Some(20.0));
        assert_eq!(window_value(Aggregation::Sum, &points), Some(30.0));
        assert_eq!(window_value(Aggregation::Last, &points), Some(20.0));
        assert_eq!(window_value(Aggregation::Avg, &[]), None);
    }

    #[test]
    fn descriptions_replace_only_their_placeholders() {
        assert_eq!(
            describe(
                "{{rule}} on {{series}}: {{value}} > {{threshold}} {{other}}",
                "Hot",
                "device:d1",
                Some(81.25),
                Some(80.0)
            ),
            "Hot on device:d1: 81.25 > 80 {{other}}"
        );
        assert_eq!(
            describe("{{series}} {{value}}", "r", "", None, None),
            "all no data"
        );
    }
}
