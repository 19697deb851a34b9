//! Sources and their credentials: creating a source with a one-time pairing token, redeeming
//! the token, recording issued client certificates, revocation, and what the edge checks on
//! every request.

use domain::{SourceId, TenantId};
use serde::Serialize;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::audit::{self, AuditEntry};
use crate::{StoreError, TenantTx, secret_token};

/// How long a pairing token can be redeemed.
pub const PAIRING_TOKEN_LIFETIME: Duration = Duration::hours(1);

const TOKEN_PREFIX: &str = "tpt1";

/// The kinds of source an agent can read.
pub const SOURCE_KINDS: [&str; 2] = ["postgres", "simulator"];

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Source {
    #[sqlx(try_from = "Uuid")]
    pub source_id: SourceId,
    pub name: String,
    pub kind: String,
    /// pending (never paired), active, disabled or revoked.
    pub status: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// What the source's agent last reported (its status heartbeat), if it ever did.
    pub agent: Option<serde_json::Value>,
}

/// An agent's status heartbeat, as stored per source.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentReport {
    pub agent_version: String,
    pub source_kind: String,
    pub state: String,
    pub captured_lsn: Option<i64>,
    pub acked_lsn: Option<i64>,
    pub confirmed_lsn: Option<i64>,
    pub lag_bytes: Option<i64>,
    pub lag_seconds: Option<f64>,
    pub spool_batches: i64,
    pub spool_bytes: i64,
    pub backpressure: bool,
    pub snapshot_rows: Option<i64>,
    pub slot: Option<serde_json::Value>,
    pub warnings: Vec<String>,
    pub last_error: Option<String>,
    /// The spool is empty: everything captured was acknowledged.
    pub caught_up: bool,
    pub send_bytes_per_second: Option<f64>,
    pub drain_seconds: Option<f64>,
    /// Tables (`schema.table`) whose updates and deletes are not captured.
    pub not_captured: Vec<String>,
}

/// Records `source`'s latest status heartbeat (the edge, as the service role).
pub async fn record_agent_status(
    tx: &mut TenantTx,
    source: SourceId,
    report: &AgentReport,
) -> Result<(), StoreError> {
    let tenant = require_tenant(tx)?;
    sqlx::query(
        "insert into control.source_status (tenant_id, source_id, reported_at, agent_version, \
           source_kind, state, captured_lsn, acked_lsn, confirmed_lsn, lag_bytes, lag_seconds, \
           spool_batches, spool_bytes, backpressure, snapshot_rows, slot, warnings, last_error, \
           caught_up, send_bytes_per_second, drain_seconds, not_captured) \
         values ($1, $2, now(), $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
           $18, $19, $20, $21) \
         on conflict (tenant_id, source_id) do update set reported_at = excluded.reported_at, \
           agent_version = excluded.agent_version, source_kind = excluded.source_kind, \
           state = excluded.state, captured_lsn = excluded.captured_lsn, \
           acked_lsn = excluded.acked_lsn, confirmed_lsn = excluded.confirmed_lsn, \
           lag_bytes = excluded.lag_bytes, lag_seconds = excluded.lag_seconds, \
           spool_batches = excluded.spool_batches, spool_bytes = excluded.spool_bytes, \
           backpressure = excluded.backpressure, snapshot_rows = excluded.snapshot_rows, \
           slot = excluded.slot, warnings = excluded.warnings, last_error = excluded.last_error, \
           caught_up = excluded.caught_up, \
           send_bytes_per_second = excluded.send_bytes_per_second, \
           drain_seconds = excluded.drain_seconds, not_captured = excluded.not_captured",
    )
    .bind(tenant.as_uuid())
    .bind(source.as_uuid())
    .bind(&report.agent_version)
    .bind(&report.source_kind)
    .bind(&report.state)
    .bind(report.captured_lsn)
    .bind(report.acked_lsn)
    .bind(report.confirmed_lsn)
    .bind(report.lag_bytes)
    .bind(report.lag_seconds)
    .bind(report.spool_batches)
    .bind(report.spool_bytes)
    .bind(report.backpressure)
    .bind(report.snapshot_rows)
    .bind(&report.slot)
    .bind(serde_json::json!(report.warnings))
    .bind(&report.last_error)
    .bind(report.caught_up)
    .bind(report.send_bytes_per_second)
    .bind(report.drain_seconds)
    .bind(serde_json::json!(report.not_captured))
    .execute(tx.connection())
    .await?;
    Ok(())
}

/// A freshly issued pairing token. The text is shown once; only its hash is stored.
#[derive(Debug, Clone)]
pub struct IssuedPairingToken {
    pub token: String,
    pub expires_at: OffsetDateTime,
}

/// A pairing token taken apart: which tenant and token row it names, and the hash of its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairingTokenRef {
    pub tenant: TenantId,
    pub token_id: Uuid,
    secret_hash: [u8; 32],
}

impl PairingTokenRef {
    /// `tpt1.<tenant>.<token id>.<secret>` (see [`crate::secret_token`]).
    pub fn parse(text: &str) -> Option<Self> {
        let parsed = secret_token::parse(TOKEN_PREFIX, text)?;
        Some(Self {
            tenant: parsed.tenant,
            token_id: parsed.token_id,
            secret_hash: parsed.secret_hash,
        })
    }
}

/// Why a pairing token was not accepted. Said as one generic message to the agent; the kind
/// is for the log and the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PairingRefusal {
    #[error("unknown pairing token")]
    Unknown,
    #[error("pairing token already used")]
    Used,
    #[error("pairing token expired")]
    Expired,
    #[error("source revoked or disabled")]
    SourceUnavailable,
}

/// Creates a source and its first pairing token (audited).
pub async fn create_source(
    tx: &mut TenantTx,
    name: &str,
    kind: &str,
) -> Result<(Source, IssuedPairingToken), StoreError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(StoreError::Invalid(
            "a source name has 1 to 200 characters, without control characters".into(),
        ));
    }
    if !SOURCE_KINDS.contains(&kind) {
        return Err(StoreError::Invalid(format!(
            "source kind must be one of {}",
            SOURCE_KINDS.join(", ")
        )));
    }
    let tenant = require_tenant(tx)?;
    let source_id = SourceId::new_random();
    let created_at: Option<OffsetDateTime> = sqlx::query_scalar(
        "insert into control.sources (tenant_id, source_id, name, kind) values ($1, $2, $3, $4) \
         on conflict (tenant_id, name) do nothing returning created_at",
    )
    .bind(tenant.as_uuid())
    .bind(source_id.as_uuid())
    .bind(name)
    .bind(kind)
    .fetch_optional(tx.connection())
    .await?;
    let Some(created_at) = created_at else {
        return Err(StoreError::AlreadyExists("a source with this name"));
    };
    audit::append(
        tx,
        AuditEntry::new("source.create", source_id.to_string())
            .details(serde_json::json!({ "name": name, "kind": kind })),
    )
    .await?;
    let token = issue_pairing_token(tx, source_id).await?;
    Ok((
        Source {
            source_id,
            name: name.to_owned(),
            kind: kind.to_owned(),
            status: "pending".into(),
            created_at,
            agent: None,
        },
        token,
    ))
}

/// Issues a new one-time pairing token for a source that is not revoked (audited).
pub async fn issue_pairing_token(
    tx: &mut TenantTx,
    source: SourceId,
) -> Result<IssuedPairingToken, StoreError> {
    let tenant = require_tenant(tx)?;
    // The tenant is named as well as enforced by row-level security: the pipeline's scope
    // bypasses it.
    let status: Option<String> = sqlx::query_scalar(
        "select status from control.sources where tenant_id = $1 and source_id = $2",
    )
    .bind(tenant.as_uuid())
    .bind(source.as_uuid())
    .fetch_optional(tx.connection())
    .await?;
    match status.as_deref() {
        None => return Err(StoreError::NotFound("source")),
        Some("revoked") => return Err(StoreError::Forbidden("the source is revoked")),
        Some(_) => {}
    }
    let issued = secret_token::issue(TOKEN_PREFIX, tenant);
    let token_id = issued.token_id;
    let expires_at = OffsetDateTime::now_utc() + PAIRING_TOKEN_LIFETIME;
    sqlx::query(
        "insert into control.pairing_tokens (tenant_id, token_id, source_id, token_hash, expires_at) \
         values ($1, $2, $3, $4, $5)",
    )
    .bind(tenant.as_uuid())
    .bind(token_id)
    .bind(source.as_uuid())
    .bind(issued.secret_hash.to_vec())
    .bind(expires_at)
    .execute(tx.connection())
    .await?;
    audit::append(
        tx,
        AuditEntry::new("source.pairing_token.issue", source.to_string()).details(
            serde_json::json!({ "token_id": token_id, "expires_at": expires_at.unix_timestamp() }),
        ),
    )
    .await?;
    Ok(IssuedPairingToken {
        token: issued.text,
        expires_at,
    })
}

/// The tenant's sources, newest first.
pub async fn list_sources(tx: &mut TenantTx) -> Result<Vec<Source>, StoreError> {
    let tenant = require_tenant(tx)?;
    Ok(sqlx::query_as(
        "select s.source_id, s.name, s.kind, s.status, s.created_at, \
                to_jsonb(a) - 'tenant_id' - 'source_id' as agent \
         from control.sources s left join control.source_status a \
           on a.tenant_id = s.tenant_id and a.source_id = s.source_id \
         where s.tenant_id = $1 order by s.tenant_id, s.created_at desc",
    )
    .bind(tenant.as_uuid())
    .fetch_all(tx.connection())
    .await?)
}

/// Revokes a source and every certificate issued to it (audited). The edge refuses its
/// certificates from then on, on new and open connections alike.
pub async fn revoke_source(
    tx: &mut TenantTx,
    source: SourceId,
    reason: &str,
) -> Result<u64, StoreError> {
    let tenant = require_tenant(tx)?;
    let reason: String = reason.trim().chars().take(200).collect();
    let updated = sqlx::query(
        "update control.sources set status = 'revoked', updated_at = now() \
         where tenant_id = $1 and source_id = $2",
    )
    .bind(tenant.as_uuid())
    .bind(source.as_uuid())
    .execute(tx.connection())
    .await?;
    if updated.rows_affected() == 0 {
        return Err(StoreError::NotFound("source"));
    }
    let certificates = sqlx::query(
        "update control.certificates set revoked_at = now(), revocation_reason = $3 \
         where tenant_id = $1 and source_id = $2 and revoked_at is null",
    )
    .bind(tenant.as_uuid())
    .bind(source.as_uuid())
    .bind(&reason)
    .execute(tx.connection())
    .await?
    .rows_affected();
    audit::append(
        tx,
        AuditEntry::new("source.revoke", source.to_string())
            .details(serde_json::json!({ "reason": reason, "certificates_revoked": certificates })),
    )
    .await?;
    Ok(certificates)
}

/// A pairing token's row with its source's status.
#[derive(sqlx::FromRow)]
struct PairingTokenRow {
    #[sqlx(try_from = "Uuid")]
    source_id: SourceId,
    token_hash: Vec<u8>,
    expires_at: OffsetDateTime,
    used_at: Option<OffsetDateTime>,
    status: String,
}

/// Consumes a pairing token (edge, pipeline scope of the token's tenant). Commits with the
/// certificate it pays for, or not at all.
pub async fn redeem_pairing_token(
    tx: &mut TenantTx,
    token: &PairingTokenRef,
) -> Result<Result<SourceId, PairingRefusal>, StoreError> {
    let row: Option<PairingTokenRow> = sqlx::query_as(
        "select t.source_id, t.token_hash, t.expires_at, t.used_at, s.status \
         from control.pairing_tokens t \
         join control.sources s on s.tenant_id = t.tenant_id and s.source_id = t.source_id \
         join control.dim_tenant d on d.tenant_id = t.tenant_id \
         where t.tenant_id = $1 and t.token_id = $2 and d.status = 'active' for update of t",
    )
    .bind(token.tenant.as_uuid())
    .bind(token.token_id)
    .fetch_optional(tx.connection())
    .await?;
    let Some(row) = row else {
        return Ok(Err(PairingRefusal::Unknown));
    };
    if !secret_token::same_hash(&row.token_hash, &token.secret_hash) {
        return Ok(Err(PairingRefusal::Unknown));
    }
    if row.used_at.is_some() {
        return Ok(Err(PairingRefusal::Used));
    }
    if row.expires_at <= OffsetDateTime::now_utc() {
        return Ok(Err(PairingRefusal::Expired));
    }
    if !matches!(row.status.as_str(), "pending" | "active") {
        return Ok(Err(PairingRefusal::SourceUnavailable));
    }
    sqlx::query(
        "update control.pairing_tokens set used_at = now() where tenant_id = $1 and token_id = $2",
    )
    .bind(token.tenant.as_uuid())
    .bind(token.token_id)
    .execute(tx.connection())
    .await?;
    Ok(Ok(row.source_id))
}

/// A client certificate the CA issued.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    pub source: SourceId,
    /// Lower-case hex.
    pub serial: String,
    pub fingerprint_sha256: [u8; 32],
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// Records an issued certificate and marks its source active (audited as `action`, e.g.
/// `source.pair` or `source.certificate.renew`).
pub async fn record_certificate(
    tx: &mut TenantTx,
    certificate: &IssuedCertificate,
    action: &'static str,
) -> Result<(), StoreError> {
    let tenant = require_tenant(tx)?;
    sqlx::query(
        "insert into control.certificates (tenant_id, serial, source_id, fingerprint_sha256, \
         not_before, not_after) values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(tenant.as_uuid())
    .bind(&certificate.serial)
    .bind(certificate.source.as_uuid())
    .bind(certificate.fingerprint_sha256.to_vec())
    .bind(certificate.not_before)
    .bind(certificate.not_after)
    .execute(tx.connection())
    .await?;
    sqlx::query(
        "update control.sources set status = 'active', updated_at = now() \
         where tenant_id = $1 and source_id = $2 and status = 'pending'",
    )
    .bind(tenant.as_uuid())
    .bind(certificate.source.as_uuid())
    .execute(tx.connection())
    .await?;
    audit::append(
        tx,
        AuditEntry::new(action, certificate.source.to_string()).details(serde_json::json!({
            "serial": certificate.serial,
            "not_after": certificate.not_after.unix_timestamp(),
        })),
    )
    .await
}

/// What the edge needs to decide whether a client certificate may still be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceAccess {
    pub allowed: bool,
}

/// The internal certificate authority as stored: its certificate and its encrypted key.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredCertificateAuthority {
    pub certificate_pem: String,
    pub key_ciphertext: Vec<u8>,
    pub key_nonce: Vec<u8>,
}

fn require_tenant(tx: &TenantTx) -> Result<TenantId, StoreError> {
    tx.tenant()
        .ok_or(StoreError::Forbidden("this needs a tenant scope"))
}
