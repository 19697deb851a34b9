//! What the agent is doing, kept current by its tasks: written to `status.json` in the state
//! directory (for `tributary-agent status`), served on the optional loopback health port, and
//! sent to the platform as a heartbeat.

use std::sync::{Arc, Mutex};

pub use protocol::{AgentStatus, SlotHealth};

/// The shared, current status.
#[derive(Debug, Clone, Default)]
pub struct StatusCell(Arc<Mutex<AgentStatus>>);

impl StatusCell {
    pub fn new(source_kind: &str) -> Self {
        Self(Arc::new(Mutex::new(AgentStatus {
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            source_kind: source_kind.to_owned(),
            state: "starting".to_owned(),
            ..AgentStatus::default()
        })))
    }

    pub fn update(&self, change: impl FnOnce(&mut AgentStatus)) {
        let mut status = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        change(&mut status);
    }

    pub fn get(&self) -> AgentStatus {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
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
