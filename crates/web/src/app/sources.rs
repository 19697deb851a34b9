//! `/app/data-sources`: the workspace's sources and their agents' status (kept current by the
//! live stream in `crate::live`).

use askama::Template;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use domain::Permission;

use crate::AppState;
use crate::auth::session::Member;
use crate::pages::{Chrome, PageError, render};
use crate::shell::{Shell, shell};

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
}

async fn data_sources(
    State(state): State<AppState>,
    member: Member,
) -> Result<Response, PageError> {
    let mut tx = member.tx(&state, Permission::ViewSources).await?;
    let sources = store::sources::list_sources(&mut tx).await?;
    tx.commit().await?;
    Ok(render(
        StatusCode::OK,
        &SourcesPage {
            chrome: member.visitor.chrome("app"),
            shell: shell(&member, "/app/data-sources"),
            has_sources: !sources.is_empty(),
            sources_html: crate::live::sources_fragment(sources),
            can_manage: member.role().allows(Permission::ManageSources),
        },
    ))
}
