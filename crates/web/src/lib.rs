//! The platform's HTTP surface: health (`/healthz`), metrics (`/metrics`) and the JSON API
//! (`/api/v1`, see [`api`]). Later work adds the public site, sign-in and the tenant app here;
//! this is the only crate (besides the edge's own listener) that knows HTTP and HTML.

mod api;

use std::future::Future;
use std::net::SocketAddr;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use store::Database;
use tokio::net::TcpListener;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub database: Database,
    /// Renders the process's metrics; `None` serves no `/metrics`.
    pub metrics: Option<PrometheusHandle>,
}

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .merge(api::routes())
        .with_state(state)
        .layer(axum::middleware::map_response(security_headers))
}

#[derive(Debug, Serialize)]
struct Health {
    status: &'static str,
    database: &'static str,
}

/// 200 when the database answers as both platform roles; 503 otherwise. The body never says
/// why: that goes to the log.
async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    match state.database.check_health().await {
        Ok(()) => (
            StatusCode::OK,
            Json(Health {
                status: "ok",
                database: "ok",
            }),
        ),
        Err(error) => {
            tracing::warn!(error = %error, "health check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(Health {
                    status: "unavailable",
                    database: "unavailable",
                }),
            )
        }
    }
}

/// Prometheus text exposition of the process's metrics (no tenant ids among the labels).
async fn metrics(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Headers every response carries, whatever route produced it.
async fn security_headers(response: Response) -> impl IntoResponse {
    let mut response = response;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// Serves the application on `listener` until `shutdown` completes, then finishes the requests
/// in flight.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
