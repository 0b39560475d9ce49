//! Shared by the benchmark harnesses: where the built plugins are, host
//! settings, and how figures are printed.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use toolhost::{Host, HostConfig};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_owned()
}

/// A built plugin, `dist/PATH.wasm` (`plugins/rust-compute`, ...).
pub fn dist(path: &str) -> PathBuf {
    root().join("dist").join(format!("{path}.wasm"))
}

/// The default host settings with this compile cache (or none).
pub fn config(cache: Option<PathBuf>) -> HostConfig {
    let mut config = HostConfig::default();
    config.cache_dir = cache;
    config
}

/// Milliseconds, or seconds from one second up.
pub fn ms(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.2} s", d.as_secs_f64())
    } else {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    }
}

pub fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// A file's size in KiB, or MiB from one MiB up.
pub fn size(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::metadata(path)?.len() as f64;
    Ok(if bytes >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", bytes / 1024.0 / 1024.0)
    } else {
        format!("{:.0} KiB", bytes / 1024.0)
    })
}

/// The `p` quantile (0.5, 0.99) of sorted samples, nearest rank.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// An integer from the environment, or `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `n` calls of `tool` one after another, after `n / 10` to warm up: the
/// sorted latencies and the time they took in all.
pub async fn calls_in_a_row(
    host: &Host,
    tool: &str,
    arguments: &str,
    n: usize,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    for _ in 0..n / 10 {
        host.call(tool, arguments).await.result?;
    }
    let mut latencies = Vec::with_capacity(n);
    let started = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let outcome = host.call(tool, arguments).await;
        latencies.push(t.elapsed());
        outcome.result?;
    }
    let total = started.elapsed();
    latencies.sort();
    Ok((latencies, total))
}
