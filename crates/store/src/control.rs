//! Control-plane repositories: tenants, user accounts and memberships as the operator manages
//! them by email (the rules for changing a membership are `members`'). Every change is audited
//! in the transaction that makes it.

use domain::{Email, Role, TenantAttributes, TenantId, UserId};
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::audit::{self, AuditEntry};
use crate::{Actor, AppDb, Scope, StoreError, TenantTx, members};

/// A tenant as the registry lists it; read from a `dim_tenant` row (tenant_id, name, plan,
/// industry, region, status, created_at).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Tenant {
    #[sqlx(try_from = "Uuid")]
    pub tenant_id: TenantId,
    pub name: String,
    pub plan: String,
    pub industry: String,
    pub region: String,
    pub status: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// Creates a tenant with its default settings; audited in the new tenant's own chain.
pub async fn create_tenant(
    database: &AppDb,
    actor: Actor,
    attributes: &TenantAttributes,
) -> Result<Tenant, StoreError> {
    let tenant_id = TenantId::new_random();
    let mut tx = TenantTx::begin(
        database,
        Scope::Control {
            tenant: Some(tenant_id),
            actor,
        },
    )
    .await?;
    let created_at: OffsetDateTime = sqlx::query_scalar(
        "insert into control.dim_tenant (tenant_id, name, plan, industry, region) \
         values ($1, $2, $3, $4, $5) returning created_at",
    )
    .bind(tenant_id.as_uuid())
    .bind(&attributes.name)
    .bind(attributes.plan.as_str())
    .bind(&attributes.industry)
    .bind(&attributes.region)
    .fetch_one(tx.connection())
    .await?;
    sqlx::query("insert into control.tenant_settings (tenant_id) values ($1)")
        .bind(tenant_id.as_uuid())
        .execute(tx.connection())
        .await?;
    audit::append(
        &mut tx,
        AuditEntry::new("tenant.create", tenant_id.to_string()).details(serde_json::json!({
            "name": attributes.name,
            "plan": attributes.plan,
            "industry": attributes.industry,
            "region": attributes.region,
        })),
    )
    .await?;
    tx.commit().await?;
    Ok(Tenant {
        tenant_id,
        name: attributes.name.clone(),
        plan: attributes.plan.as_str().to_owned(),
        industry: attributes.industry.clone(),
        region: attributes.region.clone(),
        status: "active".into(),
        created_at,
    })
}

/// What the tenant registry can be narrowed to; empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryFilter {
    /// A part of the tenant's name, any case.
    pub search: String,
    pub plan: String,
    pub industry: String,
    pub region: String,
}

/// A registry row: the tenant and its volume from `control.tenant_usage` (whole UTC days).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct RegistryEntry {
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub tenant: Tenant,
    /// Sources that delivered events in the last 7 days.
    pub active_sources: i64,
    pub events_today: i64,
    pub events_7d: i64,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_event_at: Option<OffsetDateTime>,
}

/// The tenant registry as the transaction's role sees it: every tenant for internal
/// operations, the member's own workspace for everyone else (row-level security decides, not
/// this query). At most 500 rows, newest tenants first.
pub async fn registry(
    tx: &mut TenantTx,
    filter: &RegistryFilter,
) -> Result<Vec<RegistryEntry>, StoreError> {
    let pattern = format!(
        "%{}%",
        filter
            .search
            .trim()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    );
    Ok(sqlx::query_as(
        "select t.tenant_id, t.name, t.plan, t.industry, t.region, t.status, t.created_at, \
                coalesce(u.active_sources, 0) as active_sources, \
                coalesce(u.events_today, 0) as events_today, \
                coalesce(u.events_7d, 0) as events_7d, u.last_event_at \
         from control.dim_tenant t \
         left join ( \
             select tenant_id, count(distinct source_id) as active_sources, \
                    sum(events) filter (where day = (now() at time zone 'utc')::date)::bigint \
                        as events_today, \
                    sum(events)::bigint as events_7d, max(last_ingested_at) as last_event_at \
             from control.tenant_usage \
             where day > (now() at time zone 'utc')::date - 7 \
             group by tenant_id) u on u.tenant_id = t.tenant_id \
         where t.tenant_id <> $5 and t.name ilike $1 \
           and ($2 = '' or t.plan = $2) and ($3 = '' or t.industry = $3) \
           and ($4 = '' or t.region = $4) \
         order by t.created_at desc, t.tenant_id limit 500",
    )
    .bind(&pattern)
    .bind(filter.plan.trim())
    .bind(filter.industry.trim())
    .bind(filter.region.trim())
    .bind(TenantId::PLATFORM.as_uuid())
    .fetch_all(tx.connection())
    .await?)
}

/// Every tenant, as internal operations sees the registry.
pub async fn list_tenants(database: &AppDb, actor: Actor) -> Result<Vec<Tenant>, StoreError> {
    let mut tx = TenantTx::begin(
        database,
        Scope::InternalOps {
            tenant: None,
            actor,
        },
    )
    .await?;
    let tenants = sqlx::query_as(
        "select tenant_id, name, plan, industry, region, status, created_at \
         from control.dim_tenant order by created_at, tenant_id",
    )
    .fetch_all(tx.connection())
    .await?;
    tx.commit().await?;
    Ok(tenants)
}

/// A user account.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct User {
    pub user_id: UserId,
    pub email: String,
    pub display_name: String,
}

/// Creates an account; audited in the platform chain.
pub async fn create_user(
    database: &AppDb,
    actor: Actor,
    email: &Email,
    display_name: &str,
) -> Result<User, StoreError> {
    let display_name = display_name.trim();
    if display_name.chars().count() > 200 || display_name.chars().any(char::is_control) {
        return Err(StoreError::Invalid(
            "display name must be at most 200 characters, without control characters".into(),
        ));
    }
    let user_id = UserId::new_random();
    let mut tx = TenantTx::begin(
        database,
        Scope::Control {
            tenant: Some(TenantId::PLATFORM),
            actor,
        },
    )
    .await?;
    let inserted = sqlx::query(
        "insert into control.users (user_id, email, display_name) values ($1, $2, $3) \
         on conflict (email) do nothing",
    )
    .bind(user_id.as_uuid())
    .bind(email.as_str())
    .bind(display_name)
    .execute(tx.connection())
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(StoreError::AlreadyExists("a user with this email"));
    }
    audit::append(&mut tx, AuditEntry::new("user.create", user_id.to_string())).await?;
    tx.commit().await?;
    Ok(User {
        user_id,
        email: email.as_str().to_owned(),
        display_name: display_name.to_owned(),
    })
}

/// The account with `email`: its id and display name.
async fn user_by_email(tx: &mut TenantTx, email: &Email) -> Result<(UserId, String), StoreError> {
    let user: Option<(Uuid, String)> =
        sqlx::query_as("select user_id, display_name from control.users where email = $1")
            .bind(email.as_str())
            .fetch_optional(tx.connection())
            .await?;
    user.map(|(id, display_name)| (UserId::from_uuid(id), display_name))
        .ok_or(StoreError::NotFound("user"))
}

/// A membership as listed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Member {
    pub user_id: UserId,
    pub email: String,
    pub display_name: String,
    pub role: Role,
}

/// Adds `email` to `tenant` with `role`, or changes the role of an existing member. Refuses to
/// demote the last owner (the rule is `members`').
pub async fn set_member(
    database: &AppDb,
    actor: Actor,
    tenant: TenantId,
    email: &Email,
    role: Role,
) -> Result<Member, StoreError> {
    members::ensure_tenant_role(role)?;
    let mut tx = control_tx(database, actor, tenant).await?;
    ensure_tenant_exists(&mut tx).await?;
    let (user_id, display_name) = user_by_email(&mut tx, email).await?;
    members::add_or_change_role(&mut tx, user_id, role).await?;
    tx.commit().await?;
    Ok(Member {
        user_id,
        email: email.as_str().to_owned(),
        display_name,
        role,
    })
}

/// Removes `email` from `tenant`. Refuses to remove the last owner (the rule is `members`').
pub async fn remove_member(
    database: &AppDb,
    actor: Actor,
    tenant: TenantId,
    email: &Email,
) -> Result<(), StoreError> {
    let mut tx = control_tx(database, actor, tenant).await?;
    let (user_id, _) = user_by_email(&mut tx, email).await?;
    if members::remove_if_member(&mut tx, user_id).await?.is_none() {
        return Err(StoreError::NotFound("membership"));
    }
    tx.commit().await
}

/// Members of `tenant`, by email.
pub async fn list_members(
    database: &AppDb,
    actor: Actor,
    tenant: TenantId,
) -> Result<Vec<Member>, StoreError> {
    let mut tx = control_tx(database, actor, tenant).await?;
    ensure_tenant_exists(&mut tx).await?;
    let members = members::list(&mut tx).await?;
    tx.commit().await?;
    Ok(members)
}

async fn control_tx(
    database: &AppDb,
    actor: Actor,
    tenant: TenantId,
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

async fn ensure_tenant_exists(tx: &mut TenantTx) -> Result<(), StoreError> {
    let exists: bool = sqlx::query_scalar("select exists (select 1 from control.dim_tenant)")
        .fetch_one(tx.connection())
        .await?;
    if exists {
        Ok(())
    } else {
        Err(StoreError::NotFound("tenant"))
    }
}

/// The transaction's own tenant, as its members see it.
pub async fn current_tenant(tx: &mut TenantTx) -> Result<Tenant, StoreError> {
    let tenant = tx.tenant().ok_or(StoreError::Forbidden(
        "reading a workspace needs a tenant scope",
    ))?;
    sqlx::query_as(
        "select tenant_id, name, plan, industry, region, status, created_at \
         from control.dim_tenant where tenant_id = $1",
    )
    .bind(tenant.as_uuid())
    .fetch_optional(tx.connection())
    .await?
    .ok_or(StoreError::NotFound("tenant"))
}

/// Changes the transaction's own tenant's name, plan, industry and region (audited with the
/// previous values). Which roles may do so is the database's grants' business: the plan is
/// written only when it changes, because only an owner may write it (migration 0019).
pub async fn update_tenant(
    tx: &mut TenantTx,
    attributes: &TenantAttributes,
) -> Result<(), StoreError> {
    let previous = current_tenant(tx).await?;
    let statement = if previous.plan == attributes.plan.as_str() {
        "update control.dim_tenant set name = $2, industry = $4, region = $5, \
             updated_at = now() \
         where tenant_id = $1 and plan = $3"
    } else {
        "update control.dim_tenant set name = $2, plan = $3, industry = $4, region = $5, \
             updated_at = now() \
         where tenant_id = $1"
    };
    sqlx::query(statement)
        .bind(previous.tenant_id.as_uuid())
        .bind(&attributes.name)
        .bind(attributes.plan.as_str())
        .bind(&attributes.industry)
        .bind(&attributes.region)
        .execute(tx.connection())
        .await?;
    audit::append(
        tx,
        AuditEntry::new("tenant.update", previous.tenant_id.to_string()).details(
            serde_json::json!({
                "name": attributes.name, "plan": attributes.plan,
                "industry": attributes.industry, "region": attributes.region,
                "previous": {
                    "name": previous.name, "plan": previous.plan,
                    "industry": previous.industry, "region": previous.region,
                },
            }),
        ),
    )
    .await
}
