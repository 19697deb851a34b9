//! Housekeeping the scheduler runs: bronze partitions created ahead of time.

use crate::{ServiceDb, StoreError};

/// Makes sure the daily bronze partitions from yesterday to `days_ahead` days from now exist
/// (UTC). Returns how many days are covered.
pub async fn ensure_bronze_partitions(
    database: &ServiceDb,
    days_ahead: i32,
) -> Result<i32, StoreError> {
    let days_ahead = days_ahead.clamp(1, 365);
    let covered: i32 = sqlx::query_scalar(
        "select bronze.ensure_partitions((now() at time zone 'UTC')::date - 1, \
                                         (now() at time zone 'UTC')::date + $1)",
    )
    .bind(days_ahead)
    .fetch_one(database.pool())
    .await?;
    Ok(covered)
}

/// The names of the existing bronze partitions, oldest first.
pub async fn bronze_partitions(database: &ServiceDb) -> Result<Vec<String>, StoreError> {
    let names = sqlx::query_scalar(
        "select c.relname::text from pg_inherits i join pg_class c on c.oid = i.inhrelid \
         where i.inhparent = 'bronze.cdc_events'::regclass order by 1",
    )
    .fetch_all(database.pool())
    .await?;
    Ok(names)
}
