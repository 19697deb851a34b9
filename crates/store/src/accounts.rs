//! Accounts as the web app signs people in: sign-up (a workspace and its owner, created when the
//! address is confirmed), credentials, server-side sessions, the workspaces an account belongs
//! to, attempt counters for throttling, browsers trusted after a successful sign-in, and one-time
//! password reset links.
//!
//! Secrets (session and device tokens, reset and sign-up links) arrive as the text the browser
//! holds; only their SHA-256 is stored, so a copy of the database signs nobody in.

use std::net::IpAddr;

use domain::{Email, Plan, Role, TenantAttributes, TenantId, UserId};
use serde::Serialize;
use sha2::{Digest, Sha256};
use time::Duration;
use uuid::Uuid;

use crate::audit::{self, AuditEntry};
use crate::members::parse_role;
use crate::{Actor, AppDb, Scope, StoreError, TenantTx};

fn digest(text: &str) -> Vec<u8> {
    Sha256::digest(text.as_bytes()).to_vec()
}

async fn control(database: &AppDb, actor: Actor) -> Result<TenantTx, StoreError> {
    TenantTx::begin(
        database,
        Scope::Control {
            tenant: None,
            actor,
        },
    )
    .await
}

/// What sign-up records: the person and the workspace they create.
#[derive(Debug, Clone)]
pub struct NewAccount<'a> {
    pub email: &'a Email,
    pub display_name: &'a str,
    /// A PHC string; hashing is the caller's (the web crate's) business.
    pub password_hash: &'a str,
    pub workspace: &'a TenantAttributes,
    pub client_addr: Option<IpAddr>,
}

/// `given` trimmed, if it can be an account's display name: at most 200 characters, without
/// control characters. (Whether it may be empty is the caller's business.)
pub fn display_name(given: &str) -> Result<&str, StoreError> {
    let trimmed = given.trim();
    if trimmed.chars().count() > 200 || trimmed.chars().any(char::is_control) {
        return Err(StoreError::Invalid(
            "name must be at most 200 characters, without control characters".into(),
        ));
    }
    Ok(trimmed)
}

/// Creates the account, its workspace (a tenant with default settings) and the owner membership
/// in one transaction, audited in the new workspace's chain. `AlreadyExists` when the email has
/// an account.
pub async fn sign_up(
    database: &AppDb,
    account: &NewAccount<'_>,
) -> Result<(UserId, TenantId), StoreError> {
    let user = UserId::new_random();
    let tenant = TenantId::new_random();
    let mut tx = sign_up_transaction(database, user, tenant).await?;
    create_owner_account(&mut tx, user, tenant, account).await?;
    tx.commit().await?;
    Ok((user, tenant))
}

/// A control transaction creating `tenant`, acting as its first owner `user`.
async fn sign_up_transaction(
    database: &AppDb,
    user: UserId,
    tenant: TenantId,
) -> Result<TenantTx, StoreError> {
    TenantTx::begin(
        database,
        Scope::Control {
            tenant: Some(tenant),
            actor: Actor::User(user),
        },
    )
    .await
}

/// The body of [`sign_up`], in the caller's transaction (begun by [`sign_up_transaction`]).
async fn create_owner_account(
    tx: &mut TenantTx,
    user: UserId,
    tenant: TenantId,
    account: &NewAccount<'_>,
) -> Result<(), StoreError> {
    let display_name = display_name(account.display_name)?;
    let inserted = sqlx::query(
        "insert into control.users (user_id, email, display_name, password_hash) \
         values ($1, $2, $3, $4) on conflict (email) do nothing",
    )
    .bind(user.as_uuid())
    .bind(account.email.as_str())
    .bind(display_name)
    .bind(account.password_hash)
    .execute(tx.connection())
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(StoreError::AlreadyExists("an account with this email"));
    }
    let workspace = account.workspace;
    sqlx::query(
        "insert into control.dim_tenant (tenant_id, name, plan, industry, region) \
         values ($1, $2, $3, $4, $5)",
    )
    .bind(tenant.as_uuid())
    .bind(&workspace.name)
    .bind(workspace.plan.as_str())
    .bind(&workspace.industry)
    .bind(&workspace.region)
    .execute(tx.connection())
    .await?;
    sqlx::query("insert into control.tenant_settings (tenant_id) values ($1)")
        .bind(tenant.as_uuid())
        .execute(tx.connection())
        .await?;
    sqlx::query("insert into control.members (tenant_id, user_id, role) values ($1, $2, 'owner')")
        .bind(tenant.as_uuid())
        .bind(user.as_uuid())
        .execute(tx.connection())
        .await?;
    audit::append(
        tx,
        AuditEntry::new("tenant.create", tenant.to_string())
            .details(serde_json::json!({
                "name": workspace.name,
                "plan": workspace.plan,
                "industry": workspace.industry,
                "region": workspace.region,
                "via": "sign_up",
            }))
            .client_addr(account.client_addr),
    )
    .await?;
    audit::append(
        tx,
        AuditEntry::new("member.add", user.to_string())
            .details(serde_json::json!({ "role": Role::Owner, "via": "sign_up" }))
            .client_addr(account.client_addr),
    )
    .await?;
    Ok(())
}

/// Records a sign-up waiting for its address to be confirmed: everything [`sign_up`] needs (the
/// password already hashed), behind a one-time `token` (random text the caller mails to the
/// address) valid for `lifetime`. Nothing is checked against existing accounts here, so that
/// the caller can decide what a requester may learn. Returns the pending sign-up's id, which
/// names it in logs instead of the address.
pub async fn record_pending_sign_up(
    database: &AppDb,
    account: &NewAccount<'_>,
    token: &str,
    lifetime: Duration,
) -> Result<Uuid, StoreError> {
    let display_name = display_name(account.display_name)?;
    let signup = Uuid::new_v4();
    let workspace = account.workspace;
    let mut tx = control(database, Actor::System("sign-up")).await?;
    sqlx::query(
        "insert into control.pending_signups (signup_id, token_hash, email, display_name, \
             password_hash, workspace, plan, industry, region, client_addr, expires_at) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::inet, now() + $11)",
    )
    .bind(signup)
    .bind(digest(token))
    .bind(account.email.as_str())
    .bind(display_name)
    .bind(account.password_hash)
    .bind(&workspace.name)
    .bind(workspace.plan.as_str())
    .bind(&workspace.industry)
    .bind(&workspace.region)
    .bind(account.client_addr.map(|addr| addr.to_string()))
    .bind(lifetime)
    .execute(tx.connection())
    .await?;
    tx.commit().await?;
    Ok(signup)
}

/// What the confirmation page of a pending sign-up shows (to whoever holds its link, which went
/// to the address itself).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PendingSignUp {
    pub signup_id: Uuid,
    pub email: String,
    pub workspace: String,
}

/// The pending sign-up a `token` is for, if it is unused and unexpired. Reading it spends
/// nothing.
pub async fn pending_sign_up(
    database: &AppDb,
    token: &str,
) -> Result<Option<PendingSignUp>, StoreError> {
    let mut tx = control(database, Actor::System("sign-up")).await?;
    let pending = sqlx::query_as(
        "select signup_id, email, workspace from control.pending_signups \
         where token_hash = $1 and used_at is null and expires_at > now()",
    )
    .bind(digest(token))
    .fetch_optional(tx.connection())
    .await?;
    tx.commit().await?;
    Ok(pending)
}

/// A spent `pending_signups` row: what creating the account needs.
#[derive(sqlx::FromRow)]
struct SpentSignUp {
    email: String,
    display_name: String,
    password_hash: String,
    workspace: String,
    plan: String,
    industry: String,
    region: String,
    client_addr: Option<String>,
}

/// Uses a sign-up `token`: spends it and creates the account, its workspace and the owner
/// membership as [`sign_up`] does, in one transaction. `None`, and nothing changed, when the
/// token is unknown, used or expired, or the address has had an account made meanwhile. Of two
/// concurrent uses, one creates and the other gets `None`: the token is spent by an update that
/// waits for the other's row lock and then finds the row used or, once the account exists,
/// deleted with its copy of the password hash.
pub async fn complete_sign_up(
    database: &AppDb,
    token: &str,
) -> Result<Option<(UserId, TenantId)>, StoreError> {
    let user = UserId::new_random();
    let tenant = TenantId::new_random();
    let mut tx = sign_up_transaction(database, user, tenant).await?;
    let row: Option<SpentSignUp> = sqlx::query_as(
        "update control.pending_signups set used_at = now() \
         where token_hash = $1 and used_at is null and expires_at > now() \
         returning email, display_name, password_hash, workspace, plan, industry, region, \
                   host(client_addr) as client_addr",
    )
    .bind(digest(token))
    .fetch_optional(tx.connection())
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let email = Email::parse(&row.email)
        .map_err(|error| StoreError::Invalid(format!("stored sign-up email: {error}")))?;
    let plan: Plan = row
        .plan
        .parse()
        .map_err(|_| StoreError::Invalid("stored sign-up plan".into()))?;
    let workspace = TenantAttributes::parse(&row.workspace, plan, &row.industry, &row.region)
        .map_err(|error| StoreError::Invalid(format!("stored sign-up workspace: {error}")))?;
    let account = NewAccount {
        email: &email,
        display_name: &row.display_name,
        password_hash: &row.password_hash,
        workspace: &workspace,
        client_addr: row.client_addr.and_then(|addr| addr.parse().ok()),
    };
    match create_owner_account(&mut tx, user, tenant, &account).await {
        Ok(()) => {}
        // Rolled back when `tx` drops: the link stays unused, and keeps failing the same way.
        Err(StoreError::AlreadyExists(_)) => return Ok(None),
        Err(error) => return Err(error),
    }
    // Spent: the row, with its copy of the password hash, goes with the account's creation.
    sqlx::query("delete from control.pending_signups where token_hash = $1")
        .bind(digest(token))
        .execute(tx.connection())
        .await?;
    tx.commit().await?;
    Ok(Some((user, tenant)))
}

/// What signing in checks a password against.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Credentials {
    #[sqlx(try_from = "Uuid")]
    pub user_id: UserId,
    /// `None` for accounts that have never set a password (for example, made by the CLI).
    pub password_hash: Option<String>,
    pub disabled: bool,
}

pub async fn credentials(
    database: &AppDb,
    email: &Email,
) -> Result<Option<Credentials>, StoreError> {
    let mut tx = control(database, Actor::System("sign-in")).await?;
    let credentials = sqlx::query_as(
        "select user_id, password_hash, disabled_at is not null as disabled \
         from control.users where email = $1",
    )
    .bind(email.as_str())
    .fetch_optional(tx.connection())
    .await?;
    tx.commit().await?;
    Ok(credentials)
}

/// Replaces an account's password hash (a rehash with current parameters, or a new password).
pub async fn set_password_hash(
    database: &AppDb,
    user: UserId,
    password_hash: &str,
) -> Result<(), StoreError> {
    let mut tx = control(database, Actor::User(user)).await?;
    let updated = sqlx::query("update control.users set password_hash = $2 where user_id = $1")
        .bind(user.as_uuid())
        .bind(password_hash)
        .execute(tx.connection())
        .await?;
    if updated.rows_affected() == 0 {
        return Err(StoreError::NotFound("user"));
    }
    tx.commit().await
}

/// How long a session lives: since its last use, and at most since it began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLifetime {
    pub idle: Duration,
    pub absolute: Duration,
}

/// Records a new session for `user`, identified by `token` (the cookie's random text).
pub async fn create_session(
    database: &AppDb,
    user: UserId,
    token: &str,
    lifetime: SessionLifetime,
    active_tenant: Option<TenantId>,
    client_addr: Option<IpAddr>,
    user_agent: Option<&str>,
) -> Result<(), StoreError> {
    let mut tx = control(database, Actor::User(user)).await?;
    let user_agent = user_agent.map(|agent| agent.chars().take(500).collect::<String>());
    sqlx::query(
        "insert into control.auth_sessions (session_hash, user_id, idle_expires_at, \
             absolute_expires_at, active_tenant_id, client_addr, user_agent) \
         values ($1, $2, now() + $3, now() + $4, $5, $6::inet, $7)",
    )
    .bind(digest(token))
    .bind(user.as_uuid())
    .bind(lifetime.idle)
    .bind(lifetime.absolute)
    .bind(active_tenant.map(|tenant| *tenant.as_uuid()))
    .bind(client_addr.map(|addr| addr.to_string()))
    .bind(user_agent)
    .execute(tx.connection())
    .await?;
    tx.commit().await
}

/// The signed-in account behind a live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionUser {
    pub user_id: UserId,
    pub email: String,
    pub display_name: String,
    pub active_tenant: Option<TenantId>,
    /// The account is internal operations staff (`control.platform_staff`).
    pub internal_ops: bool,
    /// Set for a session started through a workspace's IdP: it acts in that workspace only.
    pub sso_tenant: Option<TenantId>,
}

/// A live session's row, before its optional tenant ids are typed.
#[derive(sqlx::FromRow)]
struct SessionUserRow {
    #[sqlx(try_from = "Uuid")]
    user_id: UserId,
    email: String,
    display_name: String,
    active_tenant_id: Option<Uuid>,
    internal_ops: bool,
    sso_tenant_id: Option<Uuid>,
}

impl From<SessionUserRow> for SessionUser {
    fn from(row: SessionUserRow) -> Self {
        SessionUser {
            user_id: row.user_id,
            email: row.email,
            display_name: row.display_name,
            active_tenant: row.active_tenant_id.map(TenantId::from_uuid),
            internal_ops: row.internal_ops,
            sso_tenant: row.sso_tenant_id.map(TenantId::from_uuid),
        }
    }
}

/// The account of the session `token` names, if the session is neither revoked nor past either
/// timeout and the account is not disabled. Using a session extends its idle timeout, never past
/// the absolute one.
pub async fn find_session(
    database: &AppDb,
    token: &str,
    idle: Duration,
) -> Result<Option<SessionUser>, StoreError> {
    let mut tx = control(database, Actor::System("session")).await?;
    let row: Option<SessionUserRow> = sqlx::query_as(
        "with touched as ( \
             update control.auth_sessions \
             set last_seen_at = now(), idle_expires_at = least(now() + $2, absolute_expires_at) \
             where session_hash = $1 and revoked_at is null \
               and idle_expires_at > now() and absolute_expires_at > now() \
             returning user_id, active_tenant_id, sso_tenant_id) \
         select u.user_id, u.email, u.display_name, t.active_tenant_id, t.sso_tenant_id, \
                t.sso_tenant_id is null and exists (select 1 from control.platform_staff s \
                        where s.user_id = u.user_id) as internal_ops \
         from touched t join control.users u on u.user_id = t.user_id \
         where u.disabled_at is null",
    )
    .bind(digest(token))
    .bind(idle)
    .fetch_optional(tx.connection())
    .await?;
    tx.commit().await?;
    Ok(row.map(SessionUser::from))
}

/// Ends the session `token` names. Ending one that is already over is not an error.
pub async fn revoke_session(database: &AppDb, token: &str) -> Result<(), StoreError> {
    let mut tx = control(database, Actor::System("sign-out")).await?;
    sqlx::query(
        "update control.auth_sessions set revoked_at = now() \
         where session_hash = $1 and revoked_at is null",
    )
    .bind(digest(token))
    .execute(tx.connection())
    .await?;
    tx.commit().await
}

/// Ends every session of `user`; returns how many were live.
pub async fn revoke_all_sessions(database: &AppDb, user: UserId) -> Result<u64, StoreError> {
    let mut tx = control(database, Actor::User(user)).await?;
    let revoked = sqlx::query(
        "update control.auth_sessions set revoked_at = now() \
         where user_id = $1 and revoked_at is null",
    )
    .bind(user.as_uuid())
    .execute(tx.connection())
    .await?;
    tx.commit().await?;
    Ok(revoked.rows_affected())
}

/// Remembers which workspace the session looks at, and that its account last worked there
/// (where its next password sign-in lands, [`landing_workspace`]).
pub async fn set_active_tenant(
    database: &AppDb,
    token: &str,
    tenant: TenantId,
) -> Result<(), StoreError> {
    let mut tx = control(database, Actor::System("session")).await?;
    let user: Option<Uuid> = sqlx::query_scalar(
        "update control.auth_sessions set active_tenant_id = $2 \
         where session_hash = $1 and revoked_at is null returning user_id",
    )
    .bind(digest(token))
    .bind(tenant.as_uuid())
    .fetch_optional(tx.connection())
    .await?;
    if let Some(user) = user {
        remember_last_tenant(&mut tx, UserId::from_uuid(user), tenant).await?;
    }
    tx.commit().await
}

/// Records that `user` last worked in `tenant`.
pub(crate) async fn remember_last_tenant(
    tx: &mut TenantTx,
    user: UserId,
    tenant: TenantId,
) -> Result<(), StoreError> {
    sqlx::query("update control.users set last_tenant_id = $2 where user_id = $1")
        .bind(user.as_uuid())
        .bind(tenant.as_uuid())
        .execute(tx.connection())
        .await?;
    Ok(())
}

/// The workspace a sign-in of `user` lands in: the one they last worked in, if they are still
/// an active member of it; otherwise the one they joined first. Never chosen by workspace
/// names, which other people pick: someone who adds the account to a workspace named to sort
/// first does not get its next sign-in. `None` for an account in no active workspace.
pub async fn landing_workspace(
    database: &AppDb,
    user: UserId,
) -> Result<Option<TenantId>, StoreError> {
    let mut tx = control(database, Actor::User(user)).await?;
    let tenant: Option<Uuid> = sqlx::query_scalar(
        "select m.tenant_id \
         from control.members m \
         join control.dim_tenant d on d.tenant_id = m.tenant_id \
         join control.users u on u.user_id = m.user_id \
         where m.user_id = $1 and d.status = 'active' \
         order by coalesce(m.tenant_id = u.last_tenant_id, false) desc, m.created_at, m.tenant_id \
         limit 1",
    )
    .bind(user.as_uuid())
    .fetch_optional(tx.connection())
    .await?;
    tx.commit().await?;
    Ok(tenant.map(TenantId::from_uuid))
}

/// One workspace an account belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Membership {
    pub tenant_id: TenantId,
    pub name: String,
    pub plan: String,
    pub role: Role,
}

/// A membership row, before its stored role is parsed.
#[derive(sqlx::FromRow)]
struct MembershipRow {
    #[sqlx(try_from = "Uuid")]
    tenant_id: TenantId,
    name: String,
    plan: String,
    role: String,
}

impl TryFrom<MembershipRow> for Membership {
    type Error = StoreError;

    fn try_from(row: MembershipRow) -> Result<Self, Self::Error> {
        Ok(Membership {
            tenant_id: row.tenant_id,
            name: row.name,
            plan: row.plan,
            role: parse_role(&row.role)?,
        })
    }
}

/// The active workspaces `user` is a member of, by name. Runs as the control role acting for
/// that user, which the database lets see that user's memberships and nothing else.
pub async fn memberships(database: &AppDb, user: UserId) -> Result<Vec<Membership>, StoreError> {
    let mut tx = control(database, Actor::User(user)).await?;
    let rows: Vec<MembershipRow> = sqlx::query_as(
        "select m.tenant_id, d.name, d.plan, m.role \
         from control.members m join control.dim_tenant d on d.tenant_id = m.tenant_id \
         where m.user_id = $1 and d.status = 'active' \
         order by d.name, m.tenant_id",
    )
    .bind(user.as_uuid())
    .fetch_all(tx.connection())
    .await?;
    tx.commit().await?;
    rows.into_iter().map(Membership::try_from).collect()
}

/// Counts one attempt in `bucket` (any text naming what is limited, such as an account or a
/// client address; only its hash is kept) and returns the attempts so far in the current fixed
/// window of `window`, this one included.
pub async fn count_attempt(
    database: &AppDb,
    bucket: &str,
    window: Duration,
) -> Result<i32, StoreError> {
    let mut tx = control(database, Actor::System("throttle")).await?;
    let attempts: i32 = sqlx::query_scalar(
        "insert into control.auth_throttle as t (bucket_hash, window_started_at, attempts) \
         values ($1, now(), 1) \
         on conflict (bucket_hash) do update set \
             attempts = case when t.window_started_at <= now() - $2 then 1 \
                             else t.attempts + 1 end, \
             window_started_at = case when t.window_started_at <= now() - $2 then now() \
                                      else t.window_started_at end \
         returning attempts",
    )
    .bind(digest(bucket))
    .bind(window)
    .fetch_one(tx.connection())
    .await?;
    tx.commit().await?;
    Ok(attempts)
}

/// Forgets the attempts counted in `bucket` (after a successful sign-in).
pub async fn clear_attempts(database: &AppDb, bucket: &str) -> Result<(), StoreError> {
    let mut tx = control(database, Actor::System("throttle")).await?;
    sqlx::query("delete from control.auth_throttle where bucket_hash = $1")
        .bind(digest(bucket))
        .execute(tx.connection())
        .await?;
    tx.commit().await
}

/// Trusts the browser holding `device_token` for `user` until `lifetime` has passed.
pub async fn trust_device(
    database: &AppDb,
    user: UserId,
    device_token: &str,
    lifetime: Duration,
) -> Result<(), StoreError> {
    let mut tx = control(database, Actor::User(user)).await?;
    sqlx::query(
        "insert into control.trusted_devices (device_hash, user_id, expires_at) \
         values ($1, $2, now() + $3) on conflict (device_hash) do nothing",
    )
    .bind(digest(device_token))
    .bind(user.as_uuid())
    .bind(lifetime)
    .execute(tx.connection())
    .await?;
    sqlx::query("delete from control.trusted_devices where user_id = $1 and expires_at <= now()")
        .bind(user.as_uuid())
        .execute(tx.connection())
        .await?;
    tx.commit().await
}

/// The account the browser holding `device_token` is trusted for, if any and unexpired.
pub async fn trusted_device_user(
    database: &AppDb,
    device_token: &str,
) -> Result<Option<UserId>, StoreError> {
    let mut tx = control(database, Actor::System("sign-in")).await?;
    let user: Option<Uuid> = sqlx::query_scalar(
        "select user_id from control.trusted_devices \
         where device_hash = $1 and expires_at > now()",
    )
    .bind(digest(device_token))
    .fetch_optional(tx.connection())
    .await?;
    tx.commit().await?;
    Ok(user.map(UserId::from_uuid))
}

/// How many of `user`'s sessions are live (not revoked, within both timeouts).
pub async fn live_session_count(database: &AppDb, user: UserId) -> Result<i64, StoreError> {
    let mut tx = control(database, Actor::User(user)).await?;
    let count: i64 = sqlx::query_scalar(
        "select count(*) from control.auth_sessions where user_id = $1 and revoked_at is null \
           and idle_expires_at > now() and absolute_expires_at > now()",
    )
    .bind(user.as_uuid())
    .fetch_one(tx.connection())
    .await?;
    tx.commit().await?;
    Ok(count)
}

/// Records a one-time password reset for `user`, identified by `token` (random text the caller
/// sends to the account's address), valid for `lifetime`.
pub async fn issue_password_reset(
    database: &AppDb,
    user: UserId,
    token: &str,
    lifetime: Duration,
) -> Result<(), StoreError> {
    let mut tx = control(database, Actor::User(user)).await?;
    sqlx::query(
        "insert into control.password_resets (token_hash, user_id, expires_at) \
         values ($1, $2, now() + $3)",
    )
    .bind(digest(token))
    .bind(user.as_uuid())
    .bind(lifetime)
    .execute(tx.connection())
    .await?;
    tx.commit().await
}

/// The account a password reset `token` is for, if it is unused and unexpired.
pub async fn password_reset_user(
    database: &AppDb,
    token: &str,
) -> Result<Option<UserId>, StoreError> {
    let mut tx = control(database, Actor::System("password-reset")).await?;
    let user: Option<Uuid> = sqlx::query_scalar(
        "select r.user_id from control.password_resets r \
         join control.users u on u.user_id = r.user_id \
         where r.token_hash = $1 and r.used_at is null and r.expires_at > now() \
           and u.disabled_at is null",
    )
    .bind(digest(token))
    .fetch_optional(tx.connection())
    .await?;
    tx.commit().await?;
    Ok(user.map(UserId::from_uuid))
}

/// Uses a password reset `token`: sets the account's password hash, spends this and every other
/// open reset link of the account, and ends all its sessions, in one transaction. `None` (and
/// nothing changed) when the token is unknown, used or expired.
pub async fn redeem_password_reset(
    database: &AppDb,
    token: &str,
    password_hash: &str,
) -> Result<Option<UserId>, StoreError> {
    let mut tx = control(database, Actor::System("password-reset")).await?;
    let user: Option<Uuid> = sqlx::query_scalar(
        "update control.password_resets set used_at = now() \
         where token_hash = $1 and used_at is null and expires_at > now() \
         returning user_id",
    )
    .bind(digest(token))
    .fetch_optional(tx.connection())
    .await?;
    let Some(user) = user else {
        return Ok(None);
    };
    let updated = sqlx::query(
        "update control.users set password_hash = $2 where user_id = $1 and disabled_at is null",
    )
    .bind(user)
    .bind(password_hash)
    .execute(tx.connection())
    .await?;
    if updated.rows_affected() == 0 {
        return Ok(None);
    }
    sqlx::query(
        "update control.password_resets set used_at = now() \
         where user_id = $1 and used_at is null",
    )
    .bind(user)
    .execute(tx.connection())
    .await?;
    sqlx::query(
        "update control.auth_sessions set revoked_at = now() \
         where user_id = $1 and revoked_at is null",
    )
    .bind(user)
    .execute(tx.connection())
    .await?;
    tx.commit().await?;
    Ok(Some(UserId::from_uuid(user)))
}

/// A live session as its owner sees it in their session list.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SessionSummary {
    /// Hex of the first 16 bytes of the stored hash: names the session without being able to
    /// act as it.
    pub id: String,
    pub created_at: time::OffsetDateTime,
    pub last_seen_at: time::OffsetDateTime,
    pub client_addr: Option<String>,
    pub user_agent: Option<String>,
    /// The session of the request that asked.
    pub current: bool,
}

/// `user`'s live sessions, most recently used first; `current_token` marks the asking one.
pub async fn list_sessions(
    database: &AppDb,
    user: UserId,
    current_token: &str,
) -> Result<Vec<SessionSummary>, StoreError> {
    let mut tx = control(database, Actor::User(user)).await?;
    let sessions = sqlx::query_as(
        "select encode(substring(session_hash from 1 for 16), 'hex') as id, \
                session_hash = $2 as current, created_at, last_seen_at, \
                host(client_addr) as client_addr, user_agent \
         from control.auth_sessions \
         where user_id = $1 and revoked_at is null \
           and idle_expires_at > now() and absolute_expires_at > now() \
         order by last_seen_at desc",
    )
    .bind(user.as_uuid())
    .bind(digest(current_token))
    .fetch_all(tx.connection())
    .await?;
    tx.commit().await?;
    Ok(sessions)
}

/// Ends `user`'s session named `id` (from [`list_sessions`]); false if no live session of
/// theirs has that id.
pub async fn revoke_session_by_id(
    database: &AppDb,
    user: UserId,
    id: &str,
) -> Result<bool, StoreError> {
    let Ok(prefix) = hex::decode(id) else {
        return Ok(false);
    };
    if prefix.len() != 16 {
        return Ok(false);
    }
    let mut tx = control(database, Actor::User(user)).await?;
    let revoked = sqlx::query(
        "update control.auth_sessions set revoked_at = now() \
         where user_id = $1 and substring(session_hash from 1 for 16) = $2 \
           and revoked_at is null",
    )
    .bind(user.as_uuid())
    .bind(prefix)
    .execute(tx.connection())
    .await?;
    tx.commit().await?;
    Ok(revoked.rows_affected() > 0)
}

/// What [`prune`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub sessions: u64,
    pub attempt_counters: u64,
    pub trusted_devices: u64,
    pub pending_sign_ups: u64,
}

/// Deletes what can never matter again: sessions revoked or expired more than a day ago, attempt
/// counters whose window ended more than a day ago, reset links and pending sign-ups (with the
/// address, name and password hash they hold) expired a day ago, and expired trusted browsers.
/// Run by the scheduler, so these tables stay the size of current activity.
pub async fn prune(database: &AppDb) -> Result<PruneReport, StoreError> {
    let mut tx = control(database, Actor::System("scheduler")).await?;
    let sessions = sqlx::query(
        "delete from control.auth_sessions \
         where coalesce(revoked_at, least(idle_expires_at, absolute_expires_at)) \
               < now() - interval '1 day'",
    )
    .execute(tx.connection())
    .await?
    .rows_affected();
    let attempt_counters = sqlx::query(
        "delete from control.auth_throttle where window_started_at < now() - interval '1 day'",
    )
    .execute(tx.connection())
    .await?
    .rows_affected();
    sqlx::query("delete from control.password_resets where expires_at < now() - interval '1 day'")
        .execute(tx.connection())
        .await?;
    let trusted_devices =
        sqlx::query("delete from control.trusted_devices where expires_at < now()")
            .execute(tx.connection())
            .await?
            .rows_affected();
    let pending_sign_ups = sqlx::query(
        "delete from control.pending_signups where expires_at < now() - interval '1 day'",
    )
    .execute(tx.connection())
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(PruneReport {
        sessions,
        attempt_counters,
        trusted_devices,
        pending_sign_ups,
    })
}

/// A control transaction in the platform's own scope, whose audit entries land in the
/// platform chain (staff changes).
async fn platform_control(database: &AppDb, actor: Actor) -> Result<TenantTx, StoreError> {
    TenantTx::begin(
        database,
        Scope::Control {
            tenant: Some(TenantId::PLATFORM),
            actor,
        },
    )
    .await
}

/// A member of internal operations staff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct StaffMember {
    #[sqlx(try_from = "Uuid")]
    pub user_id: UserId,
    pub email: String,
    pub granted_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub granted_at: time::OffsetDateTime,
}

/// Makes the account of `email` internal operations staff (the operator CLI's `staff grant`).
/// Audited in the platform chain. `NotFound` when no account has that email.
pub async fn grant_staff(
    database: &AppDb,
    actor: Actor,
    email: &Email,
) -> Result<UserId, StoreError> {
    let granted_by = actor.id();
    let mut tx = platform_control(database, actor).await?;
    let user: Option<Uuid> =
        sqlx::query_scalar("select user_id from control.users where email = $1")
            .bind(email.as_str())
            .fetch_optional(tx.connection())
            .await?;
    let user = user.ok_or(StoreError::NotFound("an account with this email"))?;
    let granted = sqlx::query(
        "insert into control.platform_staff (user_id, granted_by) values ($1, $2) \
         on conflict (user_id) do nothing",
    )
    .bind(user)
    .bind(&granted_by)
    .execute(tx.connection())
    .await?;
    if granted.rows_affected() == 0 {
        // Already staff: nothing changed, nothing to audit.
        return Ok(UserId::from_uuid(user));
    }
    audit::append(
        &mut tx,
        AuditEntry::new("staff.grant", user.to_string())
            .details(serde_json::json!({ "role": "internal_ops" })),
    )
    .await?;
    tx.commit().await?;
    Ok(UserId::from_uuid(user))
}

/// Ends `email`'s staff role and every session of the account, so the change holds at once.
/// Audited in the platform chain. `NotFound` when the account is not staff.
pub async fn revoke_staff(database: &AppDb, actor: Actor, email: &Email) -> Result<(), StoreError> {
    let mut tx = platform_control(database, actor).await?;
    let user: Option<Uuid> = sqlx::query_scalar(
        "delete from control.platform_staff s using control.users u \
         where s.user_id = u.user_id and u.email = $1 returning s.user_id",
    )
    .bind(email.as_str())
    .fetch_optional(tx.connection())
    .await?;
    let user = user.ok_or(StoreError::NotFound("a staff account with this email"))?;
    sqlx::query(
        "update control.auth_sessions set revoked_at = now() \
         where user_id = $1 and revoked_at is null",
    )
    .bind(user)
    .execute(tx.connection())
    .await?;
    audit::append(&mut tx, AuditEntry::new("staff.revoke", user.to_string())).await?;
    tx.commit().await?;
    Ok(())
}

/// Internal operations staff, oldest first.
pub async fn list_staff(database: &AppDb) -> Result<Vec<StaffMember>, StoreError> {
    let mut tx = control(database, Actor::System("staff")).await?;
    let staff = sqlx::query_as(
        "select s.user_id, u.email, s.granted_by, s.granted_at \
         from control.platform_staff s join control.users u on u.user_id = s.user_id \
         order by s.granted_at, u.email",
    )
    .fetch_all(tx.connection())
    .await?;
    tx.commit().await?;
    Ok(staff)
}
