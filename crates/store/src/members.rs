//! A workspace's members and the rules for changing them, inside a `TenantTx`: the database's
//! grants and row-level security apply to every statement, and each change is audited in the same
//! transaction. A workspace always keeps at least one owner. Credentials follow their holder:
//! removing a member revokes every API token and open invitation they created, and demoting one
//! revokes those whose role is above their new role, each revocation audited in the same
//! transaction. The web app calls this module in a member's transaction; the operator's commands
//! (`control::set_member` and friends) call it in a control transaction after resolving an email
//! to its account.

use domain::{Role, UserId};
use uuid::Uuid;

use crate::audit::{self, AuditEntry};
use crate::control::Member;
use crate::{StoreError, TenantTx};

/// A `control.members` row joined with its account, before its stored role is parsed.
#[derive(sqlx::FromRow)]
struct MemberRow {
    #[sqlx(try_from = "Uuid")]
    user_id: UserId,
    email: String,
    display_name: String,
    role: String,
}

impl TryFrom<MemberRow> for Member {
    type Error = StoreError;

    fn try_from(row: MemberRow) -> Result<Self, Self::Error> {
        Ok(Member {
            user_id: row.user_id,
            email: row.email,
            display_name: row.display_name,
            role: parse_role(&row.role)?,
        })
    }
}

/// The members of the transaction's tenant, by email.
pub async fn list(tx: &mut TenantTx) -> Result<Vec<Member>, StoreError> {
    let tenant = tenant(tx)?;
    let rows: Vec<MemberRow> = sqlx::query_as(
        "select m.user_id, u.email, u.display_name, m.role \
         from control.members m join control.users u on u.user_id = m.user_id \
         where m.tenant_id = $1 order by u.email",
    )
    .bind(tenant.as_uuid())
    .fetch_all(tx.connection())
    .await?;
    rows.into_iter().map(Member::try_from).collect()
}

/// The member's role, locked until the transaction ends; `NotFound` for anyone who is not a
/// member of the transaction's tenant (another tenant's members do not exist here).
pub async fn role_of(tx: &mut TenantTx, user: UserId) -> Result<Role, StoreError> {
    membership(tx, user)
        .await?
        .ok_or(StoreError::NotFound("member"))
}

/// Gives the member `user` the tenant role `role`; returns the previous one. Refuses to leave the
/// workspace without an owner. Giving a member the role they have changes nothing.
pub async fn change_role(tx: &mut TenantTx, user: UserId, role: Role) -> Result<Role, StoreError> {
    ensure_tenant_role(role)?;
    let previous = role_of(tx, user).await?;
    if previous == role {
        return Ok(previous);
    }
    write_role(tx, user, role, Some(previous)).await?;
    Ok(previous)
}

/// Removes `user` from the workspace; returns the role they had. Refuses to remove the last
/// owner.
pub async fn remove(tx: &mut TenantTx, user: UserId) -> Result<Role, StoreError> {
    let previous = role_of(tx, user).await?;
    delete_member(tx, user, previous).await?;
    Ok(previous)
}

/// Adds `user` to the workspace with `role`, or gives an existing member `role` (audited even
/// when it is the role they had); returns the previous role, if any. Refuses to leave the
/// workspace without an owner.
pub(crate) async fn add_or_change_role(
    tx: &mut TenantTx,
    user: UserId,
    role: Role,
) -> Result<Option<Role>, StoreError> {
    ensure_tenant_role(role)?;
    let previous = membership(tx, user).await?;
    write_role(tx, user, role, previous).await?;
    Ok(previous)
}

/// Removes `user` from the workspace if they are a member; returns the role they had, `None` if
/// they were not a member. Refuses to remove the last owner.
pub(crate) async fn remove_if_member(
    tx: &mut TenantTx,
    user: UserId,
) -> Result<Option<Role>, StoreError> {
    let Some(previous) = membership(tx, user).await? else {
        return Ok(None);
    };
    delete_member(tx, user, previous).await?;
    Ok(Some(previous))
}

/// Only the four tenant roles can be given to a member.
pub(crate) fn ensure_tenant_role(role: Role) -> Result<(), StoreError> {
    if role.is_tenant_role() {
        Ok(())
    } else {
        Err(StoreError::Forbidden(
            "members can be owner, admin, operator or viewer",
        ))
    }
}

/// The member's role, locked until the transaction ends; `None` for anyone who is not a member.
async fn membership(tx: &mut TenantTx, user: UserId) -> Result<Option<Role>, StoreError> {
    let tenant = tenant(tx)?;
    let role: Option<String> = sqlx::query_scalar(
        "select role from control.members where tenant_id = $1 and user_id = $2 for update",
    )
    .bind(tenant.as_uuid())
    .bind(user.as_uuid())
    .fetch_optional(tx.connection())
    .await?;
    role.as_deref().map(parse_role).transpose()
}

/// Stores `role` for `user`, whose role was `previous` (`None`: not a member yet), and audits it.
async fn write_role(
    tx: &mut TenantTx,
    user: UserId,
    role: Role,
    previous: Option<Role>,
) -> Result<(), StoreError> {
    let tenant = tenant(tx)?;
    if previous == Some(Role::Owner) && role != Role::Owner {
        ensure_another_owner(tx, user).await?;
    }
    let statement = if previous.is_some() {
        "update control.members set role = $3 where tenant_id = $1 and user_id = $2"
    } else {
        "insert into control.members (tenant_id, user_id, role) values ($1, $2, $3) \
         on conflict (tenant_id, user_id) do update set role = excluded.role"
    };
    sqlx::query(statement)
        .bind(tenant.as_uuid())
        .bind(user.as_uuid())
        .bind(role.as_str())
        .execute(tx.connection())
        .await?;
    let action = if previous.is_some() {
        "member.change_role"
    } else {
        "member.add"
    };
    audit::append(
        tx,
        AuditEntry::new(action, user.to_string())
            .details(serde_json::json!({ "role": role, "previous_role": previous })),
    )
    .await?;
    if previous.is_some() {
        revoke_credentials(tx, user, Some(role), action).await?;
    }
    Ok(())
}

/// Deletes the membership of `user`, whose role is `previous`, and audits it.
async fn delete_member(tx: &mut TenantTx, user: UserId, previous: Role) -> Result<(), StoreError> {
    let tenant = tenant(tx)?;
    if previous == Role::Owner {
        ensure_another_owner(tx, user).await?;
    }
    sqlx::query("delete from control.members where tenant_id = $1 and user_id = $2")
        .bind(tenant.as_uuid())
        .bind(user.as_uuid())
        .execute(tx.connection())
        .await?;
    audit::append(
        tx,
        AuditEntry::new("member.remove", user.to_string())
            .details(serde_json::json!({ "role": previous })),
    )
    .await?;
    revoke_credentials(tx, user, None, "member.remove").await
}

/// Revokes the API tokens and open invitations `user` created whose role a member holding
/// `kept` could not give (`None`: they left, so all of them), auditing each with `reason`, the
/// member change that caused it.
async fn revoke_credentials(
    tx: &mut TenantTx,
    user: UserId,
    kept: Option<Role>,
    reason: &'static str,
) -> Result<(), StoreError> {
    let tenant = tenant(tx)?;
    let above: Vec<&str> = Role::TENANT_ROLES
        .into_iter()
        .filter(|role| kept.is_none_or(|kept| !kept.may_grant(*role)))
        .map(Role::as_str)
        .collect();
    if above.is_empty() {
        return Ok(());
    }
    let tokens: Vec<(Uuid, String)> = sqlx::query_as(
        "update control.api_tokens set revoked_at = now() \
         where tenant_id = $1 and created_by = $2 and revoked_at is null and role = any($3) \
         returning token_id, role",
    )
    .bind(tenant.as_uuid())
    .bind(user.as_uuid())
    .bind(&above)
    .fetch_all(tx.connection())
    .await?;
    let invitations: Vec<(Uuid, String)> = sqlx::query_as(
        "update control.invitations set revoked_at = now() \
         where tenant_id = $1 and created_by = $2 and accepted_at is null \
           and revoked_at is null and role = any($3) \
         returning invitation_id, role",
    )
    .bind(tenant.as_uuid())
    .bind(user.as_uuid())
    .bind(&above)
    .fetch_all(tx.connection())
    .await?;
    let revoked = tokens
        .into_iter()
        .map(|(id, role)| ("api_token.revoke", id, role))
        .chain(
            invitations
                .into_iter()
                .map(|(id, role)| ("member.invite_revoke", id, role)),
        );
    for (action, id, role) in revoked {
        audit::append(
            tx,
            AuditEntry::new(action, id.to_string()).details(serde_json::json!({
                "role": role, "created_by": user, "reason": reason,
            })),
        )
        .await?;
    }
    Ok(())
}

fn tenant(tx: &TenantTx) -> Result<domain::TenantId, StoreError> {
    tx.tenant().ok_or(StoreError::Forbidden(
        "managing members needs a tenant scope",
    ))
}

/// A role as `control` tables store it; `Invalid` for text that names no role.
pub(crate) fn parse_role(role: &str) -> Result<Role, StoreError> {
    role.parse()
        .map_err(|_| StoreError::Invalid(format!("stored role {role:?}")))
}

/// Another owner than `leaving` exists; the owners are locked so that two concurrent changes
/// cannot each count the other as the one remaining.
async fn ensure_another_owner(tx: &mut TenantTx, leaving: UserId) -> Result<(), StoreError> {
    let tenant = tenant(tx)?;
    let others: Vec<Uuid> = sqlx::query_scalar(
        "select user_id from control.members \
         where tenant_id = $1 and role = 'owner' and user_id <> $2 for update",
    )
    .bind(tenant.as_uuid())
    .bind(leaving.as_uuid())
    .fetch_all(tx.connection())
    .await?;
    if others.is_empty() {
        Err(StoreError::Forbidden(
            "a workspace must keep at least one owner",
        ))
    } else {
        Ok(())
    }
}
