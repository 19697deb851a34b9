//! The bus's error type.

use store::StoreError;

/// What can go wrong on the bus. `Display` prints one layer; the cause is kept as `source`.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("bus configuration: {0}")]
    Config(String),
    #[error("invalid consumer group name {0:?}: use 1 to 64 of A-Z a-z 0-9 _ -")]
    InvalidGroup(String),
    #[error("partition {partition} does not exist: the bus has {partitions}")]
    InvalidPartition { partition: u32, partitions: u32 },
    #[error("the bus's storage has {existing} partitions, but {configured} are configured")]
    PartitionCountMismatch { existing: u32, configured: u32 },
    #[error("the embedded bus's database failed")]
    Store(#[from] StoreError),
    #[error("NATS {operation} failed")]
    Nats {
        operation: &'static str,
        retryable: bool,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the message at partition {partition} position {position} is malformed: {reason}")]
    Malformed {
        partition: u32,
        position: u64,
        reason: &'static str,
    },
    #[error("the consumer has stopped")]
    ConsumerStopped,
    #[error("an event cannot be published: {0}")]
    Event(String),
}

impl BusError {
    /// Worth retrying as is (after a pause): the connection dropped, the server was restarting,
    /// a timeout or a transaction conflict. Everything else needs a change of configuration or
    /// input first.
    pub fn is_retryable(&self) -> bool {
        match self {
            BusError::Store(error) => error.is_retryable(),
            BusError::Nats { retryable, .. } => *retryable,
            BusError::Config(_)
            | BusError::InvalidGroup(_)
            | BusError::InvalidPartition { .. }
            | BusError::PartitionCountMismatch { .. }
            | BusError::Malformed { .. }
            | BusError::ConsumerStopped
            | BusError::Event(_) => false,
        }
    }

    pub(crate) fn nats(
        operation: &'static str,
        retryable: bool,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        BusError::Nats {
            operation,
            retryable,
            source: source.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert!(BusError::nats("publish", true, "timed out").is_retryable());
        assert!(!BusError::nats("publish", false, "too large").is_retryable());
        assert!(!BusError::InvalidGroup("a.b".into()).is_retryable());
        assert!(!BusError::Store(StoreError::Config("bad")).is_retryable());
    }
}
