//! The optional health endpoint, on a loopback address only: `/healthz` (200 while the agent
//! runs without a standing error, 503 otherwise, with the status as JSON) and `/metrics`
//! (Prometheus text).

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::Context;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use crate::status::{StatusCell, metrics_text};

/// Binds `listen` and serves until `stop`.
pub async fn serve(
    listen: SocketAddr,
    status: StatusCell,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        listen.ip().is_loopback(),
        "the health endpoint listens on loopback addresses only"
    );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the health endpoint to {listen}"))?;
    tracing::info!(%listen, "health and metrics endpoint listening");
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stop.changed() => return,
            };
            let Ok((stream, _)) = accepted else { continue };
            let status = status.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| respond(request, status.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(())
}

async fn respond(
    request: Request<Incoming>,
    status: StatusCell,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let current = status.get();
    let (code, content_type, body) = match request.uri().path() {
        "/healthz" => (
            if current.last_error.is_none() && current.state != "failed" {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            },
            "application/json",
            serde_json::to_string_pretty(&current).unwrap_or_default(),
        ),
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metrics_text(&current),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = code;
    if let Ok(value) = content_type.parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    Ok(response)
}
