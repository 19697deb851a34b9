//! The simulator source: a fleet of chargers at a few sites producing power readings, status
//! changes and charging sessions (started, completed, and purged after a while), as a change
//! stream. Values follow from a seed, so two simulators with the same seed produce the same
//! fleet and the same readings. Rows carry a few fields no read model maps (nested connector
//! details, a reading's quality), as real tables do. Positions are a synthetic log: every change gets
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
    seed: u64,
    position: Position,
}

impl Simulator {
    pub fn new(source: SourceId, devices: u32, seed: u64, position: Position) -> Self {
        Self {
            source,
            devices: devices.max(1),
            seed,
            position,
        }
    }

    /// A value from the seed and `n`, spread over 0..modulus (SplitMix64's finaliser).
    fn draw(&self, n: u64, modulus: u64) -> u64 {
        let mut x = n
            .wrapping_add(self.seed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (x ^ (x >> 31)) % modulus.max(1)
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
                    "model": (["TX-22", "TX-50", "HPC-150"][self.draw(device, 3) as usize]),
                    "status": "available",
                    "firmware": "4.2.1",
                    "connector": {
                        "type": (["CCS2", "Type 2", "CHAdeMO"][self.draw(device + 7, 3) as usize]),
                        "max_kw": ([22, 50, 150][self.draw(device, 3) as usize]),
                    },
                    "commissioned": rfc3339(millis - 86_400_000 * (30 + self.draw(device, 700) as i64)),
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
                        "payment": { "method": (["card", "app", "rfid"][self.draw(n, 3) as usize]) },
                    }),
                ),
                // The session started ten changes ago ends.
                2 if n > sites + u64::from(self.devices) + 10 => {
                    let started = n - 11;
                    let device = started % u64::from(self.devices) + 1;
                    (
                        Op::Update,
                        "sessions",
                        json!({ "session_id": format!("session-{started}") }),
                        json!({
                            "session_id": format!("session-{started}"),
                            "device_id": format!("device-{device}"),
                            "status": "completed",
                            "ended_at": rfc3339(millis),
                            "energy_kwh": (5 + self.draw(started, 600)) as f64 / 10.0,
                        }),
                    )
                }
                // Old completed sessions are purged now and then.
                3 if n % 50 == 3 && n > sites + u64::from(self.devices) + 60 => {
                    let purged = n - 52;
                    (
                        Op::Delete,
                        "sessions",
                        json!({ "session_id": format!("session-{purged}") }),
                        Value::Null,
                    )
                }
                _ => (
                    Op::Insert,
                    "readings",
                    json!({ "reading_id": n }),
                    json!({
                        "reading_id": n,
                        "device_id": format!("device-{device}"),
                        "metric": if n % 10 == 5 { "voltage_v" } else { "power_kw" },
                        "value": if n % 10 == 5 {
                            (380 + self.draw(n, 40)) as f64
                        } else {
                            self.draw(n, 2200) as f64 / 10.0
                        },
                        "measured_at": rfc3339(millis),
                        "quality": if self.draw(n, 50) == 0 { "estimated" } else { "measured" },
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
            after: (op != Op::Delete).then(|| object(after)),
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
