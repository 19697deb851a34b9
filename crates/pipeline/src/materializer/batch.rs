//! Applying a batch of prepared events and truncates inside one materializer transaction: the
//! touched states are loaded with one statement, every event and truncate is applied to them in
//! memory (so an entity changed many times in a batch is written once, as what wins), and what
//! they derive is written with a few statements for the whole batch, whatever its tenants.

use std::collections::{HashMap, HashSet};

use domain::TenantId;
use serde_json::Value;
use store::service::read_models::{
    DriftCount, EntityKey, EntityWrites, ExtraRow, MaterializeTx, SourceTruncate, StatePlace,
    StoredState, UnmappedCount,
};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::mapping::{EntityKind, EntityMapping};
use super::state::{self, Change, EntityState, Pos};

/// An event ready to apply.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub tenant: TenantId,
    pub kind: EntityKind,
    pub entity_id: String,
    pub id_column: String,
    pub mapping: EntityMapping,
    pub change: Change,
    pub pos: Pos,
    pub event_time: String,
    pub source: Uuid,
    /// The source table, as entity states name it ([`state::feed_name`]).
    pub feed: String,
    /// The source table's schema and name, as the source named them.
    pub schema: String,
    pub table: String,
    /// The event's own time (the source's commit time).
    pub at: OffsetDateTime,
}

impl Prepared {
    fn key(&self) -> EntityKey {
        (
            self.tenant,
            self.kind.as_str().to_owned(),
            self.entity_id.clone(),
        )
    }
}

/// A truncate of a source table that feeds sites, devices or sessions, ready to apply.
#[derive(Debug, Clone)]
pub(crate) struct Truncate {
    pub tenant: TenantId,
    pub source: Uuid,
    /// `schema.table`.
    pub table: String,
    /// The table, as entity states name it.
    pub feed: String,
    pub kind: EntityKind,
    pub mapping: EntityMapping,
    pub pos: Pos,
    /// The commit time, to the microsecond the database keeps.
    pub truncated_at: OffsetDateTime,
}

/// An event of a table no mapping applies to: it stays in bronze and is counted.
#[derive(Debug, Clone)]
pub(crate) struct Unmapped {
    pub tenant: TenantId,
    pub source: Uuid,
    pub schema: String,
    pub table: String,
    pub event_time: OffsetDateTime,
}

/// What a batch applies.
#[derive(Debug, Clone)]
pub(crate) enum Work {
    Event(Prepared),
    Truncate(Truncate),
    Unmapped(Unmapped),
}

impl Work {
    pub fn tenant(&self) -> TenantId {
        match self {
            Work::Event(event) => event.tenant,
            Work::Truncate(truncate) => truncate.tenant,
            Work::Unmapped(unmapped) => unmapped.tenant,
        }
    }
}

/// The newest truncate of a source table, stored or in the batch.
struct Newest<'a> {
    pos: Pos,
    deleted_at: String,
    source: Uuid,
    /// Set when it is the batch's: then it is stored, and the entities it touches are loaded.
    from_batch: Option<&'a Truncate>,
}

/// Applies `works` inside `tx`: loads the touched states, applies every event and truncate,
/// and writes the states and everything derived from them.
pub(super) async fn apply_in(
    tx: &mut MaterializeTx,
    works: &[Work],
) -> Result<(), store::StoreError> {
    let events: Vec<&Prepared> = works
        .iter()
        .filter_map(|work| match work {
            Work::Event(event) => Some(event),
            Work::Truncate(_) | Work::Unmapped(_) => None,
        })
        .collect();
    let newest = newest_truncates(tx, works).await?;

    let mut keys: Vec<EntityKey> = events.iter().map(|event| event.key()).collect();
    keys.sort_unstable_by(|a, b| (a.0.as_uuid(), &a.1, &a.2).cmp(&(b.0.as_uuid(), &b.1, &b.2)));
    keys.dedup();
    let mut stored = tx.load_states(&keys).await?;
    for truncate in newest.values().filter_map(|newest| newest.from_batch) {
        let fed = tx
            .states_fed_by(truncate.tenant, truncate.kind.as_str(), &truncate.feed)
            .await?;
        for (key, text) in fed {
            stored.entry(key).or_insert(StoredState {
                text,
                place: StatePlace::Entities,
            });
        }
    }
    let mut states: HashMap<EntityKey, EntityState> = HashMap::with_capacity(keys.len());
    for (key, stored) in &stored {
        let state = serde_json::from_str(&stored.text).map_err(|_| {
            store::StoreError::Invalid("a stored entity state cannot be read".into())
        })?;
        states.insert(key.clone(), state);
    }

    let mut changed: HashSet<EntityKey> = HashSet::new();
    // The newest event of each entity (by position, not by arrival) decides the mapping its
    // rows are derived with: a reading's entity kind is settled from its event's columns, and
    // an older delete arriving after the newest image (which it cannot undo) has none, so
    // deriving with it would read a site's or a session's reading as a device's and lose it.
    let mut last: HashMap<EntityKey, &Prepared> = HashMap::new();
    for event in events {
        let key = event.key();
        let state = states.entry(key.clone()).or_default();
        let mut now_changed = false;
        if event.kind != EntityKind::Reading {
            now_changed |= state.record_feed(&event.feed, event.pos, &event.id_column);
        }
        now_changed |= state.apply(&event.change, event.pos, &event.event_time, event.source);
        if now_changed {
            changed.insert(key.clone());
        }
        last.entry(key)
            .and_modify(|newest| {
                if event.pos >= newest.pos {
                    *newest = event;
                }
            })
            .or_insert(event);
    }
    // A truncate deletes, at its position, every entity its table fed with an older event.
    let mut truncated_by: HashMap<EntityKey, &Truncate> = HashMap::new();
    for (key, state) in &mut states {
        let fed: Vec<(String, Pos)> = state
            .feeds
            .iter()
            .map(|(feed, known)| (feed.clone(), known.first))
            .collect();
        for (feed, first) in fed {
            let Some(truncate) = newest.get(&(key.0, feed)) else {
                continue;
            };
            if first < truncate.pos
                && state.apply(
                    &Change::Delete,
                    truncate.pos,
                    &truncate.deleted_at,
                    truncate.source,
                )
            {
                changed.insert(key.clone());
            }
            if let Some(from_batch) = truncate.from_batch {
                truncated_by.insert(key.clone(), from_batch);
            }
        }
    }

    let mut changed: Vec<EntityKey> = changed.into_iter().collect();
    changed.sort_unstable_by(|a, b| (a.0.as_uuid(), &a.1, &a.2).cmp(&(b.0.as_uuid(), &b.1, &b.2)));
    let mut writes = EntityWrites::default();
    for key in changed {
        let state = &states[&key];
        let was = stored.get(&key).map(|stored| stored.place);
        let derive_with = match last.get(&key) {
            Some(event) => Some((event.kind, &event.mapping, event.id_column.as_str())),
            None => derived_after_truncate(&key, state, &truncated_by),
        };
        let Some(derive_with) = derive_with else {
            return Err(store::StoreError::Invalid(
                "an entity changed without an event or a truncate".into(),
            ));
        };
        let text = serde_json::to_string(state)
            .map_err(|_| store::StoreError::Invalid("an entity state cannot be written".into()))?;
        let in_reading_row = derive(&mut writes, &key, state, derive_with, was.is_some(), &text);
        match (was, in_reading_row) {
            (Some(StatePlace::Entities), true) => writes.moved_states.push(key),
            (_, true) => {}
            (Some(StatePlace::Entities), false) => writes.states.push((key, text)),
            (Some(StatePlace::ReadingRow) | None, false) => writes.new_states.push((key, text)),
        }
    }
    writes.truncates = newest
        .into_iter()
        .filter_map(|((tenant, _), newest)| {
            newest.from_batch.map(|truncate| SourceTruncate {
                tenant_id: tenant,
                source_id: truncate.source,
                source_table: truncate.table.clone(),
                pos_lsn: truncate.pos.0,
                pos_seq: truncate.pos.1,
                truncated_at: truncate.truncated_at,
            })
        })
        .collect();
    writes.unmapped = count_unmapped(works);
    writes.drift = count_drift(works);
    tx.write(&writes).await
}

/// The batch's fields that land in the typed extras (not the id column, not claimed by a typed
/// column, not null), counted per source table, entity kind, field and JSON type: the
/// schema-drift inbox's counts, added with one statement per batch. A claimed field always lands
/// in its typed column: an event whose value does not convert is a dead letter, not here.
fn count_drift(works: &[Work]) -> Vec<DriftCount> {
    type Key<'a> = (
        TenantId,
        Uuid,
        &'a str,
        &'a str,
        &'static str,
        &'a str,
        &'static str,
    );
    let mut counts: HashMap<Key, DriftCount> = HashMap::new();
    for work in works {
        let Work::Event(event) = work else {
            continue;
        };
        if event.kind.table().is_none() {
            continue;
        }
        let fields = match &event.change {
            Change::Image(image) => image,
            Change::Update { after, .. } => after,
            Change::Delete => continue,
        };
        for (column, value) in fields {
            if column == &event.id_column || event.mapping.claim(column).is_some() {
                continue;
            }
            if let Change::Update { unchanged, .. } = &event.change
                && unchanged.contains(column)
            {
                continue;
            }
            let Some(json_type) = json_type(value) else {
                continue;
            };
            let key = (
                event.tenant,
                event.source,
                event.schema.as_str(),
                event.table.as_str(),
                event.kind.as_str(),
                column.as_str(),
                json_type,
            );
            let count = counts.entry(key).or_insert_with(|| DriftCount {
                tenant_id: event.tenant,
                source_id: event.source,
                schema_name: event.schema.clone(),
                table_name: event.table.clone(),
                entity_kind: event.kind.as_str(),
                field_name: column.clone(),
                json_type,
                events: 0,
                first_seen_at: event.at,
                last_seen_at: event.at,
            });
            count.events += 1;
            count.first_seen_at = count.first_seen_at.min(event.at);
            count.last_seen_at = count.last_seen_at.max(event.at);
        }
    }
    counts.into_values().collect()
}

/// A value's JSON type as the drift inbox names it (a string that reads as a time is a `time`,
/// as it lands in the time extras); `None` for null, which lands nowhere.
fn json_type(value: &Value) -> Option<&'static str> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(text) if state::time_of(text).is_some() => "time",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    })
}

/// The batch's events of unmapped tables, counted per table.
fn count_unmapped(works: &[Work]) -> Vec<UnmappedCount> {
    let mut counts: HashMap<(TenantId, Uuid, &str, &str), UnmappedCount> = HashMap::new();
    for work in works {
        let Work::Unmapped(event) = work else {
            continue;
        };
        let key = (
            event.tenant,
            event.source,
            event.schema.as_str(),
            event.table.as_str(),
        );
        let count = counts.entry(key).or_insert_with(|| UnmappedCount {
            tenant_id: event.tenant,
            source_id: event.source,
            schema_name: event.schema.clone(),
            table_name: event.table.clone(),
            events: 0,
            first_seen_at: event.event_time,
            last_seen_at: event.event_time,
        });
        count.events += 1;
        count.first_seen_at = count.first_seen_at.min(event.event_time);
        count.last_seen_at = count.last_seen_at.max(event.event_time);
    }
    counts.into_values().collect()
}

/// The newest truncate of each source table of the batch's tenants, stored or in the batch,
/// by (tenant, table as entity states name it). Only sites, devices and sessions use them: a
/// batch with no other events and no truncates skips the lookup.
async fn newest_truncates<'a>(
    tx: &mut MaterializeTx,
    works: &'a [Work],
) -> Result<HashMap<(TenantId, String), Newest<'a>>, store::StoreError> {
    let mut newest = HashMap::new();
    let needed = works.iter().any(|work| match work {
        Work::Event(event) => event.kind != EntityKind::Reading,
        Work::Truncate(_) => true,
        Work::Unmapped(_) => false,
    });
    if !needed {
        return Ok(newest);
    }
    let mut tenants: Vec<TenantId> = works.iter().map(Work::tenant).collect();
    tenants.sort_unstable_by_key(|tenant| *tenant.as_uuid());
    tenants.dedup();
    for stored in tx.truncates(&tenants).await? {
        newest.insert(
            (
                stored.tenant_id,
                state::feed_name(stored.source_id, &stored.source_table),
            ),
            Newest {
                pos: (stored.pos_lsn, stored.pos_seq),
                deleted_at: rfc3339(stored.truncated_at),
                source: stored.source_id,
                from_batch: None,
            },
        );
    }
    for work in works {
        let Work::Truncate(truncate) = work else {
            continue;
        };
        let key = (truncate.tenant, truncate.feed.clone());
        if newest
            .get(&key)
            .is_none_or(|known| truncate.pos > known.pos)
        {
            newest.insert(
                key,
                Newest {
                    pos: truncate.pos,
                    deleted_at: rfc3339(truncate.truncated_at),
                    source: truncate.source,
                    from_batch: Some(truncate),
                },
            );
        }
    }
    Ok(newest)
}

/// How to derive the rows of an entity a truncate changed without an event of it in the batch:
/// by the truncate's mapping and the id column of the table's events (a state loaded for a
/// truncate is one its table fed).
fn derived_after_truncate<'a>(
    key: &EntityKey,
    state: &'a EntityState,
    truncated_by: &HashMap<EntityKey, &'a Truncate>,
) -> Option<(EntityKind, &'a EntityMapping, &'a str)> {
    let truncate = *truncated_by.get(key)?;
    let id_column = state
        .feeds
        .get(&truncate.feed)
        .map_or(truncate.kind.id_column(), |feed| feed.id.as_str());
    Some((truncate.kind, &truncate.mapping, id_column))
}

/// Adds the rows derived from an entity's (or a reading's) state to `writes`. The extras and
/// the reading row of an entity that had no stored state are new: there is nothing to replace.
/// `derive_with` is the kind, mapping and id column to derive by. Returns whether the state
/// (`text`) is kept in the reading row it derived; any other state is kept in
/// `pipeline.entity_state`.
fn derive(
    writes: &mut EntityWrites,
    key: &EntityKey,
    state: &EntityState,
    (kind, mapping, id_column): (EntityKind, &EntityMapping, &str),
    was_stored: bool,
    text: &str,
) -> bool {
    let tenant = *key.0.as_uuid();
    match kind.table() {
        Some(table) => {
            let derived = state::derive_entity(tenant, kind, &key.2, id_column, state, mapping);
            writes.typed.entry(table).or_default().push(derived.row);
            if was_stored {
                writes
                    .extras_replaced
                    .push((key.0, kind.as_str(), key.2.clone()));
            }
            for (extra_key, value) in derived.extras {
                writes.extras.push(ExtraRow {
                    tenant_id: tenant,
                    entity_kind: kind.as_str(),
                    entity_id: key.2.clone(),
                    key: extra_key,
                    value,
                });
            }
            false
        }
        None => {
            if was_stored {
                writes.readings_replaced.push((key.0, key.2.clone()));
            }
            match state::derive_reading(tenant, &key.2, state, mapping, text) {
                Some(row) => {
                    writes.readings.push(row);
                    true
                }
                None => false,
            }
        }
    }
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.checked_to_offset(time::UtcOffset::UTC)
        .and_then(|at| at.format(&Rfc3339).ok())
        .unwrap_or_default()
}
