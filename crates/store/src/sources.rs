//! Sources and their credentials: creating a source with a one-time pairing token, redeeming
//! the token, recording issued client certificates, revocation, and what the edge checks on
//! every request. Also each source's health: the agent's status heartbeat (latest, and sampled
//! once a minute into a bounded history), the status derived from it ([`derive_status`]) and
//! the forecast of when the replication slot would be invalidated ([`forecast_slot`]).

use std::collections::HashMap;

use domain::{SourceId, TenantId};
use serde::{Deserialize, Serialize};
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
    /// Set while the source's ingestion is paused ([`pause_source`]): the edge refuses its
    /// batches, its agent keeps them spooled.
    #[serde(with = "time::serde::rfc3339::option")]
    pub paused_at: Option<OffsetDateTime>,
    /// Who paused it (`<actor kind>:<actor id>`), while paused.
    pub paused_by: Option<String>,
    /// Why, when the pause said so.
    pub pause_reason: Option<String>,
    /// Set while a resync waits for the source's agent ([`request_resync`]).
    #[serde(with = "time::serde::rfc3339::option")]
    pub resync_requested_at: Option<OffsetDateTime>,
    /// Set while a certificate rotation waits for the source's agent ([`request_rotation`]).
    #[serde(with = "time::serde::rfc3339::option")]
    pub rotate_requested_at: Option<OffsetDateTime>,
    /// The source's status as derived from its record and its agent's last heartbeat.
    #[sqlx(skip)]
    pub health: DerivedStatus,
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

/// Records `source`'s latest status heartbeat (the edge, as the service role), and samples it
/// into the source's status history (see [`record_agent_status_at`]).
pub async fn record_agent_status(
    tx: &mut TenantTx,
    source: SourceId,
    report: &AgentReport,
) -> Result<(), StoreError> {
    record_agent_status_at(tx, source, report, None).await
}

/// [`record_agent_status`] as received at `at` (`None`: the transaction's time). The heartbeat
/// replaces the latest one; the history gets a sample unless the source has one in the same
/// minute already, and loses the source's samples older than [`HISTORY_KEPT`] when it does,
/// through its key. Taking the time lets a test lay out a history without waiting for it.
pub async fn record_agent_status_at(
    tx: &mut TenantTx,
    source: SourceId,
    report: &AgentReport,
    at: Option<OffsetDateTime>,
) -> Result<(), StoreError> {
    let tenant = require_tenant(tx)?;
    sqlx::query(
        "insert into control.source_status (tenant_id, source_id, reported_at, agent_version, \
           source_kind, state, captured_lsn, acked_lsn, confirmed_lsn, lag_bytes, lag_seconds, \
           spool_batches, spool_bytes, backpressure, snapshot_rows, slot, warnings, last_error, \
           caught_up, send_bytes_per_second, drain_seconds, not_captured) \
         values ($1, $2, coalesce($22, now()), $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
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
    .bind(at)
    .execute(tx.connection())
    .await?;
    let slot = report.slot.as_ref().map(SlotReport::from_stored);
    let slot = slot.unwrap_or_default();
    let sampled = sqlx::query(
        "insert into control.source_status_history (tenant_id, source_id, sampled_minute, \
           sampled_at, state, wal_status, retained_wal_bytes, safe_wal_bytes, max_keep_bytes, \
           lag_bytes, lag_seconds, spool_batches, spool_bytes, backpressure, acked_lsn) \
         values ($1, $2, date_trunc('minute', coalesce($3, now())), coalesce($3, now()), $4, $5, \
           $6, $7, $8, $9, $10, $11, $12, $13, $14) \
         on conflict (tenant_id, source_id, sampled_minute) do nothing",
    )
    .bind(tenant.as_uuid())
    .bind(source.as_uuid())
    .bind(at)
    .bind(&report.state)
    .bind(
        slot.wal_status
            .as_deref()
            .map(|text| text.chars().take(32).collect::<String>()),
    )
    .bind(slot.retained_bytes)
    .bind(slot.safe_wal_bytes)
    .bind(slot.max_keep_bytes)
    .bind(report.lag_bytes)
    .bind(report.lag_seconds)
    .bind(report.spool_batches)
    .bind(report.spool_bytes)
    .bind(report.backpressure)
    .bind(report.acked_lsn)
    .execute(tx.connection())
    .await?
    .rows_affected();
    if sampled > 0 {
        // At most once a minute per source, and an index range of the primary key.
        sqlx::query(
            "delete from control.source_status_history \
             where tenant_id = $1 and source_id = $2 \
               and sampled_minute < coalesce($3, now()) - make_interval(secs => $4)",
        )
        .bind(tenant.as_uuid())
        .bind(source.as_uuid())
        .bind(at)
        .bind(HISTORY_KEPT.whole_seconds() as f64)
        .execute(tx.connection())
        .await?;
    }
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
            paused_at: None,
            paused_by: None,
            pause_reason: None,
            resync_requested_at: None,
            rotate_requested_at: None,
            health: derive_status("pending", None, created_at),
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
    let mut sources: Vec<Source> = sqlx::query_as(
        "select s.source_id, s.name, s.kind, s.status, s.created_at, s.paused_at, \
                s.paused_by, s.pause_reason, s.resync_requested_at, \
                s.rotate_requested_at, to_jsonb(a) - 'tenant_id' - 'source_id' as agent \
         from control.sources s left join control.source_status a \
           on a.tenant_id = s.tenant_id and a.source_id = s.source_id \
         where s.tenant_id = $1 order by s.tenant_id, s.created_at desc",
    )
    .bind(tenant.as_uuid())
    .fetch_all(tx.connection())
    .await?;
    let now = OffsetDateTime::now_utc();
    for source in &mut sources {
        source.derive_health(now);
    }
    Ok(sources)
}

/// One of the tenant's sources, with its derived status; `NotFound` for an id the tenant has
/// no source of.
pub async fn get_source(tx: &mut TenantTx, source: SourceId) -> Result<Source, StoreError> {
    let tenant = require_tenant(tx)?;
    let found: Option<Source> = sqlx::query_as(
        "select s.source_id, s.name, s.kind, s.status, s.created_at, s.paused_at, \
                s.paused_by, s.pause_reason, s.resync_requested_at, \
                s.rotate_requested_at, to_jsonb(a) - 'tenant_id' - 'source_id' as agent \
         from control.sources s left join control.source_status a \
           on a.tenant_id = s.tenant_id and a.source_id = s.source_id \
         where s.tenant_id = $1 and s.source_id = $2",
    )
    .bind(tenant.as_uuid())
    .bind(source.as_uuid())
    .fetch_optional(tx.connection())
    .await?;
    let mut found = found.ok_or(StoreError::NotFound("source"))?;
    found.derive_health(OffsetDateTime::now_utc());
    Ok(found)
}

impl Source {
    /// The agent's last heartbeat, read back from [`Source::agent`].
    pub fn heartbeat(&self) -> Option<Heartbeat> {
        self.agent.as_ref().and_then(Heartbeat::from_stored)
    }

    /// The record's status as [`derive_status`] reads it: `paused` for a source that is not
    /// revoked and whose ingestion is paused.
    pub fn effective_status(&self) -> &str {
        if self.paused_at.is_some() && self.status != "revoked" {
            "paused"
        } else {
            &self.status
        }
    }

    fn derive_health(&mut self, now: OffsetDateTime) {
        self.health = derive_status(self.effective_status(), self.heartbeat().as_ref(), now);
    }
}

/// When each of the tenant's sources' newest event (by position) was committed at the source,
/// for the sources that have one in bronze. Needs a role that reads bronze; one index probe
/// per source.
pub async fn last_events(
    tx: &mut TenantTx,
) -> Result<HashMap<SourceId, OffsetDateTime>, StoreError> {
    let tenant = require_tenant(tx)?;
    let rows: Vec<(Uuid, OffsetDateTime)> = sqlx::query_as(
        "select s.source_id, last.event_time \
         from control.sources s \
         cross join lateral (select e.event_time from bronze.cdc_events e \
             where e.tenant_id = s.tenant_id and e.source_id = s.source_id \
             order by e.lsn desc, e.seq desc limit 1) last \
         where s.tenant_id = $1",
    )
    .bind(tenant.as_uuid())
    .fetch_all(tx.connection())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(source, at)| (SourceId::from_uuid(source), at))
        .collect())
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

/// Pauses `source`'s ingestion (audited as `source.pause`, with the reason): from the edge's
/// next look at the source (within its cache's lifetime) its batches are refused with
/// `source_paused` and its agent keeps them spooled; its status heartbeats are still taken.
/// Pausing a paused source keeps the first pause's time, actor and reason and records nothing;
/// a revoked source cannot be paused. Returns the source as it is now.
pub async fn pause_source(
    tx: &mut TenantTx,
    source: SourceId,
    reason: Option<&str>,
) -> Result<Source, StoreError> {
    let tenant = require_tenant(tx)?;
    let reason: Option<String> = reason
        .map(|reason| reason.trim().chars().take(200).collect::<String>())
        .filter(|reason| !reason.is_empty());
    if reason
        .as_deref()
        .is_some_and(|reason| reason.chars().any(char::is_control))
    {
        return Err(StoreError::InvalidParameter {
            parameter: "reason",
            message: "a reason has no control characters".into(),
        });
    }
    let paused_by = actor_label(tx);
    let status: Option<(String, Option<OffsetDateTime>)> = sqlx::query_as(
        "select status, paused_at from control.sources \
         where tenant_id = $1 and source_id = $2 for update",
    )
    .bind(tenant.as_uuid())
    .bind(source.as_uuid())
    .fetch_optional(tx.connection())
    .await?;
    match status {
        None => return Err(StoreError::NotFound("source")),
        Some((status, _)) if status == "revoked" => {
            return Err(StoreError::Forbidden("the source is revoked"));
        }
        Some((_, Some(_))) => return get_source(tx, source).await,
        Some((_, None)) => {}
    }
    sqlx::query(
        "update control.sources set paused_at = now(), paused_by = $3, pause_reason = $4, \
           updated_at = now() \
         where tenant_id = $1 and source_id = $2",
    )
    .bind(tenant.as_uuid())
    .bind(source.as_uuid())
    .bind(&paused_by)
    .bind(&reason)
    .execute(tx.connection())
    .await?;
    audit::append(
        tx,
        AuditEntry::new("source.pause", source.to_string())
            .details(serde_json::json!({ "reason": reason })),
    )
    .await?;
    get_source(tx, source).await
}

/// Resumes a paused source's ingestion (audited as `source.resume`, with how long it was
/// paused): the edge takes its batches again within its cache's lifetime and its agent sends
/// what it kept. Resuming a source that is not paused records nothing. Returns the source as it
/// is now.
pub async fn resume_source(tx: &mut TenantTx, source: SourceId) -> Result<Source, StoreError> {
    let tenant = require_tenant(tx)?;
    let status: Option<(String, Option<OffsetDateTime>)> = sqlx::query_as(
        "select status, paused_at from control.sources \
         where tenant_id = $1 and source_id = $2 for update",
    )
    .bind(tenant.as_uuid())
    .bind(source.as_uuid())
    .fetch_optional(tx.connection())
    .await?;
    let paused_at = match status {
        None => return Err(StoreError::NotFound("source")),
        Some((status, _)) if status == "revoked" => {
            return Err(StoreError::Forbidden("the source is revoked"));
        }
        Some((_, None)) => return get_source(tx, source).await,
        Some((_, Some(paused_at))) => paused_at,
    };
    sqlx::query(
        "update control.sources set paused_at = null, paused_by = null, pause_reason = null, \
           updated_at = now() \
         where tenant_id = $1 and source_id = $2",
    )
    .bind(tenant.as_uuid())
    .bind(source.as_uuid())
    .execute(tx.connection())
    .await?;
    let paused_seconds = (OffsetDateTime::now_utc() - paused_at)
        .whole_seconds()
        .max(0);
    audit::append(
        tx,
        AuditEntry::new("source.resume", source.to_string())
            .details(serde_json::json!({ "paused_seconds": paused_seconds })),
    )
    .await?;
    get_source(tx, source).await
}

/// What an admin does to a source from its page or the API: [`pause_source`],
/// [`resume_source`], [`request_resync`], [`request_rotation`] or [`revoke_source`].
#[derive(Debug, Clone, Copy)]
pub enum SourceAction<'a> {
    Pause { reason: Option<&'a str> },
    Resume,
    Resync,
    RotateCertificate,
    Revoke { reason: &'a str },
}

/// Carries out `action` on `source`; the source as it is after.
pub async fn act(
    tx: &mut TenantTx,
    source: SourceId,
    action: SourceAction<'_>,
) -> Result<Source, StoreError> {
    match action {
        SourceAction::Pause { reason } => pause_source(tx, source, reason).await,
        SourceAction::Resume => resume_source(tx, source).await,
        SourceAction::Resync => request_resync(tx, source).await,
        SourceAction::RotateCertificate => request_rotation(tx, source).await,
        SourceAction::Revoke { reason } => {
            revoke_source(tx, source, reason).await?;
            get_source(tx, source).await
        }
    }
}

/// Asks `source`'s agent to resync (audited as `source.resync.request`): it learns it from
/// the edge's answer to its next status heartbeat, drops its replication slot, forgets its
/// positions and takes a new snapshot, then names the request in its heartbeats, which clears
/// it ([`record_agent_status`]). What it had spooled is still sent. For a PostgreSQL source that
/// is not revoked; asking while a request waits keeps that one and records nothing. Returns
/// the source as it is now.
pub async fn request_resync(tx: &mut TenantTx, source: SourceId) -> Result<Source, StoreError> {
    let tenant = require_tenant(tx)?;
    let requested_by = actor_label(tx);
    let found: Option<(String, String, Option<Uuid>)> = sqlx::query_as(
        "select status, kind, resync_request_id from control.sources \
         where tenant_id = $1 and source_id = $2 for update",
    )
    .bind(tenant.as_uuid())
    .bind(source.as_uuid())
    .fetch_optional(tx.connection())
    .await?;
    match found {
        None => return Err(StoreError::NotFound("source")),
        Some((status, _, _)) if status == "revoked" => {
            return Err(StoreError::Forbidden("the source is revoked"));
        }
        Some((_, kind, _)) if kind != "postgres" => {
            return Err(StoreError::Forbidden(
                "only a PostgreSQL source has a snapshot to take again",
            ));
        }
        Some((_, _, Some(_))) => return get_source(tx, source).await,
        Some((_, _, None)) => {}
    }
    let request = Uuid::new_v4();
    sqlx::query(
        "update control.sources set resync_request_id = $3, resync_requested_at = now(), \
           resync_requested_by = $4, updated_at = now() \
         where tenant_id = $1 and source_id = $2",
    )
    .bind(tenant.as_uuid())
    .bind(source.as_uuid())
    .bind(request)
    .bind(&requested_by)
    .execute(tx.connection())
    .await?;
    audit::append(
        tx,
        AuditEntry::new("source.resync.request", source.to_string())
            .details(serde_json::json!({ "request_id": request })),
    )
    .await?;
    get_source(tx, source).await
}

/// Asks `source`'s agent to replace its certificate now (audited as
/// `source.certificate.rotate.request`): it learns it from the edge's answer to its next status
/// heartbeat and renews (a new key, a new certificate); the renewal revokes every other
/// certificate of the source ([`complete_rotation`]). For a source whose agent has paired and
/// that is not revoked; asking while a request waits keeps that one and records nothing.
/// Returns the source as it is now.
pub async fn request_rotation(tx: &mut TenantTx, source: SourceId) -> Result<Source, StoreError> {
    let tenant = require_tenant(tx)?;
    let found: Option<(String, Option<OffsetDateTime>, bool)> = sqlx::query_as(
        "select s.status, s.rotate_requested_at, exists (select 1 from control.certificates c \
           where c.tenant_id = s.tenant_id and c.source_id = s.source_id \
             and c.revoked_at is null) \
         from control.sources s where s.tenant_id = $1 and s.source_id = $2 for update of s",
    )
    .bind(tenant.as_uuid())
    .bind(source.as_uuid())
    .fetch_optional(tx.connection())
    .await?;
    match found {
        None => return Err(StoreError::NotFound("source")),
        Some((status, _, _)) if status == "revoked" => {
            return Err(StoreError::Forbidden("the source is revoked"));
        }
        Some((_, Some(_), _)) => return get_source(tx, source).await,
        Some((_, None, false)) => {
            return Err(StoreError::Forbidden(
                "the source's agent has no certificate to rotate: pair it first",
            ));
        }
        Some((_, None, true)) => {}
    }
    sqlx::query(
        "update control.sources set rotate_requested_at = now(), updated_at = now() \
         where tenant_id = $1 and source_id = $2",
    )
    .bind(tenant.as_uuid())
    .bind(source.as_uuid())
    .execute(tx.connection())
    .await?;
    audit::append(
        tx,
        AuditEntry::new("source.certificate.rotate.request", source.to_string()),
    )
    .await?;
    get_source(tx, source).await
}

/// What the edge asks of an agent in the answer to its status heartbeat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusAsk {
    /// The resync request waiting, if one does.
    pub resync: Option<Uuid>,
    /// Renew the certificate now: a rotation waits.
    pub rotate_certificate: bool,
}

/// What the edge answers an agent's status heartbeat with: the resync it should carry out and
/// whether it should renew its certificate now. A heartbeat that names the waiting resync as
/// done clears it (audited as `source.resync.done`, by the agent). The edge's service
/// transaction.
pub async fn take_status_answer(
    tx: &mut TenantTx,
    source: SourceId,
    resynced: Option<Uuid>,
) -> Result<StatusAsk, StoreError> {
    let tenant = require_tenant(tx)?;
    let waiting: Option<(Option<Uuid>, Option<OffsetDateTime>, Option<OffsetDateTime>)> =
        sqlx::query_as(
            "select resync_request_id, resync_requested_at, rotate_requested_at \
             from control.sources where tenant_id = $1 and source_id = $2",
        )
        .bind(tenant.as_uuid())
        .bind(source.as_uuid())
        .fetch_optional(tx.connection())
        .await?;
    let Some((request, requested_at, rotate)) = waiting else {
        return Ok(StatusAsk::default());
    };
    let mut ask = StatusAsk {
        resync: None,
        rotate_certificate: rotate.is_some(),
    };
    let (Some(request), Some(requested_at)) = (request, requested_at) else {
        return Ok(ask);
    };
    if resynced != Some(request) {
        ask.resync = Some(request);
        return Ok(ask);
    }
    let cleared = sqlx::query(
        "update control.sources set resync_request_id = null, resync_requested_at = null, \
           resync_requested_by = null, updated_at = now() \
         where tenant_id = $1 and source_id = $2 and resync_request_id = $3",
    )
    .bind(tenant.as_uuid())
    .bind(source.as_uuid())
    .bind(request)
    .execute(tx.connection())
    .await?
    .rows_affected();
    if cleared > 0 {
        let waited = (OffsetDateTime::now_utc() - requested_at)
            .whole_seconds()
            .max(0);
        audit::append(
            tx,
            AuditEntry::new("source.resync.done", source.to_string())
                .details(serde_json::json!({ "request_id": request, "waited_seconds": waited })),
        )
        .await?;
    }
    Ok(ask)
}

/// After the renewal that issued `kept` (the edge's service transaction, with
/// [`record_certificate`]): when a rotation waits, revokes every other certificate of the
/// source and clears the request (audited as `source.certificate.rotate.done`, with how many
/// were revoked). Returns how many were revoked (0 when no rotation waited).
pub async fn complete_rotation(
    tx: &mut TenantTx,
    source: SourceId,
    kept: &str,
) -> Result<u64, StoreError> {
    let tenant = require_tenant(tx)?;
    let cleared = sqlx::query(
        "update control.sources set rotate_requested_at = null, updated_at = now() \
         where tenant_id = $1 and source_id = $2 and rotate_requested_at is not null",
    )
    .bind(tenant.as_uuid())
    .bind(source.as_uuid())
    .execute(tx.connection())
    .await?
    .rows_affected();
    if cleared == 0 {
        return Ok(0);
    }
    let revoked = sqlx::query(
        "update control.certificates set revoked_at = now(), revocation_reason = 'rotated' \
         where tenant_id = $1 and source_id = $2 and serial <> $3 and revoked_at is null",
    )
    .bind(tenant.as_uuid())
    .bind(source.as_uuid())
    .bind(kept)
    .execute(tx.connection())
    .await?
    .rows_affected();
    audit::append(
        tx,
        AuditEntry::new("source.certificate.rotate.done", source.to_string())
            .details(serde_json::json!({ "serial": kept, "certificates_revoked": revoked })),
    )
    .await?;
    Ok(revoked)
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
    /// The source's ingestion is paused: its batches are refused, its heartbeats taken.
    pub paused: bool,
}

/// The internal certificate authority as stored: its certificate and its encrypted key.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredCertificateAuthority {
    pub certificate_pem: String,
    pub key_ciphertext: Vec<u8>,
    pub key_nonce: Vec<u8>,
}

/// Who is acting, as a source's record keeps it: `<actor kind>:<actor id>`, at most 200
/// characters.
fn actor_label(tx: &TenantTx) -> String {
    let actor = tx.actor();
    format!("{}:{}", actor.kind(), actor.id())
        .chars()
        .take(200)
        .collect()
}

fn require_tenant(tx: &TenantTx) -> Result<TenantId, StoreError> {
    tx.tenant()
        .ok_or(StoreError::Forbidden("this needs a tenant scope"))
}

/// How long a source's status history is kept.
pub const HISTORY_KEPT: Duration = Duration::days(7);
/// An agent reports every few seconds: one silent for longer than this is disconnected.
pub const HEARTBEAT_STALE: Duration = Duration::seconds(60);
/// Changes waiting longer than this for the platform's acknowledgement mean the source lags.
pub const LAG_SECONDS_BOUND: f64 = 60.0;
/// WAL beyond the confirmed position above this means the source lags.
pub const LAG_BYTES_BOUND: i64 = 256 << 20;
/// A spool that takes longer than this to drain at the current send rate is filling.
pub const SPOOL_DRAIN_BOUND_SECONDS: f64 = 300.0;
/// The retained WAL's growth is fitted over this much history.
pub const FORECAST_WINDOW: Duration = Duration::hours(1);
/// A fit over less than this much time says nothing yet.
pub const FORECAST_MIN_SPAN: Duration = Duration::minutes(5);
/// Below this growth the retained WAL is taken as not growing.
const NOT_GROWING_BYTES_PER_HOUR: f64 = 1024.0 * 1024.0;

/// The replication slot as the agent reports it (`protocol::SlotHealth`, stored as JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotReport {
    #[serde(default)]
    pub name: String,
    /// `reserved`, `extended`, `unreserved` or `lost`.
    #[serde(default)]
    pub wal_status: Option<String>,
    /// WAL the slot keeps from being recycled.
    #[serde(default)]
    pub retained_bytes: Option<i64>,
    /// WAL that can still be written before the slot is in danger (`None`: no limit).
    #[serde(default)]
    pub safe_wal_bytes: Option<i64>,
    /// `max_slot_wal_keep_size` in bytes; `None` when unlimited (-1).
    #[serde(default)]
    pub max_keep_bytes: Option<i64>,
}

impl SlotReport {
    /// The stored JSON read back; a shape it does not know reads as nothing reported.
    pub fn from_stored(value: &serde_json::Value) -> Self {
        serde_json::from_value(value.clone()).unwrap_or_default()
    }

    /// The source would soon invalidate the slot: PostgreSQL says `unreserved`, or less than
    /// half of `max_slot_wal_keep_size` may still be written (the agent warns on the same rule).
    pub fn at_risk(&self) -> bool {
        self.wal_status.as_deref() == Some("unreserved")
            || matches!((self.safe_wal_bytes, self.max_keep_bytes),
                (Some(safe), Some(max)) if safe < max / 2)
    }

    pub fn lost(&self) -> bool {
        self.wal_status.as_deref() == Some("lost")
    }
}

/// The part of an agent's last heartbeat the status is derived from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Heartbeat {
    pub reported_at: Option<OffsetDateTime>,
    pub agent_version: String,
    /// `starting`, `snapshot`, `streaming`, `stopped`, `failed`.
    pub state: String,
    pub lag_bytes: Option<i64>,
    pub lag_seconds: Option<f64>,
    pub spool_bytes: i64,
    pub backpressure: bool,
    pub drain_seconds: Option<f64>,
    pub slot: Option<SlotReport>,
    pub last_error: Option<String>,
    pub warnings: Vec<String>,
}

impl Heartbeat {
    /// A `control.source_status` row as JSON ([`Source::agent`]).
    pub fn from_stored(agent: &serde_json::Value) -> Option<Self> {
        if !agent.is_object() {
            return None;
        }
        let reported_at = agent["reported_at"].as_str().and_then(|text| {
            OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
        });
        Some(Self {
            reported_at,
            agent_version: agent["agent_version"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            state: agent["state"].as_str().unwrap_or_default().to_owned(),
            lag_bytes: agent["lag_bytes"].as_i64(),
            lag_seconds: agent["lag_seconds"].as_f64(),
            spool_bytes: agent["spool_bytes"].as_i64().unwrap_or(0),
            backpressure: agent["backpressure"].as_bool().unwrap_or(false),
            drain_seconds: agent["drain_seconds"].as_f64(),
            slot: agent
                .get("slot")
                .filter(|slot| slot.is_object())
                .map(SlotReport::from_stored),
            last_error: agent["last_error"].as_str().map(str::to_owned),
            warnings: agent["warnings"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|warning| warning.as_str().map(str::to_owned))
                .collect(),
        })
    }

    /// The agent stopped because the source invalidated or dropped its slot: the slot reads
    /// `lost`, or the agent failed saying so (it reports the slot as it last saw it and the
    /// reason in its error).
    fn slot_invalidated(&self) -> bool {
        self.slot.as_ref().is_some_and(SlotReport::lost)
            || (self.state == "failed"
                && self.last_error.as_deref().is_some_and(|error| {
                    error.contains("replication slot")
                        && (error.contains("was invalidated") || error.contains("no longer exists"))
                }))
    }
}

/// What the platform knows about a source, worst first where more than one holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceHealth {
    /// Revoked: its certificates are refused.
    Revoked,
    /// Its ingestion is paused: the edge refuses its batches, its agent keeps them spooled.
    Paused,
    /// The source invalidated (or dropped) the replication slot: a resync is needed.
    SlotInvalidated,
    /// The agent reported a failure it stopped on.
    Failed,
    /// The agent has not reported for longer than [`HEARTBEAT_STALE`], or said it stopped.
    Disconnected,
    /// The source would soon invalidate the slot.
    SlotAtRisk,
    /// The agent's spool is full, or takes long to drain.
    SpoolFilling,
    /// Changes wait long, or much WAL is unconfirmed.
    Lagging,
    /// Reporting, and keeping up.
    Connected,
    /// No agent has ever reported for it.
    #[default]
    NeverConnected,
}

impl SourceHealth {
    pub const ALL: [SourceHealth; 10] = [
        SourceHealth::Revoked,
        SourceHealth::Paused,
        SourceHealth::SlotInvalidated,
        SourceHealth::Failed,
        SourceHealth::Disconnected,
        SourceHealth::SlotAtRisk,
        SourceHealth::SpoolFilling,
        SourceHealth::Lagging,
        SourceHealth::Connected,
        SourceHealth::NeverConnected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SourceHealth::Revoked => "revoked",
            SourceHealth::Paused => "paused",
            SourceHealth::SlotInvalidated => "slot_invalidated",
            SourceHealth::Failed => "failed",
            SourceHealth::Disconnected => "disconnected",
            SourceHealth::SlotAtRisk => "slot_at_risk",
            SourceHealth::SpoolFilling => "spool_filling",
            SourceHealth::Lagging => "lagging",
            SourceHealth::Connected => "connected",
            SourceHealth::NeverConnected => "never_connected",
        }
    }

    /// In words, for people.
    pub fn label(self) -> &'static str {
        match self {
            SourceHealth::Revoked => "Revoked",
            SourceHealth::Paused => "Paused",
            SourceHealth::SlotInvalidated => "Slot invalidated",
            SourceHealth::Failed => "Failed",
            SourceHealth::Disconnected => "Disconnected",
            SourceHealth::SlotAtRisk => "Slot at risk",
            SourceHealth::SpoolFilling => "Spool filling",
            SourceHealth::Lagging => "Lagging",
            SourceHealth::Connected => "Connected",
            SourceHealth::NeverConnected => "Never connected",
        }
    }

    /// `ok`, `warn`, `bad` or `idle`: the badge's colour, beside the words.
    pub fn tone(self) -> &'static str {
        match self {
            SourceHealth::Connected => "ok",
            SourceHealth::Lagging | SourceHealth::SpoolFilling | SourceHealth::SlotAtRisk => "warn",
            SourceHealth::SlotInvalidated | SourceHealth::Failed | SourceHealth::Disconnected => {
                "bad"
            }
            SourceHealth::Revoked | SourceHealth::Paused | SourceHealth::NeverConnected => "idle",
        }
    }
}

/// A source's derived status and why, in words.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DerivedStatus {
    pub status: SourceHealth,
    pub label: String,
    pub reason: String,
}

impl DerivedStatus {
    fn new(status: SourceHealth, reason: impl Into<String>) -> Self {
        Self {
            status,
            label: status.label().to_owned(),
            reason: reason.into(),
        }
    }
}

/// Derives a source's status from its record's `source_status` (pending, active, disabled,
/// revoked, or `paused` for one whose ingestion is paused: [`Source::effective_status`]), its
/// agent's last heartbeat and how old that is at `now`. Only what the platform can know:
/// revoked, paused, slot invalidated, failed, disconnected, slot at risk, spool filling,
/// lagging, connected or never connected, the first that holds in that order.
pub fn derive_status(
    source_status: &str,
    heartbeat: Option<&Heartbeat>,
    now: OffsetDateTime,
) -> DerivedStatus {
    use SourceHealth as H;
    if source_status == "revoked" {
        return DerivedStatus::new(H::Revoked, "the source is revoked: its agent is refused");
    }
    if source_status == "paused" {
        let reason = match heartbeat.map(|heartbeat| heartbeat.spool_bytes) {
            Some(bytes) if bytes > 0 => format!(
                "ingestion is paused: the platform refuses its batches and its agent keeps {} \
                 spooled until it is resumed",
                bytes_text(bytes)
            ),
            _ => "ingestion is paused: the platform refuses its batches and its agent keeps \
                  them spooled until it is resumed"
                .to_owned(),
        };
        return DerivedStatus::new(H::Paused, reason);
    }
    let Some(heartbeat) = heartbeat else {
        let reason = if source_status == "pending" {
            "not paired yet: no agent has redeemed its pairing token"
        } else {
            "paired, but its agent has never reported"
        };
        return DerivedStatus::new(H::NeverConnected, reason);
    };
    if heartbeat.slot_invalidated() {
        return DerivedStatus::new(
            H::SlotInvalidated,
            "the source invalidated the replication slot: a resync is needed",
        );
    }
    let age = heartbeat.reported_at.map(|at| now - at);
    if age.is_none_or(|age| age > HEARTBEAT_STALE) {
        let reason = match age {
            Some(age) => format!(
                "no heartbeat for {} (an agent reports every few seconds)",
                duration_text(age)
            ),
            None => "no heartbeat time was recorded".to_owned(),
        };
        return DerivedStatus::new(H::Disconnected, reason);
    }
    if heartbeat.state == "failed" {
        return DerivedStatus::new(H::Failed, "the agent reported a failure and stopped");
    }
    if heartbeat.state == "stopped" {
        return DerivedStatus::new(H::Disconnected, "the agent reported that it stopped");
    }
    if let Some(slot) = heartbeat.slot.as_ref().filter(|slot| slot.at_risk()) {
        let reason = match (slot.wal_status.as_deref(), slot.safe_wal_bytes) {
            (Some("unreserved"), _) => {
                "the slot's WAL is beyond max_slot_wal_keep_size (wal_status unreserved): the \
                 source invalidates it at its next checkpoint unless the agent catches up"
                    .to_owned()
            }
            (_, Some(safe)) => format!(
                "only {} more WAL may be written before the source invalidates the slot",
                bytes_text(safe)
            ),
            _ => "the slot is close to invalidation".to_owned(),
        };
        return DerivedStatus::new(H::SlotAtRisk, reason);
    }
    if heartbeat.backpressure {
        return DerivedStatus::new(
            H::SpoolFilling,
            "the agent's spool is full: it stopped reading the source until the platform \
             acknowledges what waits",
        );
    }
    if let Some(drain) = heartbeat
        .drain_seconds
        .filter(|seconds| *seconds > SPOOL_DRAIN_BOUND_SECONDS)
    {
        return DerivedStatus::new(
            H::SpoolFilling,
            format!(
                "{} wait in the agent's spool, {} to drain at the current send rate",
                bytes_text(heartbeat.spool_bytes),
                duration_text(Duration::seconds_f64(drain))
            ),
        );
    }
    let slow = heartbeat
        .lag_seconds
        .filter(|seconds| *seconds > LAG_SECONDS_BOUND);
    let behind = heartbeat.lag_bytes.filter(|bytes| *bytes > LAG_BYTES_BOUND);
    if slow.is_some() || behind.is_some() {
        let mut parts = Vec::new();
        if let Some(seconds) = slow {
            parts.push(format!(
                "the oldest unacknowledged change waited {}",
                duration_text(Duration::seconds_f64(seconds))
            ));
        }
        if let Some(bytes) = behind {
            parts.push(format!("{} of WAL not yet confirmed", bytes_text(bytes)));
        }
        return DerivedStatus::new(H::Lagging, parts.join("; "));
    }
    let reason = match heartbeat.state.as_str() {
        "snapshot" => "taking the initial snapshot",
        "starting" => "the agent is starting",
        _ => "streaming and keeping up",
    };
    DerivedStatus::new(H::Connected, reason)
}

/// What the forecast of a slot's invalidation came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForecastKind {
    /// At the current growth the slot would be invalidated in `hours_until_invalidation`.
    Invalidation,
    /// The source already invalidated it.
    Invalidated,
    /// `max_slot_wal_keep_size` is -1: the source never invalidates the slot.
    Unbounded,
    /// The retained WAL is not growing.
    NotGrowing,
    /// Not enough history (or no slot reported) to fit a growth rate.
    Unknown,
}

/// When the replication slot would be invalidated at the current growth of its retained WAL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotForecast {
    pub kind: ForecastKind,
    /// The retained WAL's growth, fitted over the last [`FORECAST_WINDOW`].
    pub growth_bytes_per_hour: Option<f64>,
    /// `max_slot_wal_keep_size` in bytes, when limited.
    pub max_keep_bytes: Option<i64>,
    /// The latest retained WAL.
    pub retained_bytes: Option<i64>,
    pub hours_until_invalidation: Option<f64>,
    /// The forecast in words.
    pub summary: String,
}

/// Forecasts when the slot would be invalidated: a least-squares line through the retained
/// WAL `samples` (time, bytes) of the [`FORECAST_WINDOW`] before `now`, run forward to
/// `max_slot_wal_keep_size` (`max_keep_bytes`, `None` when unlimited) from the latest sample.
pub fn forecast_slot(
    samples: &[(OffsetDateTime, i64)],
    max_keep_bytes: Option<i64>,
    wal_status: Option<&str>,
    now: OffsetDateTime,
) -> SlotForecast {
    let mut window: Vec<(OffsetDateTime, i64)> = samples
        .iter()
        .copied()
        .filter(|(at, _)| *at > now - FORECAST_WINDOW && *at <= now)
        .collect();
    window.sort_by_key(|(at, _)| *at);
    let retained_bytes = window.last().map(|(_, bytes)| *bytes);
    let forecast = |kind, growth: Option<f64>, hours: Option<f64>, summary: String| SlotForecast {
        kind,
        growth_bytes_per_hour: growth,
        max_keep_bytes,
        retained_bytes,
        hours_until_invalidation: hours,
        summary,
    };
    if wal_status == Some("lost") {
        return forecast(
            ForecastKind::Invalidated,
            None,
            Some(0.0),
            "the source has invalidated the slot: the source needs a resync".to_owned(),
        );
    }
    let growth = growth_per_hour(&window);
    let Some(growth) = growth else {
        let summary = match max_keep_bytes {
            None => "never: max_slot_wal_keep_size is unlimited (-1), so the source never \
                     invalidates the slot (retained WAL can fill its disk instead); not enough \
                     history yet to tell the growth"
                .to_owned(),
            Some(_) => format!(
                "not enough history yet: the forecast needs samples of the retained WAL over \
                 at least {} minutes of the last hour",
                FORECAST_MIN_SPAN.whole_minutes()
            ),
        };
        let kind = if max_keep_bytes.is_none() {
            ForecastKind::Unbounded
        } else {
            ForecastKind::Unknown
        };
        return forecast(kind, None, None, summary);
    };
    let Some(max_keep) = max_keep_bytes else {
        let summary = if growth >= NOT_GROWING_BYTES_PER_HOUR {
            format!(
                "never: max_slot_wal_keep_size is unlimited (-1), so the source never invalidates \
                 the slot; but the retained WAL grows {}/h and can fill the source's disk",
                bytes_text(growth as i64)
            )
        } else {
            "never: max_slot_wal_keep_size is unlimited (-1), and the retained WAL is not growing"
                .to_owned()
        };
        return forecast(ForecastKind::Unbounded, Some(growth), None, summary);
    };
    if growth < NOT_GROWING_BYTES_PER_HOUR {
        return forecast(
            ForecastKind::NotGrowing,
            Some(growth),
            None,
            format!(
                "never at the current rate: the retained WAL is not growing over the last hour \
                 ({}/h), {} below max_slot_wal_keep_size ({})",
                signed_bytes_text(growth),
                bytes_text((max_keep - retained_bytes.unwrap_or(0)).max(0)),
                bytes_text(max_keep)
            ),
        );
    }
    let remaining = (max_keep - retained_bytes.unwrap_or(0)).max(0);
    let hours = remaining as f64 / growth;
    let summary = if remaining == 0 {
        format!(
            "the retained WAL has reached max_slot_wal_keep_size ({}) and grows {}/h: the source \
             invalidates the slot at its next checkpoint",
            bytes_text(max_keep),
            bytes_text(growth as i64)
        )
    } else {
        format!(
            "at the current growth of {}/h the slot would be invalidated in about {} (when the \
             retained WAL, now {}, reaches max_slot_wal_keep_size, {})",
            bytes_text(growth as i64),
            hours_text(hours),
            bytes_text(retained_bytes.unwrap_or(0)),
            bytes_text(max_keep)
        )
    };
    forecast(
        ForecastKind::Invalidation,
        Some(growth),
        Some(hours),
        summary,
    )
}

/// The least-squares slope of `window` (sorted by time) in bytes per hour; `None` with fewer
/// than two samples or a span under [`FORECAST_MIN_SPAN`].
fn growth_per_hour(window: &[(OffsetDateTime, i64)]) -> Option<f64> {
    let (first, last) = (window.first()?.0, window.last()?.0);
    if window.len() < 2 || last - first < FORECAST_MIN_SPAN {
        return None;
    }
    let points: Vec<(f64, f64)> = window
        .iter()
        .map(|(at, bytes)| ((*at - first).as_seconds_f64() / 3600.0, *bytes as f64))
        .collect();
    let count = points.len() as f64;
    let mean_x = points.iter().map(|(x, _)| x).sum::<f64>() / count;
    let mean_y = points.iter().map(|(_, y)| y).sum::<f64>() / count;
    let covariance: f64 = points
        .iter()
        .map(|(x, y)| (x - mean_x) * (y - mean_y))
        .sum();
    let variance: f64 = points.iter().map(|(x, _)| (x - mean_x).powi(2)).sum();
    (variance > 0.0).then(|| covariance / variance)
}

/// Bytes in binary units, one decimal.
pub fn bytes_text(bytes: i64) -> String {
    let value = bytes as f64;
    let magnitude = value.abs();
    if magnitude >= (1u64 << 40) as f64 {
        format!("{:.1} TiB", value / (1u64 << 40) as f64)
    } else if magnitude >= (1u64 << 30) as f64 {
        format!("{:.1} GiB", value / (1u64 << 30) as f64)
    } else if magnitude >= (1u64 << 20) as f64 {
        format!("{:.1} MiB", value / (1u64 << 20) as f64)
    } else if magnitude >= 1024.0 {
        format!("{:.1} KiB", value / 1024.0)
    } else {
        format!("{bytes} B")
    }
}

fn signed_bytes_text(bytes: f64) -> String {
    if bytes < 0.0 {
        format!("-{}", bytes_text((-bytes) as i64))
    } else {
        bytes_text(bytes as i64)
    }
}

fn hours_text(hours: f64) -> String {
    if hours < 1.0 {
        format!("{} min", (hours * 60.0).round().max(1.0))
    } else if hours < 48.0 {
        format!("{hours:.1} h")
    } else {
        format!("{:.1} days", hours / 24.0)
    }
}

fn duration_text(duration: Duration) -> String {
    let seconds = duration.whole_seconds().max(0);
    if seconds < 120 {
        format!("{seconds} s")
    } else if seconds < 7200 {
        format!("{} min", seconds / 60)
    } else if seconds < 2 * 86400 {
        format!("{} h", seconds / 3600)
    } else {
        format!("{} days", seconds / 86400)
    }
}

/// One minute's sample of a source's status.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct StatusSample {
    #[serde(with = "time::serde::rfc3339")]
    pub sampled_at: OffsetDateTime,
    pub state: String,
    pub wal_status: Option<String>,
    pub retained_wal_bytes: Option<i64>,
    pub safe_wal_bytes: Option<i64>,
    pub max_keep_bytes: Option<i64>,
    pub lag_bytes: Option<i64>,
    pub lag_seconds: Option<f64>,
    pub spool_batches: i64,
    pub spool_bytes: i64,
    pub backpressure: bool,
    pub acked_lsn: Option<i64>,
}

/// The source's status samples in `[from, to)`, oldest first (at most [`HISTORY_KEPT`] of them
/// are kept); `NotFound` for an id the tenant has no source of.
pub async fn status_history(
    tx: &mut TenantTx,
    source: SourceId,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Result<Vec<StatusSample>, StoreError> {
    let tenant = require_tenant(tx)?;
    let exists: Option<i32> =
        sqlx::query_scalar("select 1 from control.sources where tenant_id = $1 and source_id = $2")
            .bind(tenant.as_uuid())
            .bind(source.as_uuid())
            .fetch_optional(tx.connection())
            .await?;
    if exists.is_none() {
        return Err(StoreError::NotFound("source"));
    }
    Ok(sqlx::query_as(
        "select sampled_at, state, wal_status, retained_wal_bytes, safe_wal_bytes, \
                max_keep_bytes, lag_bytes, lag_seconds, spool_batches, spool_bytes, \
                backpressure, acked_lsn \
         from control.source_status_history \
         where tenant_id = $1 and source_id = $2 \
           and sampled_minute >= date_trunc('minute', $3::timestamptz) and sampled_at >= $3 \
           and sampled_at < $4 \
         order by tenant_id, source_id, sampled_minute",
    )
    .bind(tenant.as_uuid())
    .bind(source.as_uuid())
    .bind(from)
    .bind(to)
    .fetch_all(tx.connection())
    .await?)
}

/// The certificate a source's agent uses now: the newest one not revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct CurrentCertificate {
    pub serial: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
}

/// A source with what its page and `GET /api/v1/sources/{source}` show beyond the list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceDetail {
    #[serde(flatten)]
    pub source: Source,
    /// The slot as last reported, if the source has one (PostgreSQL).
    pub slot: Option<SlotReport>,
    pub certificate: Option<CurrentCertificate>,
    pub forecast: SlotForecast,
}

/// One source's detail; `NotFound` for an id the tenant has no source of.
pub async fn source_detail(
    tx: &mut TenantTx,
    source: SourceId,
) -> Result<SourceDetail, StoreError> {
    let found = get_source(tx, source).await?;
    let tenant = require_tenant(tx)?;
    let certificate: Option<CurrentCertificate> = sqlx::query_as(
        "select serial, not_before, not_after, issued_at from control.certificates \
         where tenant_id = $1 and source_id = $2 and revoked_at is null \
         order by issued_at desc, not_after desc limit 1",
    )
    .bind(tenant.as_uuid())
    .bind(source.as_uuid())
    .fetch_optional(tx.connection())
    .await?;
    let now = OffsetDateTime::now_utc();
    let history = status_history(
        tx,
        source,
        now - FORECAST_WINDOW,
        now + Duration::seconds(1),
    )
    .await?;
    let slot = found.heartbeat().and_then(|heartbeat| heartbeat.slot);
    let samples: Vec<(OffsetDateTime, i64)> = history
        .iter()
        .filter_map(|sample| {
            sample
                .retained_wal_bytes
                .map(|bytes| (sample.sampled_at, bytes))
        })
        .collect();
    // The limit as last reported; a history sample's when the latest heartbeat has no slot.
    let max_keep = match &slot {
        Some(slot) => slot.max_keep_bytes,
        None => history.last().and_then(|sample| sample.max_keep_bytes),
    };
    let forecast = if slot.is_none() && samples.is_empty() {
        SlotForecast {
            kind: ForecastKind::Unknown,
            growth_bytes_per_hour: None,
            max_keep_bytes: None,
            retained_bytes: None,
            hours_until_invalidation: None,
            summary: "no replication slot reported: the agent has not reported one (a \
                      simulator has none)"
                .to_owned(),
        }
    } else {
        let wal_status = slot.as_ref().and_then(|slot| slot.wal_status.clone());
        let lost = found.health.status == SourceHealth::SlotInvalidated;
        let wal_status = if lost {
            Some("lost".to_owned())
        } else {
            wal_status
        };
        forecast_slot(&samples, max_keep, wal_status.as_deref(), now)
    };
    Ok(SourceDetail {
        source: found,
        slot,
        certificate,
        forecast,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: i64 = 1 << 20;

    fn now() -> OffsetDateTime {
        time::macros::datetime!(2026-12-06 03:00 UTC)
    }

    fn streaming() -> Heartbeat {
        Heartbeat {
            reported_at: Some(now() - Duration::seconds(3)),
            agent_version: "0.1.0".into(),
            state: "streaming".into(),
            lag_bytes: Some(4096),
            lag_seconds: Some(0.4),
            slot: Some(SlotReport {
                name: "tributary".into(),
                wal_status: Some("reserved".into()),
                retained_bytes: Some(10 * MIB),
                safe_wal_bytes: Some(990 * MIB),
                max_keep_bytes: Some(1000 * MIB),
            }),
            ..Heartbeat::default()
        }
    }

    fn status_of(source_status: &str, heartbeat: Option<Heartbeat>) -> SourceHealth {
        derive_status(source_status, heartbeat.as_ref(), now()).status
    }

    #[test]
    fn a_fresh_heartbeat_that_keeps_up_is_connected() {
        let derived = derive_status("active", Some(&streaming()), now());
        assert_eq!(derived.status, SourceHealth::Connected);
        assert_eq!(derived.label, "Connected");
        assert_eq!(derived.reason, "streaming and keeping up");
    }

    #[test]
    fn no_heartbeat_is_never_connected_and_revoked_wins_over_everything() {
        assert_eq!(status_of("pending", None), SourceHealth::NeverConnected);
        assert_eq!(status_of("active", None), SourceHealth::NeverConnected);
        assert!(
            derive_status("pending", None, now())
                .reason
                .contains("not paired")
        );
        let mut lost = streaming();
        lost.slot.as_mut().unwrap().wal_status = Some("lost".into());
        assert_eq!(status_of("revoked", Some(lost)), SourceHealth::Revoked);
        assert_eq!(status_of("revoked", None), SourceHealth::Revoked);
    }

    #[test]
    fn a_paused_source_is_paused_whatever_its_heartbeat_says_but_revoked_wins() {
        let mut lost = streaming();
        lost.slot.as_mut().unwrap().wal_status = Some("lost".into());
        let mut silent = streaming();
        silent.reported_at = Some(now() - HEARTBEAT_STALE - Duration::seconds(1));
        let mut filling = streaming();
        filling.spool_bytes = 3 * MIB;
        filling.backpressure = true;
        for heartbeat in [None, Some(streaming()), Some(lost), Some(silent)] {
            assert_eq!(status_of("paused", heartbeat), SourceHealth::Paused);
        }
        let derived = derive_status("paused", Some(&filling), now());
        assert_eq!(derived.status, SourceHealth::Paused);
        assert_eq!(derived.label, "Paused");
        assert!(
            derived.reason.contains("3.0 MiB spooled"),
            "{}",
            derived.reason
        );
        assert_eq!(SourceHealth::Paused.as_str(), "paused");
        assert_eq!(SourceHealth::Paused.tone(), "idle");

        // The record's pause reads as `paused` unless the source is revoked.
        let mut source = Source {
            source_id: SourceId::new_random(),
            name: "orders".into(),
            kind: "postgres".into(),
            status: "active".into(),
            created_at: now(),
            agent: None,
            paused_at: Some(now()),
            paused_by: Some("user:someone".into()),
            pause_reason: None,
            resync_requested_at: None,
            rotate_requested_at: None,
            health: DerivedStatus::default(),
        };
        assert_eq!(source.effective_status(), "paused");
        source.derive_health(now());
        assert_eq!(source.health.status, SourceHealth::Paused);
        source.status = "revoked".into();
        assert_eq!(source.effective_status(), "revoked");
        source.derive_health(now());
        assert_eq!(source.health.status, SourceHealth::Revoked);
    }

    #[test]
    fn a_heartbeat_older_than_the_bound_is_disconnected() {
        let mut old = streaming();
        old.reported_at = Some(now() - HEARTBEAT_STALE - Duration::seconds(1));
        let derived = derive_status("active", Some(&old), now());
        assert_eq!(derived.status, SourceHealth::Disconnected);
        assert_eq!(
            derived.reason,
            "no heartbeat for 61 s (an agent reports every few seconds)"
        );
        let mut at_bound = streaming();
        at_bound.reported_at = Some(now() - HEARTBEAT_STALE);
        assert_eq!(status_of("active", Some(at_bound)), SourceHealth::Connected);
        let mut stopped = streaming();
        stopped.state = "stopped".into();
        assert_eq!(
            status_of("active", Some(stopped)),
            SourceHealth::Disconnected
        );
    }

    #[test]
    fn an_invalidated_slot_shows_as_such_even_after_the_agent_went_silent() {
        let mut lost = streaming();
        lost.slot.as_mut().unwrap().wal_status = Some("lost".into());
        assert_eq!(
            status_of("active", Some(lost)),
            SourceHealth::SlotInvalidated
        );
        // The agent stops on an invalidated slot, reporting the slot as it last saw it.
        let mut failed = streaming();
        failed.state = "failed".into();
        failed.reported_at = Some(now() - Duration::hours(2));
        failed.last_error = Some(
            "the replication slot \"tributary\" was invalidated by the source \
             (max_slot_wal_keep_size): the changes since ..."
                .into(),
        );
        assert_eq!(
            status_of("active", Some(failed.clone())),
            SourceHealth::SlotInvalidated
        );
        failed.last_error = Some("connection refused".into());
        failed.reported_at = Some(now());
        assert_eq!(status_of("active", Some(failed)), SourceHealth::Failed);
    }

    #[test]
    fn a_slot_near_its_limit_is_at_risk() {
        let mut unreserved = streaming();
        unreserved.slot.as_mut().unwrap().wal_status = Some("unreserved".into());
        assert_eq!(
            status_of("active", Some(unreserved)),
            SourceHealth::SlotAtRisk
        );
        let mut half = streaming();
        let slot = half.slot.as_mut().unwrap();
        slot.wal_status = Some("extended".into());
        slot.safe_wal_bytes = Some(499 * MIB);
        let derived = derive_status("active", Some(&half), now());
        assert_eq!(derived.status, SourceHealth::SlotAtRisk);
        assert!(derived.reason.contains("499.0 MiB"), "{}", derived.reason);
        // Unlimited keep size: never at risk of invalidation.
        let mut unlimited = streaming();
        let slot = unlimited.slot.as_mut().unwrap();
        slot.safe_wal_bytes = None;
        slot.max_keep_bytes = None;
        assert_eq!(
            status_of("active", Some(unlimited)),
            SourceHealth::Connected
        );
    }

    #[test]
    fn a_full_or_slow_spool_is_filling_and_long_waits_lag() {
        let mut full = streaming();
        full.backpressure = true;
        assert_eq!(status_of("active", Some(full)), SourceHealth::SpoolFilling);
        let mut slow = streaming();
        slow.spool_bytes = 300 * MIB;
        slow.drain_seconds = Some(SPOOL_DRAIN_BOUND_SECONDS + 1.0);
        assert_eq!(status_of("active", Some(slow)), SourceHealth::SpoolFilling);
        let mut waits = streaming();
        waits.lag_seconds = Some(LAG_SECONDS_BOUND + 1.0);
        let derived = derive_status("active", Some(&waits), now());
        assert_eq!(derived.status, SourceHealth::Lagging);
        assert!(derived.reason.contains("61 s"), "{}", derived.reason);
        let mut behind = streaming();
        behind.lag_bytes = Some(LAG_BYTES_BOUND + 1);
        assert_eq!(status_of("active", Some(behind)), SourceHealth::Lagging);
        let mut snapshot = streaming();
        snapshot.state = "snapshot".into();
        assert_eq!(
            derive_status("active", Some(&snapshot), now()).reason,
            "taking the initial snapshot"
        );
    }

    #[test]
    fn a_stored_heartbeat_reads_back() {
        let stored = serde_json::json!({
            "reported_at": "2026-12-06T02:59:58.5+00:00", "agent_version": "0.2.0",
            "state": "streaming", "lag_bytes": 10, "lag_seconds": 0.5, "spool_bytes": 0,
            "backpressure": false, "drain_seconds": null, "last_error": null, "warnings": ["w"],
            "slot": { "name": "s", "wal_status": "unreserved", "retained_bytes": 5,
                      "safe_wal_bytes": null, "max_keep_bytes": 100 },
        });
        let heartbeat = Heartbeat::from_stored(&stored).unwrap();
        assert_eq!(heartbeat.agent_version, "0.2.0");
        assert_eq!(heartbeat.warnings, ["w"]);
        assert_eq!(heartbeat.slot.as_ref().unwrap().retained_bytes, Some(5));
        assert_eq!(
            status_of("active", Some(heartbeat)),
            SourceHealth::SlotAtRisk
        );
        assert_eq!(Heartbeat::from_stored(&serde_json::Value::Null), None);
    }

    /// Retained WAL sampled every `every` minutes over the last `minutes`, growing `per_hour`.
    fn growing(minutes: i64, every: i64, start: i64, per_hour: i64) -> Vec<(OffsetDateTime, i64)> {
        (0..=minutes / every)
            .map(|step| {
                let ago = minutes - step * every;
                let at = now() - Duration::minutes(ago);
                (at, start + per_hour * (step * every) / 60)
            })
            .collect()
    }

    #[test]
    fn the_forecast_runs_the_fitted_growth_to_the_keep_size() {
        // 100 MiB/h from 200 MiB over the last 50 minutes: now 283.3 MiB, 1000 MiB allowed.
        let samples = growing(50, 10, 200 * MIB, 100 * MIB);
        let forecast = forecast_slot(&samples, Some(1000 * MIB), Some("reserved"), now());
        assert_eq!(forecast.kind, ForecastKind::Invalidation);
        let growth = forecast.growth_bytes_per_hour.unwrap();
        assert!((growth - (100 * MIB) as f64).abs() < 1.0, "{growth}");
        let hours = forecast.hours_until_invalidation.unwrap();
        let expected = (1000.0 - (200.0 + 100.0 * 50.0 / 60.0)) / 100.0;
        assert!((hours - expected).abs() < 0.001, "{hours} vs {expected}");
        assert_eq!(
            forecast.summary,
            "at the current growth of 100.0 MiB/h the slot would be invalidated in about 7.2 h \
             (when the retained WAL, now 283.3 MiB, reaches max_slot_wal_keep_size, 1000.0 MiB)"
        );
    }

    #[test]
    fn the_forecast_fits_the_last_hour_only_by_least_squares() {
        // Old samples (two hours ago) shrinking steeply must not count.
        let mut samples = vec![
            (now() - Duration::minutes(130), 900 * MIB),
            (now() - Duration::minutes(120), 100 * MIB),
        ];
        // A zig-zag around a 60 MiB/h line.
        for (minute, noise) in [(0, 5), (15, -5), (30, 5), (45, -5)] {
            let bytes = 100 * MIB + MIB * minute + noise * MIB;
            samples.push((now() - Duration::minutes(45 - minute), bytes));
        }
        let forecast = forecast_slot(&samples, Some(1024 * MIB), None, now());
        let growth = forecast.growth_bytes_per_hour.unwrap() / MIB as f64;
        // Least squares over x = 0, .25, .5, .75 h; y = 105, 110, 135, 140 MiB: slope 52 MiB/h.
        assert!((growth - 52.0).abs() < 1e-6, "{growth}");
        assert_eq!(forecast.retained_bytes, Some(140 * MIB));
    }

    #[test]
    fn the_forecast_says_why_it_cannot_tell() {
        let samples = growing(50, 10, 200 * MIB, 100 * MIB);
        let unbounded = forecast_slot(&samples, None, Some("reserved"), now());
        assert_eq!(unbounded.kind, ForecastKind::Unbounded);
        assert!(
            unbounded
                .summary
                .starts_with("never: max_slot_wal_keep_size is unlimited (-1)")
        );
        assert!(
            unbounded.summary.contains("grows 100.0 MiB/h"),
            "{}",
            unbounded.summary
        );
        assert_eq!(unbounded.hours_until_invalidation, None);

        let flat = growing(50, 10, 200 * MIB, 0);
        let not_growing = forecast_slot(&flat, Some(1000 * MIB), Some("reserved"), now());
        assert_eq!(not_growing.kind, ForecastKind::NotGrowing);
        assert_eq!(not_growing.growth_bytes_per_hour, Some(0.0));
        assert!(not_growing.summary.starts_with("never at the current rate"));

        let shrinking = growing(50, 10, 500 * MIB, -100 * MIB);
        assert_eq!(
            forecast_slot(&shrinking, Some(1000 * MIB), None, now()).kind,
            ForecastKind::NotGrowing
        );

        let short = growing(4, 1, 200 * MIB, 100 * MIB);
        let unknown = forecast_slot(&short, Some(1000 * MIB), None, now());
        assert_eq!(unknown.kind, ForecastKind::Unknown);
        assert!(unknown.summary.starts_with("not enough history yet"));
        assert_eq!(
            forecast_slot(&[], Some(1000 * MIB), None, now()).kind,
            ForecastKind::Unknown
        );

        let lost = forecast_slot(&samples, Some(1000 * MIB), Some("lost"), now());
        assert_eq!(lost.kind, ForecastKind::Invalidated);
    }

    #[test]
    fn a_slot_past_its_limit_is_invalidated_at_the_next_checkpoint() {
        let samples = growing(30, 10, 990 * MIB, 60 * MIB);
        let forecast = forecast_slot(&samples, Some(1000 * MIB), Some("unreserved"), now());
        assert_eq!(forecast.kind, ForecastKind::Invalidation);
        assert_eq!(forecast.hours_until_invalidation, Some(0.0));
        assert!(
            forecast.summary.contains("next checkpoint"),
            "{}",
            forecast.summary
        );
    }
}
