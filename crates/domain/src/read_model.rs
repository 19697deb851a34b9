//! The read models' vocabulary: the entity kinds a source table can feed and the typed columns
//! each kind has, with their types. The store validates mappings against it, the materializer
//! converts values by it, and the API lists it; this is the one copy.

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

    /// Every kind, in the order people read them.
    pub const ALL: [EntityKind; 4] = [
        EntityKind::Site,
        EntityKind::Device,
        EntityKind::Session,
        EntityKind::Reading,
    ];

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

    /// The type's short name in mappings and the API: `text`, `number` or `time`.
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Text => "text",
            ColumnType::Num => "number",
            ColumnType::Time => "time",
        }
    }
}

/// Conventional source names of a typed column, besides its own name, that the default mapping
/// reads into it.
pub fn synonyms(kind: EntityKind, typed_column: &str) -> &'static [&'static str] {
    match (kind, typed_column) {
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

/// The kind a table of this conventional name holds, if any: the default mapping of a table
/// nobody mapped.
pub fn kind_of_table(table: &str) -> Option<EntityKind> {
    let table = table.to_ascii_lowercase();
    Some(match table.as_str() {
        "sites" | "site" | "locations" | "location" => EntityKind::Site,
        "devices" | "device" | "chargers" | "charger" | "machines" | "kiosks" | "assets" => {
            EntityKind::Device
        }
        "sessions" | "session" | "charging_sessions" => EntityKind::Session,
        "readings" | "reading" | "metrics" | "measurements" | "telemetry" => EntityKind::Reading,
        _ => return None,
    })
}

/// The typed column `source_column` feeds under the default mapping of a table of `kind` (by
/// its own name or a synonym, compared without case); for a reading, the column holding the
/// id of `reading_entity` feeds `entity_id`.
pub fn conventional_column(
    kind: EntityKind,
    source_column: &str,
    reading_entity: EntityKind,
) -> Option<&'static str> {
    // Compared without building a lowercase copy: the materializer runs this for every column
    // of every event, several times.
    let named = |name: &str| source_column.eq_ignore_ascii_case(name);
    if kind == EntityKind::Reading && named(reading_entity.id_column()) {
        return Some("entity_id");
    }
    kind.typed_columns()
        .iter()
        .find(|(typed, _)| {
            named(typed) && !(kind == EntityKind::Reading && *typed == "entity_id")
                || synonyms(kind, typed).iter().any(|synonym| named(synonym))
        })
        .map(|(typed, _)| *typed)
}

/// Under the default mapping, the kind of entity a reading with these columns belongs to: the
/// first of device, site and session whose id column it has, else a device.
pub fn conventional_reading_entity<'a>(columns: impl IntoIterator<Item = &'a str>) -> EntityKind {
    let names: Vec<&str> = columns.into_iter().collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_parses_from_its_own_name_and_names_its_columns_once() {
        for kind in EntityKind::ALL {
            assert_eq!(EntityKind::parse(kind.as_str()), Some(kind));
            let mut names: Vec<&str> = kind.typed_columns().iter().map(|(name, _)| *name).collect();
            let count = names.len();
            names.sort_unstable();
            names.dedup();
            assert_eq!(
                names.len(),
                count,
                "{} names a typed column twice",
                kind.as_str()
            );
            assert!(kind.column_type(names[0]).is_some());
        }
        assert_eq!(EntityKind::parse("ignore"), None);
    }
}
