//! `/app/data-sources/{source}/dead-letters`: one source's dead-letter explorer. Its letters
//! grouped by reason code and table, a filtered list paged by latest failure, one letter's
//! masked event, and (for those who may replay, `ManageReplays`) replays of all of them, a
//! group, the letters chosen or a window of failures, recorded as audited intents the pipeline
//! carries out; the page then shows the replay's progress, refreshed by htmx until it is done.

use std::collections::BTreeMap;

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, RawForm, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use domain::{Permission, SourceId};
use serde::Deserialize;
use store::dlq::{LetterCursor, LetterDetail, LetterFilter};
use store::replay::{LetterSelection, ReplayKind, ReplayRequest};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::AppState;
use crate::auth::session::Member;
use crate::pages::{Chrome, PageError, render};
use crate::shell::{Shell, shell, timestamp};

/// Letters per page.
const PAGE_SIZE: i64 = 50;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/app/data-sources/{source}/dead-letters",
            get(explorer_page),
        )
        .route(
            "/app/data-sources/{source}/dead-letters/replay",
            post(replay),
        )
        .route(
            "/app/data-sources/{source}/dead-letters/replays/{request}",
            get(progress_fragment),
        )
}

/// The page's path for `source`.
fn path_of(source: SourceId) -> String {
    format!("/app/data-sources/{source}/dead-letters")
}

fn source_id(text: &str) -> Result<SourceId, PageError> {
    text.parse()
        .map_err(|_| PageError::BadRequest("The source id is not valid.".into()))
}

/// The explorer's query string: filters, the page, the letter shown and the replay followed.
/// Empty means not given.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ExplorerQuery {
    reason: String,
    table: String,
    from: String,
    to: String,
    /// `waiting`, `replayed` or empty (both).
    state: String,
    cursor: String,
    letter: String,
    request: String,
}

/// A time a filter or replay form gives: RFC 3339, or a browser's `datetime-local` value
/// (`YYYY-MM-DDTHH:MM[:SS]`) read as UTC, which the page says.
fn form_time(text: &str, field: &str) -> Result<Option<OffsetDateTime>, PageError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if let Ok(at) = OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339) {
        return Ok(Some(at));
    }
    let local = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]");
    let local_seconds =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    time::PrimitiveDateTime::parse(text, &local)
        .or_else(|_| time::PrimitiveDateTime::parse(text, &local_seconds))
        .map(|at| Some(at.assume_utc()))
        .map_err(|_| PageError::BadRequest(format!("The {field} time is not a valid time.")))
}

/// The value a `datetime-local` input shows for `at` (UTC).
fn local_input(at: Option<OffsetDateTime>) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]");
    at.and_then(|at| at.to_offset(time::UtcOffset::UTC).format(&format).ok())
        .unwrap_or_default()
}

fn non_empty(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

impl ExplorerQuery {
    fn filter(&self) -> Result<LetterFilter, PageError> {
        Ok(LetterFilter {
            reason_code: non_empty(&self.reason),
            source_table: non_empty(&self.table),
            failed_from: form_time(&self.from, "from")?,
            failed_to: form_time(&self.to, "to")?,
            replayed: match self.state.as_str() {
                "replayed" => Some(true),
                "waiting" => Some(false),
                _ => None,
            },
        })
    }
}

/// The filters as a query string (without the cursor), for paging links.
fn filter_query(filter: &LetterFilter) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    if let Some(reason) = &filter.reason_code {
        query.append_pair("reason", reason);
    }
    if let Some(table) = &filter.source_table {
        query.append_pair("table", table);
    }
    if let Some(from) = filter.failed_from {
        query.append_pair("from", &local_input(Some(from)));
    }
    if let Some(to) = filter.failed_to {
        query.append_pair("to", &local_input(Some(to)));
    }
    match filter.replayed {
        Some(true) => {
            query.append_pair("state", "replayed");
        }
        Some(false) => {
            query.append_pair("state", "waiting");
        }
        None => {}
    }
    query.finish()
}

/// A group as the page shows it.
struct GroupRow {
    reason_code: String,
    /// `schema.table`, or empty when the events are not readable.
    table: String,
    letters: i64,
    waiting: i64,
    first_failed: String,
    latest_failed: String,
    /// The list filtered to this group.
    href: String,
}

/// A letter as the list shows it.
struct LetterRow {
    dlq_id: Uuid,
    reason_code: String,
    reason: String,
    table: String,
    consumer: String,
    attempts: i32,
    first_failed: String,
    latest_failed: String,
    replayed: Option<String>,
    /// The page showing this letter's payload, with the current filters.
    href: String,
}

/// One field of a letter's row image.
struct PayloadField {
    image: &'static str,
    name: String,
    value: String,
}

/// The letter whose payload is shown.
struct LetterView {
    row: LetterRow,
    event_id: Uuid,
    fields: Vec<PayloadField>,
    pretty: String,
}

/// A replay's progress as the page shows it.
struct ProgressView {
    request_id: Uuid,
    status: String,
    done: i64,
    replayed: i64,
    failed: i64,
    /// `None` until the pipeline has counted the letters.
    total: Option<i64>,
    percent: i64,
    /// What it replays, in words.
    scope: String,
    detail: String,
    running: bool,
    /// Where the fragment refreshes from.
    poll: String,
}

#[derive(Template)]
#[template(path = "app/dead_letters.html")]
struct ExplorerPage {
    chrome: Chrome,
    shell: Shell,
    source_name: String,
    path: String,
    can_replay: bool,
    groups: Vec<GroupRow>,
    letters: Vec<LetterRow>,
    reasons: Vec<String>,
    tables: Vec<String>,
    filter_reason: String,
    filter_table: String,
    filter_from: String,
    filter_to: String,
    filter_state: String,
    filtered: bool,
    /// The window of the filter, for a replay of it.
    window: Option<(String, String)>,
    next_href: Option<String>,
    first_href: Option<String>,
    letter: Option<LetterView>,
    progress: Option<ProgressView>,
}

#[derive(Template)]
#[template(path = "app/dead_letters_progress.html")]
struct ProgressFragment {
    progress: ProgressView,
}

fn letter_row(letter: &LetterDetail, base: &str, filters: &str) -> LetterRow {
    let separator = if filters.is_empty() { "" } else { "&" };
    LetterRow {
        dlq_id: letter.dlq_id,
        reason_code: letter.reason_code.clone(),
        reason: letter.reason.clone(),
        table: letter.source_table.clone().unwrap_or_default(),
        consumer: letter.consumer.clone(),
        attempts: letter.attempts,
        first_failed: timestamp(letter.created_at),
        latest_failed: timestamp(letter.last_failed_at),
        replayed: letter.replayed_at.map(timestamp),
        href: format!(
            "{base}?{filters}{separator}letter={}#payload",
            letter.dlq_id
        ),
    }
}

/// A JSON value as one line of text for the payload table.
fn value_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn letter_view(letter: &LetterDetail, base: &str, filters: &str) -> LetterView {
    let event = &letter.event["event"];
    let mut fields = Vec::new();
    for (image, label) in [("key", "key"), ("after", "after"), ("before", "before")] {
        if let Some(members) = event[image].as_object() {
            for (name, value) in members {
                fields.push(PayloadField {
                    image: label,
                    name: name.clone(),
                    value: value_text(value),
                });
            }
        }
    }
    LetterView {
        row: letter_row(letter, base, filters),
        event_id: letter.event_id,
        fields,
        pretty: serde_json::to_string_pretty(&letter.event).unwrap_or_default(),
    }
}

fn progress_view(source: SourceId, request: &ReplayRequest) -> ProgressView {
    let done = request.events_replayed + request.events_failed;
    let percent = match request.events_total {
        Some(total) if total > 0 => (done * 100 / total).clamp(0, 100),
        Some(_) => 100,
        None => 0,
    };
    let mut scope = Vec::new();
    if let Some(reason) = &request.reason_code {
        scope.push(format!("reason {reason}"));
    }
    if let Some(table) = &request.source_table {
        scope.push(format!("table {table}"));
    }
    if let Some(ids) = &request.dlq_ids {
        scope.push(format!("{} chosen letters", ids.len()));
    }
    if let (Some(from), Some(to)) = (request.range_from, request.range_to) {
        scope.push(format!(
            "failed from {} to {} UTC",
            timestamp(from),
            timestamp(to)
        ));
    }
    let scope = if scope.is_empty() {
        "every waiting letter".to_owned()
    } else {
        scope.join(", ")
    };
    let running = matches!(request.status.as_str(), "pending" | "running");
    ProgressView {
        request_id: request.request_id,
        status: request.status.clone(),
        done,
        replayed: request.events_replayed,
        failed: request.events_failed,
        total: request.events_total,
        percent,
        scope,
        detail: request.detail.clone().unwrap_or_default(),
        running,
        poll: format!("{}/replays/{}", path_of(source), request.request_id),
    }
}

/// A replay request of `source`; another source's or tenant's is not found.
async fn source_request(
    tx: &mut store::TenantTx,
    source: SourceId,
    request_id: Uuid,
) -> Result<ReplayRequest, PageError> {
    let request = store::replay::get(tx, request_id).await?;
    if request.source_id != Some(*source.as_uuid()) {
        return Err(PageError::NotFound);
    }
    Ok(request)
}

async fn explorer_page(
    State(state): State<AppState>,
    member: Member,
    Path(source): Path<String>,
    Query(query): Query<ExplorerQuery>,
) -> Result<Response, PageError> {
    let source = source_id(&source)?;
    let filter = query.filter()?;
    let cursor = non_empty(&query.cursor)
        .map(|text| LetterCursor::parse(&text))
        .transpose()
        .map_err(|_| PageError::BadRequest("The page link is not valid.".into()))?;
    let shown_letter = non_empty(&query.letter)
        .map(|text| Uuid::try_parse(&text))
        .transpose()
        .map_err(|_| PageError::BadRequest("The letter id is not valid.".into()))?;
    let followed = non_empty(&query.request)
        .map(|text| Uuid::try_parse(&text))
        .transpose()
        .map_err(|_| PageError::BadRequest("The replay id is not valid.".into()))?;
    let can_replay = member.role().allows(Permission::ManageReplays);

    let mut tx = member.tx(&state, Permission::ViewDeadLetters).await?;
    let source_name = store::sources::list_sources(&mut tx)
        .await?
        .into_iter()
        .find(|candidate| candidate.source_id == source)
        .map(|found| found.name)
        .ok_or(PageError::NotFound)?;
    let groups = store::dlq::groups(&mut tx, source).await?;
    let page = store::dlq::page(&mut tx, source, &filter, cursor, PAGE_SIZE).await?;
    let letter = match shown_letter {
        Some(dlq_id) => {
            let letter = store::dlq::get(&mut tx, dlq_id).await?;
            if letter.source_id != *source.as_uuid() {
                return Err(PageError::NotFound);
            }
            Some(letter)
        }
        None => None,
    };
    let progress = match followed {
        Some(request_id) if can_replay => Some(source_request(&mut tx, source, request_id).await?),
        _ => None,
    };
    tx.commit().await?;

    let base = path_of(source);
    let filters = filter_query(&filter);
    let mut reasons: Vec<String> = groups
        .iter()
        .map(|group| group.reason_code.clone())
        .collect();
    reasons.sort_unstable();
    reasons.dedup();
    let mut tables: Vec<String> = groups
        .iter()
        .filter_map(|group| group.source_table.clone())
        .collect();
    tables.sort_unstable();
    tables.dedup();
    let group_rows = groups
        .iter()
        .map(|group| {
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            query.append_pair("reason", &group.reason_code);
            if let Some(table) = &group.source_table {
                query.append_pair("table", table);
            }
            GroupRow {
                reason_code: group.reason_code.clone(),
                table: group.source_table.clone().unwrap_or_default(),
                letters: group.letters,
                waiting: group.waiting,
                first_failed: timestamp(group.first_failed_at),
                latest_failed: timestamp(group.latest_failed_at),
                href: format!("{base}?{}", query.finish()),
            }
        })
        .collect();
    let separator = if filters.is_empty() { "" } else { "&" };
    let next_href = page.next.map(|cursor| {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        query.append_pair("cursor", &cursor.encode());
        format!("{base}?{filters}{separator}{}", query.finish())
    });
    let first_href = cursor.map(|_| format!("{base}?{filters}"));
    let letters = page
        .letters
        .iter()
        .map(|letter| letter_row(letter, &base, &filters))
        .collect();
    let window = match (filter.failed_from, filter.failed_to) {
        (Some(from), Some(to)) if from < to => {
            Some((local_input(Some(from)), local_input(Some(to))))
        }
        _ => None,
    };
    Ok(render(
        StatusCode::OK,
        &ExplorerPage {
            chrome: member.visitor.chrome("app"),
            shell: shell(&member, "/app/data-sources"),
            source_name,
            path: base.clone(),
            can_replay,
            groups: group_rows,
            letters,
            reasons,
            tables,
            filter_reason: filter.reason_code.clone().unwrap_or_default(),
            filter_table: filter.source_table.clone().unwrap_or_default(),
            filter_from: local_input(filter.failed_from),
            filter_to: local_input(filter.failed_to),
            filter_state: query.state.clone(),
            filtered: !filters.is_empty(),
            window,
            next_href,
            first_href,
            letter: letter.map(|letter| letter_view(&letter, &base, &filters)),
            progress: progress.map(|request| progress_view(source, &request)),
        },
    ))
}

/// `/app/data-sources/{source}/dead-letters/replays/{request}`: a replay's progress, the
/// fragment the page refreshes while the replay runs.
async fn progress_fragment(
    State(state): State<AppState>,
    member: Member,
    Path((source, request)): Path<(String, String)>,
) -> Result<Response, PageError> {
    let source = source_id(&source)?;
    let request_id = Uuid::try_parse(&request)
        .map_err(|_| PageError::BadRequest("The replay id is not valid.".into()))?;
    let mut tx = member.tx(&state, Permission::ManageReplays).await?;
    let request = source_request(&mut tx, source, request_id).await?;
    tx.commit().await?;
    Ok(render(
        StatusCode::OK,
        &ProgressFragment {
            progress: progress_view(source, &request),
        },
    ))
}

/// The replay form's fields: `scope` (`all`, `group`, `selected` or `window`), and what the
/// scope takes: `reason` and `table` (a group), `ids` (repeated, the letters chosen), `from`
/// and `to` (a window).
fn replay_selection(source: SourceId, body: &[u8]) -> Result<LetterSelection, PageError> {
    let mut fields: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in url::form_urlencoded::parse(body) {
        fields
            .entry(name.into_owned())
            .or_default()
            .push(value.into_owned());
    }
    let one = |name: &str| {
        fields
            .get(name)
            .and_then(|values| values.first())
            .and_then(|value| non_empty(value))
    };
    let mut selection = LetterSelection::all(source);
    match one("scope").as_deref() {
        Some("all") => {}
        Some("group") => {
            selection.reason_code = Some(
                one("reason")
                    .ok_or_else(|| PageError::BadRequest("Choose the group's reason.".into()))?,
            );
            selection.source_table = one("table");
        }
        Some("selected") => {
            let ids = fields
                .get("ids")
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|text| Uuid::try_parse(text.trim()))
                .collect::<Result<Vec<Uuid>, _>>()
                .map_err(|_| PageError::BadRequest("A chosen letter id is not valid.".into()))?;
            if ids.is_empty() {
                return Err(PageError::BadRequest(
                    "Choose the letters to replay first.".into(),
                ));
            }
            selection.dlq_ids = Some(ids);
        }
        Some("window") => {
            let from = form_time(&one("from").unwrap_or_default(), "from")?;
            let to = form_time(&one("to").unwrap_or_default(), "to")?;
            match (from, to) {
                (Some(from), Some(to)) if from < to => selection.failed_between = Some((from, to)),
                _ => {
                    return Err(PageError::BadRequest(
                        "Give a window whose end is after its start.".into(),
                    ));
                }
            }
        }
        _ => return Err(PageError::BadRequest("Choose what to replay.".into())),
    }
    Ok(selection)
}

async fn replay(
    State(state): State<AppState>,
    member: Member,
    Path(source): Path<String>,
    RawForm(body): RawForm,
) -> Result<Response, PageError> {
    let source = source_id(&source)?;
    member.require(Permission::ViewDeadLetters)?;
    let mut tx = member.tx(&state, Permission::ManageReplays).await?;
    let selection = replay_selection(source, &body)?;
    let request_id = store::replay::request(&mut tx, &ReplayKind::SourceDeadLetters(selection))
        .await
        .map_err(|error| match error {
            store::replay::ReplayError::Store(store::StoreError::InvalidParameter {
                message,
                ..
            }) => PageError::BadRequest(message),
            store::replay::ReplayError::Store(error) => PageError::from(error),
            other => PageError::BadRequest(other.to_string()),
        })?;
    tx.commit().await?;
    Ok(Redirect::to(&format!(
        "{}?request={request_id}#progress",
        path_of(source)
    ))
    .into_response())
}
