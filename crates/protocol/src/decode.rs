//! Reading an untrusted batch body into validated events, refusing the whole batch only for
//! what spoils all of it and each bad event on its own otherwise.

use std::collections::HashMap;
use std::fmt;

use domain::{EventId, Lsn, SourceId, TenantId};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::strict_json::{
    StrictContext, Violation, has_out_of_range_integer, nesting_exceeds, read_value,
};
use std::collections::BTreeMap;

use crate::{BatchError, ChangeEvent, EventResult, Limits, Op, ReasonCode};

const BYTE_ORDER_MARK: &[u8] = b"\xEF\xBB\xBF";

/// The fields of an event this version knows; any other field is read (and must be valid
/// JSON under the same strict rules) but ignored.
const EVENT_FIELDS: &[&str] = &[
    "event_id",
    "op",
    "schema",
    "table",
    "lsn",
    "seq",
    "xid",
    "event_time",
    "key",
    "after",
    "before",
    "unchanged",
    "types",
];

/// A batch read from the wire: for each event, in the batch's order, either the validated
/// event (`Ok`, to be masked, deduplicated and stored) or the answer it already has (`Err`:
/// `rejected` with a reason, or `duplicate` when it repeats an earlier event of the same batch
/// exactly).
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedBatch {
    pub events: Vec<Result<ChangeEvent, EventResult>>,
}

impl DecodedBatch {
    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The valid events with their index in the batch.
    pub fn valid(&self) -> impl Iterator<Item = (u32, &ChangeEvent)> {
        self.events
            .iter()
            .enumerate()
            .filter_map(|(index, entry)| entry.as_ref().ok().map(|event| (index_u32(index), event)))
    }

    /// The events that already have their answer.
    pub fn settled(&self) -> impl Iterator<Item = &EventResult> {
        self.events.iter().filter_map(|entry| entry.as_ref().err())
    }
}

impl IntoIterator for DecodedBatch {
    type Item = (u32, Result<ChangeEvent, EventResult>);
    type IntoIter = DecodedEvents;

    /// Each event with its index in the batch.
    fn into_iter(self) -> DecodedEvents {
        DecodedEvents {
            inner: self.events.into_iter().enumerate(),
        }
    }
}

/// The events of a [`DecodedBatch`] with their index, by value.
#[derive(Debug)]
pub struct DecodedEvents {
    inner: std::iter::Enumerate<std::vec::IntoIter<Result<ChangeEvent, EventResult>>>,
}

impl Iterator for DecodedEvents {
    type Item = (u32, Result<ChangeEvent, EventResult>);

    fn next(&mut self) -> Option<Self::Item> {
        self.inner
            .next()
            .map(|(index, entry)| (index_u32(index), entry))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

/// Reads a (decompressed) batch body sent over a connection whose client certificate names
/// `tenant` and `source`.
///
/// The whole batch is refused for invalid UTF-8, a byte order mark, anything that is not one
/// JSON object with an `events` array, nesting deeper than `max_depth`, a repeated top-level
/// field, more than `max_events` or no events, and `tenant_id`/`source_id` that contradict the
/// certificate. Anything else wrong is confined to its event, which is settled as rejected
/// while the others stay valid.
pub fn decode_batch(
    json: &[u8],
    tenant: TenantId,
    source: SourceId,
    limits: &Limits,
) -> Result<DecodedBatch, BatchError> {
    if json.len() > limits.max_decompressed_bytes {
        return Err(BatchError::new(
            ReasonCode::DecompressedTooLarge,
            format!(
                "body is larger than {} bytes",
                limits.max_decompressed_bytes
            ),
        ));
    }
    if json.starts_with(BYTE_ORDER_MARK) {
        return Err(invalid_json(
            "body starts with a byte order mark; send JSON without one",
        ));
    }
    let text = std::str::from_utf8(json).map_err(|error| {
        BatchError::new(
            ReasonCode::InvalidUtf8,
            format!(
                "body is not valid UTF-8 (first bad byte at offset {})",
                error.valid_up_to()
            ),
        )
    })?;
    match json.iter().find(|byte| !is_json_whitespace(**byte)) {
        None => return Err(invalid_json("body is empty")),
        Some(b'{') => {}
        Some(b'[') => return Err(invalid_json("top level must be an object, not an array")),
        Some(_) => return Err(invalid_json("top level must be an object")),
    }
    if nesting_exceeds(json, limits.max_depth) {
        return Err(BatchError::new(
            ReasonCode::NestingTooDeep,
            format!(
                "objects and arrays nest deeper than {} levels",
                limits.max_depth
            ),
        ));
    }

    let top = parse_top_level(text)?;
    if let Some(field) = top.repeated {
        return Err(BatchError::new(
            ReasonCode::DuplicateKey,
            format!("the top-level object repeats `{field}`"),
        ));
    }
    check_claimed_id(
        top.tenant_id,
        "tenant_id",
        tenant,
        ReasonCode::TenantMismatch,
    )?;
    check_claimed_id(
        top.source_id,
        "source_id",
        source,
        ReasonCode::SourceMismatch,
    )?;

    let events = match top.events {
        Some(raw) if raw.get().starts_with('[') => raw,
        Some(raw) if raw.get() != "null" => {
            return Err(invalid_json("`events` must be an array"));
        }
        _ => return Err(invalid_json("the top-level object has no `events` array")),
    };
    let mut deserializer = serde_json::Deserializer::from_str(events.get());
    let list = EventList {
        max_events: limits.max_events,
    }
    .deserialize(&mut deserializer)
    .map_err(|error| json_error("`events`", &error))?;
    if list.total > limits.max_events {
        return Err(BatchError::new(
            ReasonCode::TooManyEvents,
            format!("a batch holds at most {} events", limits.max_events),
        ));
    }
    if list.events.is_empty() {
        return Err(BatchError::new(
            ReasonCode::EmptyBatch,
            "`events` is empty; send at least one event",
        ));
    }

    let table_types = match top.types {
        Some(raw) => read_table_types(raw.get(), limits)?,
        None => TableTypes::new(),
    };

    let mut decoded: Vec<Result<ChangeEvent, EventResult>> = Vec::with_capacity(list.events.len());
    let mut first_index_of: HashMap<EventId, usize> = HashMap::new();
    for (index, raw) in list.events.into_iter().enumerate() {
        let entry = match decode_event(raw.get(), source, limits).map(|mut event| {
            // An event without types of its own has its table's, when the batch gives them.
            if event.types.is_empty()
                && let Some(types) = table_types
                    .get(&event.schema)
                    .and_then(|tables| tables.get(&event.table))
            {
                event.types = types.clone();
            }
            event
        }) {
            Err(rejection) => Err(EventResult::rejected(
                index_u32(index),
                rejection.event_id,
                rejection.code,
                rejection.message,
            )),
            Ok(event) => match first_index_of.get(&event.event_id) {
                None => {
                    first_index_of.insert(event.event_id, index);
                    Ok(event)
                }
                Some(&first) => repeat_of(decoded.get(first), event, index),
            },
        };
        decoded.push(entry);
    }
    Ok(DecodedBatch { events: decoded })
}

/// A batch's top-level `types`, by schema and table.
type TableTypes = HashMap<String, HashMap<String, std::sync::Arc<BTreeMap<String, String>>>>;

/// Reads a batch's top-level `types`: a list of `{schema, table, columns}`, at most one per
/// table and no more than the batch may hold events. Anything wrong in it refuses the batch,
/// since every event of its tables would be stored without the types the agent meant them to
/// have.
fn read_table_types(text: &str, limits: &Limits) -> Result<TableTypes, BatchError> {
    let invalid = || {
        BatchError::new(
            ReasonCode::InvalidType,
            "`types` must be a list of {schema, table, columns} objects, one per table, whose \
             `columns` map column names to type names",
        )
    };
    let context = StrictContext::new(limits.max_string_bytes, &[]);
    let value = read_value(text, &context).map_err(|_| match context.violation() {
        Some((Violation::DuplicateKey | Violation::KeysCollide, _)) => BatchError::new(
            ReasonCode::DuplicateKey,
            "an object in `types` repeats a key",
        ),
        _ => invalid(),
    })?;
    let entries = match value {
        Value::Null => return Ok(TableTypes::new()),
        Value::Array(entries) => entries,
        _ => return Err(invalid()),
    };
    if entries.len() > limits.max_events {
        return Err(BatchError::new(
            ReasonCode::TooManyEvents,
            format!("`types` lists more than {} tables", limits.max_events),
        ));
    }
    let mut tables = TableTypes::new();
    for entry in entries {
        let Value::Object(mut entry) = entry else {
            return Err(invalid());
        };
        let schema = required_name(&mut entry, "schema", limits).map_err(|_| invalid())?;
        let table = required_name(&mut entry, "table", limits).map_err(|_| invalid())?;
        // `columns` has the shape of an event's `types`, and is read by the same rules.
        let mut columns = Map::new();
        match entry.remove("columns") {
            Some(found @ Value::Object(_)) => columns.insert("types".to_owned(), found),
            _ => return Err(invalid()),
        };
        let types = read_types(&mut columns, limits).map_err(|_| invalid())?;
        let previous = tables
            .entry(schema)
            .or_default()
            .insert(table, std::sync::Arc::new(types));
        if previous.is_some() {
            return Err(BatchError::new(
                ReasonCode::InvalidType,
                "`types` lists a table more than once",
            ));
        }
    }
    Ok(tables)
}

/// The answer for an event whose id appeared at an earlier, valid index of the batch.
fn repeat_of(
    first: Option<&Result<ChangeEvent, EventResult>>,
    event: ChangeEvent,
    index: usize,
) -> Result<ChangeEvent, EventResult> {
    let same = matches!(first, Some(Ok(earlier)) if *earlier == event);
    if same {
        Err(EventResult::duplicate(index_u32(index), event.event_id))
    } else {
        Err(EventResult::rejected(
            index_u32(index),
            Some(event.event_id),
            ReasonCode::EventIdConflict,
            "`event_id` appears earlier in the batch with a different payload",
        ))
    }
}

fn index_u32(index: usize) -> u32 {
    u32::try_from(index).unwrap_or(u32::MAX)
}

fn is_json_whitespace(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r')
}

fn invalid_json(message: impl Into<String>) -> BatchError {
    BatchError::new(ReasonCode::InvalidJson, message)
}

/// A serde_json error as a safe message: syntax errors have fixed texts and a position, but
/// data errors can quote the input, so those get a generic text.
fn json_error(what: &str, error: &serde_json::Error) -> BatchError {
    match error.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            invalid_json(format!("{what} is not valid JSON: {error}"))
        }
        _ => invalid_json(format!("{what} does not have the expected shape")),
    }
}

fn check_claimed_id<Id>(
    claimed: Option<&RawValue>,
    field: &str,
    certified: Id,
    mismatch: ReasonCode,
) -> Result<(), BatchError>
where
    Id: PartialEq + for<'de> serde::Deserialize<'de>,
{
    let Some(raw) = claimed else {
        return Ok(());
    };
    let claimed: Option<Id> = serde_json::from_str(raw.get()).map_err(|_| {
        BatchError::new(
            ReasonCode::InvalidType,
            format!("`{field}` must be a UUID string"),
        )
    })?;
    match claimed {
        Some(claimed) if claimed != certified => Err(BatchError::new(
            mismatch,
            format!("`{field}` does not match the client certificate"),
        )),
        _ => Ok(()),
    }
}

/// The top-level object: the fields this version reads, kept as raw text; any other field is
/// skipped.
#[derive(Default)]
struct TopLevel<'a> {
    events: Option<&'a RawValue>,
    tenant_id: Option<&'a RawValue>,
    source_id: Option<&'a RawValue>,
    types: Option<&'a RawValue>,
    repeated: Option<&'static str>,
}

fn parse_top_level(text: &str) -> Result<TopLevel<'_>, BatchError> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let top = TopLevelVisitor
        .deserialize(&mut deserializer)
        .map_err(|error| json_error("body", &error))?;
    deserializer
        .end()
        .map_err(|error| json_error("body", &error))?;
    Ok(top)
}

struct TopLevelVisitor;

impl<'de> DeserializeSeed<'de> for TopLevelVisitor {
    type Value = TopLevel<'de>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TopLevelVisitor {
    type Value = TopLevel<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a batch object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut top = TopLevel::default();
        while let Some(key) = map.next_key::<String>()? {
            let (slot, name) = match key.as_str() {
                "events" => (&mut top.events, "events"),
                "tenant_id" => (&mut top.tenant_id, "tenant_id"),
                "source_id" => (&mut top.source_id, "source_id"),
                "types" => (&mut top.types, "types"),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            let value = map.next_value::<&'de RawValue>()?;
            if slot.is_some() {
                top.repeated.get_or_insert(name);
            }
            *slot = Some(value);
        }
        Ok(top)
    }
}

/// The `events` array as raw event texts, at most `max_events` of them; further elements are
/// only counted, so an oversized batch costs no memory.
struct EventList {
    max_events: usize,
}

struct RawEvents<'a> {
    events: Vec<&'a RawValue>,
    total: usize,
}

impl<'de> DeserializeSeed<'de> for EventList {
    type Value = RawEvents<'de>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for EventList {
    type Value = RawEvents<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("an array of events")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut events = Vec::new();
        while events.len() < self.max_events {
            match seq.next_element::<&'de RawValue>()? {
                Some(event) => events.push(event),
                None => {
                    let total = events.len();
                    return Ok(RawEvents { events, total });
                }
            }
        }
        let mut total = events.len();
        while seq.next_element::<IgnoredAny>()?.is_some() {
            total += 1;
        }
        Ok(RawEvents { events, total })
    }
}

/// Why one event was refused.
#[derive(Debug)]
struct Rejection {
    event_id: Option<EventId>,
    code: ReasonCode,
    message: String,
}

impl Rejection {
    fn new(code: ReasonCode, message: impl Into<String>) -> Self {
        Self {
            event_id: None,
            code,
            message: message.into(),
        }
    }
}

fn decode_event(text: &str, source: SourceId, limits: &Limits) -> Result<ChangeEvent, Rejection> {
    let value = parse_event_value(text, limits).map_err(|mut rejection| {
        // The event broke a rule of strict reading, but its id may still be readable: the
        // answer names it so the agent can tell which event it was.
        rejection.event_id = readable_event_id(text);
        rejection
    })?;
    let Value::Object(mut object) = value else {
        return Err(Rejection::new(
            ReasonCode::InvalidType,
            "an event must be a JSON object",
        ));
    };
    let event_id = read_event_id(&mut object)?;
    let with_id = |mut rejection: Rejection| {
        rejection.event_id = Some(event_id);
        rejection
    };
    if has_out_of_range_integer(text) {
        return Err(with_id(Rejection::new(
            ReasonCode::InvalidType,
            "a number is an integer outside the 64-bit range; send such values as strings",
        )));
    }
    let event = read_fields(object, event_id, limits).map_err(with_id)?;
    if event.expected_event_id(source) != event_id {
        return Err(with_id(Rejection::new(
            ReasonCode::EventIdMismatch,
            "`event_id` is not the id derived from the source, `event_time` (Unix milliseconds), `lsn` and `seq`",
        )));
    }
    Ok(event)
}

/// Parses one event's text strictly: repeated keys, U+0000 and over-long strings refuse it.
fn parse_event_value(text: &str, limits: &Limits) -> Result<Value, Rejection> {
    let context = StrictContext::new(limits.max_string_bytes, EVENT_FIELDS);
    match read_value(text, &context) {
        Ok(value) => Ok(value),
        Err(error) => Err(match context.violation() {
            Some((violation, field)) => violation_rejection(violation, field, limits),
            None => event_json_rejection(&error),
        }),
    }
}

fn violation_rejection(
    violation: Violation,
    field: Option<&'static str>,
    limits: &Limits,
) -> Rejection {
    let place = match field {
        Some(field) => format!("in `{field}`"),
        None => "in the event".to_owned(),
    };
    match violation {
        Violation::DuplicateKey => Rejection::new(
            ReasonCode::DuplicateKey,
            format!("an object {place} repeats a key"),
        ),
        Violation::KeysCollide => Rejection::new(
            ReasonCode::KeysCollideAfterNormalisation,
            format!(
                "two keys of an object {place} differ only by Unicode normalisation; keys are \
                 stored in NFC, so send one of them"
            ),
        ),
        Violation::NulInString => Rejection::new(
            ReasonCode::NulInString,
            format!("a string or key {place} holds U+0000, which PostgreSQL cannot store"),
        ),
        Violation::StringTooLong => Rejection::new(
            ReasonCode::StringTooLong,
            format!(
                "a string or key {place} is longer than {} bytes",
                limits.max_string_bytes
            ),
        ),
    }
}

/// The event's text passed the batch's syntax check, so what remains is what serde_json checks
/// only when it reads values: numbers out of the double range and invalid escapes (lone
/// surrogates). Both messages are fixed texts with a position.
fn event_json_rejection(error: &serde_json::Error) -> Rejection {
    match error.classify() {
        serde_json::error::Category::Syntax
            if error.to_string().starts_with("number out of range") =>
        {
            Rejection::new(
                ReasonCode::InvalidType,
                "a number is outside the range of a 64-bit double",
            )
        }
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => Rejection::new(
            ReasonCode::InvalidJson,
            format!("the event is not valid JSON: {error}"),
        ),
        _ => Rejection::new(ReasonCode::InvalidJson, "the event is not valid JSON"),
    }
}

/// The event's id, read leniently from an event strict reading refused: the top-level
/// `event_id` if it is a UUID and the only one, whatever else the event holds. `None` when the
/// text cannot be read that far or the id is absent, repeated or not a UUID.
fn readable_event_id(text: &str) -> Option<EventId> {
    struct IdOnly<'a>(&'a std::cell::Cell<Option<Option<EventId>>>);

    impl<'de> Visitor<'de> for IdOnly<'_> {
        type Value = ();

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str("an event object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<String>()? {
                if key != "event_id" {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
                let id = map
                    .next_value::<Option<String>>()?
                    .and_then(|text| Uuid::parse_str(&text).ok())
                    .map(EventId::from_uuid);
                // A repeated `event_id` names one event only if both copies are the same.
                self.0.set(match self.0.get() {
                    None => Some(id),
                    Some(earlier) if earlier == id => Some(id),
                    Some(_) => Some(None),
                });
            }
            Ok(())
        }
    }

    let found = std::cell::Cell::new(None);
    let mut deserializer = serde_json::Deserializer::from_str(text);
    // An error after the id was read (a bad value further on) leaves what was found.
    let _ = de::Deserializer::deserialize_map(&mut deserializer, IdOnly(&found));
    found.get().flatten()
}

fn read_event_id(object: &mut Map<String, Value>) -> Result<EventId, Rejection> {
    let text = required_string(object, "event_id")?;
    Uuid::parse_str(&text)
        .map(EventId::from_uuid)
        .map_err(|_| Rejection::new(ReasonCode::InvalidType, "`event_id` must be a UUID"))
}

fn read_fields(
    mut object: Map<String, Value>,
    event_id: EventId,
    limits: &Limits,
) -> Result<ChangeEvent, Rejection> {
    let op_text = required_string(&mut object, "op")?;
    let op: Op = op_text.parse().map_err(|_| {
        Rejection::new(
            ReasonCode::UnknownOp,
            "`op` must be one of insert, update, delete, truncate, read",
        )
    })?;
    let schema = required_name(&mut object, "schema", limits)?;
    let table = required_name(&mut object, "table", limits)?;
    let lsn: Lsn = required_string(&mut object, "lsn")?.parse().map_err(|_| {
        Rejection::new(
            ReasonCode::InvalidType,
            "`lsn` must be text like 16/B374D848",
        )
    })?;
    // Storage keeps these as signed 64- and 32-bit integers: bounded here so that nothing
    // acknowledged can fail to be stored.
    if lsn.0 > i64::MAX as u64 {
        return Err(Rejection::new(
            ReasonCode::InvalidType,
            "`lsn` must be below 8000000000000000/0",
        ));
    }
    let seq = required(&mut object, "seq")?
        .as_u64()
        .filter(|seq| *seq <= i32::MAX as u64)
        .and_then(|seq| u32::try_from(seq).ok())
        .ok_or_else(|| {
            Rejection::new(
                ReasonCode::InvalidType,
                "`seq` must be an integer from 0 to 2147483647",
            )
        })?;
    let xid = match optional(&mut object, "xid") {
        None => None,
        Some(xid) => Some(
            xid.as_u64()
                .filter(|xid| *xid <= i64::MAX as u64)
                .ok_or_else(|| {
                    Rejection::new(
                        ReasonCode::InvalidType,
                        "`xid` must be an integer from 0 to 9223372036854775807",
                    )
                })?,
        ),
    };
    let event_time_text = required_string(&mut object, "event_time")?;
    let event_time = OffsetDateTime::parse(&event_time_text, &Rfc3339).map_err(|_| {
        Rejection::new(
            ReasonCode::InvalidTimestamp,
            "`event_time` must be RFC 3339 with an explicit offset, like 2026-01-01T12:00:00.123Z",
        )
    })?;
    if let Some(window) = limits.event_time_window {
        let now = OffsetDateTime::now_utc();
        if event_time < now - window.max_age || event_time > now + window.max_ahead {
            return Err(Rejection::new(
                ReasonCode::InvalidTimestamp,
                format!(
                    "`event_time` must lie between {} days before and {} day(s) after the \
                     edge's clock",
                    window.max_age.whole_days(),
                    window.max_ahead.whole_days()
                ),
            ));
        }
    }

    let key = optional_object(&mut object, "key")?;
    let after = optional_object(&mut object, "after")?;
    let before = optional_object(&mut object, "before")?;
    let key = check_shape(op, key, &after, &before)?;
    if key.len() > limits.max_key_columns {
        return Err(Rejection::new(
            ReasonCode::TooManyKeyColumns,
            format!("`key` has more than {} columns", limits.max_key_columns),
        ));
    }
    for (field, columns) in [
        ("key", Some(&key)),
        ("after", after.as_ref()),
        ("before", before.as_ref()),
    ] {
        let Some(columns) = columns else { continue };
        if !columns.keys().all(|column| is_valid_name(column, limits)) {
            return Err(Rejection::new(
                ReasonCode::InvalidName,
                format!(
                    "a column name in `{field}` must be 1 to {} bytes without control characters",
                    limits.max_name_bytes
                ),
            ));
        }
    }

    let unchanged = read_unchanged(&mut object, op, after.as_ref(), limits)?;
    let types = std::sync::Arc::new(read_types(&mut object, limits)?);

    Ok(ChangeEvent {
        event_id,
        op,
        schema,
        table,
        lsn,
        seq,
        xid,
        event_time,
        key,
        after,
        before,
        unchanged,
        types,
    })
}

/// `unchanged`: names of columns an update did not send, none of them also in `after`.
fn read_unchanged(
    object: &mut Map<String, Value>,
    op: Op,
    after: Option<&Map<String, Value>>,
    limits: &Limits,
) -> Result<Vec<String>, Rejection> {
    let Some(value) = optional(object, "unchanged") else {
        return Ok(Vec::new());
    };
    if op != Op::Update {
        return Err(unexpected(op, "unchanged"));
    }
    let invalid = || {
        Rejection::new(
            ReasonCode::InvalidType,
            "`unchanged` must be a list of column names that are not in `after`",
        )
    };
    let Value::Array(items) = value else {
        return Err(invalid());
    };
    let mut names = Vec::with_capacity(items.len());
    for item in items {
        let Value::String(name) = item else {
            return Err(invalid());
        };
        if !is_valid_name(&name, limits) {
            return Err(Rejection::new(
                ReasonCode::InvalidName,
                format!(
                    "a column name in `unchanged` must be 1 to {} bytes without control characters",
                    limits.max_name_bytes
                ),
            ));
        }
        if after.is_some_and(|after| after.contains_key(&name)) || names.contains(&name) {
            return Err(invalid());
        }
        names.push(name);
    }
    Ok(names)
}

/// `types`: column name → the source's type name.
fn read_types(
    object: &mut Map<String, Value>,
    limits: &Limits,
) -> Result<BTreeMap<String, String>, Rejection> {
    let Some(types) = optional_object(object, "types")? else {
        return Ok(BTreeMap::new());
    };
    types
        .into_iter()
        .map(|(column, type_name)| match type_name {
            Value::String(type_name)
                if is_valid_name(&column, limits)
                    && type_name.len() <= 2 * limits.max_name_bytes =>
            {
                Ok((column, type_name))
            }
            _ => Err(Rejection::new(
                ReasonCode::InvalidType,
                "`types` must map column names to type names",
            )),
        })
        .collect()
}

/// Which of `key`, `after` and `before` each operation carries:
///
/// | op       | key      | after    | before   |
/// |----------|----------|----------|----------|
/// | insert   | required | required | absent   |
/// | update   | required | required | optional |
/// | delete   | required | absent   | optional |
/// | read     | required | required | absent   |
/// | truncate | absent   | absent   | absent   |
fn check_shape(
    op: Op,
    key: Option<Map<String, Value>>,
    after: &Option<Map<String, Value>>,
    before: &Option<Map<String, Value>>,
) -> Result<Map<String, Value>, Rejection> {
    let key = key.unwrap_or_default();
    if op.has_key() && key.is_empty() {
        return Err(Rejection::new(
            ReasonCode::MissingKey,
            format!("`key` must name the primary-key columns of a {op} event"),
        ));
    }
    if !op.has_key() && !key.is_empty() {
        return Err(unexpected(op, "key"));
    }
    let needs_after = matches!(op, Op::Insert | Op::Update | Op::Read);
    if needs_after && after.is_none() {
        return Err(Rejection::new(
            ReasonCode::MissingField,
            format!("`after` is required for a {op} event"),
        ));
    }
    if !needs_after && after.is_some() {
        return Err(unexpected(op, "after"));
    }
    let allows_before = matches!(op, Op::Update | Op::Delete);
    if !allows_before && before.is_some() {
        return Err(unexpected(op, "before"));
    }
    Ok(key)
}

fn unexpected(op: Op, field: &str) -> Rejection {
    Rejection::new(
        ReasonCode::UnexpectedField,
        format!("a {op} event carries no `{field}`"),
    )
}

fn is_valid_name(name: &str, limits: &Limits) -> bool {
    !name.is_empty() && name.len() <= limits.max_name_bytes && !name.chars().any(char::is_control)
}

/// A field's value; absent and `null` are the same.
fn optional(object: &mut Map<String, Value>, field: &str) -> Option<Value> {
    object.remove(field).filter(|value| !value.is_null())
}

fn required(object: &mut Map<String, Value>, field: &str) -> Result<Value, Rejection> {
    optional(object, field)
        .ok_or_else(|| Rejection::new(ReasonCode::MissingField, format!("`{field}` is required")))
}

fn required_string(object: &mut Map<String, Value>, field: &str) -> Result<String, Rejection> {
    match required(object, field)? {
        Value::String(text) => Ok(text),
        _ => Err(Rejection::new(
            ReasonCode::InvalidType,
            format!("`{field}` must be a string"),
        )),
    }
}

fn required_name(
    object: &mut Map<String, Value>,
    field: &str,
    limits: &Limits,
) -> Result<String, Rejection> {
    let name = required_string(object, field)?;
    if !is_valid_name(&name, limits) {
        return Err(Rejection::new(
            ReasonCode::InvalidName,
            format!(
                "`{field}` must be 1 to {} bytes without control characters",
                limits.max_name_bytes
            ),
        ));
    }
    Ok(name)
}

fn optional_object(
    object: &mut Map<String, Value>,
    field: &str,
) -> Result<Option<Map<String, Value>>, Rejection> {
    match optional(object, field) {
        None => Ok(None),
        Some(Value::Object(columns)) => Ok(Some(columns)),
        Some(_) => Err(Rejection::new(
            ReasonCode::InvalidType,
            format!("`{field}` must be an object of column names to values"),
        )),
    }
}
