//! Bus messages to the materializer's works: each event decoded, its mapping resolved, and
//! checked against it, or refused with a reason code that names columns and types, never a
//! customer's value.

use std::collections::{BTreeMap, HashMap};

use bus::Delivery;
use bytes::Bytes;
use domain::TenantId;
use serde_json::{Map, Value};
use store::ServiceDb;
use time::format_description::well_known::Rfc3339;

use super::batch::{Prepared as PreparedEvent, Truncate, Unmapped, Work};
use super::mapping::{self, EntityKind, EntityMapping, Mappings, TableMapping};
use super::reason;
use super::state::{self, Change};
use crate::runner::{Origin, Prepared};

/// The envelope of a delivered event, or why it is none.
pub(super) fn decode(delivery: &Delivery) -> Result<protocol::Envelope, String> {
    let envelope: protocol::Envelope = serde_json::from_slice(&delivery.message.payload)
        .map_err(|error| format!("not an event envelope: {error}"))?;
    if envelope.tenant_id != delivery.message.tenant {
        return Err("the envelope names another tenant than the bus message".into());
    }
    Ok(envelope)
}

/// Resolves each event's mapping and checks it: the events to apply, those refused, and how many
/// were skipped.
pub(super) async fn prepare_all(
    database: &ServiceDb,
    envelopes: Vec<(protocol::Envelope, Bytes)>,
) -> Result<Prepared<Work>, store::StoreError> {
    let mut prepared = Prepared::with_capacity(envelopes.len());
    if envelopes.is_empty() {
        return Ok(prepared);
    }
    let mut tenants: Vec<TenantId> = envelopes.iter().map(|(e, _)| e.tenant_id).collect();
    tenants.sort_unstable_by_key(|tenant| *tenant.as_uuid());
    tenants.dedup();
    let mut mappings: HashMap<TenantId, Vec<store::read_models::MappingRow>> = HashMap::new();
    for (tenant, row) in store::service::read_models::mappings_of(database, &tenants).await? {
        mappings.entry(tenant).or_default().push(row);
    }
    let mappings: HashMap<TenantId, Mappings> = tenants
        .iter()
        .map(|tenant| {
            (
                *tenant,
                Mappings::new(mappings.remove(tenant).unwrap_or_default()),
            )
        })
        .collect();
    let no_mappings = Mappings::default();
    for (envelope, message) in envelopes {
        let tenant_mappings = mappings.get(&envelope.tenant_id).unwrap_or(&no_mappings);
        let origin = Origin {
            tenant: envelope.tenant_id,
            source: envelope.source_id,
            event_id: envelope.event.event_id,
            message,
        };
        match prepare(tenant_mappings, &envelope) {
            Ok(Some(work)) => prepared.push(work, origin),
            Ok(None) => prepared.skipped += 1,
            Err((reason_code, reason)) => {
                prepared.refused.push(origin.refused(reason_code, reason))
            }
        }
    }
    Ok(prepared)
}

/// Checks one event against its mapping. `Ok(None)`: nothing to apply (an ignored table, a
/// truncate of readings); `Err`: the reason code and explanation of its dead letter. Reasons
/// name columns and types, never a customer's value.
fn prepare(
    mappings: &Mappings,
    envelope: &protocol::Envelope,
) -> Result<Option<Work>, (&'static str, String)> {
    let event = &envelope.event;
    let resolved = mappings
        .resolve(*envelope.source_id.as_uuid(), &event.schema, &event.table)
        .map_err(|reason| (reason::MAPPING_CONFLICT, reason))?;
    let mapping = match resolved {
        // A table nobody mapped is not a failure: its events stay in bronze, counted, until it
        // is mapped and the tenant rebuilt.
        None => {
            return Ok(Some(Work::Unmapped(Unmapped {
                tenant: envelope.tenant_id,
                source: *envelope.source_id.as_uuid(),
                schema: event.schema.clone(),
                table: event.table.clone(),
                event_time: event.event_time.to_offset(time::UtcOffset::UTC),
            })));
        }
        Some(TableMapping::Ignore) => return Ok(None),
        Some(TableMapping::Entity(mapping)) => mapping,
    };
    let lsn = i64::try_from(event.lsn.0)
        .map_err(|_| (reason::MISSING_KEY, "LSN beyond 2^63".to_owned()))?;
    let seq = i32::try_from(event.seq)
        .map_err(|_| (reason::MISSING_KEY, "sequence beyond 2^31".to_owned()))?;
    let source = *envelope.source_id.as_uuid();
    let table = format!("{}.{}", event.schema, event.table);
    if event.op == protocol::Op::Truncate {
        // Readings happened: a truncate of their table leaves them counted.
        if mapping.kind == EntityKind::Reading {
            return Ok(None);
        }
        let truncated_at = event.event_time.to_offset(time::UtcOffset::UTC);
        let truncated_at = truncated_at
            .replace_nanosecond(truncated_at.nanosecond() / 1000 * 1000)
            .unwrap_or(truncated_at);
        return Ok(Some(Work::Truncate(Truncate {
            tenant: envelope.tenant_id,
            source,
            feed: state::feed_name(source, &table),
            table,
            kind: mapping.kind,
            mapping,
            pos: (lsn, seq),
            truncated_at,
        })));
    }
    let empty = Map::new();
    let after = event.after.as_ref().unwrap_or(&empty);
    // The event's own columns settle whose a reading is only for checking this event: an
    // update may carry some of the row's columns, so the work keeps the mapping unsettled and
    // the reading's entity is settled from its whole folded state (`state::derive_reading`).
    let unsettled = mapping;
    let mapping = unsettled.settled_for(event.key.keys().chain(after.keys()).map(String::as_str));
    let id_column = mapping
        .id_column_for(&event.key)
        .unwrap_or_else(|| mapping.kind.id_column().to_owned());
    let id_value = event
        .key
        .get(&id_column)
        .or_else(|| after.get(&id_column))
        .or_else(|| {
            event
                .before
                .as_ref()
                .and_then(|before| before.get(&id_column))
        });
    let entity_id = match id_value {
        Some(Value::String(text)) if !text.is_empty() && text.chars().count() <= 500 => {
            text.clone()
        }
        Some(Value::Number(number)) => number.to_string(),
        _ => {
            return Err((
                reason::MISSING_KEY,
                format!(
                    "the event has no usable id in column {id_column:?} (a string of 1 to 500 \
                     characters or a number)"
                ),
            ));
        }
    };
    if entity_id.contains('\0') {
        return Err((
            reason::MISSING_KEY,
            "the entity id holds a NUL character".into(),
        ));
    }
    let change = match event.op {
        protocol::Op::Insert | protocol::Op::Read => {
            let mut image = event.key.clone();
            image.extend(after.iter().map(|(k, v)| (k.clone(), v.clone())));
            check_fields(&mapping, &image, &[])?;
            if mapping.kind == EntityKind::Reading {
                check_reading(&mapping, &image)?;
            }
            Change::Image(image)
        }
        protocol::Op::Update => {
            let mut changed = event.key.clone();
            changed.extend(after.iter().map(|(k, v)| (k.clone(), v.clone())));
            check_fields(&mapping, &changed, &event.unchanged)?;
            Change::Update {
                after: changed,
                unchanged: event.unchanged.clone(),
            }
        }
        protocol::Op::Delete => Change::Delete,
        protocol::Op::Truncate => return Ok(None),
    };
    let entity_id = if mapping.kind == EntityKind::Reading {
        // Reading ids are only unique within their source.
        format!("{}:{entity_id}", envelope.source_id)
    } else {
        entity_id
    };
    Ok(Some(Work::Event(PreparedEvent {
        tenant: envelope.tenant_id,
        kind: mapping.kind,
        entity_id,
        id_column,
        change,
        pos: (lsn, seq),
        event_time: event
            .event_time
            .checked_to_offset(time::UtcOffset::UTC)
            .and_then(|at| at.format(&Rfc3339).ok())
            .unwrap_or_default(),
        source,
        feed: state::feed_name(source, &table),
        schema: event.schema.clone(),
        table: event.table.clone(),
        at: event.event_time.to_offset(time::UtcOffset::UTC),
        mapping: unsettled.clone(),
    })))
}

/// Checks the fields an event sets: storable names and values, values its typed columns can
/// take, and no typed column fed twice.
fn check_fields(
    mapping: &EntityMapping,
    fields: &Map<String, Value>,
    unchanged: &[String],
) -> Result<(), (&'static str, String)> {
    let mut fed: BTreeMap<&str, &str> = BTreeMap::new();
    for (column, value) in fields {
        if unchanged.contains(column) {
            continue;
        }
        if column.is_empty() || column.chars().count() > 500 || column.contains('\0') {
            return Err((
                reason::UNSTORABLE_FIELD,
                "a field name is empty, longer than 500 characters or holds a NUL".into(),
            ));
        }
        if holds_nul(value) {
            return Err((
                reason::UNSTORABLE_FIELD,
                format!("the value of {column:?} holds a NUL character"),
            ));
        }
        let Some(typed) = mapping.claim(column) else {
            continue;
        };
        let Some(column_type) = mapping.kind.column_type(typed) else {
            return Err((
                reason::MAPPING_CONFLICT,
                format!(
                    "{column:?} maps to {typed:?}, which a {} does not have",
                    mapping.kind.as_str()
                ),
            ));
        };
        if let Some(other) = fed.insert(typed, column) {
            return Err((
                reason::MAPPING_CONFLICT,
                format!("{typed:?} is fed by both {other:?} and {column:?}"),
            ));
        }
        if state::coerce(value, column_type).is_none() {
            return Err((
                reason::UNCOERCIBLE_TYPE,
                format!(
                    "the value of {column:?} cannot be converted to {} for {typed:?}",
                    column_type.as_str()
                ),
            ));
        }
    }
    Ok(())
}

fn check_reading(
    mapping: &EntityMapping,
    image: &Map<String, Value>,
) -> Result<(), (&'static str, String)> {
    let mut present = Vec::new();
    for (column, value) in image {
        if let Some(typed) = mapping.claim(column)
            && !value.is_null()
        {
            present.push(typed);
        }
    }
    let missing: Vec<&str> = ["entity_id", "metric_key", "value", "measured_at"]
        .into_iter()
        .filter(|typed| !present.contains(typed))
        .collect();
    if !missing.is_empty() {
        return Err((
            reason::INVALID_READING,
            format!("the reading has no {}", missing.join(", ")),
        ));
    }
    let metric_ok = image.iter().any(|(column, value)| {
        mapping.claim(column) == Some("metric_key")
            && state::coerce(value, mapping::ColumnType::Text)
                .and_then(|value| {
                    value
                        .as_str()
                        .map(|key| (1..=200).contains(&key.chars().count()))
                })
                .unwrap_or(false)
    });
    if !metric_ok {
        return Err((
            reason::INVALID_READING,
            "the metric key must be 1 to 200 characters".into(),
        ));
    }
    Ok(())
}

fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map
            .iter()
            .any(|(key, value)| key.contains('\0') || holds_nul(value)),
        _ => false,
    }
}
