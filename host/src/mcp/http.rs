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
use hyper_util::rt::TokioIo;
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
            tokio::spawn(async move {
                let handler = hyper::service::service_fn(move |request| {
                    let service = service.clone();
                    let path = path.clone();
                    async move {
                        if request.uri().path() == &*path {
                            Ok::<_, Infallible>(service.handle(request).await)
                        } else {
                            Ok(not_found())
                        }
                    }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
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

fn not_found() -> hyper::Response<BoxBody<Bytes, Infallible>> {
    let mut response = hyper::Response::new(Full::new(Bytes::from_static(b"not found\n")).boxed());
    *response.status_mut() = hyper::StatusCode::NOT_FOUND;
    response
}
