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

/// The serialised envelope of the event a bronze row stands for: what [`envelope_of`] and
/// `serde_json` would make of it, but written from the row's columns and its payload's text as
/// is, without parsing the payload into values and writing them out again. The embedded bus's
/// consumers receive every event this way.
pub fn envelope_json_of(row: &BronzeRow) -> Result<Vec<u8>, String> {
    #[derive(serde::Serialize)]
    struct Head<'a> {
        event_id: domain::EventId,
        op: protocol::Op,
        schema: &'a str,
        table: &'a str,
        lsn: domain::Lsn,
        seq: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        xid: Option<u64>,
        #[serde(with = "time::serde::rfc3339")]
        event_time: time::OffsetDateTime,
    }
    let head = Head {
        event_id: row.event_id,
        op: row
            .op
            .parse()
            .map_err(|_| format!("unknown op {:?}", row.op))?,
        schema: &row.schema_name,
        table: &row.table_name,
        lsn: domain::Lsn(u64::try_from(row.lsn).map_err(|_| "negative LSN".to_owned())?),
        seq: u32::try_from(row.seq).map_err(|_| "negative sequence".to_owned())?,
        xid: row.xid.and_then(|xid| u64::try_from(xid).ok()),
        event_time: row.event_time,
    };
    // The payload is a JSON object (bronze's `jsonb`, or the exact text kept beside it): its
    // members become the event's own, after the head's.
    let members = row
        .payload
        .trim()
        .strip_prefix('{')
        .and_then(|rest| rest.strip_suffix('}'))
        .ok_or_else(|| "a bronze payload that is not an object".to_owned())?
        .trim();
    let mut out = Vec::with_capacity(row.payload.len() + 320);
    out.extend_from_slice(b"{\"tenant_id\":");
    serde_json::to_writer(&mut out, &row.tenant).map_err(|error| error.to_string())?;
    out.extend_from_slice(b",\"source_id\":");
    serde_json::to_writer(&mut out, &row.source).map_err(|error| error.to_string())?;
    out.extend_from_slice(b",\"event\":");
    serde_json::to_writer(&mut out, &head).map_err(|error| error.to_string())?;
    // `{..head..}` becomes `{..head..,..payload members..}}`.
    out.pop();
    if !members.is_empty() {
        out.push(b',');
        out.extend_from_slice(members.as_bytes());
    }
    out.extend_from_slice(b"}}");
    Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(n: u32) -> Envelope {
        let source = domain::SourceId::new_random();
        let lsn = domain::Lsn(0x1_0000_0000 + u64::from(n));
        let event_time = time::OffsetDateTime::from_unix_timestamp_nanos(
            1_767_225_600_123_456_789 + i128::from(n),
        )
        .unwrap();
        Envelope {
            tenant_id: domain::TenantId::new_random(),
            source_id: source,
            event: protocol::ChangeEvent {
                event_id: domain::EventId::derive(source, 1_767_225_600_123, lsn, n),
                op: protocol::Op::Update,
                schema: "public".into(),
                table: "dev\"ices\u{e9}".into(),
                lsn,
                seq: n,
                xid: n.is_multiple_of(2).then_some(u64::from(n)),
                event_time,
                key: serde_json::json!({ "id": n }).as_object().unwrap().clone(),
                after: Some(
                    serde_json::json!({ "id": n, "v": -0.0, "s": "a\"b\\c\n" })
                        .as_object()
                        .unwrap()
                        .clone(),
                ),
                before: n.is_multiple_of(3).then(serde_json::Map::new),
                unchanged: if n.is_multiple_of(2) {
                    vec!["notes".into()]
                } else {
                    Vec::new()
                },
                types: std::sync::Arc::new(if !n.is_multiple_of(2) {
                    [("id".to_owned(), "integer".to_owned())]
                        .into_iter()
                        .collect()
                } else {
                    Default::default()
                }),
            },
            replay: None,
        }
    }

    #[test]
    fn an_event_comes_back_from_its_bronze_row_as_published_parsed_or_spliced() {
        for n in 0..6 {
            let published = envelope(n);
            let row = row_of(&published).unwrap();
            let mut wanted = published.clone();
            wanted.event.event_time = published
                .event
                .event_time
                .replace_nanosecond(published.event.event_time.nanosecond() / 1_000 * 1_000)
                .unwrap();
            assert_eq!(
                envelope_of(&row, None).unwrap(),
                wanted,
                "parsed, event {n}"
            );
            let spliced = envelope_json_of(&row).unwrap();
            let read: Envelope = serde_json::from_slice(&spliced).unwrap();
            assert_eq!(read, wanted, "spliced, event {n}");
            // As bronze hands it back: jsonb's text, with spaces after its separators.
            let spaced = BronzeRow {
                payload: serde_json::to_string_pretty(
                    &serde_json::from_str::<serde_json::Value>(&row.payload).unwrap(),
                )
                .unwrap(),
                ..row.clone()
            };
            let read: Envelope =
                serde_json::from_slice(&envelope_json_of(&spaced).unwrap()).unwrap();
            assert_eq!(read, wanted, "spliced from spaced text, event {n}");
        }
        let not_an_object = BronzeRow {
            payload: "[1]".into(),
            ..row_of(&envelope(1)).unwrap()
        };
        assert!(envelope_json_of(&not_an_object).is_err());
    }
}
