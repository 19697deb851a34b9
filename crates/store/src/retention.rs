//! Bronze retention: each tenant keeps its events for its own number of days; partitions that
//! no tenant needs any more are dropped whole.

use crate::audit::{self, AuditEntry};
use crate::{StoreError, TenantTx};

/// Days kept when no tenant exists to say otherwise.
pub(crate) const DEFAULT_DAYS: i32 = 30;

/// Sets the transaction's tenant's bronze retention (audited).
pub async fn set_days(tx: &mut TenantTx, days: i32) -> Result<(), StoreError> {
    if !(1..=3650).contains(&days) {
        return Err(StoreError::Invalid(
            "retention is between 1 and 3650 days".into(),
        ));
    }
    let tenant = tx
        .tenant()
        .ok_or(StoreError::Forbidden("retention needs a tenant scope"))?;
    let previous: Option<i32> = sqlx::query_scalar(
        "update control.tenant_settings set bronze_retention_days = $2, updated_at = now() \
         where tenant_id = $1 returning (select bronze_retention_days from control.tenant_settings \
                                         where tenant_id = $1)",
    )
    .bind(tenant.as_uuid())
    .bind(days)
    .fetch_optional(tx.connection())
    .await?;
    let Some(previous) = previous else {
        return Err(StoreError::NotFound("tenant"));
    };
    audit::append(
        tx,
        AuditEntry::new("retention.set", tenant.to_string())
            .details(serde_json::json!({ "bronze_days": days, "previous_bronze_days": previous })),
    )
    .await
}

/// The transaction's tenant's bronze retention, in days.
pub async fn days(tx: &mut TenantTx) -> Result<i32, StoreError> {
    let tenant = tx
        .tenant()
        .ok_or(StoreError::Forbidden("retention needs a tenant scope"))?;
    sqlx::query_scalar(
        "select bronze_retention_days from control.tenant_settings where tenant_id = $1",
    )
    .bind(tenant.as_uuid())
    .fetch_optional(tx.connection())
    .await?
    .ok_or(StoreError::NotFound("tenant"))
}
