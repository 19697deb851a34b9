//! The `Tributary-Protocol` header: which major version of the contract a request speaks.

use crate::{BatchError, ReasonCode};

/// The request header carrying the protocol's major version (HTTP header names are
/// case-insensitive; it is written `Tributary-Protocol` in documentation).
pub const PROTOCOL_HEADER: &str = "tributary-protocol";

/// The major version this build speaks and its agent sends.
pub const CURRENT_VERSION: u16 = 1;

/// Every major version this edge accepts, listed back to an agent that sent another one.
pub const SUPPORTED_VERSIONS: &[u16] = &[1];

/// Whether the `Tributary-Protocol` header names a major version this edge speaks (see
/// [`parse_version`]).
pub fn check_version(header: Option<&str>) -> Result<(), BatchError> {
    parse_version(header).map(|_| ())
}

/// Reads the `Tributary-Protocol` header. A missing header means version 1 (agents that
/// predate the header); any other value than a supported major version, written as plain
/// decimal digits, is `unsupported_version`. A header value that is not visible ASCII should be
/// passed as `Some("")`, which is refused.
pub fn parse_version(header: Option<&str>) -> Result<u16, BatchError> {
    let Some(text) = header else {
        return Ok(1);
    };
    let text = text.trim_matches([' ', '\t']);
    let canonical = !text.is_empty()
        && text.len() <= 5
        && text.bytes().all(|byte| byte.is_ascii_digit())
        && !(text.len() > 1 && text.starts_with('0'));
    let version = canonical.then(|| text.parse::<u16>().ok()).flatten();
    match version {
        Some(version) if SUPPORTED_VERSIONS.contains(&version) => Ok(version),
        _ => Err(unsupported_version()),
    }
}

fn unsupported_version() -> BatchError {
    let supported: Vec<String> = SUPPORTED_VERSIONS.iter().map(u16::to_string).collect();
    BatchError::new(
        ReasonCode::UnsupportedVersion,
        format!(
            "the Tributary-Protocol header must name a supported major version; this edge supports: {}",
            supported.join(", ")
        ),
    )
}
