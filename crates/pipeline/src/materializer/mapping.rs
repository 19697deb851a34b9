//! Which source table feeds which entity kind, and which source column which typed column: the
//! stored mappings people edit, and the default mapping by conventional names that applies to a
//! table nobody mapped (docs/materializer.md).

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use store::read_models::MappingRow;

/// What a source table's rows are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntityKind {
    Site,
    Device,
    Session,
    /// A metric reading of a site, device or session: feeds `metrics_min`.
    Reading,
}

impl EntityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Site => "site",
            EntityKind::Device => "device",
            EntityKind::Session => "session",
            EntityKind::Reading => "reading",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "site" => EntityKind::Site,
            "device" => EntityKind::Device,
            "session" => EntityKind::Session,
            "reading" => EntityKind::Reading,
            _ => return None,
        })
    }

    /// The typed table of an entity kind (readings have none of their own).
    pub fn table(self) -> Option<&'static str> {
        match self {
            EntityKind::Site => Some("sites"),
            EntityKind::Device => Some("devices"),
            EntityKind::Session => Some("sessions"),
            EntityKind::Reading => None,
        }
    }

    /// The id column of the typed table, and the conventional source id column.
    pub fn id_column(self) -> &'static str {
        match self {
            EntityKind::Site => "site_id",
            EntityKind::Device => "device_id",
            EntityKind::Session => "session_id",
            EntityKind::Reading => "reading_id",
        }
    }

    /// The typed columns a source column may feed, with their types.
    pub fn typed_columns(self) -> &'static [(&'static str, ColumnType)] {
        use ColumnType::{Num, Text, Time};
        match self {
            EntityKind::Site => &[
                ("name", Text),
                ("region", Text),
                ("timezone", Text),
                ("latitude", Num),
                ("longitude", Num),
            ],
            EntityKind::Device => &[
                ("site_id", Text),
                ("name", Text),
                ("kind", Text),
                ("model", Text),
                ("status", Text),
                ("firmware", Text),
                ("last_seen_at", Time),
            ],
            EntityKind::Session => &[
                ("device_id", Text),
                ("site_id", Text),
                ("status", Text),
                ("started_at", Time),
                ("ended_at", Time),
            ],
            EntityKind::Reading => &[
                ("entity_id", Text),
                ("metric_key", Text),
                ("value", Num),
                ("measured_at", Time),
            ],
        }
    }

    pub fn column_type(self, typed_column: &str) -> Option<ColumnType> {
        self.typed_columns()
            .iter()
            .find(|(name, _)| *name == typed_column)
            .map(|(_, column_type)| *column_type)
    }

    /// Conventional source names of a typed column, besides its own name.
    fn synonyms(self, typed_column: &str) -> &'static [&'static str] {
        match (self, typed_column) {
            (EntityKind::Site, "latitude") => &["lat"],
            (EntityKind::Site, "longitude") => &["lon", "lng"],
            (EntityKind::Device, "kind") => &["type", "device_type"],
            (EntityKind::Device, "firmware") => &["firmware_version"],
            (EntityKind::Device, "last_seen_at") => &["last_seen"],
            (EntityKind::Session, "started_at") => &["start_time"],
            (EntityKind::Session, "ended_at") => &["end_time"],
            (EntityKind::Reading, "metric_key") => &["metric", "metric_name"],
            (EntityKind::Reading, "value") => &["reading", "metric_value"],
            (EntityKind::Reading, "measured_at") => &["ts", "timestamp", "recorded_at", "time"],
            _ => &[],
        }
    }

    /// The kind a table of this conventional name holds, if any.
    fn of_table(table: &str) -> Option<Self> {
        let table = table.to_ascii_lowercase();
        Some(match table.as_str() {
            "sites" | "site" | "locations" | "location" => EntityKind::Site,
            "devices" | "device" | "chargers" | "charger" | "machines" | "kiosks" | "assets" => {
                EntityKind::Device
            }
            "sessions" | "session" | "charging_sessions" => EntityKind::Session,
            "readings" | "reading" | "metrics" | "measurements" | "telemetry" => {
                EntityKind::Reading
            }
            _ => return None,
        })
    }
}

/// A typed column's type, and the extras table a value of a JSON type lands in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Text,
    Num,
    Time,
}

impl ColumnType {
    pub fn as_str(self) -> &'static str {
        match self {
            ColumnType::Text => "text",
            ColumnType::Num => "number",
            ColumnType::Time => "ISO-8601 time",
        }
    }
}

/// How one source table maps, resolved for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableMapping {
    /// Its events are acknowledged and not materialized.
    Ignore,
    Entity(EntityMapping),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityMapping {
    pub kind: EntityKind,
    /// `None` = by convention (`<kind>_id`, else `id`, else the single key column).
    pub id_column: Option<String>,
    /// `None` = by convention (a column feeds the typed column of its name or a synonym).
    pub columns: Option<BTreeMap<String, String>>,
    /// For readings: the entity kind the reading belongs to; `None` = by convention.
    pub reading_entity: Option<EntityKind>,
}

impl EntityMapping {
    /// The typed column a source column feeds, if any.
    pub fn claim(&self, source_column: &str) -> Option<&str> {
        match &self.columns {
            Some(columns) => columns.get(source_column).map(String::as_str),
            None => {
                // Compared without building a lowercase copy: this runs for every column of
                // every event, several times.
                let kind = self.kind;
                let named = |name: &str| source_column.eq_ignore_ascii_case(name);
                if kind == EntityKind::Reading
                    && named(
                        self.reading_entity
                            .unwrap_or(EntityKind::Device)
                            .id_column(),
                    )
                {
                    return Some("entity_id");
                }
                kind.typed_columns()
                    .iter()
                    .find(|(typed, _)| {
                        named(typed) && !(kind == EntityKind::Reading && *typed == "entity_id")
                            || kind.synonyms(typed).iter().any(|synonym| named(synonym))
                    })
                    .map(|(typed, _)| *typed)
            }
        }
    }

    /// The source column holding the id, given the event's key and row image.
    pub fn id_column_for(&self, key: &Map<String, Value>) -> Option<String> {
        if let Some(column) = &self.id_column {
            return Some(column.clone());
        }
        let conventional = self.kind.id_column();
        if key.contains_key(conventional) {
            return Some(conventional.to_owned());
        }
        if key.contains_key("id") {
            return Some("id".to_owned());
        }
        if key.len() == 1 {
            return key.keys().next().cloned();
        }
        Some(conventional.to_owned())
    }

    /// This mapping with the reading entity kind settled for a reading with these columns.
    pub fn settled_for<'a>(&self, columns: impl Iterator<Item = &'a str>) -> EntityMapping {
        let mut settled = self.clone();
        if self.kind == EntityKind::Reading {
            settled.reading_entity = Some(self.reading_entity_for(columns));
        }
        settled
    }

    /// For a reading: the entity kind, given the names of the reading's columns.
    pub fn reading_entity_for<'a>(&self, mut columns: impl Iterator<Item = &'a str>) -> EntityKind {
        if let Some(entity) = self.reading_entity {
            return entity;
        }
        if self.columns.is_some() {
            // A stored mapping without an entity kind: readings belong to devices.
            return EntityKind::Device;
        }
        let names: Vec<&str> = columns.by_ref().collect();
        for entity in [EntityKind::Device, EntityKind::Site, EntityKind::Session] {
            if names
                .iter()
                .any(|column| column.eq_ignore_ascii_case(entity.id_column()))
            {
                return entity;
            }
        }
        EntityKind::Device
    }
}

/// A tenant's stored mappings, looked up by source and table.
#[derive(Debug, Clone, Default)]
pub struct Mappings {
    by_table: BTreeMap<(uuid::Uuid, String), MappingRow>,
}

impl Mappings {
    pub fn new(rows: impl IntoIterator<Item = MappingRow>) -> Self {
        Self {
            by_table: rows
                .into_iter()
                .map(|row| ((row.source_id, row.source_table.clone()), row))
                .collect(),
        }
    }

    /// The mapping of `schema.table` of `source`: a stored one (by `schema.table`, then by
    /// `table`), else the default by convention, else none.
    pub fn resolve(
        &self,
        source: uuid::Uuid,
        schema: &str,
        table: &str,
    ) -> Result<Option<TableMapping>, String> {
        let qualified = format!("{schema}.{table}");
        let stored = self
            .by_table
            .get(&(source, qualified))
            .or_else(|| self.by_table.get(&(source, table.to_owned())));
        match stored {
            Some(row) => from_row(row).map(Some),
            None => Ok(EntityKind::of_table(table).map(|kind| {
                TableMapping::Entity(EntityMapping {
                    kind,
                    id_column: None,
                    columns: None,
                    reading_entity: None,
                })
            })),
        }
    }
}

/// A stored mapping as the materializer uses it; an invalid one is a mapping conflict.
pub fn from_row(row: &MappingRow) -> Result<TableMapping, String> {
    validate(row)?;
    if row.entity_kind == "ignore" {
        return Ok(TableMapping::Ignore);
    }
    let kind = EntityKind::parse(&row.entity_kind)
        .ok_or_else(|| format!("unknown entity kind {:?}", row.entity_kind))?;
    Ok(TableMapping::Entity(EntityMapping {
        kind,
        id_column: row.id_column.clone(),
        columns: Some(row.columns.clone()),
        reading_entity: row
            .reading_entity_kind
            .as_deref()
            .and_then(EntityKind::parse),
    }))
}

/// Checks a mapping before it is stored (the store's rule, which the JSON API applies too).
pub fn validate(row: &MappingRow) -> Result<(), String> {
    store::read_models::validate_mapping(row)
}
