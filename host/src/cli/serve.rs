//! `toolhost serve`: the MCP server on stdio or HTTP, over a live folder.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, Result};
use toolhost::dashboard::{Dashboard, DashboardOptions};
use toolhost::mcp::{self, McpOptions};
use toolhost::{AnswerMode, FolderChanges, Host};

/// `--max-sessions`, `--max-connections` and `--session-idle`: the HTTP
/// bounds, over [`McpOptions`]' defaults.
#[derive(Debug, Default)]
pub struct SessionFlags {
    pub max: Option<usize>,
    pub connections: Option<usize>,
    pub idle: Option<std::time::Duration>,
}

/// Load `plugins`, follow its `changes` (a watch being set up), and serve
/// MCP until the client goes (stdio), or Ctrl-C, SIGTERM or SIGHUP, or the
/// folder turns out not to be watchable: then every session closes as B24
/// says (cancel, grace, clean-up) before the process exits, with the
/// watch's error if it failed.
pub async fn serve(
    host: &Host,
    plugins: &Path,
    changes: impl Future<Output = Result<FolderChanges>>,
    http: Option<SocketAddr>,
    allow_host: Vec<String>,
    answer: Option<AnswerMode>,
    sessions: SessionFlags,
) -> Result<()> {
    host.start_loading(plugins)
        .with_context(|| format!("loading plugins from {}", plugins.display()))?;
    // The watch was being set up meanwhile, and is followed once it is:
    // the folder is listed, its tools announced and MCP served without
    // waiting for it (its set-up waits for notify's own thread, on two
    // busy cores a few milliseconds of a client's first `initialize`), and
    // what changed in between is applied then. A folder that cannot be
    // watched shuts the server down, and it ends with why.
    let failed = tokio::sync::SetOnce::new();
    let follow = async {
        match changes.await {
            Ok(changes) => {
                let _watch = host.follow_folder(changes);
                std::future::pending().await
            }
            Err(e) => {
                // The error ends the process, once every session has closed.
                tracing::info!("shutting down: the plugin folder cannot be watched");
                let _ = failed.set(e);
                std::future::pending::<()>().await
            }
        }
    };
    let mut options = McpOptions::default();
    options.allowed_hosts.extend(allow_host);
    if let Some(max) = sessions.max {
        options.max_sessions = max;
    }
    if let Some(max) = sessions.connections {
        options.max_connections = max;
    }
    if let Some(idle) = sessions.idle {
        options.session_idle = idle;
    }
    options.answer = answer
        .or(host.config().profile.as_ref().and_then(|p| p.answer))
        .unwrap_or_default();
    let ctrl_c = shutdown_signal()?;
    let shutdown = async {
        tokio::select! {
            () = ctrl_c => {}
            _ = failed.wait() => {}
        }
    };
    let served = async {
        match http {
            None => mcp::serve_stdio(host, options, shutdown).await?,
            Some(addr) => {
                let dashboard = dashboard_beside_mcp(host, addr, &options);
                let mut server = mcp::bind_http(host, addr, options).await?;
                let base = format!("http://{}/", server.local_addr());
                // On stderr, so a script or test can learn a port picked with :0.
                eprintln!("toolhost: serving MCP on {}", server.url());
                if let Some((dashboard, token)) = dashboard {
                    server = server.with_dashboard(dashboard);
                    eprintln!("toolhost: dashboard on {base}?token={token}");
                }
                server.run(shutdown).await;
            }
        }
        Ok::<_, anyhow::Error>(())
    };
    tokio::select! {
        served = served => served?,
        () = follow => unreachable!("following the folder goes on until the server ends"),
    }
    failed.into_inner().map_or(Ok(()), Err)
}

/// The dashboard that `serve --http` serves beside `/mcp`, with the same
/// Host and Origin rules, behind a token: the configuration's, else on
/// loopback a random one made now and printed with the address (the
/// dashboard shows and cancels every session's calls, which MCP clients
/// must not); on another address without a configured token it is left
/// out (said on stderr), while MCP is served as asked.
fn dashboard_beside_mcp(
    host: &Host,
    addr: SocketAddr,
    mcp: &McpOptions,
) -> Option<(Dashboard, String)> {
    let mut options = DashboardOptions::default();
    options.allowed_hosts = mcp.allowed_hosts.clone();
    options.token = host
        .config()
        .dashboard
        .token
        .clone()
        .filter(|t| !t.is_empty());
    if options.token.is_none() && !addr.ip().is_loopback() {
        eprintln!(
            "toolhost: the dashboard is not served on {addr}: a non-loopback address needs a token (`token` in the [dashboard] table of toolhost.toml)"
        );
        return None;
    }
    let token = (options.token.take()).unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    options.token = Some(token.clone());
    Some((Dashboard::new(host, options), token))
}

/// Resolves on Ctrl-C (SIGINT), SIGTERM or SIGHUP: process managers and
/// clients that close a server send SIGTERM, and a terminal that goes away
/// sends SIGHUP.
pub(super) fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut hup = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
            _ = hup.recv() => {}
        }
        tracing::info!("shutting down: closing every session");
    })
}
