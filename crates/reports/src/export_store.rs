//! Where report files are kept: any `object_store` store, a local directory by default or an
//! S3-compatible bucket ([`ExportStore::s3`]: AWS S3, MinIO, Ceph, R2 and the like). A file is
//! written as a multipart upload that becomes visible only when it completes, and read back as a
//! stream of chunks.

use std::sync::Arc;

use bytes::Bytes;
use domain::TenantId;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use secrecy::ExposeSecret;
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

/// An S3-compatible bucket for report files.
#[derive(Clone)]
pub struct S3Location {
    pub bucket: String,
    /// Keys begin with it (`tributary/exports`), if given.
    pub prefix: Option<String>,
    pub region: String,
    /// A self-hosted store's address (`https://minio.internal:9000`); AWS's by default.
    pub endpoint: Option<String>,
    pub access_key_id: String,
    pub secret_access_key: secrecy::SecretString,
}

impl std::fmt::Debug for S3Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Location")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl S3Location {
    /// `s3://bucket[/prefix]` with the rest given apart.
    pub fn parse(
        url: &str,
        region: Option<String>,
        endpoint: Option<String>,
        access_key_id: String,
        secret_access_key: secrecy::SecretString,
    ) -> Result<Self, String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| "an S3 export store is s3://bucket[/prefix]".to_owned())?;
        let (bucket, prefix) = match rest.split_once('/') {
            Some((bucket, prefix)) => (bucket, Some(prefix.trim_matches('/').to_owned())),
            None => (rest, None),
        };
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !valid_bucket {
            return Err("a bucket name is 3 to 63 of a-z, 0-9, '-' and '.'".to_owned());
        }
        if let Some(endpoint) = &endpoint
            && !(endpoint.starts_with("https://") || endpoint.starts_with("http://"))
        {
            return Err("the S3 endpoint is an http(s) URL".to_owned());
        }
        Ok(S3Location {
            bucket: bucket.to_owned(),
            prefix: prefix.filter(|prefix| !prefix.is_empty()),
            region: region.unwrap_or_else(|| "us-east-1".to_owned()),
            endpoint,
            access_key_id,
            secret_access_key,
        })
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

    /// Files in an S3-compatible bucket, under `location.prefix`. The credentials are the
    /// bucket's (an access key with put, get and delete on the prefix); they are never logged.
    pub fn s3(location: &S3Location) -> Result<Self, StoreFailure> {
        let mut builder = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(&location.bucket)
            .with_region(&location.region)
            .with_access_key_id(&location.access_key_id)
            .with_secret_access_key(location.secret_access_key.expose_secret());
        if let Some(endpoint) = &location.endpoint {
            // A self-hosted store (MinIO, Ceph) answers at its own address, with the bucket in
            // the path; plain http only when its address says so.
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        let store: Arc<dyn ObjectStore> = Arc::new(builder.build()?);
        let store = match location
            .prefix
            .as_deref()
            .map(|prefix| prefix.trim_matches('/'))
        {
            Some(prefix) if !prefix.is_empty() => Arc::new(object_store::prefix::PrefixStore::new(
                store,
                Path::from(prefix),
            )) as Arc<dyn ObjectStore>,
            _ => store,
        };
        Ok(ExportStore { store })
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
