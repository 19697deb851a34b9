//! The API's one error, [`ApiError`]: a status and `{"error": {"code", "message", "details"}}`,
//! what the store's errors become, and the answer to a caller without credentials.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use store::StoreError;

/// An error as `{"error": {"code", "message", "details"}}`; never SQL, internals or customer
/// values. `details` is an object, empty unless there is something specific to add (which field
/// was wrong).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: serde_json::Value,
    /// Seconds for `Retry-After` (with a 429).
    retry_after: Option<&'static str>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: json!({}),
            retry_after: None,
        }
    }

    pub(super) fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    /// Says when to try again (`Retry-After`, in seconds).
    pub(super) fn with_retry_after(mut self, seconds: &'static str) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub(super) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// The body this error answers with, for unit tests of handlers' checks.
    #[cfg(test)]
    pub(super) fn body(&self) -> serde_json::Value {
        json!({ "error": { "code": self.code, "message": self.message, "details": self.details } })
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(what) => Self::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("{what} not found"),
            ),
            StoreError::AlreadyExists(what) => Self::new(
                StatusCode::CONFLICT,
                "already_exists",
                format!("{what} already exists"),
            ),
            StoreError::Forbidden(why) => Self::forbidden(why),
            StoreError::Invalid(why) => Self::new(StatusCode::BAD_REQUEST, "invalid", why),
            StoreError::InvalidParameter { parameter, message } => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_parameter", message)
                    .with_details(json!({ "parameter": parameter }))
            }
            error if error.is_access_denied() => Self::forbidden("your role does not allow this"),
            error => {
                tracing::error!(%error, "API request failed");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "the platform could not take this request now; retry later",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let unauthenticated = self.status == StatusCode::UNAUTHORIZED;
        let body = json!({
            "error": { "code": self.code, "message": self.message, "details": self.details }
        });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(seconds));
        }
        if unauthenticated {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// `401`, with the `WWW-Authenticate: Bearer` challenge [`ApiError`]'s response adds to it.
pub(super) fn unauthenticated() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        "send a valid API token as `Authorization: Bearer <token>`, or sign in",
    )
}
