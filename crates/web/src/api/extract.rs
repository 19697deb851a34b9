//! The API's extractors: JSON bodies (held to their documented schema), query strings and path
//! parameters. Every way a request can fail to be read — no body, another content type, JSON
//! that does not parse or does not fit, a query or path that does not decode, a method the path
//! does not serve — answers the API's JSON error with `details` naming what was wrong.

use std::sync::OnceLock;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::conformance::{self, Violation};
use super::error::ApiError;

/// A request body type: its schema's name in the OpenAPI document, which the body is held to.
pub(super) trait RequestBody: DeserializeOwned {
    /// The body's schema, `#/components/schemas/{SCHEMA}`.
    const SCHEMA: &'static str;
    /// What the body looks like, for the answer to one that is not JSON of that shape.
    const SHAPE: &'static str;
    /// Whether a request may leave the body out; it is then read as `{}`.
    const OPTIONAL: bool = false;

    /// The answer to a body its schema refuses.
    fn refusal(violation: Violation) -> ApiError {
        refused(StatusCode::UNPROCESSABLE_ENTITY, "invalid", &violation)
    }
}

/// `status` and `code` for a body that does not fit its schema, naming the field.
pub(super) fn refused(status: StatusCode, code: &'static str, violation: &Violation) -> ApiError {
    let field = violation.field();
    let message = if field.is_empty() {
        format!("the body {}", violation.problem)
    } else {
        format!(
            "{} {}",
            violation.pointer.trim_start_matches('/'),
            violation.problem
        )
    };
    ApiError::new(status, code, message).with_details(json!({
        "field": field,
        "pointer": violation.pointer,
        "problem": violation.problem,
    }))
}

/// The document's schemas, which bodies are held to.
fn components() -> &'static Map<String, Value> {
    static COMPONENTS: OnceLock<Map<String, Value>> = OnceLock::new();
    COMPONENTS.get_or_init(|| {
        super::openapi::document()["components"]["schemas"]
            .as_object()
            .cloned()
            .expect("the document has schemas")
    })
}

/// Whether a `Content-Type` names JSON (`application/json` or `application/*+json`).
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|subtype| subtype.ends_with("+json"))
}

/// Reads `bytes` as the body `T`: JSON of its shape (else 400 `invalid_json`), fitting its
/// schema (else [`RequestBody::refusal`]).
pub(super) fn parse_body<T: RequestBody>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes: &[u8] = if bytes.is_empty() && T::OPTIONAL {
        b"{}"
    } else {
        bytes
    };
    let invalid = |error: serde_json::Error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body must be {}", T::SHAPE),
        )
        .with_details(json!({ "line": error.line(), "column": error.column() }))
    };
    let mut value: Value = serde_json::from_slice(bytes).map_err(invalid)?;
    let body: T = match serde_json::from_slice(bytes) {
        Ok(body) => body,
        // JSON Schema counts 90.0 as the integer 90, and so does the API; serde does not.
        Err(error)
            if error
                .to_string()
                .starts_with("invalid type: floating point") =>
        {
            if !integral_floats_to_integers(&mut value) {
                return Err(invalid(error));
            }
            serde_json::from_value(value.clone()).map_err(|_| invalid(error))?
        }
        Err(error) => return Err(invalid(error)),
    };
    let schema = json!({ "$ref": format!("#/components/schemas/{}", T::SCHEMA) });
    conformance::check(&value, &schema, components()).map_err(T::refusal)?;
    Ok(body)
}

/// Rewrites every number with an integral value written as a fraction (`90.0`) as that
/// integer; whether there was any.
fn integral_floats_to_integers(value: &mut Value) -> bool {
    match value {
        Value::Number(number) if !number.is_i64() && !number.is_u64() => {
            let float = number.as_f64().unwrap_or(f64::NAN);
            // Within ±2^53 every integer is exact as a float.
            if float.fract() == 0.0 && float.abs() <= 9_007_199_254_740_992.0 {
                *value = Value::from(float as i64);
                true
            } else {
                false
            }
        }
        Value::Array(items) => rewrite_each(items.iter_mut()),
        Value::Object(members) => rewrite_each(members.values_mut()),
        _ => false,
    }
}

/// [`integral_floats_to_integers`] on every value (not stopping at the first rewritten).
fn rewrite_each<'a>(values: impl Iterator<Item = &'a mut Value>) -> bool {
    let mut any = false;
    for value in values {
        any |= integral_floats_to_integers(value);
    }
    any
}

/// A JSON request body of type `T`.
pub(super) struct Body<T>(pub T);

impl<S: Send + Sync, T: RequestBody> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|value| value.to_str().unwrap_or("?").to_owned());
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(body_unreadable)?;
        if bytes.is_empty() && !T::OPTIONAL {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "missing_body",
                format!("this call needs a JSON body: {}", T::SHAPE),
            )
            .with_details(json!({ "body": "required" })));
        }
        if !bytes.is_empty() && !content_type.as_deref().is_some_and(is_json) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON, with `Content-Type: application/json`",
            )
            .with_details(json!({ "header": "Content-Type", "expected": "application/json" })));
        }
        parse_body(&bytes).map(Body)
    }
}

fn body_unreadable(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "the body is larger than this call takes",
        )
        .with_details(json!({ "body": "too large" }))
    } else {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "unreadable_body",
            "the body could not be read",
        )
        .with_details(json!({ "body": "unreadable" }))
    }
}

/// Whether percent-encoded text decodes to U+0000, which no parameter may hold (PostgreSQL can
/// neither store nor compare it).
fn holds_nul(encoded: &str) -> bool {
    encoded.to_ascii_lowercase().contains("%00")
}

/// The reason a serde error gives, without the framework's preamble.
fn reason(text: String) -> String {
    match text.split_once(": ") {
        Some((_, reason)) => reason.to_owned(),
        None => text,
    }
}

/// A query string read as `T`.
pub(super) struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        if holds_nul(parts.uri.query().unwrap_or_default()) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                "the query string holds U+0000",
            )
            .with_details(json!({ "query": "U+0000" })));
        }
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Query(value))
            .map_err(|rejection: QueryRejection| {
                let reason = reason(rejection.body_text());
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    format!("the query string is not valid: {reason}"),
                )
                .with_details(json!({ "query": reason }))
            })
    }
}

/// Path parameters read as `T`.
pub(super) struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        if holds_nul(parts.uri.path()) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_path_parameter",
                "the path holds U+0000",
            )
            .with_details(json!({ "path": "U+0000" })));
        }
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|rejection: PathRejection| {
                let reason = reason(rejection.body_text());
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_path_parameter",
                    format!("the path is not valid: {reason}"),
                )
                .with_details(json!({ "path": reason }))
            })
    }
}

/// A method the path does not serve: 405, with the methods it does in `Allow` (set by the
/// router).
pub(super) async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("this path does not take {method}; `Allow` lists what it takes"),
    )
    .with_details(json!({ "method": method.as_str() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        for (given, json) in [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("Application/JSON", true),
            ("application/merge-patch+json", true),
            ("application/x-www-form-urlencoded", false),
            ("text/plain", false),
            ("", false),
        ] {
            assert_eq!(is_json(given), json, "{given}");
        }
    }
}
