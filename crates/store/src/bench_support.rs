//! What `tributary bench ingest` and the fault tests need from the database beyond the
//! platform's own queries: the raw `COPY` baseline into bronze, counting and fingerprinting what
//! bronze holds, and emptying bronze of a benchmark's tenants afterwards. Never used by the
//! running platform.

use std::collections::BTreeSet;

use domain::{EventId, TenantId};
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use time::Date;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::bronze::BronzeRow;
use crate::{ConnectionSettings, Database, StoreError};

/// The columns the baseline copies, in the order [`copy_text_row`] writes them.
const COPY_BRONZE: &str = "copy bronze.cdc_events (tenant_id, event_id, event_time, source_id, \
     op, schema_name, table_name, lsn, seq, xid, payload) from stdin";

/// Creates the daily bronze partitions `days` fall in, as the bronze writer does before it
/// inserts.
pub async fn ensure_bronze_days(
    database: &Database,
    days: impl IntoIterator<Item = Date>,
) -> Result<(), StoreError> {
    let days: BTreeSet<Date> = days.into_iter().collect();
    for day in days {
        sqlx::query("select bronze.ensure_partition($1)")
            .bind(day)
            .execute(database.service_pool())
            .await?;
    }
    Ok(())
}

/// Appends `row` to `out` as one line of `COPY ... FROM STDIN` text format.
pub fn copy_text_row(row: &BronzeRow, out: &mut Vec<u8>) {
    let event_time = row
        .event_time
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

/// Streams `chunks` (lines made by [`copy_text_row`]) into `bronze.cdc_events` with one `COPY`,
/// one transaction, as the pipeline's role; returns the rows copied. The partitions must exist
/// ([`ensure_bronze_days`]).
pub async fn copy_bronze(database: &Database, chunks: &[Vec<u8>]) -> Result<u64, StoreError> {
    let mut connection = database.service_pool().acquire().await?;
    let mut copy = connection.copy_in_raw(COPY_BRONZE).await?;
    for chunk in chunks {
        if let Err(error) = copy.send(chunk.as_slice()).await {
            let _ = copy.abort("the benchmark's copy failed").await;
            return Err(error.into());
        }
    }
    Ok(copy.finish().await?)
}

/// How many bronze rows the given tenants have together.
pub async fn bronze_count(database: &Database, tenants: &[TenantId]) -> Result<i64, StoreError> {
    let tenants: Vec<Uuid> = tenants.iter().map(|tenant| *tenant.as_uuid()).collect();
    Ok(
        sqlx::query_scalar("select count(*) from bronze.cdc_events where tenant_id = any($1)")
            .bind(&tenants)
            .fetch_one(database.service_pool())
            .await?,
    )
}

/// Rows of `tenant` beyond the first with the same event id: `count(*) - count(distinct
/// event_id)`, zero when bronze holds every event once.
pub async fn bronze_duplicates(database: &Database, tenant: TenantId) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(
        "select count(*) - count(distinct event_id) from bronze.cdc_events where tenant_id = $1",
    )
    .bind(tenant.as_uuid())
    .fetch_one(database.service_pool())
    .await?)
}

/// The count and checksum [`crate::bronze::tenant_fingerprint`] computes, over a list of ids
/// (what a client acknowledged), computed the same way by the same server.
pub async fn fingerprint_of(
    database: &Database,
    event_ids: &[EventId],
) -> Result<(i64, String), StoreError> {
    let ids: Vec<Uuid> = event_ids.iter().map(|id| *id.as_uuid()).collect();
    let (count, checksum): (i64, Option<String>) = sqlx::query_as(
        "select count(*), md5(string_agg(event_id::text, ',' order by event_id)) \
         from unnest($1::uuid[]) as acked(event_id)",
    )
    .bind(&ids)
    .fetch_one(database.service_pool())
    .await?;
    Ok((count, checksum.unwrap_or_default()))
}

/// A connection as the administrative login (bootstrap superuser of a managed cluster).
async fn admin(settings: &ConnectionSettings) -> Result<PgConnection, StoreError> {
    Ok(PgConnection::connect_with(&settings.admin).await?)
}

/// Removes the given tenants' bronze rows and vacuums bronze, as the administrative login, so
/// that a later phase of a benchmark starts from a table without dead rows. Returns the rows
/// removed.
pub async fn empty_bronze(
    settings: &ConnectionSettings,
    tenants: &[TenantId],
) -> Result<u64, StoreError> {
    let tenants: Vec<Uuid> = tenants.iter().map(|tenant| *tenant.as_uuid()).collect();
    let mut connection = admin(settings).await?;
    let removed = sqlx::query("delete from bronze.cdc_events where tenant_id = any($1)")
        .bind(&tenants)
        .execute(&mut connection)
        .await?
        .rows_affected();
    sqlx::query("vacuum (analyze) bronze.cdc_events")
        .execute(&mut connection)
        .await?;
    connection.close().await?;
    Ok(removed)
}

/// Forces a checkpoint, so that a timed phase does not pay for the previous phase's dirty
/// pages. Needs a superuser (or `pg_checkpoint`) login: callers treat a failure as a note.
pub async fn checkpoint(settings: &ConnectionSettings) -> Result<(), StoreError> {
    let mut connection = admin(settings).await?;
    sqlx::query("checkpoint").execute(&mut connection).await?;
    connection.close().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use domain::SourceId;
    use time::OffsetDateTime;

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
             tab\\tle\t4096\t2\t\\N\t{\"a\":\"x\\\\\"y\\\\n\"}\n"
        );
    }
}
