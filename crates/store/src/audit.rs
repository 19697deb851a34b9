//! The audit log: appending an entry inside the action's own transaction, and verifying every
//! tenant's hash chain from outside the database.
//!
//! The database links each entry (trigger `audit.link_entry`, migration 0005); this module
//! recomputes every link with its own SHA-256 over the same canonical encoding, so a change made
//! with triggers disabled is still found.

use std::net::IpAddr;

use domain::TenantId;
use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::{StoreError, TenantTx};

/// One audited action.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    /// Dotted lower-case verb, e.g. `member.add`.
    pub action: &'static str,
    /// What the action was applied to, e.g. a user or source id. Never a customer's data value.
    pub target: String,
    /// Structured detail. Never a secret or a customer's data value.
    pub details: serde_json::Value,
    pub client_addr: Option<IpAddr>,
}

/// The longest target the log keeps (its column's check); a longer one, such as a masking rule's
/// table and field path, is cut to this many characters, and the whole name stays in `details`.
pub const TARGET_MAX_CHARS: usize = 500;

impl AuditEntry {
    pub fn new(action: &'static str, target: impl Into<String>) -> Self {
        let mut target = target.into();
        if let Some((cut, _)) = target.char_indices().nth(TARGET_MAX_CHARS) {
            target.truncate(cut);
        }
        Self {
            action,
            target,
            details: serde_json::json!({}),
            client_addr: None,
        }
    }

    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    pub fn client_addr(mut self, client_addr: Option<IpAddr>) -> Self {
        self.client_addr = client_addr;
        self
    }
}

/// Appends `entry` to the chain of the transaction's tenant; it commits or rolls back with the
/// action it records.
pub async fn append(tx: &mut TenantTx, entry: AuditEntry) -> Result<(), StoreError> {
    let tenant = tx.tenant().ok_or(StoreError::Forbidden(
        "an audited action needs a tenant scope",
    ))?;
    let actor = tx.actor().clone();
    sqlx::query(
        "insert into audit.log (tenant_id, actor_type, actor_id, action, target, details, \
                                client_addr) \
         values ($1, $2, $3, $4, $5, $6, $7::inet)",
    )
    .bind(tenant.as_uuid())
    .bind(actor.kind())
    .bind(actor.id())
    .bind(entry.action)
    .bind(&entry.target)
    .bind(&entry.details)
    .bind(entry.client_addr.map(|addr| addr.to_string()))
    .execute(tx.connection())
    .await?;
    Ok(())
}

/// An entry as listed to people.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AuditRecord {
    pub seq: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    pub actor_type: String,
    pub actor_id: String,
    pub action: String,
    pub target: String,
    pub details: serde_json::Value,
    pub client_addr: Option<String>,
}

/// The transaction's tenant's entries, newest first, at most `limit`.
pub async fn list(tx: &mut TenantTx, limit: i64) -> Result<Vec<AuditRecord>, StoreError> {
    Ok(sqlx::query_as(
        "select seq, occurred_at, actor_type, actor_id, action, target, details, \
                client_addr::text as client_addr \
         from audit.log order by tenant_id, seq desc limit $1",
    )
    .bind(limit.clamp(1, 10_000))
    .fetch_all(tx.connection())
    .await?)
}

/// Which entries [`search`] returns; every field narrows, `None` does not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Actions starting with this text, e.g. `member.`.
    pub action_prefix: Option<String>,
    /// `user`, `cli`, `system`, `agent` or `api_token`.
    pub actor_type: Option<String>,
    /// Only entries before this sequence number (the next page, newest first).
    pub before_seq: Option<i64>,
}

/// The transaction's tenant's entries matching `filter`, newest first, at most `limit`.
pub async fn search(
    tx: &mut TenantTx,
    filter: &AuditFilter,
    limit: i64,
) -> Result<Vec<AuditRecord>, StoreError> {
    let tenant = tx.tenant().ok_or(StoreError::Forbidden(
        "reading an audit log needs a tenant scope",
    ))?;
    Ok(sqlx::query_as(
        "select seq, occurred_at, actor_type, actor_id, action, target, details, \
                client_addr::text as client_addr \
         from audit.log \
         where tenant_id = $1 \
           and ($2::text is null or starts_with(action, $2)) \
           and ($3::text is null or actor_type = $3) \
           and ($4::bigint is null or seq < $4) \
         order by tenant_id, seq desc limit $5",
    )
    .bind(tenant.as_uuid())
    .bind(filter.action_prefix.as_deref())
    .bind(filter.actor_type.as_deref())
    .bind(filter.before_seq)
    .bind(limit.clamp(1, 10_000))
    .fetch_all(tx.connection())
    .await?)
}

/// How a member of internal operations staff read a tenant's audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaffReadView {
    /// The console's audit page, `/app/tenants/{tenant}/audit`.
    Page,
    /// The console's CSV export.
    Csv,
    /// The operations API, `/api/v1/ops/tenants/{tenant}/audit`.
    Api,
}

impl StaffReadView {
    fn name(self) -> &'static str {
        match self {
            StaffReadView::Page => "page",
            StaffReadView::Csv => "csv",
            StaffReadView::Api => "api",
        }
    }
}

/// Records, in the chain of the transaction's tenant and nowhere else, that internal operations
/// staff read that tenant's log: who (the transaction's actor), through which view, with which
/// filter and at most how many entries (`None`: all, a streamed export). The entry commits with
/// the read's transaction (an export commits it before streaming); a tenant
/// that does not exist is `NotFound` and nothing is written. The only entry a staff read adds.
pub async fn record_staff_read(
    tx: &mut TenantTx,
    view: StaffReadView,
    filter: &AuditFilter,
    limit: Option<i64>,
) -> Result<(), StoreError> {
    let tenant = tx.tenant().ok_or(StoreError::Forbidden(
        "recording a staff read needs a tenant scope",
    ))?;
    let exists: bool =
        sqlx::query_scalar("select exists (select 1 from control.dim_tenant where tenant_id = $1)")
            .bind(tenant.as_uuid())
            .fetch_one(tx.connection())
            .await?;
    if !exists {
        return Err(StoreError::NotFound("tenant"));
    }
    append(
        tx,
        AuditEntry::new("audit.read_by_staff", "audit.log").details(serde_json::json!({
            "view": view.name(),
            "action_prefix": filter.action_prefix,
            "actor_type": filter.actor_type,
            "before_seq": filter.before_seq,
            "limit": limit,
        })),
    )
    .await
}

/// The first broken link found in a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChainBreak {
    /// An entry is missing or out of place: sequence numbers must run 1, 2, 3, ...
    Sequence { expected: i64, found: i64 },
    /// The entry does not point at the hash of the entry before it.
    PrevHash { seq: i64 },
    /// The entry's content does not match its hash: it was edited.
    Hash { seq: i64 },
    /// The chain's recorded end differs from its last entry: entries were removed from or added
    /// to its end.
    Head { recorded_seq: i64, last_seq: i64 },
}

/// The verdict on one tenant's chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    pub tenant: TenantId,
    pub entries: u64,
    pub first_break: Option<ChainBreak>,
}

impl ChainReport {
    pub fn is_intact(&self) -> bool {
        self.first_break.is_none()
    }
}

/// Verifies the chain of the transaction's tenant from inside the request path: the same checks
/// as [`verify`], reading only what the transaction's role may read (the audit log's readers).
pub async fn verify_tenant(tx: &mut TenantTx) -> Result<ChainReport, StoreError> {
    let tenant = tx.tenant().ok_or(StoreError::Forbidden(
        "verifying a chain needs a tenant scope",
    ))?;
    verify_one(tx.connection(), tenant).await
}

/// An entry as the chain hashes it: every field as text, the address `''` when there is none.
#[derive(sqlx::FromRow)]
struct ChainLink {
    seq: i64,
    occurred_at: OffsetDateTime,
    actor_type: String,
    actor_id: String,
    action: String,
    target: String,
    details: String,
    client_addr: String,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
}

pub(crate) async fn verify_one(
    connection: &mut sqlx::PgConnection,
    tenant: TenantId,
) -> Result<ChainReport, StoreError> {
    use futures_util::TryStreamExt;

    let mut rows = sqlx::query_as::<_, ChainLink>(
        "select seq, occurred_at, actor_type, actor_id, action, target, details::text as details, \
                coalesce(client_addr::text, '') as client_addr, prev_hash, hash \
         from audit.log where tenant_id = $1 order by seq",
    )
    .bind(tenant.as_uuid())
    .fetch(&mut *connection);

    let mut entries = 0u64;
    let mut last_seq = 0i64;
    let mut last_hash = vec![0u8; 32];
    let mut first_break = None;
    while let Some(link) = rows.try_next().await? {
        entries += 1;
        if first_break.is_some() {
            continue;
        }
        let ChainLink {
            seq,
            occurred_at,
            actor_type,
            actor_id,
            action,
            target,
            details,
            client_addr,
            prev_hash,
            hash,
        } = link;
        if seq != last_seq + 1 {
            first_break = Some(ChainBreak::Sequence {
                expected: last_seq + 1,
                found: seq,
            });
            continue;
        }
        if prev_hash != last_hash {
            first_break = Some(ChainBreak::PrevHash { seq });
            continue;
        }
        let micros = occurred_at.unix_timestamp_nanos() / 1_000;
        let fields = [
            "tributary-audit-v1".to_owned(),
            tenant.to_string(),
            seq.to_string(),
            micros.to_string(),
            actor_type,
            actor_id,
            action,
            target,
            details,
            client_addr,
        ];
        if link_hash(&last_hash, &fields) != hash {
            first_break = Some(ChainBreak::Hash { seq });
            continue;
        }
        last_seq = seq;
        last_hash = hash;
    }
    drop(rows);

    if first_break.is_none() {
        let head: Option<(i64, Vec<u8>)> =
            sqlx::query_as("select seq, hash from audit.chain_head where tenant_id = $1")
                .bind(tenant.as_uuid())
                .fetch_optional(&mut *connection)
                .await?;
        let (recorded_seq, recorded_hash) = head.unwrap_or((0, vec![0u8; 32]));
        if recorded_seq != last_seq || recorded_hash != last_hash {
            first_break = Some(ChainBreak::Head {
                recorded_seq,
                last_seq,
            });
        }
    }
    Ok(ChainReport {
        tenant,
        entries,
        first_break,
    })
}

/// `sha256(prev_hash || canonical(fields))`, where the canonical encoding writes each field as
/// `<byte length>:<text>\n` (the same as SQL function `audit.canonical`).
fn link_hash(prev_hash: &[u8], fields: &[String]) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash);
    for field in fields {
        hasher.update(field.len().to_string().as_bytes());
        hasher.update(b":");
        hasher.update(field.as_bytes());
        hasher.update(b"\n");
    }
    hasher.finalize().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_cannot_bleed_into_each_other() {
        let zero = [0u8; 32];
        let a = link_hash(&zero, &["ab".into(), "c".into()]);
        let b = link_hash(&zero, &["a".into(), "bc".into()]);
        let c = link_hash(&zero, &["a\n1:b".into()]);
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn a_long_target_is_cut_to_what_the_log_keeps_on_a_character_boundary() {
        let entry = AuditEntry::new("masking.rule.add", format!("*/{}", "é".repeat(600)));
        assert_eq!(entry.target.chars().count(), TARGET_MAX_CHARS);
        assert!(entry.target.starts_with("*/é"));
        let short = AuditEntry::new("member.add", "a");
        assert_eq!(short.target, "a");
    }
}
