//! `/app/settings`: the workspace (name, plan, industry, region), its members and their roles,
//! invitations to it, and bronze retention, for owners and admins; each change posts to its
//! own route and comes back to the page saying how it went.

use askama::Template;
use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use domain::{Permission, Role, UserId};
use serde::Deserialize;

use crate::AppState;
use crate::auth::session::Member;
use crate::pages::{Chrome, PageError, SelectOption, render, select_options};
use crate::rules::{
    INVITATION_RETRY_AFTER_SECONDS, Invited, Inviter, RETENTION_DAYS, grantable_roles,
    send_invitation,
};
use crate::shell::{Shell, date, shell};

pub fn routes() -> Router<AppState> {
    Router::new()
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

/// Workspace and members (owners and admins).
async fn settings(
    State(state): State<AppState>,
    member: Member,
    Query(query): Query<SettingsQuery>,
) -> Result<Response, PageError> {
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
                    roles: select_options(&Role::TENANT_ROLES.map(Role::as_str), row.role.as_str()),
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
) -> Result<Response, PageError> {
    match form.role.parse::<Role>() {
        Ok(role) if role.is_tenant_role() => {
            change_member(&state, &member, &user, Some(role)).await
        }
        _ => Err(PageError::BadRequest(
            "Choose owner, admin, operator or viewer.".into(),
        )),
    }
}

async fn remove_member(
    State(state): State<AppState>,
    member: Member,
    Path(user): Path<String>,
) -> Result<Response, PageError> {
    change_member(&state, &member, &user, None).await
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
) -> Result<Response, PageError> {
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
) -> Result<Response, PageError> {
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

#[derive(Debug)]
struct InvitationRow {
    invitation_id: uuid::Uuid,
    email: String,
    role: Role,
    expires: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct InviteForm {
    email: String,
    role: String,
}

/// Invites an address with a role no higher than the inviter's.
async fn invite(
    State(state): State<AppState>,
    member: Member,
    Form(form): Form<InviteForm>,
) -> Result<Response, PageError> {
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
    let inviter = Inviter::Member(member.session().user.user_id);
    match send_invitation(&state, tx, inviter, &email, role, &member.workspace.name).await? {
        Invited::Sent(_) => {
            Ok(Redirect::to("/app/settings?done=invited#members-heading").into_response())
        }
        Invited::Limited(_) => Err(PageError::TooManyInvitations {
            retry_after: INVITATION_RETRY_AFTER_SECONDS,
        }),
    }
}

async fn withdraw_invitation(
    State(state): State<AppState>,
    member: Member,
    Path(invitation): Path<String>,
) -> Result<Response, PageError> {
    let invitation: uuid::Uuid = invitation.parse().map_err(|_| PageError::NotFound)?;
    let mut tx = member.tx(&state, Permission::ManageMembers).await?;
    store::invitations::revoke(&mut tx, invitation).await?;
    tx.commit().await?;
    Ok(back_to_settings("done=withdrawn"))
}
