//! The simulator source: a fleet of devices at a few sites producing readings, status changes
//! and charging sessions, as a change stream. Positions are a synthetic log: every change gets
//! the next LSN and a commit time that never goes backwards. The position is saved with every
//! spooled batch, so no change is generated twice, even across crashes.

use domain::{EventId, Lsn, SourceId};
use protocol::{ChangeEvent, Op};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

/// How far apart two changes' LSNs are.
const LSN_STEP: u64 = 64;

/// Where the simulator is, persisted in the state directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The next change's LSN.
    pub next_lsn: u64,
    /// Unix milliseconds of LSN 0's commit; later changes are a millisecond apart at least.
    pub epoch_millis: i64,
}

impl Position {
    pub fn start() -> Self {
        Self {
            next_lsn: LSN_STEP,
            epoch_millis: (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64,
        }
    }
}

/// Generates changes from a position.
#[derive(Debug)]
pub struct Simulator {
    source: SourceId,
    devices: u32,
    position: Position,
}

impl Simulator {
    pub fn new(source: SourceId, devices: u32, position: Position) -> Self {
        Self {
            source,
            devices: devices.max(1),
            position,
        }
    }

    pub fn position(&self) -> Position {
        self.position
    }

    /// The next `count` changes. The first changes of a fresh simulator are the snapshot of its
    /// sites and devices.
    pub fn next_changes(&mut self, count: usize) -> Vec<ChangeEvent> {
        (0..count).map(|_| self.next_change()).collect()
    }

    fn next_change(&mut self) -> ChangeEvent {
        let lsn = self.position.next_lsn;
        self.position.next_lsn += LSN_STEP;
        let n = lsn / LSN_STEP; // 1, 2, 3, ...
        let sites = u64::from(self.devices.div_ceil(10));
        // Commit times follow the wall clock, but never go backwards and never repeat.
        let now = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        let millis = now.max(self.position.epoch_millis + n as i64);
        self.position.epoch_millis = millis - n as i64;
        let (op, table, key, after): (Op, &str, Value, Value) = if n <= sites {
            let site = format!("site-{n}");
            (
                Op::Read,
                "sites",
                json!({ "site_id": site }),
                json!({ "site_id": site, "name": format!("Site {n}"), "region": "eu-west", "timezone": "Europe/Paris" }),
            )
        } else if n <= sites + u64::from(self.devices) {
            let device = n - sites;
            (
                Op::Read,
                "devices",
                json!({ "device_id": format!("device-{device}") }),
                json!({
                    "device_id": format!("device-{device}"),
                    "site_id": format!("site-{}", (device - 1) % sites + 1),
                    "name": format!("Charger {device}"),
                    "model": "TX-22",
                    "status": "available",
                    "firmware": "4.2.1",
                }),
            )
        } else {
            let device = n % u64::from(self.devices) + 1;
            match n % 10 {
                0 => (
                    Op::Update,
                    "devices",
                    json!({ "device_id": format!("device-{device}") }),
                    json!({
                        "device_id": format!("device-{device}"),
                        "site_id": format!("site-{}", (device - 1) % sites + 1),
                        "status": if n.is_multiple_of(20) { "charging" } else { "available" },
                        "last_seen_at": rfc3339(millis),
                    }),
                ),
                1 => (
                    Op::Insert,
                    "sessions",
                    json!({ "session_id": format!("session-{n}") }),
                    json!({
                        "session_id": format!("session-{n}"),
                        "device_id": format!("device-{device}"),
                        "status": "active",
                        "started_at": rfc3339(millis),
                    }),
                ),
                _ => (
                    Op::Insert,
                    "readings",
                    json!({ "reading_id": n }),
                    json!({
                        "reading_id": n,
                        "device_id": format!("device-{device}"),
                        "metric": "power_kw",
                        "value": ((n * 37) % 220) as f64 / 10.0,
                        "measured_at": rfc3339(millis),
                    }),
                ),
            }
        };
        let event_time = OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
            .unwrap_or_else(|_| OffsetDateTime::now_utc());
        ChangeEvent {
            event_id: EventId::derive(self.source, millis, Lsn(lsn), 0),
            op,
            schema: "public".into(),
            table: table.into(),
            lsn: Lsn(lsn),
            seq: 0,
            xid: Some(n),
            event_time,
            key: object(key),
            after: Some(object(after)),
            before: None,
            unchanged: Vec::new(),
            types: Default::default(),
        }
    }
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn rfc3339(millis: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .ok()
        .and_then(|at| {
            at.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
