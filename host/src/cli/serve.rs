//! `toolhost serve`: the MCP server on stdio or HTTP, over a live folder.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, Result};
use toolhost::mcp::{self, McpOptions};
use toolhost::{AnswerMode, Host};

/// `--max-sessions` and `--session-idle`: the HTTP session bounds, over
/// [`McpOptions`]' defaults.
#[derive(Debug, Default)]
pub struct SessionFlags {
    pub max: Option<usize>,
    pub idle: Option<std::time::Duration>,
}

/// Load `plugins`, follow its changes, and serve MCP until the client goes
/// (stdio), or Ctrl-C, SIGTERM or SIGHUP: then every session closes as B24
/// says (cancel, grace, clean-up) before the process exits.
pub async fn serve(
    host: &Host,
    plugins: &Path,
    http: Option<SocketAddr>,
    allow_host: Vec<String>,
    answer: Option<AnswerMode>,
    sessions: SessionFlags,
) -> Result<()> {
    host.start_loading(plugins)
        .with_context(|| format!("loading plugins from {}", plugins.display()))?;
    let _watch = host
        .watch_folder(plugins)
        .with_context(|| format!("watching {}", plugins.display()))?;
    let mut options = McpOptions::default();
    options.allowed_hosts.extend(allow_host);
    if let Some(max) = sessions.max {
        options.max_sessions = max;
    }
    if let Some(idle) = sessions.idle {
        options.session_idle = idle;
    }
    options.answer = answer
        .or(host.config().profile.as_ref().and_then(|p| p.answer))
        .unwrap_or_default();
    let ctrl_c = shutdown_signal()?;
    match http {
        None => mcp::serve_stdio(host, options, ctrl_c).await?,
        Some(addr) => {
            let server = mcp::bind_http(host, addr, options).await?;
            // On stderr, so a script or test can learn a port picked with :0.
            eprintln!("toolhost: serving MCP on {}", server.url());
            server.run(ctrl_c).await;
        }
    }
    Ok(())
}

/// Resolves on Ctrl-C (SIGINT), SIGTERM or SIGHUP: process managers and
/// clients that close a server send SIGTERM, and a terminal that goes away
/// sends SIGHUP.
pub(super) fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut hup = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
    Ok(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            _ = hup.recv() => {}
        }
        tracing::info!("shutting down: closing every session");
    })
}
