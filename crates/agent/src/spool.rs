//! The durable spool: every batch is a file, written and synced before it is sent, removed only
//! after the edge acknowledged it. Files are named by a sequence number, so they are sent in
//! the order they were read from the source.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use protocol::EventBatch;
use serde::{Deserialize, Serialize};

/// One spooled batch, and the source position just after it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Spooled {
    pub end_position: u64,
    pub batch: EventBatch,
}

#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

impl Spool {
    pub fn open(state_dir: &Path) -> anyhow::Result<Self> {
        let dir = state_dir.join("spool");
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self { dir })
    }

    /// Spooled files, oldest first.
    pub fn files(&self) -> anyhow::Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> = fs::read_dir(&self.dir)?
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| {
                path.extension()
                    .is_some_and(|extension| extension == "batch")
            })
            .collect();
        files.sort();
        Ok(files)
    }

    /// Writes `spooled` durably (temporary file, sync, rename, sync the directory).
    pub fn push(&self, spooled: &Spooled) -> anyhow::Result<()> {
        let next = self
            .files()?
            .last()
            .and_then(|path| path.file_stem()?.to_str()?.parse::<u64>().ok())
            .map_or(0, |last| last + 1);
        let name = self.dir.join(format!("{next:020}.batch"));
        let temporary = self.dir.join(format!("{next:020}.tmp"));
        let mut file = fs::File::create(&temporary)?;
        file.write_all(&serde_json::to_vec(spooled)?)?;
        file.sync_all()?;
        fs::rename(&temporary, &name)?;
        fs::File::open(&self.dir)?.sync_all()?;
        Ok(())
    }

    pub fn read(&self, path: &Path) -> anyhow::Result<Spooled> {
        let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("{} is corrupt", path.display()))
    }

    pub fn remove(&self, path: &Path) -> anyhow::Result<()> {
        fs::remove_file(path)?;
        Ok(())
    }

    /// The position after the newest spooled batch, if any.
    pub fn end_position(&self) -> anyhow::Result<Option<u64>> {
        match self.files()?.last() {
            Some(path) => Ok(Some(self.read(path)?.end_position)),
            None => Ok(None),
        }
    }
}
