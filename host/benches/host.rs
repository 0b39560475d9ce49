//! The benchmark harness: prints figures, asserts nothing.
//!
//! Run with `tools/build-plugins && cargo bench -p toolhost --bench host`.
//! Figures: compile time per example plugin, cold and warm start of the
//! example folder, latency and throughput of a trivial tool, and the cost of
//! epoch and fuel metering on a compute-heavy tool; background calls: 10 000
//! concurrent sleeping calls, cancellation latency of a spinning call, and
//! updates per second from one call.
//!
//! Task store (B31): a trivial call through a session with the SQLite store
//! against the memory store, 10 000 concurrent background calls with the
//! SQLite store, and recovering 100 000 records at start.
//!
//! `cargo bench -p toolhost --bench host -- background` runs only the
//! background figures, `-- store` only the task store's, `-- cancel` only
//! the cancellation latency and the CPU a spinning call keeps busy,
//! `-- metering` only the cost of metering (unmetered, epoch, fuel; on
//! `count_primes` below `PRIMES_BELOW`, default 20 000 000), `-- sleeping`
//! only the concurrent sleeping calls (`SLEEPING_CALLS` of them, default
//! 10 000). With `SMAPS=1` the sleeping calls' figures come with what this
//! process's memory held at the PSS peak, by kind of mapping.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use toolhost::{AnswerKind, EngineConfig, Host, SessionOptions};

mod figures;
use figures::{calls_in_a_row, config, ms, percentile, root, us};

/// The toolhost binary's allocator (`host/src/main.rs`), so that the figures
/// are the server's; an embedder's own allocator may give others.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let only = |name: &str| std::env::args().any(|a| a == name);
    if only("store") {
        return store().await;
    }
    if only("session") {
        return session_only().await;
    }
    if only("cancel") {
        return cancel().await;
    }
    if only("sleeping") {
        let (released, total, rss, pss) = sleeping_calls(None).await?;
        println!(
            "released in {}, done in {}; +{rss:.0} MiB peak RSS, +{pss:.0} MiB peak PSS",
            ms(released),
            ms(total)
        );
        return Ok(());
    }
    if only("metering") {
        let cache = root().join("target").join("toolhost-bench-cache");
        return metering(&cache).await;
    }
    if !only("background") {
        core().await?;
    }
    background().await?;
    if !only("background") {
        store().await?;
    }
    Ok(())
}

/// `n` session calls of `word_count` in a row: sorted latencies.
async fn session_calls(host: &Host, n: usize) -> anyhow::Result<Vec<Duration>> {
    let args = r#"{"text": "the quick brown fox jumps over the lazy dog"}"#;
    let session = host.open_session(SessionOptions::default());
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        let a = session.call(&format!("c{i}"), "word_count", args).await;
        latencies.push(t.elapsed());
        anyhow::ensure!(!a.is_error, "{a:?}");
    }
    latencies.sort();
    Ok(latencies)
}

/// Only trivial session calls, `SESSION_CALLS` of them (default 20 000):
/// for profilers (`valgrind --tool=callgrind --toggle-collect='*session_calls*'`).
async fn session_only() -> anyhow::Result<()> {
    let cache = root().join("target").join("toolhost-bench-cache");
    let mut c = config(Some(cache));
    // A pool of 1 000 (four times the default), small enough that profilers
    // can map its address space.
    c.engine.instances = figures::env_usize("SESSION_INSTANCES", 1_000) as u32;
    c.limits.max_concurrency = c.limits.max_concurrency.min(c.engine.instances / 4);
    let host = Host::new(c)?;
    host.load_dir(root().join("dist").join("plugins")).await?;
    let n = figures::env_usize("SESSION_CALLS", 20_000);
    let lat = session_calls(&host, n).await?;
    println!(
        "{n} session calls: p50 {} p99 {}",
        us(percentile(&lat, 0.50)),
        us(percentile(&lat, 0.99))
    );
    Ok(())
}

async fn store() -> anyhow::Result<()> {
    use toolhost::store::{SqliteStore, StoreOptions, TaskStore};
    let cache = root().join("target").join("toolhost-bench-cache");
    let plugins = root().join("dist").join("plugins");
    let dir = tempfile::tempdir()?;

    println!("\n## Task store: a trivial call through a session (word_count), memory vs SQLite");
    let memory = Host::new(config(Some(cache.clone())))?;
    memory.load_dir(&plugins).await?;
    let path = dir.path().join("calls.db");
    let mut c = config(Some(cache.clone()));
    let sqlite_store: Arc<dyn TaskStore> =
        Arc::new(SqliteStore::open(&path, StoreOptions::default())?);
    c.store = Some(sqlite_store.clone());
    let sqlite = Host::new(c)?;
    sqlite.load_dir(&plugins).await?;
    // Interleaved rounds, so both see the same machine.
    let (mut mem_p50, mut sql_p50, mut mem_p99, mut sql_p99) = (vec![], vec![], vec![], vec![]);
    for _ in 0..5 {
        let m = session_calls(&memory, 4_000).await?;
        let q = session_calls(&sqlite, 4_000).await?;
        mem_p50.push(percentile(&m, 0.50));
        mem_p99.push(percentile(&m, 0.99));
        sql_p50.push(percentile(&q, 0.50));
        sql_p99.push(percentile(&q, 0.99));
    }
    sqlite_store.flush().await?;
    for v in [&mut mem_p50, &mut mem_p99, &mut sql_p50, &mut sql_p99] {
        v.sort();
    }
    let median = |v: &[Duration]| v[v.len() / 2];
    println!(
        "memory: p50 {} p99 {};  SQLite: p50 {} p99 {};  SQLite/memory p50 {:.2} (median of 5 interleaved rounds of 4 000 calls)",
        us(median(&mem_p50)),
        us(median(&mem_p99)),
        us(median(&sql_p50)),
        us(median(&sql_p99)),
        median(&sql_p50).as_secs_f64() / median(&mem_p50).as_secs_f64()
    );
    drop((memory, sqlite, sqlite_store));

    println!("\n## Task store: recover 100 000 records at start");
    let path = dir.path().join("recover.db");
    {
        let store = SqliteStore::open(&path, StoreOptions::default())?;
        for i in 0..100_000u64 {
            let record = toolhost::CallRecord {
                call_id: format!("c{i}"),
                session_id: "bench".into(),
                tool: "word_count".into(),
                arguments: serde_json::json!({ "text": "the quick brown fox" }).into(),
                status: if i % 10 == 0 {
                    toolhost::CallStatus::Running
                } else {
                    toolhost::CallStatus::Done
                },
                updates: Vec::new(),
                result: None,
                error: None,
                fuel_used: 1_000,
                created_at: std::time::SystemTime::now(),
                started_at: None,
                ended_at: None,
            };
            let record = toolhost::store::TaskRecord::new(toolhost::store::new_task_id(), record);
            // Past a full queue a write is dropped: wait for the writer.
            while store
                .start(record.clone(), toolhost::store::Durability::Lazy)
                .await
                .is_err()
            {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        store.flush().await?;
    }
    let t = Instant::now();
    let store = SqliteStore::open(&path, StoreOptions::default())?;
    let opened = t.elapsed();
    let interrupted = store.mark_orphans(std::time::SystemTime::now()).await?;
    println!(
        "open {}, {interrupted} of 100 000 records marked interrupted, {} in all; database {}",
        ms(opened),
        ms(t.elapsed()),
        figures::size(&path)?,
    );

    println!("\n## Task store: 10 000 concurrent background calls with SQLite");
    // The pool for 10 000 instances needs much address space; a machine
    // that cannot give it still prints the figures above.
    if let Err(e) = ten_thousand_with_sqlite(dir.path()).await {
        println!("not measured: {e:#}");
    }
    Ok(())
}

async fn ten_thousand_with_sqlite(dir: &std::path::Path) -> anyhow::Result<()> {
    use toolhost::store::{SqliteStore, StoreOptions, TaskStore};
    let path = dir.join("background.db");
    let store: Arc<dyn TaskStore> = Arc::new(SqliteStore::open(&path, StoreOptions::default())?);
    let (released, done, rss, pss) = sleeping_calls(Some(store.clone())).await?;
    let t = Instant::now();
    store.flush().await?;
    let total = done + t.elapsed();
    let health = store.health();
    anyhow::ensure!(health.lost_writes == 0, "{health}");
    println!(
        "all released (each durable first) in {}, all done and committed in {}; peak RSS +{:.0} MiB, peak PSS +{:.0} MiB over idle; database {} (+ WAL {})",
        ms(released),
        ms(total),
        rss,
        pss,
        figures::size(&path)?,
        figures::size(&path.with_extension("db-wal")).unwrap_or_else(|_| "none".into()),
    );
    drop(store);

    Ok(())
}

async fn core() -> anyhow::Result<()> {
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
    let n = 20_000;
    let (lat, total) = calls_in_a_row(&host, "word_count", args, n).await?;
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

    metering(cache.path()).await
}

/// What metering costs on a compute-heavy tool: `count_primes` unmetered,
/// epoch-metered and fuel-metered at several yield intervals, interleaved
/// in one run.
async fn metering(cache: &std::path::Path) -> anyhow::Result<()> {
    let plugins = root().join("dist").join("plugins");
    println!("\n## Metering on a compute-heavy tool (count_primes below 20 000 000)");
    let heavy = &format!(
        r#"{{"limit": {}}}"#,
        figures::env_usize("PRIMES_BELOW", 20_000_000)
    );
    let engine = |fuel: bool, yield_interval: u64| {
        let mut e = EngineConfig::default();
        e.fuel = fuel;
        e.yield_interval = yield_interval;
        e
    };
    // rust-compute alone, with its manifest and `metering = "epoch"`.
    let epoch_folder = tempfile::tempdir()?;
    std::fs::copy(
        plugins.join("rust-compute.wasm"),
        epoch_folder.path().join("rust-compute.wasm"),
    )?;
    let manifest = std::fs::read_to_string(plugins.join("rust-compute.toml"))?;
    std::fs::write(
        epoch_folder.path().join("rust-compute.toml"),
        manifest.replace("[limits]", "[limits]\nmetering = \"epoch\""),
    )?;
    let mut hosts = Vec::new();
    for (label, e, folder) in [
        ("unmetered", engine(false, 1), plugins.as_path()),
        (
            "epoch (metering = \"epoch\")",
            EngineConfig::default(),
            epoch_folder.path(),
        ),
        (
            "fuel, yield every 100 000",
            engine(true, 100_000),
            plugins.as_path(),
        ),
        (
            "fuel, yield every 1 000 000 (default)",
            engine(true, 1_000_000),
            plugins.as_path(),
        ),
        (
            "fuel, yield every 10 000 000",
            engine(true, 10_000_000),
            plugins.as_path(),
        ),
    ] {
        let mut c = config(Some(cache.to_owned()));
        c.engine = e;
        let h = Host::new(c)?;
        h.load_dir(folder).await?;
        hosts.push((label, h, Duration::MAX));
    }
    let expected = hosts[0].1.call("count_primes", heavy).await.result?;
    for _ in 0..7 {
        for (_, h, best) in &mut hosts {
            let t = Instant::now();
            let out = h.call("count_primes", heavy).await.result?;
            *best = (*best).min(t.elapsed());
            anyhow::ensure!(out == expected, "{out:?} against {expected:?}");
        }
    }
    let base = hosts[0].2;
    for (label, _, best) in &hosts {
        println!(
            "{label:<42} {}  {:+.1}% over unmetered (best of 7, interleaved)",
            ms(*best),
            (best.as_secs_f64() / base.as_secs_f64() - 1.0) * 100.0
        );
    }
    Ok(())
}

/// Peak resident memory of this process since the last reset, in MiB.
fn peak_rss_mib() -> f64 {
    proc_mib("/proc/self/status", "VmHWM:")
}

/// The figure in kB after `field` in the `/proc` file `file`, in MiB.
fn proc_mib(file: &str, field: &str) -> f64 {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .find_map(|l| mib_of(l, field))
        .unwrap_or(f64::NAN)
}

/// The figure in kB of a `/proc` line that starts with `field`, in MiB.
fn mib_of(line: &str, field: &str) -> Option<f64> {
    line.strip_prefix(field)
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
}

/// This process's proportional set size in MiB: what it holds alone, plus
/// its share of pages it shares. Unlike RSS, a page mapped many times
/// counts once: the compiled plugin's memory image, which every instance
/// maps, is counted once per instance in RSS.
fn pss_mib() -> f64 {
    proc_mib("/proc/self/smaps_rollup", "Pss:")
}

/// The largest [`pss_mib`] seen every 100 ms until the returned flag is set.
/// With `SMAPS=1` in the environment, what made up the peak is printed at
/// the end ([`by_mapping`]).
fn sample_pss() -> (
    Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<f64>,
) {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let breakdown = std::env::var_os("SMAPS").is_some();
    let sampler = std::thread::spawn(move || {
        let mut peak = pss_mib();
        let mut at_peak = String::new();
        while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
            let now = pss_mib();
            if now > peak && breakdown {
                at_peak = by_mapping();
            }
            peak = peak.max(now);
        }
        if breakdown {
            println!("{at_peak}");
        }
        peak
    });
    (stop, sampler)
}

/// This process's resident memory by kind of mapping, largest first: the
/// mapping's name (anonymous ones by their size), how many there are, and
/// their RSS, PSS and anonymous (private, written) pages in MiB.
fn by_mapping() -> String {
    use std::collections::HashMap;
    let text = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let mut kinds: HashMap<String, [f64; 4]> = HashMap::new();
    let mut current = String::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let first = parts.next().unwrap_or_default();
        if first.contains('-') && !first.ends_with(':') {
            let range: Vec<u64> = first
                .split('-')
                .filter_map(|h| u64::from_str_radix(h, 16).ok())
                .collect();
            let size = range.get(1).zip(range.first()).map_or(0, |(b, a)| b - a);
            let name = parts.nth(4).unwrap_or("");
            current = if name.is_empty() {
                format!("anonymous, {} KiB", size >> 10)
            } else {
                name.to_owned()
            };
            kinds.entry(current.clone()).or_default()[0] += 1.0;
        } else if let Some(v) = mib_of(line, "Rss:") {
            kinds.entry(current.clone()).or_default()[1] += v;
        } else if let Some(v) = mib_of(line, "Pss:") {
            kinds.entry(current.clone()).or_default()[2] += v;
        } else if let Some(v) = mib_of(line, "Anonymous:") {
            kinds.entry(current.clone()).or_default()[3] += v;
        }
    }
    let mut rows: Vec<_> = kinds.into_iter().collect();
    rows.sort_by(|a, b| b.1[1].total_cmp(&a.1[1]));
    let mut out = String::from("mapping | count | RSS MiB | PSS MiB | anonymous MiB\n");
    for (name, [n, rss, pss, anon]) in rows.into_iter().take(12) {
        out += &format!("{name} | {n} | {rss:.1} | {pss:.1} | {anon:.1}\n");
    }
    out
}

fn reset_peak_rss() {
    // Writing 5 resets VmHWM to the current RSS (Linux 4.0+).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// 10 000 concurrent calls of `progress` (update, sleep 1 s in WASI,
/// update) in one session of a host keeping its records in `store` (else
/// in memory): how long until all were released (B2), until all were done,
/// and the peak RSS and PSS over idle in MiB.
async fn sleeping_calls(
    store: Option<Arc<dyn toolhost::store::TaskStore>>,
) -> anyhow::Result<(Duration, Duration, f64, f64)> {
    let behave = root().join("dist").join("test-plugins").join("behave.wasm");
    anyhow::ensure!(behave.exists(), "run tools/build-plugins first");
    let n = figures::env_usize("SLEEPING_CALLS", 10_000);
    let folder = tempfile::tempdir()?;
    std::fs::copy(&behave, folder.path().join("behave.wasm"))?;
    std::fs::write(
        folder.path().join("behave.toml"),
        format!("[limits]\nmax-concurrency = {n}\nmemory = \"8MiB\"\n"),
    )?;
    let mut c = config(Some(root().join("target").join("toolhost-bench-cache")));
    // Room for the plugin's 10 000 calls under the cap rule (the others
    // keep a sixteenth of the pool).
    c.engine.instances = n as u32 + n as u32 / 8 + 16;
    c.engine.max_memory = 16 << 20;
    c.store = store;
    let host = Host::new(c)?;
    host.load_dir(folder.path()).await?;
    // Every call's record stays, to count them done.
    let mut options = SessionOptions::default();
    options.keep_records = n;
    options.max_live = n;
    let session = host.open_session(options);
    reset_peak_rss();
    let base = peak_rss_mib();
    let base_pss = pss_mib();
    let (stop, sampler) = sample_pss();
    let t = Instant::now();
    let calls: Vec<_> = (0..n)
        .map(|i| {
            let s = session.clone();
            tokio::spawn(async move {
                s.call(
                    &format!("c{i}"),
                    "progress",
                    r#"{"n": 2, "sleep_ms": 1000}"#,
                )
                .await
            })
        })
        .collect();
    for c in calls {
        let a = c.await?;
        anyhow::ensure!(
            a.kind == AnswerKind::Released,
            "every call is released: {a:?}"
        );
    }
    let released = t.elapsed();
    while !session.running().is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let done = session
        .records()
        .iter()
        .filter(|r| r.status == toolhost::CallStatus::Done)
        .count();
    anyhow::ensure!(done == n, "{done} of {n} calls done");
    let total = t.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let pss = sampler
        .join()
        .map_err(|_| anyhow::anyhow!("the sampler panicked"))?;
    Ok((released, total, peak_rss_mib() - base, pss - base_pss))
}

async fn background() -> anyhow::Result<()> {
    let behave = root().join("dist").join("test-plugins").join("behave.wasm");
    anyhow::ensure!(behave.exists(), "run tools/build-plugins first");
    let cache = root().join("target").join("toolhost-bench-cache");

    println!("\n## 10 000 concurrent calls that sleep in WASI and update twice");
    let (released, total, rss, pss) = sleeping_calls(None).await?;
    println!(
        "all released in {}, all done in {} (each: update, sleep 1 s in WASI, update); +{rss:.0} MiB peak RSS, +{pss:.0} MiB peak PSS over idle",
        ms(released),
        ms(total),
    );

    cancel().await?;

    let folder = tempfile::tempdir()?;
    std::fs::copy(&behave, folder.path().join("behave.wasm"))?;
    let host = Host::new(config(Some(cache.clone())))?;
    host.load_dir(folder.path()).await?;
    let session = host.open_session(SessionOptions::default());
    println!("\n## Updates per second from one call");
    // As many as a call may send by default ([limits] updates).
    let updates = toolhost::Limits::default().updates as usize;
    let t = Instant::now();
    let a = session
        .call(
            "u",
            "progress",
            &format!(r#"{{"n": {updates}, "sleep_ms": 0}}"#),
        )
        .await;
    anyhow::ensure!(a.kind == AnswerKind::Released);
    while session.record("u").is_some_and(|r| r.status.is_live()) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let total = t.elapsed();
    // A record keeps the newest updates and counts the ones it let go.
    let task_id = session
        .task_id("u")
        .ok_or_else(|| anyhow::anyhow!("no task id"))?;
    let r = (host.store().get(&task_id).await?).ok_or_else(|| anyhow::anyhow!("no record"))?;
    let seen = r.call.updates.len() as u64 + r.updates_dropped;
    anyhow::ensure!(seen == updates as u64, "{seen} updates recorded");
    println!(
        "{updates} updates in {} = {:.0} updates/s (each recorded, evented and queued for delivery)",
        ms(total),
        updates as f64 / total.as_secs_f64()
    );
    Ok(())
}

/// Process CPU time (user and system, all threads) so far.
fn cpu_time() -> Duration {
    // /proc/self/stat: fields 14 and 15 (utime, stime) in clock ticks of
    // 1/100 s, counted after the command name's closing parenthesis.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let ticks: u64 = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|t| t.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// Start `spin_cancellable` as `id` in `session` and wait until it runs.
async fn start_spinning(
    session: &toolhost::Session,
    id: &str,
) -> tokio::task::JoinHandle<toolhost::Answer> {
    let call = tokio::spawn({
        let (s, id) = (session.clone(), id.to_owned());
        async move { s.call(&id, "spin_cancellable", "{}").await }
    });
    while session.record(id).is_none_or(|r| r.started_at.is_none()) {
        tokio::task::yield_now().await;
    }
    call
}

/// The CPU one spinning call keeps busy, and the cancellation latency of a
/// spinning call (grace 0), alone and beside two other spinning calls: for
/// each of the fuel yield intervals in `YIELD_INTERVALS` (comma-separated,
/// default the engine's), each host in turn, in one run.
async fn cancel() -> anyhow::Result<()> {
    let behave = root().join("dist").join("test-plugins").join("behave.wasm");
    anyhow::ensure!(behave.exists(), "run tools/build-plugins first");
    let cache = root().join("target").join("toolhost-bench-cache");
    let folder = tempfile::tempdir()?;
    std::fs::copy(&behave, folder.path().join("behave.wasm"))?;
    // Fuel for minutes of spinning: the calls that load the machine run
    // until they are cancelled.
    std::fs::write(
        folder.path().join("behave.toml"),
        "[limits]\ncancel-grace = \"0s\"\nfuel = 1_000_000_000_000\n",
    )?;
    let intervals = match std::env::var("YIELD_INTERVALS") {
        Ok(list) => list
            .split(',')
            .map(|n| n.trim().replace('_', "").parse::<u64>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("YIELD_INTERVALS: {e}"))?,
        Err(_) => vec![EngineConfig::default().yield_interval],
    };
    let mut hosts = Vec::new();
    for interval in intervals {
        let mut c = config(Some(cache.clone()));
        c.engine.yield_interval = interval;
        let host = Host::new(c)?;
        host.load_dir(folder.path()).await?;
        let session = host.open_session(SessionOptions::default());
        let load = host.open_session(SessionOptions::default());
        hosts.push((format!("yield every {interval}"), host, session, load));
    }

    println!("\n## CPU kept busy by one call spinning without host calls");
    for (label, _, _, load) in &hosts {
        let spinning = start_spinning(load, "busy").await;
        let (t, cpu) = (Instant::now(), cpu_time());
        tokio::time::sleep(Duration::from_secs(3)).await;
        let cores = (cpu_time() - cpu).as_secs_f64() / t.elapsed().as_secs_f64();
        load.cancel("busy").map_err(|e| anyhow::anyhow!("{e}"))?;
        spinning.await?;
        println!("{label:<28} {cores:.2} cores (process CPU time over 3 s of wall clock)");
    }

    println!("\n## Cancellation latency of a call spinning without host calls (grace 0)");
    for others in [0, 2] {
        for (label, _, session, load) in &hosts {
            let load_calls: Vec<String> =
                (0..others).map(|i| format!("load{others}_{i}")).collect();
            let mut handles = Vec::new();
            for id in &load_calls {
                handles.push(start_spinning(load, id).await);
            }
            let mut lat = Vec::new();
            for i in 0..300 {
                let id = format!("s{others}_{i}");
                let call = start_spinning(session, &id).await;
                tokio::time::sleep(Duration::from_millis(2)).await;
                let t = Instant::now();
                session.cancel(&id).map_err(|e| anyhow::anyhow!("{e}"))?;
                let a = call.await?;
                lat.push(t.elapsed());
                anyhow::ensure!(a.kind == AnswerKind::Cancelled, "{a:?}");
            }
            for id in &load_calls {
                load.cancel(id).map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            for h in handles {
                h.await?;
            }
            lat.sort();
            println!(
                "{label:<28} {:<30} cancel to answer: p50 {}  p99 {}  max {} ({} calls)",
                if others == 0 {
                    "alone:".to_owned()
                } else {
                    format!("beside {others} spinning calls:")
                },
                us(percentile(&lat, 0.50)),
                us(percentile(&lat, 0.99)),
                us(*lat.last().unwrap_or(&Duration::ZERO)),
                lat.len()
            );
        }
    }
    Ok(())
}
