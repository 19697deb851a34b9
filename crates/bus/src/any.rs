//! The bus chosen by configuration: either implementation behind one type, so the roles that
//! publish and consume need no generics.

use std::time::Duration;

use store::ServiceDb;

use crate::{
    Backend, Bus, BusConfig, BusError, Consumer, Delivery, EmbeddedBus, EmbeddedConsumer, Message,
    NatsBus, NatsConsumer, PartitionLag, PublishReceipt,
};

/// The configured bus.
#[derive(Debug, Clone)]
pub enum AnyBus {
    Embedded(EmbeddedBus),
    Nats(NatsBus),
}

impl AnyBus {
    /// Opens the bus `config` names; the embedded bus lives in `database`.
    pub async fn connect(config: &BusConfig, database: &ServiceDb) -> Result<Self, BusError> {
        match &config.backend {
            Backend::Embedded => Ok(AnyBus::Embedded(
                EmbeddedBus::open(database.clone(), config.partitions).await?,
            )),
            Backend::Nats(nats) => Ok(AnyBus::Nats(
                NatsBus::connect(nats, config.partitions).await?,
            )),
        }
    }
}

/// A consumer of the configured bus.
#[derive(Debug)]
pub enum AnyConsumer {
    Embedded(EmbeddedConsumer),
    Nats(NatsConsumer),
}

impl Bus for AnyBus {
    type Consumer = AnyConsumer;

    fn partitions(&self) -> u32 {
        match self {
            AnyBus::Embedded(bus) => bus.partitions(),
            AnyBus::Nats(bus) => bus.partitions(),
        }
    }

    async fn publish(&self, messages: &[Message]) -> Result<PublishReceipt, BusError> {
        match self {
            AnyBus::Embedded(bus) => bus.publish(messages).await,
            AnyBus::Nats(bus) => bus.publish(messages).await,
        }
    }

    async fn publish_events(
        &self,
        events: Vec<crate::bronze::StoredEvent>,
    ) -> Result<PublishReceipt, BusError> {
        match self {
            AnyBus::Embedded(bus) => bus.publish_events(events).await,
            AnyBus::Nats(bus) => bus.publish_events(events).await,
        }
    }

    fn keeps_bronze(&self) -> bool {
        match self {
            AnyBus::Embedded(bus) => bus.keeps_bronze(),
            AnyBus::Nats(bus) => bus.keeps_bronze(),
        }
    }

    async fn consumer(
        &self,
        group: &str,
        partitions: Option<Vec<u32>>,
    ) -> Result<AnyConsumer, BusError> {
        match self {
            AnyBus::Embedded(bus) => Ok(AnyConsumer::Embedded(
                bus.consumer(group, partitions).await?,
            )),
            AnyBus::Nats(bus) => Ok(AnyConsumer::Nats(bus.consumer(group, partitions).await?)),
        }
    }

    async fn lag(&self, groups: &[&str]) -> Result<Vec<PartitionLag>, BusError> {
        match self {
            AnyBus::Embedded(bus) => bus.lag(groups).await,
            AnyBus::Nats(bus) => bus.lag(groups).await,
        }
    }
}

impl Consumer for AnyConsumer {
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BusError> {
        match self {
            AnyConsumer::Embedded(consumer) => consumer.next_batch(max, wait).await,
            AnyConsumer::Nats(consumer) => consumer.next_batch(max, wait).await,
        }
    }

    async fn ack(&mut self, deliveries: &[Delivery]) -> Result<(), BusError> {
        match self {
            AnyConsumer::Embedded(consumer) => consumer.ack(deliveries).await,
            AnyConsumer::Nats(consumer) => consumer.ack(deliveries).await,
        }
    }
}
