//! Bus messages to bronze rows and back: what the writer stores of an event, and the envelope
//! of a row read back (for replays and rebuilds).

use bus::Delivery;
use store::service::bronze::BronzeRow;

/// The bronze row of a delivered event, or why it is none.
pub(super) fn decode(delivery: &Delivery) -> Result<BronzeRow, String> {
    let envelope: protocol::Envelope = serde_json::from_slice(&delivery.message.payload)
        .map_err(|error| format!("not an event envelope: {error}"))?;
    if envelope.tenant_id != delivery.message.tenant {
        return Err("the envelope names another tenant than the bus message".into());
    }
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
        payload: bronze_payload(event)?,
    })
}

/// What bronze keeps of an event beyond its columns: its row images, and the unchanged columns
/// and source types when it has them.
fn bronze_payload(event: &protocol::ChangeEvent) -> Result<String, String> {
    let mut payload = serde_json::json!({
        "key": event.key,
        "after": event.after,
        "before": event.before,
    });
    if !event.unchanged.is_empty() {
        payload["unchanged"] = serde_json::json!(event.unchanged);
    }
    if !event.types.is_empty() {
        payload["types"] = serde_json::json!(event.types);
    }
    serde_json::to_string(&payload).map_err(|error| error.to_string())
}

/// The envelope of an event read back from bronze: the inverse of what the writer stores.
pub fn envelope_of(
    row: &BronzeRow,
    replay: Option<uuid::Uuid>,
) -> Result<protocol::Envelope, String> {
    let payload: serde_json::Value =
        serde_json::from_str(&row.payload).map_err(|error| error.to_string())?;
    let object = |field: &str| -> Option<serde_json::Map<String, serde_json::Value>> {
        payload
            .get(field)
            .and_then(|value| value.as_object())
            .cloned()
    };
    Ok(protocol::Envelope {
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
            key: object("key").unwrap_or_default(),
            after: object("after"),
            before: object("before"),
            unchanged: payload
                .get("unchanged")
                .and_then(|value| serde_json::from_value(value.clone()).ok())
                .unwrap_or_default(),
            types: payload
                .get("types")
                .and_then(|value| serde_json::from_value(value.clone()).ok())
                .unwrap_or_default(),
        },
        replay,
    })
}
