//! The agent's side: a batch as the bytes it sends.

use crate::encoding::compress;
use crate::{EncodeError, Encoding, EventBatch};

/// The body of `POST /v1/events` for `batch`, compressed with `encoding` (send
/// [`Encoding::header_value`] as `Content-Encoding` and `Tributary-Protocol: 1`). Fails only
/// for an `event_time` that RFC 3339 cannot express (a year outside 0000-9999, an offset with
/// seconds).
pub fn encode_batch(batch: &EventBatch, encoding: Encoding) -> Result<Vec<u8>, EncodeError> {
    let json = serde_json::to_vec(batch).map_err(EncodeError::Serialize)?;
    compress(json, encoding)
}
