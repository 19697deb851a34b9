//! Static assets compiled into the binary: the one stylesheet, the icon (without one, every
//! browser asks for `/favicon.ico` and logs the 404 in its console), htmx and its server-sent
//! events extension, vendored from the npm registry at the versions pinned in
//! `assets/package-lock.json` (`scripts/vendor-web-assets`).
//! Nothing is loaded from another host.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::AppState;

pub const CSS: &str = include_str!("../assets/tributary.css");
pub const ICON: &str = include_str!("../assets/favicon.svg");
pub const HTMX: &str = include_str!("../assets/vendor/htmx-2.0.11.min.js");
pub const HTMX_SSE: &str = include_str!("../assets/vendor/htmx-ext-sse-2.2.4.min.js");

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/assets/tributary.css",
            get(|| async { asset("text/css; charset=utf-8", CSS) }),
        )
        .route(
            "/assets/favicon.svg",
            get(|| async { asset("image/svg+xml", ICON) }),
        )
        .route(
            "/assets/htmx-2.0.11.min.js",
            get(|| async { asset("text/javascript; charset=utf-8", HTMX) }),
        )
        .route(
            "/assets/htmx-ext-sse-2.2.4.min.js",
            get(|| async { asset("text/javascript; charset=utf-8", HTMX_SSE) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
}
