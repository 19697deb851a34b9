//! Positions in a source's log and the deterministic, time-ordered event id derived from them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::SourceId;

/// A PostgreSQL log sequence number: a byte position in the write-ahead log, written
/// `X/Y` (two hexadecimal halves of the 64-bit value), as PostgreSQL prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Lsn(pub u64);

/// Text that is not an `X/Y` LSN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("LSN must look like 16/B374D848 (two hexadecimal halves), got {0:?}")]
pub struct ParseLsnError(String);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for Lsn {
    type Err = ParseLsnError;

    fn from_str(given: &str) -> Result<Self, Self::Err> {
        let invalid = || ParseLsnError(given.chars().take(40).collect());
        let (high, low) = given.split_once('/').ok_or_else(invalid)?;
        let half = |text: &str| {
            if text.is_empty() || text.len() > 8 {
                return Err(invalid());
            }
            u32::from_str_radix(text, 16).map_err(|_| invalid())
        };
        Ok(Lsn((u64::from(half(high)?) << 32) | u64::from(half(low)?)))
    }
}

impl Serialize for Lsn {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// An event's id. Derived, never drawn at random: the same change read twice from the source
/// (after any crash) gets the same id, which is what makes every consumer's dedupe work.
///
/// Layout (UUIDv7): the commit time in milliseconds since the Unix epoch in the top 48 bits, so
/// ids of later commits sort later and indexes on them stay append-mostly; the version and
/// variant bits; and 74 bits of SHA-256 over the source, the commit LSN and the sequence of the
/// change within its transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(Uuid);

impl EventId {
    pub fn derive(source: SourceId, commit_unix_millis: i64, commit_lsn: Lsn, seq: u32) -> Self {
        let millis = commit_unix_millis.clamp(0, (1 << 48) - 1) as u64;
        let digest = Sha256::new()
            .chain_update(b"tributary-event-v1")
            .chain_update(source.as_uuid().as_bytes())
            .chain_update(commit_lsn.0.to_be_bytes())
            .chain_update(seq.to_be_bytes())
            .finalize();
        let mut bytes = [0u8; 16];
        bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
        bytes[6] = 0x70 | (digest[0] & 0x0F);
        bytes[7] = digest[1];
        bytes[8] = 0x80 | (digest[2] & 0x3F);
        bytes[9..].copy_from_slice(&digest[3..10]);
        Self(Uuid::from_bytes(bytes))
    }

    pub const fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }

    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }

    /// The bus message id of this event re-driven by replay request `request`: the same commit
    /// time prefix (so ordering and partitioning are unchanged), a different rest, stable for
    /// the request so retrying a replay does not multiply it.
    pub fn for_replay(&self, request: &Uuid) -> EventId {
        let digest = Sha256::new()
            .chain_update(b"tributary-replay-v1")
            .chain_update(self.0.as_bytes())
            .chain_update(request.as_bytes())
            .finalize();
        let mut bytes = *self.0.as_bytes();
        bytes[6] = 0x70 | (digest[0] & 0x0F);
        bytes[7] = digest[1];
        bytes[8] = 0x80 | (digest[2] & 0x3F);
        bytes[9..].copy_from_slice(&digest[3..10]);
        EventId(Uuid::from_bytes(bytes))
    }

    /// The commit time encoded in the id, in milliseconds since the Unix epoch.
    pub fn unix_millis(&self) -> i64 {
        let bytes = self.0.as_bytes();
        let mut millis = [0u8; 8];
        millis[2..].copy_from_slice(&bytes[..6]);
        u64::from_be_bytes(millis) as i64
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn lsn_formats_like_postgres() {
        assert_eq!(Lsn(0x16_B374_D848).to_string(), "16/B374D848");
        assert_eq!("16/B374D848".parse::<Lsn>().unwrap(), Lsn(0x16_B374_D848));
        assert_eq!("0/0".parse::<Lsn>().unwrap(), Lsn(0));
        for bad in ["", "16", "/1", "1/", "G/1", "123456789/0", "1/2/3", " 1/2"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn event_ids_are_uuid_v7_and_deterministic() {
        let source = SourceId::new_random();
        let id = EventId::derive(source, 1_760_000_000_123, Lsn(42), 7);
        assert_eq!(id, EventId::derive(source, 1_760_000_000_123, Lsn(42), 7));
        assert_eq!(id.as_uuid().get_version_num(), 7);
        assert_eq!(id.as_uuid().get_variant(), uuid::Variant::RFC4122);
        assert_eq!(id.unix_millis(), 1_760_000_000_123);
        assert_ne!(id, EventId::derive(source, 1_760_000_000_123, Lsn(42), 8));
        assert_ne!(id, EventId::derive(source, 1_760_000_000_123, Lsn(43), 7));
        assert_ne!(
            id,
            EventId::derive(SourceId::new_random(), 1_760_000_000_123, Lsn(42), 7)
        );
    }

    proptest! {
        #[test]
        fn lsn_round_trips(value: u64) {
            prop_assert_eq!(Lsn(value).to_string().parse::<Lsn>().unwrap(), Lsn(value));
        }

        #[test]
        fn later_commits_sort_later(earlier in 0i64..(1 << 47), gap in 1i64..1_000_000, a: u64, b: u64) {
            let source = SourceId::new_random();
            let first = EventId::derive(source, earlier, Lsn(a), 0);
            let second = EventId::derive(source, earlier + gap, Lsn(b), 0);
            prop_assert!(first < second);
        }
    }
}
