//! Between a source and the spool: gathers changes into batches by count, size and time, holds
//! the source back while the spool is full, and writes each batch (and its syncs) on a blocking
//! thread while the next one fills, one batch at a time and in order.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::Lsn;
use protocol::ChangeEvent;
use time::OffsetDateTime;
use tokio::sync::{Notify, watch};

use crate::spool::{Header, Resume, Spool};
use crate::status::StatusCell;

/// At most this many changes per batch (the edge takes up to 5,000).
pub const BATCH_EVENTS: usize = 2_000;
/// Batches close at about this much JSON, or with a single larger change.
pub const BATCH_BYTES: usize = 4 * 1024 * 1024;
/// How long a change may wait for others to share its batch.
pub const LINGER: Duration = Duration::from_millis(20);

/// A table's column types: column name → the source's type name, shared by its events.
pub type ColumnTypes = Arc<BTreeMap<String, String>>;

#[derive(Debug)]
pub struct Sink {
    spool: Arc<Spool>,
    spooled: Arc<Notify>,
    status: StatusCell,
    /// The waiting events' JSON objects, separated by commas.
    buffer: Vec<u8>,
    /// The column types the waiting batch gives once, by schema and table, for its events that
    /// carry none of their own (only when the edge reads them: [`Spool::batch_types`]).
    types: HashMap<String, HashMap<String, ColumnTypes>>,
    events: usize,
    first_event_time: Option<OffsetDateTime>,
    last_lsn: Option<Lsn>,
    bytes: usize,
    since: Option<Instant>,
    /// The position as of the changes added so far.
    resume: Resume,
    /// The position as of the last batch handed to the spool.
    spooled_resume: Resume,
    /// The batch being written to the spool, if any.
    writing: Option<tokio::task::JoinHandle<Written>>,
    /// A batch whose write failed, to be written before any later one.
    unwritten: Option<Box<Unwritten>>,
    /// A write panicked and its batch is gone: nothing more may be spooled.
    broken: bool,
}

impl Sink {
    pub fn new(
        spool: Arc<Spool>,
        spooled: Arc<Notify>,
        status: StatusCell,
        resume: Resume,
    ) -> Self {
        Self {
            spool,
            spooled,
            status,
            buffer: Vec::new(),
            types: HashMap::new(),
            events: 0,
            first_event_time: None,
            last_lsn: None,
            bytes: 0,
            since: None,
            spooled_resume: resume.clone(),
            resume,
            writing: None,
            unwritten: None,
            broken: false,
        }
    }

    pub fn resume(&self) -> &Resume {
        &self.resume
    }

    pub fn resume_mut(&mut self) -> &mut Resume {
        &mut self.resume
    }

    /// Nothing is waiting in memory.
    pub fn is_empty(&self) -> bool {
        self.events == 0
    }

    /// When the oldest waiting change has waited long enough.
    pub fn deadline(&self) -> Option<tokio::time::Instant> {
        self.since
            .map(|since| tokio::time::Instant::from_std(since + LINGER))
    }

    /// Adds a change of about `bytes` bytes of JSON; spools the batch when it is full.
    pub async fn add(
        &mut self,
        mut event: ChangeEvent,
        bytes: usize,
        stop: &mut watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        self.make_room(bytes, stop).await?;
        if self.shares_types(&event.schema, &event.table, &event.types) {
            event.types = ColumnTypes::default();
        }
        let (lsn, seq, event_time) = (event.lsn, event.seq, event.event_time);
        self.add_with(lsn, seq, event_time, bytes, None, stop, |buffer, _| {
            serde_json::to_writer(buffer, &event)
        })
        .await
    }

    /// Adds a change that `write` serialises (one JSON object, as [`ChangeEvent`] serialises)
    /// straight into the batch. `types` names the change's table and its column types; `write`
    /// is told whether the batch gives them (the event then leaves out its own `types`).
    #[allow(
        clippy::too_many_arguments,
        reason = "the change's place, its size and its table's types, each used once"
    )]
    pub async fn add_with(
        &mut self,
        lsn: Lsn,
        seq: u32,
        event_time: OffsetDateTime,
        bytes: usize,
        types: Option<(&str, &str, &ColumnTypes)>,
        stop: &mut watch::Receiver<bool>,
        write: impl FnOnce(&mut Vec<u8>, bool) -> serde_json::Result<()>,
    ) -> anyhow::Result<()> {
        self.make_room(bytes, stop).await?;
        let shared =
            types.is_some_and(|(schema, table, types)| self.shares_types(schema, table, types));
        if self.events > 0 {
            self.buffer.push(b',');
        }
        let start = self.buffer.len();
        if let Err(error) = write(&mut self.buffer, shared) {
            self.buffer
                .truncate(start.saturating_sub(usize::from(self.events > 0)));
            return Err(error.into());
        }
        self.resume.last = Some((lsn.0, seq));
        self.events += 1;
        self.first_event_time.get_or_insert(event_time);
        self.last_lsn = Some(lsn);
        self.bytes += bytes;
        self.since.get_or_insert_with(Instant::now);
        if self.events >= BATCH_EVENTS || self.bytes >= BATCH_BYTES {
            self.flush(stop).await?;
        }
        Ok(())
    }

    /// Spools the waiting batch first when a change of `bytes` would not fit in it.
    async fn make_room(
        &mut self,
        bytes: usize,
        stop: &mut watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        if self.events > 0 && self.bytes + bytes > BATCH_BYTES {
            self.flush(stop).await?;
        }
        Ok(())
    }

    /// Whether the waiting batch gives `types` for its events of `schema`.`table`, adding them
    /// when it gives none yet for that table. A table whose types changed within the batch (a
    /// column's type altered at the source) has its later events carry their own.
    fn shares_types(&mut self, schema: &str, table: &str, types: &ColumnTypes) -> bool {
        if types.is_empty() || !self.spool.batch_types() {
            return false;
        }
        if !self.types.contains_key(schema) {
            self.types.insert(schema.to_owned(), HashMap::new());
        }
        let Some(tables) = self.types.get_mut(schema) else {
            return false;
        };
        match tables.get(table) {
            Some(given) => Arc::ptr_eq(given, types) || given == types,
            None => {
                tables.insert(table.to_owned(), types.clone());
                true
            }
        }
    }

    /// The waiting batch's top-level `types`, as JSON, if it gives any.
    fn types_json(&self) -> serde_json::Result<Option<Vec<u8>>> {
        #[derive(serde::Serialize)]
        struct Table<'a> {
            schema: &'a str,
            table: &'a str,
            columns: &'a BTreeMap<String, String>,
        }
        if self.types.is_empty() {
            return Ok(None);
        }
        let tables: Vec<Table<'_>> = self
            .types
            .iter()
            .flat_map(|(schema, tables)| {
                tables.iter().map(move |(table, columns)| Table {
                    schema,
                    table,
                    columns,
                })
            })
            .collect();
        serde_json::to_vec(&tables).map(Some)
    }

    /// Hands what is waiting to the spool, first waiting while the spool is full, and returns
    /// once the previous batch is written: the write of this one runs in the background until
    /// the next flush or [`Sink::settle`]. Returns early, spooling nothing, when `stop` fires
    /// during the wait.
    pub async fn flush(&mut self, stop: &mut watch::Receiver<bool>) -> anyhow::Result<()> {
        if self.events == 0 && self.resume == self.spooled_resume {
            return Ok(());
        }
        if self.spool.is_full() {
            tracing::warn!(
                spooled_bytes = self.spool.bytes(),
                "the spool is full: reading from the source pauses until the edge takes batches again"
            );
            self.status.update(|status| status.backpressure = true);
            while self.spool.is_full() {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = stop.changed() => {}
                }
                if *stop.borrow() {
                    return Ok(());
                }
            }
            self.status.update(|status| status.backpressure = false);
        }
        // One batch is written at a time, in order: the previous one first.
        self.settle().await?;
        let header = Header {
            end_position: 0,
            resume: self.resume.clone(),
            events: self.events,
            first_event_time: self.first_event_time.take(),
            last_lsn: self.last_lsn.take(),
        };
        // A batch with no changes only carries a position; the sender acknowledges it itself.
        let capacity = self.buffer.len();
        let batch = Box::new(Unwritten {
            types: self.types_json()?,
            events: std::mem::replace(&mut self.buffer, Vec::with_capacity(capacity)),
            header,
        });
        self.types.clear();
        self.events = 0;
        self.spooled_resume = self.resume.clone();
        self.bytes = 0;
        self.since = None;
        // The write and its two syncs run off the reading task: the next batch fills meanwhile.
        let (spool, spooled, status) = (
            self.spool.clone(),
            self.spooled.clone(),
            self.status.clone(),
        );
        self.writing = Some(tokio::task::spawn_blocking(move || {
            write(&spool, &spooled, &status, batch)
        }));
        Ok(())
    }

    /// Waits until every batch handed to the spool is in it. A batch whose write failed is
    /// written again first (its changes are past the source position the sink skips to, so
    /// they exist nowhere else); if that fails too, the error is returned and it stays next.
    pub async fn settle(&mut self) -> anyhow::Result<()> {
        if let Some(writing) = self.writing.take() {
            match writing.await {
                Ok(Ok(())) => {}
                Ok(Err((error, batch))) => {
                    tracing::warn!(error = %format!("{error:#}"), "writing a batch to the spool failed; it is written again");
                    self.unwritten = Some(batch);
                }
                // A panic took the batch with it: only a restart, which reads the position
                // back from the spool, can carry on without losing it.
                Err(error) => {
                    self.broken = true;
                    return Err(anyhow::Error::new(error).context("the spool writer failed"));
                }
            }
        }
        if self.broken {
            anyhow::bail!("a batch was lost before reaching the spool; the agent must restart");
        }
        if let Some(batch) = self.unwritten.take() {
            let (spool, spooled, status) = (
                self.spool.clone(),
                self.spooled.clone(),
                self.status.clone(),
            );
            let written =
                tokio::task::spawn_blocking(move || write(&spool, &spooled, &status, batch)).await;
            match written {
                Ok(Ok(())) => {}
                Ok(Err((error, batch))) => {
                    self.unwritten = Some(batch);
                    return Err(error);
                }
                Err(error) => {
                    self.broken = true;
                    return Err(anyhow::Error::new(error).context("the spool writer failed"));
                }
            }
        }
        Ok(())
    }

    /// Nothing is waiting in memory and nothing is being written: everything read is in the
    /// spool.
    pub fn is_settled(&self) -> bool {
        self.events == 0
            && self.unwritten.is_none()
            && self
                .writing
                .as_ref()
                .is_none_or(tokio::task::JoinHandle::is_finished)
    }
}

/// How a spool write ended: the batch handed back when it failed.
type Written = Result<(), (anyhow::Error, Box<Unwritten>)>;

/// A batch on its way to the spool.
#[derive(Debug)]
struct Unwritten {
    header: Header,
    events: Vec<u8>,
    types: Option<Vec<u8>>,
}

/// Writes `batch` durably and tells the sender; on failure hands it back to be written again.
fn write(spool: &Spool, spooled: &Notify, status: &StatusCell, batch: Box<Unwritten>) -> Written {
    if let Err(error) = spool.push_events(&batch.header, &batch.events, batch.types.as_deref()) {
        return Err((error, batch));
    }
    if let Some((lsn, _)) = batch.header.resume.last {
        status.update(|status| status.captured_lsn = Some(domain::Lsn(lsn)));
    }
    spooled.notify_one();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{EventBatch, Op};
    use serde_json::json;

    fn source() -> domain::SourceId {
        domain::SourceId::from_uuid(uuid::Uuid::from_u128(0x5eed))
    }

    fn event(table: &str, seq: u32, types: &ColumnTypes) -> ChangeEvent {
        let lsn = Lsn(0x1_0000 + u64::from(seq));
        let event_time = OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
        let millis = (event_time.unix_timestamp_nanos() / 1_000_000) as i64;
        ChangeEvent {
            event_id: domain::EventId::derive(source(), millis, lsn, seq),
            op: Op::Insert,
            schema: "public".into(),
            table: table.into(),
            lsn,
            seq,
            xid: Some(7),
            event_time,
            key: json!({"id": seq}).as_object().cloned().unwrap_or_default(),
            after: json!({"id": seq}).as_object().cloned(),
            before: None,
            unchanged: Vec::new(),
            types: types.clone(),
        }
    }

    fn types(pairs: &[(&str, &str)]) -> ColumnTypes {
        Arc::new(
            pairs
                .iter()
                .map(|(column, type_name)| ((*column).to_owned(), (*type_name).to_owned()))
                .collect(),
        )
    }

    /// Spools `events` as one batch and reads it back as the edge would receive it.
    async fn spool_one(
        spool: &Arc<Spool>,
        events: Vec<ChangeEvent>,
    ) -> (serde_json::Value, EventBatch) {
        let (_stop_tx, mut stop) = watch::channel(false);
        let mut sink = Sink::new(
            spool.clone(),
            Arc::new(Notify::new()),
            StatusCell::new("postgres"),
            Resume::default(),
        );
        for event in events {
            sink.add(event, 100, &mut stop).await.unwrap();
        }
        sink.flush(&mut stop).await.unwrap();
        sink.settle().await.unwrap();
        let number = spool.oldest().unwrap();
        let body = spool.read(number).unwrap().body;
        spool.remove(number).unwrap();
        (
            serde_json::from_slice(&body).unwrap(),
            serde_json::from_slice(&body).unwrap(),
        )
    }

    #[tokio::test]
    async fn column_types_go_once_per_table_only_to_an_edge_that_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Arc::new(Spool::open(dir.path(), 1 << 30).unwrap());
        let readings = types(&[("id", "bigint"), ("value", "double precision")]);
        let devices = types(&[("id", "integer")]);
        let retyped = types(&[("id", "bigint"), ("value", "numeric")]);
        let batch = || {
            vec![
                event("readings", 0, &readings),
                event("devices", 1, &devices),
                event("readings", 2, &readings),
                // Its column types changed within the batch (an ALTER at the source).
                event("readings", 3, &retyped),
                event("untyped", 4, &ColumnTypes::default()),
            ]
        };

        // An edge that has not said it reads them: every event carries its own.
        let (json, decoded) = spool_one(&spool, batch()).await;
        assert!(json.get("types").is_none(), "{json}");
        assert_eq!(decoded.events, batch());

        spool.set_batch_types(true);
        let (json, _) = spool_one(&spool, batch()).await;
        let mut given: Vec<(String, serde_json::Value)> = json["types"]
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| {
                (
                    entry["table"].as_str().unwrap().to_owned(),
                    entry["columns"].clone(),
                )
            })
            .collect();
        given.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            given,
            [
                ("devices".to_owned(), json!({"id": "integer"})),
                (
                    "readings".to_owned(),
                    json!({"id": "bigint", "value": "double precision"})
                ),
            ]
        );
        let own: Vec<bool> = json["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|event| event.get("types").is_some())
            .collect();
        assert_eq!(own, [false, false, false, true, false], "{json}");
        // What the edge makes of it is the batch as it was read from the source.
        let tenant = domain::TenantId::new_random();
        let body = serde_json::to_vec(&json).unwrap();
        let limits = protocol::Limits {
            event_time_window: None,
            ..protocol::Limits::default()
        };
        let decoded = protocol::decode_batch(&body, tenant, source(), &limits).unwrap();
        let types_of: Vec<ColumnTypes> = decoded
            .events
            .iter()
            .map(|entry| match entry {
                Ok(event) => event.types.clone(),
                Err(result) => panic!("{result:?}"),
            })
            .collect();
        assert_eq!(
            types_of,
            batch()
                .into_iter()
                .map(|event| event.types)
                .collect::<Vec<_>>()
        );

        // The next batch starts afresh, and an edge that stops saying it gets them per event.
        let (json, _) = spool_one(&spool, vec![event("readings", 5, &retyped)]).await;
        assert_eq!(json["types"][0]["columns"]["value"], json!("numeric"));
        spool.set_batch_types(false);
        let (json, decoded) = spool_one(&spool, vec![event("readings", 6, &readings)]).await;
        assert!(json.get("types").is_none());
        assert_eq!(decoded.events[0].types, readings);
    }
}
