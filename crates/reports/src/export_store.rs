//! Where report files are kept: any `object_store` store, a local directory by default. A file
//! is written as a multipart upload that becomes visible only when it completes, and read back
//! as a stream of chunks.

use std::sync::Arc;

use bytes::Bytes;
use domain::TenantId;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use store::reports::Format;
use uuid::Uuid;

/// Bytes per uploaded part.
const PART: usize = 8 << 20;
/// Parts uploading at once: with [`PART`], the most an upload holds in memory.
const PARTS_IN_FLIGHT: usize = 2;

#[derive(Debug, thiserror::Error)]
#[error("export store: {0}")]
pub struct StoreFailure(#[from] object_store::Error);

/// The export store.
#[derive(Clone)]
pub struct ExportStore {
    store: Arc<dyn ObjectStore>,
}

impl std::fmt::Debug for ExportStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ExportStore({})", self.store)
    }
}

/// Where a run's file is kept: by tenant, then run.
pub fn key(tenant: TenantId, run: Uuid, format: Format) -> String {
    format!("tenants/{tenant}/runs/{run}.{}", format.as_str())
}

impl ExportStore {
    /// Files under `directory` (created if missing).
    pub fn local(directory: &std::path::Path) -> Result<Self, StoreFailure> {
        std::fs::create_dir_all(directory).map_err(|error| object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(error),
        })?;
        Ok(ExportStore {
            store: Arc::new(object_store::local::LocalFileSystem::new_with_prefix(
                directory,
            )?),
        })
    }

    /// Files in memory: for benchmarks and tests that keep none.
    pub fn in_memory() -> Self {
        ExportStore {
            store: Arc::new(object_store::memory::InMemory::new()),
        }
    }

    /// Any store (an S3-compatible bucket, or `InMemory` in tests).
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        ExportStore { store }
    }

    pub(crate) async fn create(&self, key: &str) -> Result<Upload, StoreFailure> {
        let upload = self.store.put_multipart(&Path::from(key)).await?;
        Ok(Upload {
            writer: Some(WriteMultipart::new_with_chunk_size(upload, PART)),
        })
    }

    /// The file at `key` as a stream of chunks, with its size.
    pub async fn open(
        &self,
        key: &str,
    ) -> Result<(u64, BoxStream<'static, Result<Bytes, StoreFailure>>), StoreFailure> {
        let found = self.store.get(&Path::from(key)).await?;
        let size = found.meta.size;
        Ok((
            size,
            found.into_stream().map_err(StoreFailure::from).boxed(),
        ))
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreFailure> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}

/// A file being written.
pub(crate) struct Upload {
    writer: Option<WriteMultipart>,
}

impl Upload {
    pub(crate) async fn write(&mut self, chunk: Vec<u8>) -> Result<(), StoreFailure> {
        if let Some(writer) = &mut self.writer {
            writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
            writer.put(Bytes::from(chunk));
        }
        Ok(())
    }

    pub(crate) async fn finish(&mut self) -> Result<(), StoreFailure> {
        if let Some(writer) = self.writer.take() {
            writer.finish().await?;
        }
        Ok(())
    }

    /// Drops what was written: nothing is published.
    pub(crate) async fn abort(&mut self) {
        if let Some(writer) = self.writer.take()
            && let Err(error) = writer.abort().await
        {
            tracing::warn!(%error, "an aborted report upload left parts behind");
        }
    }
}
