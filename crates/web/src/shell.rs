//! The app's chrome around every `/app` page, its error pages included: the workspace switcher,
//! the navigation (the workspace's pages its role allows, then, for staff only, the operations
//! pages), the user menu (account, sign out), and how pages show dates. Page modules import it;
//! it imports no page, so the pages declared here are paths.

use askama::Template;
use axum::Router;
use axum::extract::{Form, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::post;
use domain::{Permission, Role, TenantId};
use serde::Deserialize;
use store::accounts::Membership;

use crate::AppState;
use crate::auth::session::{AppUser, Member, Visitor};
use crate::pages::{Chrome, ChromeSlot, PageError, render, take_failure};

/// The workspace switcher's form (`/app/workspace`), which every app page's chrome carries
/// (served with the app's pages, under their failure layer).
pub fn routes() -> Router<AppState> {
    Router::new().route("/app/workspace", post(switch_workspace))
}

/// The app's pages in navigation order: path, label, and the permission that shows and opens
/// it. The route × role matrix test walks this same list. The account page is reached from the
/// user menu rather than the sidebar; operations pages are [`OPS_PAGES`], never a customer's.
pub const PAGES: &[(&str, &str, Permission)] = &[
    ("/app/overview", "Overview", Permission::ViewWorkspace),
    ("/app/data-sources", "Data sources", Permission::ViewSources),
    ("/app/connectors", "Connectors", Permission::ManageSources),
    // `explore::HOME`, written out.
    (
        "/app/explore/devices",
        "Explore",
        Permission::ViewDashboards,
    ),
    ("/app/drift", "Schema drift", Permission::ManageSources),
    ("/app/alerts", "Alerts", Permission::ViewDashboards),
    ("/app/reports", "Reports", Permission::RunReports),
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

/// The account page, which the user menu links to.
const ACCOUNT: &str = "/app/settings/account";

#[derive(Debug, Clone)]
pub(crate) struct NavItem {
    pub(crate) href: &'static str,
    pub(crate) label: &'static str,
    pub(crate) current: bool,
}

/// What the shell shows around every app page (pages in other modules fill it too).
#[derive(Debug, Clone)]
pub(crate) struct Shell {
    pub(crate) tenant_id: TenantId,
    pub(crate) tenant_name: String,
    pub(crate) email: String,
    /// The account's name as the user menu shows it (its email when it has none).
    pub(crate) display_name: String,
    /// The first letter of the name, for the user menu's badge.
    pub(crate) initial: String,
    pub(crate) role: String,
    pub(crate) workspaces: Vec<Membership>,
    /// The workspace's pages the role allows.
    pub(crate) nav: Vec<NavItem>,
    /// The operations pages: empty for anyone who is not staff.
    pub(crate) ops_nav: Vec<NavItem>,
    /// The account page is the current page (the user menu marks it).
    pub(crate) account_current: bool,
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
    let nav: Vec<NavItem> = workspace
        .map(|workspace| {
            PAGES
                .iter()
                .filter(|(href, _, permission)| {
                    *href != ACCOUNT && workspace.role.allows(*permission)
                })
                .map(|(href, label, _)| NavItem {
                    href,
                    label,
                    current: *href == current,
                })
                .collect()
        })
        .unwrap_or_default();
    // Only staff ever see the operations pages, whatever their workspace role.
    let ops_nav = if user.internal_ops {
        OPS_PAGES
            .iter()
            .map(|(href, label)| NavItem {
                href,
                label,
                current: *href == current,
            })
            .collect()
    } else {
        Vec::new()
    };
    let display_name = if user.display_name.is_empty() {
        user.email.clone()
    } else {
        user.display_name.clone()
    };
    let role = match (workspace, user.internal_ops) {
        (Some(workspace), true) => format!("{} · internal_ops", workspace.role),
        (Some(workspace), false) => workspace.role.to_string(),
        (None, _) => Role::InternalOps.to_string(),
    };
    Shell {
        tenant_id: workspace.map_or(TenantId::PLATFORM, |w| w.tenant_id),
        tenant_name: workspace.map_or_else(|| "Internal operations".to_owned(), |w| w.name.clone()),
        email: user.email.clone(),
        display_name: display_name.clone(),
        initial: display_name
            .chars()
            .next()
            .map(|first| first.to_uppercase().collect())
            .unwrap_or_default(),
        role,
        workspaces: workspaces.to_vec(),
        nav,
        ops_nav,
        account_current: current == ACCOUNT,
    }
}

/// An error page inside the app's shell.
#[derive(Template)]
#[template(path = "app/error.html")]
struct AppErrorPage<'a> {
    chrome: &'a Chrome,
    shell: &'a Shell,
    status: u16,
    heading: &'a str,
    message: &'a str,
    action_href: &'a str,
    action_label: &'a str,
}

/// `error` as a page of the app, for the signed-in `user`: the sidebar, the workspace and the
/// user menu stay, and the way back leads to the overview rather than the public home page.
pub(crate) fn app_error_page(user: &AppUser, error: PageError) -> Response {
    let Some(mut view) = error.view() else {
        return error.into_page(&user.visitor.chrome("app"));
    };
    if view.action_href == "/" {
        view.action_href = "/app/overview";
        view.action_label = "Back to the overview";
    }
    if let PageError::NotFound = error {
        view.message = "There is no page at this address in the app. It may have moved, or the \
                        link may be wrong; the pages you can open are in the navigation."
            .to_owned();
    }
    let shell = shell_for(
        &user.visitor,
        user.workspace.as_ref(),
        &user.workspaces,
        &user.visitor.path,
    );
    view.finish(render(
        view.status,
        &AppErrorPage {
            chrome: &user.visitor.chrome("app"),
            shell: &shell,
            status: view.status.as_u16(),
            heading: view.heading,
            message: &view.message,
            action_href: view.action_href,
            action_label: view.action_label,
        },
    ))
}

/// The app's failure layer: a [`PageError`] a handler or an extractor returned is drawn inside
/// the app's shell once the account is known (`AppUser` keeps it in the request's
/// [`ChromeSlot`]), else as the site's error page with the visitor's chrome. Used as
/// `route_layer(axum::middleware::from_fn(render_app_failures))`.
pub async fn render_app_failures(mut request: Request, next: Next) -> Response {
    let slot = ChromeSlot::default();
    request.extensions_mut().insert(slot.clone());
    let mut response = next.run(request).await;
    let Some(error) = take_failure(&mut response) else {
        return response;
    };
    match slot
        .account()
        .and_then(|account| account.downcast::<AppUser>().ok())
    {
        Some(user) => app_error_page(&user, error),
        None => error.into_page(&Chrome {
            section: "app",
            ..slot.chrome()
        }),
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
