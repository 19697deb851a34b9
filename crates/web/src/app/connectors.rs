//! `/app/connectors`: the connector wizard, for those who manage sources. Choose the kind and a
//! name → the source and a one-time pairing token are created, and the page shows the exact
//! `tributary-agent pair` command, the `agent.toml` and CA certificate to download, and the
//! source database's prerequisites → it waits live (server-sent events) for the agent to pair
//! and to report its `check` (findings and the source's tables) → the admin chooses the tables
//! and reviews how each feeds the read models → the agent runs, and the first events show.
//!
//! The step is derived from the source's record ([`store::connectors::setup`]), so leaving and
//! coming back resumes where it was; an expired token is re-issued from the pairing step.
//! Everything here is also in the JSON API (`/api/v1/sources`, `.../pairing-token`,
//! `.../setup`, `.../tables`, `.../mappings`).

use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::extract::{Form, Path, RawForm, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use domain::read_model::EntityKind;
use domain::{Permission, Role, SourceId};
use serde::Deserialize;
use store::connectors::{SetupStep, setup};
use store::sources::IssuedPairingToken;
use store::{StoreError, TenantTx};

use crate::AppState;
use crate::agent_setup::{self, AgentEndpoint, TablePreview};
use crate::auth::session::Member;
use crate::pages::{Chrome, PageError, render};
use crate::shell::{Shell, shell, timestamp};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/app/connectors", get(connectors_page).post(create))
        .route("/app/connectors/tributary-ca.pem", get(ca_certificate))
        .route("/app/connectors/{source}", get(wizard_page))
        .route("/app/connectors/{source}/stream", get(stream))
        .route("/app/connectors/{source}/token", post(new_token))
        .route("/app/connectors/{source}/tables", post(choose_tables))
        .route("/app/connectors/{source}/agent.toml", get(agent_toml))
}

/// A source as the connectors page lists it.
struct SetupRow {
    source_id: String,
    name: String,
    kind: String,
    step: &'static str,
    step_label: &'static str,
}

#[derive(Template)]
#[template(path = "app/connectors.html")]
struct ConnectorsPage {
    chrome: Chrome,
    shell: Shell,
    rows: Vec<SetupRow>,
    problem: String,
    name: String,
}

/// What a step is called where the wizard lists it.
fn step_label(step: SetupStep) -> &'static str {
    match step {
        SetupStep::Pair => "Waiting for the agent to pair",
        SetupStep::Check => "Waiting for the agent's check",
        SetupStep::Tables => "Choose the tables",
        SetupStep::Run => "Waiting for the first events",
        SetupStep::Done => "Streaming",
        SetupStep::Revoked => "Revoked",
    }
}

async fn connectors_page(
    State(state): State<AppState>,
    member: Member,
) -> Result<Response, PageError> {
    member.require(Permission::ManageSources)?;
    list_page(
        &state,
        &member,
        StatusCode::OK,
        String::new(),
        String::new(),
    )
    .await
}

async fn list_page(
    state: &AppState,
    member: &Member,
    status: StatusCode,
    problem: String,
    name: String,
) -> Result<Response, PageError> {
    let mut tx = member.tx(state, Permission::ManageSources).await?;
    let mut rows = Vec::new();
    for source in store::sources::list_sources(&mut tx).await? {
        let step = setup(&mut tx, source.source_id).await?.step;
        rows.push(SetupRow {
            source_id: source.source_id.to_string(),
            name: source.name,
            kind: source.kind,
            step: step.as_str(),
            step_label: step_label(step),
        });
    }
    tx.commit().await?;
    Ok(render(
        status,
        &ConnectorsPage {
            chrome: member.visitor.chrome("app"),
            shell: shell(member, "/app/connectors"),
            rows,
            problem,
            name,
        },
    ))
}

#[derive(Deserialize)]
struct NewSourceForm {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    name: String,
}

/// `POST /app/connectors`: creates the source and its pairing token (audited), and shows the
/// wizard with the token, the only time it is shown.
async fn create(
    State(state): State<AppState>,
    member: Member,
    Form(form): Form<NewSourceForm>,
) -> Result<Response, PageError> {
    member.require(Permission::ManageSources)?;
    let mut tx = member.tx(&state, Permission::ManageSources).await?;
    let created = store::sources::create_source(&mut tx, &form.name, &form.kind).await;
    let (source, token) = match created {
        Ok(created) => created,
        Err(error) => {
            let problem = match error {
                StoreError::Invalid(why) => format!("{why}."),
                StoreError::AlreadyExists(_) => {
                    "A source with this name exists: choose another name.".to_owned()
                }
                other => return Err(other.into()),
            };
            drop(tx);
            return list_page(
                &state,
                &member,
                StatusCode::UNPROCESSABLE_ENTITY,
                problem,
                form.name,
            )
            .await;
        }
    };
    tx.commit().await?;
    wizard(&state, &member, source.source_id, Some(token)).await
}

#[derive(Template)]
#[template(path = "app/connector.html")]
struct WizardPage {
    chrome: Chrome,
    shell: Shell,
    source_id: String,
    name: String,
    kind: String,
    /// The token just issued and its `pair` command, shown once.
    token: Option<TokenView>,
    /// The current step, rendered as its live stream also sends it.
    step_html: String,
    live: bool,
}

struct TokenView {
    token: String,
    expires_at: String,
    state_dir_command: String,
    pair_command: String,
}

/// The wizard's steps for a source of `kind`, with the state of each at `step`.
fn step_list(kind: &str, step: SetupStep) -> Vec<(&'static str, &'static str)> {
    let mut names = vec![("kind", "Kind and name"), ("pair", "Pair the agent")];
    if kind == "postgres" {
        names.push(("check", "Check the source"));
        names.push(("tables", "Choose the tables"));
    }
    names.push(("run", "Run the agent"));
    names.push(("done", "First events"));
    let current = names
        .iter()
        .position(|(name, _)| *name == step.as_str())
        .unwrap_or(names.len() - 1);
    names
        .into_iter()
        .enumerate()
        .map(|(index, (_, label))| {
            let state = if index < current || step == SetupStep::Done {
                "done"
            } else if index == current {
                "current"
            } else {
                "todo"
            };
            (label, state)
        })
        .collect()
}

async fn wizard(
    state: &AppState,
    member: &Member,
    source: SourceId,
    token: Option<IssuedPairingToken>,
) -> Result<Response, PageError> {
    let mut tx = member.tx(state, Permission::ManageSources).await?;
    let current = setup(&mut tx, source).await?;
    let view = StepView {
        source,
        csrf: member.visitor.chrome("app").csrf,
        endpoint: state.agents.clone(),
    };
    let step_html = view.fragment(&mut tx, member.role()).await?;
    tx.commit().await?;
    let token = token.map(|token| {
        let commands = agent_setup::commands(&current, &state.agents, &token.token);
        TokenView {
            token: token.token,
            expires_at: timestamp(token.expires_at),
            state_dir_command: commands.state_dir,
            pair_command: commands.pair,
        }
    });
    Ok(render(
        StatusCode::OK,
        &WizardPage {
            chrome: member.visitor.chrome("app"),
            shell: shell(member, "/app/connectors"),
            source_id: source.to_string(),
            name: current.source.name.clone(),
            kind: current.source.kind.clone(),
            token,
            step_html,
            live: !matches!(current.step, SetupStep::Done | SetupStep::Revoked),
        },
    ))
}

fn source_id(text: &str) -> Result<SourceId, PageError> {
    text.parse().map_err(|_| PageError::NotFound)
}

async fn wizard_page(
    State(state): State<AppState>,
    member: Member,
    Path(source): Path<String>,
) -> Result<Response, PageError> {
    member.require(Permission::ManageSources)?;
    wizard(&state, &member, source_id(&source)?, None).await
}

/// `POST /app/connectors/{source}/token`: a new one-time pairing token (audited), shown once.
async fn new_token(
    State(state): State<AppState>,
    member: Member,
    Path(source): Path<String>,
) -> Result<Response, PageError> {
    member.require(Permission::ManageSources)?;
    let source = source_id(&source)?;
    let mut tx = member.tx(&state, Permission::ManageSources).await?;
    let token = store::sources::issue_pairing_token(&mut tx, source)
        .await
        .map_err(refused)?;
    tx.commit().await?;
    wizard(&state, &member, source, Some(token)).await
}

/// `POST /app/connectors/{source}/tables`: the tables to capture (each a `table` field) and, for
/// each, the read model it feeds (`kind:<table>`: `default` keeps the mapping by name; a kind
/// stores a mapping with the default columns of that kind; audited).
async fn choose_tables(
    State(state): State<AppState>,
    member: Member,
    Path(source): Path<String>,
    RawForm(body): RawForm,
) -> Result<Response, PageError> {
    member.require(Permission::ManageSources)?;
    let source = source_id(&source)?;
    let mut tables = Vec::new();
    let mut kinds = Vec::new();
    for (field, value) in url::form_urlencoded::parse(&body) {
        if field == "table" {
            tables.push(value.into_owned());
        } else if let Some(table) = field.strip_prefix("kind:") {
            kinds.push((table.to_owned(), value.into_owned()));
        }
    }
    if tables.is_empty() {
        return Err(PageError::BadRequest(
            "Choose at least one table to capture.".into(),
        ));
    }
    let mut tx = member.tx(&state, Permission::ManageSources).await?;
    let current = setup(&mut tx, source).await?;
    let chosen = store::connectors::choose_tables(&mut tx, source, &tables)
        .await
        .map_err(refused)?;
    let reported = current
        .check
        .as_ref()
        .map(|check| check.tables.as_slice())
        .unwrap_or_default();
    for (table, kind) in kinds {
        if !chosen.contains(&table) || kind == "default" {
            continue;
        }
        let columns = reported
            .iter()
            .find(|reported| reported.name == table)
            .map(|reported| reported.columns.clone())
            .unwrap_or_default();
        let mapping = mapping_for(source, &table, &kind, &columns)?;
        store::read_models::put_mapping(&mut tx, &mapping)
            .await
            .map_err(refused)?;
    }
    tx.commit().await?;
    Ok(Redirect::to(&format!("/app/connectors/{source}")).into_response())
}

/// The stored mapping of `table` as a `kind` with its columns mapped by that kind's convention.
fn mapping_for(
    source: SourceId,
    table: &str,
    kind: &str,
    columns: &[String],
) -> Result<store::read_models::MappingRow, PageError> {
    let mut mapping = store::read_models::MappingRow {
        source_id: *source.as_uuid(),
        source_table: table.to_owned(),
        entity_kind: kind.to_owned(),
        id_column: None,
        columns: Default::default(),
        reading_entity_kind: None,
    };
    if kind != "ignore" {
        let entity = EntityKind::parse(kind)
            .ok_or_else(|| PageError::BadRequest(format!("{kind:?} is not a read model.")))?;
        let (typed, _) = agent_setup::column_preview(entity, columns);
        for (column, target) in typed {
            if target == "id" {
                mapping.id_column = Some(column);
            } else {
                mapping.columns.insert(column, target.to_owned());
            }
        }
    }
    store::read_models::validate_mapping(&mapping).map_err(|why| {
        PageError::BadRequest(format!("The mapping of {table} is not valid: {why}."))
    })?;
    Ok(mapping)
}

/// A refusal the store explains, said on the page; anything else is the usual page error.
fn refused(error: StoreError) -> PageError {
    match error {
        StoreError::Forbidden(why) => PageError::BadRequest(format!("This cannot be done: {why}.")),
        StoreError::Invalid(why) => PageError::BadRequest(format!("{why}.")),
        StoreError::InvalidParameter { message, .. } => PageError::BadRequest(message),
        other => other.into(),
    }
}

/// `GET /app/connectors/{source}/agent.toml`: the agent's configuration, as a download.
async fn agent_toml(
    State(state): State<AppState>,
    member: Member,
    Path(source): Path<String>,
) -> Result<Response, PageError> {
    member.require(Permission::ManageSources)?;
    let source = source_id(&source)?;
    let mut tx = member.tx(&state, Permission::ManageSources).await?;
    let current = setup(&mut tx, source).await?;
    tx.commit().await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/toml; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"agent.toml\"",
            ),
        ],
        agent_setup::agent_toml(&current, &state.agents),
    )
        .into_response())
}

/// `GET /app/connectors/tributary-ca.pem`: the platform's CA certificate, which `pair --ca`
/// pins (a public certificate; served to those who set agents up).
async fn ca_certificate(
    State(state): State<AppState>,
    member: Member,
) -> Result<Response, PageError> {
    member.require(Permission::ManageSources)?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-pem-file"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"tributary-ca.pem\"",
            ),
        ],
        state.agents.ca_pem.clone(),
    )
        .into_response())
}

async fn stream(
    State(state): State<AppState>,
    member: Member,
    Path(source): Path<String>,
) -> Result<Response, PageError> {
    member.require(Permission::ManageSources)?;
    let source = source_id(&source)?;
    // Not found is said now, not as a stream that ends at once.
    let mut tx = member.tx(&state, Permission::ManageSources).await?;
    store::sources::get_source(&mut tx, source).await?;
    tx.commit().await?;
    let view = StepView {
        source,
        csrf: member.visitor.chrome("app").csrf,
        endpoint: state.agents.clone(),
    };
    crate::live::view_stream(state, member, Arc::new(view))
}

/// The wizard's current step, as the page and its live stream draw it.
#[derive(Debug)]
struct StepView {
    source: SourceId,
    csrf: String,
    endpoint: AgentEndpoint,
}

struct FindingView {
    level: String,
    message: String,
}

struct EventView {
    table: String,
    op: String,
    at: String,
}

#[derive(Template)]
#[template(path = "app/connector_step.html")]
struct StepFragment {
    source_id: String,
    kind: String,
    step: &'static str,
    /// The step list, each with its state (`done`, `current`, `todo`), kept current with it.
    steps: Vec<(&'static str, &'static str)>,
    csrf: String,
    token_expires: Option<String>,
    token_expired: bool,
    commands: agent_setup::Commands,
    prerequisites: String,
    checked_at: String,
    ready: bool,
    findings: Vec<FindingView>,
    fixes: usize,
    warnings: usize,
    tables: Vec<TablePreview>,
    tables_omitted: i64,
    chosen: Vec<String>,
    agent_state: String,
    events: Vec<EventView>,
}

/// The read models a table may feed, for the table step's choices.
const KIND_CHOICES: [&str; 5] = ["site", "device", "session", "reading", "ignore"];

impl StepFragment {
    fn kind_choices(&self) -> &'static [&'static str] {
        &KIND_CHOICES
    }
}

impl StepView {
    async fn fragment(&self, tx: &mut TenantTx, _role: Role) -> Result<String, StoreError> {
        let current = setup(tx, self.source).await?;
        let mappings = store::read_models::list_mappings(tx).await?;
        let now = time::OffsetDateTime::now_utc();
        let commands = agent_setup::commands(&current, &self.endpoint, "<the pairing token>");
        let (checked_at, ready, findings, tables_omitted) = match &current.check {
            Some(check) => (
                timestamp(check.reported_at),
                check.ready,
                check
                    .findings
                    .iter()
                    .map(|finding| FindingView {
                        level: finding.level.clone(),
                        message: finding.message.clone(),
                    })
                    .collect(),
                check.tables_omitted,
            ),
            None => (String::new(), false, Vec::new(), 0),
        };
        let fragment = StepFragment {
            source_id: self.source.to_string(),
            kind: current.source.kind.clone(),
            step: current.step.as_str(),
            steps: step_list(&current.source.kind, current.step),
            csrf: self.csrf.clone(),
            token_expires: current.pairing_token_expires_at.map(timestamp),
            token_expired: current
                .pairing_token_expires_at
                .is_none_or(|expires| expires <= now),
            prerequisites: agent_setup::prerequisites_sql(&current),
            commands,
            checked_at,
            ready,
            fixes: findings
                .iter()
                .filter(|finding: &&FindingView| finding.level == "fix")
                .count(),
            warnings: findings
                .iter()
                .filter(|finding: &&FindingView| finding.level == "warning")
                .count(),
            findings,
            tables: agent_setup::table_previews(&current, &mappings),
            tables_omitted,
            chosen: current.capture_tables.clone().unwrap_or_default(),
            agent_state: current
                .source
                .heartbeat()
                .map(|heartbeat| heartbeat.state)
                .unwrap_or_default(),
            events: current
                .recent_events
                .iter()
                .map(|event| EventView {
                    table: event.table.clone(),
                    op: event.op.clone(),
                    at: timestamp(event.event_time),
                })
                .collect(),
        };
        Ok(fragment.render().unwrap_or_else(|error| {
            tracing::error!(%error, "the wizard's step failed to render");
            String::new()
        }))
    }
}

impl crate::live::LiveView for StepView {
    fn permission(&self) -> Permission {
        Permission::ManageSources
    }

    fn event_name(&self) -> &'static str {
        "setup"
    }

    fn render<'a>(
        &'a self,
        tx: &'a mut TenantTx,
        role: Role,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<String, StoreError>> + Send + 'a>> {
        Box::pin(self.fragment(tx, role))
    }
}
