//! The dead-letter explorer's API: one source's letters grouped by reason code and table and
//! listed page by page with filters (`view_dead_letters`), one letter with its masked event, and
//! replays of a chosen part of a source's letters (`manage_replays`), recorded as intents the
//! pipeline carries out; `GET /api/v1/replays/{request}` shows their progress.

use axum::Json;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use domain::{Permission, SourceId};
use serde::Deserialize;
use serde_json::json;
use store::dlq::{LetterCursor, LetterFilter};
use store::replay::{LetterSelection, ReplayKind};
use time::OffsetDateTime;
use uuid::Uuid;

use super::caller::Caller;
use super::error::ApiError;
use super::extract::{Body, Path, Query, RequestBody};
use super::format::parse_id;
use super::registry::Routes;
use crate::AppState;

/// Letters per page unless `limit` says otherwise.
const DEFAULT_PAGE: i64 = 50;

pub(super) fn register(routes: Routes) -> Routes {
    routes
        .at(
            Method::GET,
            "/api/v1/sources/{source}/dead-letters",
            source_letters,
        )
        .at(Method::GET, "/api/v1/dead-letters/{letter}", letter)
        .at(
            Method::POST,
            "/api/v1/sources/{source}/dead-letters/replay",
            replay,
        )
}

/// The explorer's query: filters, the page's cursor and size. Empty means not given.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct LetterQuery {
    reason: String,
    table: String,
    from: String,
    to: String,
    /// `true`, `false`, or empty for both.
    replayed: String,
    cursor: String,
    limit: Option<i64>,
}

fn time_parameter(text: &str, parameter: &'static str) -> Result<Option<OffsetDateTime>, ApiError> {
    if text.is_empty() {
        return Ok(None);
    }
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(Some)
        .map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_parameter",
                format!("`{parameter}` must be an RFC 3339 time"),
            )
            .with_details(json!({ "parameter": parameter }))
        })
}

fn optional(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

impl LetterQuery {
    fn filter(&self) -> Result<LetterFilter, ApiError> {
        let replayed = match self.replayed.as_str() {
            "" => None,
            "true" => Some(true),
            "false" => Some(false),
            _ => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_parameter",
                    "`replayed` is `true`, `false` or empty",
                )
                .with_details(json!({ "parameter": "replayed" })));
            }
        };
        Ok(LetterFilter {
            reason_code: optional(self.reason.clone()),
            source_table: optional(self.table.clone()),
            failed_from: time_parameter(&self.from, "from")?,
            failed_to: time_parameter(&self.to, "to")?,
            replayed,
        })
    }
}

async fn source_letters(
    State(state): State<AppState>,
    caller: Caller,
    Path(source): Path<String>,
    Query(query): Query<LetterQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let source: SourceId = parse_id(&source, "the source id")?;
    let filter = query.filter()?;
    let cursor = optional(query.cursor.clone())
        .map(|text| LetterCursor::parse(&text))
        .transpose()?;
    let mut tx = caller.tx(&state, Permission::ViewDeadLetters).await?;
    store::dlq::require_source(&mut tx, source).await?;
    let groups = store::dlq::groups(&mut tx, source).await?;
    let page = store::dlq::page(
        &mut tx,
        source,
        &filter,
        cursor,
        query.limit.unwrap_or(DEFAULT_PAGE),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(json!({
        "source_id": source,
        "groups": groups,
        "dead_letters": page.letters,
        "next_cursor": page.next.map(|cursor| cursor.encode()),
    })))
}

async fn letter(
    State(state): State<AppState>,
    caller: Caller,
    Path(letter): Path<String>,
) -> Result<Json<store::dlq::LetterDetail>, ApiError> {
    let letter: Uuid = parse_id(&letter, "the dead letter id")?;
    let mut tx = caller.tx(&state, Permission::ViewDeadLetters).await?;
    let letter = store::dlq::get(&mut tx, letter).await?;
    tx.commit().await?;
    Ok(Json(letter))
}

/// Which of the source's letters to replay: `{"all": true}`, or any of a reason code, a table,
/// chosen letters and a window of latest failures, every one given holding.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LetterReplay {
    all: bool,
    reason: Option<String>,
    table: Option<String>,
    ids: Option<Vec<Uuid>>,
    #[serde(with = "time::serde::rfc3339::option")]
    from: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    to: Option<OffsetDateTime>,
}

impl RequestBody for LetterReplay {
    const SCHEMA: &'static str = "DeadLetterReplay";
    const SHAPE: &'static str = r#"{"all": true}, or any of {"reason": "<reason code>", "table": "<schema.table>", "ids": ["<dead letter id>", ...], "from": RFC 3339, "to": RFC 3339}"#;
}

impl LetterReplay {
    fn selection(self, source: SourceId) -> Result<LetterSelection, ApiError> {
        let refuse = |code, message: &str, field: &str| {
            Err(
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message.to_owned())
                    .with_details(json!({ "field": field })),
            )
        };
        let chooses = self.reason.is_some()
            || self.table.is_some()
            || self.ids.is_some()
            || self.from.is_some()
            || self.to.is_some();
        if self.all && chooses {
            return refuse(
                "ambiguous_selection",
                "`all` replays every letter of the source: leave out the other fields, or `all`",
                "all",
            );
        }
        if !self.all && !chooses {
            return refuse(
                "empty_selection",
                "choose the letters: `all`, a `reason`, a `table`, `ids`, or `from` and `to`",
                "all",
            );
        }
        let failed_between = match (self.from, self.to) {
            (Some(from), Some(to)) if from < to => Some((from, to)),
            (Some(_), Some(_)) => {
                return refuse(
                    "range_inverted",
                    "the window ends before it starts: `to` must be after `from`",
                    "to",
                );
            }
            (Some(_), None) => return refuse("invalid", "`from` needs a `to`", "to"),
            (None, Some(_)) => return refuse("invalid", "`to` needs a `from`", "from"),
            (None, None) => None,
        };
        Ok(LetterSelection {
            source,
            reason_code: self.reason,
            source_table: self.table,
            dlq_ids: self.ids,
            failed_between,
        })
    }
}

async fn replay(
    State(state): State<AppState>,
    caller: Caller,
    Path(source): Path<String>,
    Body(request): Body<LetterReplay>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let source: SourceId = parse_id(&source, "the source id")?;
    let selection = request.selection(source)?;
    let mut tx = caller.tx(&state, Permission::ManageReplays).await?;
    let request_id = store::replay::request(&mut tx, &ReplayKind::SourceDeadLetters(selection))
        .await
        .map_err(|error| match error {
            store::replay::ReplayError::Store(error) => ApiError::from(error),
            // Neither a range nor the one-bronze-replay rule applies to dead letters.
            other => ApiError::new(StatusCode::CONFLICT, "replay_refused", other.to_string()),
        })?;
    tx.commit().await?;
    // Recorded as an intent; the pipeline carries it out.
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "request_id": request_id, "status": "pending" })),
    ))
}
