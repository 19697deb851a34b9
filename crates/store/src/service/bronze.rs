//! Writing bronze: every accepted event, raw (masked) JSON, idempotent by event id. `payload`
//! is `jsonb`; an event whose text `jsonb` would change (a negative zero: `numeric` has none)
//! keeps its exact text in `payload_exact` too, and readers take that one when it is set.

use std::collections::BTreeSet;

use domain::{EventId, SourceId, TenantId};
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime};
use uuid::Uuid;

use crate::{ServiceDb, StoreError};

/// One event as bronze stores it.
#[derive(Debug, Clone)]
pub struct BronzeRow {
    pub tenant: TenantId,
    pub event_id: EventId,
    pub event_time: OffsetDateTime,
    pub source: SourceId,
    pub op: String,
    pub schema_name: String,
    pub table_name: String,
    pub lsn: i64,
    pub seq: i32,
    pub xid: Option<i64>,
    /// The event's JSON text (jsonb on insert; kept exactly too when jsonb would change it,
    /// see [`exact_text`]).
    pub payload: String,
}

/// The columns a bronze `COPY` writes, in the order [`copy_text_row`] writes them.
pub const COPY_BRONZE: &str = "copy bronze.cdc_events (tenant_id, event_id, event_time, \
     source_id, op, schema_name, table_name, lsn, seq, xid, payload, payload_exact) from stdin";

/// The text bronze keeps beside the `jsonb` of `payload` (JSON text): `payload` itself when
/// `jsonb` would not read it back as sent, that is when it holds a negative zero (`-0`, `-0.0`,
/// `-0e5`: `jsonb` numbers are `numeric`, which has no sign for zero). `None` otherwise, the
/// common case, so bronze does not store events twice.
pub fn exact_text(payload: &str) -> Option<&str> {
    let bytes = payload.as_bytes();
    let mut in_string = false;
    let mut escaped = false;
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        index += 1;
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'-' => {
                // The mantissa of the number this minus starts: zero if no digit is not '0'.
                let mut zero = true;
                while index < bytes.len() && matches!(bytes[index], b'0'..=b'9' | b'.') {
                    zero &= matches!(bytes[index], b'0' | b'.');
                    index += 1;
                }
                if zero {
                    return Some(payload);
                }
            }
            _ => {}
        }
    }
    None
}

/// Stores `rows`, skipping any whose (tenant, event id) is already stored; returns how many were
/// new. Creates missing daily partitions first. One durable transaction.
pub async fn insert(database: &ServiceDb, rows: &[BronzeRow]) -> Result<u64, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let rows: Vec<&BronzeRow> = rows.iter().collect();
    prepare_days(database, &rows).await?;
    let mut tx = database.pool().begin().await?;
    // Acknowledged on the bus only after this commit: it must be durable whatever the server's
    // default.
    sqlx::query("set local synchronous_commit = on")
        .execute(&mut *tx)
        .await?;
    let stored = store_in(&mut tx, &rows).await?;
    tx.commit().await?;
    Ok(stored)
}

/// Creates the daily partitions `rows` fall in, if missing: before the transaction that stores
/// them ([`store_in`]), which then takes no lock on the partitioned table's definition.
pub async fn prepare_days(database: &ServiceDb, rows: &[&BronzeRow]) -> Result<(), StoreError> {
    let mut days = Vec::with_capacity(rows.len());
    for row in rows {
        let utc = row
            .event_time
            .checked_to_offset(time::UtcOffset::UTC)
            .ok_or_else(|| {
                StoreError::Invalid("an event time outside the storable range".into())
            })?;
        days.push(utc.date());
    }
    ensure_days(database, days.into_iter()).await
}

/// Stores `rows` in the caller's transaction, skipping any already stored, and counts them in
/// their sources' usage; returns how many were new. Their days' partitions must exist
/// ([`prepare_days`]).
///
/// The common case — nothing in the batch stored yet — goes through one `COPY`, several times
/// cheaper per row than an `insert .. on conflict`. A batch holding an event bronze already has
/// (a redelivery after a crash, a replay) makes the `COPY` fail on the primary key; it is rolled
/// back to the savepoint taken before it and written again with the insert that skips what
/// exists.
pub async fn store_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    rows: &[&BronzeRow],
) -> Result<u64, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let mut text = Vec::with_capacity(rows.len() * (rows[0].payload.len() + 200));
    for row in rows {
        copy_text_row(row, &mut text);
    }
    let mut savepoint = sqlx::Acquire::begin(&mut **tx).await?;
    let copied = match copy(&mut savepoint, text).await {
        Ok(copied) => {
            savepoint.commit().await?;
            copied
        }
        Err(error) if error.sqlstate().as_deref() == Some("23505") => {
            savepoint.rollback().await?;
            return insert_skipping_stored(tx, rows).await;
        }
        Err(error) => return Err(error),
    };
    count_usage(
        tx,
        rows.iter()
            .map(|row| (*row.tenant.as_uuid(), *row.source.as_uuid())),
    )
    .await?;
    Ok(copied)
}

async fn copy(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    text: Vec<u8>,
) -> Result<u64, StoreError> {
    let mut copy = tx.copy_in_raw(COPY_BRONZE).await?;
    if let Err(error) = copy.send(text).await {
        let _ = copy.abort("bronze copy failed").await;
        return Err(error.into());
    }
    Ok(copy.finish().await?)
}

/// Adds the events a batch stored to each source's usage of the day (`control.tenant_usage`),
/// in the batch's own transaction, so a redelivered batch is not counted twice.
async fn count_usage(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    stored: impl Iterator<Item = (Uuid, Uuid)>,
) -> Result<(), StoreError> {
    let mut counts = std::collections::BTreeMap::<(Uuid, Uuid), i64>::new();
    for key in stored {
        *counts.entry(key).or_default() += 1;
    }
    if counts.is_empty() {
        return Ok(());
    }
    let (keys, events): (Vec<_>, Vec<i64>) = counts.into_iter().unzip();
    let (tenants, sources): (Vec<Uuid>, Vec<Uuid>) = keys.into_iter().unzip();
    sqlx::query(
        "insert into control.tenant_usage (tenant_id, source_id, day, events, last_ingested_at) \
         select t, s, (now() at time zone 'utc')::date, n, now() \
         from unnest($1::uuid[], $2::uuid[], $3::bigint[]) as u(t, s, n) \
         on conflict (tenant_id, day, source_id) do update \
         set events = control.tenant_usage.events + excluded.events, \
             last_ingested_at = excluded.last_ingested_at",
    )
    .bind(&tenants)
    .bind(&sources)
    .bind(&events)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_skipping_stored(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    rows: &[&BronzeRow],
) -> Result<u64, StoreError> {
    let mut tenants = Vec::with_capacity(rows.len());
    let mut event_ids = Vec::with_capacity(rows.len());
    let mut event_times = Vec::with_capacity(rows.len());
    let mut sources = Vec::with_capacity(rows.len());
    let mut ops = Vec::with_capacity(rows.len());
    let mut schemas = Vec::with_capacity(rows.len());
    let mut tables = Vec::with_capacity(rows.len());
    let mut lsns = Vec::with_capacity(rows.len());
    let mut seqs = Vec::with_capacity(rows.len());
    let mut xids = Vec::with_capacity(rows.len());
    let mut payloads = Vec::with_capacity(rows.len());
    let mut exact = Vec::with_capacity(rows.len());
    for row in rows {
        tenants.push(*row.tenant.as_uuid());
        event_ids.push(*row.event_id.as_uuid());
        event_times.push(row.event_time);
        sources.push(*row.source.as_uuid());
        ops.push(row.op.as_str());
        schemas.push(row.schema_name.as_str());
        tables.push(row.table_name.as_str());
        lsns.push(row.lsn);
        seqs.push(row.seq);
        xids.push(row.xid);
        payloads.push(row.payload.as_str());
        exact.push(exact_text(&row.payload));
    }
    let inserted: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "insert into bronze.cdc_events (tenant_id, event_id, event_time, source_id, op, \
             schema_name, table_name, lsn, seq, xid, payload, payload_exact) \
         select t, e, et, s, o, sn, tn, l, q, x, p::jsonb, px::json \
         from unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::uuid[], $5::text[], \
                     $6::text[], $7::text[], $8::bigint[], $9::int[], $10::bigint[], $11::text[], \
                     $12::text[]) \
              as batch(t, e, et, s, o, sn, tn, l, q, x, p, px) \
         on conflict (tenant_id, event_id, event_time) do nothing \
         returning tenant_id, source_id",
    )
    .bind(&tenants)
    .bind(&event_ids)
    .bind(&event_times)
    .bind(&sources)
    .bind(&ops)
    .bind(&schemas)
    .bind(&tables)
    .bind(&lsns)
    .bind(&seqs)
    .bind(&xids)
    .bind(&payloads)
    .bind(&exact)
    .fetch_all(&mut **tx)
    .await?;
    count_usage(tx, inserted.iter().copied()).await?;
    Ok(inserted.len() as u64)
}

/// Creates the daily partitions `days` fall in, if missing.
pub(crate) async fn ensure_days(
    database: &ServiceDb,
    days: impl Iterator<Item = Date>,
) -> Result<(), StoreError> {
    let days: BTreeSet<Date> = days.collect();
    for day in days {
        sqlx::query("select bronze.ensure_partition($1)")
            .bind(day)
            .execute(database.pool())
            .await?;
    }
    Ok(())
}

/// How many bronze rows a tenant has, and an order-independent checksum of their event ids —
/// what fault tests compare against what a client had acknowledged.
pub async fn tenant_fingerprint(
    database: &ServiceDb,
    tenant: TenantId,
) -> Result<(i64, String), StoreError> {
    let (count, checksum): (i64, Option<String>) = sqlx::query_as(
        "select count(*), md5(string_agg(event_id::text, ',' order by event_id)) \
         from bronze.cdc_events where tenant_id = $1",
    )
    .bind(tenant.as_uuid())
    .fetch_one(database.pool())
    .await?;
    Ok((count, checksum.unwrap_or_default()))
}

/// The event ids bronze holds for a tenant, sorted.
pub async fn tenant_event_ids(
    database: &ServiceDb,
    tenant: TenantId,
) -> Result<Vec<Uuid>, StoreError> {
    Ok(sqlx::query_scalar(
        "select event_id from bronze.cdc_events where tenant_id = $1 order by event_id",
    )
    .bind(tenant.as_uuid())
    .fetch_all(database.pool())
    .await?)
}

/// A stored event's columns as [`events_in_range`] reads them (its tenant is the one asked for).
#[derive(sqlx::FromRow)]
struct StoredEvent {
    event_id: Uuid,
    event_time: OffsetDateTime,
    #[sqlx(try_from = "Uuid")]
    source_id: SourceId,
    op: String,
    schema_name: String,
    table_name: String,
    lsn: i64,
    seq: i32,
    xid: Option<i64>,
    payload: String,
}

impl StoredEvent {
    fn into_row(self, tenant: TenantId) -> BronzeRow {
        BronzeRow {
            tenant,
            event_id: EventId::from_uuid(self.event_id),
            event_time: self.event_time,
            source: self.source_id,
            op: self.op,
            schema_name: self.schema_name,
            table_name: self.table_name,
            lsn: self.lsn,
            seq: self.seq,
            xid: self.xid,
            payload: self.payload,
        }
    }
}

/// Up to `limit` of a tenant's events with `from <= event_time < to`, in (event time, event
/// id) order, after `after` (the last one of the previous page) if given.
pub async fn events_in_range(
    database: &ServiceDb,
    tenant: TenantId,
    from: OffsetDateTime,
    to: OffsetDateTime,
    after: Option<(OffsetDateTime, EventId)>,
    limit: i64,
) -> Result<Vec<BronzeRow>, StoreError> {
    let (after_time, after_id) = match after {
        Some((time, id)) => (Some(time), Some(*id.as_uuid())),
        None => (None, None),
    };
    let rows: Vec<StoredEvent> = sqlx::query_as(
        "select event_id, event_time, source_id, op, schema_name, table_name, lsn, seq, xid, \
                coalesce(payload_exact::text, payload::text) as payload \
         from bronze.cdc_events \
         where tenant_id = $1 and event_time >= $2 and event_time < $3 \
           and ($4::timestamptz is null or (event_time, event_id) > ($4, $5)) \
         order by event_time, event_id limit $6",
    )
    .bind(tenant.as_uuid())
    .bind(from)
    .bind(to)
    .bind(after_time)
    .bind(after_id)
    .bind(limit)
    .fetch_all(database.pool())
    .await?;
    Ok(rows.into_iter().map(|row| row.into_row(tenant)).collect())
}

/// The stored events with the given keys `(tenant, event id, event time)`, in no particular
/// order; a key with no stored event (deleted by retention, or with its tenant) has no row.
pub async fn rows_by_key(
    database: &ServiceDb,
    keys: &[(TenantId, EventId, OffsetDateTime)],
) -> Result<Vec<BronzeRow>, StoreError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut tenants = Vec::with_capacity(keys.len());
    let mut event_ids = Vec::with_capacity(keys.len());
    let mut event_times = Vec::with_capacity(keys.len());
    for (tenant, event_id, event_time) in keys {
        tenants.push(*tenant.as_uuid());
        event_ids.push(*event_id.as_uuid());
        event_times.push(*event_time);
    }
    #[derive(sqlx::FromRow)]
    struct Keyed {
        #[sqlx(try_from = "Uuid")]
        tenant_id: TenantId,
        #[sqlx(flatten)]
        event: StoredEvent,
    }
    // Each key is one probe of the primary key of its day's partition (pruned at run time).
    let rows: Vec<Keyed> = sqlx::query_as(
        "select b.tenant_id, b.event_id, b.event_time, b.source_id, b.op, b.schema_name, \
                b.table_name, b.lsn, b.seq, b.xid, \
                coalesce(b.payload_exact::text, b.payload::text) as payload \
         from unnest($1::uuid[], $2::uuid[], $3::timestamptz[]) as k(t, e, et) \
         join bronze.cdc_events b \
           on b.tenant_id = k.t and b.event_id = k.e and b.event_time = k.et",
    )
    .bind(&tenants)
    .bind(&event_ids)
    .bind(&event_times)
    .fetch_all(database.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| row.event.into_row(row.tenant_id))
        .collect())
}

/// Appends `row` to `out` as one line of `COPY ... FROM STDIN` text format.
pub fn copy_text_row(row: &BronzeRow, out: &mut Vec<u8>) {
    // PostgreSQL keeps microseconds and would round the text's nanoseconds, while a bound
    // parameter (the insert that skips stored events) is truncated: truncate here too, or a
    // redelivered event could miss the one stored and be kept twice.
    let micros = row.event_time.nanosecond() / 1_000 * 1_000;
    let event_time = row
        .event_time
        .replace_nanosecond(micros)
        .expect("a truncated nanosecond is in range")
        .format(&Rfc3339)
        .expect("bronze event times are within years 0000-9999");
    let fields = [
        row.tenant.to_string(),
        row.event_id.to_string(),
        event_time,
        row.source.to_string(),
    ];
    for field in &fields {
        out.extend_from_slice(field.as_bytes());
        out.push(b'\t');
    }
    for text in [&row.op, &row.schema_name, &row.table_name] {
        escape_copy_text(text, out);
        out.push(b'\t');
    }
    out.extend_from_slice(row.lsn.to_string().as_bytes());
    out.push(b'\t');
    out.extend_from_slice(row.seq.to_string().as_bytes());
    out.push(b'\t');
    match row.xid {
        Some(xid) => out.extend_from_slice(xid.to_string().as_bytes()),
        None => out.extend_from_slice(b"\\N"),
    }
    out.push(b'\t');
    escape_copy_text(&row.payload, out);
    out.push(b'\t');
    match exact_text(&row.payload) {
        Some(exact) => escape_copy_text(exact, out),
        None => out.extend_from_slice(b"\\N"),
    }
    out.push(b'\n');
}

/// COPY text format: backslash, tab, newline and carriage return are escaped.
fn escape_copy_text(text: &str, out: &mut Vec<u8>) {
    for byte in text.bytes() {
        match byte {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            other => out.push(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    #[test]
    fn copy_lines_escape_what_the_text_format_needs() {
        let row = BronzeRow {
            tenant: TenantId::from_uuid(Uuid::nil()),
            event_id: EventId::from_uuid(Uuid::max()),
            event_time: OffsetDateTime::from_unix_timestamp(1_780_000_000).unwrap(),
            source: SourceId::from_uuid(Uuid::nil()),
            op: "insert".into(),
            schema_name: "public".into(),
            table_name: "tab\tle".into(),
            lsn: 4096,
            seq: 2,
            xid: None,
            payload: "{\"a\":\"x\\\"y\\n\"}".into(),
        };
        let mut out = Vec::new();
        copy_text_row(&row, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "00000000-0000-0000-0000-000000000000\tffffffff-ffff-ffff-ffff-ffffffffffff\t\
             2026-05-28T20:26:40Z\t00000000-0000-0000-0000-000000000000\tinsert\tpublic\t\
             tab\\tle\t4096\t2\t\\N\t{\"a\":\"x\\\\\"y\\\\n\"}\t\\N\n"
        );
    }

    #[test]
    fn copy_lines_truncate_times_to_microseconds_like_a_bound_parameter() {
        let row = BronzeRow {
            tenant: TenantId::from_uuid(Uuid::nil()),
            event_id: EventId::from_uuid(Uuid::nil()),
            event_time: OffsetDateTime::from_unix_timestamp_nanos(1_780_000_000_123_456_789)
                .unwrap(),
            source: SourceId::from_uuid(Uuid::nil()),
            op: "insert".into(),
            schema_name: "public".into(),
            table_name: "t".into(),
            lsn: 1,
            seq: 0,
            xid: None,
            payload: "{}".into(),
        };
        let mut out = Vec::new();
        copy_text_row(&row, &mut out);
        let line = String::from_utf8(out).unwrap();
        assert!(line.contains("\t2026-05-28T20:26:40.123456Z\t"), "{line}");
    }

    #[test]
    fn only_a_negative_zero_needs_the_exact_text() {
        for kept in [
            r#"{"a":-0.0}"#,
            r#"{"a":[1,-0]}"#,
            r#"{"a":-0e5}"#,
            r#"{"a":-0.000}"#,
        ] {
            assert_eq!(exact_text(kept), Some(kept), "{kept}");
        }
        for dropped in [
            r#"{"a":0.0}"#,
            r#"{"a":-0.5,"b":-10,"c":-1e-7}"#,
            r#"{"a":"-0.0"}"#,
            r#"{"a":"x\"-0"}"#,
            r#"{"-0":1}"#,
        ] {
            assert_eq!(exact_text(dropped), None, "{dropped}");
        }
    }
}
