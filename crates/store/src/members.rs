//! A workspace's members as its own owners and admins manage them, inside their `TenantTx`: the
//! database's grants and row-level security apply to every statement, and each change is audited
//! in the same transaction. A workspace always keeps at least one owner.

use domain::{Role, UserId};
use sqlx::Row;
use uuid::Uuid;

use crate::audit::{self, AuditEntry};
use crate::control::Member;
use crate::{StoreError, TenantTx};

/// The members of the transaction's tenant, by email.
pub async fn list(tx: &mut TenantTx) -> Result<Vec<Member>, StoreError> {
    let tenant = tenant(tx)?;
    let rows = sqlx::query(
        "select m.user_id, u.email, u.display_name, m.role \
         from control.members m join control.users u on u.user_id = m.user_id \
         where m.tenant_id = $1 order by u.email",
    )
    .bind(tenant.as_uuid())
    .fetch_all(tx.connection())
    .await?;
    rows.iter()
        .map(|row| {
            let role: String = row.try_get("role")?;
            Ok(Member {
                user_id: UserId::from_uuid(row.try_get("user_id")?),
                email: row.try_get("email")?,
                display_name: row.try_get("display_name")?,
                role: role
                    .parse()
                    .map_err(|_| StoreError::Invalid(format!("stored role {role:?}")))?,
            })
        })
        .collect()
}

/// The member's role, locked until the transaction ends; `NotFound` for anyone who is not a
/// member of the transaction's tenant (another tenant's members do not exist here).
pub async fn role_of(tx: &mut TenantTx, user: UserId) -> Result<Role, StoreError> {
    let tenant = tenant(tx)?;
    let role: Option<String> = sqlx::query_scalar(
        "select role from control.members where tenant_id = $1 and user_id = $2 for update",
    )
    .bind(tenant.as_uuid())
    .bind(user.as_uuid())
    .fetch_optional(tx.connection())
    .await?;
    let role = role.ok_or(StoreError::NotFound("member"))?;
    role.parse()
        .map_err(|_| StoreError::Invalid(format!("stored role {role:?}")))
}

/// Gives `user` the tenant role `role`; returns the previous one. Refuses to leave the workspace
/// without an owner.
pub async fn change_role(tx: &mut TenantTx, user: UserId, role: Role) -> Result<Role, StoreError> {
    if !role.is_tenant_role() {
        return Err(StoreError::Forbidden(
            "members can be owner, admin, operator or viewer",
        ));
    }
    let tenant = tenant(tx)?;
    let previous = role_of(tx, user).await?;
    if previous == role {
        return Ok(previous);
    }
    if previous == Role::Owner {
        ensure_another_owner(tx, user).await?;
    }
    sqlx::query("update control.members set role = $3 where tenant_id = $1 and user_id = $2")
        .bind(tenant.as_uuid())
        .bind(user.as_uuid())
        .bind(role.as_str())
        .execute(tx.connection())
        .await?;
    audit::append(
        tx,
        AuditEntry::new("member.change_role", user.to_string())
            .details(serde_json::json!({ "role": role, "previous_role": previous })),
    )
    .await?;
    Ok(previous)
}

/// Removes `user` from the workspace; returns the role they had. Refuses to remove the last
/// owner.
pub async fn remove(tx: &mut TenantTx, user: UserId) -> Result<Role, StoreError> {
    let tenant = tenant(tx)?;
    let previous = role_of(tx, user).await?;
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
    Ok(previous)
}

fn tenant(tx: &TenantTx) -> Result<domain::TenantId, StoreError> {
    tx.tenant().ok_or(StoreError::Forbidden(
        "managing members needs a tenant scope",
    ))
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
