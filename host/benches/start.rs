//! The start benchmark: from spawning `toolhost serve` on stdio to the
//! answer of its first `tools/list`, the way an MCP client starts it.
//!
//! Run with `tools/build-plugins && cargo bench -p toolhost --bench start`.
//! Two folders: the 9 example plugins of all four languages, and 20 plugins
//! (the examples and 11 of the test plugins, 2 of which are refused). Each is started once with an
//! empty compile cache (which fills it), then `STARTS` times (default 20)
//! with the warm cache; every start has its own task store, as a user's
//! first `toolhost serve` would. Prints the median, p90 and best start.
//! `TOOLHOST_BIN=path` times another build of the binary (an older one, to
//! compare).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

mod figures;
use figures::{env_usize, ms, percentile, root};

/// Test plugins whose tools clash with nobody's: nine that load, and two
/// that are refused at load (a `describe()` that traps, a bad schema), as a
/// folder may hold. (`hoard` and `c-behave`, here before, clashed with
/// `behave` and `rust-compute`, and which of two loads won was a race.)
const TEST_PLUGINS: [&str; 11] = [
    "behave",
    "env-read",
    "escape",
    "flood",
    "membomb",
    "net-connect",
    "panic",
    "recurse",
    "spin",
    "describe-trap",
    "bad-schema",
];

fn main() -> anyhow::Result<()> {
    let dist = root().join("dist");
    anyhow::ensure!(
        dist.join("plugins").exists() && dist.join("test-plugins").exists(),
        "run tools/build-plugins first"
    );
    let starts = env_usize("STARTS", 20).max(1);
    let scratch = tempfile::tempdir()?;

    let examples = dist.join("plugins");
    let twenty = scratch.path().join("twenty");
    std::fs::create_dir(&twenty)?;
    copy_plugins(&examples, &twenty, None)?;
    copy_plugins(&dist.join("test-plugins"), &twenty, Some(&TEST_PLUGINS))?;

    for (label, folder) in [("the 9 examples", &examples), ("20 plugins", &twenty)] {
        let plugins = std::fs::read_dir(folder)?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "wasm"))
            .count();
        let cache = scratch.path().join(format!("cache-{plugins}"));
        println!("\n## Start to `tools/list` answered: {label} ({plugins} files)");
        let (cold, listed) = start(folder, &cache, scratch.path())?;
        // A slow describe() may time out while the others compile: the
        // warm starts list every tool.
        println!("empty cache: {} ({listed} tools listed)", ms(cold));
        let mut warm = Vec::with_capacity(starts);
        let mut tools = None;
        for _ in 0..starts {
            let (t, listed) = start(folder, &cache, scratch.path())?;
            let first = *tools.get_or_insert(listed);
            anyhow::ensure!(listed == first, "{first} tools listed, then {listed}");
            warm.push(t);
        }
        println!("{} tools listed", tools.unwrap_or(0));
        warm.sort();
        println!(
            "warm cache: median {}  p90 {}  best {} ({starts} starts)",
            ms(percentile(&warm, 0.5)),
            ms(percentile(&warm, 0.9)),
            ms(warm[0]),
        );
    }
    Ok(())
}

/// Copy the plugins of `from` (all, or those `named`) with their manifests
/// into `to`, the manifests' relative paths made absolute.
fn copy_plugins(from: &Path, to: &Path, named: Option<&[&str]>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let path = entry?.path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if named.is_some_and(|n| !n.contains(&stem)) {
            continue;
        }
        let target = to.join(path.file_name().context("a file name")?);
        match path.extension().and_then(|x| x.to_str()) {
            Some("wasm") => {
                std::fs::copy(&path, &target)?;
            }
            Some("toml") => {
                let base = format!("\"{}/", from.display());
                let text = std::fs::read_to_string(&path)?.replace("\"../", &format!("{base}../"));
                std::fs::write(&target, text)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Spawn `toolhost serve` on `folder`, send `initialize` and `tools/list`:
/// the time from spawn to the list, and how many tools it had.
fn start(folder: &Path, cache: &Path, scratch: &Path) -> anyhow::Result<(Duration, usize)> {
    let state = tempfile::tempdir_in(scratch)?;
    let t = Instant::now();
    let mut server = Server::spawn(&[
        "--plugins".as_ref(),
        folder.as_os_str(),
        "--cache-dir".as_ref(),
        cache.as_os_str(),
        "--state".as_ref(),
        state.path().join("tasks.db").as_os_str(),
        "serve".as_ref(),
    ])?;
    server.send(json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": { "name": "start-bench", "version": "0.1.0" }
        }
    }))?;
    server.answer(1)?;
    server.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))?;
    server.send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}))?;
    let list = server.answer(2)?;
    let elapsed = t.elapsed();
    let tools = list
        .pointer("/result/tools")
        .and_then(Value::as_array)
        .with_context(|| format!("tools/list failed: {list}"))?
        .len();
    server.stop()?;
    Ok((elapsed, tools))
}

struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Server {
    fn spawn(args: &[&std::ffi::OsStr]) -> anyhow::Result<Self> {
        let binary = std::env::var_os("TOOLHOST_BIN").map_or_else(
            || PathBuf::from(env!("CARGO_BIN_EXE_toolhost")),
            PathBuf::from,
        );
        let mut child = Command::new(binary)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting toolhost serve")?;
        let stdin = child.stdin.take().context("stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("stdout")?);
        Ok(Self {
            child,
            stdin: Some(stdin),
            stdout,
        })
    }

    fn send(&mut self, message: Value) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("stdin closed")?;
        writeln!(stdin, "{message}")?;
        stdin.flush()?;
        Ok(())
    }

    /// The answer to request `id`; notifications before it are skipped.
    fn answer(&mut self, id: u64) -> anyhow::Result<Value> {
        let mut line = String::new();
        loop {
            line.clear();
            anyhow::ensure!(
                self.stdout.read_line(&mut line)? > 0,
                "the server closed stdout"
            );
            let message: Value = serde_json::from_str(&line)?;
            if message["id"] == id {
                return Ok(message);
            }
        }
    }

    /// Close stdin, as a client that goes, and wait for the exit.
    fn stop(mut self) -> anyhow::Result<()> {
        drop(self.stdin.take());
        let status = self.child.wait()?;
        anyhow::ensure!(status.success(), "toolhost serve exited with {status}");
        Ok(())
    }
}
