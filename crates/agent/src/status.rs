//! What the agent is doing, kept current by its tasks: written to `status.json` in the state
//! directory (for `tributary-agent status`), served on the optional loopback health port, and
//! sent to the platform as a heartbeat.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use protocol::{AgentStatus, SlotHealth};

/// The shared, current status, and the rate the edge acknowledges spooled bytes at.
#[derive(Debug, Clone, Default)]
pub struct StatusCell {
    status: Arc<Mutex<AgentStatus>>,
    rate: Arc<Mutex<SendRate>>,
}

impl StatusCell {
    pub fn new(source_kind: &str) -> Self {
        Self {
            status: Arc::new(Mutex::new(AgentStatus {
                agent_version: env!("CARGO_PKG_VERSION").to_owned(),
                source_kind: source_kind.to_owned(),
                state: "starting".to_owned(),
                ..AgentStatus::default()
            })),
            rate: Arc::default(),
        }
    }

    pub fn update(&self, change: impl FnOnce(&mut AgentStatus)) {
        let mut status = self
            .status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        change(&mut status);
    }

    pub fn get(&self) -> AgentStatus {
        self.status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The edge acknowledged a batch of `bytes` spooled bytes whose send began at `started`.
    pub fn sent(&self, started: Instant, bytes: u64) {
        self.rate
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .record(started, Instant::now(), bytes);
    }

    /// Brings the spool's figures, the send rate, the time to drain and `caught_up` up to date.
    pub fn refresh(&self, spool_batches: u64, spool_bytes: u64) {
        let rate = self
            .rate
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .per_second(Instant::now());
        self.update(|status| refresh(status, spool_batches, spool_bytes, rate));
    }
}

/// How far back the send rate looks.
const RATE_WINDOW: Duration = Duration::from_secs(30);

/// The bytes the edge acknowledged lately, to tell the rate the spool drains at.
#[derive(Debug, Default)]
pub struct SendRate {
    /// (send started, acknowledged, bytes), oldest first.
    samples: VecDeque<(Instant, Instant, u64)>,
}

impl SendRate {
    pub fn record(&mut self, started: Instant, acknowledged: Instant, bytes: u64) {
        self.samples.push_back((started, acknowledged, bytes));
        while self.samples.len() > 10_000 {
            self.samples.pop_front();
        }
    }

    /// Bytes per second over the sends acknowledged in the last [`RATE_WINDOW`], counted from
    /// the first of them starting to now; `None` when none was.
    pub fn per_second(&mut self, now: Instant) -> Option<f64> {
        while self
            .samples
            .front()
            .is_some_and(|(_, acknowledged, _)| now.duration_since(*acknowledged) > RATE_WINDOW)
        {
            self.samples.pop_front();
        }
        let (first, _, _) = self.samples.front()?;
        let bytes: u64 = self.samples.iter().map(|(_, _, bytes)| bytes).sum();
        let seconds = now
            .duration_since(*first)
            .max(Duration::from_millis(1))
            .as_secs_f64();
        Some(bytes as f64 / seconds)
    }
}

/// The status's spool figures and what follows from them: caught up only while streaming (or
/// stopped after streaming) with an empty spool and everything captured acknowledged; the time to drain at `rate`.
pub fn refresh(status: &mut AgentStatus, spool_batches: u64, spool_bytes: u64, rate: Option<f64>) {
    status.spool_batches = spool_batches;
    status.spool_bytes = spool_bytes;
    status.send_bytes_per_second = rate;
    status.drain_seconds = if spool_bytes == 0 {
        Some(0.0)
    } else {
        rate.filter(|rate| *rate > 0.0)
            .map(|rate| spool_bytes as f64 / rate)
    };
    let acked = match (status.captured_lsn, status.acked_lsn) {
        (None, _) => true,
        (Some(captured), Some(acked)) => acked >= captured,
        (Some(_), None) => false,
    };
    status.caught_up = matches!(status.state.as_str(), "streaming" | "stopped")
        && spool_batches == 0
        && spool_bytes == 0
        && acked;
}

/// The Prometheus text exposition of a status.
pub fn metrics_text(status: &AgentStatus) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: Option<f64>| {
        if let Some(value) = value {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
            ));
        }
    };
    gauge(
        "tributary_agent_captured_lsn",
        "The newest change read from the source and spooled.",
        status.captured_lsn.map(|lsn| lsn.0 as f64),
    );
    gauge(
        "tributary_agent_acked_lsn",
        "The newest change the edge acknowledged.",
        status.acked_lsn.map(|lsn| lsn.0 as f64),
    );
    gauge(
        "tributary_agent_lag_bytes",
        "WAL written beyond the position confirmed to the source.",
        status.lag_bytes.map(|bytes| bytes as f64),
    );
    gauge(
        "tributary_agent_lag_seconds",
        "Age of the oldest change not yet acknowledged.",
        status.lag_seconds,
    );
    gauge(
        "tributary_agent_spool_batches",
        "Batches waiting in the spool.",
        Some(status.spool_batches as f64),
    );
    gauge(
        "tributary_agent_spool_bytes",
        "Bytes waiting in the spool.",
        Some(status.spool_bytes as f64),
    );
    gauge(
        "tributary_agent_drain_seconds",
        "How long the spool takes to drain at the current send rate.",
        status.drain_seconds,
    );
    gauge(
        "tributary_agent_caught_up",
        "1 while everything captured is acknowledged by the platform.",
        Some(f64::from(u8::from(status.caught_up))),
    );
    gauge(
        "tributary_agent_backpressure",
        "1 while the spool is full and the source is not read.",
        Some(f64::from(u8::from(status.backpressure))),
    );
    if let Some(slot) = &status.slot {
        gauge(
            "tributary_agent_slot_retained_wal_bytes",
            "WAL the replication slot keeps from being recycled.",
            slot.retained_bytes.map(|bytes| bytes as f64),
        );
        gauge(
            "tributary_agent_slot_safe_wal_bytes",
            "WAL that can be written before the slot is in danger of invalidation.",
            slot.safe_wal_bytes.map(|bytes| bytes as f64),
        );
    }
    gauge(
        "tributary_agent_up",
        "1 while the agent runs without a standing error.",
        Some(f64::from(u8::from(status.last_error.is_none()))),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn streaming() -> AgentStatus {
        AgentStatus {
            state: "streaming".into(),
            captured_lsn: Some(domain::Lsn(100)),
            acked_lsn: Some(domain::Lsn(100)),
            ..AgentStatus::default()
        }
    }

    #[test]
    fn a_spool_with_bytes_is_never_caught_up() {
        let mut status = streaming();
        refresh(&mut status, 3, 138 << 20, None);
        assert!(!status.caught_up);
        assert_eq!(status.spool_bytes, 138 << 20);
        // Nothing is being acknowledged: no time to drain can be told.
        assert_eq!(status.drain_seconds, None);
        refresh(&mut status, 0, 0, None);
        assert!(status.caught_up);
        assert_eq!(status.drain_seconds, Some(0.0));
    }

    #[test]
    fn captured_but_not_acknowledged_is_not_caught_up() {
        let mut status = AgentStatus {
            acked_lsn: Some(domain::Lsn(90)),
            ..streaming()
        };
        refresh(&mut status, 0, 0, None);
        assert!(!status.caught_up);
        status.acked_lsn = None;
        refresh(&mut status, 0, 0, None);
        assert!(!status.caught_up);
    }

    #[test]
    fn a_snapshot_is_not_caught_up_even_with_an_empty_spool() {
        let mut status = AgentStatus {
            state: "snapshot".into(),
            ..streaming()
        };
        refresh(&mut status, 0, 0, Some(1000.0));
        assert!(!status.caught_up);
    }

    #[test]
    fn the_drain_time_is_the_spool_at_the_current_rate() {
        let mut status = streaming();
        refresh(&mut status, 2, 10_000_000, Some(2_000_000.0));
        assert_eq!(status.drain_seconds, Some(5.0));
        assert_eq!(status.send_bytes_per_second, Some(2_000_000.0));
    }

    #[test]
    fn the_rate_counts_recent_acknowledgements_only() {
        let start = Instant::now();
        let mut rate = SendRate::default();
        assert_eq!(rate.per_second(start), None);
        rate.record(start, start + Duration::from_secs(1), 1_000_000);
        rate.record(
            start + Duration::from_secs(1),
            start + Duration::from_secs(2),
            1_000_000,
        );
        let per_second = rate.per_second(start + Duration::from_secs(2)).unwrap();
        assert!((per_second - 1_000_000.0).abs() < 1.0, "{per_second}");
        // Nothing acknowledged for longer than the window: no rate.
        assert_eq!(rate.per_second(start + Duration::from_secs(60)), None);
    }
}
