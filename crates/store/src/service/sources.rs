//! What the edge reads and keeps about sources outside any request: a certificate's access, the stored CA, tenants' masking secrets (service handle).

use domain::{SourceId, TenantId};

use crate::sources::{SourceAccess, StoredCertificateAuthority};
use crate::{ServiceDb, StoreError};

/// Whether `serial` of `source` of `tenant` may send: the tenant is active, the source is
/// active and the certificate is known and not revoked; and whether the source's ingestion is
/// paused (one primary-key row, read with the rest).
pub async fn source_access(
    database: &ServiceDb,
    tenant: TenantId,
    source: SourceId,
    serial: &str,
) -> Result<SourceAccess, StoreError> {
    let access: Option<(bool, bool)> = sqlx::query_as(
        "select d.status = 'active' and s.status = 'active' and c.revoked_at is null, \
                s.paused_at is not null \
         from control.certificates c \
         join control.sources s on s.tenant_id = c.tenant_id and s.source_id = c.source_id \
         join control.dim_tenant d on d.tenant_id = c.tenant_id \
         where c.tenant_id = $1 and c.serial = $2 and c.source_id = $3",
    )
    .bind(tenant.as_uuid())
    .bind(serial)
    .bind(source.as_uuid())
    .fetch_optional(database.pool())
    .await?;
    let (allowed, paused) = access.unwrap_or((false, false));
    Ok(SourceAccess { allowed, paused })
}

pub async fn load_certificate_authority(
    database: &ServiceDb,
) -> Result<Option<StoredCertificateAuthority>, StoreError> {
    let authority: Option<StoredCertificateAuthority> = sqlx::query_as(
        "select certificate_pem, key_ciphertext, key_nonce from control.certificate_authority \
         where ca_id = 'internal'",
    )
    .fetch_optional(database.pool())
    .await?;
    Ok(authority)
}

/// Stores the CA unless another process stored one first; returns whether this one was kept.
pub async fn store_certificate_authority(
    database: &ServiceDb,
    authority: &StoredCertificateAuthority,
) -> Result<bool, StoreError> {
    let inserted = sqlx::query(
        "insert into control.certificate_authority (ca_id, certificate_pem, key_ciphertext, \
         key_nonce) values ('internal', $1, $2, $3) on conflict (ca_id) do nothing",
    )
    .bind(&authority.certificate_pem)
    .bind(&authority.key_ciphertext)
    .bind(&authority.key_nonce)
    .execute(database.pool())
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// A tenant's encrypted masking secret: (ciphertext, nonce).
pub async fn tenant_masking_secret(
    database: &ServiceDb,
    tenant: TenantId,
) -> Result<Option<(Vec<u8>, Vec<u8>)>, StoreError> {
    Ok(sqlx::query_as(
        "select masking_key_ciphertext, masking_key_nonce from control.tenant_secrets \
         where tenant_id = $1",
    )
    .bind(tenant.as_uuid())
    .fetch_optional(database.pool())
    .await?)
}

/// Stores a tenant's masking secret unless one exists already.
pub async fn store_tenant_masking_secret(
    database: &ServiceDb,
    tenant: TenantId,
    ciphertext: &[u8],
    nonce: &[u8],
) -> Result<(), StoreError> {
    sqlx::query(
        "insert into control.tenant_secrets (tenant_id, masking_key_ciphertext, masking_key_nonce) \
         values ($1, $2, $3) on conflict (tenant_id) do nothing",
    )
    .bind(tenant.as_uuid())
    .bind(ciphertext)
    .bind(nonce)
    .execute(database.pool())
    .await?;
    Ok(())
}
