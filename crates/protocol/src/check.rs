//! The body of `POST /v1/check`: what `tributary-agent check` (and `run`, as it starts) found
//! about its source's prerequisites, and the tables the source has, so that the connector
//! wizard can show the findings and offer the tables to capture without anyone copying a
//! terminal's output. Table and column names are the source's metadata, never its rows.

use serde::{Deserialize, Serialize};

/// The largest check body the edge reads.
pub const MAX_CHECK_BYTES: usize = 256 * 1024;
/// At most this many findings are reported.
pub const MAX_CHECK_FINDINGS: usize = 300;
/// At most this many tables are reported (the rest are counted in `tables_omitted`).
pub const MAX_CHECK_TABLES: usize = 500;
/// At most this many columns are reported per table.
pub const MAX_CHECK_COLUMNS: usize = 100;

/// One `check` run's result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckReport {
    pub agent_version: String,
    pub source_kind: String,
    /// No finding must be fixed before the agent can run.
    pub ready: bool,
    pub findings: Vec<CheckFinding>,
    /// The source's tables (PostgreSQL: every ordinary and partitioned table outside the
    /// system schemas the agent's role can see), by name.
    #[serde(default)]
    pub tables: Vec<SourceTable>,
    /// Tables beyond [`MAX_CHECK_TABLES`], not listed.
    #[serde(default)]
    pub tables_omitted: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckFinding {
    /// `ok`, `warning`, or `fix` (must be fixed before the agent can run).
    pub level: String,
    pub message: String,
}

/// A table of the source, as the wizard offers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceTable {
    /// `schema.table`.
    pub name: String,
    /// Its updates and deletes can be captured (a primary key or replica identity); without,
    /// only its inserts and truncates are.
    pub has_key: bool,
    /// The role can read it for the initial snapshot.
    pub readable: bool,
    /// Its columns in order, at most [`MAX_CHECK_COLUMNS`].
    pub columns: Vec<String>,
}

/// The levels a finding may have.
pub const CHECK_LEVELS: [&str; 3] = ["ok", "warning", "fix"];

impl CheckReport {
    /// Bounds every text and list, so that a report is always storable and displayable.
    pub fn validate(&self) -> Result<(), String> {
        for (field, value) in [
            ("agent_version", self.agent_version.as_str()),
            ("source_kind", self.source_kind.as_str()),
        ] {
            if value.len() > 64 || value.chars().any(char::is_control) {
                return Err(format!(
                    "`{field}` must be at most 64 bytes without control characters"
                ));
            }
        }
        if self.findings.len() > MAX_CHECK_FINDINGS {
            return Err(format!("at most {MAX_CHECK_FINDINGS} `findings`"));
        }
        for finding in &self.findings {
            if !CHECK_LEVELS.contains(&finding.level.as_str()) {
                return Err(format!(
                    "a finding's `level` is one of {}",
                    CHECK_LEVELS.join(", ")
                ));
            }
            if finding.message.len() > 2000 {
                return Err("a finding's `message` is at most 2000 bytes".into());
            }
        }
        if self.tables.len() > MAX_CHECK_TABLES {
            return Err(format!("at most {MAX_CHECK_TABLES} `tables`"));
        }
        let bad_name =
            |name: &str| name.is_empty() || name.len() > 300 || name.chars().any(char::is_control);
        for table in &self.tables {
            if bad_name(&table.name) || !table.name.contains('.') {
                return Err(
                    "a table's `name` is `schema.table`, at most 300 bytes without control characters"
                        .into(),
                );
            }
            if table.columns.len() > MAX_CHECK_COLUMNS
                || table.columns.iter().any(|column| bad_name(column))
            {
                return Err(format!(
                    "a table has at most {MAX_CHECK_COLUMNS} `columns`, each at most 300 bytes \
                     without control characters"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> CheckReport {
        CheckReport {
            agent_version: "0.1.0".into(),
            source_kind: "postgres".into(),
            ready: true,
            findings: vec![CheckFinding {
                level: "ok".into(),
                message: "wal_level = logical".into(),
            }],
            tables: vec![SourceTable {
                name: "public.devices".into(),
                has_key: true,
                readable: true,
                columns: vec!["device_id".into(), "kind".into()],
            }],
            tables_omitted: 0,
        }
    }

    #[test]
    fn a_report_within_bounds_is_valid_and_each_bound_is_named_when_broken() {
        assert_eq!(report().validate(), Ok(()));
        let mut level = report();
        level.findings[0].level = "fatal".into();
        assert!(level.validate().unwrap_err().contains("level"));
        let mut name = report();
        name.tables[0].name = "devices".into();
        assert!(name.validate().unwrap_err().contains("schema.table"));
        let mut control = report();
        control.tables[0].columns.push("a\nb".into());
        assert!(control.validate().unwrap_err().contains("columns"));
        let mut many = report();
        many.tables = vec![many.tables[0].clone(); MAX_CHECK_TABLES + 1];
        assert!(many.validate().unwrap_err().contains("tables"));
    }

    #[test]
    fn a_report_without_tables_is_read() {
        let report: CheckReport = serde_json::from_str(
            r#"{"agent_version": "0.1.0", "source_kind": "simulator", "ready": true, "findings": []}"#,
        )
        .unwrap();
        assert!(report.tables.is_empty());
    }
}
