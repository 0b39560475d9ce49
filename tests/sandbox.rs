//! The sandbox is deny-by-default: files, environment and network reach a
//! plugin only when its manifest grants them. Hostile plugins are stopped
//! while a good plugin beside them keeps answering.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use common::*;
use toolhost::CallError;

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

#[tokio::test]
async fn read_only_directories_cannot_be_written() {
    let data = tempfile::tempdir().expect("dir");
    let folder = Folder::new();
    folder.add_with_manifest(
        &example("rust-files"),
        "rust-files",
        &format!(
            "[permissions]\ndirs = [{{ host = {:?}, guest = \"/data\" }}]\n",
            data.path()
        ),
    );
    std::fs::write(data.path().join("notes.txt"), "alpha\nbeta needle\n").expect("write");
    let (host, report) = host_for(&folder).await;
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    let o = host.call("search_text", r#"{"query": "needle"}"#).await;
    let out = text(&o);
    assert!(
        out.contains("notes.txt") && out.contains("beta needle"),
        "{out}"
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
    // SAFETY of the test: only this test reads these names.
    unsafe_env("TOOLHOST_TEST_GRANTED", "granted value");
    unsafe_env("TOOLHOST_TEST_SECRET", "secret value");
    let folder = Folder::new();
    folder.add_with_manifest(
        &test_plugin("env-read"),
        "env-read",
        "[permissions]\nenv = [\"TOOLHOST_TEST_GRANTED\"]\n",
    );
    let (host, _) = host_for(&folder).await;
    let o = host
        .call("read_env", r#"{"name": "TOOLHOST_TEST_GRANTED"}"#)
        .await;
    assert_eq!(text(&o), "granted value");
    let o = host
        .call("read_env", r#"{"name": "TOOLHOST_TEST_SECRET"}"#)
        .await;
    assert!(failed(&o).contains("not set"));
    let o = host.call("read_env", r#"{"name": "PATH"}"#).await;
    assert!(failed(&o).contains("not set"));
}

#[allow(unsafe_code)]
fn unsafe_env(k: &str, v: &str) {
    // SAFETY: set before any host thread reads the environment in this test
    // binary; no other test touches these variables.
    unsafe { std::env::set_var(k, v) }
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

#[tokio::test]
async fn a_stdout_flood_is_truncated_without_trapping_the_plugin() {
    let (host, _f) = host_with(&["flood", "behave"]).await;
    let o = host.call("flood", r#"{"bytes": 20000000}"#).await;
    assert_eq!(text(&o), "flooded");
    assert_eq!(text(&host.call("ok", "{}").await), "ok");
}

#[tokio::test]
async fn a_good_plugin_answers_while_hostile_ones_run() {
    let folder = Folder::new();
    folder.add(&example("rust-compute"), "rust-compute");
    for bad in ["membomb", "recurse", "flood", "panic"] {
        folder.add(&test_plugin(bad), bad);
    }
    folder.add_with_manifest(&test_plugin("spin"), "spin", "[limits]\ntimeout = \"3s\"\n");
    let (host, report) = host_for(&folder).await;
    assert!(report.refused.is_empty(), "{:?}", report.refused);

    let bad_calls = tokio::spawn({
        let host = host.clone();
        async move {
            tokio::join!(
                host.call("spin", "{}"),
                host.call("spin", "{}"),
                host.call("membomb", "{}"),
                host.call("recurse", "{}"),
                host.call("flood", r#"{"bytes": 5000000}"#),
                host.call("panic", "{}"),
            )
        }
    });
    // While two spinning calls occupy both cores, the good tool answers.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..20 {
        let o = host.call("word_count", r#"{"text": "still here"}"#).await;
        assert!(text(&o).contains('2'));
    }
    assert!(
        !bad_calls.is_finished(),
        "the spinning calls are still running"
    );
    let (s1, s2, m, r, f, p) = bad_calls.await.expect("join");
    assert!(s1.result.is_err() && s2.result.is_err() && m.result.is_err());
    assert!(r.result.is_err() && p.result.is_err());
    assert!(f.result.is_ok());
}
