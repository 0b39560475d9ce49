//! Shared by the integration tests: where the built plugins are, and hosts
//! set up for tests.
#![allow(dead_code)]

pub mod http;
pub mod stdio;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use toolhost::{Host, HostConfig};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_owned()
}

fn built(dir: &str, name: &str) -> PathBuf {
    let path = root().join("dist").join(dir).join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run tools/build-plugins first",
        path.display()
    );
    path
}

/// The task store every `toolhost` the tests start shares (B31), so that
/// tests leave the user's own store alone. Sharing it is what users do too:
/// each host marks only the calls of hosts that are gone. Each run of a
/// test binary starts it empty: a run writes some 370 MB of records (the
/// memory checks send thousands of 50 KB arguments), which would otherwise
/// pile up run after run.
pub fn test_state() -> PathBuf {
    static FRESH: OnceLock<PathBuf> = OnceLock::new();
    FRESH
        .get_or_init(|| {
            let dir = root().join("target").join("test-state");
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    panic!("cannot empty {}: {e}", dir.display())
                }
                _ => {}
            }
            dir.join("tasks.db")
        })
        .clone()
}

/// Run the `toolhost` binary, with the tests' compile cache: whether it
/// succeeded, its stdout and its stderr.
pub fn toolhost(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_toolhost"))
        .args(args)
        .env(
            "TOOLHOST_CACHE_DIR",
            root().join("target").join("toolhost-test-cache"),
        )
        .env("TOOLHOST_STATE", test_state())
        .output()
        .expect("run toolhost");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A built example plugin, `dist/plugins/NAME.wasm`.
pub fn example(name: &str) -> PathBuf {
    built("plugins", name)
}

/// A built test plugin, `dist/test-plugins/NAME.wasm`.
pub fn test_plugin(name: &str) -> PathBuf {
    built("test-plugins", name)
}

/// Host settings for tests: a small instance pool and a compile cache
/// shared by all test runs.
pub fn config() -> HostConfig {
    let mut config = HostConfig::default();
    config.engine.instances = 64;
    config.cache_dir = Some(root().join("target").join("toolhost-test-cache"));
    config
}

/// A folder holding copies of the given plugins (and manifests given as
/// `(name, toml)`), so a test controls exactly what a host loads.
pub struct Folder {
    pub dir: tempfile::TempDir,
}

impl Folder {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Copy `wasm` in as `NAME.wasm`.
    pub fn add(&self, wasm: &Path, name: &str) -> PathBuf {
        let to = self.path().join(format!("{name}.wasm"));
        std::fs::copy(wasm, &to).expect("copy plugin");
        to
    }

    /// Copy `wasm` in as `NAME.wasm` with the manifest text `toml`.
    pub fn add_with_manifest(&self, wasm: &Path, name: &str, toml: &str) -> PathBuf {
        std::fs::write(self.path().join(format!("{name}.toml")), toml).expect("write manifest");
        self.add(wasm, name)
    }

    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let to = self.path().join(name);
        std::fs::write(&to, bytes).expect("write file");
        to
    }
}

/// A host that has loaded `folder`, and the refusals.
pub async fn host_for(folder: &Folder) -> (Host, toolhost::LoadReport) {
    let host = Host::new(config()).expect("host");
    let report = host.load_dir(folder.path()).await.expect("load");
    (host, report)
}

/// A host serving the given test plugins, each under its own name.
pub async fn host_with(test_plugins: &[&str]) -> (Host, Folder) {
    let folder = Folder::new();
    for name in test_plugins {
        folder.add(&test_plugin(name), name);
    }
    let (host, report) = host_for(&folder).await;
    assert!(report.refused.is_empty(), "refused: {:?}", report.refused);
    (host, folder)
}

/// The text of a successful call, or a panic with the error.
pub fn text(outcome: &toolhost::CallOutcome) -> String {
    match &outcome.result {
        Ok(o) => o.model_text().unwrap_or_default(),
        Err(e) => panic!("{} failed: {e:?}", outcome.tool),
    }
}

/// Wait until the call has ended: its final record.
pub async fn ended(s: &toolhost::Session, call_id: &str) -> toolhost::CallRecord {
    tokio::time::timeout(WAIT, s.ended(call_id))
        .await
        .unwrap_or_else(|_| panic!("{call_id} did not end"))
        .unwrap_or_else(|| panic!("{call_id} has no record"))
}

/// How long a test waits for something that should happen; reaching it
/// fails the test (no test asserts how quickly something happens).
pub const WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Start a session call in the background; its answer arrives on the handle.
pub fn spawn_call(
    s: &toolhost::Session,
    id: &str,
    tool: &str,
    args: &str,
) -> tokio::task::JoinHandle<toolhost::Answer> {
    let (s, id, tool, args) = (s.clone(), id.to_owned(), tool.to_owned(), args.to_owned());
    tokio::spawn(async move { s.call(&id, &tool, &args).await })
}

/// The next event that `pred` accepts, skipping the others; fails the test
/// after [`WAIT`].
pub async fn event(
    events: &mut tokio::sync::broadcast::Receiver<toolhost::CallEvent>,
    what: &str,
    mut pred: impl FnMut(&toolhost::CallEvent) -> bool,
) -> toolhost::CallEvent {
    tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Ok(e) if pred(&e) => return e,
                Ok(_) => {}
                Err(e) => panic!("event stream: {e} while waiting for {what}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no event: {what}"))
}

/// Whether `e` is the start of `call_id`.
pub fn started(e: &toolhost::CallEvent, call_id: &str) -> bool {
    e.call_id == call_id && matches!(e.kind, toolhost::EventKind::Started)
}

/// Whether `e` is the end of `call_id`.
pub fn ended_event(e: &toolhost::CallEvent, call_id: &str) -> bool {
    e.call_id == call_id && matches!(e.kind, toolhost::EventKind::Ended { .. })
}

/// Why `file` (a file name) was refused, from a load report.
pub fn refusal(report: &toolhost::LoadReport, file: &str) -> String {
    report
        .refused
        .iter()
        .find(|e| e.path.file_name().is_some_and(|n| n == file))
        .map(|e| e.reason())
        .unwrap_or_else(|| panic!("{file} was not refused; refused: {:?}", report.refused))
}

/// `toolhost serve --http 127.0.0.1:0 [ARGS]` over a folder, its URL read
/// from its stderr, which it keeps as a log; stopped when dropped.
pub struct HttpServer {
    child: std::process::Child,
    pub url: String,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl HttpServer {
    pub fn start(folder: &Folder, args: &[&str]) -> Self {
        let mut command = vec![
            "-v".as_ref(),
            "--plugins".as_ref(),
            folder.path().as_os_str(),
        ];
        command.extend(["serve", "--http", "127.0.0.1:0"].map(std::ffi::OsStr::new));
        command.extend(args.iter().map(std::ffi::OsStr::new));
        let (child, url, log) = start_announcing(
            &command,
            "toolhost: serving MCP on ",
            std::time::Duration::from_secs(60),
        );
        Self { child, url, log }
    }

    /// The server's process id (to read its memory in /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether the server logs `text` within [`WAIT`]. Its stderr is read
    /// by a thread of the test's own, which on a busy machine may lag
    /// behind what the server has done and the client has seen.
    pub fn logs(&self, text: &str) -> bool {
        let deadline = std::time::Instant::now() + WAIT;
        while !self.log().contains(text) {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        true
    }

    /// The dashboard's address and the token it printed with it.
    pub fn dashboard(&self) -> (String, String) {
        let printed = "toolhost: dashboard on ";
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let log = self.log();
            if let Some(line) = log.lines().find_map(|l| l.strip_prefix(printed)) {
                let (base, token) = line.split_once("?token=").expect("a token");
                return (base.to_owned(), token.to_owned());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no dashboard line:\n{log}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `toolhost ARGS` started with the tests' compile cache and task store,
/// its stderr read to its end (so it never blocks on it) into the log
/// returned; and what follows `announce` on the first line that starts
/// with it (where it listens), waited for up to `wait`.
pub fn start_announcing(
    args: &[&std::ffi::OsStr],
    announce: &'static str,
    wait: std::time::Duration,
) -> (
    std::process::Child,
    String,
    std::sync::Arc<std::sync::Mutex<String>>,
) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_toolhost"))
        .args(args)
        .env(
            "TOOLHOST_CACHE_DIR",
            root().join("target").join("toolhost-test-cache"),
        )
        .env("TOOLHOST_STATE", test_state())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start toolhost {args:?}: {e}"));
    let stderr = child.stderr.take().expect("stderr");
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix(announce) {
                let _ = tx.send(rest.to_owned());
            }
            let mut log = sink.lock().unwrap_or_else(|p| p.into_inner());
            log.push_str(&line);
            log.push('\n');
        }
    });
    let announced = rx
        .recv_timeout(wait)
        .unwrap_or_else(|_| panic!("toolhost {args:?} printed no {announce:?}"));
    (child, announced, log)
}

/// A finished process's status, stdout and stderr, for a failure message.
pub fn show(what: &str, out: &std::process::Output) -> String {
    format!(
        "{what}: {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
