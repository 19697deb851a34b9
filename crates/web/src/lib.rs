//! The platform's HTTP surface: the public site ([`site`]), sign-in ([`auth`]), the signed-in
//! app ([`app`]), the JSON API (`/api/v1`, see [`api`]), health (`/healthz`) and metrics
//! (`/metrics`, on its own listener or behind a token: [`metrics`]); the only crate (besides the edge's own listener) that knows HTTP and HTML.
//!
//! Every response carries the security headers ([`security_headers`]); every state-changing
//! request of the HTML app passes the anti-forgery guard ([`csrf`]).

pub mod agent_setup;
pub mod alerting;
mod api;
mod app;
mod assets;
pub mod auth;
mod charts;
pub mod client_addr;
mod cookies;
mod csrf;
mod labels;
mod live;
pub mod mail;
mod masking;
pub mod metrics;
pub mod outbound;
mod pages;
mod rules;
mod shell;
mod site;
mod source_activity;
pub mod sso;

pub use live::LiveStreams;
pub use shell::{OPS_PAGES, PAGES as APP_PAGES};

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use store::AppDb;
use tokio::net::TcpListener;

/// Every page a signed-out visitor can open: the site's pages, each document it renders, and
/// the sign-in pages. The browser tests visit each, so a new page is covered when it is listed
/// where it is served.
pub fn public_pages() -> Vec<String> {
    site::PAGES
        .into_iter()
        .map(str::to_owned)
        .chain(site::document_paths())
        .chain(auth::PAGES.into_iter().map(str::to_owned))
        .collect()
}

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub database: AppDb,
    /// `/metrics` on this listener, behind its token; `None` answers 404 there (the metrics
    /// listener serves them, [`metrics::serve`]).
    pub metrics: Option<metrics::TokenMetrics>,
    /// The global console's minimum cohort: no rollup cell of fewer distinct tenants is shown
    /// (at least 2 whatever is configured).
    pub min_cohort: i64,
    /// Single sign-on's sealing keys and IdP client.
    pub sso: sso::Sso,
    /// Sends reset, sign-up and invitation links (and sign-up notices); `None` writes them to the log instead.
    pub mail: Option<Arc<mail::Mailer>>,
    /// The live-update streams open per session (bounded).
    pub live: live::LiveStreams,
    /// The proxies whose `X-Forwarded-For` names the client ([`client_addr`]).
    pub trusted_proxies: client_addr::TrustedProxies,
    /// Where agents connect: the connector wizard prints it.
    pub agents: agent_setup::AgentEndpoint,
    /// Seals alert webhooks' signing secrets ([`alerting::channel_secrets`]).
    pub alert_secrets: Arc<store::secret_box::SecretBox>,
    /// Where report runs' files are kept; downloads are streamed from it.
    pub exports: reports::ExportStore,
}

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .merge(api::routes())
        .merge(site::routes())
        .merge(auth::routes())
        .merge(sso::routes())
        .merge(app::routes())
        .merge(live::routes())
        .merge(assets::routes())
        .fallback(not_found)
        .with_state(state)
        .layer(axum::middleware::from_fn(csrf::guard))
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

/// Prometheus text exposition of the process's metrics, to the metrics token only.
async fn metrics(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    metrics::on_web_listener(state.metrics.as_ref(), &headers)
}

/// The content security policy of every response: scripts and styles only from this origin
/// (no inline script, no `eval`), no plugins, no framing, forms only to this origin.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

/// Headers every response carries, whatever route produced it (ASVS 3.4.x).
async fn security_headers(response: Response) -> impl IntoResponse {
    let mut response = response;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=31536000; includeSubDomains",
        ),
        (
            header::HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (
            header::HeaderName::from_static("permissions-policy"),
            "camera=(), microphone=(), geolocation=(), payment=()",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    // Pages and API answers are never cached; the static assets say otherwise themselves.
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Unknown paths: a JSON error under `/api/`, the 404 page elsewhere, inside the app's shell for
/// a signed-in account under `/app/`.
async fn not_found(State(state): State<AppState>, request: axum::extract::Request) -> Response {
    let (mut parts, _) = request.into_parts();
    if parts.uri.path().starts_with("/api/") {
        return (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({
                "error": { "code": "not_found", "message": "no such endpoint", "details": {} }
            })),
        )
            .into_response();
    }
    let visitor = match auth::session::Visitor::from_request_parts(&mut parts, &state).await {
        Ok(visitor) => visitor,
        Err(response) => return response,
    };
    if visitor.session.is_some() && parts.uri.path().starts_with("/app/") {
        return match auth::session::AppUser::from_request_parts(&mut parts, &state).await {
            Ok(user) => shell::app_error_page(&user, pages::PageError::NotFound),
            Err(response) => response,
        };
    }
    pages::PageError::NotFound.into_page(&visitor.chrome(""))
}

/// Serves the application on `listener` until `shutdown` completes, then finishes the requests
/// in flight.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Live streams never end by themselves: end them when shutting down, so the server can
    // finish the connections it waits for.
    let live = state.live.clone();
    let shutdown = async move {
        shutdown.await;
        live.close_all();
    };
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
