//! The PostgreSQL reader: sets up the publication and slot, takes the snapshot, then follows
//! the slot's stream into the spool, confirming positions to the source as the edge
//! acknowledges them.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use domain::{EventId, Lsn, SourceId};
use futures_util::FutureExt;
use pgwire_replication::{PgWireError, ReplicationClient, ReplicationEvent};
use protocol::{ChangeEvent, Op};
use serde_json::{Map, Value};
use sqlx::PgConnection;
use tokio::sync::{Notify, watch};

use super::catalog::{self, TypeCache};
use super::pgoutput::{self, Datum, Message, OldKind, Tuple};
use super::values::{self, Kind};
use super::{
    Settings, SlotState, captured_tables, connect_sql, load_state, publication, replication_config,
    save_state, slot_lost, slot_row,
};
use crate::sink::Sink;
use crate::spool::Spool;
use crate::status::{SlotHealth, StatusCell};

/// What the reader shares with the rest of the agent.
#[derive(Debug, Clone)]
pub struct Shared {
    pub state_dir: PathBuf,
    pub source: SourceId,
    pub spool: Arc<Spool>,
    pub spooled: Arc<Notify>,
    pub status: StatusCell,
    /// The newest position the edge acknowledged everything up to (from the sender).
    pub confirm: watch::Receiver<u64>,
}

/// Changes handled in a row before the reader looks at its other duties (confirmations,
/// flush deadlines, heartbeats, stop).
const DRAIN: usize = 1024;

/// A source of events that may have some ready now, and what to do with each. A trait rather
/// than two closures: an async closure borrowing the reader's state made the reader's future
/// not `Send` (rustc cannot prove it for every lifetime), and the reader runs on a spawned task.
trait Events {
    type Event;
    /// An event already received, if one is.
    fn ready(&mut self) -> Option<Self::Event>;
    fn handle(&mut self, event: Self::Event) -> impl Future<Output = Result<(), Failure>>;
}

/// Hands `first`, then what is ready, to `events.handle`, up to `limit` events in all; returns
/// how many. An event is taken only when it will be handled: one taken and dropped is gone for
/// good (the source does not send it again on this connection), a lost `Begin` stops the
/// reader and a lost change is a hole in the stream.
async fn drain<E: Events>(events: &mut E, first: E::Event, limit: usize) -> Result<usize, Failure> {
    let mut event = Some(first);
    let mut handled = 0;
    while let Some(current) = event.take() {
        events.handle(current).await?;
        handled += 1;
        if handled < limit {
            event = events.ready();
        }
    }
    Ok(handled)
}

/// One turn of the reader over the replication connection's received events.
struct Turn<'a> {
    stream: &'a mut Stream,
    client: &'a mut ReplicationClient,
    connection: &'a mut PgConnection,
    settings: &'a Settings,
    shared: &'a Shared,
    sink: &'a mut Sink,
    stop: &'a mut watch::Receiver<bool>,
}

impl Events for Turn<'_> {
    type Event = Result<Option<ReplicationEvent>, PgWireError>;

    fn ready(&mut self) -> Option<Self::Event> {
        self.client.recv().now_or_never()
    }

    async fn handle(&mut self, event: Self::Event) -> Result<(), Failure> {
        match event {
            Ok(Some(event)) => {
                self.stream
                    .handle(
                        event,
                        self.client,
                        self.connection,
                        self.shared,
                        self.sink,
                        self.stop,
                    )
                    .await
            }
            Ok(None) => Err(Failure::retry(anyhow::anyhow!(
                "the replication stream ended"
            ))),
            Err(error) => Err(if is_transient(&error) {
                Failure::retry(anyhow::Error::new(error))
            } else {
                Failure::fatal(replication_error(error, &self.settings.slot))
            }),
        }
    }
}

/// Seconds between 1970-01-01 and PostgreSQL's epoch, 2000-01-01.
const POSTGRES_EPOCH_SECONDS: i64 = 946_684_800;

/// Runs the reader until `stop`; retries what a restart of the source or the network can fix,
/// and returns an error for what needs an operator.
pub async fn run(
    settings: Settings,
    shared: Shared,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    settings.validate()?;
    let resume = match shared.spool.newest()? {
        Some(newest) => newest.resume,
        None => crate::spool::load_acked(&shared.state_dir)?,
    };
    let mut sink = Sink::new(
        shared.spool.clone(),
        shared.spooled.clone(),
        shared.status.clone(),
        resume,
    );
    let mut backoff = domain::Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        match session(&settings, &shared, &mut sink, &mut stop).await {
            Ok(()) => return Ok(()),
            Err(failure) if failure.retryable => {
                let message = format!("{:#}", failure.error);
                let wait = crate::run::jittered(backoff.next());
                tracing::warn!(error = %message, retry_in = ?wait, "the source is unavailable; retrying");
                shared
                    .status
                    .update(|status| status.last_error = Some(message));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => return Ok(()),
                }
            }
            Err(failure) => {
                // What was read before the failure still reaches the spool.
                if let Err(error) = sink.settle().await {
                    tracing::warn!(error = %format!("{error:#}"), "the last batch did not reach the spool");
                }
                let message = format!("{:#}", failure.error);
                shared.status.update(|status| {
                    status.state = "failed".into();
                    status.last_error = Some(message);
                });
                return Err(failure.error);
            }
        }
    }
}

/// An error, and whether trying again later may succeed.
struct Failure {
    error: anyhow::Error,
    retryable: bool,
}

impl Failure {
    fn fatal(error: anyhow::Error) -> Self {
        Self {
            error,
            retryable: false,
        }
    }

    fn retry(error: anyhow::Error) -> Self {
        Self {
            error,
            retryable: true,
        }
    }
}

impl From<anyhow::Error> for Failure {
    /// Connection-level trouble is worth retrying; anything else needs an operator.
    fn from(error: anyhow::Error) -> Self {
        let retryable = error.chain().any(|cause| {
            cause.downcast_ref::<sqlx::Error>().is_some_and(|error| {
                matches!(error, sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut)
            }) || cause
                .downcast_ref::<PgWireError>()
                .is_some_and(|error| matches!(error, PgWireError::Io(_) | PgWireError::Task(_)))
                || cause.downcast_ref::<std::io::Error>().is_some()
        });
        Self { error, retryable }
    }
}

/// One connected session: setup, snapshot if needed, stream until stop or an error.
async fn session(
    settings: &Settings,
    shared: &Shared,
    sink: &mut Sink,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), Failure> {
    let mut connection = connect_sql(settings).await?;
    let insert_only = publication::insert_only_name(&settings.publication);
    if !publication::membership(&mut connection, &insert_only)
        .await
        .context("reading the publications")?
        .exists
        && slot_row(&mut connection, &settings.slot).await?.is_some()
    {
        // PostgreSQL before 18 cannot decode WAL written before a publication it is asked for
        // was created ("publication does not exist"): a slot made by an agent that kept one
        // publication cannot be streamed with two.
        return Err(Failure::fatal(anyhow::anyhow!(
            "the replication slot {:?} was created by an agent that published every table in one \
             publication; this agent publishes tables without a replica identity apart (in \
             {insert_only:?}) so that their updates and deletes keep working on the source, and \
             that needs a new slot: stop the agent, run `tributary-agent resync --config ...` \
             and start it again (it takes a new snapshot)",
            settings.slot
        )));
    }
    let not_captured = publication::reconcile(&mut connection, settings)
        .await
        .map_err(Failure::fatal)?;
    report_not_captured(&shared.status, &not_captured);
    let state = load_state(&shared.state_dir)?;
    let existing = slot_row(&mut connection, &settings.slot).await?;
    let config = replication_config(settings)?;
    let (mut client, state) = match (state, existing) {
        (None, None) => {
            // A new slot, and the snapshot it exports, read before the stream starts.
            let mut client = ReplicationClient::connect_gated(config)
                .await
                .context("opening a replication connection")?;
            let version: i64 =
                sqlx::query_scalar("select current_setting('server_version_num')::int8")
                    .fetch_one(&mut connection)
                    .await
                    .context("reading the server version")?;
            let command = if version >= 150_000 {
                format!(
                    "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput (SNAPSHOT 'export')",
                    settings.slot
                )
            } else {
                format!(
                    "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput EXPORT_SNAPSHOT",
                    settings.slot
                )
            };
            let rows = client
                .simple_query(&command)
                .await
                .map_err(|error| replication_error(error, &settings.slot))
                .map_err(Failure::fatal)?;
            let text = |column: usize| -> anyhow::Result<String> {
                let value = rows
                    .first()
                    .and_then(|row| row.get(column).cloned().flatten())
                    .context("CREATE_REPLICATION_SLOT returned no row")?;
                Ok(String::from_utf8_lossy(&value).into_owned())
            };
            let consistent_point: Lsn = text(1)?
                .parse()
                .map_err(|_| anyhow::anyhow!("unexpected consistent point from the server"))?;
            let snapshot_name = text(2)?;
            let tables = captured_tables(&mut connection, settings)
                .await
                .context("listing the publications' tables")?;
            let state = SlotState {
                slot: settings.slot.clone(),
                publication: settings.publication.clone(),
                consistent_point: consistent_point.0,
                snapshot_millis: (time::OffsetDateTime::now_utc().unix_timestamp_nanos()
                    / 1_000_000) as i64,
                tables,
                snapshot_done: false,
                horizon: None,
            };
            save_state(&shared.state_dir, &state)?;
            tracing::info!(slot = %settings.slot, consistent_point = %consistent_point,
                "replication slot created; reading the snapshot");
            // The snapshot is read on a second connection while this one holds it.
            let mut reader = connect_sql(settings).await?;
            let Some(state) =
                take_snapshot(&mut reader, Some(&snapshot_name), state, shared, sink, stop).await?
            else {
                return Ok(());
            };
            client.start().await.context("starting replication")?;
            (client, state)
        }
        (Some(_), None) => {
            return Err(Failure::fatal(slot_lost(
                &settings.slot,
                "no longer exists",
            )));
        }
        (None, Some(_)) => {
            return Err(Failure::fatal(anyhow::anyhow!(
                "the replication slot {:?} exists but this agent's state directory has no record \
                 of it (a new state directory, or another agent's slot): run `tributary-agent \
                 resync` to start over from a new snapshot, or set another slot name",
                settings.slot
            )));
        }
        (Some(state), Some(row)) => {
            if row.wal_status.as_deref() == Some("lost") {
                return Err(Failure::fatal(slot_lost(
                    &settings.slot,
                    "was invalidated by the source (max_slot_wal_keep_size)",
                )));
            }
            let state = if state.snapshot_done {
                state
            } else {
                tracing::info!("continuing the interrupted snapshot");
                let Some(state) =
                    take_snapshot(&mut connection, None, state, shared, sink, stop).await?
                else {
                    return Ok(());
                };
                state
            };
            let client = ReplicationClient::connect(config)
                .await
                .context("opening a replication connection")?;
            (client, state)
        }
    };
    if let Err(error) = client.wait_started().await {
        return Err(if is_transient(&error) {
            Failure::retry(anyhow::Error::new(error).context("starting replication"))
        } else {
            Failure::fatal(replication_error(error, &settings.slot))
        });
    }
    sink.resume_mut().snapshot = None;
    shared.status.update(|status| {
        status.state = "streaming".into();
        status.last_error = None;
    });
    tracing::info!(slot = %settings.slot, consistent_point = %Lsn(state.consistent_point), "streaming");
    let mut stream = Stream {
        source: shared.source,
        relations: HashMap::new(),
        types: TypeCache::default(),
        transaction: None,
    };
    let result = stream
        .follow(&mut client, &mut connection, settings, shared, sink, stop)
        .await;
    // Whatever ended the session: what was read is spooled (unless stopping with a full
    // spool: the source still has it), and the last confirmation gets one status interval to
    // reach the source before the connection closes.
    sink.flush(stop).await?;
    sink.settle().await?;
    tokio::time::sleep(super::STATUS_INTERVAL + Duration::from_millis(200)).await;
    client.stop();
    let _ = tokio::time::timeout(Duration::from_secs(5), client.join()).await;
    result
}

/// Records the tables whose updates and deletes are not captured, and warns once per change.
fn report_not_captured(status: &StatusCell, tables: &[publication::Name]) {
    let names: Vec<String> = tables
        .iter()
        .take(protocol::MAX_NOT_CAPTURED)
        .map(|(schema, table)| format!("{schema}.{table}"))
        .collect();
    let mut changed = false;
    status.update(|status| {
        changed = status.not_captured != names;
        status.not_captured = names.clone();
    });
    if changed {
        for (schema, table) in tables {
            tracing::warn!(
                schema,
                table,
                fix = %publication::fix(schema, table),
                "the table has no replica identity: its inserts and truncates are captured, its \
                 updates and deletes are not"
            );
        }
    }
}

/// Reads the snapshot (in the slot's exported snapshot when there is one) and records that it
/// is done; `None` when a stop interrupted it.
async fn take_snapshot(
    connection: &mut PgConnection,
    exported: Option<&str>,
    mut state: SlotState,
    shared: &Shared,
    sink: &mut Sink,
    stop: &mut watch::Receiver<bool>,
) -> Result<Option<SlotState>, Failure> {
    let done = super::snapshot::read(
        connection,
        exported,
        &mut state,
        &shared.state_dir,
        shared.source,
        sink,
        &shared.status,
        stop,
    )
    .await?;
    if !done {
        return Ok(None);
    }
    let state = SlotState {
        snapshot_done: true,
        ..state
    };
    save_state(&shared.state_dir, &state)?;
    Ok(Some(state))
}

/// Errors a reconnection may cure: the network, and the server ending or refusing sessions
/// for a while (shutdown, restart, recovery: SQLSTATE class 57P).
fn is_transient(error: &PgWireError) -> bool {
    match error {
        PgWireError::Io(_) | PgWireError::Task(_) => true,
        PgWireError::Server(message) => ["57P01", "57P02", "57P03"]
            .iter()
            .any(|code| message.contains(code)),
        _ => false,
    }
}

/// A replication-protocol error in the operator's terms.
fn replication_error(error: PgWireError, slot: &str) -> anyhow::Error {
    let text = error.to_string();
    if text.contains("can no longer get changes") || text.contains("has been invalidated") {
        slot_lost(slot, "was invalidated by the source")
    } else if text.contains("does not exist") && text.contains("slot") {
        slot_lost(slot, "no longer exists")
    } else if text.contains("must be superuser or replication role")
        || text.contains("permission denied to start WAL sender")
        || text.contains("REPLICATION attribute")
    {
        anyhow::anyhow!(
            "the source role lacks the REPLICATION attribute ({text}): a superuser can grant it \
             with ALTER ROLE ... REPLICATION"
        )
    } else if text.contains("all replication slots are in use") {
        anyhow::anyhow!(
            "the source has no free replication slot ({text}): raise max_replication_slots or \
             drop an unused slot"
        )
    } else if text.contains("wal_level") {
        anyhow::anyhow!(
            "logical decoding needs wal_level = logical on the source ({text}): set it and \
             restart PostgreSQL"
        )
    } else {
        anyhow::Error::new(error).context("replication")
    }
}

/// A table as the stream last described it.
#[derive(Debug, Clone)]
struct RelationState {
    schema: String,
    table: String,
    /// (name, type name, conversion)
    columns: Vec<(String, String, Kind)>,
    key: Vec<usize>,
    /// Column → type name, shared by every event of the table.
    types: Arc<BTreeMap<String, String>>,
}

/// The transaction being read.
#[derive(Debug, Clone, Copy)]
struct Transaction {
    lsn: u64,
    xid: u32,
    time: time::OffsetDateTime,
    seq: u32,
}

struct Stream {
    source: SourceId,
    relations: HashMap<u32, Arc<RelationState>>,
    types: TypeCache,
    transaction: Option<Transaction>,
}

impl Stream {
    async fn follow(
        &mut self,
        client: &mut ReplicationClient,
        connection: &mut PgConnection,
        settings: &Settings,
        shared: &Shared,
        sink: &mut Sink,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), Failure> {
        let mut confirm = shared.confirm.clone();
        let mut heartbeat = tokio::time::interval(settings.heartbeat);
        let mut heartbeat_allowed = true;
        loop {
            let deadline = sink.deadline();
            tokio::select! {
                event = client.recv() => {
                    // Then what is already buffered, without re-arming every other branch for
                    // each change.
                    let mut turn = Turn { stream: self, client, connection, settings, shared, sink, stop };
                    drain(&mut turn, event, DRAIN).await?;
                }
                changed = confirm.changed() => {
                    if changed.is_ok() {
                        let lsn = *confirm.borrow_and_update();
                        client.update_applied_lsn(pgwire_replication::Lsn(lsn));
                        shared.status.update(|status| status.confirmed_lsn = Some(Lsn(lsn)));
                    }
                }
                _ = async { match deadline { Some(deadline) => tokio::time::sleep_until(deadline).await, None => std::future::pending().await } } => {
                    sink.flush(stop).await?;
                }
                _ = heartbeat.tick() => {
                    if heartbeat_allowed {
                        // A tiny, non-transactional WAL record: an idle database's stream still
                        // advances, so the slot can be confirmed and WAL recycled.
                        if let Err(error) = sqlx::query("select pg_logical_emit_message(false, 'tributary.heartbeat', '')")
                            .execute(&mut *connection).await
                        {
                            tracing::warn!(error = %super::database_message(&error),
                                "cannot write heartbeats (pg_logical_emit_message); idle periods may retain WAL");
                            heartbeat_allowed = false;
                        }
                    }
                    self.check_slot(connection, settings, shared).await?;
                    // A table whose identity changed moves between the publications.
                    match publication::reconcile(connection, settings).await {
                        Ok(tables) => report_not_captured(&shared.status, &tables),
                        Err(error) => {
                            let warning: String = format!("{error:#}").chars().take(1900).collect();
                            tracing::warn!(error = %warning, "cannot update the publications");
                            shared.status.update(|status| status.warnings.push(warning));
                        }
                    }
                }
                _ = stop.changed() => return Ok(()),
            }
        }
    }

    async fn handle(
        &mut self,
        event: ReplicationEvent,
        client: &mut ReplicationClient,
        connection: &mut PgConnection,
        shared: &Shared,
        sink: &mut Sink,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), Failure> {
        match event {
            ReplicationEvent::Begin {
                final_lsn,
                xid,
                commit_time_micros,
            } => {
                let micros =
                    i128::from(commit_time_micros) + i128::from(POSTGRES_EPOCH_SECONDS) * 1_000_000;
                self.transaction = Some(Transaction {
                    lsn: final_lsn.0,
                    xid,
                    time: time::OffsetDateTime::from_unix_timestamp_nanos(micros * 1000)
                        .map_err(anyhow::Error::new)?,
                    seq: 0,
                });
            }
            ReplicationEvent::XLogData { data, .. } => {
                let message =
                    pgoutput::decode(&data).map_err(|error| Failure::fatal(error.into()))?;
                self.apply(message, connection, sink, stop).await?;
            }
            ReplicationEvent::Commit { end_lsn, .. } => {
                self.transaction = None;
                sink.resume_mut().confirm = Some(end_lsn.0);
                if sink.is_empty() {
                    // Nothing of this transaction is waiting (all skipped as already spooled).
                    sink.flush(stop).await?;
                }
            }
            ReplicationEvent::KeepAlive { wal_end, .. } => {
                self.idle_position(wal_end.0, client, shared, sink)
            }
            ReplicationEvent::Message {
                lsn, transactional, ..
            } => {
                if !transactional {
                    self.idle_position(lsn.0, client, shared, sink);
                }
            }
            ReplicationEvent::StoppedAt { .. } => {}
        }
        Ok(())
    }

    /// Between transactions with everything acknowledged, the source may forget WAL up to a
    /// keepalive's or heartbeat's position: every transaction that committed before it was
    /// already delivered, in order.
    fn idle_position(&self, lsn: u64, client: &ReplicationClient, shared: &Shared, sink: &Sink) {
        if self.transaction.is_none() && sink.is_settled() && shared.spool.is_empty() && lsn > 0 {
            client.update_applied_lsn(pgwire_replication::Lsn(lsn));
            shared.status.update(|status| {
                if status
                    .confirmed_lsn
                    .is_none_or(|confirmed| confirmed.0 < lsn)
                {
                    status.confirmed_lsn = Some(Lsn(lsn));
                }
            });
        }
    }

    async fn apply(
        &mut self,
        message: Message,
        connection: &mut PgConnection,
        sink: &mut Sink,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), Failure> {
        match message {
            Message::Relation(relation) => {
                let mut columns = Vec::with_capacity(relation.columns.len());
                for column in &relation.columns {
                    let (type_name, kind) = self
                        .types
                        .resolve(connection, column.type_oid)
                        .await
                        .context("looking up a column type")?;
                    columns.push((column.name.clone(), type_name, kind));
                }
                let mut key: Vec<usize> = if matches!(relation.replica_identity, b'd' | b'i') {
                    relation
                        .columns
                        .iter()
                        .enumerate()
                        .filter(|(_, column)| column.key)
                        .map(|(index, _)| index)
                        .collect()
                } else {
                    // FULL marks every column; the key is the table's primary key.
                    catalog::key_columns(connection, relation.id)
                        .await
                        .context("looking up a table's key")?
                        .iter()
                        .filter_map(|name| columns.iter().position(|(column, _, _)| column == name))
                        .collect()
                };
                if key.is_empty() {
                    key = (0..columns.len()).collect();
                }
                let types = Arc::new(
                    columns
                        .iter()
                        .map(|(name, type_name, _)| (name.clone(), type_name.clone()))
                        .collect(),
                );
                self.relations.insert(
                    relation.id,
                    Arc::new(RelationState {
                        schema: relation.namespace,
                        table: relation.name,
                        columns,
                        key,
                        types,
                    }),
                );
            }
            Message::Type {
                oid,
                namespace,
                name,
            } => self.types.learn(oid, &namespace, &name),
            Message::Origin { .. } => {}
            Message::Insert { relation, new } => {
                let table = self.relation(relation)?;
                if new.iter().any(|datum| matches!(datum, Datum::Unchanged)) {
                    return Err(Failure::fatal(anyhow::anyhow!(
                        "an insert into {}.{} marked a value unchanged",
                        table.schema,
                        table.table
                    )));
                }
                self.emit_insert(&table, &new, sink, stop).await?;
            }
            Message::Update { relation, old, new } => {
                let table = self.relation(relation)?;
                let full_old = old.as_ref().filter(|(kind, _)| *kind == OldKind::Full);
                let (after, unchanged, bytes) =
                    row_image(&table, new, full_old.map(|(_, tuple)| tuple));
                let key = key_of(&table, &after);
                let full = full_old.is_some();
                let before = old.map(|(_, tuple)| row_image(&table, tuple, None).0);
                // A changed key: the row under the old key is gone.
                if let Some(before) = &before {
                    let old_key = key_of(&table, before);
                    if old_key != key {
                        self.emit(
                            &table,
                            Op::Delete,
                            old_key,
                            None,
                            Some(before.clone()),
                            Vec::new(),
                            200,
                            sink,
                            stop,
                        )
                        .await?;
                    }
                }
                let before = before.filter(|_| full);
                self.emit(
                    &table,
                    Op::Update,
                    key,
                    Some(after),
                    before,
                    unchanged,
                    bytes,
                    sink,
                    stop,
                )
                .await?;
            }
            Message::Delete {
                relation,
                old: (_, tuple),
            } => {
                let table = self.relation(relation)?;
                let (before, _, bytes) = row_image(&table, tuple, None);
                let key = key_of(&table, &before);
                let before: Map<String, Value> = before
                    .into_iter()
                    .filter(|(_, value)| !value.is_null())
                    .collect();
                self.emit(
                    &table,
                    Op::Delete,
                    key,
                    None,
                    Some(before),
                    Vec::new(),
                    bytes,
                    sink,
                    stop,
                )
                .await?;
            }
            Message::Truncate { relations, .. } => {
                for relation in relations {
                    let table = self.relation(relation)?;
                    self.emit(
                        &table,
                        Op::Truncate,
                        Map::new(),
                        None,
                        None,
                        Vec::new(),
                        200,
                        sink,
                        stop,
                    )
                    .await?;
                }
            }
        }
        Ok(())
    }

    fn relation(&self, id: u32) -> Result<Arc<RelationState>, Failure> {
        self.relations.get(&id).cloned().ok_or_else(|| {
            Failure::fatal(anyhow::anyhow!(
                "a change to relation {id} arrived before its description; refusing to guess its columns"
            ))
        })
    }

    /// An insert, the most common change, serialised straight from the decoded row into the
    /// batch (no intermediate JSON tree).
    async fn emit_insert(
        &mut self,
        table: &RelationState,
        new: &Tuple,
        sink: &mut Sink,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), Failure> {
        let Some((transaction, seq)) = self.next_position(sink)? else {
            return Ok(());
        };
        let lsn = Lsn(transaction.lsn);
        let millis = (transaction.time.unix_timestamp_nanos() / 1_000_000) as i64;
        let bytes = 200
            + new
                .iter()
                .zip(&table.columns)
                .map(|(datum, (name, _, _))| {
                    name.len()
                        + 8
                        + match datum {
                            Datum::Text(text) => text.len(),
                            Datum::Binary(bytes) => bytes.len() * 2,
                            _ => 4,
                        }
                })
                .sum::<usize>();
        let event = InsertOut {
            event_id: EventId::derive(self.source, millis, lsn, seq),
            op: Op::Insert,
            schema: &table.schema,
            table: &table.table,
            lsn,
            seq,
            xid: u64::from(transaction.xid),
            event_time: transaction.time,
            key: RowOut {
                table,
                tuple: new,
                only: Some(&table.key),
            },
            after: RowOut {
                table,
                tuple: new,
                only: None,
            },
            types: Some(table.types.as_ref()).filter(|types| !types.is_empty()),
        };
        let types = Some((table.schema.as_str(), table.table.as_str(), &table.types));
        sink.add_with(
            lsn,
            seq,
            transaction.time,
            bytes,
            types,
            stop,
            |buffer, shared| {
                let event = InsertOut {
                    types: event.types.filter(|_| !shared),
                    ..event
                };
                serde_json::to_writer(buffer, &event)
            },
        )
        .await?;
        Ok(())
    }

    /// The current transaction and the next change's sequence in it; `None` when that change
    /// was spooled before a restart (the source resends from its confirmed position).
    fn next_position(&mut self, sink: &Sink) -> Result<Option<(Transaction, u32)>, Failure> {
        let Some(transaction) = self.transaction.as_mut() else {
            return Err(Failure::fatal(anyhow::anyhow!(
                "a change arrived outside a transaction"
            )));
        };
        let seq = transaction.seq;
        transaction.seq += 1;
        let transaction = *transaction;
        if sink
            .resume()
            .last
            .is_some_and(|last| (transaction.lsn, seq) <= last)
        {
            return Ok(None);
        }
        Ok(Some((transaction, seq)))
    }

    #[allow(clippy::too_many_arguments)]
    async fn emit(
        &mut self,
        table: &RelationState,
        op: Op,
        key: Map<String, Value>,
        after: Option<Map<String, Value>>,
        before: Option<Map<String, Value>>,
        unchanged: Vec<String>,
        bytes: usize,
        sink: &mut Sink,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), Failure> {
        let Some((transaction, seq)) = self.next_position(sink)? else {
            return Ok(());
        };
        let lsn = Lsn(transaction.lsn);
        let millis = (transaction.time.unix_timestamp_nanos() / 1_000_000) as i64;
        let types = table.types.clone();
        let event = ChangeEvent {
            event_id: EventId::derive(self.source, millis, lsn, seq),
            op,
            schema: table.schema.clone(),
            table: table.table.clone(),
            lsn,
            seq,
            xid: Some(u64::from(transaction.xid)),
            event_time: transaction.time,
            key,
            after,
            before,
            unchanged,
            types,
        };
        sink.add(event, bytes, stop).await?;
        Ok(())
    }

    /// Reads the slot's health; warns before the source would invalidate it, and stops when it
    /// has.
    async fn check_slot(
        &self,
        connection: &mut PgConnection,
        settings: &Settings,
        shared: &Shared,
    ) -> Result<(), Failure> {
        let row: Option<SlotHealthRow> = sqlx::query_as(
            "select wal_status::text, safe_wal_size::int8, \
                        (pg_current_wal_lsn() - restart_lsn)::int8, \
                        (pg_current_wal_lsn() - confirmed_flush_lsn)::int8, \
                        current_setting('max_slot_wal_keep_size') \
                 from pg_replication_slots where slot_name = $1",
        )
        .bind(&settings.slot)
        .fetch_optional(connection)
        .await
        .context("reading the slot's health")?;
        let Some((wal_status, safe, retained, lag, keep)) = row else {
            return Err(Failure::fatal(slot_lost(
                &settings.slot,
                "no longer exists",
            )));
        };
        let max_keep_bytes = parse_size(&keep);
        let mut warnings = Vec::new();
        if wal_status.as_deref() == Some("lost") {
            return Err(Failure::fatal(slot_lost(
                &settings.slot,
                "was invalidated by the source (max_slot_wal_keep_size)",
            )));
        }
        let endangered = wal_status.as_deref() == Some("unreserved")
            || matches!((safe, max_keep_bytes), (Some(safe), Some(max)) if safe < max / 2);
        if endangered {
            let warning = format!(
                "the replication slot {:?} is close to invalidation: it retains {} bytes of WAL \
                 and only {} more may be written before the source drops it \
                 (max_slot_wal_keep_size = {keep}); make sure the edge is reachable",
                settings.slot,
                retained.unwrap_or_default(),
                safe.unwrap_or_default()
            );
            tracing::warn!("{warning}");
            warnings.push(warning);
        }
        shared.status.update(|status| {
            status.lag_bytes = lag.and_then(|lag| u64::try_from(lag).ok());
            status.slot = Some(SlotHealth {
                name: settings.slot.clone(),
                wal_status,
                retained_bytes: retained,
                safe_wal_bytes: safe,
                max_keep_bytes,
            });
            status.warnings = warnings;
        });
        Ok(())
    }
}

/// An insert event, field for field as [`ChangeEvent`] serialises it, borrowing the decoded row.
#[derive(serde::Serialize)]
struct InsertOut<'a> {
    event_id: EventId,
    op: Op,
    schema: &'a str,
    table: &'a str,
    lsn: Lsn,
    seq: u32,
    xid: u64,
    #[serde(with = "time::serde::rfc3339")]
    event_time: time::OffsetDateTime,
    key: RowOut<'a>,
    after: RowOut<'a>,
    /// Left out when the batch gives the table's types once.
    #[serde(skip_serializing_if = "Option::is_none")]
    types: Option<&'a BTreeMap<String, String>>,
}

/// A decoded row as a JSON object (all columns, or only `only`'s, in that order).
struct RowOut<'a> {
    table: &'a RelationState,
    tuple: &'a Tuple,
    only: Option<&'a [usize]>,
}

impl serde::Serialize for RowOut<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeMap};
        let mut map = serializer.serialize_map(None)?;
        let mut entry = |index: usize| -> Result<(), S::Error> {
            let (Some((name, _, kind)), Some(datum)) =
                (self.table.columns.get(index), self.tuple.get(index))
            else {
                return Ok(());
            };
            match datum {
                Datum::Null => map.serialize_entry(name, &()),
                Datum::Text(text) => map.serialize_entry(name, &values::Typed(*kind, text)),
                Datum::Binary(bytes) => {
                    map.serialize_entry(name, &format!("\\x{}", hex_lower(bytes)))
                }
                Datum::Unchanged => Err(S::Error::custom("an unchanged value in a full row")),
            }
        };
        match self.only {
            Some(indices) => indices.iter().try_for_each(|index| entry(*index))?,
            None => (0..self.tuple.len()).try_for_each(&mut entry)?,
        }
        map.end()
    }
}

/// wal_status, safe_wal_size, retained WAL, WAL beyond the confirmed position, and
/// max_slot_wal_keep_size.
type SlotHealthRow = (
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    String,
);

/// `1GB`, `512MB`, `-1` (unlimited): a size setting in bytes.
fn parse_size(text: &str) -> Option<i64> {
    let text = text.trim();
    if text == "-1" {
        return None;
    }
    let digits = text.trim_end_matches(|character: char| character.is_ascii_alphabetic());
    let number: i64 = digits.trim().parse().ok()?;
    let unit = match &text[digits.len()..] {
        "" | "MB" => 1 << 20, // a bare number is megabytes
        "kB" => 1 << 10,
        "GB" => 1 << 30,
        "TB" => 1 << 40,
        _ => return None,
    };
    Some(number * unit)
}

/// A tuple as column → JSON, the unchanged columns (filled from `full_old` where it has them),
/// and its approximate size.
fn row_image(
    table: &RelationState,
    tuple: Tuple,
    full_old: Option<&Tuple>,
) -> (Map<String, Value>, Vec<String>, usize) {
    let mut image = Map::new();
    let mut unchanged = Vec::new();
    let mut bytes = 200;
    for (index, datum) in tuple.into_iter().enumerate() {
        let Some((name, _, kind)) = table.columns.get(index) else {
            continue;
        };
        let datum = match (datum, full_old.and_then(|old| old.get(index))) {
            (Datum::Unchanged, Some(old @ (Datum::Text(_) | Datum::Null | Datum::Binary(_)))) => {
                old.clone()
            }
            (datum, _) => datum,
        };
        bytes += name.len() + 8;
        let value = match datum {
            Datum::Null => Value::Null,
            Datum::Unchanged => {
                unchanged.push(name.clone());
                continue;
            }
            Datum::Text(text) => {
                bytes += text.len();
                values::to_json(*kind, text)
            }
            Datum::Binary(bytes_value) => {
                bytes += bytes_value.len() * 2;
                Value::String(format!("\\x{}", hex_lower(&bytes_value)))
            }
        };
        image.insert(name.clone(), value);
    }
    (image, unchanged, bytes)
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn key_of(table: &RelationState, image: &Map<String, Value>) -> Map<String, Value> {
    table
        .key
        .iter()
        .filter_map(|index| table.columns.get(*index))
        .map(|(name, _, _)| {
            (
                name.clone(),
                image.get(name).cloned().unwrap_or(Value::Null),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events from a queue; handling records them and fails on `fail_on`.
    struct Queue {
        waiting: std::collections::VecDeque<u32>,
        handled: Vec<u32>,
        fail_on: Option<u32>,
    }

    impl Events for Queue {
        type Event = u32;

        fn ready(&mut self) -> Option<u32> {
            self.waiting.pop_front()
        }

        async fn handle(&mut self, event: u32) -> Result<(), Failure> {
            if self.fail_on == Some(event) {
                return Err(Failure::fatal(anyhow::anyhow!("refused")));
            }
            self.handled.push(event);
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_drain_hands_on_every_event_it_takes_in_order() {
        let mut queue = Queue {
            waiting: (0..2500).collect(),
            handled: Vec::new(),
            fail_on: None,
        };
        let mut turns = Vec::new();
        while let Some(first) = queue.waiting.pop_front() {
            let turn = drain(&mut queue, first, 1024)
                .await
                .map_err(|failure| failure.error)
                .unwrap();
            turns.push(turn);
        }
        let lost: Vec<u32> = (0..2500)
            .filter(|event| !queue.handled.contains(event))
            .collect();
        assert!(lost.is_empty(), "taken and never handled: {lost:?}");
        assert!(queue.handled.is_sorted(), "handled out of order");
        assert_eq!(turns, [1024, 1024, 452]);

        // A failure ends the turn before anything more is taken.
        let mut queue = Queue {
            waiting: (1..10).collect(),
            handled: Vec::new(),
            fail_on: Some(3),
        };
        assert!(drain(&mut queue, 0, 1024).await.is_err());
        assert_eq!(queue.handled, [0, 1, 2]);
        assert_eq!(queue.waiting.front(), Some(&4));
    }

    #[test]
    fn sizes_read_like_postgres_prints_them() {
        assert_eq!(parse_size("-1"), None);
        assert_eq!(parse_size("64MB"), Some(64 << 20));
        assert_eq!(parse_size("1GB"), Some(1 << 30));
        assert_eq!(parse_size("512kB"), Some(512 << 10));
    }

    fn table() -> RelationState {
        RelationState {
            schema: "public".into(),
            table: "t".into(),
            columns: vec![
                ("id".into(), "integer".into(), Kind::Integer),
                ("big".into(), "text".into(), Kind::Text),
                ("n".into(), "integer".into(), Kind::Integer),
            ],
            key: vec![0],
            types: Arc::default(),
        }
    }

    #[test]
    fn a_row_serialised_in_place_equals_its_json_image() {
        let tuple = vec![
            Datum::Text("7".into()),
            Datum::Text("a \"quoted\" value".into()),
            Datum::Null,
        ];
        let direct = serde_json::to_value(RowOut {
            table: &table(),
            tuple: &tuple,
            only: None,
        })
        .unwrap();
        let (image, _, _) = row_image(&table(), tuple.clone(), None);
        assert_eq!(direct, Value::Object(image));
        let key = serde_json::to_value(RowOut {
            table: &table(),
            tuple: &tuple,
            only: Some(&[0]),
        })
        .unwrap();
        assert_eq!(key, serde_json::json!({"id": 7}));
    }

    #[test]
    fn an_unchanged_value_is_never_null() {
        let new = vec![
            Datum::Text("1".into()),
            Datum::Unchanged,
            Datum::Text("2".into()),
        ];
        let (after, unchanged, _) = row_image(&table(), new, None);
        assert_eq!(unchanged, vec!["big".to_owned()]);
        assert!(!after.contains_key("big"));
        assert_eq!(after["n"], serde_json::json!(2));
    }

    #[test]
    fn a_full_old_image_fills_an_unchanged_value() {
        let old = vec![
            Datum::Text("1".into()),
            Datum::Text("large".into()),
            Datum::Text("1".into()),
        ];
        let new = vec![
            Datum::Text("1".into()),
            Datum::Unchanged,
            Datum::Text("2".into()),
        ];
        let (after, unchanged, _) = row_image(&table(), new, Some(&old));
        assert!(unchanged.is_empty());
        assert_eq!(after["big"], serde_json::json!("large"));
    }
}
