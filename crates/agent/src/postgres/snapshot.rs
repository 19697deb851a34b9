//! The initial snapshot: every row of the published tables as `read` events, all stamped with
//! the slot's consistent point, read in key order in chunks so that a restart continues after
//! the last spooled row instead of starting over. A table without a unique key is read through
//! a server-side cursor, a chunk at a time, so memory stays bounded whatever its size, in the
//! order of its whole rows (every column's text): a restart continues after the last spooled
//! row there too, skipping as many rows identical to it as were already read, so no row is
//! sent twice under two sequence numbers.
//!
//! The first run reads inside the snapshot the slot exported, so the rows are exactly the
//! state the stream continues from. A run that resumes an interrupted snapshot can no longer
//! use that snapshot (it dies with the session that exported it) and reads the remaining rows
//! as they are now; the stream then replays every change since the consistent point on top,
//! and because each of those carries a later position than the snapshot's rows, applying
//! events in position order still ends in the source's state. A table without a key has
//! nothing for a streamed insert to land on, so there the continued read also keeps only the
//! rows whose inserting transaction the exported snapshot saw committed (its [`Horizon`],
//! recorded before the first row is read): a row inserted since arrives once, from the stream.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use domain::{EventId, Lsn, SourceId};
use futures_util::TryStreamExt;
use protocol::{ChangeEvent, Op};
use serde_json::{Map, Value};
use sqlx::{AssertSqlSafe, Connection, PgConnection, Row};
use tokio::sync::watch;

use super::catalog::{self, TableShape, TypeCache, quote_ident};
use super::values;
use super::{Horizon, SlotState};
use crate::sink::Sink;
use crate::spool::SnapshotCursor;
use crate::status::StatusCell;

/// Rows per query while reading a table in key order, or per fetch from a cursor.
const CHUNK_ROWS: i64 = 5_000;

/// The cursor a table without a unique key is read through.
const CURSOR: &str = "tributary_snapshot";

#[allow(clippy::too_many_arguments)]
pub async fn read(
    connection: &mut PgConnection,
    exported: Option<&str>,
    state: &mut SlotState,
    state_dir: &std::path::Path,
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
            repeats: 0,
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
        if state.horizon.is_none() {
            state.horizon = Some(horizon(&mut transaction).await?);
            super::save_state(state_dir, state)?;
        }
    }
    // Only a continued read needs the horizon: the exported snapshot is exact by itself.
    let horizon = if exported.is_none() {
        if state.horizon.is_none() {
            tracing::warn!(
                "the interrupted snapshot has no recorded horizon (it was begun by an older \
                 agent): a row inserted since into a table without a key may arrive twice"
            );
        }
        state.horizon.clone()
    } else {
        None
    };
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
            cursor.repeats = 0;
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
        // Rows identical to the last one read before an interruption that were already sent.
        let mut skip = 0;
        if !table.unique_key {
            declare_cursor(
                &mut transaction,
                &table,
                cursor.after_key.as_deref(),
                horizon.as_ref(),
            )
            .await?;
            if cursor.after_key.is_some() {
                skip = cursor.repeats;
                tracing::info!(
                    schema,
                    table = name,
                    identical_rows_sent = skip,
                    "continuing a table without a unique key from its last row sent"
                );
            }
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
                } else if !keyless_row(&mut cursor, &mut skip, &row) {
                    continue;
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
        cursor.repeats = 0;
        sink.resume_mut().snapshot = Some(cursor.clone());
    }
    transaction.commit().await?;
    sink.resume_mut().snapshot = Some(cursor.clone());
    sink.flush(stop).await?;
    tracing::info!(rows = cursor.seq, "snapshot complete");
    Ok(true)
}

/// Moves a keyless table's cursor past `row`; false when the row was already sent before an
/// interruption (one of the `skip` rows identical to the last one sent, which come first).
fn keyless_row(cursor: &mut SnapshotCursor, skip: &mut u32, row: &[Option<String>]) -> bool {
    if cursor.after_key.as_deref() == Some(row) {
        if *skip > 0 {
            *skip -= 1;
            return false;
        }
        cursor.repeats += 1;
    } else {
        *skip = 0;
        cursor.after_key = Some(row.to_vec());
        cursor.repeats = 1;
    }
    true
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

/// The exported snapshot's view of transactions, read inside it.
async fn horizon(connection: &mut PgConnection) -> anyhow::Result<Horizon> {
    // pg_current_snapshot() is PostgreSQL 13's name for txid_current_snapshot(); both print
    // the snapshot the transaction runs in, here the imported one.
    let text: String = sqlx::query_scalar(
        "select case when current_setting('server_version_num')::int >= 130000 \
         then (select pg_current_snapshot()::text) else (select txid_current_snapshot()::text) end",
    )
    .fetch_one(&mut *connection)
    .await
    .context("reading the exported snapshot's horizon")?;
    Horizon::parse(&text).with_context(|| format!("unexpected snapshot from the server: {text:?}"))
}

/// Opens the cursor a table without a unique key is read through: every row in the order of
/// [`row_order`], from `after_row` on (inclusive: identical rows are told apart by counting),
/// and with a `horizon`, only the rows whose inserting transaction it saw committed.
async fn declare_cursor(
    connection: &mut PgConnection,
    table: &TableShape,
    after_row: Option<&[Option<String>]>,
    horizon: Option<&Horizon>,
) -> anyhow::Result<()> {
    let order = row_order(table);
    let mut sql = format!(
        "declare {CURSOR} no scroll cursor for {}",
        select_sql(table)
    );
    let mut conditions = Vec::new();
    if after_row.is_some() {
        let parameters = (0..table.columns.len())
            .map(|index| {
                format!(
                    "${}::boolean, ${}::text collate \"C\"",
                    2 * index + 1,
                    2 * index + 2
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        conditions.push(format!("({}) >= ({parameters})", order.join(", ")));
    }
    let first_horizon_parameter = 2 * after_row.map_or(0, <[_]>::len) + 1;
    if horizon.is_some() {
        conditions.push(inserted_before(first_horizon_parameter));
    }
    if !conditions.is_empty() {
        sql.push_str(&format!(" where {}", conditions.join(" and ")));
    }
    sql.push_str(&format!(" order by {}", order.join(", ")));
    // Identifiers are quoted and the cursor's name is a constant; values are bound. Not kept
    // prepared: each table's text differs.
    let mut query = sqlx::query(AssertSqlSafe(sql)).persistent(false);
    for value in after_row.unwrap_or_default() {
        query = query
            .bind(value.is_none())
            .bind(value.clone().unwrap_or_default());
    }
    if let Some(horizon) = horizon {
        let (low, span, running) = horizon_parameters(horizon);
        query = query.bind(low).bind(span).bind(running);
    }
    query
        .execute(&mut *connection)
        .await
        .with_context(|| format!("reading {}.{}", table.schema, table.name))?;
    Ok(())
}

/// A condition true of a row whose inserting transaction (`xmin`) a [`Horizon`] saw committed,
/// given as parameters `$first` (its `xmin`'s low 32 bits), `$first + 1` (`xmax - xmin`) and
/// `$first + 2` (the running transactions, as offsets from `xmin`).
///
/// A row's `xmin` is 32 bits. Its distance `d` from the horizon's `xmin`, modulo 2^32, places
/// it: at or past 2^31 it precedes the horizon (a live row's `xmin` is never 2^31 transactions
/// old: PostgreSQL freezes long before, keeping `xmin`), so its transaction had committed;
/// below `xmax - xmin` it was seen committed unless it was running; anything else began after.
/// `xmin` 1 and 2 are the bootstrap and frozen ids.
fn inserted_before(first: usize) -> String {
    let distance =
        format!("((xmin::text::int8 - ${first}) % 4294967296 + 4294967296) % 4294967296");
    format!(
        "(xmin::text::int8 < 3 or {distance} >= 2147483648 \
         or ({distance} < ${} and not {distance} = any(${}::int8[])))",
        first + 1,
        first + 2
    )
}

fn horizon_parameters(horizon: &Horizon) -> (i64, i64, Vec<i64>) {
    let low = (horizon.xmin % (1 << 32)) as i64;
    let span = horizon.xmax.saturating_sub(horizon.xmin).min(1 << 31) as i64;
    let running = horizon
        .xip
        .iter()
        .map(|xid| xid.saturating_sub(horizon.xmin) as i64)
        .collect();
    (low, span, running)
}

/// A total order on whole rows that the agent can continue from: per column, nulls last, then
/// its text output compared byte by byte (every type has one; not every type has an ordering).
/// Two rows equal in it are sent as identical events.
fn row_order(table: &TableShape) -> Vec<String> {
    table
        .columns
        .iter()
        .flat_map(|column| {
            let name = quote_ident(&column.name);
            [
                format!("({name} is null)"),
                format!("coalesce(format('%s', {name}), '') collate \"C\""),
            ]
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(text: &str) -> Vec<Option<String>> {
        vec![Some(text.to_owned()), None]
    }

    /// Sends `rows` through a cursor as a continued read would, and returns what is sent.
    fn continue_read(cursor: &mut SnapshotCursor, rows: &[&str]) -> Vec<String> {
        let mut skip = if cursor.after_key.is_some() {
            cursor.repeats
        } else {
            0
        };
        rows.iter()
            .filter(|text| keyless_row(cursor, &mut skip, &row(text)))
            .map(|text| (*text).to_owned())
            .collect()
    }

    fn fresh() -> SnapshotCursor {
        SnapshotCursor {
            consistent_point: 1,
            table: 0,
            after_key: None,
            repeats: 0,
            seq: 0,
        }
    }

    #[test]
    fn identical_rows_are_counted_and_a_continued_read_skips_exactly_those_sent() {
        let mut cursor = fresh();
        // Interrupted after two of three identical rows.
        assert_eq!(
            continue_read(&mut cursor, &["a", "b", "b"]),
            ["a", "b", "b"]
        );
        assert_eq!(
            (cursor.after_key.clone(), cursor.repeats),
            (Some(row("b")), 2)
        );
        // The continued read starts at the last row sent, inclusive.
        assert_eq!(
            continue_read(&mut cursor, &["b", "b", "b", "c", "c"]),
            ["b", "c", "c"]
        );
        assert_eq!(
            (cursor.after_key.clone(), cursor.repeats),
            (Some(row("c")), 2)
        );
    }

    #[test]
    fn a_horizon_is_parsed_from_the_servers_text_and_offsets_are_relative_to_its_xmin() {
        let horizon = Horizon::parse("4294967290:4294967300:4294967291,4294967296").unwrap();
        assert_eq!(horizon.xip, [4_294_967_291, 4_294_967_296]);
        assert_eq!(
            horizon_parameters(&horizon),
            (4_294_967_290, 10, vec![1, 6])
        );
        assert_eq!(Horizon::parse("7:7:").unwrap().xip, Vec::<u64>::new());
        for bad in ["", "7", "7:6:", "7:9:9", "a:b:", "7:9:8,x"] {
            assert_eq!(Horizon::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn fewer_identical_rows_than_were_sent_skip_only_those_there_are() {
        let mut cursor = fresh();
        continue_read(&mut cursor, &["a", "a", "a"]);
        // Two of the three were deleted since: nothing of them is sent again, the next row is.
        assert_eq!(continue_read(&mut cursor, &["a", "d"]), ["d"]);
        assert_eq!(
            (cursor.after_key.clone(), cursor.repeats),
            (Some(row("d")), 1)
        );
    }
}
