//! An entity's materialized state and the pure rules that change it: applying an event, and
//! deriving the typed row, the typed extras and (for a reading) the reading row.
//!
//! Every field remembers the source position (commit LSN, sequence) that last set it, and the
//! state remembers its last full image (insert, snapshot read or delete). An insert or delete
//! replaces every field older than itself; an update sets the fields it carries that are older
//! than itself and keeps the rest (the unchanged, TOASTed columns among them). Applying is
//! therefore idempotent and commutative: any order and any duplication of the same events gives
//! the state of applying them once in order.
//!
//! An entity also remembers which source tables fed it ([`EntityState::feeds`]), so a truncate
//! of one of them can be applied to it as a delete at the truncate's position, whether its
//! events arrive before or after the truncate.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use store::service::read_models::{ExtraValue, ReadingRow};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::mapping::{ColumnType, EntityKind, EntityMapping};

/// A source position: (commit LSN, sequence within the transaction).
pub type Pos = (i64, i32);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Field {
    pub v: Value,
    pub p: Pos,
}

/// Stored as [`StoredState`]'s JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "StoredState", into = "StoredState")]
pub struct EntityState {
    /// The last full image (insert, read or delete).
    pub base: Option<Pos>,
    pub base_is_delete: bool,
    /// Commit time of the delete that is the base, if it is one.
    pub deleted_at: Option<String>,
    /// The newest event applied, and its source.
    pub pos: Option<Pos>,
    pub source: Option<Uuid>,
    pub fields: BTreeMap<String, Field>,
    /// The source tables that fed the entity (see [`feed_name`]), each with its oldest event:
    /// a truncate of the table at a newer position deletes the entity at that position.
    pub feeds: BTreeMap<String, Feed>,
}

/// An [`EntityState`] as it is stored. Most fields were set by the base image (a reading's, by
/// its insert, all of them): those are kept by value in `image`, their position being the
/// base's, and only the others with their own in `fields`. That halves a reading's state, which
/// is most of what the materializer writes per reading. A state stored with every field in
/// `fields` (as before `image` existed) reads the same.
#[derive(Serialize, Deserialize)]
struct StoredState {
    #[serde(default)]
    base: Option<Pos>,
    #[serde(default, skip_serializing_if = "is_false")]
    base_is_delete: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deleted_at: Option<String>,
    #[serde(default)]
    pos: Option<Pos>,
    #[serde(default)]
    source: Option<Uuid>,
    /// The fields set at the base's position, by value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    image: BTreeMap<String, Value>,
    /// The fields set at another position.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    fields: BTreeMap<String, Field>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    feeds: BTreeMap<String, Feed>,
}

impl From<EntityState> for StoredState {
    fn from(state: EntityState) -> Self {
        let mut image = BTreeMap::new();
        let mut fields = BTreeMap::new();
        for (column, field) in state.fields {
            match state.base {
                Some(base) if field.p == base => {
                    image.insert(column, field.v);
                }
                _ => {
                    fields.insert(column, field);
                }
            }
        }
        StoredState {
            base: state.base,
            base_is_delete: state.base_is_delete,
            deleted_at: state.deleted_at,
            pos: state.pos,
            source: state.source,
            image,
            fields,
            feeds: state.feeds,
        }
    }
}

impl From<StoredState> for EntityState {
    fn from(stored: StoredState) -> Self {
        let mut fields = stored.fields;
        // `image` is only ever written with a base; one without could not say its position.
        if let Some(base) = stored.base {
            for (column, value) in stored.image {
                fields.insert(column, Field { v: value, p: base });
            }
        }
        EntityState {
            base: stored.base,
            base_is_delete: stored.base_is_delete,
            deleted_at: stored.deleted_at,
            pos: stored.pos,
            source: stored.source,
            fields,
            feeds: stored.feeds,
        }
    }
}

fn is_false(flag: &bool) -> bool {
    !flag
}

/// A source table that fed an entity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feed {
    /// The position of the table's oldest event of the entity.
    pub first: Pos,
    /// The column that held the entity's id in that event: what a row derived after a truncate
    /// of the table, without an event of its own, leaves out of the extras.
    pub id: String,
}

/// How an entity state names a source table (`schema.table`) of a source.
pub fn feed_name(source: Uuid, table: &str) -> String {
    format!("{source}:{table}")
}

/// What an event does to an entity.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Insert or snapshot read: the whole row.
    Image(Map<String, Value>),
    /// An update: the columns it carries, and those it left unchanged without sending.
    Update {
        after: Map<String, Value>,
        unchanged: Vec<String>,
    },
    Delete,
}

impl EntityState {
    /// Applies one event at `pos`; returns whether the state changed.
    pub fn apply(&mut self, change: &Change, pos: Pos, event_time: &str, source: Uuid) -> bool {
        if self.base.is_some_and(|base| pos <= base) {
            // Older than (or the same as) the last full image: superseded.
            return false;
        }
        let before = self.clone();
        match change {
            Change::Image(image) => {
                self.replace_older_than(pos, Some(image));
                self.base_is_delete = false;
                self.deleted_at = None;
            }
            Change::Delete => {
                self.replace_older_than(pos, None);
                self.base_is_delete = true;
                self.deleted_at = Some(event_time.to_owned());
            }
            Change::Update { after, unchanged } => {
                for (column, value) in after {
                    if unchanged.iter().any(|name| name == column) {
                        continue;
                    }
                    let newer = self.fields.get(column).is_none_or(|field| field.p < pos);
                    if newer {
                        self.fields.insert(
                            column.clone(),
                            Field {
                                v: value.clone(),
                                p: pos,
                            },
                        );
                    }
                }
            }
        }
        if self.pos.is_none_or(|newest| pos > newest) {
            self.pos = Some(pos);
            self.source = Some(source);
        }
        *self != before
    }

    /// Records that `feed` fed this entity with an event at `pos` whose id column was
    /// `id_column`; returns whether the state changed. The oldest event is kept, so the record
    /// does not depend on the order events arrive in.
    pub fn record_feed(&mut self, feed: &str, pos: Pos, id_column: &str) -> bool {
        match self.feeds.get_mut(feed) {
            Some(known) if known.first <= pos => false,
            Some(known) => {
                known.first = pos;
                id_column.clone_into(&mut known.id);
                true
            }
            None => {
                self.feeds.insert(
                    feed.to_owned(),
                    Feed {
                        first: pos,
                        id: id_column.to_owned(),
                    },
                );
                true
            }
        }
    }

    fn replace_older_than(&mut self, pos: Pos, image: Option<&Map<String, Value>>) {
        self.fields.retain(|_, field| field.p > pos);
        if let Some(image) = image {
            for (column, value) in image {
                self.fields.entry(column.clone()).or_insert_with(|| Field {
                    v: value.clone(),
                    p: pos,
                });
            }
        }
        self.base = Some(pos);
    }

    /// Deleted: the newest event is the delete that is the base.
    pub fn is_deleted(&self) -> bool {
        self.base_is_delete && self.pos == self.base
    }
}

/// Converts a value to a typed column's type; `None` when it cannot be.
pub fn coerce(value: &Value, column_type: ColumnType) -> Option<Value> {
    match (value, column_type) {
        (Value::Null, _) => Some(Value::Null),
        (Value::String(text), ColumnType::Text) => Some(Value::String(text.clone())),
        (Value::Number(number), ColumnType::Text) => Some(Value::String(number.to_string())),
        (Value::Bool(flag), ColumnType::Text) => Some(Value::String(flag.to_string())),
        (Value::Number(number), ColumnType::Num) => number
            .as_f64()
            .filter(|number| number.is_finite())
            .map(typed_number),
        (Value::String(text), ColumnType::Num) => text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|number| number.is_finite())
            .map(typed_number),
        (Value::String(text), ColumnType::Time) => parse_time(text).map(Value::String),
        _ => None,
    }
}

/// A number for a typed column. Typed rows reach PostgreSQL as `jsonb`, whose numbers are
/// `numeric` and have no negative zero; a negative zero travels as the text `-0`, which the
/// column's `double precision` input reads as sent.
fn typed_number(number: f64) -> Value {
    if number == 0.0 && number.is_sign_negative() {
        Value::String("-0".into())
    } else {
        json!(number)
    }
}

/// The number a typed column's value holds: the inverse of [`typed_number`].
fn number_of(value: &Value) -> Option<f64> {
    match value {
        Value::String(text) => text.parse().ok(),
        value => value.as_f64(),
    }
}

/// An ISO-8601 time (RFC 3339, or a bare date as its UTC midnight) as normalised RFC 3339 in
/// UTC; `None` if the text is not one, or outside years 1 to 9999.
pub fn parse_time(text: &str) -> Option<String> {
    time_of(text)?.format(&Rfc3339).ok()
}

/// An ISO-8601 time (as [`parse_time`] takes it) in UTC.
pub fn time_of(text: &str) -> Option<OffsetDateTime> {
    let parsed = OffsetDateTime::parse(text, &Rfc3339).ok().or_else(|| {
        let format = time::macros::format_description!("[year]-[month]-[day]");
        time::Date::parse(text, &format)
            .ok()
            .map(|date| date.midnight().assume_utc())
    })?;
    let utc = parsed.checked_to_offset(time::UtcOffset::UTC)?;
    (1..=9999).contains(&utc.year()).then_some(utc)
}

/// The extras table a value lands in (the variant), with the value stored; `None` for JSON
/// null (no value).
pub fn extra_of(value: &Value) -> Option<ExtraValue> {
    match value {
        Value::Null => None,
        Value::Bool(flag) => Some(ExtraValue::Bool(*flag)),
        Value::Number(number) => Some(match number.as_f64().filter(|n| n.is_finite()) {
            Some(number) => ExtraValue::Num(number),
            None => ExtraValue::Text(number.to_string()),
        }),
        Value::String(text) => Some(match time_of(text) {
            Some(time) => ExtraValue::Time(time),
            None => ExtraValue::Text(text.clone()),
        }),
        Value::Array(_) | Value::Object(_) => Some(ExtraValue::Text(value.to_string())),
    }
}

/// The typed row and the extras of an entity (site, device or session) in its state.
#[derive(Debug)]
pub struct DerivedEntity {
    pub row: Value,
    /// (key, value)
    pub extras: Vec<(String, ExtraValue)>,
}

pub fn derive_entity(
    tenant: Uuid,
    kind: EntityKind,
    entity_id: &str,
    id_column: &str,
    state: &EntityState,
    mapping: &EntityMapping,
) -> DerivedEntity {
    let (pos_lsn, pos_seq) = state.pos.unwrap_or((0, 0));
    let mut row = Map::new();
    row.insert("tenant_id".into(), json!(tenant));
    row.insert(kind.id_column().into(), json!(entity_id));
    row.insert(
        "source_id".into(),
        json!(state.source.unwrap_or_else(Uuid::nil)),
    );
    row.insert("pos_lsn".into(), json!(pos_lsn));
    row.insert("pos_seq".into(), json!(pos_seq));
    let deleted = state.is_deleted();
    row.insert(
        "deleted_at".into(),
        if deleted {
            json!(state.deleted_at)
        } else {
            Value::Null
        },
    );
    for (typed, _) in kind.typed_columns() {
        row.insert((*typed).into(), Value::Null);
    }
    let mut extras = Vec::new();
    if !deleted {
        // When two source columns feed one typed column, the one set last wins.
        let mut claimed: BTreeMap<&str, (Pos, Value)> = BTreeMap::new();
        for (column, field) in &state.fields {
            if column == id_column {
                continue;
            }
            let typed = mapping
                .claim(column)
                .and_then(|typed| kind.column_type(typed).map(|ty| (typed, ty)));
            match typed.map(|(typed, ty)| (typed, coerce(&field.v, ty))) {
                Some((typed, Some(value))) => {
                    let newer = claimed
                        .get(typed)
                        .is_none_or(|(position, _)| field.p > *position);
                    if newer {
                        claimed.insert(typed, (field.p, value));
                    }
                }
                // Unclaimed, or no longer coercible under a changed mapping: kept as an extra.
                _ => {
                    if let Some(value) = extra_of(&field.v) {
                        extras.push((column.clone(), value));
                    }
                }
            }
        }
        for (typed, (_, value)) in claimed {
            row.insert(typed.into(), value);
        }
    }
    DerivedEntity {
        row: Value::Object(row),
        extras,
    }
}

/// The reading row of a reading in its state, if it is complete and not deleted; the row keeps
/// the state as `state_text` (its JSON).
pub fn derive_reading(
    tenant: Uuid,
    reading_id: &str,
    state: &EntityState,
    mapping: &EntityMapping,
    state_text: &str,
) -> Option<ReadingRow> {
    if state.is_deleted() {
        return None;
    }
    let mapping = mapping.settled_for(state.fields.keys().map(String::as_str));
    let entity = mapping.reading_entity.unwrap_or(EntityKind::Device);
    let mut typed: BTreeMap<&str, Value> = BTreeMap::new();
    for (column, field) in &state.fields {
        if let Some(name) = mapping.claim(column)
            && let Some(ty) = EntityKind::Reading.column_type(name)
            && let Some(value) = coerce(&field.v, ty)
            && !value.is_null()
        {
            typed.insert(name, value);
        }
    }
    let metric_key = typed.get("metric_key")?.as_str()?;
    if metric_key.is_empty() || metric_key.chars().count() > 200 {
        return None;
    }
    let (pos_lsn, pos_seq) = state.pos?;
    Some(ReadingRow {
        tenant_id: tenant,
        reading_id: reading_id.to_owned(),
        entity_kind: entity.as_str(),
        entity_id: typed.get("entity_id")?.as_str()?.to_owned(),
        metric_key: metric_key.to_owned(),
        measured_at: time_of(typed.get("measured_at")?.as_str()?)?,
        value: number_of(typed.get("value")?)?,
        pos_lsn,
        pos_seq,
        state: state_text.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folded() -> EntityState {
        let mut state = EntityState::default();
        let source = Uuid::nil();
        let image = json!({ "reading_id": 7, "device_id": "d1", "value": 2.5, "note": null });
        let Value::Object(image) = image else {
            unreachable!()
        };
        state.apply(
            &Change::Image(image),
            (100, 0),
            "2026-12-07T10:00:00Z",
            source,
        );
        let Value::Object(after) = json!({ "value": 3.5 }) else {
            unreachable!()
        };
        let update = Change::Update {
            after,
            unchanged: Vec::new(),
        };
        state.apply(&update, (200, 1), "2026-12-07T10:00:01Z", source);
        state.record_feed("source:public.readings", (100, 0), "reading_id");
        state
    }

    #[test]
    fn a_state_reads_back_as_it_was_written_with_the_base_images_fields_by_value() {
        let state = folded();
        let text = serde_json::to_string(&state).unwrap();
        let stored: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            stored["image"],
            json!({ "device_id": "d1", "note": null, "reading_id": 7 })
        );
        assert_eq!(
            stored["fields"],
            json!({ "value": { "v": 3.5, "p": [200, 1] } })
        );
        assert_eq!(serde_json::from_str::<EntityState>(&text).unwrap(), state);
    }

    #[test]
    fn a_state_stored_with_every_field_positioned_reads_the_same() {
        let state = folded();
        let mut fields = Map::new();
        for (column, field) in &state.fields {
            fields.insert(column.clone(), serde_json::to_value(field).unwrap());
        }
        let older = json!({
            "base": [100, 0], "pos": [200, 1], "source": Uuid::nil(), "fields": fields,
            "feeds": { "source:public.readings": { "first": [100, 0], "id": "reading_id" } },
        });
        let read: EntityState = serde_json::from_value(older.clone()).unwrap();
        assert_eq!(read, state);
        assert!(serde_json::to_string(&read).unwrap().len() < older.to_string().len());
    }
}
