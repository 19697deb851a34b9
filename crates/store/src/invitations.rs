//! Invitations to a workspace: an owner or admin invites an email address with a role; whoever
//! opens the one-time link signs in (or creates an account) with that address and becomes a
//! member. The link is `tin1.<tenant>.<invitation id>.<secret>` (see `secret_token`); only the
//! secret's hash is stored. Invitations expire, can be withdrawn, and work once.

use domain::{Email, Role, TenantId, UserId};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::audit::{self, AuditEntry};
use crate::members::parse_role;
use crate::{Actor, AppDb, Scope, StoreError, TenantTx, secret_token};

const PREFIX: &str = "tin1";

/// An open invitation as the workspace's managers list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invitation {
    pub invitation_id: Uuid,
    pub email: String,
    pub role: Role,
    pub expires_at: OffsetDateTime,
}

/// An open invitation as the person holding its link sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvitationView {
    pub tenant: TenantId,
    pub workspace: String,
    pub email: String,
    pub role: Role,
}

fn tenant(tx: &TenantTx) -> Result<TenantId, StoreError> {
    tx.tenant()
        .ok_or(StoreError::Forbidden("an invitation needs a tenant scope"))
}

/// Invites `email` to the transaction's tenant with `role` (audited); returns the invitation's
/// id and the link's token, to be sent to the address.
pub async fn create(
    tx: &mut TenantTx,
    email: &Email,
    role: Role,
    lifetime: Duration,
) -> Result<(Uuid, String), StoreError> {
    if !role.is_tenant_role() {
        return Err(StoreError::Invalid(
            "members can be owner, admin, operator or viewer".into(),
        ));
    }
    let tenant = tenant(tx)?;
    let issued = secret_token::issue(PREFIX, tenant);
    sqlx::query(
        "insert into control.invitations \
             (tenant_id, invitation_id, email, role, token_hash, expires_at) \
         values ($1, $2, $3, $4, $5, now() + $6)",
    )
    .bind(tenant.as_uuid())
    .bind(issued.token_id)
    .bind(email.as_str())
    .bind(role.as_str())
    .bind(issued.secret_hash.to_vec())
    .bind(lifetime)
    .execute(tx.connection())
    .await?;
    audit::append(
        tx,
        AuditEntry::new("member.invite", issued.token_id.to_string())
            .details(serde_json::json!({ "role": role })),
    )
    .await?;
    Ok((issued.token_id, issued.text))
}

/// An invitation row, before its stored role is parsed.
#[derive(sqlx::FromRow)]
struct InvitationRow {
    invitation_id: Uuid,
    email: String,
    role: String,
    expires_at: OffsetDateTime,
}

impl TryFrom<InvitationRow> for Invitation {
    type Error = StoreError;

    fn try_from(row: InvitationRow) -> Result<Self, Self::Error> {
        Ok(Invitation {
            role: parse_role(&row.role)?,
            invitation_id: row.invitation_id,
            email: row.email,
            expires_at: row.expires_at,
        })
    }
}

/// The transaction's tenant's open invitations, newest first.
pub async fn list_open(tx: &mut TenantTx) -> Result<Vec<Invitation>, StoreError> {
    let tenant = tenant(tx)?;
    let rows: Vec<InvitationRow> = sqlx::query_as(
        "select invitation_id, email, role, expires_at from control.invitations \
         where tenant_id = $1 and accepted_at is null and revoked_at is null \
           and expires_at > now() \
         order by tenant_id, created_at desc",
    )
    .bind(tenant.as_uuid())
    .fetch_all(tx.connection())
    .await?;
    rows.into_iter().map(Invitation::try_from).collect()
}

/// An open invitation's row with its workspace's name.
#[derive(sqlx::FromRow)]
struct OpenInvitationRow {
    email: String,
    role: String,
    token_hash: Vec<u8>,
    name: String,
}

/// Withdraws an open invitation of the transaction's tenant (audited).
pub async fn revoke(tx: &mut TenantTx, invitation: Uuid) -> Result<(), StoreError> {
    let tenant = tenant(tx)?;
    let revoked = sqlx::query(
        "update control.invitations set revoked_at = now() \
         where tenant_id = $1 and invitation_id = $2 and accepted_at is null \
           and revoked_at is null",
    )
    .bind(tenant.as_uuid())
    .bind(invitation)
    .execute(tx.connection())
    .await?;
    if revoked.rows_affected() == 0 {
        return Err(StoreError::NotFound("open invitation"));
    }
    audit::append(
        tx,
        AuditEntry::new("member.invite_revoke", invitation.to_string()),
    )
    .await
}

/// The open invitation `parsed` is the link of, locked until the transaction ends.
async fn open_invitation(
    tx: &mut TenantTx,
    parsed: &secret_token::ParsedToken,
) -> Result<Option<InvitationView>, StoreError> {
    let row: Option<OpenInvitationRow> = sqlx::query_as(
        "select i.email, i.role, i.token_hash, d.name from control.invitations i \
         join control.dim_tenant d on d.tenant_id = i.tenant_id \
         where i.tenant_id = $1 and i.invitation_id = $2 and i.accepted_at is null \
           and i.revoked_at is null and i.expires_at > now() and d.status = 'active' \
         for update of i",
    )
    .bind(parsed.tenant.as_uuid())
    .bind(parsed.token_id)
    .fetch_optional(tx.connection())
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    if !secret_token::same_hash(&row.token_hash, &parsed.secret_hash) {
        return Ok(None);
    }
    Ok(Some(InvitationView {
        tenant: parsed.tenant,
        role: parse_role(&row.role)?,
        workspace: row.name,
        email: row.email,
    }))
}

async fn control_tx(
    database: &AppDb,
    tenant: TenantId,
    actor: Actor,
) -> Result<TenantTx, StoreError> {
    TenantTx::begin(
        database,
        Scope::Control {
            tenant: Some(tenant),
            actor,
        },
    )
    .await
}

/// What the link `text` invites to, if it is an open invitation.
pub async fn find(database: &AppDb, text: &str) -> Result<Option<InvitationView>, StoreError> {
    let Some(parsed) = secret_token::parse(PREFIX, text) else {
        return Ok(None);
    };
    let mut tx = control_tx(database, parsed.tenant, Actor::System("invitation")).await?;
    let view = open_invitation(&mut tx, &parsed).await?;
    tx.rollback().await?;
    Ok(view)
}

/// Makes `user` (whose address must be the invited one) a member with the invited role, and
/// spends the invitation; someone already a member keeps their role. Audited in the workspace.
/// `None` when the link is not an open invitation for `email`.
pub async fn accept(
    database: &AppDb,
    text: &str,
    user: UserId,
    email: &Email,
) -> Result<Option<InvitationView>, StoreError> {
    let Some(parsed) = secret_token::parse(PREFIX, text) else {
        return Ok(None);
    };
    let mut tx = control_tx(database, parsed.tenant, Actor::User(user)).await?;
    let Some(view) = open_invitation(&mut tx, &parsed).await? else {
        return Ok(None);
    };
    if view.email != email.as_str() {
        return Ok(None);
    }
    join(&mut tx, &parsed, &view, user).await?;
    tx.commit().await?;
    Ok(Some(view))
}

/// Creates an account for the invited address (with `password_hash`) and accepts the
/// invitation with it, in one transaction. `AlreadyExists` when the address has an account
/// (sign in instead); `None` when the link is not an open invitation.
pub async fn accept_with_new_account(
    database: &AppDb,
    text: &str,
    display_name: &str,
    password_hash: &str,
) -> Result<Option<(UserId, InvitationView)>, StoreError> {
    let Some(parsed) = secret_token::parse(PREFIX, text) else {
        return Ok(None);
    };
    let display_name = display_name.trim();
    if display_name.chars().count() > 200 || display_name.chars().any(char::is_control) {
        return Err(StoreError::Invalid(
            "name must be at most 200 characters, without control characters".into(),
        ));
    }
    let user = UserId::new_random();
    let mut tx = control_tx(database, parsed.tenant, Actor::User(user)).await?;
    let Some(view) = open_invitation(&mut tx, &parsed).await? else {
        return Ok(None);
    };
    let inserted = sqlx::query(
        "insert into control.users (user_id, email, display_name, password_hash) \
         values ($1, $2, $3, $4) on conflict (email) do nothing",
    )
    .bind(user.as_uuid())
    .bind(&view.email)
    .bind(display_name)
    .bind(password_hash)
    .execute(tx.connection())
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(StoreError::AlreadyExists("an account with this email"));
    }
    join(&mut tx, &parsed, &view, user).await?;
    tx.commit().await?;
    Ok(Some((user, view)))
}

async fn join(
    tx: &mut TenantTx,
    parsed: &secret_token::ParsedToken,
    view: &InvitationView,
    user: UserId,
) -> Result<(), StoreError> {
    sqlx::query(
        "update control.invitations set accepted_at = now() \
         where tenant_id = $1 and invitation_id = $2",
    )
    .bind(parsed.tenant.as_uuid())
    .bind(parsed.token_id)
    .execute(tx.connection())
    .await?;
    let added = sqlx::query(
        "insert into control.members (tenant_id, user_id, role) values ($1, $2, $3) \
         on conflict (tenant_id, user_id) do nothing",
    )
    .bind(parsed.tenant.as_uuid())
    .bind(user.as_uuid())
    .bind(view.role.as_str())
    .execute(tx.connection())
    .await?;
    if added.rows_affected() > 0 {
        audit::append(
            tx,
            AuditEntry::new("member.add", user.to_string()).details(serde_json::json!({
                "role": view.role, "via": "invitation", "invitation_id": parsed.token_id,
            })),
        )
        .await?;
    }
    Ok(())
}
