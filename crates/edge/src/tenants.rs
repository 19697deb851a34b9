//! Short-lived caches of what the edge looks up on every request: whether a certificate may
//! still send, and each tenant's masking policy and secret. Entries live `cache_ttl`, so a
//! revocation or a policy change takes effect within it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::TenantId;
use protocol::masking::{MaskRule, MaskingPolicy};
use store::ServiceDb;
use store::sources::SourceAccess;
use tokio::sync::RwLock;

use crate::identity::ClientIdentity;
use crate::secret_box::SecretBox;

/// A tenant's masking policy and HMAC secret.
#[derive(Debug)]
pub struct TenantMasking {
    pub policy: MaskingPolicy,
    pub secret: Vec<u8>,
}

#[derive(Debug)]
pub struct TenantCaches {
    database: ServiceDb,
    secrets: SecretBox,
    ttl: Duration,
    access: RwLock<HashMap<ClientIdentity, (Instant, SourceAccess)>>,
    masking: RwLock<HashMap<TenantId, (Instant, Arc<TenantMasking>)>>,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Secret(#[from] crate::secret_box::SecretBoxError),
    #[error("a stored masking rule is invalid")]
    InvalidRule,
}

impl TenantCaches {
    pub fn new(database: ServiceDb, secrets: SecretBox, ttl: Duration) -> Self {
        Self {
            database,
            secrets,
            ttl,
            access: RwLock::new(HashMap::new()),
            masking: RwLock::new(HashMap::new()),
        }
    }

    /// Whether the certificate may still be used: tenant active, source active, certificate
    /// known and not revoked.
    pub async fn allowed(&self, identity: &ClientIdentity) -> Result<bool, CacheError> {
        Ok(self.access(identity).await?.allowed)
    }

    /// [`TenantCaches::allowed`] and whether the source's ingestion is paused, from the same
    /// cached lookup (one primary-key read per certificate and `cache_ttl`).
    pub async fn access(&self, identity: &ClientIdentity) -> Result<SourceAccess, CacheError> {
        if let Some((at, access)) = self.access.read().await.get(identity)
            && at.elapsed() < self.ttl
        {
            return Ok(*access);
        }
        let found = store::service::sources::source_access(
            &self.database,
            identity.tenant,
            identity.source,
            &identity.serial,
        )
        .await?;
        let mut access = self.access.write().await;
        if access.len() > 100_000 {
            access.clear();
        }
        access.insert(identity.clone(), (Instant::now(), found));
        Ok(found)
    }

    pub async fn masking(&self, tenant: TenantId) -> Result<Arc<TenantMasking>, CacheError> {
        if let Some((at, masking)) = self.masking.read().await.get(&tenant)
            && at.elapsed() < self.ttl
        {
            return Ok(masking.clone());
        }
        let rules = store::service::masking::rules_for_edge(&self.database, tenant).await?;
        let mut parsed = Vec::with_capacity(rules.len());
        for rule in rules {
            parsed.push(MaskRule {
                table: rule
                    .source_table
                    .parse()
                    .map_err(|_| CacheError::InvalidRule)?,
                path: rule
                    .field_path
                    .parse()
                    .map_err(|_| CacheError::InvalidRule)?,
                action: rule.action.parse().map_err(|_| CacheError::InvalidRule)?,
            });
        }
        let masking = Arc::new(TenantMasking {
            policy: MaskingPolicy::new(parsed),
            secret: self.tenant_secret(tenant).await?,
        });
        let mut cache = self.masking.write().await;
        if cache.len() > 100_000 {
            cache.clear();
        }
        cache.insert(tenant, (Instant::now(), masking.clone()));
        Ok(masking)
    }

    /// The tenant's HMAC secret, created on first use.
    async fn tenant_secret(&self, tenant: TenantId) -> Result<Vec<u8>, CacheError> {
        if let Some((ciphertext, nonce)) =
            store::service::sources::tenant_masking_secret(&self.database, tenant).await?
        {
            return Ok(self.secrets.open(&ciphertext, &nonce)?);
        }
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).expect("the operating system's random source is available");
        let (ciphertext, nonce) = self.secrets.seal(&secret);
        store::service::sources::store_tenant_masking_secret(
            &self.database,
            tenant,
            &ciphertext,
            &nonce,
        )
        .await?;
        // Another edge may have stored its own first: read back whichever won.
        let (ciphertext, nonce) =
            store::service::sources::tenant_masking_secret(&self.database, tenant)
                .await?
                .ok_or(CacheError::Store(store::StoreError::NotFound(
                    "tenant secret",
                )))?;
        Ok(self.secrets.open(&ciphertext, &nonce)?)
    }
}
