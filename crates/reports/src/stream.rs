//! A report streamed straight into an HTTP response instead of a stored file: for a download a
//! person starts and waits for, such as the audit page's CSV export. The rows are read in the
//! caller's own transaction (its role, under the tenant's row-level security), encoded as they
//! come and handed to the response in chunks through a small bounded channel, so a log of any
//! length holds a few chunks in memory and a reader who stops reading stops the query.

use bytes::Bytes;
use futures_util::stream::BoxStream;
use store::reports::{Cell, ReportInput, RowSink};
use store::{StoreError, TenantTx};
use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::encode::{EncodeError, Encoder};

/// Bytes gathered before a chunk goes to the response.
const STREAM_CHUNK: usize = 64 << 10;
/// Chunks in flight between the query and the response.
const IN_FLIGHT: usize = 4;

#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error("the reader went away")]
    Closed,
}

struct ChannelSink {
    encoder: Encoder,
    sender: mpsc::Sender<Result<Bytes, std::io::Error>>,
}

async fn send(
    sender: &mpsc::Sender<Result<Bytes, std::io::Error>>,
    bytes: Vec<u8>,
) -> Result<(), StreamError> {
    if bytes.is_empty() {
        return Ok(());
    }
    sender
        .send(Ok(Bytes::from(bytes)))
        .await
        .map_err(|_| StreamError::Closed)
}

impl RowSink for ChannelSink {
    type Error = StreamError;

    async fn row(&mut self, cells: &[Cell]) -> Result<(), StreamError> {
        self.encoder.row(cells)?;
        if self.encoder.pending() >= STREAM_CHUNK {
            let chunk = self.encoder.take()?;
            send(&self.sender, chunk).await?;
        }
        Ok(())
    }
}

/// Streams `definition`'s rows at `now`, read in `tx`, encoded in its format. The definition is
/// checked first (the error names the parameter); a failure after the first bytes ends the
/// stream with an error, so the reader's download fails rather than looking complete. `what`
/// names the export in the log.
pub fn stream(
    mut tx: TenantTx,
    definition: ReportInput,
    now: OffsetDateTime,
    what: &'static str,
) -> Result<BoxStream<'static, Result<Bytes, std::io::Error>>, StoreError> {
    definition.validate()?;
    let encoder = Encoder::new(definition.format, &definition.selected_columns())
        .map_err(|_| StoreError::Invalid("the export could not be encoded".into()))?;
    let (sender, receiver) = mpsc::channel(IN_FLIGHT);
    tokio::spawn(async move {
        let mut sink = ChannelSink {
            encoder,
            sender: sender.clone(),
        };
        let exported = store::reports::export(&mut tx, &definition, now, &mut sink).await;
        let outcome = match exported {
            Ok(rows) => match sink.encoder.finish() {
                Ok(last) => send(&sender, last).await.map(|()| rows),
                Err(error) => Err(error.into()),
            },
            Err(error) => Err(error),
        };
        // Nothing was written: the transaction only read.
        let _ = tx.rollback().await;
        match outcome {
            Ok(rows) => tracing::debug!(what, rows, "export streamed"),
            Err(StreamError::Closed) => tracing::info!(what, "an export's reader went away"),
            Err(error) => {
                tracing::warn!(what, %error, "an export failed while streaming");
                let _ = sender
                    .send(Err(std::io::Error::other("the export failed")))
                    .await;
            }
        }
    });
    Ok(Box::pin(futures_util::stream::unfold(
        receiver,
        |mut receiver| async move { receiver.recv().await.map(|item| (item, receiver)) },
    )))
}
