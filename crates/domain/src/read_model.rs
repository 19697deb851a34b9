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
