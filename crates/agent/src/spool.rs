//! The durable spool: every batch is a file, written and synced before it is sent, removed only
//! after the edge acknowledged it. Files are named by a sequence number, so they are sent in
//! the order they were read from the source. The spool is bounded in bytes: when it is full
//! the reader stops reading the source (backpressure) instead of dropping anything.
//!
//! A file is one line of JSON (the batch's [`Header`]: where the source stands once it is
//! acknowledged) and then the batch exactly as the edge takes it, serialised once when it is
//! spooled: the sender compresses and sends those bytes without parsing them again.

use std::collections::VecDeque;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use protocol::EventBatch;
use serde::{Deserialize, Serialize};

/// A batch to spool, and where the source stands once it is acknowledged.
#[derive(Debug)]
pub struct Spooled {
    /// The simulator's position just after this batch.
    pub end_position: u64,
    /// A database source's position once this batch is acknowledged.
    pub resume: Resume,
    pub batch: EventBatch,
}

/// What a spooled file says about its batch, on its first line.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Header {
    #[serde(default)]
    pub end_position: u64,
    #[serde(default)]
    pub resume: Resume,
    pub events: usize,
    /// The first event's commit time: how long the batch has waited.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub first_event_time: Option<time::OffsetDateTime>,
    /// The last event's commit LSN.
    pub last_lsn: Option<domain::Lsn>,
}

/// A batch read back from the spool: its header and its body (JSON, uncompressed).
#[derive(Debug)]
pub struct Stored {
    pub header: Header,
    pub body: Vec<u8>,
}

/// Where a database source resumes: what it has spooled, and what it may confirm to the
/// source once everything up to here is acknowledged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    /// The last event spooled: its commit LSN and sequence. A restarted stream skips every
    /// change at or before it (the source resends from its confirmed position).
    pub last: Option<(u64, u32)>,
    /// The end LSN of the newest transaction whose every change is spooled: the position the
    /// source may forget up to once this batch is acknowledged.
    pub confirm: Option<u64>,
    /// Set while an initial snapshot is being read: where to continue it.
    pub snapshot: Option<SnapshotCursor>,
}

/// How far an initial snapshot got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotCursor {
    /// The snapshot's position (its slot's consistent point): a cursor of another snapshot
    /// (before a resync) is not continued.
    pub consistent_point: u64,
    /// Index into the snapshot's table list.
    pub table: usize,
    /// The key (as text, in key-column order) of the last row read from that table; for a
    /// table without a unique key, the whole row (every column as text).
    pub after_key: Option<Vec<Option<String>>>,
    /// How many rows equal to `after_key` were read: a table without a unique key may hold
    /// identical rows, and a continued read skips exactly that many of them.
    #[serde(default)]
    pub repeats: u32,
    /// The next snapshot row's sequence number.
    pub seq: u32,
}

#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    index: Mutex<Index>,
    /// Whether the edge's last answer said it reads a batch's top-level `types`: only then are
    /// batches spooled with each table's column types once instead of in every event.
    batch_types: AtomicBool,
}

#[derive(Debug, Default)]
struct Index {
    /// (file number, size in bytes), oldest first.
    files: VecDeque<(u64, u64)>,
    bytes: u64,
    next: u64,
}

impl Spool {
    pub fn open(state_dir: &Path, max_bytes: u64) -> anyhow::Result<Self> {
        let dir = state_dir.join("spool");
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut files = Vec::new();
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            let Some(number) = path
                .file_stem()
                .and_then(|stem| stem.to_str())
                .and_then(|stem| stem.parse::<u64>().ok())
            else {
                continue;
            };
            match path.extension().and_then(|extension| extension.to_str()) {
                Some("batch") => files.push((number, entry.metadata()?.len())),
                // A write a crash interrupted: its batch was never confirmed as spooled.
                Some("tmp") => fs::remove_file(&path)?,
                _ => {}
            }
        }
        files.sort_unstable();
        let index = Index {
            bytes: files.iter().map(|(_, size)| size).sum(),
            next: files.last().map_or(0, |(number, _)| number + 1),
            files: files.into(),
        };
        Ok(Self {
            dir,
            max_bytes,
            index: Mutex::new(index),
            batch_types: AtomicBool::new(false),
        })
    }

    fn path(&self, number: u64) -> PathBuf {
        self.dir.join(format!("{number:020}.batch"))
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether batches may give column types once per table (the edge said it reads them).
    pub fn batch_types(&self) -> bool {
        self.batch_types.load(Ordering::Relaxed)
    }

    /// Records what the edge's latest answer said about reading a batch's top-level `types`.
    pub fn set_batch_types(&self, edge_reads_them: bool) {
        self.batch_types.store(edge_reads_them, Ordering::Relaxed);
    }

    /// Whether the spool holds its configured size or more: the reader waits.
    pub fn is_full(&self) -> bool {
        self.index().bytes >= self.max_bytes
    }

    pub fn bytes(&self) -> u64 {
        self.index().bytes
    }

    pub fn len(&self) -> usize {
        self.index().files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index().files.is_empty()
    }

    /// The oldest spooled batch's number.
    pub fn oldest(&self) -> Option<u64> {
        self.index().files.front().map(|(number, _)| *number)
    }

    /// Writes `spooled` durably (temporary file, sync, rename, sync the directory).
    pub fn push(&self, spooled: &Spooled) -> anyhow::Result<()> {
        let header = Header {
            end_position: spooled.end_position,
            resume: spooled.resume.clone(),
            events: spooled.batch.events.len(),
            first_event_time: spooled.batch.events.first().map(|event| event.event_time),
            last_lsn: spooled.batch.events.last().map(|event| event.lsn),
        };
        let mut body = Vec::new();
        serde_json::to_writer(&mut body, &spooled.batch)?;
        self.push_body(&header, &body)
    }

    /// Writes a batch already serialised: `events` is the events' JSON objects separated by
    /// commas, as many as `header.events` says, and `types` the batch's top-level `types` (a
    /// JSON array), if it has any.
    pub fn push_events(
        &self,
        header: &Header,
        events: &[u8],
        types: Option<&[u8]>,
    ) -> anyhow::Result<()> {
        let mut body = Vec::with_capacity(events.len() + types.map_or(0, <[u8]>::len) + 32);
        body.extend_from_slice(b"{\"events\":[");
        body.extend_from_slice(events);
        body.push(b']');
        if let Some(types) = types {
            body.extend_from_slice(b",\"types\":");
            body.extend_from_slice(types);
        }
        body.push(b'}');
        self.push_body(header, &body)
    }

    fn push_body(&self, header: &Header, body: &[u8]) -> anyhow::Result<()> {
        let mut bytes = serde_json::to_vec(header)?;
        bytes.push(b'\n');
        bytes.extend_from_slice(body);
        let number = self.index().next;
        let name = self.path(number);
        let temporary = self.dir.join(format!("{number:020}.tmp"));
        let mut file = fs::File::create(&temporary)
            .with_context(|| format!("creating {}", temporary.display()))?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        fs::rename(&temporary, &name)?;
        fs::File::open(&self.dir)?.sync_all()?;
        let mut index = self.index();
        index.files.push_back((number, bytes.len() as u64));
        index.bytes += bytes.len() as u64;
        index.next = number + 1;
        Ok(())
    }

    pub fn read(&self, number: u64) -> anyhow::Result<Stored> {
        let path = self.path(number);
        let mut bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let end = bytes
            .iter()
            .position(|byte| *byte == b'\n')
            .with_context(|| format!("{} is corrupt: no header", path.display()))?;
        let header = serde_json::from_slice(&bytes[..end])
            .with_context(|| format!("{} is corrupt", path.display()))?;
        let body = bytes.split_off(end + 1);
        Ok(Stored { header, body })
    }

    pub fn remove(&self, number: u64) -> anyhow::Result<()> {
        fs::remove_file(self.path(number))?;
        let mut index = self.index();
        if let Some(at) = index.files.iter().position(|(each, _)| *each == number) {
            let (_, size) = index.files.remove(at).unwrap_or_default();
            index.bytes -= size;
        }
        Ok(())
    }

    /// The newest spooled batch's header, if any.
    pub fn newest(&self) -> anyhow::Result<Option<Header>> {
        let newest = self.index().files.back().map(|(number, _)| *number);
        newest
            .map(|number| self.read(number).map(|stored| stored.header))
            .transpose()
    }

    /// Every spooled batch's number, oldest first.
    pub fn numbers(&self) -> Vec<u64> {
        self.index()
            .files
            .iter()
            .map(|(number, _)| *number)
            .collect()
    }
}

/// The last acknowledged batch's [`Resume`], kept in the state directory so that a restart
/// with an empty spool knows where the source stands.
pub fn load_acked(state_dir: &Path) -> anyhow::Result<Resume> {
    let path = state_dir.join(ACKED_FILE);
    match fs::read(&path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).with_context(|| format!("{} is corrupt", path.display()))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Resume::default()),
        Err(error) => Err(error).with_context(|| format!("reading {}", path.display())),
    }
}

pub fn save_acked(state_dir: &Path, resume: &Resume) -> anyhow::Result<()> {
    write_atomically(&state_dir.join(ACKED_FILE), &serde_json::to_vec(resume)?)
}

const ACKED_FILE: &str = "acked.json";

/// Writes `bytes` to `path` so that a crash leaves either the old or the new content.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let temporary = path.with_extension("tmp");
    let mut file = fs::File::create(&temporary)
        .with_context(|| format!("creating {}", temporary.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&temporary, path)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
