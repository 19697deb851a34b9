//! `/metrics`, the Prometheus text exposition of the process's metrics, never public: served on
//! its own listener ([`serve`], loopback by default), and on the web app's listener only behind
//! a bearer token of at least [`MIN_TOKEN_CHARS`] characters ([`TokenMetrics`]). No metric is
//! labelled with a tenant or a source: the labels are statuses, reason codes, consumers and
//! outcomes (docs/operations.md).

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

/// The shortest token `/metrics` on the web listener is served behind.
pub const MIN_TOKEN_CHARS: usize = 24;

/// `/metrics` on the web app's listener, answered only to `Authorization: Bearer <token>`.
#[derive(Clone)]
pub struct TokenMetrics {
    handle: PrometheusHandle,
    /// SHA-256 of the token: compared digest to digest, so the comparison's time says nothing
    /// about how much of a guess was right.
    token_digest: Arc<[u8; 32]>,
}

impl std::fmt::Debug for TokenMetrics {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("TokenMetrics { .. }")
    }
}

/// A metrics token shorter than [`MIN_TOKEN_CHARS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the metrics token must be at least {MIN_TOKEN_CHARS} characters")]
pub struct TokenTooShort;

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl TokenMetrics {
    pub fn new(handle: PrometheusHandle, token: &SecretString) -> Result<Self, TokenTooShort> {
        let token = token.expose_secret();
        if token.trim().chars().count() < MIN_TOKEN_CHARS {
            return Err(TokenTooShort);
        }
        Ok(Self {
            handle,
            token_digest: Arc::new(digest(token.trim().as_bytes())),
        })
    }

    /// The caller sent `Authorization: Bearer <the token>`.
    fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
        else {
            return false;
        };
        let given = digest(given.trim().as_bytes());
        given
            .iter()
            .zip(self.token_digest.iter())
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
    }
}

fn exposition(handle: &PrometheusHandle) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response()
}

/// `/metrics` on the web listener: 404 unless a token is configured, 401 (with the bearer
/// challenge) unless the request carries it.
pub(crate) fn on_web_listener(metrics: Option<&TokenMetrics>, headers: &HeaderMap) -> Response {
    match metrics {
        None => StatusCode::NOT_FOUND.into_response(),
        Some(metrics) if metrics.admits(headers) => exposition(&metrics.handle),
        Some(_) => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
            "send the metrics token as `Authorization: Bearer <token>`\n",
        )
            .into_response(),
    }
}

/// The metrics listener's application: `/metrics` and nothing else (404 without a recorder:
/// another one was installed in this process).
pub fn router(handle: Option<PrometheusHandle>) -> Router {
    match handle {
        Some(handle) => Router::new()
            .route(
                "/metrics",
                get(|State(handle): State<PrometheusHandle>| async move { exposition(&handle) }),
            )
            .with_state(handle),
        None => Router::new(),
    }
}

/// Serves `/metrics` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    handle: Option<PrometheusHandle>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(handle))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle() -> PrometheusHandle {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .build_recorder()
            .handle()
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        headers
    }

    #[test]
    fn a_short_token_is_refused_and_only_the_token_is_admitted() {
        let short = SecretString::from("a".repeat(MIN_TOKEN_CHARS - 1));
        assert_eq!(
            TokenMetrics::new(handle(), &short).unwrap_err(),
            TokenTooShort
        );
        let token = "t".repeat(MIN_TOKEN_CHARS);
        let metrics = TokenMetrics::new(handle(), &SecretString::from(token.clone())).unwrap();
        assert!(metrics.admits(&bearer(&token)));
        for wrong in [&token[1..], &format!("{token}x"), "", "Basic abc"] {
            assert!(!metrics.admits(&bearer(wrong)), "{wrong}");
        }
        assert!(!metrics.admits(&HeaderMap::new()));
        assert!(!format!("{metrics:?}").contains(&token));
        assert_eq!(
            on_web_listener(Some(&metrics), &HeaderMap::new()).status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            on_web_listener(Some(&metrics), &bearer(&token)).status(),
            StatusCode::OK
        );
        assert_eq!(
            on_web_listener(None, &bearer(&token)).status(),
            StatusCode::NOT_FOUND
        );
    }
}
