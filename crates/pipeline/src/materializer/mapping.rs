//! Which source table feeds which entity kind, and which source column which typed column: the
//! stored mappings people edit, and the default mapping by conventional names that applies to a
//! table nobody mapped (docs/materializer.md).

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use store::read_models::MappingRow;

pub use domain::read_model::{ColumnType, EntityKind};
use domain::read_model::{conventional_column, conventional_reading_entity, kind_of_table};

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
            None => conventional_column(
                self.kind,
                source_column,
                self.reading_entity.unwrap_or(EntityKind::Device),
            ),
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
    pub fn reading_entity_for<'a>(&self, columns: impl Iterator<Item = &'a str>) -> EntityKind {
        if let Some(entity) = self.reading_entity {
            return entity;
        }
        if self.columns.is_some() {
            // A stored mapping without an entity kind: readings belong to devices.
            return EntityKind::Device;
        }
        conventional_reading_entity(columns)
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
            None => Ok(kind_of_table(table).map(|kind| {
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
