//! How an event is kept in bronze (`bronze.cdc_events`), and read back: the row the bronze
//! writer stores of a published event, and the event a row stands for. The embedded bus keeps
//! the events the edge publishes in bronze itself, in the transaction that acknowledges them,
//! and only their place in its log ([`crate::Bus::publish_events`]); it rebuilds each one from
//! its row for its consumers, so both directions live here, beside it.

use protocol::Envelope;
use store::service::bronze::BronzeRow;

/// The bronze row of an event, or why it cannot have one.
pub fn row_of(envelope: &Envelope) -> Result<BronzeRow, String> {
    let event = &envelope.event;
    // PostgreSQL keeps microseconds; truncating here (rather than letting each write path round
    // or truncate its own way) keeps (tenant, event id, event time) one key whatever the path.
    let event_time = event
        .event_time
        .replace_nanosecond(event.event_time.nanosecond() / 1_000 * 1_000)
        .map_err(|error| error.to_string())?;
    Ok(BronzeRow {
        tenant: envelope.tenant_id,
        event_id: event.event_id,
        event_time,
        source: envelope.source_id,
        op: event.op.as_str().to_owned(),
        schema_name: event.schema.clone(),
        table_name: event.table.clone(),
        lsn: i64::try_from(event.lsn.0).map_err(|_| "LSN beyond 2^63".to_owned())?,
        seq: i32::try_from(event.seq).map_err(|_| "sequence beyond 2^31".to_owned())?,
        xid: event.xid.and_then(|xid| i64::try_from(xid).ok()),
        payload: payload_of(event)?,
    })
}

/// What bronze keeps of an event beyond its columns: its row images, and the unchanged columns
/// and source types when it has them. Serialised from borrowed fields: nothing is copied.
fn payload_of(event: &protocol::ChangeEvent) -> Result<String, String> {
    #[derive(serde::Serialize)]
    struct Payload<'a> {
        key: &'a serde_json::Map<String, serde_json::Value>,
        after: &'a Option<serde_json::Map<String, serde_json::Value>>,
        before: &'a Option<serde_json::Map<String, serde_json::Value>>,
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        unchanged: &'a [String],
        #[serde(skip_serializing_if = "is_empty")]
        types: &'a std::collections::BTreeMap<String, String>,
    }
    fn is_empty(types: &&std::collections::BTreeMap<String, String>) -> bool {
        types.is_empty()
    }
    serde_json::to_string(&Payload {
        key: &event.key,
        after: &event.after,
        before: &event.before,
        unchanged: &event.unchanged,
        types: event.types.as_ref(),
    })
    .map_err(|error| error.to_string())
}

/// The event a bronze row stands for: the inverse of [`row_of`]. `replay` names the replay
/// request that re-publishes it, if any.
pub fn envelope_of(row: &BronzeRow, replay: Option<uuid::Uuid>) -> Result<Envelope, String> {
    #[derive(serde::Deserialize)]
    struct Payload {
        #[serde(default)]
        key: Option<serde_json::Map<String, serde_json::Value>>,
        #[serde(default)]
        after: Option<serde_json::Map<String, serde_json::Value>>,
        #[serde(default)]
        before: Option<serde_json::Map<String, serde_json::Value>>,
        #[serde(default)]
        unchanged: Option<Vec<String>>,
        #[serde(default)]
        types: Option<std::collections::BTreeMap<String, String>>,
    }
    let payload: Payload = serde_json::from_str(&row.payload).map_err(|error| error.to_string())?;
    Ok(Envelope {
        tenant_id: row.tenant,
        source_id: row.source,
        event: protocol::ChangeEvent {
            event_id: row.event_id,
            op: row
                .op
                .parse()
                .map_err(|_| format!("unknown op {:?}", row.op))?,
            schema: row.schema_name.clone(),
            table: row.table_name.clone(),
            lsn: domain::Lsn(u64::try_from(row.lsn).map_err(|_| "negative LSN".to_owned())?),
            seq: u32::try_from(row.seq).map_err(|_| "negative sequence".to_owned())?,
            xid: row.xid.and_then(|xid| u64::try_from(xid).ok()),
            event_time: row.event_time,
            key: payload.key.unwrap_or_default(),
            after: payload.after,
            before: payload.before,
            unchanged: payload.unchanged.unwrap_or_default(),
            types: std::sync::Arc::new(payload.types.unwrap_or_default()),
        },
        replay,
    })
}

/// An event the edge publishes ([`crate::Bus::publish_events`]): its envelope, and the bronze
/// row it is kept as.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub envelope: Envelope,
    pub row: BronzeRow,
}

impl StoredEvent {
    /// The event with its bronze row ([`row_of`]), or why it cannot have one.
    pub fn new(envelope: Envelope) -> Result<Self, String> {
        let row = row_of(&envelope)?;
        Ok(Self { envelope, row })
    }

    /// The event as a bus message: its envelope, serialised.
    pub fn message(&self) -> Result<crate::Message, crate::BusError> {
        let payload = serde_json::to_vec(&self.envelope)
            .map_err(|error| crate::BusError::Event(error.to_string()))?;
        Ok(crate::Message {
            tenant: self.envelope.tenant_id,
            id: self.envelope.event.event_id,
            payload: payload.into(),
        })
    }
}
