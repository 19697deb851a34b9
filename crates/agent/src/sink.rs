//! Between a source and the spool: gathers changes into batches by count, size and time, and
//! holds the source back while the spool is full.

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

#[derive(Debug)]
pub struct Sink {
    spool: Arc<Spool>,
    spooled: Arc<Notify>,
    status: StatusCell,
    /// The waiting events' JSON objects, separated by commas.
    buffer: Vec<u8>,
    events: usize,
    first_event_time: Option<OffsetDateTime>,
    last_lsn: Option<Lsn>,
    bytes: usize,
    since: Option<Instant>,
    /// The position as of the changes added so far.
    resume: Resume,
    /// The position as of the last batch spooled.
    spooled_resume: Resume,
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
            events: 0,
            first_event_time: None,
            last_lsn: None,
            bytes: 0,
            since: None,
            spooled_resume: resume.clone(),
            resume,
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
        event: ChangeEvent,
        bytes: usize,
        stop: &mut watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let (lsn, seq, event_time) = (event.lsn, event.seq, event.event_time);
        self.add_with(lsn, seq, event_time, bytes, stop, |buffer| {
            serde_json::to_writer(buffer, &event)
        })
        .await
    }

    /// Adds a change that `write` serialises (one JSON object, as [`ChangeEvent`] serialises)
    /// straight into the batch.
    pub async fn add_with(
        &mut self,
        lsn: Lsn,
        seq: u32,
        event_time: OffsetDateTime,
        bytes: usize,
        stop: &mut watch::Receiver<bool>,
        write: impl FnOnce(&mut Vec<u8>) -> serde_json::Result<()>,
    ) -> anyhow::Result<()> {
        if self.events > 0 && self.bytes + bytes > BATCH_BYTES {
            self.flush(stop).await?;
        }
        if self.events > 0 {
            self.buffer.push(b',');
        }
        let start = self.buffer.len();
        if let Err(error) = write(&mut self.buffer) {
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

    /// Spools what is waiting, first waiting while the spool is full. Returns early, spooling
    /// nothing, when `stop` fires during the wait.
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
        let header = Header {
            end_position: 0,
            resume: self.resume.clone(),
            events: self.events,
            first_event_time: self.first_event_time.take(),
            last_lsn: self.last_lsn.take(),
        };
        // A batch with no changes only carries a position; the sender acknowledges it itself.
        self.spool.push_events(&header, &self.buffer)?;
        self.buffer.clear();
        self.events = 0;
        self.spooled_resume = self.resume.clone();
        if let Some((lsn, _)) = self.resume.last {
            self.status
                .update(|status| status.captured_lsn = Some(domain::Lsn(lsn)));
        }
        self.bytes = 0;
        self.since = None;
        self.spooled.notify_one();
        Ok(())
    }
}
