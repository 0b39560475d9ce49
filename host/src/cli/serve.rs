//! `toolhost serve`: the MCP server on stdio or HTTP, over a live folder.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, Result};
use toolhost::Host;
use toolhost::mcp::{self, McpOptions};

/// Load `plugins`, follow its changes, and serve MCP until the client goes
/// (stdio) or Ctrl-C.
pub async fn serve(
    host: &Host,
    plugins: &Path,
    http: Option<SocketAddr>,
    allow_host: Vec<String>,
) -> Result<()> {
    host.start_loading(plugins)
        .with_context(|| format!("loading plugins from {}", plugins.display()))?;
    let _watch = host
        .watch_folder(plugins)
        .with_context(|| format!("watching {}", plugins.display()))?;
    let mut options = McpOptions::default();
    options.allowed_hosts.extend(allow_host);
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
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
