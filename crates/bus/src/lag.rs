//! Consumer lag, watched: how far the pipeline's consumer groups are behind on each partition,
//! looked at every second, shown as `/metrics` gauges and read by the edge, which refuses new
//! batches of a partition whose consumers are too far behind (backpressure) rather than letting
//! the lag grow without limit (docs/bus.md, "Lag and backpressure").

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::Bus;

/// The gauge of each group's lag on each partition.
pub const LAG_GAUGE: &str = "tributary_bus_consumer_lag_messages";

/// The latest look at the lag of some consumer groups. Cheap to clone; the task that keeps it
/// current ends when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct LagWatch {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// Per partition, the most any watched group is behind on it.
    behind: Vec<AtomicU64>,
    /// Whether a look has succeeded yet (before the first, nothing is known to be behind).
    looked: AtomicBool,
}

impl LagWatch {
    /// Starts looking at `groups`' lag on `bus` every `interval`: the first look at once.
    pub fn spawn<B>(bus: B, groups: Vec<String>, interval: Duration) -> Self
    where
        B: Bus + 'static,
    {
        let shared = Arc::new(Shared {
            behind: (0..bus.partitions()).map(|_| AtomicU64::new(0)).collect(),
            looked: AtomicBool::new(false),
        });
        tokio::spawn(watch(bus, groups, interval, Arc::downgrade(&shared)));
        Self { shared }
    }

    /// The most any watched group was behind on `partition` at the last look (0 before it).
    pub fn behind(&self, partition: u32) -> u64 {
        self.shared
            .behind
            .get(partition as usize)
            .map_or(0, |behind| behind.load(Ordering::Relaxed))
    }

    /// Whether the watch has looked at least once.
    pub fn has_looked(&self) -> bool {
        self.shared.looked.load(Ordering::Relaxed)
    }
}

async fn watch<B: Bus>(bus: B, groups: Vec<String>, interval: Duration, shared: Weak<Shared>) {
    let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        match bus.lag(&groups).await {
            Ok(lags) => {
                let mut most = vec![0u64; shared.behind.len()];
                for lag in &lags {
                    metrics::gauge!(LAG_GAUGE, "group" => lag.group.clone(),
                        "partition" => lag.partition.to_string())
                    .set(lag.behind as f64);
                    if let Some(most) = most.get_mut(lag.partition as usize) {
                        *most = (*most).max(lag.behind);
                    }
                }
                for (slot, value) in shared.behind.iter().zip(most) {
                    slot.store(value, Ordering::Relaxed);
                }
                shared.looked.store(true, Ordering::Relaxed);
            }
            // The last look stands; a bus that cannot be asked cannot be published to either.
            Err(error) => tracing::warn!(%error, "looking at the bus's consumer lag failed"),
        }
    }
}
