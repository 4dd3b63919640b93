//! `tracer serve`'s HTTP side: `/metrics` for Prometheus (OpenMetrics when asked for),
//! `/healthz`, and `/debug/summary` with the last NDJSON summary of every tool.

use std::{cell::RefCell, collections::BTreeMap, rc::Rc};

use anyhow::Result;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    header::{ACCEPT, CONTENT_TYPE},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use serde::Serialize;

use crate::metrics::Metrics;

/// What the HTTP side shows, kept up to date by the serving loop.
pub struct State {
    pub metrics: Metrics,
    /// The last summary each tool printed (NDJSON).
    pub summaries: BTreeMap<&'static str, Bytes>,
    pub health: Health,
}

#[derive(Serialize)]
pub struct Health {
    pub attached: Vec<&'static str>,
    /// Tools that could not start, and why.
    pub failed: BTreeMap<&'static str, String>,
}

/// Serves HTTP on `listener` until an error.
pub async fn serve(listener: std::net::TcpListener, state: Rc<RefCell<State>>) -> Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    loop {
        let (stream, _) = listener.accept().await?;
        let state = state.clone();
        tokio::task::spawn_local(async move {
            let service = service_fn(move |request| {
                let response = respond(&request, &state.borrow());
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            // A client that goes away mid-request is its own business.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

const OPENMETRICS: &str = "application/openmetrics-text";

fn respond(request: &Request<hyper::body::Incoming>, state: &State) -> Response<Full<Bytes>> {
    if request.method() != Method::GET {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n");
    }
    match request.uri().path() {
        "/metrics" => {
            let wants_openmetrics = request
                .headers()
                .get(ACCEPT)
                .and_then(|accept| accept.to_str().ok())
                .is_some_and(|accept| accept.contains(OPENMETRICS));
            if wants_openmetrics {
                let kind = "application/openmetrics-text; version=1.0.0; charset=utf-8";
                reply(StatusCode::OK, kind, state.metrics.openmetrics())
            } else {
                let kind = "text/plain; version=0.0.4; charset=utf-8";
                reply(StatusCode::OK, kind, state.metrics.prometheus_text())
            }
        }
        "/healthz" => {
            let status = if state.health.attached.is_empty() {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            let body = serde_json::to_string(&state.health).unwrap_or_default() + "\n";
            reply(status, "application/json", body)
        }
        "/debug/summary" => {
            let body: Vec<u8> = state
                .summaries
                .values()
                .flat_map(|b| b.iter().copied())
                .collect();
            reply(StatusCode::OK, "application/x-ndjson", body)
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /healthz or /debug/summary\n",
        ),
    }
}

fn reply(status: StatusCode, kind: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    if let Ok(kind) = kind.parse() {
        response.headers_mut().insert(CONTENT_TYPE, kind);
    }
    response
}
