//! A long run of `toolhost serve` over stdio (issue 11): many `tools/call`s
//! of `word_count`, pipelined over raw JSON-RPC, must leave the host's
//! memory where it was after a warm-up. Calls are not kept for ever (a
//! session keeps its last 1 000 finished records), so per-call memory that
//! stays behind shows up here.
//!
//! "Where it was" is the most the host held in the first quarter of the
//! calls, sampled every 1 000 from the warm-up on: one sample alone moved
//! by about 17 MiB from run to run (the same build gave 50.0 and 67.5 MiB
//! after 5 000 calls), which let a run with a low first sample fail.
//!
//! The host's task store is on tmpfs where there is room for it: this
//! measures memory the host keeps, not the disk. On a slow disk, writes
//! wait in the store's queue, bounded at 64 MiB (the store's tests check
//! the bound), and given back once the writer catches up; with 5 ms added
//! to every write (`strace -e inject`), the host grew from 18 to 47 MiB
//! over 20 000 calls. The test fails if the store dropped a record, so a
//! full tmpfs cannot pass for a soak of the store.
//!
//! The always-run version makes 20 000 calls; the issue's 200 000-call soak
//! is ignored by default (minutes in the debug build):
//!
//! ```sh
//! cargo test --test integration soak:: -- --ignored --nocapture
//! ```

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{Folder, example, root};

/// Requests in flight at once.
const WINDOW: u64 = 32;
/// Calls made before the starting RSS is first read.
const WARM_UP: u64 = 5_000;
/// Answers between two readings of the starting RSS.
const SAMPLE_EVERY: u64 = 1_000;
/// How much the host's RSS may grow between the warm-up and the end.
const GROWTH: f64 = 0.10;
/// How long one answer may take before the test fails.
const WAIT: Duration = Duration::from_secs(60);

/// The resident memory of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kib * 1024
}

struct Served {
    child: Child,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Make `calls` calls of `word_count`, `WINDOW` at a time; the host's
/// highest RSS from the warm-up to a quarter of the calls, and its RSS at
/// the end.
fn soak(calls: u64) -> (u64, u64) {
    let folder = Folder::new();
    folder.add(&example("rust-compute"), "rust-compute");
    // Every call is recorded in a task store of its own, as `serve` does
    // by default (B31).
    let state = store_dir(calls);
    // Not beside the store: a full tmpfs would cut the log short too.
    let mut log = tempfile::tempfile().expect("a file for the host's log");
    let child = Command::new(env!("CARGO_BIN_EXE_toolhost"))
        .arg("--plugins")
        .arg(folder.path())
        .arg("--state")
        .arg(state.path().join("tasks.db"))
        .arg("--cache-dir")
        .arg(root().join("target/toolhost-test-cache"))
        .arg("serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log.try_clone().expect("the host's log"))
        // The default level, whatever the test runs under: the check below
        // reads the store's warnings.
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("start toolhost serve");
    let mut served = Served { child };
    let pid = served.child.id();
    let mut stdin = served.child.stdin.take().expect("stdin");
    let stdout = served.child.stdout.take().expect("stdout");

    // Each answer, checked, as its id (0 for `initialize`).
    let (tx, answers) = mpsc::channel::<u64>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            let m: Value = serde_json::from_str(&line).expect("a JSON line");
            let Some(id) = m.get("id").and_then(Value::as_u64) else {
                continue;
            };
            if id > 0 {
                let text = m["result"]["content"][0]["text"].as_str();
                assert_eq!(text, Some("3 words, 1 lines, 11 characters"), "{m}");
            }
            if tx.send(id).is_err() {
                return;
            }
        }
    });
    let mut send = |m: Value| writeln!(stdin, "{m}").expect("write to toolhost");
    send(json!({
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": { "name": "soak", "version": "0" }
        }
    }));
    assert_eq!(answers.recv_timeout(WAIT), Ok(0), "initialize");
    send(json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }));

    let call = |id: u64| {
        json!({
            "jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": { "name": "word_count", "arguments": { "text": "one two six" } }
        })
    };
    let (mut sent, mut answered) = (0u64, 0u64);
    let mut start: Option<u64> = None;
    let until = baseline_until(calls);
    while answered < calls {
        if sent < calls && sent - answered < WINDOW {
            sent += 1;
            send(call(sent));
            continue;
        }
        answers
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("no answer after {answered} of {calls} calls"));
        answered += 1;
        if (WARM_UP..=until).contains(&answered) && answered % SAMPLE_EVERY == 0 {
            start = start.max(Some(rss(pid)));
        }
    }
    let end = rss(pid);
    drop(served);
    let mut logged = String::new();
    log.seek(SeekFrom::Start(0)).expect("the host's log");
    log.read_to_string(&mut logged).expect("the host's log");
    assert!(
        !logged.contains("task store"),
        "the task store in {} dropped records:\n{}",
        state.path().display(),
        logged.lines().take(10).collect::<Vec<_>>().join("\n")
    );
    (start.expect("more calls than the warm-up"), end)
}

/// A folder for the task store of `calls` calls: on tmpfs if it has room
/// (4 KiB a call; a record takes about 1 KiB of database and journal),
/// else in the temporary folder.
fn store_dir(calls: u64) -> tempfile::TempDir {
    let tmpfs = "/dev/shm";
    let room = rustix::fs::statvfs(tmpfs).map_or(0, |s| s.f_bavail * s.f_frsize);
    let dir = if room >= calls * 4096 {
        tempfile::tempdir_in(tmpfs)
    } else {
        tempfile::tempdir()
    };
    let dir = dir.expect("temp dir");
    println!("task store in {}", dir.path().display());
    dir
}

/// The last call after which the starting RSS is read: a quarter of
/// `calls`, or the warm-up if that is later.
fn baseline_until(calls: u64) -> u64 {
    WARM_UP.max(calls / 4)
}

fn check(calls: u64) {
    let (start, end) = soak(calls);
    let growth = end as f64 / start as f64 - 1.0;
    let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
    let until = baseline_until(calls);
    let before = match until > WARM_UP {
        true => format!(
            "at most {:.1} MiB from {WARM_UP} to {until} calls",
            mib(start)
        ),
        false => format!("{:.1} MiB after {WARM_UP} calls", mib(start)),
    };
    println!(
        "{calls} calls: host RSS {before}, {:.1} MiB at the end ({:+.1} %)",
        mib(end),
        growth * 100.0
    );
    assert!(
        growth <= GROWTH,
        "the host's RSS grew {:.1} % over {calls} calls",
        growth * 100.0
    );
}

#[test]
fn twenty_thousand_stdio_calls_leave_the_hosts_memory_where_it_was() {
    check(20_000);
}

#[test]
#[ignore = "minutes in the debug build: cargo test --test integration soak:: -- --ignored --nocapture"]
fn two_hundred_thousand_stdio_calls_leave_the_hosts_memory_where_it_was() {
    check(200_000);
}
