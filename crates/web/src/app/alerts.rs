//! `/app/alerts`: a workspace's alerts, rules, channels and silences (docs/alerts.md). Every
//! member sees the alerts and rules; operators and above acknowledge and silence; owners and
//! admins create and delete rules and channels and send a channel a test. A rule's page shows
//! its series, its timeline, and for a metric rule its data over the last day against the
//! threshold, with the buckets where it would have breached.

use askama::Template;
use axum::Router;
use axum::body::Bytes;
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
use store::analytics::{Aggregation, GroupBy, SeriesQuery, Step};
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
    /// The new-rule form, for those who manage rules.
    fields: Option<RuleFields>,
}

/// The rule form's fields with what they offer: the workspace's channels and sources.
struct RuleFields {
    form: RuleForm,
    channels: Vec<(String, String)>,
    sources: Vec<(String, String)>,
    aggregations: &'static [&'static str],
    conditions: Vec<&'static str>,
}

impl RuleFields {
    async fn load(tx: &mut store::TenantTx, form: RuleForm) -> Result<Self, StoreError> {
        let channels = store::alerts::list_channels(tx, false).await?;
        let sources = store::sources::list_sources(tx).await?;
        Ok(RuleFields {
            form,
            channels: channels
                .into_iter()
                .map(|channel| (channel.id.to_string(), channel.name))
                .collect(),
            sources: sources
                .into_iter()
                .map(|source| (source.source_id.to_string(), source.name))
                .collect(),
            aggregations: &["avg", "min", "max", "sum", "count", "last"],
            conditions: Condition::ALL
                .iter()
                .map(|condition| condition.as_str())
                .collect(),
        })
    }

    fn chosen(&self, channel: &str) -> bool {
        self.form.channels.iter().any(|chosen| chosen == channel)
    }
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
    render_page(
        &state,
        &member,
        StatusCode::OK,
        notice(&done.done),
        None,
        None,
    )
    .await
}

async fn render_page(
    state: &AppState,
    member: &Member,
    status: StatusCode,
    notice: Option<String>,
    problem: Option<String>,
    draft: Option<RuleForm>,
) -> Result<Response, PageError> {
    let can_manage = member.role().allows(Permission::ManageAlertRules);
    let can_act = member.role().allows(Permission::AcknowledgeAlerts);
    let mut tx = member.tx(state, Permission::ViewDashboards).await?;
    let alerts = store::alerts::list_alerts(&mut tx).await?;
    let rules = store::alerts::list_rules(&mut tx).await?;
    let channels = store::alerts::list_channels(&mut tx, can_manage).await?;
    let silences = store::alerts::list_silences(&mut tx).await?;
    let fields = if can_manage {
        Some(RuleFields::load(&mut tx, draft.unwrap_or_default()).await?)
    } else {
        None
    };
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
            fields,
        },
    ))
}

/// A store refusal shown on the page (what the form got wrong, a name taken), with the rule
/// form as it was posted when it was the rule form; anything else is the error page.
async fn refused(
    state: &AppState,
    member: &Member,
    error: StoreError,
    draft: Option<RuleForm>,
) -> Result<Response, PageError> {
    let (status, problem) = crate::pages::correctable(error)?;
    render_page(state, member, status, None, Some(problem), draft).await
}

fn id(text: &str) -> Result<Uuid, PageError> {
    Uuid::parse_str(text).map_err(|_| PageError::NotFound)
}

fn done(code: &str) -> Response {
    Redirect::to(&format!("{PATH}?done={code}")).into_response()
}

/// The rule form, for a new rule and for a rule page's editor: both kinds' fields (the kind says
/// which apply), every channel chosen, and labels as `key=value` pairs. The evaluation cadence
/// (interval, reminders, flap damping) is the API's to set; the editor keeps it.
#[derive(Debug)]
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
    group_by: String,
    condition: String,
    source: String,
    for_minutes: String,
    severity: String,
    channels: Vec<String>,
    labels: String,
    description: String,
    enabled: bool,
}

impl Default for RuleForm {
    /// A new rule's form as the page first shows it.
    fn default() -> Self {
        RuleForm {
            name: String::new(),
            kind: "metric".into(),
            key: String::new(),
            aggregation: "avg".into(),
            window_minutes: "5".into(),
            comparison: ">".into(),
            threshold: String::new(),
            device: String::new(),
            site: String::new(),
            group_by: String::new(),
            condition: Condition::ALL[0].as_str().into(),
            source: String::new(),
            for_minutes: "0".into(),
            severity: "warning".into(),
            channels: Vec::new(),
            labels: String::new(),
            description: String::new(),
            enabled: true,
        }
    }
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

fn minutes(secs: i32) -> String {
    (secs / 60).to_string()
}

impl RuleForm {
    /// The form's fields from a posted body; `channel` repeats, one per channel chosen.
    fn parse(body: &[u8]) -> Self {
        let mut form = RuleForm {
            enabled: false,
            channels: Vec::new(),
            ..RuleForm::default()
        };
        for (name, value) in url::form_urlencoded::parse(body) {
            let value = value.into_owned();
            let field = match name.as_ref() {
                "name" => &mut form.name,
                "kind" => &mut form.kind,
                "key" => &mut form.key,
                "aggregation" => &mut form.aggregation,
                "window_minutes" => &mut form.window_minutes,
                "comparison" => &mut form.comparison,
                "threshold" => &mut form.threshold,
                "device" => &mut form.device,
                "site" => &mut form.site,
                "group_by" => &mut form.group_by,
                "condition" => &mut form.condition,
                "source" => &mut form.source,
                "for_minutes" => &mut form.for_minutes,
                "severity" => &mut form.severity,
                "labels" => &mut form.labels,
                "description" => &mut form.description,
                "channel" => {
                    form.channels.push(value);
                    continue;
                }
                "enabled" => {
                    form.enabled = value == "on";
                    continue;
                }
                _ => continue,
            };
            *field = value;
        }
        form
    }

    /// A saved rule as its editor shows it.
    fn of(input: &RuleInput) -> Self {
        let mut form = RuleForm {
            name: input.name.clone(),
            for_minutes: minutes(input.for_secs),
            severity: input.severity.as_str().to_owned(),
            channels: input.channels.iter().map(Uuid::to_string).collect(),
            labels: input
                .labels
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect::<Vec<_>>()
                .join(", "),
            description: input.description.clone(),
            enabled: input.enabled,
            ..RuleForm::default()
        };
        match &input.spec {
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
                form.key = key.clone();
                form.aggregation = aggregation.as_str().to_owned();
                form.window_minutes = minutes(*window_secs);
                form.comparison = comparison.as_str().to_owned();
                form.threshold = threshold.to_string();
                form.site = site.clone().unwrap_or_default();
                form.device = device.clone().unwrap_or_default();
                form.group_by = group_by
                    .map(|group| group.as_str().to_owned())
                    .unwrap_or_default();
            }
            RuleSpec::Pipeline {
                condition,
                source,
                threshold,
                window_secs,
            } => {
                form.kind = "pipeline".into();
                form.condition = condition.as_str().to_owned();
                form.source = source.map(|source| source.to_string()).unwrap_or_default();
                form.threshold = threshold.map(|value| value.to_string()).unwrap_or_default();
                form.window_minutes = window_secs.map(minutes).unwrap_or_default();
            }
        }
        form
    }

    /// The rule the form describes; what the form does not show (the evaluation cadence) is
    /// `base`'s, or the defaults for a new rule.
    fn input(&self, base: Option<RuleInput>) -> Result<RuleInput, StoreError> {
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
                group_by: match optional(&self.group_by) {
                    Some(group) => Some(
                        GroupBy::parse(&group)
                            .ok_or_else(|| invalid("group_by", "a site or a device"))?,
                    ),
                    None => None,
                },
            },
            "pipeline" => {
                let condition = Condition::parse(&self.condition)
                    .ok_or_else(|| invalid("condition", "choose a condition"))?;
                RuleSpec::Pipeline {
                    condition,
                    source: match optional(&self.source) {
                        Some(source) => Some(
                            Uuid::parse_str(&source)
                                .map_err(|_| invalid("source", "choose a source"))?,
                        ),
                        None => None,
                    },
                    threshold: optional(&self.threshold)
                        .map(|text| number(&text, "threshold"))
                        .transpose()?,
                    window_secs: (condition == Condition::DlqGrowth)
                        .then(|| number::<i32>(&self.window_minutes, "window"))
                        .transpose()?
                        .map(|minutes| minutes.saturating_mul(60)),
                }
            }
            _ => return Err(invalid("kind", "a metric or a pipeline rule")),
        };
        let mut input = match base {
            Some(mut base) => {
                base.name.clone_from(&self.name);
                base.spec = spec;
                base
            }
            None => RuleInput::new(&self.name, spec),
        };
        input.for_secs = optional(&self.for_minutes)
            .map(|text| number::<i32>(&text, "for"))
            .transpose()?
            .unwrap_or(0)
            .saturating_mul(60);
        input.severity = Severity::parse(&self.severity)
            .ok_or_else(|| invalid("severity", "info, warning or critical"))?;
        input.channels = self
            .channels
            .iter()
            .filter(|channel| !channel.is_empty())
            .map(|channel| {
                Uuid::parse_str(channel).map_err(|_| invalid("channels", "choose a channel"))
            })
            .collect::<Result<_, _>>()?;
        input.labels = self
            .labels
            .split(',')
            .filter(|pair| !pair.trim().is_empty())
            .map(|pair| match pair.split_once('=') {
                Some((key, value)) => Ok((key.trim().to_owned(), value.trim().to_owned())),
                None => Err(invalid("labels", "key=value pairs separated by commas")),
            })
            .collect::<Result<_, _>>()?;
        input.description.clone_from(&self.description);
        input.enabled = self.enabled;
        Ok(input)
    }
}

async fn create_rule(
    State(state): State<AppState>,
    member: Member,
    body: Bytes,
) -> Result<Response, PageError> {
    member.require(Permission::ManageAlertRules)?;
    let form = RuleForm::parse(&body);
    let input = match form.input(None) {
        Ok(input) => input,
        Err(error) => return refused(&state, &member, error, Some(form)).await,
    };
    let mut tx = member.tx(&state, Permission::ManageAlertRules).await?;
    match store::alerts::create_rule(&mut tx, &input).await {
        Ok(id) => {
            tx.commit().await?;
            Ok(Redirect::to(&format!("/app/alerts/rules/{id}?done=rule")).into_response())
        }
        Err(error) => {
            drop(tx);
            refused(&state, &member, error, Some(form)).await
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
            render_page(
                &state,
                &member,
                StatusCode::CREATED,
                Some(notice),
                None,
                None,
            )
            .await
        }
        Err(error) => {
            drop(tx);
            refused(&state, &member, error, None).await
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
        Err(error) => return refused(&state, &member, error, None).await,
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
            refused(&state, &member, error, None).await
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
    notice: Option<String>,
    problem: Option<String>,
    /// The editor, for those who manage rules.
    fields: Option<RuleFields>,
}

async fn update_rule(
    State(state): State<AppState>,
    member: Member,
    Path(rule): Path<String>,
    body: Bytes,
) -> Result<Response, PageError> {
    let rule = id(&rule)?;
    let form = RuleForm::parse(&body);
    let mut tx = member.tx(&state, Permission::ManageAlertRules).await?;
    let current = store::alerts::get_rule(&mut tx, rule).await?;
    let outcome = match form.input(Some(current.input)) {
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
            let (status, problem) = crate::pages::correctable(error)?;
            show_rule(
                &state,
                &member,
                rule,
                status,
                None,
                Some(problem),
                Some(form),
            )
            .await
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
    show_rule(
        &state,
        &member,
        rule,
        StatusCode::OK,
        notice(&done.done),
        None,
        None,
    )
    .await
}

/// A rule's page; its editor holds `draft` when a posted edit was refused, else the saved rule.
async fn show_rule(
    state: &AppState,
    member: &Member,
    rule: Uuid,
    status: StatusCode,
    notice: Option<String>,
    problem: Option<String>,
    draft: Option<RuleForm>,
) -> Result<Response, PageError> {
    let can_manage = member.role().allows(Permission::ManageAlertRules);
    let mut tx = member.tx(state, Permission::ViewDashboards).await?;
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
            group_by,
            ..
        } => {
            // The rule's own series: one line, or its five busiest sites or devices.
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
                group_by: *group_by,
                limit: 5,
            };
            let found_series = store::analytics::series(&mut tx, &query).await?;
            let mut buckets: std::collections::BTreeMap<OffsetDateTime, bool> =
                std::collections::BTreeMap::new();
            let mut lines: Vec<crate::charts::Line> = found_series
                .into_iter()
                .map(|series| {
                    let points: Vec<(OffsetDateTime, f64)> =
                        series.points.iter().map(|p| (p.at, p.value)).collect();
                    for (at, value) in &points {
                        *buckets.entry(*at).or_default() |= comparison.holds(*value, *threshold);
                    }
                    crate::charts::Line {
                        label: series.label.or(series.group).unwrap_or_else(|| key.clone()),
                        points,
                    }
                })
                .collect();
            let breaching = buckets.values().filter(|held| **held).count();
            lines.push(crate::charts::Line {
                label: format!("threshold {}", comparison.as_str()),
                points: buckets.keys().map(|at| (*at, *threshold)).collect(),
            });
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
                &lines,
            );
            Some((
                chart.render().map_err(|_| PageError::Unavailable)?,
                breaching,
                buckets.len(),
            ))
        }
        RuleSpec::Pipeline { .. } => None,
    };
    let fields = if can_manage {
        let form = draft.unwrap_or_else(|| RuleForm::of(&found.input));
        Some(RuleFields::load(&mut tx, form).await?)
    } else {
        None
    };
    tx.commit().await?;
    let page = RulePage {
        fields,
        problem,
        chrome: member.visitor.chrome("app"),
        shell: shell(member, PATH),
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
        notice,
    };
    Ok(render(status, &page))
}
