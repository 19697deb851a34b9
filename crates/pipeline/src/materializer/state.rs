//! An entity's materialized state and the pure rules that change it: applying an event, and
//! deriving the typed row, the typed extras and (for a reading) the reading row.
//!
//! Every field remembers the source position (commit LSN, sequence) that last set it, and the
//! state remembers its last full image (insert, snapshot read or delete). An insert or delete
//! replaces every field older than itself; an update sets the fields it carries that are older
//! than itself and keeps the rest (the unchanged, TOASTed columns among them). Applying is
//! therefore idempotent and commutative: any order and any duplication of the same events gives
//! the state of applying them once in order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
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

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EntityState {
    /// The last full image (insert, read or delete).
    #[serde(default)]
    pub base: Option<Pos>,
    #[serde(default)]
    pub base_is_delete: bool,
    /// Commit time of the delete that is the base, if it is one.
    #[serde(default)]
    pub deleted_at: Option<String>,
    /// The newest event applied, and its source.
    #[serde(default)]
    pub pos: Option<Pos>,
    #[serde(default)]
    pub source: Option<Uuid>,
    #[serde(default)]
    pub fields: BTreeMap<String, Field>,
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
            .map(|number| json!(number)),
        (Value::String(text), ColumnType::Num) => text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|number| number.is_finite())
            .map(|number| json!(number)),
        (Value::String(text), ColumnType::Time) => parse_time(text).map(Value::String),
        _ => None,
    }
}

/// An ISO-8601 time (RFC 3339, or a bare date as its UTC midnight) as normalised RFC 3339 in
/// UTC; `None` if the text is not one, or outside years 1 to 9999.
pub fn parse_time(text: &str) -> Option<String> {
    let parsed = OffsetDateTime::parse(text, &Rfc3339).ok().or_else(|| {
        let format = time::macros::format_description!("[year]-[month]-[day]");
        time::Date::parse(text, &format)
            .ok()
            .map(|date| date.midnight().assume_utc())
    })?;
    let utc = parsed.checked_to_offset(time::UtcOffset::UTC)?;
    if !(1..=9999).contains(&utc.year()) {
        return None;
    }
    utc.format(&Rfc3339).ok()
}

/// Which extras table a value lands in, and the value stored; `None` for JSON null (no value).
pub fn extra_of(value: &Value) -> Option<(&'static str, Value)> {
    match value {
        Value::Null => None,
        Value::Bool(flag) => Some(("bool", Value::Bool(*flag))),
        Value::Number(number) => Some(match number.as_f64().filter(|n| n.is_finite()) {
            Some(number) => ("num", json!(number)),
            None => ("text", Value::String(number.to_string())),
        }),
        Value::String(text) => Some(match parse_time(text) {
            Some(time) => ("time", Value::String(time)),
            None => ("text", Value::String(text.clone())),
        }),
        Value::Array(_) | Value::Object(_) => Some(("text", Value::String(value.to_string()))),
    }
}

/// The typed row and the extras of an entity (site, device or session) in its state.
#[derive(Debug)]
pub struct DerivedEntity {
    pub row: Value,
    /// (extras table, key, value)
    pub extras: Vec<(&'static str, String, Value)>,
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
                    if let Some((table, value)) = extra_of(&field.v) {
                        extras.push((table, column.clone(), value));
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

/// The reading row of a reading in its state, if it is complete and not deleted.
pub fn derive_reading(
    tenant: Uuid,
    reading_id: &str,
    state: &EntityState,
    mapping: &EntityMapping,
) -> Option<Value> {
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
    Some(json!({
        "tenant_id": tenant,
        "reading_id": reading_id,
        "entity_kind": entity.as_str(),
        "entity_id": typed.get("entity_id")?,
        "metric_key": metric_key,
        "measured_at": typed.get("measured_at")?,
        "value": typed.get("value")?,
        "pos_lsn": pos_lsn,
        "pos_seq": pos_seq,
    }))
}
