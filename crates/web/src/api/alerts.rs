//! `/api/v1/alert-rules`, `/api/v1/alert-channels`, `/api/v1/alerts`: a workspace's alert
//! rules, the channels their notices go to, and its alerts with acknowledgements and silences
//! (docs/alerts.md). Every member reads rules, alerts and channels (a channel's target only with
//! `manage_alert_rules`: a Slack URL is a credential); owners and admins change rules and
//! channels; operators and above acknowledge and silence. The store audits every change.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use domain::Permission;
use serde::Deserialize;
use serde_json::json;
use store::StoreError;
use store::alerts::{ChannelKind, Comparison, Condition, RuleInput, RuleSpec, Severity};
use store::analytics::{Aggregation, GroupBy};
use uuid::Uuid;

use super::caller::Caller;
use super::error::ApiError;
use super::extract::{Body, Path, RequestBody};
use super::registry::Routes;
use crate::AppState;

pub(super) fn register(routes: Routes) -> Routes {
    routes
        .at(Method::GET, "/api/v1/alert-rules", list_rules)
        .at(Method::POST, "/api/v1/alert-rules", create_rule)
        .at(Method::GET, "/api/v1/alert-rules/{rule}", get_rule)
        .at(Method::PUT, "/api/v1/alert-rules/{rule}", update_rule)
        .at(Method::DELETE, "/api/v1/alert-rules/{rule}", delete_rule)
        .at(Method::GET, "/api/v1/alert-channels", list_channels)
        .at(Method::POST, "/api/v1/alert-channels", create_channel)
        .at(
            Method::DELETE,
            "/api/v1/alert-channels/{channel}",
            delete_channel,
        )
        .at(
            Method::POST,
            "/api/v1/alert-channels/{channel}/test",
            test_channel,
        )
        .at(Method::GET, "/api/v1/alerts", list_alerts)
        .at(Method::POST, "/api/v1/alerts/acknowledge", acknowledge)
        .at(Method::POST, "/api/v1/alerts/silences", silence)
        .at(
            Method::DELETE,
            "/api/v1/alerts/silences/{silence}",
            unsilence,
        )
}

/// A path id: 404 for anything not a UUID (no such object can exist).
fn id(text: &str, what: &'static str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| StoreError::NotFound(what).into())
}

/// A rule the schema admits that the workspace's state refuses (a channel or source it does not
/// have, a channel named twice): 409 naming the parameter.
fn rule_refusal(error: StoreError) -> ApiError {
    match error {
        StoreError::InvalidParameter { parameter, message } => {
            ApiError::new(StatusCode::CONFLICT, "invalid_rule", message)
                .with_details(json!({ "parameter": parameter }))
        }
        error => error.into(),
    }
}

/// A rule as the API takes it: the fields of both kinds, each checked by the document's schema
/// for its kind (`AlertRuleInput`), defaults for what is left out.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RuleBody {
    name: String,
    kind: String,
    key: Option<String>,
    aggregation: Option<String>,
    window_secs: Option<i32>,
    comparison: Option<String>,
    threshold: Option<f64>,
    site: Option<String>,
    device: Option<String>,
    group_by: Option<String>,
    condition: Option<String>,
    source: Option<String>,
    for_secs: Option<i32>,
    severity: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    channels: Option<Vec<String>>,
    description: Option<String>,
    enabled: Option<bool>,
    interval_secs: Option<i32>,
    remind_every_secs: Option<i32>,
    flap_window_secs: Option<i32>,
    flap_limit: Option<i32>,
}

impl RequestBody for RuleBody {
    const SCHEMA: &'static str = "AlertRuleInput";
    const SHAPE: &'static str = r#"{"name": "...", "kind": "metric", "key": "...", "aggregation": "avg", "window_secs": 300, "comparison": ">", "threshold": 80} or {"name": "...", "kind": "pipeline", "condition": "source_disconnected", "threshold": 5}"#;
}

impl RuleBody {
    /// The store's rule; the schema has checked every field's form already.
    fn into_input(self) -> Result<RuleInput, ApiError> {
        let schema_checked = || {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                "the rule does not fit its kind",
            )
        };
        let spec = match self.kind.as_str() {
            "metric" => RuleSpec::Metric {
                key: self.key.ok_or_else(schema_checked)?,
                aggregation: self
                    .aggregation
                    .as_deref()
                    .and_then(Aggregation::parse)
                    .ok_or_else(schema_checked)?,
                window_secs: self.window_secs.ok_or_else(schema_checked)?,
                comparison: self
                    .comparison
                    .as_deref()
                    .and_then(Comparison::parse)
                    .ok_or_else(schema_checked)?,
                threshold: self.threshold.ok_or_else(schema_checked)?,
                site: self.site,
                device: self.device,
                group_by: match self.group_by.as_deref() {
                    None => None,
                    Some(text) => Some(GroupBy::parse(text).ok_or_else(schema_checked)?),
                },
            },
            "pipeline" => RuleSpec::Pipeline {
                condition: self
                    .condition
                    .as_deref()
                    .and_then(Condition::parse)
                    .ok_or_else(schema_checked)?,
                source: match self.source.as_deref() {
                    None => None,
                    Some(text) => Some(Uuid::parse_str(text).map_err(|_| schema_checked())?),
                },
                threshold: self.threshold,
                window_secs: self.window_secs,
            },
            _ => return Err(schema_checked()),
        };
        let mut input = RuleInput::new(&self.name, spec);
        if let Some(for_secs) = self.for_secs {
            input.for_secs = for_secs;
        }
        if let Some(severity) = self.severity.as_deref() {
            input.severity = Severity::parse(severity).ok_or_else(schema_checked)?;
        }
        input.labels = self.labels.unwrap_or_default();
        input.channels = self
            .channels
            .unwrap_or_default()
            .iter()
            .map(|text| Uuid::parse_str(text).map_err(|_| schema_checked()))
            .collect::<Result<_, _>>()?;
        input.description = self.description.unwrap_or_default();
        input.enabled = self.enabled.unwrap_or(true);
        if let Some(interval) = self.interval_secs {
            input.interval_secs = interval;
        }
        if let Some(remind) = self.remind_every_secs {
            input.remind_every_secs = remind;
        }
        if let Some(window) = self.flap_window_secs {
            input.flap_window_secs = window;
        }
        if let Some(limit) = self.flap_limit {
            input.flap_limit = limit;
        }
        Ok(input)
    }
}

async fn list_rules(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut tx = caller.tx(&state, Permission::ViewDashboards).await?;
    let rules = store::alerts::list_rules(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(json!({ "alert_rules": rules })))
}

async fn create_rule(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body<RuleBody>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let input = body.into_input()?;
    let mut tx = caller.tx(&state, Permission::ManageAlertRules).await?;
    let id = store::alerts::create_rule(&mut tx, &input)
        .await
        .map_err(rule_refusal)?;
    let rule = store::alerts::get_rule(&mut tx, id).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(json!(rule))))
}

async fn get_rule(
    State(state): State<AppState>,
    caller: Caller,
    Path(rule): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let rule = id(&rule, "alert rule")?;
    let mut tx = caller.tx(&state, Permission::ViewDashboards).await?;
    let found = store::alerts::get_rule(&mut tx, rule).await?;
    let series = store::alerts::rule_series(&mut tx, rule).await?;
    let timeline = store::alerts::timeline(&mut tx, rule, None, 200).await?;
    tx.commit().await?;
    Ok(Json(
        json!({ "rule": found, "series": series, "timeline": timeline }),
    ))
}

async fn update_rule(
    State(state): State<AppState>,
    caller: Caller,
    Path(rule): Path<String>,
    Body(body): Body<RuleBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let rule = id(&rule, "alert rule")?;
    let input = body.into_input()?;
    let mut tx = caller.tx(&state, Permission::ManageAlertRules).await?;
    store::alerts::update_rule(&mut tx, rule, &input)
        .await
        .map_err(rule_refusal)?;
    let updated = store::alerts::get_rule(&mut tx, rule).await?;
    tx.commit().await?;
    Ok(Json(json!(updated)))
}

async fn delete_rule(
    State(state): State<AppState>,
    caller: Caller,
    Path(rule): Path<String>,
) -> Result<StatusCode, ApiError> {
    let rule = id(&rule, "alert rule")?;
    let mut tx = caller.tx(&state, Permission::ManageAlertRules).await?;
    store::alerts::delete_rule(&mut tx, rule).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_channels(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    let managers = caller.role().allows(Permission::ManageAlertRules);
    let mut tx = caller.tx(&state, Permission::ViewDashboards).await?;
    let channels = store::alerts::list_channels(&mut tx, managers).await?;
    tx.commit().await?;
    Ok(Json(json!({ "alert_channels": channels })))
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ChannelBody {
    name: String,
    kind: String,
    target: String,
}

impl RequestBody for ChannelBody {
    const SCHEMA: &'static str = "AlertChannelInput";
    const SHAPE: &'static str =
        r#"{"name": "...", "kind": "webhook|slack|email", "target": "https://... or an address"}"#;
}

async fn create_channel(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body<ChannelBody>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let kind = ChannelKind::parse(&body.kind).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "kind is webhook, slack or email",
        )
    })?;
    let mut tx = caller.tx(&state, Permission::ManageAlertRules).await?;
    let created = store::alerts::create_channel(
        &mut tx,
        &state.alert_secrets,
        &body.name,
        kind,
        &body.target,
    )
    .await
    .map_err(|error| match error {
        // A target of the right form that is not one (an address the mail check refuses).
        StoreError::InvalidParameter { parameter, message } => {
            ApiError::new(StatusCode::CONFLICT, "invalid_target", message)
                .with_details(json!({ "parameter": parameter }))
        }
        error => error.into(),
    })?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": created.id, "secret": created.secret })),
    ))
}

async fn delete_channel(
    State(state): State<AppState>,
    caller: Caller,
    Path(channel): Path<String>,
) -> Result<StatusCode, ApiError> {
    let channel = id(&channel, "alert channel")?;
    let mut tx = caller.tx(&state, Permission::ManageAlertRules).await?;
    store::alerts::delete_channel(&mut tx, channel).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn test_channel(
    State(state): State<AppState>,
    caller: Caller,
    Path(channel): Path<String>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let channel = id(&channel, "alert channel")?;
    let mut tx = caller.tx(&state, Permission::ManageAlertRules).await?;
    let notification = store::alerts::send_test(&mut tx, channel).await?;
    tx.commit().await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "notification_id": notification })),
    ))
}

async fn list_alerts(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut tx = caller.tx(&state, Permission::ViewDashboards).await?;
    let alerts = store::alerts::list_alerts(&mut tx).await?;
    let silences = store::alerts::list_silences(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(json!({ "alerts": alerts, "silences": silences })))
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Acknowledgement {
    rule: String,
    series: String,
}

impl RequestBody for Acknowledgement {
    const SCHEMA: &'static str = "AlertAcknowledgement";
    const SHAPE: &'static str = r#"{"rule": "<uuid>", "series": ""}"#;
}

async fn acknowledge(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body<Acknowledgement>,
) -> Result<StatusCode, ApiError> {
    let rule = id(&body.rule, "firing alert")?;
    let mut tx = caller.tx(&state, Permission::AcknowledgeAlerts).await?;
    store::alerts::acknowledge(&mut tx, rule, &body.series).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SilenceBody {
    rule: Option<String>,
    label_key: Option<String>,
    label_value: Option<String>,
    duration_secs: i64,
    reason: String,
}

impl RequestBody for SilenceBody {
    const SCHEMA: &'static str = "AlertSilenceInput";
    const SHAPE: &'static str = r#"{"rule": "<uuid>", "duration_secs": 3600, "reason": "..."} or {"label_key": "team", "label_value": "grid", "duration_secs": 3600, "reason": "..."}"#;
}

async fn silence(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body<SilenceBody>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let matches = match (body.rule, body.label_key, body.label_value) {
        (Some(rule), None, None) => store::alerts::SilenceMatch::Rule(id(&rule, "alert rule")?),
        (None, Some(key), Some(value)) => store::alerts::SilenceMatch::Label { key, value },
        _ => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                "a silence is of a rule, or of a label's key and value",
            ));
        }
    };
    let mut tx = caller.tx(&state, Permission::AcknowledgeAlerts).await?;
    let silence =
        store::alerts::silence(&mut tx, &matches, body.duration_secs, &body.reason).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(json!({ "id": silence }))))
}

async fn unsilence(
    State(state): State<AppState>,
    caller: Caller,
    Path(silence): Path<String>,
) -> Result<StatusCode, ApiError> {
    let silence = id(&silence, "active silence")?;
    let mut tx = caller.tx(&state, Permission::AcknowledgeAlerts).await?;
    store::alerts::unsilence(&mut tx, silence).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
