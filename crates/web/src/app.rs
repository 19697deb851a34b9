//! The signed-in app under `/app`: the shell (workspace switcher, navigation showing only what
//! the member's role allows) and its first pages. Every route takes a [`Member`], checks the
//! domain's permission table, and reads through the member's `TenantTx`.

use askama::Template;
use axum::Router;
use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use domain::{Permission, Role, TenantId};
use serde::Deserialize;
use store::accounts::Membership;

use crate::AppState;
use crate::auth::session::Member;
use crate::pages::{Chrome, PageError, render};

/// The app's pages in navigation order: path, label, and the permission that shows and opens
/// it. The route × role matrix test walks this same list.
pub const PAGES: &[(&str, &str, Permission)] = &[
    ("/app/overview", "Overview", Permission::ViewWorkspace),
    ("/app/data-sources", "Data sources", Permission::ViewSources),
    ("/app/tenants", "Tenants", Permission::ViewWorkspace),
];

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/app", get(|| async { Redirect::to("/app/overview") }))
        .route("/app/overview", get(overview))
        .route("/app/data-sources", get(data_sources))
        .route("/app/tenants", get(tenants))
        .route("/app/workspace", post(switch_workspace))
}

#[derive(Debug)]
struct NavItem {
    href: &'static str,
    label: &'static str,
    current: bool,
}

/// What the shell shows around every app page.
#[derive(Debug)]
struct Shell {
    tenant_id: TenantId,
    tenant_name: String,
    email: String,
    role: Role,
    workspaces: Vec<Membership>,
    nav: Vec<NavItem>,
}

fn shell(member: &Member, current: &str) -> Shell {
    let role = member.role();
    Shell {
        tenant_id: member.tenant(),
        tenant_name: member.workspace.name.clone(),
        email: member.session().user.email.clone(),
        role,
        workspaces: member.workspaces.clone(),
        nav: PAGES
            .iter()
            .filter(|(_, _, permission)| role.allows(*permission))
            .map(|(href, label, _)| NavItem {
                href,
                label,
                current: *href == current,
            })
            .collect(),
    }
}

fn date(at: time::OffsetDateTime) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    at.format(&format).unwrap_or_default()
}

fn page_result(member: &Member, result: Result<Response, PageError>) -> Response {
    result.unwrap_or_else(|error| error.into_page(&member.visitor.chrome("app")))
}

#[derive(Template)]
#[template(path = "app/overview.html")]
struct OverviewPage {
    chrome: Chrome,
    shell: Shell,
    tenant: store::control::Tenant,
    created: String,
}

async fn overview(State(state): State<AppState>, member: Member) -> Response {
    let result = async {
        let mut tx = member.tx(&state, Permission::ViewWorkspace).await?;
        let tenant = store::control::current_tenant(&mut tx).await?;
        tx.commit().await?;
        Ok(render(
            StatusCode::OK,
            &OverviewPage {
                chrome: member.visitor.chrome("app"),
                shell: shell(&member, "/app/overview"),
                created: date(tenant.created_at),
                tenant,
            },
        ))
    }
    .await;
    page_result(&member, result)
}

#[derive(Debug)]
struct SourceRow {
    name: String,
    kind: String,
    status: String,
    created: String,
}

#[derive(Template)]
#[template(path = "app/sources.html")]
struct SourcesPage {
    chrome: Chrome,
    shell: Shell,
    sources: Vec<SourceRow>,
    can_manage: bool,
}

async fn data_sources(State(state): State<AppState>, member: Member) -> Response {
    let result = async {
        let mut tx = member.tx(&state, Permission::ViewSources).await?;
        let sources = store::sources::list_sources(&mut tx).await?;
        tx.commit().await?;
        Ok(render(
            StatusCode::OK,
            &SourcesPage {
                chrome: member.visitor.chrome("app"),
                shell: shell(&member, "/app/data-sources"),
                sources: sources
                    .into_iter()
                    .map(|source| SourceRow {
                        name: source.name,
                        kind: source.kind,
                        status: source.status,
                        created: date(source.created_at),
                    })
                    .collect(),
                can_manage: member.role().allows(Permission::ManageSources),
            },
        ))
    }
    .await;
    page_result(&member, result)
}

#[derive(Template)]
#[template(path = "app/tenants.html")]
struct TenantsPage {
    chrome: Chrome,
    shell: Shell,
    tenants: Vec<store::control::Tenant>,
}

/// Members see their own workspace here; the cross-tenant registry is internal operations'
/// (`Permission::ViewTenantRegistry`), whose accounts arrive with the internal console.
async fn tenants(State(state): State<AppState>, member: Member) -> Response {
    let result = async {
        let mut tx = member.tx(&state, Permission::ViewWorkspace).await?;
        let tenant = store::control::current_tenant(&mut tx).await?;
        tx.commit().await?;
        Ok(render(
            StatusCode::OK,
            &TenantsPage {
                chrome: member.visitor.chrome("app"),
                shell: shell(&member, "/app/tenants"),
                tenants: vec![tenant],
            },
        ))
    }
    .await;
    page_result(&member, result)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SwitchForm {
    tenant_id: String,
}

/// Switches the session to another of the member's workspaces; any other id is refused as if
/// the workspace did not exist.
async fn switch_workspace(
    State(state): State<AppState>,
    member: Member,
    Form(form): Form<SwitchForm>,
) -> Response {
    let chosen = form
        .tenant_id
        .parse::<TenantId>()
        .ok()
        .filter(|tenant| member.workspaces.iter().any(|w| w.tenant_id == *tenant));
    let Some(tenant) = chosen else {
        return PageError::NotFound.into_page(&member.visitor.chrome("app"));
    };
    match store::accounts::set_active_tenant(&state.database, &member.session().token, tenant).await
    {
        Ok(()) => Redirect::to("/app/overview").into_response(),
        Err(error) => PageError::from(error).into_page(&member.visitor.chrome("app")),
    }
}
