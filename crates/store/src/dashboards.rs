//! Saved dashboards: a workspace's named pages of chart panels over its metrics (migration
//! 0023), and the figures the overview shows above them. Every member reads them; owners and
//! admins edit them, audited in the same transaction. A panel is a series query of the
//! analytics read layer ([`crate::analytics`]) without its time range, which the page chooses.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::analytics::{Aggregation, Catalogue, GroupBy, Step};
use crate::audit::{self, AuditEntry};
use crate::{StoreError, TenantTx};

/// Panels one dashboard may hold (the table's check says the same).
pub const MAX_PANELS: usize = 24;

/// How a panel draws its series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChartType {
    Line,
    Bar,
    Table,
}

impl ChartType {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "line" => ChartType::Line,
            "bar" => ChartType::Bar,
            "table" => ChartType::Table,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ChartType::Line => "line",
            ChartType::Bar => "bar",
            ChartType::Table => "table",
        }
    }
}

/// One chart of a dashboard.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub title: String,
    pub key: String,
    pub aggregation: Aggregation,
    /// The bucket width the panel prefers; a range too long for it is drawn at the finest step
    /// that holds it.
    pub step: Step,
    pub site: Option<String>,
    pub device: Option<String>,
    pub group_by: Option<GroupBy>,
    /// With `group_by`: how many groups, the top ones.
    pub limit: u32,
    pub chart: ChartType,
    /// The values' unit as people write it (`kW`, `°C`); empty when none.
    pub unit: String,
}

/// A panel as stored in `control.dashboards.panels`: the read layer's own parameter spellings.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredPanel {
    title: String,
    key: String,
    agg: String,
    step: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    site: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    group_by: Option<String>,
    #[serde(default = "default_limit")]
    limit: u32,
    chart: String,
    #[serde(default)]
    unit: String,
}

fn default_limit() -> u32 {
    5
}

impl From<&Panel> for StoredPanel {
    fn from(panel: &Panel) -> Self {
        StoredPanel {
            title: panel.title.clone(),
            key: panel.key.clone(),
            agg: panel.aggregation.as_str().to_owned(),
            step: panel.step.as_str().to_owned(),
            site: panel.site.clone(),
            device: panel.device.clone(),
            group_by: panel.group_by.map(|group| group.as_str().to_owned()),
            limit: panel.limit,
            chart: panel.chart.as_str().to_owned(),
            unit: panel.unit.clone(),
        }
    }
}

impl TryFrom<StoredPanel> for Panel {
    type Error = StoreError;

    fn try_from(stored: StoredPanel) -> Result<Self, Self::Error> {
        let invalid = || StoreError::Invalid("a stored dashboard panel is not valid".into());
        let panel = Panel {
            title: stored.title,
            key: stored.key,
            aggregation: Aggregation::parse(&stored.agg).ok_or_else(invalid)?,
            step: Step::parse(&stored.step).ok_or_else(invalid)?,
            site: stored.site,
            device: stored.device,
            group_by: match stored.group_by.as_deref() {
                None => None,
                Some(text) => Some(GroupBy::parse(text).ok_or_else(invalid)?),
            },
            limit: stored.limit,
            chart: ChartType::parse(&stored.chart).ok_or_else(invalid)?,
            unit: stored.unit,
        };
        panel.validate().map_err(|_| invalid())?;
        Ok(panel)
    }
}

impl Panel {
    /// A panel of `key` at `aggregation` per `step`, ungrouped, as a line, with the unit the
    /// key's name suggests.
    pub fn of_key(key: &str, aggregation: Aggregation, step: Step) -> Self {
        Panel {
            title: String::new(),
            key: key.to_owned(),
            aggregation,
            step,
            site: None,
            device: None,
            group_by: None,
            limit: default_limit(),
            chart: ChartType::Line,
            unit: unit_of(key).to_owned(),
        }
    }

    /// The title shown: the panel's own, else what it plots (`power_kw · avg per 5m`).
    pub fn heading(&self) -> String {
        if !self.title.is_empty() {
            return self.title.clone();
        }
        let mut heading = format!(
            "{} · {} per {}",
            self.key,
            self.aggregation.as_str(),
            self.step.as_str()
        );
        if let Some(group) = self.group_by {
            heading.push_str(&format!(" · top {} by {}", self.limit, group.as_str()));
        }
        heading
    }

    /// Checks what a person may have typed; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        let length = |text: &str| text.chars().count();
        if length(&self.title) > 100 {
            return Err("title: at most 100 characters".into());
        }
        if !(1..=200).contains(&length(&self.key)) {
            return Err("key: a metric key is 1 to 200 characters".into());
        }
        for (field, value) in [("site", &self.site), ("device", &self.device)] {
            if value
                .as_deref()
                .is_some_and(|id| !(1..=500).contains(&length(id)))
            {
                return Err(format!("{field}: an id is 1 to 500 characters"));
            }
        }
        if !(1..=50).contains(&self.limit) {
            return Err("limit: 1 to 50 groups".into());
        }
        if length(&self.unit) > 20 {
            return Err("unit: at most 20 characters".into());
        }
        if self
            .title
            .chars()
            .chain(self.unit.chars())
            .any(char::is_control)
        {
            return Err("title and unit may not hold control characters".into());
        }
        Ok(())
    }
}

/// The unit a metric key's suffix names (`power_kw` → `kW`), or none.
pub fn unit_of(key: &str) -> &'static str {
    let suffix = key.rsplit(['_', '.']).next().unwrap_or_default();
    if suffix.len() == key.len() {
        return "";
    }
    match suffix.to_ascii_lowercase().as_str() {
        "kw" => "kW",
        "w" => "W",
        "mw" => "MW",
        "kwh" => "kWh",
        "wh" => "Wh",
        "v" => "V",
        "a" => "A",
        "hz" => "Hz",
        "c" | "celsius" => "°C",
        "f" => "°F",
        "pct" | "percent" => "%",
        "ms" => "ms",
        "s" | "seconds" => "s",
        "bytes" => "B",
        "rpm" => "rpm",
        "kpa" => "kPa",
        _ => "",
    }
}

/// A saved dashboard.
#[derive(Debug, Clone, PartialEq)]
pub struct Dashboard {
    pub id: Uuid,
    pub name: String,
    pub panels: Vec<Panel>,
    pub updated_at: OffsetDateTime,
}

#[derive(sqlx::FromRow)]
struct DashboardRow {
    dashboard_id: Uuid,
    name: String,
    panels: serde_json::Value,
    updated_at: OffsetDateTime,
}

impl TryFrom<DashboardRow> for Dashboard {
    type Error = StoreError;

    fn try_from(row: DashboardRow) -> Result<Self, Self::Error> {
        let stored: Vec<StoredPanel> = serde_json::from_value(row.panels).map_err(|_| {
            StoreError::Invalid("a stored dashboard's panels are not a list".into())
        })?;
        Ok(Dashboard {
            id: row.dashboard_id,
            name: row.name,
            panels: stored
                .into_iter()
                .map(Panel::try_from)
                .collect::<Result<_, _>>()?,
            updated_at: row.updated_at,
        })
    }
}

/// The workspace's dashboards, in their order (then oldest first).
pub async fn list(tx: &mut TenantTx) -> Result<Vec<Dashboard>, StoreError> {
    let rows: Vec<DashboardRow> = sqlx::query_as(
        "select dashboard_id, name, panels, updated_at from control.dashboards \
         order by position, created_at, dashboard_id",
    )
    .fetch_all(tx.connection())
    .await?;
    rows.into_iter().map(Dashboard::try_from).collect()
}

/// One dashboard of the workspace; `NotFound` for another workspace's id.
pub async fn get(tx: &mut TenantTx, id: Uuid) -> Result<Dashboard, StoreError> {
    let row: Option<DashboardRow> = sqlx::query_as(
        "select dashboard_id, name, panels, updated_at from control.dashboards \
         where dashboard_id = $1",
    )
    .bind(id)
    .fetch_optional(tx.connection())
    .await?;
    row.ok_or(StoreError::NotFound("dashboard"))?.try_into()
}

fn checked(name: &str, panels: &[Panel]) -> Result<serde_json::Value, StoreError> {
    let name = name.trim();
    if !(1..=100).contains(&name.chars().count()) || name.chars().any(char::is_control) {
        return Err(StoreError::Invalid(
            "name: 1 to 100 characters, no control characters".into(),
        ));
    }
    if panels.len() > MAX_PANELS {
        return Err(StoreError::Invalid(format!(
            "a dashboard holds at most {MAX_PANELS} panels"
        )));
    }
    for (index, panel) in panels.iter().enumerate() {
        panel
            .validate()
            .map_err(|message| StoreError::Invalid(format!("panel {}: {message}", index + 1)))?;
    }
    let stored: Vec<StoredPanel> = panels.iter().map(StoredPanel::from).collect();
    serde_json::to_value(stored).map_err(|_| StoreError::Invalid("panels".into()))
}

/// Saves a new dashboard after the workspace's others; audited.
pub async fn create(tx: &mut TenantTx, name: &str, panels: &[Panel]) -> Result<Uuid, StoreError> {
    let tenant = tx
        .tenant()
        .ok_or(StoreError::Forbidden("a dashboard needs a tenant scope"))?;
    let stored = checked(name, panels)?;
    let id: Uuid = sqlx::query_scalar(
        "insert into control.dashboards (tenant_id, name, position, panels) \
         select $1, $2, coalesce(max(position) + 1, 0), $3 from control.dashboards \
         returning dashboard_id",
    )
    .bind(tenant.as_uuid())
    .bind(name.trim())
    .bind(&stored)
    .fetch_one(tx.connection())
    .await?;
    audit::append(
        tx,
        AuditEntry::new("dashboard.create", id.to_string())
            .details(serde_json::json!({ "name": name.trim(), "panels": panels.len() })),
    )
    .await?;
    Ok(id)
}

/// Replaces a dashboard's name and panels; audited with what changed in size.
pub async fn update(
    tx: &mut TenantTx,
    id: Uuid,
    name: &str,
    panels: &[Panel],
) -> Result<(), StoreError> {
    let stored = checked(name, panels)?;
    let updated = sqlx::query(
        "update control.dashboards set name = $2, panels = $3, updated_at = now() \
         where dashboard_id = $1",
    )
    .bind(id)
    .bind(name.trim())
    .bind(&stored)
    .execute(tx.connection())
    .await?;
    if updated.rows_affected() == 0 {
        return Err(StoreError::NotFound("dashboard"));
    }
    audit::append(
        tx,
        AuditEntry::new("dashboard.update", id.to_string())
            .details(serde_json::json!({ "name": name.trim(), "panels": panels.len() })),
    )
    .await?;
    Ok(())
}

/// Removes a dashboard; audited.
pub async fn delete(tx: &mut TenantTx, id: Uuid) -> Result<(), StoreError> {
    let deleted = sqlx::query("delete from control.dashboards where dashboard_id = $1")
        .bind(id)
        .execute(tx.connection())
        .await?;
    if deleted.rows_affected() == 0 {
        return Err(StoreError::NotFound("dashboard"));
    }
    audit::append(tx, AuditEntry::new("dashboard.delete", id.to_string())).await?;
    Ok(())
}

/// The dashboard a workspace without one is shown: a panel for each of its busiest metric
/// keys (at most six), the busiest also split by device, so a fresh workspace sees its own
/// data without configuring anything.
pub fn default_panels(catalogue: &Catalogue) -> Vec<Panel> {
    let mut metrics: Vec<_> = catalogue.metrics.iter().collect();
    metrics.sort_by(|a, b| b.readings.cmp(&a.readings).then(a.key.cmp(&b.key)));
    let mut panels: Vec<Panel> = metrics
        .iter()
        .take(6)
        .map(|metric| Panel::of_key(&metric.key, Aggregation::Avg, Step::FiveMinutes))
        .collect();
    if let Some(busiest) = metrics.first()
        && busiest.entities > 1
    {
        panels.insert(
            1,
            Panel {
                group_by: Some(GroupBy::Device),
                ..Panel::of_key(&busiest.key, Aggregation::Max, Step::FiveMinutes)
            },
        );
    }
    if let Some(busiest) = metrics.first() {
        panels.push(Panel {
            chart: ChartType::Bar,
            unit: "readings".into(),
            ..Panel::of_key(&busiest.key, Aggregation::Count, Step::Hour)
        });
    }
    panels
}

/// The read models' headline figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EntityFigures {
    pub devices: i64,
    /// Devices with a reading in the last 15 minutes.
    pub active_devices: i64,
    pub sites: i64,
    /// Sessions started and not ended.
    pub open_sessions: i64,
}

/// Counts the workspace's live devices, sites and open sessions, and the devices that sent a
/// reading in the last 15 minutes (from the minute rollup, by its key-and-minute index).
pub async fn entity_figures(tx: &mut TenantTx) -> Result<EntityFigures, StoreError> {
    let (devices, active_devices, sites, open_sessions): (i64, i64, i64, i64) = sqlx::query_as(
        "select (select count(*) from analytics.devices where deleted_at is null), \
                (select count(distinct entity_id) from analytics.metrics_min \
                  where entity_kind = 'device' \
                    and minute >= date_trunc('minute', now()) - interval '15 minutes'), \
                (select count(*) from analytics.sites where deleted_at is null), \
                (select count(*) from analytics.sessions \
                  where deleted_at is null and ended_at is null and started_at is not null)",
    )
    .fetch_one(tx.connection())
    .await?;
    Ok(EntityFigures {
        devices,
        active_devices,
        sites,
        open_sessions,
    })
}

/// Events per minute of one source and operation, over the last five minutes.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct EventRate {
    pub source_id: Uuid,
    pub source_name: String,
    pub op: String,
    pub per_minute: f64,
}

/// The events of one source and operation committed in one minute.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct EventMinute {
    pub source_id: Uuid,
    pub source_name: String,
    pub op: String,
    /// The minute's start.
    pub minute: OffsetDateTime,
    pub events: i64,
}

/// The workspace's ingest minute by minute over the last `window`, by source and operation
/// (bronze, by the events' commit time); minutes without events are absent. Needs a role that
/// reads bronze. The overview's rates ([`event_rates`]) and the data sources' throughput
/// sparklines both read it.
pub async fn events_per_minute(
    tx: &mut TenantTx,
    window: time::Duration,
) -> Result<Vec<EventMinute>, StoreError> {
    Ok(sqlx::query_as(
        "select e.source_id, coalesce(s.name, e.source_id::text) as source_name, e.op, \
                date_trunc('minute', e.event_time) as minute, count(*) as events \
         from bronze.cdc_events e \
         left join control.sources s on s.source_id = e.source_id \
         where e.event_time > now() - make_interval(secs => $1) \
         group by e.source_id, s.name, e.op, minute \
         order by e.source_id, e.op, minute",
    )
    .bind(window.as_seconds_f64())
    .fetch_all(tx.connection())
    .await?)
}

/// The workspace's ingest over the last five minutes by source and operation (bronze, by the
/// events' commit time), busiest first. Needs a role that reads bronze.
pub async fn event_rates(tx: &mut TenantTx) -> Result<Vec<EventRate>, StoreError> {
    const MINUTES: i64 = 5;
    let mut rates: Vec<EventRate> = Vec::new();
    for minute in events_per_minute(tx, time::Duration::minutes(MINUTES)).await? {
        let per_minute = minute.events as f64 / MINUTES as f64;
        match rates
            .iter_mut()
            .find(|rate| rate.source_id == minute.source_id && rate.op == minute.op)
        {
            Some(rate) => rate.per_minute += per_minute,
            None => rates.push(EventRate {
                source_id: minute.source_id,
                source_name: minute.source_name,
                op: minute.op,
                per_minute,
            }),
        }
    }
    rates.sort_by(|a, b| {
        b.per_minute
            .total_cmp(&a.per_minute)
            .then_with(|| a.source_name.cmp(&b.source_name))
            .then_with(|| a.op.cmp(&b.op))
    });
    Ok(rates)
}

/// Dead letters waiting (not replayed). Needs a role that reads them.
pub async fn dead_letters(tx: &mut TenantTx) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("select count(*) from pipeline.dlq where replayed_at is null")
            .fetch_one(tx.connection())
            .await?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::MetricKey;

    #[test]
    fn units_come_from_the_keys_suffix_and_only_from_a_suffix() {
        assert_eq!(unit_of("power_kw"), "kW");
        assert_eq!(unit_of("voltage_v"), "V");
        assert_eq!(unit_of("cpu.pct"), "%");
        assert_eq!(unit_of("temp_C"), "°C");
        assert_eq!(unit_of("kw"), "");
        assert_eq!(unit_of("power"), "");
        assert_eq!(unit_of("power_factor"), "");
    }

    #[test]
    fn a_stored_panel_reads_back_as_it_was_saved_and_a_bad_one_is_refused() {
        let panel = Panel {
            site: Some("site-1".into()),
            group_by: Some(GroupBy::Device),
            chart: ChartType::Bar,
            ..Panel::of_key("power_kw", Aggregation::Max, Step::Hour)
        };
        let stored = serde_json::to_value(StoredPanel::from(&panel)).unwrap();
        let back: StoredPanel = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(Panel::try_from(back).unwrap(), panel);
        let mut bad = stored;
        bad["agg"] = "median".into();
        let bad: StoredPanel = serde_json::from_value(bad).unwrap();
        assert!(Panel::try_from(bad).is_err());
    }

    #[test]
    fn validation_names_the_field() {
        let panel = Panel::of_key("k", Aggregation::Avg, Step::Minute);
        for (broken, field) in [
            (
                Panel {
                    key: String::new(),
                    ..panel.clone()
                },
                "key",
            ),
            (
                Panel {
                    limit: 51,
                    ..panel.clone()
                },
                "limit",
            ),
            (
                Panel {
                    device: Some(String::new()),
                    ..panel.clone()
                },
                "device",
            ),
            (
                Panel {
                    title: "a\u{7}b".into(),
                    ..panel.clone()
                },
                "control",
            ),
        ] {
            let message = broken.validate().unwrap_err();
            assert!(message.contains(field), "{message}");
        }
        assert!(panel.validate().is_ok());
    }

    #[test]
    fn the_default_dashboard_leads_with_the_busiest_key_and_splits_it_by_device() {
        let at = OffsetDateTime::UNIX_EPOCH;
        let metric = |key: &str, readings: i64| MetricKey {
            key: key.into(),
            first_seen: at,
            last_seen: at,
            readings,
            entities: 3,
        };
        let catalogue = Catalogue {
            metrics: vec![metric("voltage_v", 10), metric("power_kw", 90)],
            extras: Vec::new(),
        };
        let panels = default_panels(&catalogue);
        let summary: Vec<_> = panels
            .iter()
            .map(|panel| {
                (
                    panel.key.as_str(),
                    panel.group_by,
                    panel.chart,
                    panel.unit.as_str(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("power_kw", None, ChartType::Line, "kW"),
                ("power_kw", Some(GroupBy::Device), ChartType::Line, "kW"),
                ("voltage_v", None, ChartType::Line, "V"),
                ("power_kw", None, ChartType::Bar, "readings"),
            ]
        );
        assert!(
            default_panels(&Catalogue {
                metrics: Vec::new(),
                extras: Vec::new()
            })
            .is_empty()
        );
    }
}
