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
use rmcp::model::{
    ClientJsonRpcMessage, ClientRequest, ErrorCode, ErrorData, RequestId, ServerJsonRpcMessage,
};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

use super::idle::{Activity, SESSION_HEADER, close_idle};
use super::server::{HttpLane, ToolServer};
use super::sessions::Sessions;
use super::tasks::Tasks;
use super::wire::{self, Read};
use super::{McpOptions, ServeError};
use crate::dashboard::Dashboard;
use crate::host::Host;
use crate::listen::{self, BodyRefused, Response};
use crate::repoll::repoll;

type Service = StreamableHttpService<ToolServer, Sessions>;

/// An HTTP MCP server bound to its address, not yet serving.
pub struct HttpServer {
    listener: TcpListener,
    addr: SocketAddr,
    service: Service,
    sessions: Arc<Sessions>,
    lane: Arc<HttpLane>,
    dashboard: Option<Dashboard>,
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
        tasks: Arc::new(Tasks::for_connection(&options)),
        options: options.clone(),
        open,
        stopping: watch::Sender::new(false),
    });
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(options.allowed_hosts.clone())
        .with_max_request_body_bytes(options.max_message_size);
    let factory_lane = lane.clone();
    let mut sessions = LocalSessionManager::default();
    // rmcp's idle timer counts a session whose request is still being
    // answered as idle: [`idle`] closes idle sessions instead.
    sessions.session_config.keep_alive = None;
    let sessions = Arc::new(Sessions::new(sessions));
    let service = StreamableHttpService::new(
        move || Ok(ToolServer::for_http(factory_lane.clone())),
        sessions.clone(),
        config,
    );
    Ok(HttpServer {
        listener,
        addr,
        service,
        sessions,
        lane,
        dashboard: None,
    })
}

impl HttpServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serve `dashboard` on every path but the MCP one (`/` is its live
    /// view); it is closed when the server stops.
    pub fn with_dashboard(mut self, dashboard: Dashboard) -> Self {
        self.dashboard = Some(dashboard);
        self
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
            sessions,
            lane,
            dashboard,
        } = self;
        let pages = dashboard.as_ref().map(Dashboard::router);
        let activity = Arc::new(Activity::default());
        let reaper = tokio::spawn(close_idle(
            activity.clone(),
            sessions.clone(),
            lane.options.session_idle,
        ));
        let gate = Arc::new(SessionGate {
            sessions,
            max: lane.options.max_sessions,
            opening: tokio::sync::Mutex::new(()),
        });
        tracing::info!(%addr, path = %lane.options.http_path, "serving MCP over HTTP");
        let path: Arc<str> = lane.options.http_path.clone().into();
        let origins: Arc<[String]> = lane.options.allowed_hosts.clone().into();
        let max_message = lane.options.max_message_size;
        let max_connections = lane.options.max_connections;
        let connection = |stream: tokio::net::TcpStream, peer: SocketAddr, permit| {
            let service = service.clone();
            let path = path.clone();
            let origins = origins.clone();
            let gate = gate.clone();
            let pages = pages.clone();
            let activity = activity.clone();
            tokio::spawn(repoll(async move {
                let _open = permit;
                let handler = hyper::service::service_fn(move |request| {
                    let service = service.clone();
                    let path = path.clone();
                    let origins = origins.clone();
                    let gate = gate.clone();
                    let pages = pages.clone();
                    let activity = activity.clone();
                    async move {
                        if let Some(refusal) = refuse(&request, &origins) {
                            return Ok(refusal.map(axum::body::Body::new));
                        }
                        if request.uri().path() == &*path {
                            let delete = request.method() == hyper::Method::DELETE;
                            let post = request.method() == hyper::Method::POST;
                            let answering = activity.request(&request);
                            let mut response = if post {
                                match read_post(request, max_message).await {
                                    Ok((request, Some(id))) => {
                                        let opened = gate.open(&service, request, id).await;
                                        activity.opened(&opened);
                                        opened
                                    }
                                    Ok((request, None)) => service.handle(request).await,
                                    Err(refusal) => refusal,
                                }
                            } else if delete && gate.names_no_open_session(&request).await {
                                no_open_session()
                            } else {
                                service.handle(request).await
                            };
                            // A request is in progress until its answer's
                            // body (an SSE stream, for a call) is done.
                            if let Some(answering) = answering {
                                response = response.map(|body| {
                                    body.map_frame(move |frame| {
                                        let _ = &answering;
                                        frame
                                    })
                                    .boxed()
                                });
                            }
                            // Ending a session succeeded: say 200, which
                            // clients expect (the SDK answers 202).
                            if delete && response.status() == hyper::StatusCode::ACCEPTED {
                                *response.status_mut() = hyper::StatusCode::OK;
                            }
                            Ok::<_, Infallible>(response.map(axum::body::Body::new))
                        } else if let Some(pages) = pages {
                            // The dashboard, behind its own guard (token).
                            pages.oneshot(request.map(axum::body::Body::new)).await
                        } else {
                            Ok(not_found().map(axum::body::Body::new))
                        }
                    }
                });
                if let Err(e) = listen::http1()
                    .serve_connection(TokioIo::new(stream), handler)
                    .await
                {
                    tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                }
            }));
        };
        let refusal = |max| {
            unavailable(
                format!(
                    "too many HTTP connections: the limit of {max} open connections (max_connections) is reached; close one or try again later"
                ),
                None,
            )
        };
        listen::accept_until(&listener, max_connections, refusal, shutdown, connection).await;
        reaper.abort();
        // New clients are refused by the system from now on, not left
        // waiting while the sessions close.
        drop(listener);
        // Ends the legacy sessions, whose handlers close their connections,
        // and the sessionless ones kept open for their tasks.
        service.config.cancellation_token.cancel();
        lane.stopping.send_replace(true);
        if let Some(dashboard) = &dashboard {
            dashboard.close().await;
        }
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

/// Where `initialize` requests pass, one at a time, while fewer than `max`
/// HTTP sessions are open.
struct SessionGate {
    sessions: Arc<Sessions>,
    max: usize,
    /// Held from the count to the session's creation, so that requests
    /// arriving together cannot pass the bound.
    opening: tokio::sync::Mutex<()>,
}

impl SessionGate {
    async fn open(
        &self,
        service: &Service,
        request: hyper::Request<Full<Bytes>>,
        id: RequestId,
    ) -> Response {
        let _one = self.opening.lock().await;
        let open = self.sessions.local().sessions.read().await.len();
        if open >= self.max {
            tracing::warn!(
                open,
                max = self.max,
                "MCP session limit reached; initialize refused"
            );
            return unavailable(
                format!(
                    "too many MCP sessions: the limit of {} open sessions (max_sessions) is reached; end one (HTTP DELETE) or wait until an idle one closes",
                    self.max
                ),
                Some(id),
            );
        }
        service.handle(request).await
    }

    /// Whether `request` names (`Mcp-Session-Id`) a session that is not
    /// open: ended, closed when idle, or never opened.
    async fn names_no_open_session<B>(&self, request: &hyper::Request<B>) -> bool {
        let Some(id) = request
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        !self.sessions.local().sessions.read().await.contains_key(id)
    }
}

/// HTTP 404 for a request naming a session that is not open (rmcp would
/// end it "again" and answer 202).
fn no_open_session() -> Response {
    let error = ErrorData::new(
        ErrorCode(-32000),
        "no open MCP session by this id (Mcp-Session-Id): it was ended, closed after being idle, or never opened; initialize a new one",
        None,
    );
    json_answer(
        hyper::StatusCode::NOT_FOUND,
        &ServerJsonRpcMessage::error(error, None),
    )
}

/// A POST's body read whole (up to `max` bytes) and checked: a message
/// that cannot be read is answered here with a JSON-RPC error (rmcp
/// would answer with a bare status and no id); a good one goes on to rmcp,
/// with the id of an `initialize` request, which opens a session.
async fn read_post(
    request: hyper::Request<hyper::body::Incoming>,
    max: usize,
) -> Result<(hyper::Request<Full<Bytes>>, Option<RequestId>), Response> {
    let (parts, body) = request.into_parts();
    let bytes = match listen::read_body(body, max, listen::BODY_TIME).await {
        Ok(bytes) => bytes,
        Err(BodyRefused::TooLarge { max }) => {
            let mut answer =
                json_answer(hyper::StatusCode::PAYLOAD_TOO_LARGE, &wire::too_large(max));
            answer.headers_mut().insert(
                hyper::header::CONNECTION,
                hyper::header::HeaderValue::from_static("close"),
            );
            return Err(answer);
        }
        Err(refused) => {
            let mut answer =
                hyper::Response::new(Full::new(Bytes::from(format!("{refused}\n"))).boxed());
            *answer.status_mut() = refused.status();
            return Err(answer);
        }
    };
    // Over HTTP every message is answered: one that JSON-RPC would drop
    // (an unreadable notification, a blank body) gets a 400 saying why.
    let unreadable = |reason: String| {
        let error = ErrorData::invalid_request(reason, None);
        json_answer(
            hyper::StatusCode::BAD_REQUEST,
            &ServerJsonRpcMessage::error(error, None),
        )
    };
    let initialize = match wire::read(&bytes) {
        Read::Refused(answer) => {
            return Err(json_answer(hyper::StatusCode::BAD_REQUEST, &answer));
        }
        Read::Dropped(reason) => return Err(unreadable(reason)),
        Read::Nothing => {
            return Err(unreadable(
                "the body is empty: a JSON-RPC message was expected".into(),
            ));
        }
        Read::Message(ClientJsonRpcMessage::Request(r))
            if matches!(r.request, ClientRequest::InitializeRequest(_)) =>
        {
            Some(r.id)
        }
        Read::Message(_) => None,
    };
    // What was read goes on, without the byte order mark it may start with.
    let bytes = match bytes.strip_prefix(b"\xEF\xBB\xBF") {
        Some(rest) => bytes.slice(bytes.len() - rest.len()..),
        None => bytes,
    };
    Ok((
        hyper::Request::from_parts(parts, Full::new(bytes)),
        initialize,
    ))
}

fn json_answer(code: hyper::StatusCode, answer: &ServerJsonRpcMessage) -> Response {
    let body = serde_json::to_vec(answer).unwrap_or_default();
    let mut response = hyper::Response::new(Full::new(Bytes::from(body)).boxed());
    *response.status_mut() = code;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// HTTP 503 with a JSON-RPC error saying which limit was reached.
fn unavailable(message: String, id: Option<RequestId>) -> Response {
    let error = ErrorData::new(ErrorCode(-32000), message, None);
    json_answer(
        hyper::StatusCode::SERVICE_UNAVAILABLE,
        &ServerJsonRpcMessage::error(error, id),
    )
}

/// A request refused before it reaches the MCP service (or its body is
/// read): two `Host` headers (a smuggling attempt), a `Host` that is not
/// one of the allowed hosts (DNS rebinding; rmcp checks it too, but only
/// after the body was read here), or an `Origin` that is not one of them
/// (a web page trying to reach a local server). Requests without `Origin`
/// come from programs, not browsers, and pass.
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
    if let Some(host) = headers.get(hyper::header::HOST)
        && !host.to_str().is_ok_and(|h| host_allowed(h, allowed))
    {
        return Some(status(hyper::StatusCode::FORBIDDEN, "host not allowed\n"));
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

/// Whether a `Host` header names an allowed host: `name` allows it on any
/// port, `name:port` on that port only (as rmcp reads the same list); an
/// empty list allows every host.
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let Ok(host) = host.parse::<hyper::http::uri::Authority>() else {
        return false;
    };
    let name = host.host().trim_start_matches('[').trim_end_matches(']');
    allowed.is_empty()
        || allowed.iter().any(|a| {
            let (a_name, a_port) = match a.parse::<hyper::http::uri::Authority>() {
                // A bare IPv6 address (`::1`) is no authority: a name alone.
                Err(_) => (a.clone(), None),
                Ok(authority) => (authority.host().to_owned(), authority.port_u16()),
            };
            a_name
                .trim_start_matches('[')
                .trim_end_matches(']')
                .eq_ignore_ascii_case(name)
                && a_port.is_none_or(|p| host.port_u16() == Some(p))
        })
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

#[cfg(test)]
mod tests {
    use super::host_allowed;

    #[test]
    fn a_host_header_is_checked_by_name_and_by_port_when_the_list_names_one() {
        let allowed: Vec<String> = ["localhost", "::1", "example.com:8080"]
            .map(String::from)
            .to_vec();
        for ok in [
            "localhost",
            "localhost:1234",
            "[::1]:80",
            "example.com:8080",
        ] {
            assert!(host_allowed(ok, &allowed), "{ok}");
        }
        for refused in ["evil.example", "example.com:9090", "example.com", "a b"] {
            assert!(!host_allowed(refused, &allowed), "{refused}");
        }
        assert!(host_allowed("anything", &[]));
    }
}
