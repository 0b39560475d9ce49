//! The streamable HTTP transport: a listener that hands `http_path` to the
//! SDK's service, which checks the `Host` header, keeps legacy sessions and
//! serves 2026-07-28 requests one by one.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper_util::rt::{TokioIo, TokioTimer};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::connection::Connection;
use super::server::{HttpLane, ToolServer};
use super::{McpOptions, ServeError};
use crate::host::Host;

type Service = StreamableHttpService<ToolServer, LocalSessionManager>;

/// An HTTP MCP server bound to its address, not yet serving.
pub struct HttpServer {
    listener: TcpListener,
    addr: SocketAddr,
    service: Service,
    lane: Arc<HttpLane>,
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Bind the HTTP MCP server of `host` to `addr` (port 0 picks a free port;
/// [`HttpServer::local_addr`] says which).
pub async fn bind_http(
    host: &Host,
    addr: SocketAddr,
    options: McpOptions,
) -> Result<HttpServer, ServeError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    let options = Arc::new(options);
    let open = Arc::new(watch::Sender::new(0));
    let lane = Arc::new(HttpLane {
        host: host.clone(),
        shared: Connection::open(host, options.clone()),
        options: options.clone(),
        open,
    });
    let config =
        StreamableHttpServerConfig::default().with_allowed_hosts(options.allowed_hosts.clone());
    let factory_lane = lane.clone();
    let service = StreamableHttpService::new(
        move || Ok(ToolServer::for_http(factory_lane.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    Ok(HttpServer {
        listener,
        addr,
        service,
        lane,
    })
}

impl HttpServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL clients connect to.
    pub fn url(&self) -> String {
        format!("http://{}{}", self.addr, self.lane.options.http_path)
    }

    /// Serve until `shutdown` resolves, then end every session (B24) and
    /// wait for them to close, up to the sessions' close bound.
    ///
    /// # Cancel safety
    /// Not cancel safe: resolve `shutdown` to stop gracefully.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Self {
            listener,
            addr,
            service,
            lane,
        } = self;
        tracing::info!(%addr, path = %lane.options.http_path, "serving MCP over HTTP");
        let path: Arc<str> = lane.options.http_path.clone().into();
        let origins: Arc<[String]> = lane.options.allowed_hosts.clone().into();
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                },
            };
            let service = service.clone();
            let path = path.clone();
            let origins = origins.clone();
            tokio::spawn(async move {
                let handler = hyper::service::service_fn(move |request| {
                    let service = service.clone();
                    let path = path.clone();
                    let origins = origins.clone();
                    async move {
                        if let Some(refusal) = refuse(&request, &origins) {
                            return Ok(refusal);
                        }
                        if request.uri().path() == &*path {
                            let delete = request.method() == hyper::Method::DELETE;
                            let mut response = service.handle(request).await;
                            // Ending a session succeeded: say 200, which
                            // clients expect (the SDK answers 202).
                            if delete && response.status() == hyper::StatusCode::ACCEPTED {
                                *response.status_mut() = hyper::StatusCode::OK;
                            }
                            Ok::<_, Infallible>(response)
                        } else {
                            Ok(not_found())
                        }
                    }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), handler)
                    .await
                {
                    tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                }
            });
        }
        // Ends the legacy sessions, whose handlers close their connections.
        service.config.cancellation_token.cancel();
        lane.shared.close().await;
        let bound = lane.options.session.close_timeout + Duration::from_secs(1);
        let mut open = lane.open.subscribe();
        if tokio::time::timeout(bound, open.wait_for(|n| *n == 0))
            .await
            .is_err()
        {
            tracing::warn!("MCP sessions still open at shutdown");
        }
        tracing::info!(%addr, "MCP HTTP server stopped");
    }
}

/// How long a client may take to send a request's header; a client that
/// sends half a header and waits is dropped then.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A request refused before it reaches the MCP service: two `Host`
/// headers (a smuggling attempt), or an `Origin` that is not one of the
/// allowed hosts (a web page trying to reach a local server). Requests
/// without `Origin` come from programs, not browsers, and pass.
fn refuse<B>(
    request: &hyper::Request<B>,
    allowed: &[String],
) -> Option<hyper::Response<BoxBody<Bytes, Infallible>>> {
    let headers = request.headers();
    if headers.get_all(hyper::header::HOST).iter().count() > 1 {
        return Some(status(
            hyper::StatusCode::BAD_REQUEST,
            "more than one Host header\n",
        ));
    }
    let origin = headers.get(hyper::header::ORIGIN)?;
    let host = origin
        .to_str()
        .ok()
        .and_then(|o| o.parse::<hyper::Uri>().ok())
        .and_then(|u| {
            u.host()
                .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned())
        });
    match host {
        Some(h) if allowed.iter().any(|a| a.eq_ignore_ascii_case(&h)) => None,
        _ => Some(status(hyper::StatusCode::FORBIDDEN, "origin not allowed\n")),
    }
}

fn status(
    code: hyper::StatusCode,
    text: &'static str,
) -> hyper::Response<BoxBody<Bytes, Infallible>> {
    let mut response = hyper::Response::new(Full::new(Bytes::from_static(text.as_bytes())).boxed());
    *response.status_mut() = code;
    response
}

fn not_found() -> hyper::Response<BoxBody<Bytes, Infallible>> {
    status(hyper::StatusCode::NOT_FOUND, "not found\n")
}
