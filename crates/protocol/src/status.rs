//! The body of `POST /v1/status`: what an agent reports about itself every few seconds (the
//! status heartbeat), kept per source for the data-sources page and alerts.

use domain::Lsn;
use serde::{Deserialize, Serialize};

/// An agent's state as the platform and the operator see it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub agent_version: String,
    pub source_kind: String,
    /// `starting`, `snapshot`, `streaming`, `paused` (the platform refuses its batches: they
    /// stay spooled), `stopped`, `failed`.
    pub state: String,
    /// The newest change read from the source and spooled.
    pub captured_lsn: Option<Lsn>,
    /// The newest change the edge acknowledged.
    pub acked_lsn: Option<Lsn>,
    /// The position confirmed to the source (it may recycle WAL before it).
    pub confirmed_lsn: Option<Lsn>,
    /// WAL the source has written beyond the confirmed position.
    pub lag_bytes: Option<u64>,
    /// How long the oldest change not yet acknowledged has waited since its commit.
    pub lag_seconds: Option<f64>,
    pub spool_batches: u64,
    pub spool_bytes: u64,
    /// The spool is full and the source is not being read.
    pub backpressure: bool,
    pub snapshot_rows: Option<u64>,
    pub slot: Option<SlotHealth>,
    pub warnings: Vec<String>,
    pub last_error: Option<String>,
    /// RFC 3339.
    pub updated_at: String,
    /// Everything captured is spooled, sent and acknowledged by the platform (the spool is
    /// empty). Absent from older agents: `false`.
    #[serde(default)]
    pub caught_up: bool,
    /// Bytes per second the edge has been acknowledging lately; `None` before anything was sent.
    #[serde(default)]
    pub send_bytes_per_second: Option<f64>,
    /// How long the spool takes to drain at that rate; `None` when nothing is being sent.
    #[serde(default)]
    pub drain_seconds: Option<f64>,
    /// Tables (`schema.table`) whose updates and deletes are not captured because they have no
    /// replica identity (only their inserts and truncates are).
    #[serde(default)]
    pub not_captured: Vec<String>,
    /// The resync request (named by the edge's [`StatusAnswer`]) this agent has carried out:
    /// its slot dropped, its positions forgotten, a new snapshot started. Sent until the edge
    /// stops asking for it; absent from older agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resynced: Option<uuid::Uuid>,
}

/// The edge's answer to a status heartbeat when it has something to ask (else `204`, no body).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusAnswer {
    /// A resync waits: drop the slot, forget the positions, take a new snapshot (what
    /// `tributary-agent resync` and the next `run` do), and name the request in
    /// [`AgentStatus::resynced`].
    #[serde(default)]
    pub resync: Option<ResyncRequest>,
    /// A certificate rotation waits: renew now (a new key and certificate); the renewal revokes
    /// the source's other certificates.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rotate_certificate: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResyncRequest {
    pub request_id: uuid::Uuid,
}

/// At most this many `not_captured` tables are reported.
pub const MAX_NOT_CAPTURED: usize = 200;

/// The replication slot as the source reports it (`pg_replication_slots`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SlotHealth {
    pub name: String,
    /// `reserved`, `extended`, `unreserved` or `lost`.
    pub wal_status: Option<String>,
    /// WAL the slot keeps from being recycled.
    pub retained_bytes: Option<i64>,
    /// WAL that can still be written before the slot is in danger of invalidation
    /// (`None`: no limit).
    pub safe_wal_bytes: Option<i64>,
    /// `max_slot_wal_keep_size` in bytes, `None` when unlimited.
    pub max_keep_bytes: Option<i64>,
}

/// The largest status body the edge reads.
pub const MAX_STATUS_BYTES: usize = 64 * 1024;

impl AgentStatus {
    /// Bounds every text, so that a report is always storable and displayable.
    pub fn validate(&self) -> Result<(), String> {
        let short = [
            ("agent_version", self.agent_version.as_str()),
            ("source_kind", self.source_kind.as_str()),
            ("state", self.state.as_str()),
            ("updated_at", self.updated_at.as_str()),
        ];
        for (field, value) in short {
            if value.len() > 64 || value.chars().any(char::is_control) {
                return Err(format!(
                    "`{field}` must be at most 64 bytes without control characters"
                ));
            }
        }
        if self.warnings.len() > 20 || self.warnings.iter().any(|warning| warning.len() > 2000) {
            return Err("at most 20 `warnings` of at most 2000 bytes each".into());
        }
        if self
            .last_error
            .as_ref()
            .is_some_and(|error| error.len() > 2000)
        {
            return Err("`last_error` must be at most 2000 bytes".into());
        }
        if self.slot.as_ref().is_some_and(|slot| {
            slot.name.len() > 63
                || slot
                    .wal_status
                    .as_ref()
                    .is_some_and(|status| status.len() > 32)
        }) {
            return Err("`slot` names a slot of at most 63 bytes".into());
        }
        if self.lag_seconds.is_some_and(|seconds| !seconds.is_finite()) {
            return Err("`lag_seconds` must be a finite number".into());
        }
        for (field, value) in [
            ("send_bytes_per_second", self.send_bytes_per_second),
            ("drain_seconds", self.drain_seconds),
        ] {
            if value.is_some_and(|value| !value.is_finite() || value < 0.0) {
                return Err(format!("`{field}` must be a finite number of at least 0"));
            }
        }
        if self.not_captured.len() > MAX_NOT_CAPTURED
            || self
                .not_captured
                .iter()
                .any(|table| table.len() > 300 || table.chars().any(char::is_control))
        {
            return Err(format!(
                "at most {MAX_NOT_CAPTURED} `not_captured` tables of at most 300 bytes each"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_of_an_older_agent_without_the_newer_fields_is_read() {
        let status: AgentStatus = serde_json::from_str(
            r#"{"agent_version": "0.1.0", "source_kind": "postgres", "state": "streaming",
                "captured_lsn": null, "acked_lsn": null, "confirmed_lsn": null,
                "lag_bytes": null, "lag_seconds": null, "spool_batches": 0, "spool_bytes": 0,
                "backpressure": false, "snapshot_rows": null, "slot": null, "warnings": [],
                "last_error": null, "updated_at": "2026-11-27T07:20:00Z"}"#,
        )
        .unwrap();
        assert!(!status.caught_up);
        assert!(status.not_captured.is_empty());
        assert_eq!(status.validate(), Ok(()));
    }

    #[test]
    fn rates_must_be_finite_and_not_negative() {
        let mut status = AgentStatus {
            drain_seconds: Some(f64::INFINITY),
            ..AgentStatus::default()
        };
        assert!(status.validate().is_err());
        status.drain_seconds = Some(3.0);
        status.send_bytes_per_second = Some(-1.0);
        assert!(status.validate().is_err());
        status.send_bytes_per_second = Some(1000.0);
        assert_eq!(status.validate(), Ok(()));
        status.not_captured = vec!["public.t".into(); MAX_NOT_CAPTURED + 1];
        assert!(status.validate().is_err());
    }
}
