//! `/app/settings/masking`: list, add, edit and remove the workspace's masking rules, with a
//! preview of the form's policy on a sample event. Viewing and changing both need
//! `ManageMasking` (owners and admins): the rules say where the workspace keeps personal data,
//! and the database grants reading them to the same roles.
//!
//! The preview is a form post (`/app/settings/masking/preview`) that htmx sends as the admin
//! types, swapping in the fragment it answers; without JavaScript the "Preview" button posts the
//! same form and gets the whole page back.

use askama::Template;
use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use domain::Permission;
use protocol::masking::MaskAction;
use serde::Deserialize;
use store::StoreError;
use store::masking::MaskingRule;

use crate::AppState;
use crate::auth::session::Member;
use crate::masking::{
    CheckedRule, PREVIEW_HASH_NOTE, RuleFields, RuleProblem, Sample, bronze_sample, example_sample,
    policy_with, preview,
};
use crate::pages::{Chrome, PageError, SelectOption, render, select_options};
use crate::rules::query_encode;
use crate::shell::{Shell, shell};

const PATH: &str = "/app/settings/masking";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(PATH, get(masking_page).post(create_rule))
        .route("/app/settings/masking/update", post(update_rule))
        .route("/app/settings/masking/remove", post(remove_rule))
        .route("/app/settings/masking/preview", post(preview_form))
}

/// Every field of the page's form: the rule, the rule it replaces when editing, the sample.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct MaskingForm {
    source_table: String,
    field_path: String,
    action: String,
    original_table: String,
    original_path: String,
    sample_table: String,
    sample: String,
}

impl MaskingForm {
    fn rule_fields(&self) -> RuleFields {
        RuleFields {
            source_table: self.source_table.clone(),
            field_path: self.field_path.clone(),
            action: self.action.clone(),
        }
    }

    /// The rule being edited, by table and path.
    fn replacing(&self) -> Option<(&str, &str)> {
        (!self.original_path.is_empty())
            .then_some((self.original_table.as_str(), self.original_path.as_str()))
    }

    /// Whether the form holds no rule yet (a fresh page): then the preview shows the saved
    /// policy without complaining about empty fields.
    fn rule_is_blank(&self) -> bool {
        self.field_path.trim().is_empty() && self.original_path.is_empty()
    }
}

#[derive(Debug)]
struct RuleRow {
    source_table: String,
    field_path: String,
    action: String,
    edit_href: String,
}

/// The preview region: before and after, or why there is none.
#[derive(Template)]
#[template(path = "app/masking_preview.html")]
struct PreviewFragment {
    sample_table: String,
    /// Why the sample could not be read.
    sample_error: Option<String>,
    /// Why the form's own rule is not part of the preview.
    rule_note: Option<&'static str>,
    /// The rules applied to the sample's table, as `action path (table)`.
    applied: Vec<String>,
    before: String,
    after: String,
    /// Why the edge would refuse such an event under this policy.
    refused: Option<String>,
    hash_note: &'static str,
}

#[derive(Template)]
#[template(path = "app/masking.html")]
struct MaskingPage {
    chrome: Chrome,
    shell: Shell,
    rules: Vec<RuleRow>,
    form: MaskingForm,
    editing: bool,
    actions: Vec<SelectOption>,
    problems: Vec<RuleProblem>,
    notice: Option<&'static str>,
    preview_html: String,
}

impl MaskingPage {
    fn problem(&self, field: &str) -> Option<&str> {
        self.problems
            .iter()
            .find(|problem| problem.field == field)
            .map(|problem| problem.message.as_str())
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct MaskingQuery {
    done: String,
    edit_table: String,
    edit_path: String,
    /// Load the newest bronze event of this table into the sample.
    sample_table: String,
}

fn notice(code: &str) -> Option<&'static str> {
    match code {
        "created" => {
            Some("Rule added. The edge applies it to events arriving from now on, within a second.")
        }
        "updated" => {
            Some("Rule saved. The edge applies it to events arriving from now on, within a second.")
        }
        "removed" => Some("Rule removed. Events arriving from now on are no longer masked by it."),
        _ => None,
    }
}

async fn masking_page(
    State(state): State<AppState>,
    member: Member,
    Query(query): Query<MaskingQuery>,
) -> Result<Response, PageError> {
    let mut tx = member.tx(&state, Permission::ManageMasking).await?;
    let saved = store::masking::list(&mut tx).await?;
    let mut form = MaskingForm {
        source_table: "*".into(),
        action: "hash".into(),
        ..MaskingForm::default()
    };
    if !query.edit_path.is_empty() {
        let editing = saved
            .iter()
            .find(|rule| {
                rule.source_table == query.edit_table && rule.field_path == query.edit_path
            })
            .ok_or(PageError::NotFound)?;
        form = MaskingForm {
            source_table: editing.source_table.clone(),
            field_path: editing.field_path.clone(),
            action: editing.action.clone(),
            original_table: editing.source_table.clone(),
            original_path: editing.field_path.clone(),
            ..MaskingForm::default()
        };
    }
    // The sample: the newest event of the asked table, else of the rule's table, else the
    // newest of all; the built-in example when bronze has none.
    let wanted = [query.sample_table.trim(), form.source_table.as_str()]
        .into_iter()
        .find(|table| !table.is_empty() && *table != "*");
    let mut recent = store::masking::latest_bronze_sample(&mut tx, wanted).await?;
    if recent.is_none() && wanted.is_some() {
        recent = store::masking::latest_bronze_sample(&mut tx, None).await?;
    }
    tx.commit().await?;
    (form.sample_table, form.sample) = recent.map_or_else(example_sample, bronze_sample);
    Ok(render_page(
        &member,
        StatusCode::OK,
        &saved,
        form,
        Vec::new(),
        notice(&query.done),
    ))
}

/// The preview of the form's policy on the form's sample.
fn preview_fragment(saved: &[MaskingRule], form: &MaskingForm) -> PreviewFragment {
    let checked = form.rule_fields().check();
    let rule_note = match &checked {
        Err(_) if !form.rule_is_blank() => {
            Some("The rule in the form is not in this preview until its fields are valid.")
        }
        _ => None,
    };
    let policy = policy_with(saved, form.replacing(), checked.as_ref().ok());
    let mut fragment = PreviewFragment {
        sample_table: form.sample_table.clone(),
        sample_error: None,
        rule_note,
        applied: Vec::new(),
        before: form.sample.clone(),
        after: String::new(),
        refused: None,
        hash_note: PREVIEW_HASH_NOTE,
    };
    let sample = match Sample::parse(&form.sample_table, &form.sample) {
        Ok(sample) => sample,
        Err(error) => {
            fragment.sample_error = Some(error.to_string());
            return fragment;
        }
    };
    let shown = preview(&policy, &sample);
    fragment.sample_table = sample.qualified_table();
    fragment.before = pretty(&sample.to_json());
    fragment.applied = shown
        .applied
        .iter()
        .map(|rule| {
            let table = match rule.table.as_str() {
                "*" => "every table".to_owned(),
                name => name.to_owned(),
            };
            format!("{} {} ({table})", rule.action, rule.path)
        })
        .collect();
    match shown.outcome {
        Ok(masked) => fragment.after = pretty(&masked.to_json()),
        Err(error) => {
            fragment.refused = Some(format!(
                "The edge would refuse events like this one: {error}."
            ))
        }
    }
    fragment
}

fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

fn render_page(
    member: &Member,
    status: StatusCode,
    saved: &[MaskingRule],
    form: MaskingForm,
    problems: Vec<RuleProblem>,
    notice: Option<&'static str>,
) -> Response {
    let preview_html = preview_fragment(saved, &form)
        .render()
        .unwrap_or_else(|error| {
            tracing::error!(%error, "masking preview failed to render");
            String::new()
        });
    render(
        status,
        &MaskingPage {
            chrome: member.visitor.chrome("app"),
            shell: shell(member, PATH),
            rules: saved
                .iter()
                .map(|rule| RuleRow {
                    source_table: rule.source_table.clone(),
                    field_path: rule.field_path.clone(),
                    action: rule.action.clone(),
                    edit_href: format!(
                        "{PATH}?edit_table={}&edit_path={}#rule-heading",
                        query_encode(&rule.source_table),
                        query_encode(&rule.field_path)
                    ),
                })
                .collect(),
            editing: form.replacing().is_some(),
            actions: select_options(&MaskAction::ALL.map(MaskAction::as_str), form.action.trim()),
            form,
            problems,
            notice,
            preview_html,
        },
    )
}

/// The workspace's saved rules, read as the member (who must manage masking).
async fn saved_rules(state: &AppState, member: &Member) -> Result<Vec<MaskingRule>, PageError> {
    let mut tx = member.tx(state, Permission::ManageMasking).await?;
    let saved = store::masking::list(&mut tx).await?;
    tx.commit().await?;
    Ok(saved)
}

/// htmx asks for the fragment; a plain form post gets the page.
fn wants_fragment(headers: &HeaderMap) -> bool {
    headers
        .get("hx-request")
        .is_some_and(|value| value.as_bytes() == b"true")
}

async fn preview_form(
    State(state): State<AppState>,
    member: Member,
    headers: HeaderMap,
    Form(form): Form<MaskingForm>,
) -> Result<Response, PageError> {
    let saved = saved_rules(&state, &member).await?;
    if wants_fragment(&headers) {
        return Ok(render(StatusCode::OK, &preview_fragment(&saved, &form)));
    }
    Ok(render_page(
        &member,
        StatusCode::OK,
        &saved,
        form,
        Vec::new(),
        None,
    ))
}

/// The page again with the form as sent and what is wrong with it.
async fn refuse(
    state: &AppState,
    member: &Member,
    form: MaskingForm,
    problems: Vec<RuleProblem>,
) -> Result<Response, PageError> {
    let saved = saved_rules(state, member).await?;
    Ok(render_page(
        member,
        StatusCode::UNPROCESSABLE_ENTITY,
        &saved,
        form,
        problems,
        None,
    ))
}

fn duplicate() -> Vec<RuleProblem> {
    vec![RuleProblem {
        field: "field_path",
        message: "There is already a rule for this table and path: edit that rule instead.".into(),
    }]
}

/// Saves the form's rule: a new one (`original` absent) or an edit of `original`.
async fn save(state: &AppState, member: &Member, form: MaskingForm) -> Result<Response, PageError> {
    member.require(Permission::ManageMasking)?;
    let checked: CheckedRule = match form.rule_fields().check() {
        Ok(checked) => checked,
        Err(problems) => return refuse(state, member, form, problems).await,
    };
    let mut tx = member.tx(state, Permission::ManageMasking).await?;
    let (outcome, done) = match form.replacing() {
        Some((table, path)) => (
            store::masking::update(&mut tx, table, path, &checked.stored).await,
            "updated",
        ),
        None => (
            store::masking::create(&mut tx, &checked.stored).await,
            "created",
        ),
    };
    match outcome {
        Ok(()) => {
            tx.commit().await?;
            tracing::info!(by = %member.session().user.user_id, done, "masking rule saved");
            Ok(Redirect::to(&format!("{PATH}?done={done}#rules-heading")).into_response())
        }
        Err(StoreError::AlreadyExists(_)) => {
            drop(tx);
            refuse(state, member, form, duplicate()).await
        }
        Err(error) => Err(error.into()),
    }
}

async fn create_rule(
    State(state): State<AppState>,
    member: Member,
    Form(mut form): Form<MaskingForm>,
) -> Result<Response, PageError> {
    // A new rule replaces nothing, whatever the form says.
    form.original_table.clear();
    form.original_path.clear();
    save(&state, &member, form).await
}

async fn update_rule(
    State(state): State<AppState>,
    member: Member,
    Form(form): Form<MaskingForm>,
) -> Result<Response, PageError> {
    if form.original_path.is_empty() {
        return Err(PageError::NotFound);
    }
    save(&state, &member, form).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RemoveForm {
    source_table: String,
    field_path: String,
}

async fn remove_rule(
    State(state): State<AppState>,
    member: Member,
    Form(form): Form<RemoveForm>,
) -> Result<Response, PageError> {
    let mut tx = member.tx(&state, Permission::ManageMasking).await?;
    store::masking::remove(&mut tx, &form.source_table, &form.field_path).await?;
    tx.commit().await?;
    tracing::info!(by = %member.session().user.user_id, "masking rule removed");
    Ok(Redirect::to(&format!("{PATH}?done=removed#rules-heading")).into_response())
}
