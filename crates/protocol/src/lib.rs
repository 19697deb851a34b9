//! The versioned agent <-> edge wire contract: the bodies of `POST /v1/events` and of pairing,
//! the limits the edge holds them to, and the decoding of untrusted bytes into validated
//! events. The contract is written down in `docs/protocol.md`. It also holds the PII masking
//! engine ([`masking`]), which rewrites those events: the edge applies it, the web app previews
//! it, and both must run the same code.
//!
//! Architecture invariant: this is the only crate that defines bytes on the wire. It does no
//! I/O and knows no HTTP framework: the edge passes it header values and body bytes, and maps
//! [`BatchError::http_status`] and [`ErrorBody`] onto its responses.

mod check;
mod decode;
mod encode;
mod encoding;
mod error;
mod limits;
pub mod masking;
mod pairing;
mod reason;
mod status;
mod strict_json;
mod version;
mod wire;

pub use check::{
    CHECK_LEVELS, CheckFinding, CheckReport, MAX_CHECK_BYTES, MAX_CHECK_COLUMNS,
    MAX_CHECK_FINDINGS, MAX_CHECK_TABLES, SourceTable,
};
pub use decode::{DecodedBatch, DecodedEvents, decode_batch};
pub use encode::encode_batch;
pub use encoding::{Encoding, compress, decompress};
pub use error::{BatchError, EncodeError, ErrorBody, ErrorDetail};
pub use limits::{EventTimeWindow, Limits};
pub use pairing::{CertificateResponse, PairRequest, RenewRequest};
pub use reason::ReasonCode;
pub use status::{
    AgentStatus, MAX_NOT_CAPTURED, MAX_STATUS_BYTES, ResyncRequest, SlotHealth, StatusAnswer,
};
pub use strict_json::{JsonPath, PathStep, StrictJsonError, read_event_json};
pub use version::{
    CURRENT_VERSION, PROTOCOL_HEADER, SUPPORTED_VERSIONS, check_version, parse_version,
};
pub use wire::{
    BatchResponse, ChangeEvent, Envelope, EventBatch, EventResult, EventStatus,
    FEATURE_BATCH_TYPES, Op, TableTypes, UnknownOp,
};

#[cfg(test)]
mod tests;
