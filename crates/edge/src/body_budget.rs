//! The global byte budget request bodies are read under: a request reserves the bytes its body
//! may take before any of it is read, within both the whole edge's budget and its tenant's
//! share of it, and gives them back when it is answered. Many streams on many connections of
//! one tenant therefore wait (and are refused after a short wait) instead of growing memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use domain::TenantId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config;

/// Bytes of request bodies held at once, in total and per tenant.
#[derive(Debug)]
pub struct BodyBudget {
    total: Arc<Semaphore>,
    /// The most one reservation can take: the smaller of the total and a tenant's share.
    largest: usize,
    tenant_bytes: usize,
    wait: Duration,
    /// Each tenant's share; clients without a certificate share the `None` one.
    tenants: Mutex<HashMap<Option<TenantId>, Arc<Semaphore>>>,
}

/// Bytes reserved for one request's body, given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    _tenant: OwnedSemaphorePermit,
    _total: OwnedSemaphorePermit,
}

impl BodyBudget {
    pub fn new(config: &config::BodyBudget) -> Self {
        let total_bytes = config.total_bytes.clamp(1, Semaphore::MAX_PERMITS);
        let tenant_bytes = config.tenant_bytes.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            total: Arc::new(Semaphore::new(total_bytes)),
            largest: total_bytes.min(tenant_bytes).min(u32::MAX as usize),
            tenant_bytes,
            wait: config.wait,
            tenants: Mutex::new(HashMap::new()),
        }
    }

    fn tenant(&self, tenant: Option<TenantId>) -> Arc<Semaphore> {
        let mut tenants = self.tenants.lock().expect("body budget lock");
        tenants
            .entry(tenant)
            .or_insert_with(|| Arc::new(Semaphore::new(self.tenant_bytes)))
            .clone()
    }

    /// Reserves `bytes` (at most what one reservation can take) for `tenant`, waiting up to
    /// the configured wait; `None` when they could not be had in that time.
    pub async fn reserve(&self, tenant: Option<TenantId>, bytes: usize) -> Option<Reservation> {
        let bytes = u32::try_from(bytes.min(self.largest)).expect("largest fits in u32");
        let share = self.tenant(tenant);
        let total = self.total.clone();
        let reserve = async move {
            // The tenant's share first: a tenant over its share waits without holding any of
            // the total, which other tenants can still have.
            let tenant = share.acquire_many_owned(bytes).await.ok()?;
            let total = total.acquire_many_owned(bytes).await.ok()?;
            Some(Reservation {
                _tenant: tenant,
                _total: total,
            })
        };
        tokio::time::timeout(self.wait, reserve)
            .await
            .ok()
            .flatten()
    }

    /// Bytes of the total not reserved now.
    #[cfg(test)]
    fn available(&self) -> usize {
        self.total.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(total: usize, tenant: usize) -> BodyBudget {
        BodyBudget::new(&config::BodyBudget {
            total_bytes: total,
            tenant_bytes: tenant,
            wait: Duration::from_millis(50),
        })
    }

    #[tokio::test]
    async fn a_tenant_cannot_take_more_than_its_share() {
        let budget = budget(1000, 600);
        let acme = Some(TenantId::new_random());
        let other = Some(TenantId::new_random());
        let held = budget.reserve(acme, 500).await.expect("within the share");
        assert!(
            budget.reserve(acme, 200).await.is_none(),
            "over acme's share"
        );
        let others = budget
            .reserve(other, 400)
            .await
            .expect("the rest of the total");
        assert_eq!(budget.available(), 100);
        assert!(budget.reserve(None, 200).await.is_none(), "over the total");
        drop(held);
        drop(others);
        assert_eq!(budget.available(), 1000);
        budget.reserve(acme, 600).await.expect("given back");
    }

    #[tokio::test]
    async fn a_reservation_larger_than_a_share_takes_the_share() {
        let budget = budget(1000, 300);
        let held = budget.reserve(None, 5000).await.expect("clamped");
        assert_eq!(budget.available(), 700);
        drop(held);
    }
}
