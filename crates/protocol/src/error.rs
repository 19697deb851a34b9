//! The errors of this crate: a refused batch, and an agent-side encoding failure.

use serde::{Deserialize, Serialize};

use crate::ReasonCode;

/// The edge refuses the whole batch. The message names the field and the rule that failed and
/// never repeats a value from the payload, so it is safe to log and to send back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct BatchError {
    pub code: ReasonCode,
    pub message: String,
}

impl BatchError {
    pub fn new(code: ReasonCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The HTTP status the edge answers with.
    pub fn http_status(&self) -> u16 {
        self.code.http_status()
    }

    /// The response body for this refusal.
    pub fn to_error_body(&self) -> ErrorBody {
        let supported_versions = (self.code == ReasonCode::UnsupportedVersion)
            .then(|| crate::SUPPORTED_VERSIONS.to_vec());
        ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message.clone(),
                supported_versions,
            },
        }
    }
}

/// The body of every non-2xx answer of the ingestion API:
/// `{"error": {"code": "<reason_code>", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The inside of an [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: ReasonCode,
    pub message: String,
    /// With `unsupported_version`: the major versions this edge speaks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supported_versions: Option<Vec<u16>>,
}

impl From<&BatchError> for ErrorBody {
    fn from(error: &BatchError) -> Self {
        error.to_error_body()
    }
}

/// The agent could not encode a batch.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// A value cannot be written as the contract requires (an `event_time` outside years
    /// 0000-9999 or with a sub-minute offset cannot be written as RFC 3339).
    #[error("batch cannot be serialized")]
    Serialize(#[source] serde_json::Error),
    #[error("batch cannot be compressed")]
    Compress(#[source] std::io::Error),
}
