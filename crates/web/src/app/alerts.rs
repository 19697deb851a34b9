//! `/app/alerts`: a workspace's alerts, rules, channels and silences (docs/alerts.md). Every
//! member sees the alerts and rules; operators and above acknowledge and silence; owners and
//! admins create and delete rules and channels and send a channel a test. A rule's page shows
//! its series, its timeline, and for a metric rule its data over the last day against the
//! threshold, with the buckets where it would have breached.

use askama::Template;
use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use domain::Permission;
use serde::Deserialize;
use store::StoreError;
use store::alerts::{
    Alert, ChannelKind, Comparison, Condition, RuleInput, RuleSpec, Severity, SilenceMatch,
};
use store::analytics::{Aggregation, SeriesQuery, Step};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::AppState;
use crate::auth::session::Member;
use crate::pages::{Chrome, PageError, render};
use crate::shell::{Shell, shell, timestamp};

const PATH: &str = "/app/alerts";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(PATH, get(alerts_page))
        .route("/app/alerts/rules", post(create_rule))
        .route("/app/alerts/rules/{rule}", get(rule_page).post(update_rule))
        .route("/app/alerts/rules/{rule}/delete", post(delete_rule))
        .route("/app/alerts/channels", post(create_channel))
        .route("/app/alerts/channels/{channel}/test", post(test_channel))
        .route(
            "/app/alerts/channels/{channel}/delete",
            post(delete_channel),
        )
        .route("/app/alerts/acknowledge", post(acknowledge))
        .route("/app/alerts/silences", post(silence))
        .route("/app/alerts/silences/{silence}/end", post(unsilence))
}

/// An alert as a row of the page.
struct AlertRow {
    rule: Uuid,
    rule_name: String,
    severity: &'static str,
    series: String,
    phase: String,
    since: String,
    value: String,
    acked: Option<String>,
    silenced: bool,
    flapping: bool,
}

fn alert_row(alert: Alert) -> AlertRow {
    AlertRow {
        rule: alert.rule,
        rule_name: alert.rule_name,
        severity: alert.severity.as_str(),
        series: alert.series,
        phase: alert.phase,
        since: timestamp(alert.since),
        value: alert
            .value
            .map(|value| crate::charts::value_text(value, ""))
            .unwrap_or_else(|| "no data".to_owned()),
        acked: alert.acked_at.map(timestamp),
        silenced: alert.silenced,
        flapping: alert.flapping,
    }
}

/// A rule as a row of the page.
struct RuleRow {
    id: Uuid,
    name: String,
    summary: String,
    severity: &'static str,
    state: &'static str,
    firing: i64,
    silenced: bool,
    enabled: bool,
}

/// What a rule watches, in words.
fn summary(spec: &RuleSpec) -> String {
    match spec {
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
            let scope = match (site, device) {
                (_, Some(device)) => format!(" of device {device}"),
                (Some(site), None) => format!(" of site {site}"),
                (None, None) => String::new(),
            };
            let per = group_by
                .map(|group| format!(", per {}", group.as_str()))
                .unwrap_or_default();
            format!(
                "{} of {key}{scope} over {} min {} {}{per}",
                aggregation.as_str(),
                window_secs / 60,
                comparison.as_str(),
                crate::charts::value_text(*threshold, "")
            )
        }
        RuleSpec::Pipeline {
            condition,
            threshold,
            ..
        } => match (condition.unit(), threshold) {
            (Some(unit), Some(threshold)) => format!(
                "{} above {} {unit}",
                condition.as_str(),
                crate::charts::value_text(*threshold, "")
            ),
            _ => condition.as_str().to_owned(),
        },
    }
}

struct ChannelRow {
    id: Uuid,
    name: String,
    kind: &'static str,
    target: String,
    last_delivered: Option<String>,
    last_error: Option<String>,
}

struct SilenceRow {
    id: Uuid,
    what: String,
    ends: String,
    reason: String,
    active: bool,
}

#[derive(Template)]
#[template(path = "app/alerts.html")]
struct AlertsPage {
    chrome: Chrome,
    shell: Shell,
    alerts: Vec<AlertRow>,
    rules: Vec<RuleRow>,
    channels: Vec<ChannelRow>,
    silences: Vec<SilenceRow>,
    can_act: bool,
    can_manage: bool,
    notice: Option<String>,
    problem: Option<String>,
    aggregations: &'static [&'static str],
    conditions: Vec<&'static str>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Done {
    done: String,
}

fn notice(code: &str) -> Option<String> {
    Some(
        match code {
            "rule" => "Rule saved: it is evaluated within seconds.",
            "rule_deleted" => "Rule deleted, with its states and timeline.",
            "channel_deleted" => "Channel deleted and taken off every rule.",
            "test" => {
                "Test notice queued: its result shows as the channel's last delivery or error."
            }
            "acked" => "Acknowledged: no reminders until it resolves.",
            "silenced" => "Silenced: no notices until the silence ends.",
            "unsilenced" => "Silence ended.",
            _ => return None,
        }
        .to_owned(),
    )
}

async fn alerts_page(
    State(state): State<AppState>,
    member: Member,
    Query(done): Query<Done>,
) -> Result<Response, PageError> {
    render_page(&state, &member, StatusCode::OK, notice(&done.done), None).await
}

async fn render_page(
    state: &AppState,
    member: &Member,
    status: StatusCode,
    notice: Option<String>,
    problem: Option<String>,
) -> Result<Response, PageError> {
    let can_manage = member.role().allows(Permission::ManageAlertRules);
    let can_act = member.role().allows(Permission::AcknowledgeAlerts);
    let mut tx = member.tx(state, Permission::ViewDashboards).await?;
    let alerts = store::alerts::list_alerts(&mut tx).await?;
    let rules = store::alerts::list_rules(&mut tx).await?;
    let channels = store::alerts::list_channels(&mut tx, can_manage).await?;
    let silences = store::alerts::list_silences(&mut tx).await?;
    tx.commit().await?;
    let rule_name = |id: Uuid| {
        rules.iter().find(|rule| rule.id == id).map_or_else(
            || "a deleted rule".to_owned(),
            |rule| rule.input.name.clone(),
        )
    };
    let silences = silences
        .into_iter()
        .map(|silence| SilenceRow {
            id: silence.id,
            what: match &silence.matches {
                SilenceMatch::Rule(rule) => format!("rule {}", rule_name(*rule)),
                SilenceMatch::Label { key, value } => format!("label {key} = {value}"),
            },
            ends: timestamp(silence.ended_at.unwrap_or(silence.ends_at)),
            reason: silence.reason,
            active: silence.active,
        })
        .collect();
    let rules = rules
        .into_iter()
        .map(|rule| RuleRow {
            id: rule.id,
            summary: summary(&rule.input.spec),
            name: rule.input.name,
            severity: rule.input.severity.as_str(),
            state: rule.state,
            firing: rule.firing,
            silenced: rule.silenced,
            enabled: rule.input.enabled,
        })
        .collect();
    let channels = channels
        .into_iter()
        .map(|channel| ChannelRow {
            id: channel.id,
            name: channel.name,
            kind: channel.kind.as_str(),
            target: channel.target.unwrap_or_default(),
            last_delivered: channel.last_delivered_at.map(timestamp),
            last_error: channel.last_error,
        })
        .collect();
    Ok(render(
        status,
        &AlertsPage {
            chrome: member.visitor.chrome("app"),
            shell: shell(member, PATH),
            alerts: alerts.into_iter().map(alert_row).collect(),
            rules,
            channels,
            silences,
            can_act,
            can_manage,
            notice,
            problem,
            aggregations: &["avg", "min", "max", "sum", "count", "last"],
            conditions: Condition::ALL
                .iter()
                .map(|condition| condition.as_str())
                .collect(),
        },
    ))
}

/// A store refusal shown on the page (what the form got wrong, a name taken); anything else is
/// the error page.
async fn refused(
    state: &AppState,
    member: &Member,
    error: StoreError,
) -> Result<Response, PageError> {
    match error {
        StoreError::InvalidParameter { parameter, message } => {
            let problem = format!("{parameter}: {message}");
            render_page(
                state,
                member,
                StatusCode::UNPROCESSABLE_ENTITY,
                None,
                Some(problem),
            )
            .await
        }
        StoreError::AlreadyExists(what) => {
            let problem = format!("a {what} of that name exists");
            render_page(state, member, StatusCode::CONFLICT, None, Some(problem)).await
        }
        StoreError::NotFound(_) => Err(PageError::NotFound),
        error => Err(error.into()),
    }
}

fn id(text: &str) -> Result<Uuid, PageError> {
    Uuid::parse_str(text).map_err(|_| PageError::NotFound)
}

fn done(code: &str) -> Response {
    Redirect::to(&format!("{PATH}?done={code}")).into_response()
}

/// The new-rule form: both kinds' fields; the kind says which apply.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RuleForm {
    name: String,
    kind: String,
    key: String,
    aggregation: String,
    window_minutes: String,
    comparison: String,
    threshold: String,
    device: String,
    site: String,
    condition: String,
    for_minutes: String,
    severity: String,
    channel: String,
    description: String,
}

fn number<T: std::str::FromStr>(text: &str, parameter: &'static str) -> Result<T, StoreError> {
    text.trim()
        .parse()
        .map_err(|_| StoreError::InvalidParameter {
            parameter,
            message: "a number".into(),
        })
}

fn optional(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

impl RuleForm {
    fn input(&self) -> Result<RuleInput, StoreError> {
        let invalid = |parameter: &'static str, message: &str| StoreError::InvalidParameter {
            parameter,
            message: message.to_owned(),
        };
        let spec = match self.kind.as_str() {
            "metric" => RuleSpec::Metric {
                key: self.key.trim().to_owned(),
                aggregation: Aggregation::parse(&self.aggregation)
                    .ok_or_else(|| invalid("aggregation", "choose an aggregation"))?,
                window_secs: number::<i32>(&self.window_minutes, "window")?.saturating_mul(60),
                comparison: Comparison::parse(&self.comparison)
                    .ok_or_else(|| invalid("comparison", "choose a comparison"))?,
                threshold: number(&self.threshold, "threshold")?,
                site: optional(&self.site),
                device: optional(&self.device),
                group_by: None,
            },
            "pipeline" => {
                let condition = Condition::parse(&self.condition)
                    .ok_or_else(|| invalid("condition", "choose a condition"))?;
                RuleSpec::Pipeline {
                    condition,
                    source: None,
                    threshold: match optional(&self.threshold) {
                        Some(text) => Some(number(&text, "threshold")?),
                        None => None,
                    },
                    window_secs: (condition == Condition::DlqGrowth)
                        .then(|| number::<i32>(&self.window_minutes, "window"))
                        .transpose()?
                        .map(|minutes| minutes.saturating_mul(60)),
                }
            }
            _ => return Err(invalid("kind", "a metric or a pipeline rule")),
        };
        let mut input = RuleInput::new(&self.name, spec);
        if let Some(minutes) = optional(&self.for_minutes) {
            input.for_secs = number::<i32>(&minutes, "for")?.saturating_mul(60);
        }
        input.severity = Severity::parse(&self.severity).unwrap_or(Severity::Warning);
        if let Some(channel) = optional(&self.channel) {
            input.channels = vec![
                Uuid::parse_str(&channel).map_err(|_| invalid("channels", "choose a channel"))?,
            ];
        }
        input.description = self.description.clone();
        Ok(input)
    }
}

async fn create_rule(
    State(state): State<AppState>,
    member: Member,
    Form(form): Form<RuleForm>,
) -> Result<Response, PageError> {
    member.require(Permission::ManageAlertRules)?;
    let input = match form.input() {
        Ok(input) => input,
        Err(error) => return refused(&state, &member, error).await,
    };
    let mut tx = member.tx(&state, Permission::ManageAlertRules).await?;
    match store::alerts::create_rule(&mut tx, &input).await {
        Ok(id) => {
            tx.commit().await?;
            Ok(Redirect::to(&format!("/app/alerts/rules/{id}?done=rule")).into_response())
        }
        Err(error) => {
            drop(tx);
            refused(&state, &member, error).await
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct IdForm {
    rule: String,
    series: String,
    hours: String,
    reason: String,
    /// A silence of every rule with this label's value, instead of one rule.
    label_key: String,
    label_value: String,
}

async fn delete_rule(
    State(state): State<AppState>,
    member: Member,
    Path(rule): Path<String>,
) -> Result<Response, PageError> {
    let rule = id(&rule)?;
    act(
        &state,
        &member,
        Permission::ManageAlertRules,
        "rule_deleted",
        async |tx| store::alerts::delete_rule(tx, rule).await,
    )
    .await
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ChannelForm {
    name: String,
    kind: String,
    target: String,
}

async fn create_channel(
    State(state): State<AppState>,
    member: Member,
    Form(form): Form<ChannelForm>,
) -> Result<Response, PageError> {
    member.require(Permission::ManageAlertRules)?;
    let Some(kind) = ChannelKind::parse(&form.kind) else {
        return Err(PageError::BadRequest(
            "A channel is a webhook, a Slack webhook or an email address.".into(),
        ));
    };
    let mut tx = member.tx(&state, Permission::ManageAlertRules).await?;
    match store::alerts::create_channel(
        &mut tx,
        &state.alert_secrets,
        &form.name,
        kind,
        &form.target,
    )
    .await
    {
        Ok(created) => {
            tx.commit().await?;
            let notice = match created.secret {
                Some(secret) => format!(
                    "Channel created. Its signing secret, shown only now: {secret} — the \
                     receiver checks Tributary-Signature with it (docs/alerts.md)."
                ),
                None => "Channel created.".to_owned(),
            };
            render_page(&state, &member, StatusCode::CREATED, Some(notice), None).await
        }
        Err(error) => {
            drop(tx);
            refused(&state, &member, error).await
        }
    }
}

/// Runs `action` in the member's transaction (the role must hold `permission`), commits, and
/// goes back to the page saying `code`'s notice.
async fn act(
    state: &AppState,
    member: &Member,
    permission: Permission,
    code: &str,
    action: impl AsyncFnOnce(&mut store::TenantTx) -> Result<(), StoreError>,
) -> Result<Response, PageError> {
    let mut tx = member.tx(state, permission).await?;
    action(&mut tx).await?;
    tx.commit().await?;
    Ok(done(code))
}

async fn test_channel(
    State(state): State<AppState>,
    member: Member,
    Path(channel): Path<String>,
) -> Result<Response, PageError> {
    let channel = id(&channel)?;
    act(
        &state,
        &member,
        Permission::ManageAlertRules,
        "test",
        async |tx| store::alerts::send_test(tx, channel).await.map(|_| ()),
    )
    .await
}

async fn delete_channel(
    State(state): State<AppState>,
    member: Member,
    Path(channel): Path<String>,
) -> Result<Response, PageError> {
    let channel = id(&channel)?;
    act(
        &state,
        &member,
        Permission::ManageAlertRules,
        "channel_deleted",
        async |tx| store::alerts::delete_channel(tx, channel).await,
    )
    .await
}

async fn acknowledge(
    State(state): State<AppState>,
    member: Member,
    Form(form): Form<IdForm>,
) -> Result<Response, PageError> {
    let rule = id(&form.rule)?;
    act(
        &state,
        &member,
        Permission::AcknowledgeAlerts,
        "acked",
        async |tx| store::alerts::acknowledge(tx, rule, &form.series).await,
    )
    .await
}

async fn silence(
    State(state): State<AppState>,
    member: Member,
    Form(form): Form<IdForm>,
) -> Result<Response, PageError> {
    let matches = if form.rule.is_empty() {
        SilenceMatch::Label {
            key: form.label_key.trim().to_owned(),
            value: form.label_value.trim().to_owned(),
        }
    } else {
        SilenceMatch::Rule(id(&form.rule)?)
    };
    member.require(Permission::AcknowledgeAlerts)?;
    let hours: i64 = match number(&form.hours, "hours") {
        Ok(hours) => hours,
        Err(error) => return refused(&state, &member, error).await,
    };
    let mut tx = member.tx(&state, Permission::AcknowledgeAlerts).await?;
    match store::alerts::silence(&mut tx, &matches, hours.saturating_mul(3_600), &form.reason).await
    {
        Ok(_) => {
            tx.commit().await?;
            Ok(done("silenced"))
        }
        Err(error) => {
            drop(tx);
            refused(&state, &member, error).await
        }
    }
}

async fn unsilence(
    State(state): State<AppState>,
    member: Member,
    Path(silence): Path<String>,
) -> Result<Response, PageError> {
    let silence = id(&silence)?;
    act(
        &state,
        &member,
        Permission::AcknowledgeAlerts,
        "unsilenced",
        async |tx| store::alerts::unsilence(tx, silence).await,
    )
    .await
}

struct TimelineRow {
    at: String,
    series: String,
    kind: String,
    value: String,
    detail: String,
}

#[derive(Template)]
#[template(path = "app/alert_rule.html")]
struct RulePage {
    chrome: Chrome,
    shell: Shell,
    id: Uuid,
    name: String,
    summary: String,
    severity: &'static str,
    state: &'static str,
    description: String,
    labels: Vec<(String, String)>,
    series: Vec<AlertRow>,
    timeline: Vec<TimelineRow>,
    /// A metric rule's last day against its threshold, drawn; and in how many of its
    /// five-minute buckets the condition held.
    preview: Option<(String, usize, usize)>,
    can_act: bool,
    can_manage: bool,
    notice: Option<String>,
    /// The editor's current values.
    edit: RuleEdit,
}

/// What the rule page's editor changes, as the form shows it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RuleEdit {
    name: String,
    threshold: String,
    window_minutes: String,
    for_minutes: String,
    severity: String,
    description: String,
    enabled: String,
}

impl RuleEdit {
    fn of(input: &RuleInput) -> Self {
        let (threshold, window) = match &input.spec {
            RuleSpec::Metric {
                threshold,
                window_secs,
                ..
            } => (Some(*threshold), Some(*window_secs)),
            RuleSpec::Pipeline {
                threshold,
                window_secs,
                ..
            } => (*threshold, *window_secs),
        };
        RuleEdit {
            name: input.name.clone(),
            threshold: threshold.map(|value| value.to_string()).unwrap_or_default(),
            window_minutes: window
                .map(|secs| (secs / 60).to_string())
                .unwrap_or_default(),
            for_minutes: (input.for_secs / 60).to_string(),
            severity: input.severity.as_str().to_owned(),
            description: input.description.clone(),
            enabled: if input.enabled { "on" } else { "" }.to_owned(),
        }
    }

    /// `input` with this editor's values.
    fn apply(&self, mut input: RuleInput) -> Result<RuleInput, StoreError> {
        input.name = self.name.clone();
        let threshold = optional(&self.threshold)
            .map(|text| number::<f64>(&text, "threshold"))
            .transpose()?;
        let window = optional(&self.window_minutes)
            .map(|text| number::<i32>(&text, "window").map(|minutes| minutes.saturating_mul(60)))
            .transpose()?;
        match &mut input.spec {
            RuleSpec::Metric {
                threshold: own,
                window_secs,
                ..
            } => {
                *own = threshold.ok_or(StoreError::InvalidParameter {
                    parameter: "threshold",
                    message: "a metric rule needs a threshold".into(),
                })?;
                if let Some(window) = window {
                    *window_secs = window;
                }
            }
            RuleSpec::Pipeline {
                threshold: own,
                window_secs,
                ..
            } => {
                *own = threshold;
                if window_secs.is_some() {
                    *window_secs = window;
                }
            }
        }
        input.for_secs = number::<i32>(&self.for_minutes, "for")?.saturating_mul(60);
        input.severity = Severity::parse(&self.severity).unwrap_or(input.severity);
        input.description = self.description.clone();
        input.enabled = self.enabled == "on";
        Ok(input)
    }
}

async fn update_rule(
    State(state): State<AppState>,
    member: Member,
    Path(rule): Path<String>,
    Form(form): Form<RuleEdit>,
) -> Result<Response, PageError> {
    let rule = id(&rule)?;
    let mut tx = member.tx(&state, Permission::ManageAlertRules).await?;
    let current = store::alerts::get_rule(&mut tx, rule).await?;
    let outcome = match form.apply(current.input) {
        Ok(input) => store::alerts::update_rule(&mut tx, rule, &input).await,
        Err(error) => Err(error),
    };
    match outcome {
        Ok(()) => {
            tx.commit().await?;
            Ok(Redirect::to(&format!("/app/alerts/rules/{rule}?done=rule")).into_response())
        }
        Err(error) => {
            drop(tx);
            refused(&state, &member, error).await
        }
    }
}

async fn rule_page(
    State(state): State<AppState>,
    member: Member,
    Path(rule): Path<String>,
    Query(done): Query<Done>,
) -> Result<Response, PageError> {
    let rule = id(&rule)?;
    let mut tx = member.tx(&state, Permission::ViewDashboards).await?;
    let found = store::alerts::get_rule(&mut tx, rule).await?;
    let series = store::alerts::rule_series(&mut tx, rule).await?;
    let timeline = store::alerts::timeline(&mut tx, rule, None, 200).await?;
    let preview = match &found.input.spec {
        RuleSpec::Metric {
            key,
            aggregation,
            comparison,
            threshold,
            site,
            device,
            ..
        } => {
            let to = OffsetDateTime::now_utc();
            let from = to - time::Duration::days(1);
            let query = SeriesQuery {
                key: key.clone(),
                from,
                to,
                step: Step::FiveMinutes,
                aggregation: *aggregation,
                site: site.clone(),
                device: device.clone(),
                group_by: None,
                limit: 1,
            };
            let lines = store::analytics::series(&mut tx, &query).await?;
            let points: Vec<(OffsetDateTime, f64)> = lines
                .first()
                .map(|line| line.points.iter().map(|p| (p.at, p.value)).collect())
                .unwrap_or_default();
            let breaching = points
                .iter()
                .filter(|(_, value)| comparison.holds(*value, *threshold))
                .count();
            let buckets = points.len();
            let threshold_line: Vec<(OffsetDateTime, f64)> =
                points.iter().map(|(at, _)| (*at, *threshold)).collect();
            let title = format!("{key}, last day, against the threshold");
            let chart = crate::charts::draw(
                &crate::charts::Chart {
                    kind: crate::charts::Kind::Line,
                    from,
                    to,
                    step: Step::FiveMinutes.seconds(),
                    unit: "",
                    title: &title,
                },
                &[
                    crate::charts::Line {
                        label: key.clone(),
                        points,
                    },
                    crate::charts::Line {
                        label: format!("threshold {}", comparison.as_str()),
                        points: threshold_line,
                    },
                ],
            );
            Some((
                chart.render().map_err(|_| PageError::Unavailable)?,
                breaching,
                buckets,
            ))
        }
        RuleSpec::Pipeline { .. } => None,
    };
    tx.commit().await?;
    let edit = RuleEdit::of(&found.input);
    let page = RulePage {
        edit,
        chrome: member.visitor.chrome("app"),
        shell: shell(&member, PATH),
        id: found.id,
        summary: summary(&found.input.spec),
        name: found.input.name,
        severity: found.input.severity.as_str(),
        state: found.state,
        description: found.input.description,
        labels: found.input.labels.into_iter().collect(),
        series: series.into_iter().map(alert_row).collect(),
        timeline: timeline
            .into_iter()
            .rev()
            .map(|entry| TimelineRow {
                at: timestamp(entry.at),
                series: entry.series,
                kind: entry.kind,
                value: entry
                    .value
                    .map(|value| crate::charts::value_text(value, ""))
                    .unwrap_or_default(),
                detail: entry.detail,
            })
            .collect(),
        preview,
        can_act: member.role().allows(Permission::AcknowledgeAlerts),
        can_manage: member.role().allows(Permission::ManageAlertRules),
        notice: notice(&done.done),
    };
    Ok(render(StatusCode::OK, &page))
}
