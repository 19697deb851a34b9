//! A tenant's PII masking rules (`control.pii_masking_policy`): what the edge loads and applies,
//! what owners and admins list, add, change and remove (each change audited in the same
//! transaction), and the recent bronze event the web app's preview starts from.
//!
//! This module stores rules as text; parsing them (paths, actions, table scopes) is the masking
//! engine's (`protocol::masking`), which the callers run before saving.

use serde::Serialize;

use crate::audit::{self, AuditEntry};
use crate::{StoreError, TenantTx};
use domain::TenantId;

/// One masking rule: on `source_table` (`*` for every table), do `action` to what `field_path`
/// reaches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MaskingRule {
    pub source_table: String,
    pub field_path: String,
    pub action: String,
}

impl MaskingRule {
    /// A rule for every table.
    pub fn every_table(field_path: &str, action: &str) -> Self {
        Self {
            source_table: "*".into(),
            field_path: field_path.into(),
            action: action.into(),
        }
    }

    /// What the audit log names the rule by.
    fn audit_target(&self) -> String {
        format!("{}/{}", self.source_table, self.field_path)
    }

    fn audit_details(&self) -> serde_json::Value {
        serde_json::json!({
            "source_table": self.source_table,
            "field_path": self.field_path,
            "action": self.action,
        })
    }
}

const DUPLICATE: &str = "a masking rule for this table and path";

pub(crate) fn rule_of((source_table, field_path, action): (String, String, String)) -> MaskingRule {
    MaskingRule {
        source_table,
        field_path,
        action,
    }
}

/// The transaction's tenant's rules, by table and path.
pub async fn list(tx: &mut TenantTx) -> Result<Vec<MaskingRule>, StoreError> {
    let tenant = require_tenant(tx)?;
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "select source_table, field_path, action from control.pii_masking_policy \
         where tenant_id = $1 order by tenant_id, source_table, field_path",
    )
    .bind(tenant.as_uuid())
    .fetch_all(tx.connection())
    .await?;
    Ok(rows.into_iter().map(rule_of).collect())
}

/// Adds a rule (audited `masking.create`); a rule for the same table and path is a conflict.
pub async fn create(tx: &mut TenantTx, rule: &MaskingRule) -> Result<(), StoreError> {
    let tenant = require_tenant(tx)?;
    let inserted = sqlx::query(
        "insert into control.pii_masking_policy (tenant_id, source_table, field_path, action) \
         values ($1, $2, $3, $4) on conflict (tenant_id, source_table, field_path) do nothing",
    )
    .bind(tenant.as_uuid())
    .bind(&rule.source_table)
    .bind(&rule.field_path)
    .bind(&rule.action)
    .execute(tx.connection())
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(StoreError::AlreadyExists(DUPLICATE));
    }
    audit::append(
        tx,
        AuditEntry::new("masking.create", rule.audit_target()).details(rule.audit_details()),
    )
    .await
}

/// Replaces the rule for (`source_table`, `field_path`) with `rule`, which may name another
/// table or path (audited `masking.update`, with both versions).
pub async fn update(
    tx: &mut TenantTx,
    source_table: &str,
    field_path: &str,
    rule: &MaskingRule,
) -> Result<(), StoreError> {
    let tenant = require_tenant(tx)?;
    let previous: Option<String> = sqlx::query_scalar(
        "select action from control.pii_masking_policy \
         where tenant_id = $1 and source_table = $2 and field_path = $3 for update",
    )
    .bind(tenant.as_uuid())
    .bind(source_table)
    .bind(field_path)
    .fetch_optional(tx.connection())
    .await?;
    let Some(previous_action) = previous else {
        return Err(StoreError::NotFound("masking rule"));
    };
    let moved = rule.source_table != source_table || rule.field_path != field_path;
    if moved {
        let taken: bool = sqlx::query_scalar(
            "select exists (select 1 from control.pii_masking_policy \
             where tenant_id = $1 and source_table = $2 and field_path = $3)",
        )
        .bind(tenant.as_uuid())
        .bind(&rule.source_table)
        .bind(&rule.field_path)
        .fetch_one(tx.connection())
        .await?;
        if taken {
            return Err(StoreError::AlreadyExists(DUPLICATE));
        }
    }
    sqlx::query(
        "update control.pii_masking_policy \
         set source_table = $4, field_path = $5, action = $6, updated_at = now() \
         where tenant_id = $1 and source_table = $2 and field_path = $3",
    )
    .bind(tenant.as_uuid())
    .bind(source_table)
    .bind(field_path)
    .bind(&rule.source_table)
    .bind(&rule.field_path)
    .bind(&rule.action)
    .execute(tx.connection())
    .await?;
    let before = MaskingRule {
        source_table: source_table.to_owned(),
        field_path: field_path.to_owned(),
        action: previous_action,
    };
    audit::append(
        tx,
        AuditEntry::new("masking.update", rule.audit_target()).details(serde_json::json!({
            "from": before.audit_details(),
            "to": rule.audit_details(),
        })),
    )
    .await
}

/// Removes the rule for (`source_table`, `field_path`) (audited `masking.remove`).
pub async fn remove(
    tx: &mut TenantTx,
    source_table: &str,
    field_path: &str,
) -> Result<(), StoreError> {
    let tenant = require_tenant(tx)?;
    let removed: Option<String> = sqlx::query_scalar(
        "delete from control.pii_masking_policy \
         where tenant_id = $1 and source_table = $2 and field_path = $3 returning action",
    )
    .bind(tenant.as_uuid())
    .bind(source_table)
    .bind(field_path)
    .fetch_optional(tx.connection())
    .await?;
    let Some(action) = removed else {
        return Err(StoreError::NotFound("masking rule"));
    };
    let rule = MaskingRule {
        source_table: source_table.to_owned(),
        field_path: field_path.to_owned(),
        action,
    };
    audit::append(
        tx,
        AuditEntry::new("masking.remove", rule.audit_target()).details(rule.audit_details()),
    )
    .await
}

/// A recent event from bronze: its table and its stored row images (already masked by the
/// rules in force when it arrived).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct BronzeSample {
    pub schema_name: String,
    pub table_name: String,
    /// `{"key": .., "after": .., "before": ..}` as bronze keeps it (its exact text when kept).
    pub payload: serde_json::Value,
}

/// How far back [`latest_bronze_sample`] looks, from the nearest window out: bronze has no index
/// on time alone, so a narrow window first keeps the common case (a source that is streaming)
/// to the newest partition.
const SAMPLE_WINDOWS: [&str; 2] = ["1 hour", "7 days"];

/// The tenant's most recent bronze event, of `table` (`schema.table`, or `table` in any
/// schema) if given, within the last seven days. Needs a role that reads bronze.
pub async fn latest_bronze_sample(
    tx: &mut TenantTx,
    table: Option<&str>,
) -> Result<Option<BronzeSample>, StoreError> {
    let tenant = require_tenant(tx)?;
    for window in SAMPLE_WINDOWS {
        let sample = sqlx::query_as(
            "select schema_name, table_name, coalesce(payload_exact, payload::json) as payload \
             from bronze.cdc_events \
             where tenant_id = $1 and event_time > now() - $2::interval \
               and ($3::text is null or table_name = $3 or schema_name || '.' || table_name = $3) \
             order by event_time desc, lsn desc, seq desc limit 1",
        )
        .bind(tenant.as_uuid())
        .bind(window)
        .bind(table)
        .fetch_optional(tx.connection())
        .await?;
        if sample.is_some() {
            return Ok(sample);
        }
    }
    Ok(None)
}

fn require_tenant(tx: &TenantTx) -> Result<TenantId, StoreError> {
    tx.tenant()
        .ok_or(StoreError::Forbidden("this needs a tenant scope"))
}
