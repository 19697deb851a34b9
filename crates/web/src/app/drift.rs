//! `/app/drift`: the schema-drift inbox, the source fields no typed column claims, which the
//! materializer keeps in the typed extras. Owners and admins (`ManageSources`, as mapping edits)
//! promote one to a typed column (the store edits the mapping and records a rebuild request that
//! the pipeline carries out) or dismiss it until it is seen with a new type.

use askama::Template;
use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use domain::Permission;
use domain::read_model::EntityKind;
use serde::Deserialize;
use store::drift::{DriftError, DriftField};
use uuid::Uuid;

use crate::AppState;
use crate::auth::session::Member;
use crate::pages::{Chrome, PageError, render};
use crate::shell::{Shell, shell, timestamp};

const PATH: &str = "/app/drift";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(PATH, get(drift_page))
        .route("/app/drift/promote", post(promote))
        .route("/app/drift/dismiss", post(dismiss))
}

/// A drift field as the page shows it, with the typed columns its type converts to.
struct DriftRow {
    drift_id: Uuid,
    source: String,
    table: String,
    entity_kind: String,
    field_name: String,
    json_type: String,
    rows: i64,
    first_seen: String,
    last_seen: String,
    columns: Vec<&'static str>,
}

#[derive(Template)]
#[template(path = "app/drift.html")]
struct DriftPage {
    chrome: Chrome,
    shell: Shell,
    fields: Vec<DriftRow>,
    notice: Option<&'static str>,
    problem: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DriftQuery {
    done: String,
}

fn notice(code: &str) -> Option<&'static str> {
    match code {
        "promoted" => Some(
            "Promoted: the mapping now names the field, and a rebuild is requested. Once the \
             pipeline has rebuilt the workspace, the field is a typed column in Explore.",
        ),
        "dismissed" => Some("Dismissed: the field shows again only if it arrives with a new type."),
        _ => None,
    }
}

async fn drift_page(
    State(state): State<AppState>,
    member: Member,
    Query(query): Query<DriftQuery>,
) -> Result<Response, PageError> {
    render_page(&state, &member, StatusCode::OK, notice(&query.done), None).await
}

async fn render_page(
    state: &AppState,
    member: &Member,
    status: StatusCode,
    notice: Option<&'static str>,
    problem: Option<String>,
) -> Result<Response, PageError> {
    let mut tx = member.tx(state, Permission::ManageSources).await?;
    let fields = store::drift::list(&mut tx).await?;
    let sources = store::sources::list_sources(&mut tx).await?;
    tx.commit().await?;
    let fields = fields
        .into_iter()
        .map(|field| {
            let source = sources
                .iter()
                .find(|source| *source.source_id.as_uuid() == field.source_id)
                .map_or_else(|| field.source_id.to_string(), |source| source.name.clone());
            row(field, source)
        })
        .collect();
    Ok(render(
        status,
        &DriftPage {
            chrome: member.visitor.chrome("app"),
            shell: shell(member, PATH),
            fields,
            notice,
            problem,
        },
    ))
}

fn row(field: DriftField, source: String) -> DriftRow {
    let columns = EntityKind::parse(&field.entity_kind)
        .map(|kind| {
            kind.typed_columns()
                .iter()
                .filter(|(_, column_type)| store::drift::converts(&field.json_type, *column_type))
                .map(|(name, _)| *name)
                .collect()
        })
        .unwrap_or_default();
    DriftRow {
        drift_id: field.drift_id,
        source,
        table: format!("{}.{}", field.schema_name, field.table_name),
        entity_kind: field.entity_kind,
        field_name: field.field_name,
        json_type: field.json_type,
        rows: field.rows,
        first_seen: timestamp(field.first_seen_at),
        last_seen: timestamp(field.last_seen_at),
        columns,
    }
}

#[derive(Debug, Deserialize)]
struct PromoteForm {
    drift_id: String,
    typed_column: String,
}

#[derive(Debug, Deserialize)]
struct DismissForm {
    drift_id: String,
}

fn drift_id(text: &str) -> Result<Uuid, PageError> {
    Uuid::parse_str(text)
        .map_err(|_| PageError::BadRequest("The drift field id is not valid.".into()))
}

async fn promote(
    State(state): State<AppState>,
    member: Member,
    Form(form): Form<PromoteForm>,
) -> Result<Response, PageError> {
    let drift_id = drift_id(&form.drift_id)?;
    member.require(Permission::ManageReplays)?;
    let mut tx = member.tx(&state, Permission::ManageSources).await?;
    match store::drift::promote(&mut tx, drift_id, &form.typed_column).await {
        Ok(_) => {
            tx.commit().await?;
            Ok(Redirect::to(&format!("{PATH}?done=promoted")).into_response())
        }
        Err(error) => {
            drop(tx);
            refused(&state, &member, error).await
        }
    }
}

async fn dismiss(
    State(state): State<AppState>,
    member: Member,
    Form(form): Form<DismissForm>,
) -> Result<Response, PageError> {
    let drift_id = drift_id(&form.drift_id)?;
    let mut tx = member.tx(&state, Permission::ManageSources).await?;
    match store::drift::dismiss(&mut tx, drift_id).await {
        Ok(()) => {
            tx.commit().await?;
            Ok(Redirect::to(&format!("{PATH}?done=dismissed")).into_response())
        }
        Err(error) => {
            drop(tx);
            refused(&state, &member, error).await
        }
    }
}

/// The page again, saying why the action was refused: 404 for a field the workspace does not
/// have, 409 for one that cannot be promoted as asked.
async fn refused(
    state: &AppState,
    member: &Member,
    error: DriftError,
) -> Result<Response, PageError> {
    let message = error.to_string();
    match error {
        DriftError::NotFound => Err(PageError::NotFound),
        DriftError::Store(error) => Err(error.into()),
        _ => render_page(state, member, StatusCode::CONFLICT, None, Some(message)).await,
    }
}
