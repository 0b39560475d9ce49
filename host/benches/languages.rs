//! Per-language figures for plugins written in Rust, Python, JavaScript and
//! C: component size, compile time without a cache, load time from the
//! compile cache, and the latency of a trivial tool (`word_count`: a fresh
//! instance and one call) through `Host::call`. Prints figures, asserts
//! nothing.
//!
//! Run with `tools/build-plugins && cargo bench -p toolhost --bench languages`;
//! name languages to run only those: `… --bench languages -- python c`.
//!
//! The trivial tool is the same in every language: rust-compute's
//! `word_count` and the `word_count` of the `<language>-behave` test plugins.

use std::path::Path;
use std::time::{Duration, Instant};

use toolhost::Host;

mod figures;
use figures::{calls_in_a_row, config, dist, ms, percentile, size, us};

/// (language, plugin with the trivial tool, the language's example).
const LANGUAGES: [(&str, &str, &str); 4] = [
    ("rust", "plugins/rust-compute", "plugins/rust-indexer"),
    ("python", "test-plugins/python-behave", "plugins/python-csv"),
    ("js", "test-plugins/js-behave", "plugins/js-markdown"),
    ("c", "test-plugins/c-behave", "plugins/c-checksum"),
];
const CALLS: usize = 2000;
const LOADS: usize = 10;

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let languages: Vec<_> = LANGUAGES
        .iter()
        .filter(|(l, ..)| wanted.is_empty() || wanted.iter().any(|w| w == l))
        .collect();

    println!("## Per language: size, compile (no cache), load from the cache");
    println!(
        "{:<8} {:<28} {:>9} {:>10} {:>12}",
        "language", "plugin", "size", "compile", "cached load"
    );
    for (language, trivial, example) in &languages {
        for plugin in [trivial, example] {
            let file = dist(plugin);
            anyhow::ensure!(
                file.exists(),
                "{} is missing: run tools/build-plugins",
                file.display()
            );
            let (compile, load) = load_times(&file).await?;
            println!(
                "{language:<8} {plugin:<28} {:>9} {:>10} {:>12}",
                size(&file)?,
                ms(compile),
                ms(load)
            );
        }
    }

    println!(
        "\n## Trivial tool (word_count): a fresh instance and one call, {CALLS} calls in a row"
    );
    println!(
        "{:<8} {:<28} {:>9} {:>9} {:>10}",
        "language", "plugin", "p50", "p99", "calls/s"
    );
    let args = r#"{"text": "the quick brown fox jumps over the lazy dog"}"#;
    let cache = tempfile::tempdir()?;
    for (language, trivial, _) in &languages {
        let host = Host::new(config(Some(cache.path().to_owned())))?;
        host.load_file(dist(trivial))
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.reason()))?;
        let (lat, total) = calls_in_a_row(&host, "word_count", args, CALLS).await?;
        println!(
            "{language:<8} {trivial:<28} {:>9} {:>9} {:>10.0}",
            us(percentile(&lat, 0.50)),
            us(percentile(&lat, 0.99)),
            CALLS as f64 / total.as_secs_f64()
        );
    }
    Ok(())
}

/// The compile time of `file` with no cache, and the best of `LOADS` loads
/// from a warm cache (read, deserialize, describe()).
async fn load_times(file: &Path) -> anyhow::Result<(Duration, Duration)> {
    let t = Instant::now();
    Host::new(config(None))?
        .check(file)
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.reason()))?;
    let compile = t.elapsed();

    let cache = tempfile::tempdir()?;
    Host::new(config(Some(cache.path().to_owned())))?
        .check(file)
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.reason()))?;
    let mut best = Duration::MAX;
    for _ in 0..LOADS {
        let host = Host::new(config(Some(cache.path().to_owned())))?;
        let t = Instant::now();
        let plugin = host
            .check(file)
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.reason()))?;
        best = best.min(t.elapsed());
        anyhow::ensure!(plugin.from_cache(), "{} was not cached", file.display());
    }
    Ok((compile, best))
}
