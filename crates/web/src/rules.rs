//! The rules the app's pages and the JSON API share: reading the tenant registry's and the
//! audit log's filters from a request, the bounds of retention and API tokens, which roles a
//! member may grant, and sending an invitation. No page and no API handler lives here.

use domain::{Role, TenantId, UserId};
use serde::Deserialize;
use store::TenantTx;

use crate::AppState;

/// The tenant registry's filters as a request gives them (the page's form, the API's query).
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
pub(crate) fn grantable_roles(creator: Role) -> Vec<&'static str> {
    Role::TENANT_ROLES
        .into_iter()
        .filter(|role| creator.may_grant(*role))
        .map(Role::as_str)
        .collect()
}

/// The audit log's actor types a filter may name; empty means any.
pub(crate) const ACTOR_TYPES: [&str; 6] = ["", "user", "cli", "system", "agent", "api_token"];

/// The audit log's filters and page as a request gives them: an action prefix, an actor
/// type, and the sequence number the page starts before.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct AuditQuery {
    action: String,
    actor: String,
    before: String,
}

impl AuditQuery {
    pub(crate) fn filter(&self) -> store::audit::AuditFilter {
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
    pub(crate) fn href(&self, path: &str, before: Option<i64>) -> String {
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

/// `text` percent-encoded for a query string.
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

/// How long an invitation link works.
pub(crate) const INVITATION_LIFETIME: time::Duration = time::Duration::days(7);

/// Invitations one inviter may send per [`INVITATION_WINDOW`], and a workspace's members and
/// tokens together: each sends mail to an address of the inviter's choosing, so these bound how
/// much mail a workspace can make strangers receive.
pub(crate) const INVITATIONS_PER_INVITER: i32 = 20;
pub(crate) const INVITATIONS_PER_WORKSPACE: i32 = 50;
/// The fixed window invitations are counted in.
pub(crate) const INVITATION_WINDOW: time::Duration = time::Duration::hours(1);
/// When a refused inviter may try again, at the latest: the window's length (`Retry-After`).
pub(crate) const INVITATION_RETRY_AFTER_SECONDS: &str = "3600";

/// Who sends an invitation, for its limit: a member, on a page or through an API token they
/// hold (the same person, the same count), or a token made at the command line.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Inviter {
    Member(UserId),
    Token(uuid::Uuid),
}

/// What became of an invitation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Invited {
    Sent(uuid::Uuid),
    /// Not sent: the inviter or the workspace reached its limit for this hour.
    Limited(InvitationLimit),
}

/// Which invitation limit was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InvitationLimit {
    Inviter,
    Workspace,
}

impl InvitationLimit {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            InvitationLimit::Inviter => "inviter",
            InvitationLimit::Workspace => "workspace",
        }
    }
}

/// Counts an invitation against `inviter`'s and then `tenant`'s limit (in
/// `control.auth_throttle`); the limit reached, if any. The workspace's count goes up only when
/// the inviter is within theirs, so one inviter past their limit does not use up the others'.
async fn invitation_limit(
    state: &AppState,
    inviter: Inviter,
    tenant: TenantId,
) -> Result<Option<InvitationLimit>, store::StoreError> {
    let inviter = match inviter {
        Inviter::Member(user) => format!("invitation inviter user {user}"),
        Inviter::Token(token) => format!("invitation inviter token {token}"),
    };
    let count = |bucket: String| async move {
        store::accounts::count_attempt(&state.database, &bucket, INVITATION_WINDOW).await
    };
    if count(inviter).await? > INVITATIONS_PER_INVITER {
        return Ok(Some(InvitationLimit::Inviter));
    }
    if count(format!("invitation workspace {tenant}")).await? > INVITATIONS_PER_WORKSPACE {
        return Ok(Some(InvitationLimit::Workspace));
    }
    Ok(None)
}

/// Invites `email` to the transaction's workspace (named `workspace`) with `role`, commits, and
/// sends the link: by mail, or to the server log when no mail server is configured (by
/// invitation id, never the address). Within the limits only ([`INVITATIONS_PER_INVITER`],
/// [`INVITATIONS_PER_WORKSPACE`]); past either, nothing is created or sent.
pub(crate) async fn send_invitation(
    state: &AppState,
    mut tx: TenantTx,
    inviter: Inviter,
    email: &domain::Email,
    role: Role,
    workspace: &str,
) -> Result<Invited, store::StoreError> {
    let tenant = tx
        .tenant()
        .ok_or(store::StoreError::Forbidden("invitations need a workspace"))?;
    if let Some(limit) = invitation_limit(state, inviter, tenant).await? {
        tracing::info!(%tenant, limit = limit.as_str(), "invitation refused: limit reached");
        return Ok(Invited::Limited(limit));
    }
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
    Ok(Invited::Sent(invitation))
}
