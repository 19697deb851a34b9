//! The rules the app's pages and the JSON API share: reading the tenant registry's and the
//! audit log's filters from a request, the bounds of retention and API tokens, which roles a
//! member may grant, and sending an invitation. No page and no API handler lives here.

use domain::Role;
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
