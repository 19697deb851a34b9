//! `/app/data-sources`: the workspace's sources and their agents' status (kept current by the
//! live stream in `crate::live`), and for those who map tables, the tables no mapping applies
//! to yet.

use askama::Template;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use domain::Permission;

use crate::AppState;
use crate::auth::session::Member;
use crate::labels::Labelled;
use crate::pages::{Chrome, PageError, render};
use crate::shell::{Shell, shell, timestamp};

pub fn routes() -> Router<AppState> {
    Router::new().route("/app/data-sources", get(data_sources))
}

#[derive(Template)]
#[template(path = "app/sources.html")]
struct SourcesPage {
    chrome: Chrome,
    shell: Shell,
    has_sources: bool,
    /// The sources table, as its live stream also sends it.
    sources_html: String,
    can_manage: bool,
    /// Empty for those who cannot map tables (they are not shown the section).
    unmapped: Vec<UnmappedRow>,
}

/// A table no mapping applies to, as the page shows it.
struct UnmappedRow {
    source: Labelled,
    table: String,
    events: i64,
    first_seen: String,
    last_seen: String,
}

async fn data_sources(
    State(state): State<AppState>,
    member: Member,
) -> Result<Response, PageError> {
    let mut tx = member.tx(&state, Permission::ViewSources).await?;
    let sources = store::sources::list_sources(&mut tx).await?;
    let can_manage = member.role().allows(Permission::ManageSources);
    let mut unmapped = Vec::new();
    if can_manage {
        for table in store::read_models::list_unmapped_tables(&mut tx).await? {
            let source = sources
                .iter()
                .find(|source| *source.source_id.as_uuid() == table.source_id)
                .map_or_else(
                    || Labelled::named("an unknown source", "source", table.source_id.to_string()),
                    |source| {
                        Labelled::named(source.name.clone(), "source", table.source_id.to_string())
                    },
                );
            unmapped.push(UnmappedRow {
                source,
                table: format!("{}.{}", table.schema_name, table.table_name),
                events: table.events,
                first_seen: timestamp(table.first_seen_at),
                last_seen: timestamp(table.last_seen_at),
            });
        }
    }
    tx.commit().await?;
    Ok(render(
        StatusCode::OK,
        &SourcesPage {
            chrome: member.visitor.chrome("app"),
            shell: shell(&member, "/app/data-sources"),
            has_sources: !sources.is_empty(),
            sources_html: crate::live::sources_fragment(sources),
            can_manage,
            unmapped,
        },
    ))
}
