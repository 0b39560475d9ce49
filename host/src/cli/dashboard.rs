//! `toolhost dashboard`: the web dashboard alone, over a live folder and
//! the task store.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, Result};
use toolhost::Host;
use toolhost::dashboard::{self, DashboardOptions};

/// Load `plugins`, follow its changes, and serve the dashboard on `addr`
/// until Ctrl-C, SIGTERM or SIGHUP. `token` (else the configuration's) is
/// required on any address but loopback.
pub async fn dashboard(
    host: &Host,
    plugins: &Path,
    addr: SocketAddr,
    token: Option<String>,
    allow_host: Vec<String>,
) -> Result<()> {
    let mut options = DashboardOptions::default();
    options.token = token
        .or_else(|| host.config().dashboard.token.clone())
        .filter(|t| !t.is_empty());
    options.allowed_hosts.extend(allow_host);
    if !addr.ip().is_unspecified() && !addr.ip().is_loopback() {
        options.allowed_hosts.push(addr.ip().to_string());
    }
    let token = options.token.clone();
    let server = dashboard::bind(host, addr, options).await?;
    host.start_loading(plugins)
        .with_context(|| format!("loading plugins from {}", plugins.display()))?;
    let _watch = host
        .watch_folder(plugins)
        .with_context(|| format!("watching {}", plugins.display()))?;
    let shutdown = super::serve::shutdown_signal()?;
    // On stderr, so a script or test can learn a port picked with :0; the
    // token goes in the address once, then lives in a cookie.
    match token {
        Some(t) => eprintln!("toolhost: dashboard on {}?token={t}", server.url()),
        None => eprintln!("toolhost: dashboard on {}", server.url()),
    }
    server.run(shutdown).await;
    Ok(())
}
