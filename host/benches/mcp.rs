//! MCP round trips of a trivial tool (`word_count`), through `toolhost
//! serve` on stdio and on streamable HTTP, measured with rmcp's client:
//! p50 and p99 of one call at a time, then calls per second with several
//! calls in flight. Prints figures; asserts nothing.
//!
//! ```sh
//! tools/build-plugins && cargo bench --bench mcp
//! ```
//!
//! `MCP_BENCH_CALLS` (default 2000) sets the calls per measurement,
//! `MCP_BENCH_CONCURRENCY` (default 16) the calls in flight.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rmcp::model::{CallToolRequestParams, JsonObject};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{Peer, ServiceExt};
use serde_json::json;

mod figures;
use figures::{env_usize, percentile, root};

const TOOLHOST: &str = env!("CARGO_BIN_EXE_toolhost");

/// A folder with only the compute plugin, so start-up is quick.
fn plugin_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let dist = root().join("dist/plugins");
    let wasm = dist.join("rust-compute.wasm");
    assert!(
        wasm.exists(),
        "{} is missing: run tools/build-plugins first",
        wasm.display()
    );
    std::fs::copy(&wasm, dir.path().join("rust-compute.wasm")).expect("copy plugin");
    let manifest = dist.join("rust-compute.toml");
    if manifest.exists() {
        std::fs::copy(&manifest, dir.path().join("rust-compute.toml")).expect("copy manifest");
    }
    dir
}

fn command(folder: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(TOOLHOST);
    cmd.arg("--plugins")
        .arg(folder)
        .env(
            "TOOLHOST_CACHE_DIR",
            root().join("target/toolhost-test-cache"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    cmd
}

fn params() -> CallToolRequestParams {
    let mut args = JsonObject::new();
    args.insert("text".into(), json!("the quick brown fox jumps"));
    CallToolRequestParams::new("word_count").with_arguments(args)
}

async fn call(peer: &Peer<RoleClient>) -> Duration {
    let started = Instant::now();
    let result = peer.call_tool(params()).await.expect("word_count");
    assert_ne!(result.is_error, Some(true), "word_count failed: {result:?}");
    started.elapsed()
}

async fn measure(name: &str, client: RunningService<RoleClient, ()>) {
    let calls = env_usize("MCP_BENCH_CALLS", 2000);
    let concurrency = env_usize("MCP_BENCH_CONCURRENCY", 16).max(1);
    let peer = client.peer().clone();
    println!(
        "{name}: protocol {}",
        peer.peer_info()
            .map(|i| i.protocol_version.to_string())
            .unwrap_or_else(|| "2026-07-28 (no handshake)".into())
    );
    for _ in 0..200 {
        call(&peer).await;
    }

    let mut times = Vec::with_capacity(calls);
    for _ in 0..calls {
        times.push(call(&peer).await);
    }
    times.sort();
    let mean = times.iter().sum::<Duration>() / calls as u32;
    println!(
        "{name}: one at a time, {calls} calls: p50 {:?}, p99 {:?}, mean {:?}",
        percentile(&times, 0.50),
        percentile(&times, 0.99),
        mean
    );

    let peer = Arc::new(peer);
    let per_worker = calls.div_ceil(concurrency);
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let peer = peer.clone();
            tokio::spawn(async move {
                let mut times = Vec::with_capacity(per_worker);
                for _ in 0..per_worker {
                    times.push(call(&peer).await);
                }
                times
            })
        })
        .collect();
    let mut times = Vec::new();
    for w in workers {
        times.extend(w.await.expect("worker"));
    }
    let elapsed = started.elapsed();
    times.sort();
    println!(
        "{name}: {concurrency} in flight, {} calls: {:.0} calls/s, p50 {:?}, p99 {:?}",
        times.len(),
        times.len() as f64 / elapsed.as_secs_f64(),
        percentile(&times, 0.50),
        percentile(&times, 0.99)
    );
    let _ = client.cancel().await;
}

async fn stdio(folder: &Path) {
    let mut cmd = command(folder);
    cmd.arg("serve");
    let transport = TokioChildProcess::new(cmd).expect("spawn toolhost serve");
    let client = ().serve(transport).await.expect("connect over stdio");
    measure("stdio", client).await;
}

async fn http(folder: &Path) {
    let mut cmd = command(folder);
    cmd.args(["serve", "--http", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn toolhost serve --http");
    let stderr = child
        .stderr
        .take()
        .expect("stderr")
        .into_owned_fd()
        .expect("stderr fd");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(std::fs::File::from(stderr))
            .lines()
            .map_while(Result::ok)
        {
            if let Some(url) = line.strip_prefix("toolhost: serving MCP on ") {
                let _ = tx.send(url.to_owned());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("toolhost serve --http printed no URL");
    let transport = StreamableHttpClientTransport::from_uri(url);
    let client = ().serve(transport).await.expect("connect over HTTP");
    measure("http", client).await;
    let _ = child.kill().await;
}

/// The same call through a session in this process: what MCP adds is the
/// difference.
async fn in_process(folder: &Path) {
    let mut config = toolhost::HostConfig::default();
    config.cache_dir = Some(root().join("target/toolhost-test-cache"));
    let host = toolhost::Host::new(config).expect("host");
    host.load_dir(folder).await.expect("load");
    let session = host.open_session(Default::default());
    let calls = env_usize("MCP_BENCH_CALLS", 2000);
    let arguments = r#"{"text": "the quick brown fox jumps"}"#;
    let mut times = Vec::with_capacity(calls);
    for i in 0..calls + 200 {
        let started = Instant::now();
        let answer = session
            .call(&format!("c{i}"), "word_count", arguments)
            .await;
        assert!(!answer.is_error, "{answer:?}");
        if i >= 200 {
            times.push(started.elapsed());
        }
    }
    times.sort();
    println!(
        "in process (Session::call, no MCP): p50 {:?}, p99 {:?}",
        percentile(&times, 0.50),
        percentile(&times, 0.99)
    );
    session.close().await;
}

fn main() {
    // `cargo bench` passes `--bench`; this harness takes no filters.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let folder = plugin_folder();
    runtime.block_on(async {
        in_process(folder.path()).await;
        stdio(folder.path()).await;
        http(folder.path()).await;
    });
}
