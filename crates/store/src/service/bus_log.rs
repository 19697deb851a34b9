//! The embedded stream bus's storage: the partitioned log (`pipeline.bus_log`), each
//! partition's next position (`pipeline.bus_partition_head`), consumer-group checkpoints
//! (`pipeline.checkpoints`) and the notification channel that wakes waiting consumers.
//!
//! This module knows rows and positions, not messages: the bus crate frames the tenant and the
//! payload into the `message` bytes. Everything here runs as the service role; the tables hold
//! no tenant data of their own (migration 0006 says why) and no request role can reach them.
//!
//! Gap-free appends: an append locks the head row of every partition it touches (ascending, so
//! two appenders never deadlock) and keeps the locks until it commits, so within a partition
//! positions are handed out in commit order. A reader of `position > checkpoint` therefore never
//! skips a row that commits late with a lower position.

use std::time::Duration;

use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::{ServiceDb, StoreError};

/// The `LISTEN`/`NOTIFY` channel an append notifies when it commits.
pub const NOTIFY_CHANNEL: &str = "tributary_bus";

/// One row of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRow {
    pub partition: u32,
    pub position: u64,
    pub event_id: Uuid,
    pub message: Vec<u8>,
}

/// Makes sure the head rows of partitions `0..partitions` exist, and returns how many partitions
/// the log had before (0 for a new log). The partition count of a log is fixed for its life:
/// a tenant's partition is its id's hash modulo the count, so changing the count would move
/// tenants to partitions whose order their earlier events do not share.
pub async fn ensure_partitions(database: &ServiceDb, partitions: u32) -> Result<u32, StoreError> {
    let pool = database.pool();
    let existing: i64 = sqlx::query_scalar("select count(*) from pipeline.bus_partition_head")
        .fetch_one(pool)
        .await?;
    if existing == 0 {
        sqlx::query(
            "insert into pipeline.bus_partition_head (partition) \
             select generate_series(0, $1 - 1) on conflict (partition) do nothing",
        )
        .bind(to_i32(partitions)?)
        .execute(pool)
        .await?;
    }
    u32::try_from(existing).map_err(|_| StoreError::Invalid("bus partition count".into()))
}

/// An append transaction: [`AppendTx::append`] any number of times, then
/// [`AppendTx::commit`]. Nothing is visible, and no position is final, before the commit;
/// dropping the transaction rolls it back.
#[derive(Debug)]
pub struct AppendTx {
    tx: Transaction<'static, Postgres>,
    locked: Vec<i32>,
}

impl AppendTx {
    pub async fn begin(database: &ServiceDb) -> Result<Self, StoreError> {
        let mut tx = database.pool().begin().await?;
        // The caller's publish returns Ok only when the rows are durable, whatever the server's
        // default: wait for the commit record to be flushed (and replicated, if so configured).
        sqlx::query("set local synchronous_commit = on")
            .execute(&mut *tx)
            .await?;
        Ok(Self {
            tx,
            locked: Vec::new(),
        })
    }

    /// Appends rows `(partition, event_id, message)`, in the given order within each partition.
    /// A row whose event id is already in its partition's log is skipped. Returns the event ids
    /// of the rows added.
    pub async fn append(&mut self, rows: &[(u32, Uuid, &[u8])]) -> Result<Vec<Uuid>, StoreError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut partitions = Vec::with_capacity(rows.len());
        let mut event_ids = Vec::with_capacity(rows.len());
        let mut messages: Vec<&[u8]> = Vec::with_capacity(rows.len());
        for (partition, event_id, message) in rows {
            partitions.push(to_i32(*partition)?);
            event_ids.push(*event_id);
            messages.push(message);
        }
        let mut to_lock: Vec<i32> = partitions
            .iter()
            .copied()
            .filter(|partition| !self.locked.contains(partition))
            .collect();
        to_lock.sort_unstable();
        to_lock.dedup();
        if !to_lock.is_empty() {
            // Rows are locked in the order the sort returns them: ascending, for every appender.
            let locked: Vec<i32> = sqlx::query_scalar(
                "select partition from pipeline.bus_partition_head \
                 where partition = any($1) order by partition for update",
            )
            .bind(&to_lock)
            .fetch_all(&mut *self.tx)
            .await?;
            if locked.len() != to_lock.len() {
                return Err(StoreError::Invalid(format!(
                    "bus partitions {to_lock:?} requested, only {locked:?} exist"
                )));
            }
            self.locked.extend(locked);
        }
        let inserted: Vec<Uuid> = sqlx::query_scalar(
            "with input as ( \
                 select p, id, m, ord \
                 from unnest($1::int[], $2::uuid[], $3::bytea[]) with ordinality as t(p, id, m, ord) \
             ), counts as ( \
                 select p, count(*) as n from input group by p \
             ), heads as ( \
                 update pipeline.bus_partition_head h set next_position = h.next_position + counts.n \
                 from counts where h.partition = counts.p \
                 returning h.partition, h.next_position - counts.n as first_position \
             ) \
             insert into pipeline.bus_log (partition, position, event_id, message) \
             select i.p, heads.first_position + row_number() over (partition by i.p order by i.ord) - 1, \
                    i.id, i.m \
             from input i join heads on heads.partition = i.p \
             order by i.p, i.ord \
             on conflict (partition, event_id) do nothing \
             returning event_id",
        )
        .bind(&partitions)
        .bind(&event_ids)
        .bind(&messages)
        .fetch_all(&mut *self.tx)
        .await?;
        Ok(inserted)
    }

    /// Stores `rows` in bronze in this transaction ([`crate::service::bronze::store_in`]):
    /// the embedded bus keeps the edge's events there and only their place in the log. Their
    /// days' partitions must exist ([`crate::service::bronze::prepare_days`]). Returns how many
    /// were new to bronze.
    pub async fn store_bronze(
        &mut self,
        rows: &[&crate::service::bronze::BronzeRow],
    ) -> Result<u64, StoreError> {
        crate::service::bronze::store_in(&mut self.tx, rows).await
    }

    /// Commits. Waking the consumers is the caller's next step ([`wake_consumers`]), outside
    /// the transaction: a `pg_notify` inside it would take the cluster-wide notify lock and hold
    /// it through this commit's flush, serialising every concurrent append behind it.
    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        Ok(())
    }
}

/// Wakes every waiting consumer: a notification on [`NOTIFY_CHANNEL`], in a transaction of its
/// own that does not wait for its flush (a lost wake-up costs a consumer at most its poll
/// interval; the appended rows were durable before this is called).
pub async fn wake_consumers(database: &ServiceDb) -> Result<(), StoreError> {
    sqlx::query("select set_config('synchronous_commit', 'off', true), pg_notify($1, '')")
        .bind(NOTIFY_CHANNEL)
        .execute(database.pool())
        .await?;
    Ok(())
}

/// Appends `rows` in a transaction of their own; see [`AppendTx::append`].
pub async fn append(database: &ServiceDb, rows: &[(u32, Uuid, &[u8])]) -> Result<u64, StoreError> {
    let mut tx = AppendTx::begin(database).await?;
    let inserted = tx.append(rows).await?;
    tx.commit().await?;
    wake_consumers(database).await?;
    Ok(inserted.len() as u64)
}

/// For each `(partition, after)`, the rows with `position > after` in position order, at most
/// `limit_per_partition` of each partition. Sorted by partition, then position.
pub async fn read(
    database: &ServiceDb,
    after: &[(u32, u64)],
    limit_per_partition: u32,
) -> Result<Vec<LogRow>, StoreError> {
    if after.is_empty() {
        return Ok(Vec::new());
    }
    let mut partitions = Vec::with_capacity(after.len());
    let mut positions = Vec::with_capacity(after.len());
    for (partition, position) in after {
        partitions.push(to_i32(*partition)?);
        positions.push(to_i64(*position)?);
    }
    let rows: Vec<(i32, i64, Uuid, Vec<u8>)> = sqlx::query_as(
        "select l.partition, l.position, l.event_id, l.message \
         from unnest($1::int[], $2::bigint[]) as c(p, after) \
         cross join lateral ( \
             select partition, position, event_id, message from pipeline.bus_log \
             where partition = c.p and position > c.after order by position limit $3 \
         ) l \
         order by l.partition, l.position",
    )
    .bind(&partitions)
    .bind(&positions)
    .bind(i64::from(limit_per_partition.max(1)))
    .fetch_all(database.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(partition, position, event_id, message)| LogRow {
            partition: partition as u32,
            position: position as u64,
            event_id,
            message,
        })
        .collect())
}

/// Registers `group` on `partitions` (a checkpoint at 0 where it has none, so pruning keeps
/// what the group has not consumed) and returns its checkpoint on each, in the given order.
pub async fn register_group(
    database: &ServiceDb,
    group: &str,
    partitions: &[u32],
) -> Result<Vec<(u32, u64)>, StoreError> {
    let partitions: Vec<i32> = partitions
        .iter()
        .map(|partition| to_i32(*partition))
        .collect::<Result<_, _>>()?;
    let pool = database.pool();
    sqlx::query(
        "insert into pipeline.checkpoints (consumer_group, partition, position) \
         select $1, p, 0 from unnest($2::int[]) as p \
         on conflict (consumer_group, partition) do nothing",
    )
    .bind(group)
    .bind(&partitions)
    .execute(pool)
    .await?;
    let rows: Vec<(i32, i64)> = sqlx::query_as(
        "select partition, position from pipeline.checkpoints \
         where consumer_group = $1 and partition = any($2)",
    )
    .bind(group)
    .bind(&partitions)
    .fetch_all(pool)
    .await?;
    partitions
        .iter()
        .map(|partition| {
            let position = rows
                .iter()
                .find(|(found, _)| found == partition)
                .map(|(_, position)| *position)
                .ok_or(StoreError::NotFound("bus checkpoint"))?;
            Ok((*partition as u32, position as u64))
        })
        .collect()
}

/// Moves `group`'s checkpoints forward to the given positions (never backward).
///
/// Committed without waiting for the commit's flush: the consumers' effects were durable before
/// they acked, and they are idempotent, so a checkpoint lost with a crash of the server costs
/// only the redelivery of what it covered (the bus's contract allows it), while waiting would
/// put a flush on every consumer's path between one batch and the next. Pruning stays safe: its
/// delete is flushed with everything logged before it, this checkpoint included.
pub async fn save_checkpoints(
    database: &ServiceDb,
    group: &str,
    positions: &[(u32, u64)],
) -> Result<(), StoreError> {
    if positions.is_empty() {
        return Ok(());
    }
    let mut partitions = Vec::with_capacity(positions.len());
    let mut values = Vec::with_capacity(positions.len());
    for (partition, position) in positions {
        partitions.push(to_i32(*partition)?);
        values.push(to_i64(*position)?);
    }
    sqlx::query(
        "insert into pipeline.checkpoints as c (consumer_group, partition, position) \
         select $1, p, v from unnest($2::int[], $3::bigint[]) as t(p, v), \
              (select set_config('synchronous_commit', 'off', true)) as not_waiting \
         on conflict (consumer_group, partition) do update \
         set position = greatest(c.position, excluded.position), updated_at = now()",
    )
    .bind(group)
    .bind(&partitions)
    .bind(&values)
    .execute(database.pool())
    .await?;
    Ok(())
}

/// Deletes, partition by partition, the rows every registered group has checkpointed, except
/// the last `margin` positions below the slowest group's checkpoint (the duplicate window: an id
/// is recognised as a re-publish while its row exists). Each delete is a range of the primary
/// key, so pruning costs what it removes, not what the log holds. A partition no group has
/// registered on keeps everything. Returns how many rows were deleted.
pub async fn prune(database: &ServiceDb, margin: u64) -> Result<u64, StoreError> {
    let margin = to_i64(margin)?;
    let consumed: Vec<(i32, i64)> = sqlx::query_as(
        "select partition, min(position) from pipeline.checkpoints group by partition \
         order by partition",
    )
    .fetch_all(database.pool())
    .await?;
    let mut deleted = 0;
    for (partition, position) in consumed {
        let up_to = position - margin;
        if up_to < 1 {
            continue;
        }
        deleted +=
            sqlx::query("delete from pipeline.bus_log where partition = $1 and position <= $2")
                .bind(partition)
                .bind(up_to)
                .execute(database.pool())
                .await?
                .rows_affected();
    }
    Ok(deleted)
}

/// The last position handed out in each partition, by partition (0 for an empty one): a group
/// whose checkpoints reach these has consumed everything appended before this call.
pub async fn heads(database: &ServiceDb) -> Result<Vec<(u32, u64)>, StoreError> {
    let rows: Vec<(i32, i64)> = sqlx::query_as(
        "select partition, next_position - 1 from pipeline.bus_partition_head order by partition",
    )
    .fetch_all(database.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(partition, position)| (partition as u32, position as u64))
        .collect())
}

/// Whether `group` has checkpointed, on every partition it is registered on, at least the
/// position given for it in `heads` (true for a group registered nowhere).
pub async fn has_consumed(
    database: &ServiceDb,
    group: &str,
    heads: &[(u32, u64)],
) -> Result<bool, StoreError> {
    let checkpoints: Vec<(i32, i64)> = sqlx::query_as(
        "select partition, position from pipeline.checkpoints where consumer_group = $1",
    )
    .bind(group)
    .fetch_all(database.pool())
    .await?;
    Ok(checkpoints.into_iter().all(|(partition, position)| {
        heads
            .iter()
            .find(|(head_partition, _)| i64::from(*head_partition) == i64::from(partition))
            .is_none_or(|(_, head)| position >= *head as i64)
    }))
}

/// Forgets `group`: its checkpoints no longer hold back pruning, and its lag is no longer
/// reported. For a consumer that will not run again.
pub async fn forget_group(database: &ServiceDb, group: &str) -> Result<(), StoreError> {
    sqlx::query("delete from pipeline.checkpoints where consumer_group = $1")
        .bind(group)
        .execute(database.pool())
        .await?;
    Ok(())
}

/// How far one consumer group is behind on one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupLag {
    pub group: String,
    pub partition: u32,
    /// Positions appended after the group's checkpoint: the messages it has not acked, plus the
    /// positions duplicates consumed without a row (so an upper bound, exact without them).
    pub behind: u64,
}

/// The lag of each of `groups` on every partition it has registered on, by group then partition.
pub async fn lag(database: &ServiceDb, groups: &[&str]) -> Result<Vec<GroupLag>, StoreError> {
    let rows: Vec<(String, i32, i64)> = sqlx::query_as(
        "select c.consumer_group, c.partition, greatest(h.next_position - 1 - c.position, 0) \
         from pipeline.checkpoints c \
         join pipeline.bus_partition_head h on h.partition = c.partition \
         where c.consumer_group = any($1) \
         order by c.consumer_group, c.partition",
    )
    .bind(groups)
    .fetch_all(database.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(group, partition, behind)| GroupLag {
            group,
            partition: partition as u32,
            behind: behind as u64,
        })
        .collect())
}

/// A connection of its own, as the service role, listening on [`NOTIFY_CHANNEL`].
#[derive(Debug)]
pub struct BusListener {
    listener: PgListener,
    /// Keeps the listener's own one-connection pool, used to reconnect.
    _pool: PgPool,
}

/// Starts listening for appends. Listen before reading, so that no append committed after the
/// read goes unnoticed.
pub async fn listen(database: &ServiceDb) -> Result<BusListener, StoreError> {
    let options = database.pool().connect_options();
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options.as_ref().clone())
        .await?;
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.listen(NOTIFY_CHANNEL).await?;
    Ok(BusListener {
        listener,
        _pool: pool,
    })
}

impl BusListener {
    /// Waits at most `timeout` for an append to commit. Returns false on timeout, true when an
    /// append committed or when notifications may have been lost (the connection was
    /// re-established), so that the caller reads again.
    pub async fn wait(&mut self, timeout: Duration) -> Result<bool, StoreError> {
        match tokio::time::timeout(timeout, self.listener.try_recv()).await {
            Err(_elapsed) => Ok(false),
            Ok(received) => {
                received?;
                // One read serves every notification already received.
                while self.listener.next_buffered().is_some() {}
                Ok(true)
            }
        }
    }
}

fn to_i32(value: u32) -> Result<i32, StoreError> {
    i32::try_from(value).map_err(|_| StoreError::Invalid(format!("bus partition {value}")))
}

fn to_i64(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Invalid(format!("bus position {value}")))
}
