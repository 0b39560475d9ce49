//! The benchmark harness: prints figures, asserts nothing.
//!
//! Run with `tools/build-plugins && cargo bench -p toolhost --bench host`.
//! Figures: compile time per example plugin, cold and warm start of the
//! example folder, latency and throughput of a trivial tool, and the cost of
//! fuel metering on a compute-heavy tool.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use toolhost::{EngineConfig, Host, HostConfig};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn config(cache: Option<PathBuf>) -> HostConfig {
    HostConfig {
        cache_dir: cache,
        ..Default::default()
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let plugins = root().join("dist").join("plugins");
    anyhow::ensure!(plugins.exists(), "run tools/build-plugins first");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&plugins)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .collect();
    files.sort();

    println!("## Compile and load, per example plugin (no cache)");
    let host = Host::new(config(None))?;
    for f in &files {
        let size = std::fs::metadata(f)?.len();
        let t = Instant::now();
        host.check(f).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        println!(
            "{:<16} {:>7.0} KiB  {}",
            f.file_stem().and_then(|s| s.to_str()).unwrap_or("?"),
            size as f64 / 1024.0,
            ms(t.elapsed())
        );
    }

    println!("\n## Start of the whole example folder");
    let cache = tempfile::tempdir()?;
    for label in ["cold (empty cache)", "warm (cached)"] {
        let t = Instant::now();
        let host = Host::new(config(Some(cache.path().to_owned())))?;
        let report = host.load_dir(&plugins).await?;
        anyhow::ensure!(report.refused.is_empty(), "{:?}", report.refused);
        println!(
            "{label:<20} {} ({} plugins)",
            ms(t.elapsed()),
            report.loaded.len()
        );
    }

    let host = Host::new(config(Some(cache.path().to_owned())))?;
    host.load_dir(&plugins).await?;
    let args = r#"{"text": "the quick brown fox jumps over the lazy dog"}"#;

    println!("\n## Trivial tool (word_count), in process");
    for _ in 0..2000 {
        host.call("word_count", args).await.result?;
    }
    let n = 20_000;
    let mut lat = Vec::with_capacity(n);
    let t = Instant::now();
    for _ in 0..n {
        let c = Instant::now();
        let o = host.call("word_count", args).await;
        lat.push(c.elapsed());
        o.result?;
    }
    let total = t.elapsed();
    lat.sort();
    println!(
        "1 caller:   p50 {}  p99 {}  {:.0} calls/s",
        us(percentile(&lat, 0.50)),
        us(percentile(&lat, 0.99)),
        n as f64 / total.as_secs_f64()
    );

    for callers in [2usize, 16, 64] {
        let per = 40_000 / callers;
        let host = Arc::new(host.clone());
        let t = Instant::now();
        let tasks: Vec<_> = (0..callers)
            .map(|_| {
                let host = host.clone();
                tokio::spawn(async move {
                    for _ in 0..per {
                        host.call("word_count", args).await.result?;
                    }
                    anyhow::Ok(())
                })
            })
            .collect();
        for t in tasks {
            t.await??;
        }
        let total = t.elapsed();
        println!(
            "{callers} callers: {:.0} calls/s",
            (per * callers) as f64 / total.as_secs_f64()
        );
    }

    println!("\n## Fuel metering on a compute-heavy tool (count_primes below 20 000 000)");
    let heavy = r#"{"limit": 20000000}"#;
    let unmetered = Host::new(HostConfig {
        engine: EngineConfig {
            fuel: false,
            ..Default::default()
        },
        ..config(Some(cache.path().to_owned()))
    })?;
    unmetered.load_dir(&plugins).await?;
    let mut best = [Duration::MAX; 2];
    for _ in 0..5 {
        for (i, h) in [&host, &unmetered].into_iter().enumerate() {
            let t = Instant::now();
            let o = h.call("count_primes", heavy).await;
            o.result?;
            best[i] = best[i].min(t.elapsed());
        }
    }
    println!(
        "metered {}  unmetered {}  overhead {:.1}% (best of 5)",
        ms(best[0]),
        ms(best[1]),
        (best[0].as_secs_f64() / best[1].as_secs_f64() - 1.0) * 100.0
    );
    Ok(())
}
