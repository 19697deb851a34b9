//! The tenant materializer: every event from the bus into the tenant read models
//! (`analytics.sites/devices/sessions`, typed extras, `metrics_min`), by the tenant's mapping,
//! as the service role. Applying is idempotent and order-independent (see [`state`]), so
//! redelivery, duplicates and replays converge; events it cannot apply go to the tenant's DLQ
//! with a reason code. [`rebuild`] re-materializes a tenant from bronze. docs/materializer.md.

mod batch;
pub mod mapping;
pub mod state;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use bus::{Bus, Consumer, Delivery};
use domain::TenantId;
use serde_json::{Map, Value};
use store::ServiceDb;
use store::dlq::DeadLetter;
use store::service::read_models::MaterializeTx;
use time::format_description::well_known::Rfc3339;

use batch::{Prepared, Truncate, Work, apply_in};
use mapping::{EntityKind, EntityMapping, Mappings, TableMapping};
use state::Change;

/// The materializer's consumer group.
pub const GROUP: &str = "materializer";

/// Reason codes of the materializer's dead letters.
pub mod reason {
    /// The bus message is not an event envelope.
    pub const UNDECODABLE: &str = "undecodable_message";
    /// No mapping, stored or by convention, says what the event's table is.
    pub const NO_MAPPING: &str = "no_mapping";
    /// The stored mapping is invalid, or two of the event's columns feed one typed column.
    pub const MAPPING_CONFLICT: &str = "mapping_conflict";
    /// The event lacks the entity id (or it is not a string or integer of 1 to 500 characters).
    pub const MISSING_KEY: &str = "missing_key";
    /// A value cannot be converted to the type of the typed column it feeds.
    pub const UNCOERCIBLE_TYPE: &str = "uncoercible_type";
    /// A reading lacks its entity, metric key, value or time.
    pub const INVALID_READING: &str = "invalid_reading";
    /// A field name is empty or longer than 500 characters, or a value holds a NUL character
    /// (PostgreSQL text cannot).
    pub const UNSTORABLE_FIELD: &str = "unstorable_field";
    /// The database refused the event alone.
    pub const REJECTED: &str = "materializer_rejected";
}

/// How the materializer batches.
#[derive(Debug, Clone)]
pub struct MaterializerConfig {
    pub batch_size: usize,
    pub wait: Duration,
}

impl Default for MaterializerConfig {
    fn default() -> Self {
        Self {
            batch_size: 1000,
            wait: Duration::from_millis(100),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MaterializerError {
    #[error(transparent)]
    Bus(#[from] bus::BusError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("a stored event cannot be read back: {0}")]
    Corrupt(String),
}

/// Consumes until `shutdown`; a batch in flight when it fires is finished and acked, or left
/// unacked to be redelivered, never half-applied.
pub async fn run<B: Bus>(
    database: ServiceDb,
    bus: B,
    config: MaterializerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), MaterializerError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut consumer = bus.consumer(GROUP, None).await?;
    loop {
        let next = tokio::select! {
            batch = consumer.next_batch(config.batch_size, config.wait) => batch,
            _ = &mut shutdown => return Ok(()),
        };
        match next {
            Ok(deliveries) if deliveries.is_empty() => {}
            Ok(deliveries) => {
                if !apply_until_done(&database, &deliveries, &mut shutdown).await {
                    return Ok(());
                }
                consumer.ack(&deliveries).await?;
            }
            Err(error) if error.is_retryable() => {
                tracing::warn!(%error, "reading the bus failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = &mut shutdown => return Ok(()),
                }
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Applies a batch, retrying transient failures until it is done; false if `shutdown` came
/// first (the batch is then left unacked for redelivery).
async fn apply_until_done(
    database: &ServiceDb,
    deliveries: &[Delivery],
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> bool {
    let mut backoff = Duration::from_millis(200);
    loop {
        match apply(database, deliveries).await {
            Ok(_) => return true,
            Err(error) => {
                tracing::warn!(%error, source = ?std::error::Error::source(&error),
                    "materializing a batch failed; retrying it");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.as_mut() => return false,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// What applying a batch did.
#[derive(Debug, Clone, Default)]
pub struct ApplyOutcome {
    pub applied: u64,
    pub skipped: u64,
    pub dead_lettered: Vec<domain::EventId>,
}

/// A dead letter to record once the batch's writes are committed.
struct Refused {
    envelope: Option<protocol::Envelope>,
    delivery_tenant: TenantId,
    event_id: domain::EventId,
    message: Vec<u8>,
    reason_code: &'static str,
    reason: String,
}

/// Applies one batch in one transaction; events it cannot apply go to their tenant's DLQ
/// (after the transaction commits), the batch's other events are applied.
pub async fn apply(
    database: &ServiceDb,
    deliveries: &[Delivery],
) -> Result<ApplyOutcome, store::StoreError> {
    let mut refused = Vec::new();
    let mut envelopes = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        match decode(delivery) {
            Ok(envelope) => envelopes.push((envelope, delivery.message.payload.to_vec())),
            Err(reason) => refused.push(Refused {
                envelope: None,
                delivery_tenant: delivery.message.tenant,
                event_id: delivery.message.id,
                message: delivery.message.payload.to_vec(),
                reason_code: reason::UNDECODABLE,
                reason,
            }),
        }
    }
    let mut outcome = apply_envelopes(database, envelopes, &mut refused).await?;
    for letter in refused {
        outcome.dead_lettered.push(letter.event_id);
        dead_letter(database, letter).await?;
    }
    Ok(outcome)
}

async fn apply_envelopes(
    database: &ServiceDb,
    envelopes: Vec<(protocol::Envelope, Vec<u8>)>,
    refused: &mut Vec<Refused>,
) -> Result<ApplyOutcome, store::StoreError> {
    let mut outcome = ApplyOutcome::default();
    if envelopes.is_empty() {
        return Ok(outcome);
    }
    let prepared = prepare_all(database, envelopes, refused).await?;
    outcome.skipped = prepared.skipped;
    let [first, second] = prepared.split_by_tenant();
    let (first, second) = tokio::join!(apply_group(database, first), apply_group(database, second));
    for group in [first, second] {
        let (applied, group_refused) = group?;
        outcome.applied += applied;
        refused.extend(group_refused);
    }
    metrics::counter!("tributary_materializer_events_total", "outcome" => "applied")
        .increment(outcome.applied);
    metrics::counter!("tributary_materializer_events_total", "outcome" => "skipped")
        .increment(outcome.skipped);
    Ok(outcome)
}

/// Applies a group of a batch's events in one transaction; if the database refuses it, one by
/// one, and those refused alone become dead letters. Returns how many were applied and the dead
/// letters.
async fn apply_group(
    database: &ServiceDb,
    group: Group,
) -> Result<(u64, Vec<Refused>), store::StoreError> {
    let Group { works, envelopes } = group;
    if works.is_empty() {
        return Ok((0, Vec::new()));
    }
    let tenants: Vec<TenantId> = works.iter().map(Work::tenant).collect();
    let result = async {
        let mut tx = MaterializeTx::begin(database, &tenants).await?;
        apply_in(&mut tx, &works).await?;
        tx.commit().await
    }
    .await;
    let error = match result {
        Ok(()) => return Ok((works.len() as u64, Vec::new())),
        Err(error) if error.is_retryable() => return Err(error),
        Err(error) => error,
    };
    tracing::warn!(%error, events = works.len(),
        "the database refused a materializer batch; applying its events one by one");
    let (mut applied, mut refused) = (0, Vec::new());
    for (work, (envelope, message)) in works.into_iter().zip(envelopes) {
        let single = async {
            let mut tx = MaterializeTx::begin(database, &[work.tenant()]).await?;
            apply_in(&mut tx, std::slice::from_ref(&work)).await?;
            tx.commit().await
        }
        .await;
        match single {
            Ok(()) => applied += 1,
            Err(error) if error.is_retryable() => return Err(error),
            Err(error) => refused.push(Refused {
                delivery_tenant: envelope.tenant_id,
                event_id: envelope.event.event_id,
                envelope: Some(envelope),
                message,
                reason_code: reason::REJECTED,
                reason: format!(
                    "the database refused the event (SQLSTATE {})",
                    error.sqlstate().unwrap_or_default()
                ),
            }),
        }
    }
    Ok((applied, refused))
}

/// Events of a batch applied in one transaction, with their envelopes and messages.
#[derive(Default)]
struct Group {
    works: Vec<Work>,
    envelopes: Vec<(protocol::Envelope, Vec<u8>)>,
}

/// A batch's events checked against their mappings.
struct PreparedBatch {
    /// What to apply, ...
    works: Vec<Work>,
    /// ... with the envelope and message of each (for its dead letter, should the database
    /// refuse it).
    envelopes: Vec<(protocol::Envelope, Vec<u8>)>,
    /// Events with nothing to apply (ignored tables, truncates of readings).
    skipped: u64,
}

impl PreparedBatch {
    /// Splits the batch into two groups of whole tenants, of about the same number of events,
    /// each event keeping its place in its group.
    ///
    /// Each group is applied in a transaction of its own, both at once: a batch's time is
    /// almost all spent in the database, statement after statement, and tenants are
    /// independent (a transaction holds its tenants' locks, and the rows two groups share —
    /// the aggregator's queue — are written in one order), so a second transaction puts a
    /// second database core to work. The batch is acknowledged once both committed.
    fn split_by_tenant(self) -> [Group; 2] {
        let mut counts: HashMap<TenantId, usize> = HashMap::new();
        for work in &self.works {
            *counts.entry(work.tenant()).or_default() += 1;
        }
        let mut tenants: Vec<(TenantId, usize)> = counts.into_iter().collect();
        tenants.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.as_uuid().cmp(b.0.as_uuid())));
        let mut sizes = [0usize; 2];
        let mut second: HashSet<TenantId> = HashSet::new();
        for (tenant, count) in tenants {
            let smaller = usize::from(sizes[1] < sizes[0]);
            sizes[smaller] += count;
            if smaller == 1 {
                second.insert(tenant);
            }
        }
        let mut groups = [Group::default(), Group::default()];
        for (work, envelope) in self.works.into_iter().zip(self.envelopes) {
            let group = &mut groups[usize::from(second.contains(&work.tenant()))];
            group.works.push(work);
            group.envelopes.push(envelope);
        }
        groups
    }
}

/// Resolves each event's mapping and checks it; returns the events to apply and how many were
/// skipped.
async fn prepare_all(
    database: &ServiceDb,
    envelopes: Vec<(protocol::Envelope, Vec<u8>)>,
    refused: &mut Vec<Refused>,
) -> Result<PreparedBatch, store::StoreError> {
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
    let mut prepared = PreparedBatch {
        works: Vec::with_capacity(envelopes.len()),
        envelopes: Vec::with_capacity(envelopes.len()),
        skipped: 0,
    };
    let no_mappings = Mappings::default();
    for (envelope, message) in envelopes {
        let tenant_mappings = mappings.get(&envelope.tenant_id).unwrap_or(&no_mappings);
        match prepare(tenant_mappings, &envelope) {
            Ok(Some(work)) => {
                prepared.works.push(work);
                prepared.envelopes.push((envelope, message));
            }
            Ok(None) => prepared.skipped += 1,
            Err((reason_code, reason)) => refused.push(Refused {
                delivery_tenant: envelope.tenant_id,
                event_id: envelope.event.event_id,
                envelope: Some(envelope),
                message,
                reason_code,
                reason,
            }),
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
        None => {
            return Err((
                reason::NO_MAPPING,
                format!(
                    "no mapping for table {}.{} (map it, or mark it ignored)",
                    event.schema, event.table
                ),
            ));
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
    let mapping = mapping.settled_for(event.key.keys().chain(after.keys()).map(String::as_str));
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
    Ok(Some(Work::Event(Prepared {
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
        mapping,
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

async fn dead_letter(database: &ServiceDb, letter: Refused) -> Result<(), store::StoreError> {
    let source = letter
        .envelope
        .as_ref()
        .map(|envelope| envelope.source_id)
        .unwrap_or_else(|| domain::SourceId::from_uuid(uuid::Uuid::nil()));
    let event = serde_json::from_slice(&letter.message)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&letter.message).into_owned()));
    let record = DeadLetter {
        tenant: letter.delivery_tenant,
        consumer: GROUP,
        event_id: letter.event_id,
        source,
        reason_code: letter.reason_code,
        reason: letter.reason,
        event,
        message: letter.message,
    };
    store::service::dlq::record(database, &record).await?;
    metrics::counter!("tributary_dlq_events_total", "consumer" => GROUP,
        "reason" => letter.reason_code)
    .increment(1);
    Ok(())
}

fn decode(delivery: &Delivery) -> Result<protocol::Envelope, String> {
    let envelope: protocol::Envelope = serde_json::from_slice(&delivery.message.payload)
        .map_err(|error| format!("not an event envelope: {error}"))?;
    if envelope.tenant_id != delivery.message.tenant {
        return Err("the envelope names another tenant than the bus message".into());
    }
    Ok(envelope)
}

/// What a rebuild did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RebuildOutcome {
    pub events: i64,
    pub dead_lettered: i64,
}

/// Re-materializes `tenant` from bronze in one transaction: its read models are deleted and
/// every bronze event applied again, so readers see the old models until the new ones are
/// complete. Other tenants' rows are not touched; their consumers only wait for this tenant's
/// lock if they have events of it.
pub async fn rebuild(
    database: &ServiceDb,
    tenant: TenantId,
) -> Result<RebuildOutcome, MaterializerError> {
    const PAGE: i64 = 2000;
    let from = time::OffsetDateTime::UNIX_EPOCH;
    let to = time::OffsetDateTime::now_utc() + time::Duration::days(36_500);
    let mut outcome = RebuildOutcome::default();
    let mut refused = Vec::new();
    let mut tx = MaterializeTx::begin(database, &[tenant]).await?;
    tx.clear_tenant(tenant).await?;
    let mut after = None;
    loop {
        let rows = store::service::bronze::events_in_range(database, tenant, from, to, after, PAGE)
            .await?;
        let Some(last) = rows.last() else {
            break;
        };
        after = Some((last.event_time, last.event_id));
        let mut envelopes = Vec::with_capacity(rows.len());
        for row in &rows {
            let envelope =
                crate::bronze::envelope_of(row, None).map_err(MaterializerError::Corrupt)?;
            let message = serde_json::to_vec(&envelope)
                .map_err(|error| MaterializerError::Corrupt(error.to_string()))?;
            envelopes.push((envelope, message));
        }
        outcome.events += envelopes.len() as i64;
        let prepared = prepare_all(database, envelopes, &mut refused).await?;
        apply_in(&mut tx, &prepared.works).await?;
    }
    tx.commit().await?;
    outcome.dead_lettered = refused.len() as i64;
    for letter in refused {
        dead_letter(database, letter).await?;
    }
    tracing::info!(tenant = %tenant, events = outcome.events,
        dead_lettered = outcome.dead_lettered, "rebuild finished");
    Ok(outcome)
}
