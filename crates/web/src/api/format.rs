//! How the API writes values as text: ids read from a path, and times in answers (RFC 3339).

use axum::http::StatusCode;
use serde_json::json;

use super::error::ApiError;

/// An id from a path parameter; `400 invalid` naming `what` when it is not a UUID.
pub(super) fn parse_id<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, ApiError> {
    text.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("{what} must be a UUID"),
        )
        .with_details(json!({ "parameter": what }))
    })
}

pub(super) fn rfc3339(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
