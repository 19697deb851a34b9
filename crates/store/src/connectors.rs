//! Setting a source up (the connector wizard, `/app/connectors`): what its agent found running
//! `check` (recorded by the edge, [`record_check`]), the tables an admin chose to capture
//! ([`choose_tables`], audited), and where the setup stands ([`setup`]): a step derived from
//! the source's record, so that leaving the wizard and coming back resumes where it was.

use domain::SourceId;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::audit::{self, AuditEntry};
use crate::sources::{Source, get_source};
use crate::{StoreError, TenantTx};

/// Where a source's setup stands; each step waits for the one thing named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SetupStep {
    /// Waits for the agent to pair with the one-time token.
    Pair,
    /// PostgreSQL: waits for the agent's `check` report.
    Check,
    /// PostgreSQL: waits for an admin to choose the tables to capture.
    Tables,
    /// Waits for the first events.
    Run,
    /// Events arrived.
    Done,
    /// The source is revoked: nothing to set up.
    Revoked,
}

impl SetupStep {
    pub fn as_str(self) -> &'static str {
        match self {
            SetupStep::Pair => "pair",
            SetupStep::Check => "check",
            SetupStep::Tables => "tables",
            SetupStep::Run => "run",
            SetupStep::Done => "done",
            SetupStep::Revoked => "revoked",
        }
    }
}

/// A finding of the agent's `check`, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckFinding {
    /// `ok`, `warning` or `fix`.
    pub level: String,
    pub message: String,
}

/// A table of the source as the agent reported it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportedTable {
    /// `schema.table`.
    pub name: String,
    pub has_key: bool,
    pub readable: bool,
    pub columns: Vec<String>,
}

/// The agent's latest `check` report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckRecord {
    #[serde(with = "time::serde::rfc3339")]
    pub reported_at: OffsetDateTime,
    pub agent_version: String,
    pub ready: bool,
    pub findings: Vec<CheckFinding>,
    pub tables: Vec<ReportedTable>,
    pub tables_omitted: i64,
}

/// A check report to record (the edge, as the service role, with the agent as actor).
#[derive(Debug, Clone, PartialEq)]
pub struct NewCheck {
    pub agent_version: String,
    pub ready: bool,
    pub findings: Vec<CheckFinding>,
    pub tables: Vec<ReportedTable>,
    pub tables_omitted: i64,
}

/// Records `source`'s latest check report, replacing the previous one.
pub async fn record_check(
    tx: &mut TenantTx,
    source: SourceId,
    check: &NewCheck,
) -> Result<(), StoreError> {
    let tenant = tx
        .tenant()
        .ok_or(StoreError::Forbidden("this needs a tenant scope"))?;
    let findings = serde_json::to_value(&check.findings).unwrap_or_default();
    let tables = serde_json::to_value(&check.tables).unwrap_or_default();
    sqlx::query(
        "insert into control.source_checks (tenant_id, source_id, agent_version, ready, findings, \
           tables, tables_omitted) values ($1, $2, $3, $4, $5, $6, $7) \
         on conflict (tenant_id, source_id) do update set reported_at = now(), \
           agent_version = excluded.agent_version, ready = excluded.ready, \
           findings = excluded.findings, tables = excluded.tables, \
           tables_omitted = excluded.tables_omitted",
    )
    .bind(tenant.as_uuid())
    .bind(source.as_uuid())
    .bind(&check.agent_version)
    .bind(check.ready)
    .bind(findings)
    .bind(tables)
    .bind(check.tables_omitted)
    .execute(tx.connection())
    .await?;
    Ok(())
}

/// The most tables a source's setup may choose.
pub const MAX_CHOSEN_TABLES: usize = 500;

/// Sets the tables to capture from `source` (`schema.table` each; audited). The names are
/// checked for shape, not against the agent's report: a table created after the check can be
/// named.
pub async fn choose_tables(
    tx: &mut TenantTx,
    source: SourceId,
    tables: &[String],
) -> Result<Vec<String>, StoreError> {
    let mut chosen: Vec<String> = Vec::with_capacity(tables.len());
    for table in tables {
        let table = table.as_str();
        let shaped = table
            .split_once('.')
            .is_some_and(|(schema, name)| !schema.is_empty() && !name.is_empty());
        if !shaped || table.chars().count() > 300 || table.chars().any(char::is_control) {
            return Err(StoreError::Invalid(
                "each table is named `schema.table`, at most 300 characters".into(),
            ));
        }
        if !chosen.iter().any(|known| known == table) {
            chosen.push(table.to_owned());
        }
    }
    if chosen.is_empty() {
        return Err(StoreError::Invalid("choose at least one table".into()));
    }
    if chosen.len() > MAX_CHOSEN_TABLES {
        return Err(StoreError::Invalid(format!(
            "at most {MAX_CHOSEN_TABLES} tables"
        )));
    }
    let source_row = get_source(tx, source).await?;
    if source_row.status == "revoked" {
        return Err(StoreError::Forbidden("the source is revoked"));
    }
    if source_row.kind != "postgres" {
        return Err(StoreError::Forbidden(
            "tables are chosen for a PostgreSQL source; a simulator has its own",
        ));
    }
    let tenant = tx
        .tenant()
        .ok_or(StoreError::Forbidden("this needs a tenant scope"))?;
    sqlx::query(
        "update control.sources set capture_tables = $3 where tenant_id = $1 and source_id = $2",
    )
    .bind(tenant.as_uuid())
    .bind(source.as_uuid())
    .bind(&chosen)
    .execute(tx.connection())
    .await?;
    audit::append(
        tx,
        AuditEntry::new("source.tables.choose", source.to_string())
            .details(serde_json::json!({ "tables": chosen })),
    )
    .await?;
    Ok(chosen)
}

/// One of a source's newest events, as the wizard's last step shows it (no row values).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct RecentEvent {
    /// `schema.table`.
    pub table: String,
    pub op: String,
    #[serde(with = "time::serde::rfc3339")]
    pub event_time: OffsetDateTime,
}

/// Where a source's setup stands, with everything the wizard shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Setup {
    pub source: Source,
    pub step: SetupStep,
    /// A certificate was issued to its agent.
    pub paired: bool,
    /// The newest pairing token not used yet, if any, and when it expires (its secret was
    /// shown once, when issued).
    #[serde(with = "time::serde::rfc3339::option")]
    pub pairing_token_expires_at: Option<OffsetDateTime>,
    pub check: Option<CheckRecord>,
    /// The tables chosen to capture; `None` before they are chosen.
    pub capture_tables: Option<Vec<String>>,
    /// The source's newest events, newest first (at most five).
    pub recent_events: Vec<RecentEvent>,
}

/// `source`'s setup; `NotFound` for an id the tenant has no source of. Reads bronze: needs a
/// role that may (the wizard is for those who manage sources).
pub async fn setup(tx: &mut TenantTx, source: SourceId) -> Result<Setup, StoreError> {
    let found = get_source(tx, source).await?;
    let tenant = tx
        .tenant()
        .ok_or(StoreError::Forbidden("this needs a tenant scope"))?;
    let (paired, token_expires, capture_tables): (
        bool,
        Option<OffsetDateTime>,
        Option<Vec<String>>,
    ) = sqlx::query_as(
        "select exists (select 1 from control.certificates c \
                    where c.tenant_id = s.tenant_id and c.source_id = s.source_id), \
                    (select t.expires_at from control.pairing_tokens t \
                     where t.tenant_id = s.tenant_id and t.source_id = s.source_id \
                       and t.used_at is null order by t.created_at desc limit 1), \
                    s.capture_tables \
             from control.sources s where s.tenant_id = $1 and s.source_id = $2",
    )
    .bind(tenant.as_uuid())
    .bind(source.as_uuid())
    .fetch_one(tx.connection())
    .await?;
    type CheckRow = (
        OffsetDateTime,
        String,
        bool,
        serde_json::Value,
        serde_json::Value,
        i64,
    );
    let check: Option<CheckRow> = sqlx::query_as(
        "select reported_at, agent_version, ready, findings, tables, tables_omitted \
         from control.source_checks where tenant_id = $1 and source_id = $2",
    )
    .bind(tenant.as_uuid())
    .bind(source.as_uuid())
    .fetch_optional(tx.connection())
    .await?;
    let check = check.map(
        |(reported_at, agent_version, ready, findings, tables, tables_omitted)| CheckRecord {
            reported_at,
            agent_version,
            ready,
            findings: serde_json::from_value(findings).unwrap_or_default(),
            tables: serde_json::from_value(tables).unwrap_or_default(),
            tables_omitted,
        },
    );
    let recent_events: Vec<RecentEvent> = sqlx::query_as(
        "select schema_name || '.' || table_name as table, op, event_time \
         from bronze.cdc_events where tenant_id = $1 and source_id = $2 \
         order by lsn desc, seq desc limit 5",
    )
    .bind(tenant.as_uuid())
    .bind(source.as_uuid())
    .fetch_all(tx.connection())
    .await?;
    let step = if found.status == "revoked" {
        SetupStep::Revoked
    } else if !recent_events.is_empty() {
        SetupStep::Done
    } else if !paired {
        SetupStep::Pair
    } else if found.kind != "postgres" || capture_tables.is_some() {
        // A simulator has no prerequisites and no tables to choose.
        SetupStep::Run
    } else if check.is_some() {
        SetupStep::Tables
    } else {
        SetupStep::Check
    };
    Ok(Setup {
        source: found,
        step,
        paired,
        pairing_token_expires_at: token_expires,
        check,
        capture_tables,
        recent_events,
    })
}
