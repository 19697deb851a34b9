//! The global aggregator: a scheduled job over the tenants' metric rollups, not a bus consumer.
//! The materializer queues every (metric key, minute) whose `metrics_min` changed, in the
//! transaction that changes it; each round takes queued pairs and recomputes just those minutes
//! (from `metrics_min`) and their hours (from `metrics_hour`) across tenants, through indexes
//! leading on (key, bucket), for allowlisted keys only, broken down by plan, industry and region.
//! Work is proportional to what changed, never to the tables' size. Recomputing a changed bucket
//! (rather than adding a delta to it) keeps it exact whatever happened: late readings, duplicates,
//! rebuilds, allowlist changes, and the distinct tenant count a delta cannot carry.
//! docs/materializer.md.

use std::future::Future;
use std::time::Duration;

use store::ServiceDb;
use store::service::rollups::RoundOutcome;

/// How the aggregator is scheduled.
#[derive(Debug, Clone)]
pub struct AggregatorConfig {
    /// Pause between rounds when the queue is empty. It bounds how long a changed minute waits
    /// for its rollup; a round that finds the queue empty costs a few statements that write
    /// nothing, so four a second are cheap, and the rollups are visible well within a second
    /// of the materializer's commit (docs/benchmarks.md).
    pub interval: Duration,
    /// (key, minute) pairs per round.
    pub batch: i64,
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(250),
            batch: 5000,
        }
    }
}

/// Rounds until the queue is empty; returns their sum.
pub async fn run_once(database: &ServiceDb, batch: i64) -> Result<RoundOutcome, store::StoreError> {
    let mut total = RoundOutcome::default();
    loop {
        let round = store::service::rollups::aggregate_round(database, batch).await?;
        total.minutes += round.minutes;
        total.purged += round.purged;
        total.backfilled += round.backfilled;
        metrics::counter!("tributary_aggregator_minutes_total").increment(round.minutes);
        if round.minutes < batch.unsigned_abs() && round.backfilled == 0 {
            return Ok(total);
        }
    }
}

/// Runs rounds until `shutdown`, pausing `interval` once the queue is empty. A failed round is retried at the next tick:
/// the queue keeps what it did not commit.
pub async fn run(
    database: ServiceDb,
    config: AggregatorConfig,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        if let Err(error) = run_once(&database, config.batch).await {
            tracing::warn!(%error, "an aggregation round failed; retrying at the next tick");
        }
        tokio::select! {
            _ = tokio::time::sleep(config.interval) => {}
            _ = &mut shutdown => return,
        }
    }
}
