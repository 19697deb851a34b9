//! The app's chrome around every `/app` page: the navigation (the workspace's pages its role
//! allows, then the operations pages for staff), the workspace switcher, and how pages show
//! dates. Page modules import it; it imports no page, so the pages declared here are paths.

use axum::Router;
use axum::extract::{Form, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::post;
use domain::{Permission, Role, TenantId};
use serde::Deserialize;
use store::accounts::Membership;

use crate::AppState;
use crate::auth::session::{Member, Visitor};
use crate::pages::PageError;

/// The workspace switcher's form (`/app/workspace`), which every app page's chrome carries
/// (served with the app's pages, under their failure layer).
pub fn routes() -> Router<AppState> {
    Router::new().route("/app/workspace", post(switch_workspace))
}

/// The app's pages in navigation order: path, label, and the permission that shows and opens
/// it. The route × role matrix test walks this same list.
pub const PAGES: &[(&str, &str, Permission)] = &[
    ("/app/overview", "Overview", Permission::ViewWorkspace),
    ("/app/data-sources", "Data sources", Permission::ViewSources),
    // `explore::HOME`, written out.
    (
        "/app/explore/devices",
        "Explore",
        Permission::ViewDashboards,
    ),
    ("/app/tenants", "Tenants", Permission::ViewWorkspace),
    ("/app/drift", "Schema drift", Permission::ManageSources),
    ("/app/settings", "Settings", Permission::ManageWorkspace),
    (
        "/app/settings/api-tokens",
        "API tokens",
        Permission::ManageApiTokens,
    ),
    // `sso::settings::PATH`, written out: the shell names its pages by path only.
    ("/app/settings/sso", "Single sign-on", Permission::ManageSso),
    (
        "/app/settings/masking",
        "Masking",
        Permission::ManageMasking,
    ),
    ("/app/audit", "Audit log", Permission::ViewAudit),
    // `account::ACCOUNT`, written out.
    (
        "/app/settings/account",
        "Your account",
        Permission::ViewWorkspace,
    ),
];

#[derive(Debug)]
pub(crate) struct NavItem {
    pub(crate) href: &'static str,
    pub(crate) label: &'static str,
    pub(crate) current: bool,
}

/// What the shell shows around every app page (pages in other modules fill it too).
#[derive(Debug)]
pub(crate) struct Shell {
    pub(crate) tenant_id: TenantId,
    pub(crate) tenant_name: String,
    pub(crate) email: String,
    pub(crate) role: String,
    pub(crate) workspaces: Vec<Membership>,
    pub(crate) nav: Vec<NavItem>,
}

/// Internal operations' pages, shown in the navigation of staff accounts after their
/// workspace's pages (if they have a workspace at all).
pub const OPS_PAGES: &[(&str, &str)] = &[
    ("/app/tenants", "Tenants"),
    ("/app/global", "Global analytics"),
    ("/app/contact-requests", "Contact requests"),
];

/// The shell of a member's page at `current`.
pub(crate) fn shell(member: &Member, current: &str) -> Shell {
    shell_for(
        &member.visitor,
        Some(&member.workspace),
        &member.workspaces,
        current,
    )
}

/// The shell for any signed-in account: the workspace's pages its role allows, then the
/// operations pages for staff.
pub(crate) fn shell_for(
    visitor: &Visitor,
    workspace: Option<&Membership>,
    workspaces: &[Membership],
    current: &str,
) -> Shell {
    let user = &visitor
        .session
        .as_ref()
        .expect("the shell is only drawn for a signed-in account")
        .user;
    let mut nav: Vec<NavItem> = workspace
        .map(|workspace| {
            PAGES
                .iter()
                .filter(|(_, _, permission)| workspace.role.allows(*permission))
                .map(|(href, label, _)| NavItem {
                    href,
                    label,
                    current: *href == current,
                })
                .collect()
        })
        .unwrap_or_default();
    if user.internal_ops {
        for (href, label) in OPS_PAGES {
            if !nav.iter().any(|item| item.href == *href) {
                nav.push(NavItem {
                    href,
                    label,
                    current: *href == current,
                });
            }
        }
    }
    let role = match (workspace, user.internal_ops) {
        (Some(workspace), true) => format!("{} · internal_ops", workspace.role),
        (Some(workspace), false) => workspace.role.to_string(),
        (None, _) => Role::InternalOps.to_string(),
    };
    Shell {
        tenant_id: workspace.map_or(TenantId::PLATFORM, |w| w.tenant_id),
        tenant_name: workspace.map_or_else(|| "Internal operations".to_owned(), |w| w.name.clone()),
        email: user.email.clone(),
        role,
        workspaces: workspaces.to_vec(),
        nav,
    }
}

/// A day as pages show it.
pub(crate) fn date(at: time::OffsetDateTime) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    at.format(&format).unwrap_or_default()
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
) -> Result<Response, PageError> {
    let chosen = form
        .tenant_id
        .parse::<TenantId>()
        .ok()
        .filter(|tenant| member.workspaces.iter().any(|w| w.tenant_id == *tenant));
    let Some(tenant) = chosen else {
        return Err(PageError::NotFound);
    };
    store::accounts::set_active_tenant(&state.database, &member.session().token, tenant).await?;
    Ok(Redirect::to("/app/overview").into_response())
}

/// A moment as pages show it (UTC, seconds).
pub(crate) fn timestamp(at: time::OffsetDateTime) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    at.format(&format).unwrap_or_default()
}
