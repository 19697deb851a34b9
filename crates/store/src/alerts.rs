//! Alerts (migration 0034, docs/alerts.md): a workspace's rules, the channels their notices go
//! to, the state of each series a rule watches with its timeline, acknowledgements and
//! silences. Everything here runs in the caller's [`TenantTx`]: the database's grants decide
//! who may do what (owners and admins edit rules and channels; operators and above acknowledge
//! and silence; every member reads states), and every change is audited in the same
//! transaction. The evaluator's side is [`crate::service::alerts`].

use std::collections::BTreeMap;

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::analytics::{Aggregation, GroupBy};
use crate::audit::{self, AuditEntry};
use crate::secret_box::SecretBox;
use crate::{StoreError, TenantTx};

/// The purpose a webhook channel's signing secret is sealed under.
pub const CHANNEL_SECRET_PURPOSE: &str = "alert-channel-secret";
/// Labels one rule may carry.
pub const MAX_LABELS: usize = 10;
/// Channels one rule may notify.
pub const MAX_RULE_CHANNELS: usize = 10;

fn invalid(parameter: &'static str, message: impl Into<String>) -> StoreError {
    StoreError::InvalidParameter {
        parameter,
        message: message.into(),
    }
}

/// A text enum's spellings, both ways.
macro_rules! spelled {
    ($name:ident { $($variant:ident => $text:literal),* $(,)? }) => {
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)* _ => None }
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }
    };
}

/// A pipeline-health condition. Its threshold is in the condition's unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// No heartbeat from the source's agent for more than `threshold` minutes.
    SourceDisconnected,
    /// The agent reports changes waiting longer than `threshold` seconds.
    LagAbove,
    /// The replication slot retains more than `threshold` bytes of WAL.
    RetainedWalAbove,
    /// The source would soon invalidate the slot (or did).
    SlotAtRisk,
    /// More than `threshold` dead letters of the source over the rule's window.
    DlqGrowth,
    /// A source that sent events in the last day sent none for more than `threshold` minutes.
    NoEvents,
    /// The slot's retained WAL, at its current growth, reaches the source's limit within
    /// `threshold` hours.
    SlotForecast,
}

spelled!(Condition {
    SourceDisconnected => "source_disconnected",
    LagAbove => "lag_above",
    RetainedWalAbove => "retained_wal_above",
    SlotAtRisk => "slot_at_risk",
    DlqGrowth => "dlq_growth",
    NoEvents => "no_events",
    SlotForecast => "slot_forecast",
});

impl Condition {
    /// The threshold's unit, in words; `None` for a condition without a threshold.
    pub fn unit(self) -> Option<&'static str> {
        match self {
            Condition::SourceDisconnected | Condition::NoEvents => Some("minutes"),
            Condition::LagAbove => Some("seconds"),
            Condition::RetainedWalAbove => Some("bytes"),
            Condition::DlqGrowth => Some("dead letters"),
            Condition::SlotForecast => Some("hours"),
            Condition::SlotAtRisk => None,
        }
    }
}

/// How a metric rule compares its value with its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Above,
    AtLeast,
    Below,
    AtMost,
}

spelled!(Comparison {
    Above => ">",
    AtLeast => ">=",
    Below => "<",
    AtMost => "<=",
});

impl Comparison {
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::Above => value > threshold,
            Comparison::AtLeast => value >= threshold,
            Comparison::Below => value < threshold,
            Comparison::AtMost => value <= threshold,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

spelled!(Severity {
    Info => "info",
    Warning => "warning",
    Critical => "critical",
});

/// What a rule watches.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RuleSpec {
    /// An aggregation of a metric key's readings over the last `window_secs`, compared with a
    /// threshold: of the whole workspace, one site or one device, and either one series or one
    /// per site or device (the busiest 50).
    Metric {
        key: String,
        #[serde(serialize_with = "aggregation_text")]
        aggregation: Aggregation,
        window_secs: i32,
        comparison: Comparison,
        threshold: f64,
        site: Option<String>,
        device: Option<String>,
        #[serde(serialize_with = "group_text")]
        group_by: Option<GroupBy>,
    },
    /// A condition of one source's health, or of every source's (one series each).
    Pipeline {
        condition: Condition,
        source: Option<Uuid>,
        threshold: Option<f64>,
        /// The window of `dlq_growth`.
        window_secs: Option<i32>,
    },
}

fn aggregation_text<S: serde::Serializer>(
    aggregation: &Aggregation,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(aggregation.as_str())
}

fn group_text<S: serde::Serializer>(
    group: &Option<GroupBy>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match group {
        Some(group) => serializer.serialize_str(group.as_str()),
        None => serializer.serialize_none(),
    }
}

/// A rule as created or replaced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleInput {
    pub name: String,
    #[serde(flatten)]
    pub spec: RuleSpec,
    /// Seconds the condition must hold before the rule fires.
    pub for_secs: i32,
    pub severity: Severity,
    pub labels: BTreeMap<String, String>,
    pub channels: Vec<Uuid>,
    /// Sent with each notice; `{{value}}`, `{{threshold}}`, `{{series}}` and `{{rule}}` are
    /// replaced.
    pub description: String,
    pub enabled: bool,
    /// How often the rule is evaluated.
    pub interval_secs: i32,
    /// How often a firing, unacknowledged alert is announced again; 0 never.
    pub remind_every_secs: i32,
    pub flap_window_secs: i32,
    pub flap_limit: i32,
}

impl RuleInput {
    /// A rule named `name` on `spec` with the defaults for everything else.
    pub fn new(name: &str, spec: RuleSpec) -> Self {
        RuleInput {
            name: name.to_owned(),
            spec,
            for_secs: 0,
            severity: Severity::Warning,
            labels: BTreeMap::new(),
            channels: Vec::new(),
            description: String::new(),
            enabled: true,
            interval_secs: 60,
            remind_every_secs: 3_600,
            flap_window_secs: 1_800,
            flap_limit: 6,
        }
    }

    /// Checks everything the database would refuse, naming the parameter as the API spells it.
    pub fn validate(&self) -> Result<(), StoreError> {
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(invalid("name", "a name of 1 to 100 characters"));
        }
        match &self.spec {
            RuleSpec::Metric {
                key,
                window_secs,
                threshold,
                site,
                device,
                ..
            } => {
                if key.is_empty() || key.chars().count() > 200 {
                    return Err(invalid("key", "a metric key of 1 to 200 characters"));
                }
                if !(60..=86_400).contains(window_secs) {
                    return Err(invalid(
                        "window_secs",
                        "between 60 (a minute) and 86400 (a day)",
                    ));
                }
                if !threshold.is_finite() {
                    return Err(invalid("threshold", "a finite number"));
                }
                for (parameter, id) in [("site", site), ("device", device)] {
                    if id
                        .as_ref()
                        .is_some_and(|id| id.is_empty() || id.chars().count() > 200)
                    {
                        return Err(invalid(parameter, "an id of 1 to 200 characters"));
                    }
                }
            }
            RuleSpec::Pipeline {
                condition,
                threshold,
                window_secs,
                ..
            } => {
                match (condition.unit(), threshold) {
                    (Some(unit), None) => {
                        return Err(invalid(
                            "threshold",
                            format!("{} needs a threshold in {unit}", condition.as_str()),
                        ));
                    }
                    (_, Some(threshold)) if !threshold.is_finite() || *threshold < 0.0 => {
                        return Err(invalid("threshold", "a finite number, at least 0"));
                    }
                    _ => {}
                }
                if let Some(window) = window_secs
                    && !(60..=86_400).contains(window)
                {
                    return Err(invalid(
                        "window_secs",
                        "between 60 (a minute) and 86400 (a day)",
                    ));
                }
                if *condition == Condition::DlqGrowth && window_secs.is_none() {
                    return Err(invalid(
                        "window_secs",
                        "dlq_growth counts dead letters over a window: give window_secs",
                    ));
                }
            }
        }
        if !(0..=86_400).contains(&self.for_secs) {
            return Err(invalid("for_secs", "between 0 and 86400"));
        }
        if self.labels.len() > MAX_LABELS {
            return Err(invalid("labels", format!("at most {MAX_LABELS} labels")));
        }
        for (key, value) in &self.labels {
            let key_ok = !key.is_empty()
                && key.len() <= 100
                && key
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || b"_-.".contains(&byte));
            if !key_ok || value.chars().count() > 200 {
                return Err(invalid(
                    "labels",
                    "label names of 1 to 100 letters, digits, '_', '-' or '.', values of at \
                     most 200 characters",
                ));
            }
        }
        if self.channels.len() > MAX_RULE_CHANNELS {
            return Err(invalid(
                "channels",
                format!("at most {MAX_RULE_CHANNELS} channels"),
            ));
        }
        if self.description.chars().count() > 2_000 {
            return Err(invalid("description", "at most 2000 characters"));
        }
        if !(10..=3_600).contains(&self.interval_secs) {
            return Err(invalid("interval_secs", "between 10 and 3600"));
        }
        if self.remind_every_secs != 0 && !(300..=604_800).contains(&self.remind_every_secs) {
            return Err(invalid(
                "remind_every_secs",
                "0 (never), or between 300 and 604800 (a week)",
            ));
        }
        if !(60..=86_400).contains(&self.flap_window_secs) {
            return Err(invalid("flap_window_secs", "between 60 and 86400"));
        }
        if !(2..=100).contains(&self.flap_limit) {
            return Err(invalid("flap_limit", "between 2 and 100"));
        }
        Ok(())
    }
}

/// A stored rule, with the worst phase of its series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rule {
    pub id: Uuid,
    #[serde(flatten)]
    pub input: RuleInput,
    /// `firing`, `pending` or `ok`: the worst of its series (`ok` before the first evaluation).
    pub state: &'static str,
    /// Series firing now.
    pub firing: i64,
    /// A silence covers the rule now (of the rule, or of one of its labels).
    pub silenced: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

pub(crate) type RuleRow = (
    Uuid,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<i32>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<Uuid>,
    Option<String>,
    Option<f64>,
    i32,
    String,
    serde_json::Value,
    Vec<Uuid>,
    String,
    bool,
    i32,
    i32,
    i32,
    i32,
    OffsetDateTime,
    OffsetDateTime,
);

/// The columns a [`RuleRow`] reads, from `control.alert_rules r`, as a literal for `concat!`.
macro_rules! rule_columns {
    () => {
        "r.rule_id, r.name, r.kind, r.metric_key, r.aggregation, r.window_secs, r.site_id, \
         r.device_id, r.group_by, r.condition, r.source_id, r.comparison, r.threshold, \
         r.for_secs, r.severity, r.labels, r.channel_ids, r.description, r.enabled, \
         r.interval_secs, r.remind_every_secs, r.flap_window_secs, r.flap_limit, r.created_at, \
         r.updated_at"
    };
}

/// The columns a [`RuleRow`] reads, from `control.alert_rules r`.
pub(crate) const RULE_COLUMNS: &str = rule_columns!();

pub(crate) fn rule_input(row: &RuleRow) -> Result<RuleInput, StoreError> {
    let corrupt = || StoreError::Invalid("a stored alert rule is not valid".into());
    let spec = match row.2.as_str() {
        "metric" => RuleSpec::Metric {
            key: row.3.clone().ok_or_else(corrupt)?,
            aggregation: row
                .4
                .as_deref()
                .and_then(Aggregation::parse)
                .ok_or_else(corrupt)?,
            window_secs: row.5.ok_or_else(corrupt)?,
            comparison: row
                .11
                .as_deref()
                .and_then(Comparison::parse)
                .ok_or_else(corrupt)?,
            threshold: row.12.ok_or_else(corrupt)?,
            site: row.6.clone(),
            device: row.7.clone(),
            group_by: match row.8.as_deref() {
                None => None,
                Some(text) => Some(GroupBy::parse(text).ok_or_else(corrupt)?),
            },
        },
        "pipeline" => RuleSpec::Pipeline {
            condition: row
                .9
                .as_deref()
                .and_then(Condition::parse)
                .ok_or_else(corrupt)?,
            source: row.10,
            threshold: row.12,
            window_secs: row.5,
        },
        _ => return Err(corrupt()),
    };
    let labels: BTreeMap<String, String> =
        serde_json::from_value(row.15.clone()).map_err(|_| corrupt())?;
    Ok(RuleInput {
        name: row.1.clone(),
        spec,
        for_secs: row.13,
        severity: Severity::parse(&row.14).ok_or_else(corrupt)?,
        labels,
        channels: row.16.clone(),
        description: row.17.clone(),
        enabled: row.18,
        interval_secs: row.19,
        remind_every_secs: row.20,
        flap_window_secs: row.21,
        flap_limit: row.22,
    })
}

/// The column values of `input`, in the order of [`WRITE_RULE`]'s `$2`..`$22`.
fn bind_rule<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    input: &'q RuleInput,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let labels = serde_json::to_value(&input.labels).unwrap_or_default();
    let query = query.bind(input.name.trim());
    let query = match &input.spec {
        RuleSpec::Metric {
            key,
            aggregation,
            window_secs,
            comparison,
            threshold,
            site,
            device,
            group_by,
        } => query
            .bind("metric")
            .bind(key.as_str())
            .bind(aggregation.as_str())
            .bind(*window_secs)
            .bind(site.as_deref())
            .bind(device.as_deref())
            .bind(group_by.map(GroupBy::as_str))
            .bind(None::<&str>)
            .bind(None::<Uuid>)
            .bind(comparison.as_str())
            .bind(*threshold),
        RuleSpec::Pipeline {
            condition,
            source,
            threshold,
            window_secs,
        } => query
            .bind("pipeline")
            .bind(None::<&str>)
            .bind(None::<&str>)
            .bind(*window_secs)
            .bind(None::<&str>)
            .bind(None::<&str>)
            .bind(None::<&str>)
            .bind(condition.as_str())
            .bind(*source)
            .bind(None::<&str>)
            .bind(*threshold),
    };
    query
        .bind(input.for_secs)
        .bind(input.severity.as_str())
        .bind(labels)
        .bind(input.channels.clone())
        .bind(input.description.as_str())
        .bind(input.enabled)
        .bind(input.interval_secs)
        .bind(input.remind_every_secs)
        .bind(input.flap_window_secs)
        .bind(input.flap_limit)
}

/// Refuses channels that are not the workspace's.
async fn check_channels(tx: &mut TenantTx, channels: &[Uuid]) -> Result<(), StoreError> {
    if channels.is_empty() {
        return Ok(());
    }
    let known: i64 = sqlx::query_scalar(
        "select count(*) from control.alert_channels where channel_id = any($1)",
    )
    .bind(channels)
    .fetch_one(tx.connection())
    .await?;
    let mut distinct = channels.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    if known != distinct.len() as i64 || distinct.len() != channels.len() {
        return Err(invalid(
            "channels",
            "every channel must be one of this workspace's, each once",
        ));
    }
    Ok(())
}

/// Refuses a source that is not the workspace's.
async fn check_source(tx: &mut TenantTx, spec: &RuleSpec) -> Result<(), StoreError> {
    if let RuleSpec::Pipeline {
        source: Some(source),
        ..
    } = spec
    {
        let known: bool = sqlx::query_scalar(
            "select exists (select 1 from control.sources where source_id = $1)",
        )
        .bind(source)
        .fetch_one(tx.connection())
        .await?;
        if !known {
            return Err(invalid("source", "not a source of this workspace"));
        }
    }
    Ok(())
}

/// The constraint that refuses a second rule or channel of the same name.
fn name_taken(error: sqlx::Error, what: &'static str) -> StoreError {
    let error = StoreError::from(error);
    if error.sqlstate().as_deref() == Some("23505") {
        StoreError::AlreadyExists(what)
    } else {
        error
    }
}

/// Creates a rule; audited. The rule is evaluated at the next round.
pub async fn create_rule(tx: &mut TenantTx, input: &RuleInput) -> Result<Uuid, StoreError> {
    let tenant = tx
        .tenant()
        .ok_or(StoreError::Forbidden("an alert rule needs a tenant scope"))?;
    input.validate()?;
    check_channels(tx, &input.channels).await?;
    check_source(tx, &input.spec).await?;
    let id = Uuid::new_v4();
    bind_rule(
        sqlx::query(
            "insert into control.alert_rules (tenant_id, rule_id, name, kind, metric_key, \
             aggregation, window_secs, site_id, device_id, group_by, condition, source_id, \
             comparison, threshold, for_secs, severity, labels, channel_ids, description, enabled, \
             interval_secs, remind_every_secs, flap_window_secs, flap_limit) \
             values ($23, $24, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
             $16, $17, $18, $19, $20, $21, $22)",
        ),
        input,
    )
    .bind(tenant.as_uuid())
    .bind(id)
    .execute(tx.connection())
    .await
    .map_err(|error| name_taken(error, "alert rule"))?;
    audit::append(
        tx,
        AuditEntry::new("alert_rule.create", id.to_string()).details(serde_json::json!({
            "name": input.name.trim(),
            "kind": kind_of(&input.spec),
            "channels": input.channels.len(),
        })),
    )
    .await?;
    Ok(id)
}

fn kind_of(spec: &RuleSpec) -> &'static str {
    match spec {
        RuleSpec::Metric { .. } => "metric",
        RuleSpec::Pipeline { .. } => "pipeline",
    }
}

/// Replaces a rule; audited. Its series keep their state when it still watches them (a changed
/// threshold applies from the next evaluation, which comes at once).
pub async fn update_rule(tx: &mut TenantTx, id: Uuid, input: &RuleInput) -> Result<(), StoreError> {
    input.validate()?;
    check_channels(tx, &input.channels).await?;
    check_source(tx, &input.spec).await?;
    let updated = bind_rule(
        sqlx::query(
            "update control.alert_rules set name = $1, kind = $2, metric_key = $3, \
             aggregation = $4, window_secs = $5, site_id = $6, device_id = $7, group_by = $8, \
             condition = $9, source_id = $10, comparison = $11, threshold = $12, for_secs = $13, \
             severity = $14, labels = $15, channel_ids = $16, description = $17, enabled = $18, \
             interval_secs = $19, remind_every_secs = $20, flap_window_secs = $21, \
             flap_limit = $22, next_evaluation_at = now(), updated_at = now() \
             where rule_id = $23",
        ),
        input,
    )
    .bind(id)
    .execute(tx.connection())
    .await
    .map_err(|error| name_taken(error, "alert rule"))?;
    if updated.rows_affected() == 0 {
        return Err(StoreError::NotFound("alert rule"));
    }
    audit::append(
        tx,
        AuditEntry::new("alert_rule.update", id.to_string()).details(serde_json::json!({
            "name": input.name.trim(),
            "kind": kind_of(&input.spec),
            "enabled": input.enabled,
        })),
    )
    .await?;
    Ok(())
}

/// Deletes a rule with its states and timeline; audited.
pub async fn delete_rule(tx: &mut TenantTx, id: Uuid) -> Result<(), StoreError> {
    let deleted = sqlx::query("delete from control.alert_rules where rule_id = $1")
        .bind(id)
        .execute(tx.connection())
        .await?;
    if deleted.rows_affected() == 0 {
        return Err(StoreError::NotFound("alert rule"));
    }
    audit::append(tx, AuditEntry::new("alert_rule.delete", id.to_string())).await?;
    Ok(())
}

/// The statement of [`list_rules`] (and, with `where r.rule_id = $1`, of [`get_rule`]): each rule
/// with the worst phase of its series and whether a silence covers it now.
const RULES_STATEMENT: &str = concat!(
    "select ",
    rule_columns!(),
    ", \
     coalesce((select max(case s.phase when 'firing' then 2 when 'pending' then 1 else 0 end) \
               from control.alert_states s where s.rule_id = r.rule_id), 0), \
     (select count(*) from control.alert_states s \
      where s.rule_id = r.rule_id and s.phase = 'firing'), \
     exists (select 1 from control.alert_silences x where x.ended_at is null \
             and x.starts_at <= now() and x.ends_at > now() \
             and (x.rule_id = r.rule_id or r.labels ->> x.label_key = x.label_value)) \
     from control.alert_rules r"
);

/// The [`RULE_COLUMNS`] of a row, in their order from its first column.
pub(crate) fn rule_row(row: &sqlx::postgres::PgRow) -> Result<RuleRow, StoreError> {
    use sqlx::Row;
    Ok((
        row.try_get(0)?,
        row.try_get(1)?,
        row.try_get(2)?,
        row.try_get(3)?,
        row.try_get(4)?,
        row.try_get(5)?,
        row.try_get(6)?,
        row.try_get(7)?,
        row.try_get(8)?,
        row.try_get(9)?,
        row.try_get(10)?,
        row.try_get(11)?,
        row.try_get(12)?,
        row.try_get(13)?,
        row.try_get(14)?,
        row.try_get(15)?,
        row.try_get(16)?,
        row.try_get(17)?,
        row.try_get(18)?,
        row.try_get(19)?,
        row.try_get(20)?,
        row.try_get(21)?,
        row.try_get(22)?,
        row.try_get(23)?,
        row.try_get(24)?,
    ))
}

fn rule_of(row: sqlx::postgres::PgRow) -> Result<Rule, StoreError> {
    use sqlx::Row;
    let base = rule_row(&row)?;
    let worst: i32 = row.try_get(25)?;
    Ok(Rule {
        id: base.0,
        input: rule_input(&base)?,
        state: match worst {
            2 => "firing",
            1 => "pending",
            _ => "ok",
        },
        firing: row.try_get(26)?,
        silenced: row.try_get(27)?,
        created_at: base.23,
        updated_at: base.24,
    })
}

/// The workspace's rules: firing first, then pending, then by name.
pub async fn list_rules(tx: &mut TenantTx) -> Result<Vec<Rule>, StoreError> {
    let rows = sqlx::query(RULES_STATEMENT)
        .fetch_all(tx.connection())
        .await?;
    let mut rules = rows
        .into_iter()
        .map(rule_of)
        .collect::<Result<Vec<_>, _>>()?;
    let rank = |state: &str| match state {
        "firing" => 0,
        "pending" => 1,
        _ => 2,
    };
    rules.sort_by(|a, b| {
        rank(a.state)
            .cmp(&rank(b.state))
            .then_with(|| a.input.name.cmp(&b.input.name))
    });
    Ok(rules)
}

pub async fn get_rule(tx: &mut TenantTx, id: Uuid) -> Result<Rule, StoreError> {
    let statement = format!("{RULES_STATEMENT} where r.rule_id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(statement))
        .bind(id)
        .fetch_optional(tx.connection())
        .await?
        .ok_or(StoreError::NotFound("alert rule"))?;
    rule_of(row)
}

/// One series of a rule as the evaluator left it: an alert when it is pending or firing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub rule: Uuid,
    pub rule_name: String,
    pub severity: Severity,
    /// `''` for a rule's only series; `site:<id>`, `device:<id>` or `source:<id>` otherwise.
    pub series: String,
    pub phase: String,
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    pub flapping: bool,
    pub value: Option<f64>,
    #[serde(with = "time::serde::rfc3339")]
    pub evaluated_at: OffsetDateTime,
    pub acked_by: Option<Uuid>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub acked_at: Option<OffsetDateTime>,
    /// A silence covers it now.
    pub silenced: bool,
}

const ALERT_COLUMNS: &str = "s.rule_id, r.name, r.severity, s.series, s.phase, s.since, \
     s.flapping, s.last_value, s.evaluated_at, s.acked_by, s.acked_at, \
     exists (select 1 from control.alert_silences x where x.ended_at is null \
             and x.starts_at <= now() and x.ends_at > now() \
             and (x.rule_id = r.rule_id or r.labels ->> x.label_key = x.label_value))";

type AlertRow = (
    Uuid,
    String,
    String,
    String,
    String,
    OffsetDateTime,
    bool,
    Option<f64>,
    OffsetDateTime,
    Option<Uuid>,
    Option<OffsetDateTime>,
    bool,
);

fn alert_of(row: AlertRow) -> Result<Alert, StoreError> {
    Ok(Alert {
        rule: row.0,
        rule_name: row.1,
        severity: Severity::parse(&row.2)
            .ok_or_else(|| StoreError::Invalid("a stored severity".into()))?,
        series: row.3,
        phase: row.4,
        since: row.5,
        flapping: row.6,
        value: row.7,
        evaluated_at: row.8,
        acked_by: row.9,
        acked_at: row.10,
        silenced: row.11,
    })
}

/// The workspace's alerts: every series firing or pending, firing first, then the most severe,
/// then the oldest.
pub async fn list_alerts(tx: &mut TenantTx) -> Result<Vec<Alert>, StoreError> {
    let statement = format!(
        "select {ALERT_COLUMNS} from control.alert_states s \
         join control.alert_rules r on r.rule_id = s.rule_id \
         where s.phase in ('firing', 'pending') \
         order by s.phase = 'firing' desc, \
                  case r.severity when 'critical' then 0 when 'warning' then 1 else 2 end, \
                  s.since, s.rule_id, s.series"
    );
    let rows: Vec<AlertRow> = sqlx::query_as(sqlx::AssertSqlSafe(statement))
        .fetch_all(tx.connection())
        .await?;
    rows.into_iter().map(alert_of).collect()
}

/// Every series of one rule, in series order.
pub async fn rule_series(tx: &mut TenantTx, rule: Uuid) -> Result<Vec<Alert>, StoreError> {
    let statement = format!(
        "select {ALERT_COLUMNS} from control.alert_states s \
         join control.alert_rules r on r.rule_id = s.rule_id \
         where s.rule_id = $1 order by s.series"
    );
    let rows: Vec<AlertRow> = sqlx::query_as(sqlx::AssertSqlSafe(statement))
        .bind(rule)
        .fetch_all(tx.connection())
        .await?;
    rows.into_iter().map(alert_of).collect()
}

/// One entry of a series' timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineEntry {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub series: String,
    pub kind: String,
    pub value: Option<f64>,
    pub detail: String,
    pub actor: Option<Uuid>,
}

/// The newest `limit` entries of a rule's timeline (of one series when given), oldest first.
pub async fn timeline(
    tx: &mut TenantTx,
    rule: Uuid,
    series: Option<&str>,
    limit: i64,
) -> Result<Vec<TimelineEntry>, StoreError> {
    type Row = (
        OffsetDateTime,
        String,
        String,
        Option<f64>,
        String,
        Option<Uuid>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "select at, series, kind, value, detail, actor from ( \
                 select at, series, kind, value, detail, actor, event_id \
                 from control.alert_events \
                 where rule_id = $1 and ($2::text is null or series = $2) \
                 order by event_id desc limit $3) t \
             order by event_id",
    )
    .bind(rule)
    .bind(series)
    .bind(limit.clamp(1, 1_000))
    .fetch_all(tx.connection())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(at, series, kind, value, detail, actor)| TimelineEntry {
            at,
            series,
            kind,
            value,
            detail,
            actor,
        })
        .collect())
}

/// Acknowledges a firing series: no reminders until it resolves; audited, and on its timeline.
pub async fn acknowledge(tx: &mut TenantTx, rule: Uuid, series: &str) -> Result<(), StoreError> {
    let tenant = tx
        .tenant()
        .ok_or(StoreError::Forbidden("an alert needs a tenant scope"))?;
    let user = tx.actor_user();
    let updated = sqlx::query(
        "update control.alert_states set acked_by = $3, acked_at = now() \
         where rule_id = $1 and series = $2 and phase = 'firing'",
    )
    .bind(rule)
    .bind(series)
    .bind(user.map(|user| *user.as_uuid()))
    .execute(tx.connection())
    .await?;
    if updated.rows_affected() == 0 {
        return Err(StoreError::NotFound("firing alert"));
    }
    sqlx::query(
        "insert into control.alert_events (tenant_id, rule_id, series, kind, actor) \
         values ($1, $2, $3, 'acked', $4)",
    )
    .bind(tenant.as_uuid())
    .bind(rule)
    .bind(series)
    .bind(user.map(|user| *user.as_uuid()))
    .execute(tx.connection())
    .await?;
    audit::append(
        tx,
        AuditEntry::new("alert.acknowledge", rule.to_string())
            .details(serde_json::json!({ "series": series })),
    )
    .await?;
    Ok(())
}

/// What a silence covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SilenceMatch {
    Rule(Uuid),
    Label { key: String, value: String },
}

/// A silence, active or past.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Silence {
    pub id: Uuid,
    #[serde(rename = "match")]
    pub matches: SilenceMatch,
    #[serde(with = "time::serde::rfc3339")]
    pub starts_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub ends_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub ended_at: Option<OffsetDateTime>,
    pub reason: String,
    pub created_by: Option<Uuid>,
    pub active: bool,
}

/// The longest silence.
pub const MAX_SILENCE_SECS: i64 = 30 * 86_400;

/// Silences a rule or a label match for `duration_secs` from now, with a reason; audited, and on
/// the timeline of a silenced rule.
pub async fn silence(
    tx: &mut TenantTx,
    matches: &SilenceMatch,
    duration_secs: i64,
    reason: &str,
) -> Result<Uuid, StoreError> {
    let tenant = tx
        .tenant()
        .ok_or(StoreError::Forbidden("a silence needs a tenant scope"))?;
    if !(60..=MAX_SILENCE_SECS).contains(&duration_secs) {
        return Err(invalid(
            "duration_secs",
            format!("between 60 and {MAX_SILENCE_SECS} (30 days)"),
        ));
    }
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(invalid("reason", "a reason of 1 to 500 characters"));
    }
    let (rule, label_key, label_value) = match matches {
        SilenceMatch::Rule(rule) => {
            let known: bool = sqlx::query_scalar(
                "select exists (select 1 from control.alert_rules where rule_id = $1)",
            )
            .bind(rule)
            .fetch_one(tx.connection())
            .await?;
            if !known {
                return Err(StoreError::NotFound("alert rule"));
            }
            (Some(*rule), None, None)
        }
        SilenceMatch::Label { key, value } => {
            if key.is_empty() || key.chars().count() > 100 || value.chars().count() > 200 {
                return Err(invalid(
                    "label",
                    "a label name of 1 to 100 characters and a value of at most 200",
                ));
            }
            (None, Some(key.as_str()), Some(value.as_str()))
        }
    };
    let user = tx.actor_user().map(|user| *user.as_uuid());
    let id: Uuid = sqlx::query_scalar(
        "insert into control.alert_silences (tenant_id, rule_id, label_key, label_value, \
         ends_at, reason, created_by) \
         values ($1, $2, $3, $4, now() + make_interval(secs => $5), $6, $7) \
         returning silence_id",
    )
    .bind(tenant.as_uuid())
    .bind(rule)
    .bind(label_key)
    .bind(label_value)
    .bind(duration_secs as f64)
    .bind(reason)
    .bind(user)
    .fetch_one(tx.connection())
    .await?;
    if let Some(rule) = rule {
        sqlx::query(
            "insert into control.alert_events (tenant_id, rule_id, series, kind, detail, actor) \
             values ($1, $2, '', 'silenced', $3, $4)",
        )
        .bind(tenant.as_uuid())
        .bind(rule)
        .bind(reason)
        .bind(user)
        .execute(tx.connection())
        .await?;
    }
    audit::append(
        tx,
        AuditEntry::new("alert.silence", id.to_string()).details(serde_json::json!({
            "rule": rule,
            "label": label_key,
            "duration_secs": duration_secs,
        })),
    )
    .await?;
    Ok(id)
}

/// Ends a silence now; audited, and on the timeline of a silenced rule.
pub async fn unsilence(tx: &mut TenantTx, id: Uuid) -> Result<(), StoreError> {
    let tenant = tx
        .tenant()
        .ok_or(StoreError::Forbidden("a silence needs a tenant scope"))?;
    let rule: Option<Option<Uuid>> = sqlx::query_scalar(
        "update control.alert_silences set ended_at = now() \
         where silence_id = $1 and ended_at is null and ends_at > now() returning rule_id",
    )
    .bind(id)
    .fetch_optional(tx.connection())
    .await?;
    let Some(rule) = rule else {
        return Err(StoreError::NotFound("active silence"));
    };
    if let Some(rule) = rule {
        sqlx::query(
            "insert into control.alert_events (tenant_id, rule_id, series, kind, actor) \
             values ($1, $2, '', 'unsilenced', $3)",
        )
        .bind(tenant.as_uuid())
        .bind(rule)
        .bind(tx.actor_user().map(|user| *user.as_uuid()))
        .execute(tx.connection())
        .await?;
    }
    audit::append(tx, AuditEntry::new("alert.unsilence", id.to_string())).await?;
    Ok(())
}

/// The workspace's silences: active ones first, then the last 50 past.
pub async fn list_silences(tx: &mut TenantTx) -> Result<Vec<Silence>, StoreError> {
    type Row = (
        Uuid,
        Option<Uuid>,
        Option<String>,
        Option<String>,
        OffsetDateTime,
        OffsetDateTime,
        Option<OffsetDateTime>,
        String,
        Option<Uuid>,
        bool,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "select silence_id, rule_id, label_key, label_value, starts_at, ends_at, ended_at, \
         reason, created_by, \
         (ended_at is null and starts_at <= now() and ends_at > now()) as active \
         from control.alert_silences \
         order by (ended_at is null and ends_at > now()) desc, created_at desc limit 100",
    )
    .fetch_all(tx.connection())
    .await?;
    rows.into_iter()
        .map(|row| {
            let matches = match (row.1, row.2, row.3) {
                (Some(rule), _, _) => SilenceMatch::Rule(rule),
                (None, Some(key), Some(value)) => SilenceMatch::Label { key, value },
                _ => return Err(StoreError::Invalid("a stored silence".into())),
            };
            Ok(Silence {
                id: row.0,
                matches,
                starts_at: row.4,
                ends_at: row.5,
                ended_at: row.6,
                reason: row.7,
                created_by: row.8,
                active: row.9,
            })
        })
        .collect()
}

/// How a channel delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    /// A JSON POST signed with HMAC-SHA256 of the channel's secret.
    Webhook,
    /// A Slack-compatible incoming webhook (`{"text": ...}`); its URL is its credential.
    Slack,
    /// Mail through the platform's mail sender.
    Email,
}

spelled!(ChannelKind {
    Webhook => "webhook",
    Slack => "slack",
    Email => "email",
});

/// A channel as its managers see it. `target` is left out for other roles (the database does
/// not let them read it); a Slack URL, a credential, is shown cut short.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Channel {
    pub id: Uuid,
    pub name: String,
    pub kind: ChannelKind,
    pub target: Option<String>,
    pub last_error: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_error_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_delivered_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A URL shown without what can act as a credential: scheme, host and the path's first part.
pub fn shown_target(kind: ChannelKind, target: &str) -> String {
    match kind {
        ChannelKind::Email => target.to_owned(),
        ChannelKind::Webhook | ChannelKind::Slack => match url::Url::parse(target) {
            Ok(url) => {
                let first = url
                    .path_segments()
                    .and_then(|mut segments| segments.next())
                    .unwrap_or_default();
                let more = url.path().len() > first.len() + 1 || url.query().is_some();
                format!(
                    "{}://{}/{}{}",
                    url.scheme(),
                    url.host_str().unwrap_or_default(),
                    first,
                    if more { "/…" } else { "" }
                )
            }
            Err(_) => "…".to_owned(),
        },
    }
}

/// A channel being created: a webhook gets a signing secret, shown once.
#[derive(Debug, Clone)]
pub struct CreatedChannel {
    pub id: Uuid,
    /// The webhook's signing secret (`whsec_…`), shown once; `None` for other kinds.
    pub secret: Option<String>,
}

/// Checks a channel's target for its kind. URL safety (addresses, redirects) is the outbound
/// client's, at delivery; this refuses what can never be delivered to.
pub fn check_target(kind: ChannelKind, target: &str) -> Result<(), StoreError> {
    let target = target.trim();
    if target.len() < 3 || target.len() > 2_000 {
        return Err(invalid("target", "1 to 2000 characters"));
    }
    match kind {
        ChannelKind::Email => domain::Email::parse(target)
            .map(|_| ())
            .map_err(|_| invalid("target", "an email address")),
        ChannelKind::Webhook | ChannelKind::Slack => {
            let url = url::Url::parse(target).map_err(|_| invalid("target", "an http(s) URL"))?;
            if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
                return Err(invalid("target", "an http(s) URL with a host"));
            }
            if !url.username().is_empty() || url.password().is_some() {
                return Err(invalid(
                    "target",
                    "no credentials in the URL: a webhook is signed with its own secret",
                ));
            }
            Ok(())
        }
    }
}

/// Creates a channel; audited (its target is not: a Slack URL is a credential).
pub async fn create_channel(
    tx: &mut TenantTx,
    secrets: &SecretBox,
    name: &str,
    kind: ChannelKind,
    target: &str,
) -> Result<CreatedChannel, StoreError> {
    let tenant = tx
        .tenant()
        .ok_or(StoreError::Forbidden("a channel needs a tenant scope"))?;
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(invalid("name", "a name of 1 to 100 characters"));
    }
    check_target(kind, target)?;
    let id = Uuid::new_v4();
    let secret =
        (kind == ChannelKind::Webhook).then(|| format!("whsec_{}", crate::random_token(32)));
    let sealed = secret
        .as_ref()
        .map(|secret| secrets.seal_bound(secret.as_bytes(), id.as_bytes()));
    sqlx::query(
        "insert into control.alert_channels (tenant_id, channel_id, name, kind, target, \
         secret_ciphertext, secret_nonce) values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(tenant.as_uuid())
    .bind(id)
    .bind(name)
    .bind(kind.as_str())
    .bind(target.trim())
    .bind(sealed.as_ref().map(|(ciphertext, _)| ciphertext.clone()))
    .bind(sealed.as_ref().map(|(_, nonce)| nonce.to_vec()))
    .execute(tx.connection())
    .await
    .map_err(|error| name_taken(error, "alert channel"))?;
    audit::append(
        tx,
        AuditEntry::new("alert_channel.create", id.to_string())
            .details(serde_json::json!({ "name": name, "kind": kind.as_str() })),
    )
    .await?;
    Ok(CreatedChannel { id, secret })
}

/// Deletes a channel and takes it off every rule; audited.
pub async fn delete_channel(tx: &mut TenantTx, id: Uuid) -> Result<(), StoreError> {
    let deleted = sqlx::query("delete from control.alert_channels where channel_id = $1")
        .bind(id)
        .execute(tx.connection())
        .await?;
    if deleted.rows_affected() == 0 {
        return Err(StoreError::NotFound("alert channel"));
    }
    sqlx::query(
        "update control.alert_rules set channel_ids = array_remove(channel_ids, $1), \
         updated_at = now() where $1 = any(channel_ids)",
    )
    .bind(id)
    .execute(tx.connection())
    .await?;
    audit::append(tx, AuditEntry::new("alert_channel.delete", id.to_string())).await?;
    Ok(())
}

/// The workspace's channels by name; with their (shortened) targets when `with_targets`
/// (managers only: other roles may not read the column).
pub async fn list_channels(
    tx: &mut TenantTx,
    with_targets: bool,
) -> Result<Vec<Channel>, StoreError> {
    type Row = (
        Uuid,
        String,
        String,
        Option<String>,
        Option<String>,
        Option<OffsetDateTime>,
        Option<OffsetDateTime>,
        OffsetDateTime,
    );
    let statement = if with_targets {
        "select channel_id, name, kind, target, last_error, last_error_at, last_delivered_at, \
         created_at from control.alert_channels order by name"
    } else {
        "select channel_id, name, kind, null::text, last_error, last_error_at, \
         last_delivered_at, created_at from control.alert_channels order by name"
    };
    let rows: Vec<Row> = sqlx::query_as(statement).fetch_all(tx.connection()).await?;
    rows.into_iter()
        .map(|row| {
            let kind = ChannelKind::parse(&row.2)
                .ok_or_else(|| StoreError::Invalid("a stored channel kind".into()))?;
            Ok(Channel {
                id: row.0,
                name: row.1,
                kind,
                target: row.3.map(|target| shown_target(kind, &target)),
                last_error: row.4,
                last_error_at: row.5,
                last_delivered_at: row.6,
                created_at: row.7,
            })
        })
        .collect()
}

/// Queues a test notice to a channel (delivered like any other, so its result shows as the
/// channel's last delivery or error); audited.
pub async fn send_test(tx: &mut TenantTx, channel: Uuid) -> Result<Uuid, StoreError> {
    let tenant = tx
        .tenant()
        .ok_or(StoreError::Forbidden("a channel needs a tenant scope"))?;
    let id: Option<Uuid> = sqlx::query_scalar(
        "insert into pipeline.alert_outbox (tenant_id, channel_id, notice, payload) \
         select $1, channel_id, 'test', jsonb_build_object('notice', 'test', \
             'text', 'A test notice from Tributary: this channel works.') \
         from control.alert_channels where channel_id = $2 returning notification_id",
    )
    .bind(tenant.as_uuid())
    .bind(channel)
    .fetch_optional(tx.connection())
    .await?;
    let id = id.ok_or(StoreError::NotFound("alert channel"))?;
    audit::append(
        tx,
        AuditEntry::new("alert_channel.test", channel.to_string()),
    )
    .await?;
    Ok(id)
}

/// A notification leased for delivery.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub tenant: domain::TenantId,
    pub id: Uuid,
    pub rule: Option<Uuid>,
    pub notice: String,
    pub payload: serde_json::Value,
    /// Attempts including this one.
    pub attempts: i32,
    pub channel: Uuid,
    pub channel_name: String,
    pub kind: String,
    pub target: String,
    /// The webhook secret, sealed (ciphertext, nonce), bound to the channel id.
    pub sealed_secret: Option<(Vec<u8>, Vec<u8>)>,
    /// A report run's notice: the run, and its file (export store key and size) while it can
    /// still be downloaded.
    pub run: Option<Uuid>,
    pub file: Option<(String, i64)>,
}

/// The delivery outbox as a deliverer uses it: lease what is due, record each outcome. The
/// process that runs the deliverer provides it on the service handle
/// ([`crate::service::alerts::outbox`]); the deliverer itself never holds that handle.
pub trait Outbox: Send + Sync {
    /// Leases up to `limit` notifications due at `now` for `lease`.
    fn claim(
        &self,
        now: OffsetDateTime,
        lease: time::Duration,
        limit: i64,
    ) -> futures_util::future::BoxFuture<'_, Result<Vec<Delivery>, StoreError>>;

    /// Records a delivery's outcome; a failure is tried again at `retry_at`, or given up.
    fn finish<'a>(
        &'a self,
        delivery: &'a Delivery,
        outcome: Result<(), &'a str>,
        retry_at: Option<OffsetDateTime>,
    ) -> futures_util::future::BoxFuture<'a, Result<(), StoreError>>;
}

/// Dead letters added since `since`, per source (for `dlq_growth` rules).
pub async fn dead_letters_since(
    tx: &mut TenantTx,
    since: OffsetDateTime,
) -> Result<BTreeMap<Uuid, i64>, StoreError> {
    let rows: Vec<(Uuid, i64)> = sqlx::query_as(
        "select source_id, count(*) from pipeline.dlq where created_at > $1 group by source_id",
    )
    .bind(since)
    .fetch_all(tx.connection())
    .await?;
    Ok(rows.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric() -> RuleInput {
        RuleInput::new(
            "Hot",
            RuleSpec::Metric {
                key: "temperature_c".into(),
                aggregation: Aggregation::Avg,
                window_secs: 300,
                comparison: Comparison::Above,
                threshold: 80.0,
                site: None,
                device: None,
                group_by: None,
            },
        )
    }

    #[test]
    fn validation_names_the_parameter() {
        assert!(metric().validate().is_ok());
        let cases: Vec<(RuleInput, &str)> = vec![
            (
                RuleInput {
                    name: " ".into(),
                    ..metric()
                },
                "name",
            ),
            (
                RuleInput {
                    for_secs: -1,
                    ..metric()
                },
                "for_secs",
            ),
            (
                RuleInput {
                    interval_secs: 5,
                    ..metric()
                },
                "interval_secs",
            ),
            (
                RuleInput {
                    remind_every_secs: 60,
                    ..metric()
                },
                "remind_every_secs",
            ),
            (
                RuleInput {
                    labels: [("team space".to_owned(), "x".to_owned())].into(),
                    ..metric()
                },
                "labels",
            ),
            (
                RuleInput::new(
                    "Lag",
                    RuleSpec::Pipeline {
                        condition: Condition::LagAbove,
                        source: None,
                        threshold: None,
                        window_secs: None,
                    },
                ),
                "threshold",
            ),
            (
                RuleInput::new(
                    "DLQ",
                    RuleSpec::Pipeline {
                        condition: Condition::DlqGrowth,
                        source: None,
                        threshold: Some(10.0),
                        window_secs: None,
                    },
                ),
                "window_secs",
            ),
        ];
        for (input, parameter) in cases {
            match input.validate() {
                Err(StoreError::InvalidParameter {
                    parameter: named, ..
                }) => {
                    assert_eq!(named, parameter)
                }
                other => panic!("{parameter}: {other:?}"),
            }
        }
        let mut nan = metric();
        if let RuleSpec::Metric { threshold, .. } = &mut nan.spec {
            *threshold = f64::NAN;
        }
        assert!(nan.validate().is_err());
    }

    #[test]
    fn a_slack_url_is_shown_without_its_secret_path() {
        assert_eq!(
            shown_target(
                ChannelKind::Slack,
                "https://hooks.slack.com/services/T000/B000/XXXXXXXX"
            ),
            "https://hooks.slack.com/services/…"
        );
        assert_eq!(
            shown_target(ChannelKind::Webhook, "https://example.com/hook"),
            "https://example.com/hook"
        );
        assert_eq!(
            shown_target(ChannelKind::Email, "ops@example.com"),
            "ops@example.com"
        );
    }

    #[test]
    fn targets_are_checked_for_their_kind() {
        assert!(check_target(ChannelKind::Webhook, "https://example.com/x").is_ok());
        assert!(check_target(ChannelKind::Webhook, "ftp://example.com/x").is_err());
        assert!(check_target(ChannelKind::Webhook, "https://user:pw@example.com/").is_err());
        assert!(check_target(ChannelKind::Email, "ops@example.com").is_ok());
        assert!(check_target(ChannelKind::Email, "not an address").is_err());
    }

    #[test]
    fn comparisons_hold_as_written() {
        assert!(Comparison::Above.holds(2.0, 1.0));
        assert!(!Comparison::Above.holds(1.0, 1.0));
        assert!(Comparison::AtLeast.holds(1.0, 1.0));
        assert!(Comparison::Below.holds(0.5, 1.0));
        assert!(Comparison::AtMost.holds(1.0, 1.0));
        for comparison in Comparison::ALL {
            assert_eq!(Comparison::parse(comparison.as_str()), Some(*comparison));
        }
    }
}
