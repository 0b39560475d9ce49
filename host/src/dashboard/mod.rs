//! The dashboard: a web page over a host, to see every call and try every
//! tool without an agent.
//!
//! Pages (plain HTML, readable without JavaScript; a small script, embedded
//! like the style sheet, makes them live):
//! - `/`: the running and queued calls of every session, with their fuel
//!   so far, kept live by server-sent events from [`Host::subscribe`] (no
//!   polling); the instance pool's use ([`Host::instances`]); below them,
//!   figures of the last hour per tool (calls per minute, error rate,
//!   duration and fuel) as small charts;
//! - `/history`: calls from the task store, filtered by tool, status,
//!   session and time; `/calls/{task_id}`: one call with every update,
//!   its result or error, fuel, duration and the limit that stopped it;
//! - `/plugins`: every plugin with its file, language, size, grants and
//!   limits, the refused ones with their reason, and every tool;
//! - `/tools/{name}`: a tool's schemas and a form made from its input
//!   schema that calls it in the dashboard's own session.
//!
//! [`Dashboard::router`] is everything but `/mcp`, to mount beside the MCP
//! endpoint; [`bind`] serves it alone (`toolhost dashboard`).
//!
//! ```no_run
//! # async fn demo(host: toolhost::Host) -> anyhow::Result<()> {
//! use toolhost::dashboard::{self, DashboardOptions};
//!
//! let server = dashboard::bind(&host, "127.0.0.1:8701".parse()?, DashboardOptions::default()).await?;
//! println!("open {}", server.url());
//! server.run(std::future::pending()).await;
//! # Ok(()) }
//! ```
//!
//! # Who may use it
//! It can start any tool, so by default it listens on loopback only. On any
//! other address [`bind`] refuses to start without a token; with one, every
//! request must carry it (`Authorization: Bearer`, or the cookie set by
//! visiting `/?token=...` once). Every request's `Host` header must be one
//! of [`DashboardOptions::allowed_hosts`] (against DNS rebinding), and a
//! request that changes something (`POST`) from another origin is refused.

mod assets;
mod figures;
mod form;
mod guard;
mod live;
mod pages;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

use crate::host::Host;
use crate::session::{Session, SessionOptions};

/// Settings of the dashboard. Start from [`DashboardOptions::default`].
///
/// Defaults:
/// - `token`: none; required by [`bind`] on any address but loopback
/// - `allowed_hosts`: `localhost`, `127.0.0.1`, `::1`: the `Host` headers
///   accepted (as the MCP server's)
/// - `max_streams`: 64 live views open at once; past it a new one is
///   refused (503) until one closes
/// - `max_connections`: 256 HTTP connections open at once when the
///   dashboard serves alone ([`DashboardServer::run`]); past it a new one
///   is answered 503 and closed. Beside `/mcp`, the MCP server's cap holds.
/// - `history_limit`: 100 calls a history page shows, at most 1000
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DashboardOptions {
    pub token: Option<String>,
    pub allowed_hosts: Vec<String>,
    pub max_streams: usize,
    pub max_connections: usize,
    pub history_limit: usize,
}

impl Default for DashboardOptions {
    fn default() -> Self {
        Self {
            token: None,
            allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            max_streams: 64,
            max_connections: 256,
            history_limit: 100,
        }
    }
}

/// Why the dashboard could not start.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error(
        "refusing to serve the dashboard on {addr} without a token: anyone who reaches it could run tools (set --token, or `token` in the [dashboard] table of toolhost.toml)"
    )]
    TokenRequired { addr: SocketAddr },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What every page handler reads.
struct Shared {
    host: Host,
    /// Where "try a tool" calls run; closed with the dashboard.
    session: Session,
    options: DashboardOptions,
    /// Turns true when the dashboard stops: live streams end then, so a
    /// graceful shutdown does not wait for browsers to go.
    closing: watch::Sender<bool>,
    streams: Arc<Semaphore>,
}

/// The dashboard of one host. Cheap to clone.
#[derive(Clone)]
pub struct Dashboard {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard").finish_non_exhaustive()
    }
}

impl Dashboard {
    /// The dashboard of `host`, with a session of its own for the calls it
    /// starts (their updates go to the page, not to a delivery queue).
    pub fn new(host: &Host, options: DashboardOptions) -> Self {
        let session = host.open_session(SessionOptions {
            delivery: false,
            ..SessionOptions::default()
        });
        Self {
            shared: Arc::new(Shared {
                host: host.clone(),
                session,
                streams: Arc::new(Semaphore::new(options.max_streams)),
                options,
                closing: watch::Sender::new(false),
            }),
        }
    }

    /// Every page and the live events, behind the guard (Host, Origin,
    /// token): a router to serve alone or beside `/mcp`.
    pub fn router(&self) -> Router {
        let shared = self.shared.clone();
        Router::new()
            .route("/", get(pages::live))
            .route("/history", get(pages::history))
            .route("/calls/{task_id}", get(pages::call))
            .route("/calls/{task_id}/cancel", post(pages::cancel))
            .route("/plugins", get(pages::plugins))
            .route("/tools/{name}", get(pages::tool).post(pages::try_tool))
            .route("/events", get(live::events))
            .route("/assets/{file}", get(assets::serve))
            .fallback(pages::not_found)
            .layer(axum::middleware::from_fn(bounded_body))
            .layer(axum::middleware::from_fn_with_state(
                shared.clone(),
                guard::guard,
            ))
            .with_state(shared)
    }

    /// End the live streams and close the dashboard's session: its
    /// cancellable calls are cancelled, the others get the session's close
    /// timeout (B24).
    pub async fn close(&self) {
        self.shared.closing.send_replace(true);
        self.shared.session.close().await;
    }
}

/// The largest request body the dashboard reads: a tool's form, or a
/// cancel. A larger one is answered 413.
pub const MAX_BODY: usize = 2 * 1024 * 1024;

/// Read a request's body whole before its page sees it: at most
/// [`MAX_BODY`] bytes, within [`listen::BODY_TIME`](crate::listen::BODY_TIME),
/// else answered 413 or 408, so that a client trickling a body in holds
/// no connection for long. It runs behind [`guard::guard`]: a request the
/// guard refuses has nothing of its body read (nor `100 Continue` sent).
async fn bounded_body(request: Request, next: Next) -> Response {
    use crate::listen::{BODY_TIME, BodyRefused, read_body};

    let refused = |code: StatusCode, why: String| {
        let mut answer = (code, why).into_response();
        // What is left of the body is not read.
        answer.headers_mut().insert(
            header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
        answer
    };
    let too_large = || {
        refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is over the dashboard's limit of {} MiB\n",
                MAX_BODY >> 20
            ),
        )
    };
    let declared = (request.headers().get(header::CONTENT_LENGTH))
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return too_large();
    }
    let (parts, body) = request.into_parts();
    match read_body(body, MAX_BODY, BODY_TIME).await {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(BodyRefused::TooLarge { .. }) => too_large(),
        Err(refused_body) => refused(refused_body.status(), format!("{refused_body}\n")),
    }
}

/// How long a stopping dashboard waits for the requests in progress.
pub const CLOSE_REQUESTS: std::time::Duration = std::time::Duration::from_secs(5);

/// The dashboard bound to its address, not yet serving.
#[derive(Debug)]
pub struct DashboardServer {
    listener: TcpListener,
    addr: SocketAddr,
    dashboard: Dashboard,
}

/// Bind the dashboard of `host` to `addr` (port 0 picks a free port). Any
/// address but loopback needs [`DashboardOptions::token`].
pub async fn bind(
    host: &Host,
    addr: SocketAddr,
    options: DashboardOptions,
) -> Result<DashboardServer, DashboardError> {
    if !addr.ip().is_loopback() && options.token.as_deref().is_none_or(str::is_empty) {
        return Err(DashboardError::TokenRequired { addr });
    }
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| DashboardError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| DashboardError::Bind { addr, source })?;
    Ok(DashboardServer {
        listener,
        addr,
        dashboard: Dashboard::new(host, options),
    })
}

impl DashboardServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address to open in a browser.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Serve until `shutdown` resolves, then stop listening, end the live
    /// streams, close the dashboard's session (its calls get the session's
    /// close timeout, B24) and then let open requests finish, for up to
    /// [`CLOSE_REQUESTS`] more. At most
    /// [`max_connections`](DashboardOptions::max_connections) connections
    /// are open at once, and a client has 10 s to send a request's header
    /// and 10 s more for its body (at most [`MAX_BODY`]).
    ///
    /// # Cancel safety
    /// Not cancel safe: resolve `shutdown` to stop gracefully.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let Self {
            listener,
            addr,
            dashboard,
        } = self;
        tracing::info!(%addr, "serving the dashboard");
        let router = dashboard.router();
        let closing = dashboard.shared.closing.subscribe();
        let max = dashboard.shared.options.max_connections;
        let connection = |stream, peer: SocketAddr, permit| {
            let router = router.clone();
            let mut closing = closing.clone();
            tokio::spawn(crate::repoll::repoll(async move {
                let _open = permit;
                let pages = hyper::service::service_fn(move |request: hyper::Request<_>| {
                    router.clone().oneshot(request.map(axum::body::Body::new))
                });
                let serving = crate::listen::http1()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), pages);
                tokio::pin!(serving);
                let closed = async move {
                    let _ = closing.wait_for(|closing| *closing).await;
                };
                let ended = tokio::select! {
                    ended = serving.as_mut() => ended,
                    () = closed => {
                        serving.as_mut().graceful_shutdown();
                        serving.await
                    }
                };
                if let Err(e) = ended {
                    tracing::debug!(%peer, error = %e, "dashboard connection ended with an error");
                }
            }));
        };
        let refusal = |max| {
            let text = format!(
                "too many connections to the dashboard: the limit of {max} open connections (max_connections) is reached; close one or try again later\n"
            );
            let body = http_body_util::Full::new(bytes::Bytes::from(text));
            let mut answer = hyper::Response::new(http_body_util::BodyExt::boxed(body));
            *answer.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
            let plain = hyper::header::HeaderValue::from_static("text/plain; charset=utf-8");
            answer
                .headers_mut()
                .insert(hyper::header::CONTENT_TYPE, plain);
            answer
        };
        let open = crate::listen::accept_until(&listener, max, refusal, shutdown, connection).await;
        // New clients are refused by the system from now on, not left
        // waiting while the session closes.
        drop(listener);
        dashboard.close().await;
        let all = u32::try_from(max).unwrap_or(u32::MAX);
        if tokio::time::timeout(CLOSE_REQUESTS, open.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!(%addr, "dashboard requests still open at shutdown");
        }
        tracing::info!(%addr, "dashboard stopped");
    }
}
