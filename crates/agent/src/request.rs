//! What the sender sends in one request: the oldest spooled batch, and the batches after it that
//! fit beside it. A spool that holds several batches (the edge was slower than the source for a
//! while, or the source commits small transactions faster than a request takes) drains in
//! requests of thousands of events instead of one small request per batch, in the spool's
//! order: a source's changes still reach the edge in the order they were read.

use std::collections::HashMap;

use protocol::TableTypes;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::spool::{Header, Spool};

/// At most this many events in one request: the edge's default `max_events`.
pub const REQUEST_EVENTS: usize = 5_000;
/// Batches are joined while the request stays below this much JSON (a quarter of the edge's
/// default decompressed limit); a batch larger than it is sent alone.
pub const REQUEST_BYTES: usize = 16 * 1024 * 1024;

/// How many spooled batches one request may carry: [`MAX_BATCHES`] until an edge refuses a
/// request as too large (`413`: it takes less than the default limits), then half as many as
/// that request held each time, down to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    pub max_batches: usize,
}

/// At most this many spooled batches in one request.
pub const MAX_BATCHES: usize = 64;

impl Default for Pacing {
    fn default() -> Self {
        Self {
            max_batches: MAX_BATCHES,
        }
    }
}

impl Pacing {
    /// After a `413` for a request of `batches` batches: whether sending fewer may help (then
    /// the next request carries half as many); a single batch too large stays refused.
    pub fn refused_as_too_large(&mut self, batches: usize) -> bool {
        if batches <= 1 {
            return false;
        }
        self.max_batches = (batches / 2).max(1);
        true
    }
}

/// Spooled batches joined into one request body.
#[derive(Debug)]
pub struct Request {
    /// The batches' spool numbers and headers, oldest first.
    pub batches: Vec<(u64, Header)>,
    /// The request's JSON: the batches' events in order, and their tables' column types.
    pub body: Vec<u8>,
    pub events: usize,
}

impl Request {
    /// The oldest batch's first event's commit time: how long the request's changes waited.
    pub fn first_event_time(&self) -> Option<time::OffsetDateTime> {
        self.batches
            .iter()
            .find_map(|(_, header)| header.first_event_time)
    }
}

/// The oldest spooled batch and up to `max_batches - 1` batches after it, as long as the
/// request stays within [`REQUEST_EVENTS`] and [`REQUEST_BYTES`] and no two of them give one
/// table different column types. `None` when the spool is empty.
pub fn gather(spool: &Spool, max_batches: usize) -> anyhow::Result<Option<Request>> {
    let numbers = spool.numbers();
    let Some((&first, rest)) = numbers.split_first() else {
        return Ok(None);
    };
    let stored = spool.read(first)?;
    let mut batches = vec![(first, stored.header)];
    let mut bodies = vec![stored.body];
    let mut events = batches[0].1.events;
    let mut bytes = bodies[0].len();
    for &number in rest.iter().take(max_batches.saturating_sub(1)) {
        let stored = spool.read(number)?;
        if events + stored.header.events > REQUEST_EVENTS
            || bytes + stored.body.len() > REQUEST_BYTES
        {
            break;
        }
        events += stored.header.events;
        bytes += stored.body.len();
        batches.push((number, stored.header));
        bodies.push(stored.body);
    }
    if bodies.len() == 1 {
        let body = bodies.pop().unwrap_or_default();
        return Ok(Some(Request {
            batches,
            body,
            events,
        }));
    }
    // Joined as text: the events are never parsed into values again.
    let mut parts = Vec::with_capacity(bodies.len());
    let mut types: Vec<TableTypes> = Vec::new();
    let mut given: HashMap<(String, String), usize> = HashMap::new();
    for (index, body) in bodies.iter().enumerate() {
        let part: Part<'_> = serde_json::from_slice(body).map_err(|error| {
            anyhow::anyhow!("spooled batch {} is corrupt: {error}", batches[index].0)
        })?;
        let tables: Vec<TableTypes> = match part.types {
            Some(raw) => serde_json::from_str(raw.get())?,
            None => Vec::new(),
        };
        let conflicts = tables.iter().any(|table| {
            given
                .get(&(table.schema.clone(), table.table.clone()))
                .is_some_and(|at| types[*at].columns != table.columns)
        });
        if conflicts {
            // A table's column types changed between these batches: the later ones go in the
            // next request, where their types are the only ones.
            batches.truncate(index);
            break;
        }
        for table in tables {
            let key = (table.schema.clone(), table.table.clone());
            if let std::collections::hash_map::Entry::Vacant(slot) = given.entry(key) {
                slot.insert(types.len());
                types.push(table);
            }
        }
        parts.push(part.events);
    }
    let events = batches.iter().map(|(_, header)| header.events).sum();
    let mut body = Vec::with_capacity(bytes + 64);
    body.extend_from_slice(b"{\"events\":[");
    let mut first = true;
    for events in &parts {
        let inner = events
            .get()
            .trim()
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
            .unwrap_or_default()
            .trim();
        if inner.is_empty() {
            continue;
        }
        if !first {
            body.push(b',');
        }
        body.extend_from_slice(inner.as_bytes());
        first = false;
    }
    body.push(b']');
    if !types.is_empty() {
        body.extend_from_slice(b",\"types\":");
        serde_json::to_writer(&mut body, &types)?;
    }
    body.push(b'}');
    Ok(Some(Request {
        batches,
        body,
        events,
    }))
}

/// A spooled batch's body, its events kept as text.
#[derive(Deserialize)]
struct Part<'a> {
    #[serde(borrow)]
    events: &'a RawValue,
    #[serde(default, borrow)]
    types: Option<&'a RawValue>,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use domain::{EventId, Lsn, SourceId, TenantId};
    use protocol::{ChangeEvent, Limits, Op};
    use serde_json::json;
    use time::OffsetDateTime;

    use super::*;
    use crate::spool::Resume;

    fn source() -> SourceId {
        SourceId::from_uuid(uuid::Uuid::from_u128(0xba7c4))
    }

    fn event(table: &str, seq: u32) -> ChangeEvent {
        let lsn = Lsn(0x2_0000);
        let event_time = OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
        let millis = (event_time.unix_timestamp_nanos() / 1_000_000) as i64;
        ChangeEvent {
            event_id: EventId::derive(source(), millis, lsn, seq),
            op: Op::Insert,
            schema: "public".into(),
            table: table.into(),
            lsn,
            seq,
            xid: None,
            event_time,
            key: json!({"id": seq}).as_object().cloned().unwrap_or_default(),
            after: json!({"id": seq}).as_object().cloned(),
            before: None,
            unchanged: Vec::new(),
            types: Arc::default(),
        }
    }

    fn types(type_name: &str) -> Arc<BTreeMap<String, String>> {
        Arc::new([("id".to_owned(), type_name.to_owned())].into())
    }

    /// Spools a batch of `events` whose top-level types give `readings` `type_name`.
    fn push(spool: &Spool, events: &[ChangeEvent], type_name: Option<&str>, confirm: u64) {
        let header = Header {
            resume: Resume {
                confirm: Some(confirm),
                ..Resume::default()
            },
            events: events.len(),
            ..Header::default()
        };
        let body: Vec<String> = events
            .iter()
            .map(|event| serde_json::to_string(event).unwrap())
            .collect();
        let given = type_name.map(|type_name| {
            serde_json::to_vec(&[TableTypes {
                schema: "public".into(),
                table: "readings".into(),
                columns: types(type_name),
            }])
            .unwrap()
        });
        spool
            .push_events(&header, body.join(",").as_bytes(), given.as_deref())
            .unwrap();
    }

    fn decoded(request: &Request) -> Vec<ChangeEvent> {
        let limits = Limits {
            event_time_window: None,
            ..Limits::default()
        };
        protocol::decode_batch(&request.body, TenantId::new_random(), source(), &limits)
            .unwrap()
            .events
            .into_iter()
            .map(|entry| entry.unwrap())
            .collect()
    }

    #[test]
    fn a_request_refused_as_too_large_is_sent_again_in_halves_down_to_one_batch() {
        let mut pacing = Pacing::default();
        assert_eq!(pacing.max_batches, MAX_BATCHES);
        assert!(pacing.refused_as_too_large(10));
        assert_eq!(pacing.max_batches, 5);
        assert!(pacing.refused_as_too_large(5));
        assert_eq!(pacing.max_batches, 2);
        assert!(pacing.refused_as_too_large(2));
        assert_eq!(pacing.max_batches, 1);
        assert!(
            !pacing.refused_as_too_large(1),
            "one batch cannot be split here"
        );
        assert_eq!(pacing.max_batches, 1);
    }

    #[test]
    fn the_oldest_batches_go_together_in_order_until_a_bound_or_a_change_of_types() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 30).unwrap();
        assert!(gather(&spool, 8).unwrap().is_none());
        let batch = |from: u32, count: u32, table: &str| -> Vec<ChangeEvent> {
            (from..from + count).map(|seq| event(table, seq)).collect()
        };
        push(&spool, &batch(0, 3, "readings"), Some("bigint"), 10);
        push(&spool, &[], None, 11); // a position only
        push(&spool, &batch(3, 2, "devices"), None, 12);
        push(&spool, &batch(5, 2, "readings"), Some("bigint"), 13);
        // The table's type changed at the source: not in the same request.
        push(&spool, &batch(7, 1, "readings"), Some("numeric"), 14);

        let request = gather(&spool, 8).unwrap().unwrap();
        let numbers: Vec<u64> = request.batches.iter().map(|(number, _)| *number).collect();
        assert_eq!(numbers, [0, 1, 2, 3]);
        assert_eq!(request.events, 7);
        assert_eq!(request.batches.last().unwrap().1.resume.confirm, Some(13));
        let events = decoded(&request);
        let seqs: Vec<u32> = events.iter().map(|event| event.seq).collect();
        assert_eq!(seqs, [0, 1, 2, 3, 4, 5, 6], "in the spool's order");
        for event in &events {
            let expected = if event.table == "readings" {
                types("bigint")
            } else {
                Arc::default()
            };
            assert_eq!(event.types, expected, "{}", event.seq);
        }
        // At most `max_batches`, and one batch goes as it was spooled.
        let two = gather(&spool, 2).unwrap().unwrap();
        assert_eq!(two.batches.len(), 2);
        let one = gather(&spool, 1).unwrap().unwrap();
        assert_eq!(one.body, spool.read(0).unwrap().body);
        for number in numbers {
            spool.remove(number).unwrap();
        }
        let rest = gather(&spool, 8).unwrap().unwrap();
        assert_eq!(decoded(&rest)[0].types, types("numeric"));

        // No more than the edge takes in events.
        spool.remove(4).unwrap();
        let big: Vec<ChangeEvent> = batch(100, 2_000, "devices");
        for _ in 0..3 {
            push(&spool, &big, None, 20);
        }
        let request = gather(&spool, 8).unwrap().unwrap();
        assert_eq!(request.events, 4_000);
        assert_eq!(request.batches.len(), 2);
    }
}
