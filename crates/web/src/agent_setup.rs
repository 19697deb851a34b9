//! What the connector wizard (`/app/connectors`) and its JSON twin
//! (`GET /api/v1/sources/{source}/setup`) hand a customer to run beside their database: the
//! agent's commands, its `agent.toml`, the source database's prerequisites, and how each of the
//! source's tables would feed the read models by default. Written once here for both.

use domain::read_model::{
    EntityKind, conventional_column, conventional_reading_entity, kind_of_table,
};
use serde::Serialize;
use store::connectors::{ReportedTable, Setup};
use store::read_models::MappingRow;

/// Where agents connect, as the wizard prints it.
#[derive(Debug, Clone)]
pub struct AgentEndpoint {
    /// The edge's URL agents pair with and send to (`https://host:port`).
    pub edge_url: String,
    /// The platform's CA certificate (PEM), which the agent pins with `pair --ca`.
    pub ca_pem: String,
}

/// The agent's state directory the printed commands and `agent.toml` name.
pub const STATE_DIR: &str = "/var/lib/tributary-agent";
/// The file name the CA certificate is downloaded as, and `pair --ca` names.
pub const CA_FILE: &str = "tributary-ca.pem";
/// Where the database URL goes: an environment variable keeps its password out of the file.
pub const SOURCE_URL_EXAMPLE: &str =
    "postgres://tributary_agent:PASSWORD@DATABASE-HOST:5432/DATABASE";

/// The slot and publication a source's agent uses: its own, so that two sources can read one
/// database (lowercase letters, digits and `_`, as the agent requires).
pub fn slot_name(setup: &Setup) -> String {
    let id = setup.source.source_id.to_string().replace('-', "");
    format!("tributary_{}", &id[..12])
}

/// The commands, in the order they are run.
#[derive(Debug, Clone, Serialize)]
pub struct Commands {
    /// Sets where the agent keeps its key, certificate and spool.
    pub state_dir: String,
    /// `pair`, with `token` in it (the wizard has the token only when it was just issued).
    pub pair: String,
    /// Sets the database URL without writing it into the file (PostgreSQL).
    pub source_url: Option<String>,
    pub check: String,
    pub run: String,
}

pub fn commands(setup: &Setup, endpoint: &AgentEndpoint, token: &str) -> Commands {
    Commands {
        state_dir: format!("export TRIBUTARY_AGENT_STATE_DIR={STATE_DIR}"),
        pair: format!(
            "tributary-agent pair --edge {} --ca {CA_FILE} --token {token}",
            endpoint.edge_url
        ),
        source_url: (setup.source.kind == "postgres")
            .then(|| format!("export TRIBUTARY_AGENT_SOURCE_URL='{SOURCE_URL_EXAMPLE}'")),
        check: "tributary-agent check --config agent.toml".to_owned(),
        run: "tributary-agent run --config agent.toml".to_owned(),
    }
}

/// A TOML basic string of `text` (names reach here without control characters).
fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for character in text.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            character if character.is_control() => {
                out.push_str(&format!("\\u{:04X}", u32::from(character)));
            }
            character => out.push(character),
        }
    }
    out.push('"');
    out
}

/// The source's `agent.toml`: the edge, the state directory, and the source with the tables
/// chosen in the wizard (none yet: a comment says to choose them).
pub fn agent_toml(setup: &Setup, endpoint: &AgentEndpoint) -> String {
    let source = &setup.source;
    let mut out = format!(
        "# tributary-agent configuration for the source {} ({}), from the connector wizard.\n\
         # Environment variables override the file: TRIBUTARY_AGENT_EDGE, TRIBUTARY_AGENT_STATE_DIR,\n\
         # TRIBUTARY_AGENT_SOURCE_URL (keeps the database password out of this file).\n\
         edge = {}\n\
         state_dir = {}\n\n[source]\nkind = {}\n",
        toml_string(&source.name),
        source.source_id,
        toml_string(&endpoint.edge_url),
        toml_string(STATE_DIR),
        toml_string(&source.kind),
    );
    if source.kind == "postgres" {
        let slot = slot_name(setup);
        out.push_str(
            "# The source database. Set it with TRIBUTARY_AGENT_SOURCE_URL, or here without the\n\
             # password. The role needs REPLICATION and SELECT on the tables.\n",
        );
        out.push_str(&format!("url = {}\n", toml_string(SOURCE_URL_EXAMPLE)));
        match &setup.capture_tables {
            Some(tables) => {
                let names: Vec<String> = tables.iter().map(|table| toml_string(table)).collect();
                out.push_str(&format!("tables = [{}]\n", names.join(", ")));
            }
            None => out.push_str(
                "# Choose the tables in the wizard (step 4), then download this file again.\n\
                 tables = []\n",
            ),
        }
        out.push_str(&format!(
            "slot = {}\npublication = {}\n",
            toml_string(&slot),
            toml_string(&slot)
        ));
    } else {
        out.push_str("events_per_second = 50\ndevices = 20\n");
    }
    out.push_str("\n[spool]\nmax_bytes = 1073741824\n");
    out
}

/// The SQL a database administrator runs on the source, before the agent's first `check`.
pub fn prerequisites_sql(setup: &Setup) -> String {
    let slot = slot_name(setup);
    let tables = match &setup.capture_tables {
        Some(tables) if !tables.is_empty() => tables.join(", "),
        _ => "<the tables you choose in step 4>".to_owned(),
    };
    format!(
        "-- As a superuser, once (a restart follows):\n\
         ALTER SYSTEM SET wal_level = logical;\n\
         -- A role for the agent:\n\
         CREATE ROLE tributary_agent WITH LOGIN REPLICATION PASSWORD '...';\n\
         GRANT SELECT ON ALL TABLES IN SCHEMA public TO tributary_agent;\n\
         -- The agent creates its publication when it owns the tables; otherwise their owner runs:\n\
         CREATE PUBLICATION {slot} FOR TABLE {tables};\n\
         -- Optional, recommended: bound the WAL a stalled slot may keep.\n\
         ALTER SYSTEM SET max_slot_wal_keep_size = '20GB';"
    )
}

/// How one reported table would feed the read models.
#[derive(Debug, Clone, Serialize)]
pub struct TablePreview {
    pub name: String,
    pub has_key: bool,
    pub readable: bool,
    /// Chosen to capture (or, before any choice, proposed).
    pub chosen: bool,
    /// `site`, `device`, `session`, `reading`, `ignore` as stored, else by the table's name
    /// (`None`: kept in bronze only, no read model).
    pub kind: Option<&'static str>,
    /// The kind comes from a stored mapping, not the table's name.
    pub mapped: bool,
    /// Source column → typed column, for the columns the kind's default mapping takes; the
    /// rest land in the entity's typed extras.
    pub columns: Vec<(String, &'static str)>,
    /// Columns kept in the extras.
    pub extras: Vec<String>,
}

/// The kind a stored mapping names, as a static name.
fn kind_name(stored: &str) -> Option<&'static str> {
    if stored == "ignore" {
        return Some("ignore");
    }
    EntityKind::parse(stored).map(EntityKind::as_str)
}

/// The default mapping of a table of `kind` with `columns`: which column feeds which typed
/// column, and which are extras.
pub fn column_preview(
    kind: EntityKind,
    columns: &[String],
) -> (Vec<(String, &'static str)>, Vec<String>) {
    let reading_entity = conventional_reading_entity(columns.iter().map(String::as_str));
    let mut typed = Vec::new();
    let mut extras = Vec::new();
    for column in columns {
        if column.eq_ignore_ascii_case(kind.id_column()) || column.eq_ignore_ascii_case("id") {
            typed.push((column.clone(), "id"));
        } else if let Some(target) = conventional_column(kind, column, reading_entity) {
            typed.push((column.clone(), target));
        } else {
            extras.push(column.clone());
        }
    }
    (typed, extras)
}

/// The source's reported tables as the wizard's table step shows them.
pub fn table_previews(setup: &Setup, mappings: &[MappingRow]) -> Vec<TablePreview> {
    let Some(check) = &setup.check else {
        return Vec::new();
    };
    let proposed: Vec<&ReportedTable> = check
        .tables
        .iter()
        .filter(|table| table.readable && kind_of_table(short_name(&table.name)).is_some())
        .collect();
    check
        .tables
        .iter()
        .map(|table| {
            let stored = mappings.iter().find(|mapping| {
                mapping.source_id == *setup.source.source_id.as_uuid()
                    && (mapping.source_table == table.name
                        || mapping.source_table == short_name(&table.name))
            });
            let kind = match stored {
                Some(mapping) => kind_name(&mapping.entity_kind),
                None => kind_of_table(short_name(&table.name)).map(EntityKind::as_str),
            };
            let (columns, extras) = match kind.and_then(EntityKind::parse) {
                Some(kind) => column_preview(kind, &table.columns),
                None => (Vec::new(), Vec::new()),
            };
            let chosen = match &setup.capture_tables {
                Some(chosen) => chosen.contains(&table.name),
                // Proposed: the tables a read model recognises by name, else every readable one.
                None if proposed.is_empty() => table.readable,
                None => proposed
                    .iter()
                    .any(|candidate| candidate.name == table.name),
            };
            TablePreview {
                name: table.name.clone(),
                has_key: table.has_key,
                readable: table.readable,
                chosen,
                kind,
                mapped: stored.is_some(),
                columns,
                extras,
            }
        })
        .collect()
}

/// `table` of `schema.table`.
pub fn short_name(qualified: &str) -> &str {
    qualified
        .split_once('.')
        .map_or(qualified, |(_, table)| table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_toml_string_escapes_quotes_and_backslashes() {
        assert_eq!(toml_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(toml_string("é\u{7}"), "\"é\\u0007\"");
    }

    #[test]
    fn the_column_preview_follows_the_default_mapping() {
        let columns: Vec<String> = ["device_id", "site_id", "kind", "firmware_version", "colour"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        let (typed, extras) = column_preview(EntityKind::Device, &columns);
        assert!(typed.contains(&("device_id".to_owned(), "id")));
        assert!(typed.contains(&("firmware_version".to_owned(), "firmware")));
        assert_eq!(extras, vec!["colour".to_owned()]);
    }
}
