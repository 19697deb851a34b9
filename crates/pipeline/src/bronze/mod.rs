//! The bronze writer: every event from the bus into `bronze.cdc_events`, as is (already masked
//! at the edge), idempotent by event id, so a redelivered or re-sent event never adds a row.

use std::future::Future;
use std::time::Duration;

use bus::{Bus, Consumer, Delivery};
use store::Database;
use store::bronze::BronzeRow;
use store::dlq::DeadLetter;

/// The bronze writer's consumer group.
pub const GROUP: &str = "bronze";

/// How the writer batches.
#[derive(Debug, Clone)]
pub struct BronzeConfig {
    pub batch_size: usize,
    pub wait: Duration,
}

impl Default for BronzeConfig {
    fn default() -> Self {
        Self {
            batch_size: 2000,
            wait: Duration::from_millis(200),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BronzeError {
    #[error(transparent)]
    Bus(#[from] bus::BusError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

/// Consumes until `shutdown`; a batch in flight when it fires is finished and acked, or left
/// unacked to be redelivered, never half-applied.
pub async fn run<B: Bus>(
    database: Database,
    bus: B,
    config: BronzeConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BronzeError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut consumer = bus.consumer(GROUP, None).await?;
    loop {
        let batch = tokio::select! {
            batch = consumer.next_batch(config.batch_size, config.wait) => batch,
            _ = &mut shutdown => return Ok(()),
        };
        let deliveries = match batch {
            Ok(deliveries) => deliveries,
            Err(error) if error.is_retryable() => {
                tracing::warn!(%error, "reading the bus failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        if deliveries.is_empty() {
            continue;
        }
        loop {
            match write(&database, &deliveries).await {
                Ok(()) => break,
                Err(error) if error.is_retryable() => {
                    tracing::warn!(%error, "writing bronze failed; retrying the batch");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(error) => return Err(error.into()),
            }
        }
        consumer.ack(&deliveries).await?;
    }
}

/// Writes one batch: all at once, or — when the database refuses the batch for a reason that is
/// not transient — event by event, sending the ones it refuses to their tenant's DLQ.
pub async fn write(database: &Database, deliveries: &[Delivery]) -> Result<(), store::StoreError> {
    let mut rows = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        match decode(delivery) {
            Ok(row) => rows.push(row),
            Err(reason) => {
                // Only a foreign writer on the bus could produce this; keep it, never drop it.
                tracing::error!(
                    partition = delivery.partition,
                    position = delivery.position,
                    "undecodable bus message sent to the dead-letter queue"
                );
                let letter = DeadLetter {
                    tenant: delivery.message.tenant,
                    consumer: GROUP,
                    event_id: delivery.message.id,
                    source: domain::SourceId::from_uuid(uuid::Uuid::nil()),
                    reason_code: "undecodable_message",
                    reason,
                    event: serde_json::Value::String(
                        String::from_utf8_lossy(&delivery.message.payload).into_owned(),
                    ),
                };
                store::dlq::record(database, &letter).await?;
            }
        }
    }
    match store::bronze::insert(database, &rows).await {
        Ok(_) => Ok(()),
        Err(error) if error.is_retryable() => Err(error),
        Err(error) => {
            tracing::warn!(%error, events = rows.len(), "bronze refused a batch; writing its events one by one");
            for row in &rows {
                match store::bronze::insert(database, std::slice::from_ref(row)).await {
                    Ok(_) => {}
                    Err(error) if error.is_retryable() => return Err(error),
                    Err(error) => {
                        let letter = DeadLetter {
                            tenant: row.tenant,
                            consumer: GROUP,
                            event_id: row.event_id,
                            source: row.source,
                            reason_code: "bronze_rejected",
                            reason: format!(
                                "the database refused the event ({})",
                                error.sqlstate().unwrap_or_default()
                            ),
                            event: serde_json::from_str(&row.payload)
                                .unwrap_or(serde_json::Value::Null),
                        };
                        store::dlq::record(database, &letter).await?;
                    }
                }
            }
            Ok(())
        }
    }
}

fn decode(delivery: &Delivery) -> Result<BronzeRow, String> {
    let envelope: protocol::Envelope = serde_json::from_slice(&delivery.message.payload)
        .map_err(|error| format!("not an event envelope: {error}"))?;
    let event = &envelope.event;
    Ok(BronzeRow {
        tenant: envelope.tenant_id,
        event_id: event.event_id,
        event_time: event.event_time,
        source: envelope.source_id,
        op: event.op.as_str().to_owned(),
        schema_name: event.schema.clone(),
        table_name: event.table.clone(),
        lsn: i64::try_from(event.lsn.0).map_err(|_| "LSN beyond 2^63".to_owned())?,
        seq: i32::try_from(event.seq).map_err(|_| "sequence beyond 2^31".to_owned())?,
        xid: event.xid.and_then(|xid| i64::try_from(xid).ok()),
        payload: serde_json::to_string(&serde_json::json!({
            "key": event.key,
            "after": event.after,
            "before": event.before,
        }))
        .map_err(|error| error.to_string())?,
    })
}
