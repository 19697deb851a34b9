//! A tenant's masking rules as the edge loads them (service handle).

use domain::TenantId;

use crate::masking::{MaskingRule, rule_of};
use crate::{ServiceDb, StoreError};

/// A tenant's masking rules as the edge applies them (the service role, outside any request).
pub async fn rules_for_edge(
    database: &ServiceDb,
    tenant: TenantId,
) -> Result<Vec<MaskingRule>, StoreError> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "select source_table, field_path, action from control.pii_masking_policy \
         where tenant_id = $1",
    )
    .bind(tenant.as_uuid())
    .fetch_all(database.pool())
    .await?;
    Ok(rows.into_iter().map(rule_of).collect())
}
