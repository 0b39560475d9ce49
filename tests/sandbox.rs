//! The sandbox is deny-by-default: files, environment and network reach a
//! plugin only when its manifest grants them. Hostile plugins are stopped
//! while a good plugin beside them keeps answering.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::common::*;
use toolhost::CallError;

/// What the README documents a plugin's stdout and stderr may log per call.
const OUTPUT_BUDGET: usize = 64 * 1024;

fn failed(o: &toolhost::CallOutcome) -> String {
    match &o.result {
        Err(CallError::ToolFailed(m)) => m.clone(),
        other => panic!("expected a tool failure, got {other:?}"),
    }
}

#[tokio::test]
async fn files_are_reachable_only_inside_a_granted_directory() {
    let data = tempfile::tempdir().expect("dir");
    std::fs::write(data.path().join("inside.txt"), "inside text").expect("write");
    let outside = tempfile::tempdir().expect("dir");
    std::fs::write(outside.path().join("secret.txt"), "secret").expect("write");

    let folder = Folder::new();
    folder.add_with_manifest(
        &test_plugin("escape"),
        "escape",
        &format!(
            "[permissions]\ndirs = [{{ host = {:?}, guest = \"/data\" }}]\n",
            data.path()
        ),
    );
    let (host, report) = host_for(&folder).await;
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    let read = |path: String| {
        let host = host.clone();
        async move {
            host.call(
                "read_file",
                &serde_json::json!({ "path": path }).to_string(),
            )
            .await
        }
    };
    assert_eq!(text(&read("/data/inside.txt".into()).await), "inside text");
    let secret = outside.path().join("secret.txt");
    for attempt in [
        secret.display().to_string(),
        "/data/../secret.txt".into(),
        format!("/data/../../../../..{}", secret.display()),
        "/etc/passwd".into(),
    ] {
        let o = read(attempt.clone()).await;
        assert!(
            o.result.is_err(),
            "{attempt} must not be readable: {:?}",
            o.result
        );
    }
}

/// Every file and folder under `dir`, with the content of the files.
fn snapshot(dir: &Path) -> BTreeMap<String, Option<String>> {
    let mut all = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir").flatten() {
            let path = entry.path();
            let name = path
                .strip_prefix(dir)
                .expect("under dir")
                .display()
                .to_string();
            if path.is_dir() {
                all.insert(name, None);
                stack.push(path);
            } else {
                all.insert(name, Some(std::fs::read_to_string(&path).expect("read")));
            }
        }
    }
    all
}

/// The changes `write_file` tries under `root`, one call each.
fn changes(root: &str) -> Vec<serde_json::Value> {
    use serde_json::json;
    vec![
        json!({"op": "create", "path": format!("{root}/new.txt")}),
        json!({"op": "append", "path": format!("{root}/keep.txt")}),
        json!({"op": "truncate", "path": format!("{root}/trunc.txt")}),
        json!({"op": "rename", "path": format!("{root}/trunc.txt"), "to": format!("{root}/renamed.txt")}),
        json!({"op": "remove", "path": format!("{root}/gone.txt")}),
        json!({"op": "mkdir", "path": format!("{root}/sub")}),
    ]
}

#[tokio::test]
async fn read_only_directories_cannot_be_written() {
    // The same files in a read-only grant and, to show the plugin's writes
    // are real, in a writable one.
    let read_only = tempfile::tempdir().expect("dir");
    let writable = tempfile::tempdir().expect("dir");
    for dir in [&read_only, &writable] {
        for name in ["keep.txt", "trunc.txt", "gone.txt"] {
            std::fs::write(dir.path().join(name), name).expect("write");
        }
    }
    let folder = Folder::new();
    folder.add_with_manifest(
        &test_plugin("escape"),
        "escape",
        &format!(
            "[permissions]\ndirs = [\n  {{ host = {:?}, guest = \"/ro\" }},\n  {{ host = {:?}, guest = \"/rw\", write = true }},\n]\n",
            read_only.path(),
            writable.path()
        ),
    );
    let (host, report) = host_for(&folder).await;
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    let before = snapshot(read_only.path());

    let o = host.call("read_file", r#"{"path": "/ro/keep.txt"}"#).await;
    assert_eq!(text(&o), "keep.txt", "a read-only directory is readable");
    for change in changes("/ro") {
        let o = host.call("write_file", &change.to_string()).await;
        let message = failed(&o);
        assert!(message.contains("cannot change"), "{change}: {message}");
    }
    assert_eq!(
        snapshot(read_only.path()),
        before,
        "nothing changed on the host"
    );

    for change in changes("/rw") {
        let o = host.call("write_file", &change.to_string()).await;
        assert_eq!(text(&o), "written", "{change}");
    }
    let after: Vec<(String, Option<String>)> = snapshot(writable.path()).into_iter().collect();
    let file = |name: &str, text: &str| (name.to_owned(), Some(text.to_owned()));
    assert_eq!(
        after,
        [
            file("keep.txt", "keep.txt appended by the plugin"),
            file("new.txt", "written by the plugin"),
            file("renamed.txt", ""),
            ("sub".to_owned(), None),
        ]
    );
}

#[tokio::test]
async fn without_a_manifest_a_plugin_sees_no_files() {
    let (host, _f) = host_with(&["escape"]).await;
    let o = host.call("read_file", r#"{"path": "/etc/passwd"}"#).await;
    assert!(o.result.is_err(), "{:?}", o.result);
    let o = host
        .call("read_file", r#"{"path": "/data/anything"}"#)
        .await;
    assert!(o.result.is_err(), "{:?}", o.result);
}

#[tokio::test]
async fn environment_variables_reach_a_plugin_only_when_granted() {
    // Variables cargo sets for test processes, read here and never set:
    // setting one would race the other test threads.
    let granted = std::env::var("CARGO_PKG_NAME").expect("cargo sets CARGO_PKG_NAME for tests");
    let folder = Folder::new();
    folder.add_with_manifest(
        &test_plugin("env-read"),
        "env-read",
        "[permissions]\nenv = [\"CARGO_PKG_NAME\"]\n",
    );
    let (host, report) = host_for(&folder).await;
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    let o = host.call("read_env", r#"{"name": "CARGO_PKG_NAME"}"#).await;
    assert_eq!(text(&o), granted);
    for name in ["PATH", "CARGO_MANIFEST_DIR"] {
        assert!(
            std::env::var_os(name).is_some(),
            "the test process has {name}"
        );
        let o = host
            .call("read_env", &serde_json::json!({ "name": name }).to_string())
            .await;
        let message = failed(&o);
        assert!(message.contains("not set"), "{name}: {message}");
    }
}

/// A line echo server on 127.0.0.1 that answers `pong` to each connection.
fn echo_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().take(16).flatten() {
            let mut line = String::new();
            let mut reader = BufReader::new(&stream);
            if reader.read_line(&mut line).is_ok() {
                let _ = (&stream).write_all(b"pong\n");
            }
        }
    });
    addr
}

#[tokio::test]
async fn sockets_connect_only_to_granted_addresses() {
    let granted = echo_server();
    let other = echo_server();
    let folder = Folder::new();
    folder.add_with_manifest(
        &test_plugin("net-connect"),
        "net-connect",
        &format!("[permissions]\nnetwork = [\"{granted}\"]\n"),
    );
    let (host, _) = host_for(&folder).await;
    let o = host
        .call("connect", &format!(r#"{{"addr": "{granted}"}}"#))
        .await;
    assert_eq!(text(&o).trim(), "pong");
    let o = host
        .call("connect", &format!(r#"{{"addr": "{other}"}}"#))
        .await;
    assert!(o.result.is_err(), "{:?}", o.result);
}

#[tokio::test]
async fn without_a_grant_no_socket_connects() {
    let addr = echo_server();
    let (host, _f) = host_with(&["net-connect"]).await;
    let o = host
        .call("connect", &format!(r#"{{"addr": "{addr}"}}"#))
        .await;
    assert!(o.result.is_err(), "{:?}", o.result);
}

/// An HTTP server on 127.0.0.1 answering every request with `hello from <path>`.
fn http_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for mut stream in listener.incoming().take(16).flatten() {
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req.split_whitespace().nth(1).unwrap_or("/").to_owned();
            let body = format!("hello from {path}");
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

#[tokio::test]
async fn http_fetch_reaches_granted_hosts_only() {
    let granted = http_server();
    let other = http_server();
    let folder = Folder::new();
    folder.add_with_manifest(
        &example("rust-fetch"),
        "rust-fetch",
        &format!("[permissions]\nnetwork = [\"{granted}\"]\n"),
    );
    let (host, report) = host_for(&folder).await;
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    let o = host
        .call(
            "http_get",
            &format!(r#"{{"url": "http://{granted}/page"}}"#),
        )
        .await;
    let out = text(&o);
    assert!(
        out.contains("hello from /page") && out.contains("200"),
        "{out}"
    );
    let o = host
        .call("http_get", &format!(r#"{{"url": "http://{other}/page"}}"#))
        .await;
    let msg = failed(&o);
    assert!(msg.contains("denied"), "{msg}");
}

/// One `tracing` event the host logged: its message and fields as text.
#[derive(Debug, Default)]
struct Logged {
    message: String,
    fields: BTreeMap<String, String>,
}

impl tracing::field::Visit for Logged {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let value = format!("{value:?}");
        if field.name() == "message" {
            self.message = value;
        } else {
            self.fields.insert(field.name().to_owned(), value);
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        // Strings without the quotes Debug adds.
        if field.name() == "message" {
            value.clone_into(&mut self.message);
        } else {
            self.fields
                .insert(field.name().to_owned(), value.to_owned());
        }
    }
}

/// Every event the host logs in this test binary, kept in memory.
struct Capture(Arc<Mutex<Vec<Logged>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut logged = Logged::default();
        event.record(&mut logged);
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(logged);
    }
}

/// The host's own log (not its dependencies') in this test binary, from
/// the first call of this function on.
fn host_log() -> Arc<Mutex<Vec<Logged>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<Logged>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        use tracing_subscriber::Layer;
        use tracing_subscriber::layer::SubscriberExt;
        let log = Arc::new(Mutex::new(Vec::new()));
        let ours = tracing_subscriber::filter::filter_fn(|m| m.target().starts_with("toolhost"));
        let subscriber =
            tracing_subscriber::registry().with(Capture(log.clone()).with_filter(ours));
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        log
    })
    .clone()
}

#[tokio::test]
async fn a_stdout_flood_is_truncated_without_trapping_the_plugin() {
    const STDOUT: usize = 20_000_000;
    let log = host_log();
    let (host, _f) = host_with(&["flood", "behave"]).await;
    let o = host
        .call("flood", &format!(r#"{{"bytes": {STDOUT}}}"#))
        .await;
    assert_eq!(text(&o), "flooded", "not trapped");
    assert_eq!(text(&host.call("ok", "{}").await), "ok");

    let log = log.lock().unwrap_or_else(|p| p.into_inner());
    let call_id = o.call_id.as_str();
    let of_call = |stream: &'static str| {
        log.iter().filter(move |e| {
            e.fields.get("call_id").map(String::as_str) == Some(call_id)
                && e.fields.get("stream").map(String::as_str) == Some(stream)
        })
    };
    // stdout gets `bytes`, stderr a tenth of it (the flood plugin).
    for (stream, written) in [("stdout", STDOUT), ("stderr", STDOUT / 10)] {
        let lines: Vec<&Logged> = of_call(stream)
            .filter(|e| e.message != "plugin output truncated")
            .collect();
        let logged: usize = lines.iter().map(|e| e.message.len()).sum();
        assert!(
            logged > 0 && logged <= OUTPUT_BUDGET,
            "{stream}: {logged} bytes logged, budget {OUTPUT_BUDGET}"
        );
        let warnings: Vec<&Logged> = of_call(stream)
            .filter(|e| e.message == "plugin output truncated")
            .collect();
        assert_eq!(warnings.len(), 1, "{stream}: one truncation warning");
        let dropped: usize = warnings[0].fields["dropped_bytes"]
            .parse()
            .expect("a byte count");
        // What was neither logged nor dropped is the newlines between lines.
        assert!(
            dropped + logged <= written && dropped + logged + lines.len() >= written,
            "{stream}: {dropped} dropped + {logged} logged in {} lines of {written} written",
            lines.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_plugin_answers_while_hostile_ones_run() {
    let folder = Folder::new();
    folder.add(&example("rust-compute"), "rust-compute");
    for bad in ["membomb", "recurse", "flood", "panic"] {
        folder.add(&test_plugin(bad), bad);
    }
    // `spin` runs until the session stops it, whatever the machine's speed.
    folder.add_with_manifest(
        &test_plugin("spin"),
        "spin",
        "[limits]\nfuel = 1_000_000_000_000_000\ntimeout = \"1h\"\n",
    );
    let (host, report) = host_for(&folder).await;
    assert!(report.refused.is_empty(), "{:?}", report.refused);

    let mut options = toolhost::SessionOptions::default();
    options.close_timeout = Duration::ZERO;
    let bad = host.open_session(options);
    let mut events = bad.subscribe();
    let spins = [
        spawn_call(&bad, "spin1", "spin", "{}"),
        spawn_call(&bad, "spin2", "spin", "{}"),
    ];
    for _ in 0..2 {
        event(&mut events, "both spins started", |e| {
            matches!(e.kind, toolhost::EventKind::Started)
        })
        .await;
    }
    let others = tokio::spawn({
        let host = host.clone();
        async move {
            tokio::join!(
                host.call("membomb", "{}"),
                host.call("recurse", "{}"),
                host.call("flood", r#"{"bytes": 5000000}"#),
                host.call("panic", "{}"),
            )
        }
    });
    // While two spinning calls occupy both worker threads, the good tool
    // answers.
    for _ in 0..20 {
        let o = host.call("word_count", r#"{"text": "still here"}"#).await;
        assert!(text(&o).contains('2'));
    }
    for id in ["spin1", "spin2"] {
        let r = bad.record(id).expect("record");
        assert!(r.status.is_live(), "{id} still spins: {r:?}");
    }
    let (m, r, f, p) = others.await.expect("join");
    assert!(m.result.is_err() && r.result.is_err() && p.result.is_err());
    assert!(f.result.is_ok());
    tokio::time::timeout(WAIT, bad.close())
        .await
        .expect("closing stops the spinning calls");
    for (id, spin) in ["spin1", "spin2"].into_iter().zip(spins) {
        spin.await.expect("join");
        assert_eq!(
            bad.record(id).expect("record").status,
            toolhost::CallStatus::Cancelled
        );
    }
}
