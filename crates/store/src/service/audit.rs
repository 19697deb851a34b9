//! Verifying every tenant's audit chain from outside the database (service handle).

use domain::TenantId;
use uuid::Uuid;

use crate::audit::{ChainReport, verify_one};
use crate::{ServiceDb, StoreError};

/// Verifies the chain of one tenant, or of every tenant that has one. Runs as the pipeline's
/// service role, which reads every tenant's log; an operator tool, never a request path.
pub async fn verify(
    database: &ServiceDb,
    tenant: Option<TenantId>,
) -> Result<Vec<ChainReport>, StoreError> {
    let pool = database.pool();
    let tenants: Vec<Uuid> = match tenant {
        Some(tenant) => vec![*tenant.as_uuid()],
        None => {
            sqlx::query_scalar(
                "select tenant_id from audit.chain_head \
                 union select distinct tenant_id from audit.log order by 1",
            )
            .fetch_all(pool)
            .await?
        }
    };
    let mut reports = Vec::with_capacity(tenants.len());
    let mut connection = pool.acquire().await?;
    for tenant in tenants {
        reports.push(verify_one(&mut connection, TenantId::from_uuid(tenant)).await?);
    }
    Ok(reports)
}
