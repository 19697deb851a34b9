//! `/app/audit`: the workspace's audit log, filtered and paged, with its hash chain verified on
//! every view, and its CSV export (streamed, every entry); internal operations open any
//! tenant's log with the same
//! page ([`render_audit`], [`audit_csv_response`]).

use askama::Template;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use domain::Permission;
use store::TenantTx;
use store::reports::{Dataset, Filters, Format, ReportInput};

use crate::AppState;
use crate::auth::session::Member;
use crate::labels::{Labelled, Names, detail_rows};
use crate::pages::{Chrome, PageError, SelectOption, render, select_options};
use crate::rules::{ACTOR_TYPES, AuditQuery};
use crate::shell::{Shell, shell, timestamp};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/app/audit", get(audit_page))
        .route("/app/audit.csv", get(audit_csv))
}

/// Entries per audit page.
pub(crate) const AUDIT_PAGE_SIZE: i64 = 50;

#[derive(Debug)]
struct AuditRow {
    seq: i64,
    when: String,
    actor: Labelled,
    action: String,
    target: Labelled,
    /// The entry's details as key and value rows.
    details: Vec<(String, Labelled)>,
}

#[derive(Template)]
#[template(path = "app/audit.html")]
struct AuditPage {
    chrome: Chrome,
    shell: Shell,
    heading: String,
    /// The page's own path, which the filter form and the links keep.
    base: String,
    entries: Vec<AuditRow>,
    chain_intact: bool,
    chain_entries: u64,
    chain_problem: String,
    filter_action: String,
    actor_options: Vec<SelectOption>,
    csv_href: String,
    next_href: Option<String>,
}

/// The tenant's audit log, filtered and paged, with the chain verified from this request.
async fn audit_page(
    State(state): State<AppState>,
    member: Member,
    Query(query): Query<AuditQuery>,
) -> Result<Response, PageError> {
    let tx = member.tx(&state, Permission::ViewAudit).await?;
    render_audit(
        tx,
        member.visitor.chrome("app"),
        shell(&member, "/app/audit"),
        &query,
        "/app/audit",
        "Audit log".into(),
        true,
    )
    .await
}

/// The audit page of the transaction's tenant at `base` (the member's own log, or a tenant's
/// log as internal operations opens it). With `with_names` the workspace's members, sources and
/// tokens are read for their names; internal operations, who are shown no tenant's members or
/// sources, see the ids recorded.
pub(crate) async fn render_audit(
    mut tx: TenantTx,
    chrome: Chrome,
    shell: Shell,
    query: &AuditQuery,
    base: &str,
    heading: String,
    with_names: bool,
) -> Result<Response, PageError> {
    let filter = query.filter();
    let records = store::audit::search(&mut tx, &filter, AUDIT_PAGE_SIZE + 1).await?;
    let chain = store::audit::verify_tenant(&mut tx).await?;
    let names = if with_names {
        Names::of_workspace(&mut tx).await?
    } else {
        Names::none()
    };
    tx.commit().await?;
    let more = records.len() as i64 > AUDIT_PAGE_SIZE;
    let shown: Vec<_> = records.into_iter().take(AUDIT_PAGE_SIZE as usize).collect();
    let next_href = more
        .then(|| shown.last().map(|last| query.href(base, Some(last.seq))))
        .flatten();
    Ok(render(
        StatusCode::OK,
        &AuditPage {
            chrome,
            shell,
            heading,
            base: base.to_owned(),
            chain_intact: chain.is_intact(),
            chain_entries: chain.entries,
            chain_problem: chain
                .first_break
                .map(|problem| format!("{problem:?}"))
                .unwrap_or_default(),
            entries: shown
                .into_iter()
                .map(|record| AuditRow {
                    seq: record.seq,
                    when: timestamp(record.occurred_at),
                    actor: names.actor(&record.actor_type, &record.actor_id),
                    action: record.action,
                    target: names.label(&record.target),
                    details: detail_rows(&names, &record.details),
                })
                .collect(),
            filter_action: filter.action_prefix.clone().unwrap_or_default(),
            actor_options: select_options(
                &ACTOR_TYPES,
                filter.actor_type.as_deref().unwrap_or_default(),
            ),
            csv_href: query.href(&format!("{base}.csv"), None),
            next_href,
        },
    ))
}

/// The filtered log as CSV, newest first, every entry, streamed.
async fn audit_csv(
    State(state): State<AppState>,
    member: Member,
    Query(query): Query<AuditQuery>,
) -> Result<Response, PageError> {
    let tx = member.tx(&state, Permission::ViewAudit).await?;
    let response = audit_csv_response(tx, &query);
    tracing::info!(user = %member.session().user.user_id, "audit log exported");
    response
}

/// The transaction tenant's filtered audit log as a CSV download: the report runner's
/// `audit_log` dataset and CSV encoder (formula cells neutralised, RFC 4180), streamed as it is
/// read in `tx`, so a log of any length is exported whole without being held in memory.
pub(crate) fn audit_csv_response(tx: TenantTx, query: &AuditQuery) -> Result<Response, PageError> {
    let filter = query.filter();
    let now = time::OffsetDateTime::now_utc();
    let mut definition = ReportInput::new("audit log", Dataset::AuditLog, Format::Csv);
    definition.descending = true;
    definition.filters = Filters {
        // Every entry: the log began after this, and nothing is written after the request.
        from: Some(time::macros::datetime!(2000-01-01 0:00 UTC)),
        to: Some(now + time::Duration::minutes(1)),
        action: filter.action_prefix,
        actor_type: filter.actor_type,
        ..Filters::default()
    };
    let stream = reports::stream(tx, definition, now, "audit log CSV")?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"audit-log.csv\"",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}
