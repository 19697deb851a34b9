//! The initial snapshot: every row of the published tables as `read` events, all stamped with
//! the slot's consistent point, read in key order in chunks so that a restart continues after
//! the last spooled row instead of starting over. A table without a unique key is read through
//! a server-side cursor, a chunk at a time, so memory stays bounded whatever its size.
//!
//! The first run reads inside the snapshot the slot exported, so the rows are exactly the
//! state the stream continues from. A run that resumes an interrupted snapshot can no longer
//! use that snapshot (it dies with the session that exported it) and reads the remaining rows
//! as they are now; the stream then replays every change since the consistent point on top,
//! and because each of those carries a later position than the snapshot's rows, applying
//! events in position order still ends in the source's state.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use domain::{EventId, Lsn, SourceId};
use futures_util::TryStreamExt;
use protocol::{ChangeEvent, Op};
use serde_json::{Map, Value};
use sqlx::{AssertSqlSafe, Connection, PgConnection, Row};
use tokio::sync::watch;

use super::SlotState;
use super::catalog::{self, TableShape, TypeCache, quote_ident};
use super::values;
use crate::sink::Sink;
use crate::spool::SnapshotCursor;
use crate::status::StatusCell;

/// Rows per query while reading a table in key order, or per fetch from a cursor.
const CHUNK_ROWS: i64 = 5_000;

/// The cursor a table without a unique key is read through.
const CURSOR: &str = "tributary_snapshot";

pub async fn read(
    connection: &mut PgConnection,
    exported: Option<&str>,
    state: &SlotState,
    source: SourceId,
    sink: &mut Sink,
    status: &StatusCell,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<bool> {
    let mut cursor = match &sink.resume().snapshot {
        Some(cursor) if cursor.consistent_point == state.consistent_point => cursor.clone(),
        _ => SnapshotCursor {
            consistent_point: state.consistent_point,
            table: 0,
            after_key: None,
            seq: 0,
        },
    };
    status.update(|status| status.state = "snapshot".into());
    let mut transaction = connection.begin().await?;
    sqlx::query("set transaction isolation level repeatable read, read only")
        .execute(&mut *transaction)
        .await?;
    if let Some(name) = exported {
        // A snapshot name is the server's own (hex digits and dashes); SET takes no parameters.
        anyhow::ensure!(
            name.bytes()
                .all(|byte| byte.is_ascii_hexdigit() || byte == b'-'),
            "unexpected snapshot name from the server"
        );
        sqlx::raw_sql(AssertSqlSafe(format!("set transaction snapshot '{name}'")))
            .execute(&mut *transaction)
            .await
            .context("adopting the slot's exported snapshot")?;
    }
    let mut types = TypeCache::default();
    let event_time = time::OffsetDateTime::from_unix_timestamp_nanos(
        i128::from(state.snapshot_millis) * 1_000_000,
    )?;
    while cursor.table < state.tables.len() {
        let (schema, name) = &state.tables[cursor.table];
        let Some(table) = catalog::table_shape(&mut transaction, schema, name, &mut types).await?
        else {
            tracing::warn!(
                schema,
                table = name,
                "a published table is gone; skipping it"
            );
            cursor.table += 1;
            cursor.after_key = None;
            continue;
        };
        tracing::info!(schema, table = name, "snapshot of a table");
        let types: Arc<BTreeMap<String, String>> = Arc::new(
            table
                .columns
                .iter()
                .map(|column| (column.name.clone(), column.type_name.clone()))
                .collect(),
        );
        if !table.unique_key {
            // Identifiers are quoted and the cursor's name is a constant.
            sqlx::raw_sql(AssertSqlSafe(format!(
                "declare {CURSOR} no scroll cursor for {}",
                select_sql(&table)
            )))
            .execute(&mut *transaction)
            .await
            .with_context(|| format!("reading {}.{}", table.schema, table.name))?;
        }
        loop {
            if *stop.borrow() {
                return Ok(false);
            }
            let rows = if table.unique_key {
                read_chunk(&mut transaction, &table, cursor.after_key.as_deref()).await?
            } else {
                fetch_chunk(&mut transaction, &table).await?
            };
            let done = (rows.len() as i64) < CHUNK_ROWS;
            let count = rows.len();
            for row in rows {
                if table.unique_key {
                    cursor.after_key =
                        Some(table.key.iter().map(|index| row[*index].clone()).collect());
                }
                let (event, bytes) = read_event(
                    &table,
                    &types,
                    row,
                    source,
                    Lsn(state.consistent_point),
                    cursor.seq,
                    event_time,
                );
                cursor.seq += 1;
                sink.resume_mut().snapshot = Some(cursor.clone());
                sink.add(event, bytes, stop).await?;
            }
            status.update(|status| status.snapshot_rows = Some(u64::from(cursor.seq)));
            if done {
                break;
            }
            tracing::debug!(rows = count, "snapshot chunk");
        }
        if !table.unique_key {
            sqlx::raw_sql(AssertSqlSafe(format!("close {CURSOR}")))
                .execute(&mut *transaction)
                .await?;
        }
        cursor.table += 1;
        cursor.after_key = None;
        sink.resume_mut().snapshot = Some(cursor.clone());
    }
    transaction.commit().await?;
    sink.resume_mut().snapshot = Some(cursor.clone());
    sink.flush(stop).await?;
    tracing::info!(rows = cursor.seq, "snapshot complete");
    Ok(true)
}

/// `select <every column as its type's text output> from <table>`.
fn select_sql(table: &TableShape) -> String {
    let columns = table
        .columns
        .iter()
        // format('%s') prints with the type's output function, as pgoutput does; a cast to
        // text would not for some types (boolean gives 'true', char(n) drops its padding).
        .map(|column| {
            let name = quote_ident(&column.name);
            format!("case when {name} is not null then format('%s', {name}) end")
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!("select {columns} from {}", table.qualified())
}

/// The next rows of a table without a unique key from its cursor.
async fn fetch_chunk(
    connection: &mut PgConnection,
    table: &TableShape,
) -> anyhow::Result<Vec<Vec<Option<String>>>> {
    // The cursor's name and the count are constants. Not kept prepared: the same text reads
    // the next table's cursor, with other columns.
    let query = sqlx::query(AssertSqlSafe(format!(
        "fetch forward {CHUNK_ROWS} from {CURSOR}"
    )))
    .persistent(false);
    collect_rows(connection, table, query).await
}

/// The next rows after `after_key` in key order, every column as its type's text output.
async fn read_chunk(
    connection: &mut PgConnection,
    table: &TableShape,
    after_key: Option<&[Option<String>]>,
) -> anyhow::Result<Vec<Vec<Option<String>>>> {
    let mut sql = select_sql(table);
    let key_list = table
        .key
        .iter()
        .map(|index| quote_ident(&table.columns[*index].name))
        .collect::<Vec<_>>()
        .join(", ");
    if after_key.is_some() {
        // Types come from the catalog's format_type, which quotes what needs quoting.
        let parameters = table
            .key
            .iter()
            .enumerate()
            .map(|(position, index)| {
                format!(
                    "${}::text::{}",
                    position + 1,
                    table.columns[*index].type_name
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        sql.push_str(&format!(" where ({key_list}) > ({parameters})"));
    }
    sql.push_str(&format!(" order by {key_list} limit {CHUNK_ROWS}"));
    // Identifiers are quoted and types come from the catalog; values are bound.
    let mut query = sqlx::query(AssertSqlSafe(sql));
    if let Some(after_key) = after_key {
        for value in after_key {
            query = query.bind(value.clone());
        }
    }
    collect_rows(connection, table, query).await
}

async fn collect_rows<'q>(
    connection: &mut PgConnection,
    table: &TableShape,
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
) -> anyhow::Result<Vec<Vec<Option<String>>>> {
    let width = table.columns.len();
    let rows: Vec<Vec<Option<String>>> = query
        .fetch(&mut *connection)
        .map_ok(|row| {
            (0..width)
                .map(|index| row.try_get::<Option<String>, _>(index).ok().flatten())
                .collect()
        })
        .try_collect()
        .await
        .with_context(|| format!("reading {}.{}", table.schema, table.name))?;
    Ok(rows)
}

fn read_event(
    table: &TableShape,
    types: &Arc<BTreeMap<String, String>>,
    row: Vec<Option<String>>,
    source: SourceId,
    lsn: Lsn,
    seq: u32,
    event_time: time::OffsetDateTime,
) -> (ChangeEvent, usize) {
    let mut after = Map::with_capacity(row.len());
    let mut bytes = 200;
    for (column, value) in table.columns.iter().zip(row) {
        bytes += column.name.len() + 8 + value.as_ref().map_or(4, String::len);
        let value = match value {
            Some(text) => values::to_json(column.kind, text),
            None => Value::Null,
        };
        after.insert(column.name.clone(), value);
    }
    let key = table
        .key
        .iter()
        .map(|index| {
            let name = &table.columns[*index].name;
            (
                name.clone(),
                after.get(name).cloned().unwrap_or(Value::Null),
            )
        })
        .collect();
    let millis = (event_time.unix_timestamp_nanos() / 1_000_000) as i64;
    (
        ChangeEvent {
            event_id: EventId::derive(source, millis, lsn, seq),
            op: Op::Read,
            schema: table.schema.clone(),
            table: table.name.clone(),
            lsn,
            seq,
            xid: None,
            event_time,
            key,
            after: Some(after),
            before: None,
            unchanged: Vec::new(),
            types: types.clone(),
        },
        bytes,
    )
}
