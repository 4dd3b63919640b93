//! `tracer serve`'s HTTP side: `/metrics` for Prometheus (OpenMetrics when asked for),
//! `/healthz`, `/report` (`tracer report`'s page of the flight recorder's history), and (with
//! `--debug-summary`) `/debug/summary` with the last NDJSON summary of every tool; over TLS and
//! behind basic auth with `--web-config`.
//!
//! Whoever reaches the port gets no more than a bounded share of the agent: connections are
//! capped, a client has [`HEADER_TIMEOUT`] to send its request's headers, and a connection is
//! closed [`CONNECTION_LIFETIME`] after it opened (after the response in flight).

use std::{
    cell::RefCell, collections::BTreeMap, convert::Infallible, rc::Rc, sync::Arc, time::Duration,
};

use anyhow::Result;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::Semaphore,
    time::timeout,
};

use super::web_config::WebConfig;
use crate::metrics::Metrics;

/// Connections served at once; more wait in the listen queue. Above the 200 scrapers a test
/// runs at once, far below what would press on the agent's memory.
pub const MAX_CONNECTIONS: usize = 256;
/// Time to send a request's headers (and to start the next one on a kept-alive connection).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection's life, and the grace its last response gets after it.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
const LAST_RESPONSE_GRACE: Duration = Duration::from_secs(10);
/// Read buffer per connection: a scraper's request is well under 1 KiB.
const READ_BUFFER: usize = 16 << 10;

/// What the HTTP side shows, kept up to date by the serving loop.
pub struct State {
    pub metrics: Metrics,
    /// The last summary each tool printed (NDJSON).
    pub summaries: BTreeMap<&'static str, Bytes>,
    pub health: Health,
    /// The flight recorder, whose history `/report` draws.
    pub recorder: super::recorder::Recorder,
}

#[derive(Serialize)]
pub struct Health {
    pub attached: Vec<&'static str>,
    /// Tools that could not start, and why.
    pub failed: BTreeMap<&'static str, String>,
}

/// Who may see what.
pub struct Access {
    pub web_config: Option<WebConfig>,
    /// `/debug/summary` holds query texts: served only when asked for.
    pub debug_summary: bool,
}

/// Serves HTTP on `listener` until an error.
pub async fn serve(
    listener: std::net::TcpListener,
    state: Rc<RefCell<State>>,
    access: Access,
) -> Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let Access {
        web_config,
        debug_summary,
    } = access;
    let mut web_config = web_config.map(Rc::new);
    loop {
        let slot = slots.clone().acquire_owned().await?;
        let (stream, _) = listener.accept().await?;
        if let Some(web) = &mut web_config {
            reload(web);
        }
        let web = web_config.clone();
        let state = state.clone();
        tokio::task::spawn_local(async move {
            let _slot = slot;
            let tls = web.as_ref().and_then(|web| web.tls.clone());
            let site = Site {
                state,
                web,
                debug_summary,
            };
            match tls {
                None => connection(stream, site).await,
                Some(tls) => {
                    let handshake = tokio_rustls::TlsAcceptor::from(tls).accept(stream);
                    // A failed or stalled handshake is the client's business.
                    if let Ok(Ok(stream)) = timeout(HANDSHAKE_TIMEOUT, handshake).await {
                        connection(stream, site).await
                    }
                }
            }
        });
    }
}

/// Takes the web config's files as they are now, if they changed and can be served.
fn reload(web: &mut Rc<WebConfig>) {
    match web.refresh() {
        None => {}
        Some(Ok(fresh)) => {
            eprintln!("tracer: serve: --web-config reloaded");
            *web = Rc::new(fresh);
        }
        Some(Err(err)) => eprintln!("tracer: serve: keeps its web config: {err:#}"),
    }
}

/// What one connection answers from.
#[derive(Clone)]
struct Site {
    state: Rc<RefCell<State>>,
    web: Option<Rc<WebConfig>>,
    debug_summary: bool,
}

async fn connection(stream: impl AsyncRead + AsyncWrite + Unpin + 'static, site: Site) {
    let service = service_fn(move |request| {
        let site = site.clone();
        async move { Ok::<_, Infallible>(site.answer(request).await) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(READ_BUFFER)
        .serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    // A client that goes away mid-request is its own business.
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = tokio::time::sleep(CONNECTION_LIFETIME) => connection.as_mut().graceful_shutdown(),
    }
    let _ = timeout(LAST_RESPONSE_GRACE, connection).await;
}

impl Site {
    async fn answer(&self, request: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        // The kubelet's probes carry no credentials; health names tools, not workloads.
        if let Some(web) = &self.web
            && web.needs_auth()
            && request.uri().path() != "/healthz"
            && !authorized(web, &request).await
        {
            let mut response = reply(StatusCode::UNAUTHORIZED, "text/plain", "Unauthorized\n");
            let challenge = hyper::header::HeaderValue::from_static("Basic realm=\"tracer\"");
            response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
            return response;
        }
        if request.method() == Method::GET && request.uri().path() == "/report" {
            return self.report().await;
        }
        respond(&request, &self.state.borrow(), self.debug_summary)
    }

    /// `tracer report`'s page of the flight recorder's history, drawn off the thread that
    /// drains the kernel's events.
    async fn report(&self) -> Response<Full<Bytes>> {
        let (history, keep) = {
            let state = self.state.borrow();
            (state.recorder.history(), state.recorder.keep())
        };
        let page = tokio::task::spawn_blocking(move || {
            let ndjson: Vec<u8> = history.concat();
            let title = format!("tracer serve, the last {} s", keep.as_secs());
            crate::report::render(&[("history".into(), &ndjson)], &title)
        })
        .await;
        match page {
            Ok(Ok(page)) => reply(StatusCode::OK, "text/html; charset=utf-8", page),
            Ok(Err(err)) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("no report yet: {err:#}\n"),
            ),
            Err(err) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("{err}\n"),
            ),
        }
    }
}

/// Whether the request's basic-auth credentials are a user's, checked once per credentials
/// (bcrypt is slow on purpose: its check runs off the thread that drains the kernel's events).
async fn authorized(web: &WebConfig, request: &Request<hyper::body::Incoming>) -> bool {
    let header = request.headers().get(AUTHORIZATION);
    let Some(credentials) = header.and_then(|h| web.credentials(h.as_bytes())) else {
        return false;
    };
    if web.accepted_before(&credentials) {
        return true;
    }
    let _turn = web.checking.lock().await;
    if web.accepted_before(&credentials) {
        return true;
    }
    let checked = tokio::task::spawn_blocking(move || (credentials.verify(), credentials)).await;
    match checked {
        Ok((true, credentials)) => {
            web.accept(credentials);
            true
        }
        _ => false,
    }
}

const OPENMETRICS: &str = "application/openmetrics-text";

fn respond(
    request: &Request<hyper::body::Incoming>,
    state: &State,
    debug_summary: bool,
) -> Response<Full<Bytes>> {
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
        "/debug/summary" if !debug_summary => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not served: start tracer serve with --debug-summary\n",
        ),
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
            "not found: try /metrics, /report or /healthz\n",
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
