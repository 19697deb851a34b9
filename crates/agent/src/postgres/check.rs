//! `tributary-agent check` for a PostgreSQL source: every prerequisite, and for each one that
//! is missing, exactly what to change.

use sqlx::PgConnection;

use super::catalog::quote_ident;
use super::{Settings, connect_sql, database_message};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warning,
    /// Must be fixed before the agent can run.
    Fix,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let label = match self.level {
            Level::Ok => "ok     ",
            Level::Warning => "warning",
            Level::Fix => "FIX    ",
        };
        write!(formatter, "{label} {}", self.message)
    }
}

fn finding(level: Level, message: impl Into<String>) -> Finding {
    Finding {
        level,
        message: message.into(),
    }
}

/// Checks the source's settings, the role's privileges, the slot and the tables.
pub async fn check(settings: &Settings) -> Vec<Finding> {
    if let Err(error) = settings.validate() {
        return vec![finding(Level::Fix, format!("{error:#}"))];
    }
    let mut connection = match connect_sql(settings).await {
        Ok(connection) => connection,
        Err(error) => {
            let cause = error
                .chain()
                .last()
                .map(ToString::to_string)
                .unwrap_or_default();
            return vec![finding(
                Level::Fix,
                format!(
                    "cannot connect to the source ({cause}): check the URL, the network and pg_hba.conf"
                ),
            )];
        }
    };
    match findings(&mut connection, settings).await {
        Ok(findings) => findings,
        Err(error) => vec![finding(
            Level::Fix,
            format!(
                "reading the source's catalog failed: {}",
                database_message(&error)
            ),
        )],
    }
}

async fn findings(
    connection: &mut PgConnection,
    settings: &Settings,
) -> sqlx::Result<Vec<Finding>> {
    let mut out = Vec::new();
    let (role, replication, superuser): (String, bool, bool) = sqlx::query_as(
        "select current_user::text, rolreplication, rolsuper from pg_roles where rolname = current_user",
    )
    .fetch_one(&mut *connection)
    .await?;
    let wal_level: String = sqlx::query_scalar("select current_setting('wal_level')")
        .fetch_one(&mut *connection)
        .await?;
    if wal_level == "logical" {
        out.push(finding(Level::Ok, "wal_level = logical"));
    } else {
        out.push(finding(
            Level::Fix,
            format!(
                "wal_level is {wal_level:?}; logical replication needs wal_level = logical: run \
                 ALTER SYSTEM SET wal_level = logical (as a superuser) and restart PostgreSQL"
            ),
        ));
    }
    if replication || superuser {
        out.push(finding(
            Level::Ok,
            format!("the role {role:?} may replicate"),
        ));
    } else {
        out.push(finding(
            Level::Fix,
            format!(
                "the role {role:?} lacks the REPLICATION attribute: a superuser can grant it with \
                 ALTER ROLE {} REPLICATION",
                quote_ident(&role)
            ),
        ));
    }
    let (max_slots, used_slots, slot_exists, max_senders, senders): (i64, i64, bool, i64, i64) =
        sqlx::query_as(
            "select current_setting('max_replication_slots')::int8, \
                    (select count(*) from pg_replication_slots), \
                    exists (select 1 from pg_replication_slots where slot_name = $1), \
                    current_setting('max_wal_senders')::int8, \
                    (select count(*) from pg_stat_replication)",
        )
        .bind(&settings.slot)
        .fetch_one(&mut *connection)
        .await?;
    if slot_exists {
        let wal_status: Option<String> = sqlx::query_scalar(
            "select wal_status::text from pg_replication_slots where slot_name = $1",
        )
        .bind(&settings.slot)
        .fetch_one(&mut *connection)
        .await?;
        if wal_status.as_deref() == Some("lost") {
            out.push(finding(
                Level::Fix,
                format!(
                    "the replication slot {:?} was invalidated by the source: run \
                     `tributary-agent resync` to take a new snapshot",
                    settings.slot
                ),
            ));
        } else {
            out.push(finding(
                Level::Ok,
                format!("the replication slot {:?} exists", settings.slot),
            ));
        }
    } else if used_slots >= max_slots {
        out.push(finding(
            Level::Fix,
            format!(
                "max_replication_slots = {max_slots} and all are in use: raise \
                 max_replication_slots (a restart is needed) or drop an unused slot"
            ),
        ));
    } else {
        out.push(finding(
            Level::Ok,
            format!(
                "a replication slot is free ({used_slots} of {max_slots} in use); the agent creates the slot {:?}",
                settings.slot
            ),
        ));
    }
    if senders >= max_senders {
        out.push(finding(
            Level::Fix,
            format!(
                "max_wal_senders = {max_senders} and all are in use: raise max_wal_senders (a \
                 restart is needed)"
            ),
        ));
    }
    let keep: String = sqlx::query_scalar("select current_setting('max_slot_wal_keep_size')")
        .fetch_one(&mut *connection)
        .await?;
    if keep == "-1" {
        out.push(finding(
            Level::Warning,
            "max_slot_wal_keep_size is unlimited: while the agent cannot deliver, the slot keeps \
             WAL until the disk fills; consider a limit (the agent warns before it is reached)",
        ));
    }
    let encoding: String = sqlx::query_scalar("select current_setting('server_encoding')")
        .fetch_one(&mut *connection)
        .await?;
    if encoding != "UTF8" {
        out.push(finding(
            Level::Fix,
            format!("the database's encoding is {encoding}; the agent reads UTF8 databases only"),
        ));
    }

    let publication_exists: bool =
        sqlx::query_scalar("select exists (select 1 from pg_publication where pubname = $1)")
            .bind(&settings.publication)
            .fetch_one(&mut *connection)
            .await?;
    let tables: Vec<(String, String)> = if publication_exists {
        out.push(finding(
            Level::Ok,
            format!("the publication {:?} exists", settings.publication),
        ));
        let mut tables = super::captured_tables(connection, settings).await?;
        tables.extend(settings.table_names());
        tables.sort();
        tables.dedup();
        tables
    } else if settings.tables.is_empty() {
        if superuser {
            out.push(finding(
                Level::Ok,
                format!(
                    "the agent creates the publication {:?} (tables with a key or replica \
                     identity) and the publication {:?} (inserts of the others)",
                    settings.publication,
                    super::publication::insert_only_name(&settings.publication)
                ),
            ));
        } else {
            out.push(finding(
                Level::Fix,
                format!(
                    "capturing all tables needs a superuser: ask one to run CREATE PUBLICATION {} \
                     FOR ALL TABLES WITH (publish = 'insert, truncate'), or list the tables in \
                     the configuration",
                    quote_ident(&super::publication::insert_only_name(&settings.publication))
                ),
            ));
        }
        sqlx::query_as(
            "select n.nspname::text, c.relname::text from pg_class c \
             join pg_namespace n on n.oid = c.relnamespace \
             where c.relkind in ('r', 'p') and n.nspname not in ('pg_catalog', 'information_schema') \
               and n.nspname not like 'pg\\_%' order by 1, 2",
        )
        .fetch_all(&mut *connection)
        .await?
    } else {
        settings.table_names()
    };
    let mut keyless = Vec::new();
    for (schema, table) in &tables {
        let usable = table_findings(
            connection,
            schema,
            table,
            &role,
            superuser,
            publication_exists,
            &mut out,
        )
        .await?;
        if !usable {
            keyless.push(format!("{schema}.{table}"));
        }
    }
    let all_tables: Option<bool> = sqlx::query_scalar(
        "select puballtables and (pubupdate or pubdelete) from pg_publication where pubname = $1",
    )
    .bind(&settings.publication)
    .fetch_optional(&mut *connection)
    .await?;
    if all_tables == Some(true) && !keyless.is_empty() {
        // Blocks `run`: the agent cannot take these tables out of a FOR ALL TABLES publication.
        out.push(finding(
            Level::Fix,
            format!(
                "the publication {:?} publishes every table for updates and deletes, so updates \
                 and deletes on {} fail on the source: give each a primary key or run ALTER \
                 TABLE ... REPLICA IDENTITY FULL, or drop the publication (DROP PUBLICATION {}) \
                 so that the agent creates it again, per table",
                settings.publication,
                keyless.join(", "),
                quote_ident(&settings.publication)
            ),
        ));
    }
    Ok(out)
}

async fn table_findings(
    connection: &mut PgConnection,
    schema: &str,
    table: &str,
    role: &str,
    superuser: bool,
    publication_exists: bool,
    out: &mut Vec<Finding>,
) -> sqlx::Result<bool> {
    let name = format!("{}.{}", quote_ident(schema), quote_ident(table));
    let row: Option<(i64, String, String, bool, bool, Vec<String>)> = sqlx::query_as(
        "select c.oid::int8, pg_get_userbyid(c.relowner)::text, c.relreplident::text, \
                has_table_privilege(c.oid, 'SELECT'), \
                exists (select 1 from pg_index i where i.indrelid = c.oid and case \
                        when c.relreplident = 'i' then i.indisreplident else i.indisprimary end), \
                coalesce(array(select a.attname::text from pg_attribute a join pg_type t on t.oid = a.atttypid \
                         where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped \
                           and a.attstorage in ('x', 'e') order by a.attnum), '{}') \
         from pg_class c join pg_namespace n on n.oid = c.relnamespace \
         where n.nspname = $1 and c.relname = $2 and c.relkind in ('r', 'p')",
    )
    .bind(schema)
    .bind(table)
    .fetch_optional(&mut *connection)
    .await?;
    let Some((_, owner, identity, readable, has_key, out_of_line)) = row else {
        out.push(finding(
            Level::Fix,
            format!("the table {name} does not exist"),
        ));
        return Ok(true);
    };
    let usable = identity == "f" || (has_key && identity != "n");
    if !readable {
        out.push(finding(
            Level::Fix,
            format!(
                "the role {role:?} cannot read {name} for the initial snapshot: GRANT SELECT ON {name} TO {}",
                quote_ident(role)
            ),
        ));
    }
    if !publication_exists && !superuser && owner != role {
        out.push(finding(
            Level::Fix,
            format!(
                "creating the publication needs ownership of {name} (owned by {owner:?}): ask \
                 its owner or a superuser to create the publication, or to run ALTER TABLE {name} \
                 OWNER TO {}",
                quote_ident(role)
            ),
        ));
    }
    if !usable {
        // Limits `run`, does not block it: the table is published for inserts and truncates
        // only, so the source's own updates and deletes keep working.
        out.push(finding(
            Level::Warning,
            format!(
                "{name} has no primary key or replica identity: its inserts and truncates are \
                 captured, its updates and deletes are not (reported as not captured); to \
                 capture them run ALTER TABLE {name} REPLICA IDENTITY FULL or add a primary key"
            ),
        ));
    }
    if !out_of_line.is_empty() && identity != "f" {
        out.push(finding(
            Level::Warning,
            format!(
                "{name} has columns that may be stored out of line ({}): an update that leaves \
                 such a value unchanged does not carry it, and the agent marks it `unchanged` for \
                 the platform to keep the previous value; for complete row images run ALTER \
                 TABLE {name} REPLICA IDENTITY FULL",
                out_of_line.join(", ")
            ),
        ));
    }
    if readable && usable {
        out.push(finding(Level::Ok, format!("{name} can be captured")));
    }
    Ok(usable)
}

/// The source's tables for the connector wizard to offer: every ordinary and partitioned
/// table outside the system schemas, with whether it has a key (or replica identity) and
/// whether the role may read it, and its columns; at most [`protocol::MAX_CHECK_TABLES`], and
/// how many more there are.
pub async fn source_tables(
    settings: &Settings,
) -> anyhow::Result<(Vec<protocol::SourceTable>, u64)> {
    let mut connection = connect_sql(settings).await?;
    let limit = i64::try_from(protocol::MAX_CHECK_TABLES).unwrap_or(i64::MAX);
    let columns = i32::try_from(protocol::MAX_CHECK_COLUMNS).unwrap_or(i32::MAX);
    let rows: Vec<(String, bool, bool, Vec<String>, i64)> = sqlx::query_as(
        "select n.nspname || '.' || c.relname, \
                c.relreplident = 'f' or (c.relreplident <> 'n' and exists (select 1 from pg_index i \
                    where i.indrelid = c.oid and case when c.relreplident = 'i' \
                    then i.indisreplident else i.indisprimary end)), \
                has_table_privilege(c.oid, 'SELECT'), \
                coalesce((array(select a.attname::text from pg_attribute a \
                    where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped \
                    order by a.attnum))[1:$2], '{}'), \
                count(*) over () \
         from pg_class c join pg_namespace n on n.oid = c.relnamespace \
         where c.relkind in ('r', 'p') and not c.relispartition \
           and n.nspname not in ('pg_catalog', 'information_schema') \
           and n.nspname not like 'pg\\_%' \
         order by 1 limit $1",
    )
    .bind(limit)
    .bind(columns)
    .fetch_all(&mut connection)
    .await
    .map_err(|error| anyhow::anyhow!("listing the source's tables: {}", database_message(&error)))?;
    let total = rows.first().map_or(0, |row| row.4);
    let listed = rows.len();
    let tables = rows
        .into_iter()
        .map(
            |(name, has_key, readable, columns, _)| protocol::SourceTable {
                name,
                has_key,
                readable,
                columns,
            },
        )
        .collect();
    Ok((
        tables,
        u64::try_from(total)
            .unwrap_or(0)
            .saturating_sub(listed as u64),
    ))
}
