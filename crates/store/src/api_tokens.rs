//! API tokens: created by a tenant's owner or admin (or an operator at the CLI), shown once,
//! stored as a SHA-256 hash, bound to the tenant and one tenant role, expiring, revocable. A
//! token records the member who created it (its holder); removing or demoting that member
//! revokes it (`members`).

use domain::{Role, TenantId, UserId};
use serde::Serialize;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::audit::{self, AuditEntry};
use crate::{Actor, AppDb, Scope, StoreError, TenantTx, secret_token};

const PREFIX: &str = "tat1";

/// A token as listed (never its secret).
#[derive(Debug, Clone, Serialize)]
pub struct ApiToken {
    pub token_id: Uuid,
    pub name: String,
    pub role: Role,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

/// What a valid token stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenGrant {
    pub tenant: TenantId,
    pub token: Uuid,
    pub role: Role,
    /// The member who created the token, on whose behalf it acts (`None`: made at the CLI).
    pub holder: Option<UserId>,
}

/// Creates a token of the transaction's tenant (audited); returns it and its one-time text
/// `tat1.<tenant>.<token id>.<secret>`. The database records the transaction's user (a member,
/// or the holder of the API token calling) as its creator; none for the CLI.
pub async fn create(
    tx: &mut TenantTx,
    name: &str,
    role: Role,
    lifetime: Duration,
) -> Result<(ApiToken, String), StoreError> {
    let tenant = tx
        .tenant()
        .ok_or(StoreError::Forbidden("an API token needs a tenant scope"))?;
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(StoreError::Invalid(
            "a token name has 1 to 100 characters, without control characters".into(),
        ));
    }
    if !role.is_tenant_role() {
        return Err(StoreError::Invalid(
            "a token's role is owner, admin, operator or viewer".into(),
        ));
    }
    if lifetime <= Duration::ZERO || lifetime > Duration::days(366) {
        return Err(StoreError::Invalid(
            "a token lives between one second and 366 days".into(),
        ));
    }
    let issued = secret_token::issue(PREFIX, tenant);
    let token_id = issued.token_id;
    let expires_at = (OffsetDateTime::now_utc() + lifetime)
        .replace_nanosecond(0)
        .unwrap_or(OffsetDateTime::now_utc() + lifetime);
    sqlx::query(
        "insert into control.api_tokens (tenant_id, token_id, name, role, token_hash, expires_at) \
         values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(tenant.as_uuid())
    .bind(token_id)
    .bind(name)
    .bind(role.as_str())
    .bind(issued.secret_hash.to_vec())
    .bind(expires_at)
    .execute(tx.connection())
    .await?;
    audit::append(
        tx,
        AuditEntry::new("api_token.create", token_id.to_string()).details(serde_json::json!({
            "name": name, "role": role, "expires_at": expires_at.unix_timestamp(),
        })),
    )
    .await?;
    let text = issued.text;
    Ok((
        ApiToken {
            token_id,
            name: name.to_owned(),
            role,
            expires_at,
            revoked_at: None,
        },
        text,
    ))
}

/// Revokes a token of the transaction's tenant (audited).
pub async fn revoke(tx: &mut TenantTx, token: Uuid) -> Result<(), StoreError> {
    let tenant = tx
        .tenant()
        .ok_or(StoreError::Forbidden("an API token needs a tenant scope"))?;
    let revoked = sqlx::query(
        "update control.api_tokens set revoked_at = now() \
         where tenant_id = $1 and token_id = $2 and revoked_at is null",
    )
    .bind(tenant.as_uuid())
    .bind(token)
    .execute(tx.connection())
    .await?;
    if revoked.rows_affected() == 0 {
        return Err(StoreError::NotFound("active API token"));
    }
    audit::append(tx, AuditEntry::new("api_token.revoke", token.to_string())).await
}

/// What `text` grants, if it is a valid, unexpired, unrevoked token of an active tenant. Every
/// refusal looks the same to the caller.
pub async fn authenticate(database: &AppDb, text: &str) -> Result<Option<TokenGrant>, StoreError> {
    let Some((grant, tx)) = authenticate_and_begin(database, text).await? else {
        return Ok(None);
    };
    if let Some(tx) = tx {
        tx.rollback().await?;
    }
    Ok(Some(grant))
}

/// [`authenticate`], and the request's transaction: when the token is valid, the transaction
/// that checked it continues in the token's scope ([`Scope::ApiToken`]), so a request costs one
/// transaction, not two; a revocation committed before the check is seen by it, as before.
/// Once a minute per token, when its recorded last use is stale, the check writes that use and
/// commits on its own (a request that only reads rolls its transaction back), and no
/// transaction is returned.
pub async fn authenticate_and_begin(
    database: &AppDb,
    text: &str,
) -> Result<Option<(TokenGrant, Option<TenantTx>)>, StoreError> {
    let Some(parsed) = secret_token::parse(PREFIX, text) else {
        return Ok(None);
    };
    let (tenant, token) = (parsed.tenant, parsed.token_id);
    let mut tx = TenantTx::begin(
        database,
        Scope::Control {
            tenant: Some(tenant),
            actor: Actor::ApiToken(token),
        },
    )
    .await?;
    // `stale`: the recorded last use is older than a minute, so this one is worth writing (a
    // token in steady use costs one statement per call, not a write).
    let row: Option<(Vec<u8>, String, Option<Uuid>, bool)> = sqlx::query_as(
        "select t.token_hash, t.role, t.created_by, \
             coalesce(t.last_used_at < now() - interval '1 minute', true) as stale \
         from control.api_tokens t \
         join control.dim_tenant d on d.tenant_id = t.tenant_id \
         where t.tenant_id = $1 and t.token_id = $2 and t.revoked_at is null \
           and t.expires_at > now() and d.status = 'active'",
    )
    .bind(tenant.as_uuid())
    .bind(token)
    .fetch_optional(tx.connection())
    .await?;
    let Some((hash, role, holder, stale)) = row else {
        return Ok(None);
    };
    if !secret_token::same_hash(&hash, &parsed.secret_hash) {
        return Ok(None);
    }
    let role: Role = role
        .parse()
        .map_err(|_| StoreError::Invalid("stored token role".into()))?;
    let grant = TokenGrant {
        tenant,
        token,
        role,
        holder: holder.map(UserId::from_uuid),
    };
    if stale {
        sqlx::query(
            "update control.api_tokens set last_used_at = now() \
             where tenant_id = $1 and token_id = $2 \
               and (last_used_at is null or last_used_at < now() - interval '1 minute')",
        )
        .bind(tenant.as_uuid())
        .bind(token)
        .execute(tx.connection())
        .await?;
        tx.commit().await?;
        return Ok(Some((grant, None)));
    }
    let tx = tx
        .rescope(Scope::ApiToken {
            tenant,
            token,
            role,
            holder: grant.holder,
        })
        .await?;
    Ok(Some((grant, Some(tx))))
}

/// The transaction's tenant's tokens, newest first (never their secrets or hashes).
pub async fn list(tx: &mut TenantTx) -> Result<Vec<ApiToken>, StoreError> {
    let tenant = tx
        .tenant()
        .ok_or(StoreError::Forbidden("an API token needs a tenant scope"))?;
    let rows: Vec<(Uuid, String, String, OffsetDateTime, Option<OffsetDateTime>)> = sqlx::query_as(
        "select token_id, name, role, expires_at, revoked_at from control.api_tokens \
             where tenant_id = $1 order by tenant_id, created_at desc, token_id",
    )
    .bind(tenant.as_uuid())
    .fetch_all(tx.connection())
    .await?;
    rows.into_iter()
        .map(|(token_id, name, role, expires_at, revoked_at)| {
            Ok(ApiToken {
                token_id,
                name,
                role: role
                    .parse()
                    .map_err(|_| StoreError::Invalid("stored token role".into()))?,
                expires_at,
                revoked_at,
            })
        })
        .collect()
}
