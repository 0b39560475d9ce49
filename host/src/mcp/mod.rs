//! The MCP server: a host's tools served over the Model Context Protocol,
//! on stdio or streamable HTTP, built on the official Rust SDK (`rmcp`).
//!
//! One MCP connection is one [`Session`](crate::Session): a stdio process,
//! or one HTTP session of a client that opened it with `initialize`. The
//! 2026-07-28 revision has no sessions over HTTP (each request stands
//! alone), so each such request gets a session of its own, closed when the
//! request ends: no request sees, lists or cancels another's calls. A
//! sessionless request therefore waits for its call's end (as
//! [`AnswerMode::Final`]) unless its client takes tasks; a call answered
//! with a task keeps its session until the call ends, and any later
//! request finds the task by its random id (`tasks/get`, `tasks/cancel`),
//! and nothing else. A closed connection closes its session (B24).
//!
//! What a client sees:
//! - `tools/list`: every served tool with its input schema (with the
//!   `confirm_duplicate` argument of B12), its output schema, a title, and
//!   the companion tools of B25; `notifications/tools/list_changed` when
//!   the tool list changes (legacy sessions directly, 2026-07-28 clients on
//!   `subscriptions/listen`).
//! - `tools/call`: the session's answer (B1, B2, B5, B7–B16), its data as
//!   `structuredContent` plus the JSON text, `isError` for errors; each
//!   update of the call as `notifications/progress` while the request is
//!   open, when the client sent a progress token; `notifications/cancelled`
//!   cancels the call (B20–B22).
//! - Tasks (`io.modelcontextprotocol/tasks`, SEP-2663): to a client that
//!   declares the extension, a call that goes on in the background (released
//!   by an update, queued, or still running after
//!   [`McpOptions::task_after`]) answers with a task; `tasks/get` reports
//!   `working` with the latest update as its status message, then
//!   `completed` with the result, or `cancelled`; `tasks/cancel` cancels the
//!   call. Tasks need the 2026-07-28 revision (older results carry no
//!   `resultType` to tell a task by). Task status notifications are not
//!   pushed: rmcp 3.11 cannot route `notifications/tasks` on
//!   `subscriptions/listen` (its filter has no `taskIds`), so clients poll
//!   `tasks/get` as `pollIntervalMs` suggests. Without the extension,
//!   released calls are followed up with the companion tools.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use toolhost::mcp::{McpOptions, serve_stdio};
//!
//! let host = toolhost::Host::new(toolhost::HostConfig::default())?;
//! host.start_loading("dist/plugins")?;
//! // Until the client closes stdin or Ctrl-C.
//! let ctrl_c = async {
//!     let _ = tokio::signal::ctrl_c().await;
//! };
//! serve_stdio(&host, McpOptions::default(), ctrl_c).await?;
//! # Ok(()) }
//! ```

mod connection;
mod convert;
mod direct;
mod http;
mod idle;
mod server;
mod sessions;
mod stdio;
mod tasks;
mod wire;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use rmcp::ServiceExt;

use crate::host::Host;
use crate::session::{AnswerMode, SessionOptions};

use self::connection::Connection;
use self::server::ToolServer;
use self::stdio::StdioTransport;

pub use self::http::{HttpServer, bind_http};

/// The `_meta` key of a `tools/call` request that chooses its answer mode
/// (`"release"` or `"final"`), over the server's [`McpOptions::answer`].
pub const ANSWER_KEY: &str = "dev.toolhost/answer";

/// The `_meta` key of a `tools/call` result that holds the call's task id:
/// give it to `toolhost_task_status` (as `call_id`) from any connection,
/// also after the host restarted, to read how the call went (B31).
pub const TASK_ID_KEY: &str = "dev.toolhost/task_id";

/// How the MCP server behaves.
///
/// Defaults:
/// - `session`: [`SessionOptions::default`] for the session of each
///   connection (its `id` is ignored: every connection gets its own, and
///   delivery is off: later results reach a client through tasks or the
///   companion tools)
/// - `answer`: [`AnswerMode::Release`]: the first update of a call answers
///   it and the call goes on (B2); [`AnswerMode::Final`] holds each request
///   open until its call ends, sending its updates as progress. A request
///   may choose with `_meta` [`ANSWER_KEY`] (`"release"` or `"final"`).
///   Tools whose output schema is listed always answer `final`; clients
///   with tasks get tasks instead.
/// - `tasks`: true: answer with tasks when the client declares the tasks
///   extension
/// - `task_after`: 500 ms: a call still running this long after it was made
///   answers with a task (a call released by an update or queued does so at
///   once; one still starting, its plugin still loading, once it runs)
/// - `task_poll_interval`: 500 ms, suggested to clients that poll `tasks/get`
/// - `task_ttl`: 1 hour that a task is kept from its creation, and that a
///   finished task is kept after its end
/// - `max_tasks`: 1 000 tasks kept per table (each stdio connection and
///   legacy HTTP session has one; sessionless HTTP requests share one):
///   past it the oldest finished task is dropped, and when running tasks
///   and the calls that may still become one (each holds a place from its
///   start) fill it, a call that would become a task is refused with an
///   error naming the limit
/// - `max_task_bytes`: 64 MiB of results kept per table (as they sit in
///   memory, about their JSON size): past it the oldest finished tasks are
///   dropped, all but the newest; `tasks/get` then reads a dropped task
///   from the task store (B31), as it does one past its TTL
/// - `max_message_size`: 4 MiB, the longest message a client may send
///   (a stdio line or an HTTP body); a longer one is skipped unread and
///   answered with an error naming the limit (over HTTP with status 413)
/// - `max_in_flight`: 64 requests of a stdio client unanswered at once;
///   past it the host stops reading stdin until answers are written, so a
///   client that stops reading holds at most this many answers in the host
///   (each no larger than the plugin's `result-size`). A `tools/call` the
///   client cancelled counts until its handler has ended (any other
///   request until rmcp has taken the cancel); a request that reuses the
///   id of an unanswered one is refused with an error and does not run
/// - `max_sessions`: 256 HTTP sessions (opened with `initialize`) open at
///   once; past it `initialize` is answered with HTTP 503 and a JSON-RPC
///   error naming the limit. An idle session costs about 56 KiB (500
///   added 27.5 MiB, measured on the debug build), so the bound holds
///   them to about 15 MiB, far above what a local host's clients open.
///   Sessionless requests are not counted: each lasts as long as its
///   request.
/// - `max_connections`: 512 HTTP connections open at once (each serves
///   one request at a time, so this also bounds the sessionless requests
///   in progress); past it a new connection is answered with HTTP 503 and
///   a JSON-RPC error naming the limit, and closed. The default stays
///   under the usual limit of 1 024 open files a process gets.
/// - `session_idle`: 5 minutes without a request, and none being answered
///   (a long call in answer mode `final` keeps its session), after which
///   an HTTP session is closed (B24: its calls are cancelled); its client
///   gets 404 and opens a new one
/// - `allowed_hosts`: `localhost`, `127.0.0.1`, `::1`: the `Host` headers
///   the HTTP server accepts (a guard against DNS rebinding)
/// - `http_path`: `/mcp`, where the HTTP server answers
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct McpOptions {
    pub session: SessionOptions,
    pub answer: AnswerMode,
    pub tasks: bool,
    pub task_after: Duration,
    pub task_poll_interval: Duration,
    pub task_ttl: Duration,
    pub max_tasks: usize,
    pub max_task_bytes: usize,
    pub max_message_size: usize,
    pub max_in_flight: usize,
    pub max_sessions: usize,
    pub max_connections: usize,
    pub session_idle: Duration,
    pub allowed_hosts: Vec<String>,
    pub http_path: String,
}

impl Default for McpOptions {
    fn default() -> Self {
        Self {
            session: SessionOptions::default(),
            answer: AnswerMode::Release,
            tasks: true,
            task_after: Duration::from_millis(500),
            task_poll_interval: Duration::from_millis(500),
            task_ttl: Duration::from_secs(3600),
            max_tasks: 1_000,
            max_task_bytes: 64 << 20,
            max_message_size: 4 * 1024 * 1024,
            max_in_flight: 64,
            max_sessions: 256,
            max_connections: 512,
            session_idle: Duration::from_secs(300),
            allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            http_path: "/mcp".into(),
        }
    }
}

/// Why the MCP server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the MCP connection on stdio failed to start: {0}")]
    Stdio(String),
}

/// Serve `host` over stdio, one connection, until the client closes it or
/// `shutdown` resolves; then close its session (B24).
///
/// Stdin and stdout that are pipes or sockets are read and written through
/// the runtime's event loop, and set back to blocking (if they were) once
/// the connection ends.
///
/// # Cancel safety
/// Not cancel safe: dropping the future drops the session without waiting
/// for its calls to end. Resolve `shutdown` instead.
///
/// # Panics
/// On a tokio runtime without IO enabled.
pub async fn serve_stdio(
    host: &Host,
    options: McpOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let (input, output) = stdio::pipes();
    let transport = StdioTransport::new(input, output, &options);
    let direct = transport.direct();
    let connection = Connection::open(host, std::sync::Arc::new(options));
    let server = ToolServer::for_connection(connection.clone());
    let running = server
        .serve(transport)
        .await
        .map_err(|e| ServeError::Stdio(e.to_string()))?;
    let stop = tokio_util::sync::CancellationToken::new();
    let _ = direct.set(std::sync::Arc::new(stdio::Direct {
        server: std::sync::Arc::new(ToolServer::for_connection(connection.clone())),
        session: connection.session().clone(),
        peer: running.peer().clone(),
        stop: stop.clone(),
        first_poll: host.config().engine.fuel,
    }));
    let cancel = running.cancellation_token();
    tokio::pin!(shutdown);
    let waiting = running.waiting();
    tokio::pin!(waiting);
    tokio::select! {
        ended = &mut waiting => {
            tracing::info!(session = %connection.session().id(), reason = ?ended.ok(), "MCP connection ended");
        }
        () = &mut shutdown => {
            cancel.cancel();
            stop.cancel();
            let _ = waiting.await;
            tracing::info!(session = %connection.session().id(), "MCP server shut down");
        }
    }
    connection.close().await;
    Ok(())
}

/// Serve `host` over streamable HTTP on `addr` until `shutdown` resolves.
/// See [`bind_http`] to learn the address before serving (for port 0).
///
/// # Cancel safety
/// Not cancel safe: resolve `shutdown` to stop gracefully.
pub async fn serve_http(
    host: &Host,
    addr: SocketAddr,
    options: McpOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    bind_http(host, addr, options).await?.run(shutdown).await;
    Ok(())
}
