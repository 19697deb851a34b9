//! The signed-in app under `/app`: the shell (workspace switcher, navigation showing only what
//! the member's role allows) and its first pages. Every route takes a [`Member`], checks the
//! domain's permission table, and reads through the member's `TenantTx`.

use askama::Template;
use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use domain::{Permission, Role, TenantId, UserId};
use serde::Deserialize;
use store::accounts::Membership;
use store::{Scope, TenantTx};

use crate::AppState;
use crate::auth::session::{AppUser, Member};
use crate::pages::{Chrome, PageError, SelectOption, render, select_options};

/// The app's pages in navigation order: path, label, and the permission that shows and opens
/// it. The route × role matrix test walks this same list.
pub const PAGES: &[(&str, &str, Permission)] = &[
    ("/app/overview", "Overview", Permission::ViewWorkspace),
    ("/app/data-sources", "Data sources", Permission::ViewSources),
    ("/app/tenants", "Tenants", Permission::ViewWorkspace),
    ("/app/settings", "Settings", Permission::ManageWorkspace),
    (
        "/app/settings/api-tokens",
        "API tokens",
        Permission::ManageApiTokens,
    ),
    (
        crate::sso::settings::PATH,
        "Single sign-on",
        Permission::ManageWorkspace,
    ),
    (
        "/app/settings/masking",
        "Masking",
        Permission::ManageMasking,
    ),
    ("/app/audit", "Audit log", Permission::ViewAudit),
];

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/app", get(|| async { Redirect::to("/app/overview") }))
        .route("/app/overview", get(overview))
        .route("/app/data-sources", get(data_sources))
        .route("/app/tenants", get(tenants))
        .route("/app/workspace", post(switch_workspace))
        .route("/app/sessions/{id}/end", post(end_session))
        .route("/app/settings", get(settings))
        .route(
            "/app/settings/members/{user}/role",
            post(change_member_role),
        )
        .route("/app/settings/members/{user}/remove", post(remove_member))
        .route("/app/settings/retention", post(set_retention))
        .route("/app/settings/workspace", post(update_workspace))
        .route("/app/settings/invitations", post(invite))
        .route(
            "/app/settings/invitations/{invitation}/revoke",
            post(withdraw_invitation),
        )
        .route("/app/audit", get(audit_page))
        .route("/app/audit.csv", get(audit_csv))
        .route(
            "/app/settings/api-tokens",
            get(api_tokens_page).post(create_api_token),
        )
        .route(
            "/app/settings/api-tokens/{token}/revoke",
            post(revoke_api_token),
        )
}

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
    visitor: &crate::auth::session::Visitor,
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

fn date(at: time::OffsetDateTime) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    at.format(&format).unwrap_or_default()
}

pub(crate) fn page_result(member: &Member, result: Result<Response, PageError>) -> Response {
    result.unwrap_or_else(|error| error.into_page(&member.visitor.chrome("app")))
}

#[derive(Debug)]
struct SessionRow {
    id: String,
    created: String,
    last_seen: String,
    client_addr: String,
    user_agent: String,
    current: bool,
}

#[derive(Template)]
#[template(path = "app/overview.html")]
struct OverviewPage {
    chrome: Chrome,
    shell: Shell,
    tenant: store::control::Tenant,
    created: String,
    sessions: Vec<SessionRow>,
    ended: bool,
    /// The live event activity, for roles that read bronze.
    activity_html: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct OverviewQuery {
    ended: Option<String>,
}

async fn overview(
    State(state): State<AppState>,
    member: Member,
    Query(query): Query<OverviewQuery>,
) -> Response {
    let result = async {
        let mut tx = member.tx(&state, Permission::ViewWorkspace).await?;
        let tenant = store::control::current_tenant(&mut tx).await?;
        let activity_html = if member.role().allows(Permission::ViewBronze) {
            Some(crate::live::activity_fragment(&mut tx).await?)
        } else {
            None
        };
        tx.commit().await?;
        let session = member.session();
        let sessions =
            store::accounts::list_sessions(&state.database, session.user.user_id, &session.token)
                .await?;
        Ok(render(
            StatusCode::OK,
            &OverviewPage {
                chrome: member.visitor.chrome("app"),
                shell: shell(&member, "/app/overview"),
                created: date(tenant.created_at),
                tenant,
                sessions: sessions
                    .into_iter()
                    .map(|session| SessionRow {
                        id: session.id,
                        created: timestamp(session.created_at),
                        last_seen: timestamp(session.last_seen_at),
                        client_addr: session.client_addr.unwrap_or_default(),
                        user_agent: session
                            .user_agent
                            .unwrap_or_default()
                            .chars()
                            .take(80)
                            .collect(),
                        current: session.current,
                    })
                    .collect(),
                ended: query.ended.is_some(),
                activity_html,
            },
        ))
    }
    .await;
    page_result(&member, result)
}

/// Ends one of the member's own sessions (any workspace's: sessions belong to the account).
async fn end_session(
    State(state): State<AppState>,
    member: Member,
    Path(id): Path<String>,
) -> Response {
    let user = member.session().user.user_id;
    match store::accounts::revoke_session_by_id(&state.database, user, &id).await {
        Ok(true) => {
            tracing::info!(%user, "ended one of the account's sessions");
            Redirect::to("/app/overview?ended=1#sessions-heading").into_response()
        }
        Ok(false) => PageError::NotFound.into_page(&member.visitor.chrome("app")),
        Err(error) => PageError::from(error).into_page(&member.visitor.chrome("app")),
    }
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
                has_sources: !sources.is_empty(),
                sources_html: crate::live::sources_fragment(sources),
                can_manage: member.role().allows(Permission::ManageSources),
            },
        ))
    }
    .await;
    page_result(&member, result)
}

#[derive(Debug)]
struct TenantRow {
    tenant_id: TenantId,
    name: String,
    plan: String,
    industry: String,
    region: String,
    status: String,
    created: String,
    active_sources: i64,
    events_today: i64,
    events_7d: i64,
    last_event: String,
}

#[derive(Template)]
#[template(path = "app/tenants.html")]
struct TenantsPage {
    chrome: Chrome,
    shell: Shell,
    tenants: Vec<TenantRow>,
    /// Staff see every tenant, a search form and each tenant's audit log.
    staff: bool,
    search: String,
    plan_options: Vec<SelectOption>,
    region: String,
    industry: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RegistryQuery {
    pub q: String,
    pub plan: String,
    pub industry: String,
    pub region: String,
}

impl RegistryQuery {
    pub(crate) fn filter(&self) -> store::control::RegistryFilter {
        let clip = |text: &str| text.trim().chars().take(100).collect::<String>();
        store::control::RegistryFilter {
            search: clip(&self.q),
            plan: clip(&self.plan),
            industry: clip(&self.industry),
            region: clip(&self.region),
        }
    }
}

const PLAN_FILTER: [&str; 5] = ["", "free", "team", "business", "enterprise"];

/// The tenant registry. Internal operations staff see every tenant with its volume, searchable
/// (`Scope::InternalOps`); a member sees only their own workspace, because row-level security
/// shows a member transaction nothing else.
async fn tenants(
    State(state): State<AppState>,
    user: AppUser,
    Query(query): Query<RegistryQuery>,
) -> Response {
    let staff = user.is_staff();
    let chrome = user.visitor.chrome("app");
    let result = async {
        let mut tx = if staff {
            TenantTx::begin(
                &state.database,
                Scope::InternalOps {
                    tenant: None,
                    actor: store::Actor::User(user.session().user.user_id),
                },
            )
            .await?
        } else {
            let Some(workspace) = &user.workspace else {
                return Err(PageError::Forbidden);
            };
            if !workspace.role.allows(Permission::ViewWorkspace) {
                return Err(PageError::Forbidden);
            }
            TenantTx::begin(
                &state.database,
                Scope::Member {
                    tenant: workspace.tenant_id,
                    user: user.session().user.user_id,
                    role: workspace.role,
                },
            )
            .await?
        };
        let filter = if staff {
            query.filter()
        } else {
            store::control::RegistryFilter::default()
        };
        let entries = store::control::registry(&mut tx, &filter).await?;
        tx.commit().await?;
        Ok(render(
            StatusCode::OK,
            &TenantsPage {
                chrome: chrome.clone(),
                shell: shell_for(
                    &user.visitor,
                    user.workspace.as_ref(),
                    &user.workspaces,
                    "/app/tenants",
                ),
                tenants: entries
                    .into_iter()
                    .map(|entry| TenantRow {
                        tenant_id: entry.tenant.tenant_id,
                        name: entry.tenant.name,
                        plan: entry.tenant.plan,
                        industry: entry.tenant.industry,
                        region: entry.tenant.region,
                        status: entry.tenant.status,
                        created: date(entry.tenant.created_at),
                        active_sources: entry.active_sources,
                        events_today: entry.events_today,
                        events_7d: entry.events_7d,
                        last_event: entry.last_event_at.map(timestamp).unwrap_or_default(),
                    })
                    .collect(),
                staff,
                search: filter.search.clone(),
                plan_options: select_options(&PLAN_FILTER, &filter.plan),
                region: filter.region.clone(),
                industry: filter.industry.clone(),
            },
        ))
    }
    .await;
    result.unwrap_or_else(|error| error.into_page(&chrome))
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

#[derive(Debug)]
struct MemberRow {
    user_id: UserId,
    email: String,
    display_name: String,
    role: Role,
    roles: Vec<SelectOption>,
}

#[derive(Template)]
#[template(path = "app/settings.html")]
struct SettingsPage {
    chrome: Chrome,
    shell: Shell,
    tenant: store::control::Tenant,
    members: Vec<MemberRow>,
    can_manage: bool,
    /// Shown (and editable) to roles that manage retention.
    retention_days: Option<i32>,
    /// The plan is billing: only roles with `ManageBilling` change it.
    can_change_plan: bool,
    invite_roles: Vec<SelectOption>,
    invitations: Vec<InvitationRow>,
    plans: Vec<SelectOption>,
    notice: Option<&'static str>,
    error: Option<&'static str>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SettingsQuery {
    done: String,
    refused: String,
}

/// What a finished change says, by a fixed code in the redirect (never text from the request).
fn settings_notice(code: &str) -> Option<&'static str> {
    match code {
        "role" => Some("The member's role was changed."),
        "removed" => Some("The member was removed from the workspace."),
        "retention" => Some("Retention saved."),
        "workspace" => Some("Workspace saved."),
        "invited" => Some("Invitation sent. It works once, within 7 days."),
        "withdrawn" => Some("The invitation was withdrawn."),
        _ => None,
    }
}

fn settings_error(code: &str) -> Option<&'static str> {
    match code {
        "last-owner" => {
            Some("A workspace must keep at least one owner: make someone else an owner first.")
        }
        "owner-only" => Some("Only an owner can make someone an owner or change an owner's role."),
        "retention" => Some("Retention is between 1 and 3650 days."),
        "invitation" => Some(
            "Enter the address to invite, like name@example.com, and a role no higher than yours.",
        ),
        "workspace" => Some(
            "Give the workspace a name, an industry and a region (without control characters).",
        ),
        _ => None,
    }
}

const TENANT_ROLE_NAMES: [&str; 4] = ["owner", "admin", "operator", "viewer"];

/// Workspace and members (owners and admins).
async fn settings(
    State(state): State<AppState>,
    member: Member,
    Query(query): Query<SettingsQuery>,
) -> Response {
    let result = async {
        let mut tx = member.tx(&state, Permission::ManageWorkspace).await?;
        let tenant = store::control::current_tenant(&mut tx).await?;
        let plan = tenant.plan.clone();
        let members = store::members::list(&mut tx).await?;
        let invitations = if member.role().allows(Permission::ManageMembers) {
            store::invitations::list_open(&mut tx).await?
        } else {
            Vec::new()
        };
        let retention_days = if member.role().allows(Permission::ManageRetention) {
            Some(store::retention::days(&mut tx).await?)
        } else {
            None
        };
        tx.commit().await?;
        Ok(render(
            StatusCode::OK,
            &SettingsPage {
                chrome: member.visitor.chrome("app"),
                shell: shell(&member, "/app/settings"),
                tenant,
                members: members
                    .into_iter()
                    .map(|row| MemberRow {
                        roles: select_options(&TENANT_ROLE_NAMES, row.role.as_str()),
                        user_id: row.user_id,
                        email: row.email,
                        display_name: row.display_name,
                        role: row.role,
                    })
                    .collect(),
                can_manage: member.role().allows(Permission::ManageMembers),
                retention_days,
                can_change_plan: member.role().allows(Permission::ManageBilling),
                invite_roles: select_options(&grantable_roles(member.role()), "viewer"),
                invitations: invitations
                    .into_iter()
                    .map(|invitation| InvitationRow {
                        invitation_id: invitation.invitation_id,
                        email: invitation.email,
                        role: invitation.role,
                        expires: date(invitation.expires_at),
                    })
                    .collect(),
                plans: select_options(&domain::Plan::ALL.map(domain::Plan::as_str), &plan),
                notice: settings_notice(&query.done),
                error: settings_error(&query.refused),
            },
        ))
    }
    .await;
    page_result(&member, result)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RoleForm {
    role: String,
}

/// Back to the settings page, saying how the change went.
fn back_to_settings(outcome: &str) -> Response {
    Redirect::to(&format!("/app/settings?{outcome}#members-heading")).into_response()
}

/// A member change: the permission, the owner-only rule, then the store's own rules inside the
/// member's transaction.
async fn change_member(
    state: &AppState,
    member: &Member,
    user: &str,
    new_role: Option<Role>,
) -> Result<Response, PageError> {
    let user: UserId = user.parse().map_err(|_| PageError::NotFound)?;
    let mut tx = member.tx(state, Permission::ManageMembers).await?;
    let current = store::members::role_of(&mut tx, user).await?;
    if !member.role().may_change_member(current, new_role) {
        return Ok(back_to_settings("refused=owner-only"));
    }
    let outcome = match new_role {
        Some(role) => store::members::change_role(&mut tx, user, role)
            .await
            .map(|_| "done=role"),
        None => store::members::remove(&mut tx, user)
            .await
            .map(|_| "done=removed"),
    };
    match outcome {
        Ok(done) => {
            tx.commit().await?;
            tracing::info!(%user, by = %member.session().user.user_id, "member changed");
            Ok(back_to_settings(done))
        }
        Err(store::StoreError::Forbidden(_)) => Ok(back_to_settings("refused=last-owner")),
        Err(error) => Err(error.into()),
    }
}

async fn change_member_role(
    State(state): State<AppState>,
    member: Member,
    Path(user): Path<String>,
    Form(form): Form<RoleForm>,
) -> Response {
    let result = match form.role.parse::<Role>() {
        Ok(role) if role.is_tenant_role() => {
            change_member(&state, &member, &user, Some(role)).await
        }
        _ => Err(PageError::BadRequest(
            "Choose owner, admin, operator or viewer.".into(),
        )),
    };
    page_result(&member, result)
}

async fn remove_member(
    State(state): State<AppState>,
    member: Member,
    Path(user): Path<String>,
) -> Response {
    let result = change_member(&state, &member, &user, None).await;
    page_result(&member, result)
}

#[derive(Debug)]
struct TokenRow {
    token_id: uuid::Uuid,
    name: String,
    role: Role,
    expires: String,
    status: &'static str,
}

#[derive(Debug)]
struct CreatedToken {
    name: String,
    text: String,
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct TokenForm {
    name: String,
    role: String,
    days: String,
}

impl Default for TokenForm {
    fn default() -> Self {
        Self {
            name: String::new(),
            role: "viewer".into(),
            days: "90".into(),
        }
    }
}

#[derive(Template)]
#[template(path = "app/api_tokens.html")]
struct ApiTokensPage {
    chrome: Chrome,
    shell: Shell,
    tokens: Vec<TokenRow>,
    roles: Vec<SelectOption>,
    form: TokenForm,
    created: Option<CreatedToken>,
    notice: Option<&'static str>,
    errors: Vec<String>,
}

/// Bronze retention a workspace may choose, in days.
pub(crate) const RETENTION_DAYS: std::ops::RangeInclusive<i32> = 1..=3650;
/// How long an API token may live, in days.
pub(crate) const TOKEN_DAYS: std::ops::RangeInclusive<i64> = 1..=366;

/// A token's name: 1 to 100 characters (trimmed), none of them control characters.
pub(crate) fn token_name_is_valid(name: &str) -> bool {
    let name = name.trim();
    !name.is_empty() && name.chars().count() <= 100 && !name.chars().any(char::is_control)
}

/// The roles `creator` may give a token or an invitation: never more than their own (an admin
/// cannot mint an owner token).
fn grantable_roles(creator: Role) -> Vec<&'static str> {
    Role::TENANT_ROLES
        .into_iter()
        .filter(|role| creator.may_grant(*role))
        .map(Role::as_str)
        .collect()
}

async fn render_tokens_page(
    state: &AppState,
    member: &Member,
    status: StatusCode,
    form: TokenForm,
    created: Option<CreatedToken>,
    notice: Option<&'static str>,
    errors: Vec<String>,
) -> Result<Response, PageError> {
    let mut tx = member.tx(state, Permission::ManageApiTokens).await?;
    let tokens = store::api_tokens::list(&mut tx).await?;
    tx.commit().await?;
    let now = time::OffsetDateTime::now_utc();
    Ok(render(
        status,
        &ApiTokensPage {
            chrome: member.visitor.chrome("app"),
            shell: shell(member, "/app/settings/api-tokens"),
            tokens: tokens
                .into_iter()
                .map(|token| TokenRow {
                    status: if token.revoked_at.is_some() {
                        "revoked"
                    } else if token.expires_at <= now {
                        "expired"
                    } else {
                        "active"
                    },
                    token_id: token.token_id,
                    name: token.name,
                    role: token.role,
                    expires: date(token.expires_at),
                })
                .collect(),
            roles: select_options(&grantable_roles(member.role()), &form.role),
            form,
            created,
            notice,
            errors,
        },
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TokensQuery {
    done: String,
}

async fn api_tokens_page(
    State(state): State<AppState>,
    member: Member,
    Query(query): Query<TokensQuery>,
) -> Response {
    let notice = (query.done == "revoked").then_some("The token was revoked; it works no more.");
    let result = render_tokens_page(
        &state,
        &member,
        StatusCode::OK,
        TokenForm::default(),
        None,
        notice,
        Vec::new(),
    )
    .await;
    page_result(&member, result)
}

/// Creates a token and shows its text once, in this response only (which, like every page, is
/// `Cache-Control: no-store`).
async fn create_api_token(
    State(state): State<AppState>,
    member: Member,
    Form(form): Form<TokenForm>,
) -> Response {
    let result = async {
        member.require(Permission::ManageApiTokens)?;
        let mut errors = Vec::new();
        let role = form
            .role
            .parse::<Role>()
            .ok()
            .filter(|role| grantable_roles(member.role()).contains(&role.as_str()));
        if role.is_none() {
            errors.push("Choose a role no higher than your own.".to_owned());
        }
        let days = form.days.trim().parse::<i64>().ok().filter(|days| TOKEN_DAYS.contains(days));
        if days.is_none() {
            errors.push("Choose an expiry between 1 and 366 days.".to_owned());
        }
        let name = form.name.trim();
        if !token_name_is_valid(name) {
            errors.push("Name the token (up to 100 characters).".to_owned());
        }
        let (Some(role), Some(days), true) = (role, days, errors.is_empty()) else {
            return render_tokens_page(
                &state,
                &member,
                StatusCode::UNPROCESSABLE_ENTITY,
                form,
                None,
                None,
                errors,
            )
            .await;
        };
        let mut tx = member.tx(&state, Permission::ManageApiTokens).await?;
        let (token, text) =
            store::api_tokens::create(&mut tx, name, role, time::Duration::days(days)).await?;
        tx.commit().await?;
        tracing::info!(token = %token.token_id, by = %member.session().user.user_id, "API token created");
        render_tokens_page(
            &state,
            &member,
            StatusCode::CREATED,
            TokenForm::default(),
            Some(CreatedToken {
                name: token.name,
                text,
            }),
            None,
            Vec::new(),
        )
        .await
    }
    .await;
    page_result(&member, result)
}

async fn revoke_api_token(
    State(state): State<AppState>,
    member: Member,
    Path(token): Path<String>,
) -> Response {
    let result = async {
        let token: uuid::Uuid = token.parse().map_err(|_| PageError::NotFound)?;
        let mut tx = member.tx(&state, Permission::ManageApiTokens).await?;
        store::api_tokens::revoke(&mut tx, token).await?;
        tx.commit().await?;
        Ok(Redirect::to("/app/settings/api-tokens?done=revoked").into_response())
    }
    .await;
    page_result(&member, result)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RetentionForm {
    days: String,
}

async fn set_retention(
    State(state): State<AppState>,
    member: Member,
    Form(form): Form<RetentionForm>,
) -> Response {
    let result = async {
        let mut tx = member.tx(&state, Permission::ManageRetention).await?;
        let Some(days) = form
            .days
            .trim()
            .parse::<i32>()
            .ok()
            .filter(|days| RETENTION_DAYS.contains(days))
        else {
            return Ok(back_to_settings("refused=retention"));
        };
        store::retention::set_days(&mut tx, days).await?;
        tx.commit().await?;
        Ok(Redirect::to("/app/settings?done=retention#retention-heading").into_response())
    }
    .await;
    page_result(&member, result)
}

/// Entries per audit page.
const AUDIT_PAGE_SIZE: i64 = 50;
/// The most entries one CSV export holds.
const AUDIT_EXPORT_LIMIT: i64 = 10_000;
pub(crate) const ACTOR_TYPES: [&str; 6] = ["", "user", "cli", "system", "agent", "api_token"];

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct AuditQuery {
    action: String,
    actor: String,
    before: String,
}

impl AuditQuery {
    fn filter(&self) -> store::audit::AuditFilter {
        let action = self.action.trim();
        store::audit::AuditFilter {
            action_prefix: (!action.is_empty()).then(|| action.chars().take(100).collect()),
            actor_type: ACTOR_TYPES
                .contains(&self.actor.as_str())
                .then(|| self.actor.clone())
                .filter(|actor| !actor.is_empty()),
            before_seq: self.before.parse().ok(),
        }
    }

    /// The query string for these filters (and `before`, if given).
    fn href(&self, path: &str, before: Option<i64>) -> String {
        let mut pairs = Vec::new();
        let filter = self.filter();
        if let Some(action) = &filter.action_prefix {
            pairs.push(format!("action={}", query_encode(action)));
        }
        if let Some(actor) = &filter.actor_type {
            pairs.push(format!("actor={actor}"));
        }
        if let Some(before) = before {
            pairs.push(format!("before={before}"));
        }
        if pairs.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{}", pairs.join("&"))
        }
    }
}

pub(crate) fn query_encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[derive(Debug)]
struct AuditRow {
    seq: i64,
    when: String,
    actor: String,
    action: String,
    target: String,
    details: String,
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

pub(crate) fn timestamp(at: time::OffsetDateTime) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    at.format(&format).unwrap_or_default()
}

/// The tenant's audit log, filtered and paged, with the chain verified from this request.
async fn audit_page(
    State(state): State<AppState>,
    member: Member,
    Query(query): Query<AuditQuery>,
) -> Response {
    let result = async {
        let tx = member.tx(&state, Permission::ViewAudit).await?;
        render_audit(
            tx,
            member.visitor.chrome("app"),
            shell(&member, "/app/audit"),
            &query,
            "/app/audit",
            "Audit log".into(),
        )
        .await
    }
    .await;
    page_result(&member, result)
}

/// The audit page of the transaction's tenant at `base` (the member's own log, or a tenant's
/// log as internal operations opens it).
pub(crate) async fn render_audit(
    mut tx: TenantTx,
    chrome: Chrome,
    shell: Shell,
    query: &AuditQuery,
    base: &str,
    heading: String,
) -> Result<Response, PageError> {
    let filter = query.filter();
    let records = store::audit::search(&mut tx, &filter, AUDIT_PAGE_SIZE + 1).await?;
    let chain = store::audit::verify_tenant(&mut tx).await?;
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
                    actor: format!("{}:{}", record.actor_type, record.actor_id),
                    action: record.action,
                    target: record.target,
                    details: record.details.to_string(),
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

/// One CSV field: quoted, quotes doubled, and a leading `=`, `+`, `-`, `@`, tab or carriage
/// return neutralised with a `'`, so a spreadsheet never runs an entry as a formula.
fn csv_field(text: &str) -> String {
    let guarded = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    format!("\"{}\"", guarded.replace('"', "\"\""))
}

/// The filtered log as CSV, newest first, at most `AUDIT_EXPORT_LIMIT` entries.
async fn audit_csv(
    State(state): State<AppState>,
    member: Member,
    Query(query): Query<AuditQuery>,
) -> Response {
    let result = async {
        let tx = member.tx(&state, Permission::ViewAudit).await?;
        let response = audit_csv_response(tx, &query).await;
        tracing::info!(user = %member.session().user.user_id, "audit log exported");
        response
    }
    .await;
    page_result(&member, result)
}

/// The transaction tenant's filtered audit log as a CSV download.
pub(crate) async fn audit_csv_response(
    mut tx: TenantTx,
    query: &AuditQuery,
) -> Result<Response, PageError> {
    let records = store::audit::search(&mut tx, &query.filter(), AUDIT_EXPORT_LIMIT).await?;
    tx.commit().await?;
    let mut csv =
        String::from("seq,occurred_at,actor_type,actor_id,action,target,details,client_addr\r\n");
    for record in records {
        let occurred_at = record
            .occurred_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let fields = [
            record.seq.to_string(),
            occurred_at,
            record.actor_type,
            record.actor_id,
            record.action,
            record.target,
            record.details.to_string(),
            record.client_addr.unwrap_or_default(),
        ];
        let line: Vec<String> = fields.iter().map(|field| csv_field(field)).collect();
        csv.push_str(&line.join(","));
        csv.push_str("\r\n");
    }
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                axum::http::header::CONTENT_DISPOSITION,
                "attachment; filename=\"audit-log.csv\"",
            ),
        ],
        csv,
    )
        .into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WorkspaceForm {
    name: String,
    plan: String,
    industry: String,
    region: String,
}

/// Name, industry and region for owners and admins; the plan (billing) for owners only.
async fn update_workspace(
    State(state): State<AppState>,
    member: Member,
    Form(form): Form<WorkspaceForm>,
) -> Response {
    let result = async {
        let mut tx = member.tx(&state, Permission::ManageWorkspace).await?;
        let current = store::control::current_tenant(&mut tx).await?;
        let plan = if form.plan.is_empty() || form.plan == current.plan {
            current.plan.parse::<domain::Plan>()
        } else {
            member.require(Permission::ManageBilling)?;
            form.plan.parse()
        };
        let attributes = plan.and_then(|plan| {
            domain::TenantAttributes::parse(&form.name, plan, &form.industry, &form.region)
        });
        let Ok(attributes) = attributes else {
            return Ok(back_to_settings("refused=workspace"));
        };
        store::control::update_tenant(&mut tx, &attributes).await?;
        tx.commit().await?;
        Ok(Redirect::to("/app/settings?done=workspace#workspace-heading").into_response())
    }
    .await;
    page_result(&member, result)
}

#[derive(Debug)]
struct InvitationRow {
    invitation_id: uuid::Uuid,
    email: String,
    role: Role,
    expires: String,
}

/// How long an invitation link works.
pub(crate) const INVITATION_LIFETIME: time::Duration = time::Duration::days(7);

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct InviteForm {
    email: String,
    role: String,
}

/// Invites `email` to the transaction's workspace (named `workspace`) with `role`, commits, and
/// sends the link: by mail, or to the server log when no mail server is configured (by
/// invitation id, never the address). Returns the invitation's id.
pub(crate) async fn send_invitation(
    state: &AppState,
    mut tx: TenantTx,
    email: &domain::Email,
    role: Role,
    workspace: &str,
) -> Result<uuid::Uuid, store::StoreError> {
    let (invitation, token) =
        store::invitations::create(&mut tx, email, role, INVITATION_LIFETIME).await?;
    tx.commit().await?;
    crate::mail::deliver_invitation(
        state,
        invitation,
        email,
        workspace,
        role,
        &token,
        INVITATION_LIFETIME.whole_days(),
    );
    Ok(invitation)
}

/// Invites an address with a role no higher than the inviter's.
async fn invite(
    State(state): State<AppState>,
    member: Member,
    Form(form): Form<InviteForm>,
) -> Response {
    let result = async {
        let tx = member.tx(&state, Permission::ManageMembers).await?;
        let email = domain::Email::parse(&form.email).ok();
        let role = form
            .role
            .parse::<Role>()
            .ok()
            .filter(|role| grantable_roles(member.role()).contains(&role.as_str()));
        let (Some(email), Some(role)) = (email, role) else {
            return Ok(back_to_settings("refused=invitation"));
        };
        send_invitation(&state, tx, &email, role, &member.workspace.name).await?;
        Ok(Redirect::to("/app/settings?done=invited#members-heading").into_response())
    }
    .await;
    page_result(&member, result)
}

async fn withdraw_invitation(
    State(state): State<AppState>,
    member: Member,
    Path(invitation): Path<String>,
) -> Response {
    let result = async {
        let invitation: uuid::Uuid = invitation.parse().map_err(|_| PageError::NotFound)?;
        let mut tx = member.tx(&state, Permission::ManageMembers).await?;
        store::invitations::revoke(&mut tx, invitation).await?;
        tx.commit().await?;
        Ok(back_to_settings("done=withdrawn"))
    }
    .await;
    page_result(&member, result)
}
