//! `toolhost serve` against real third-party MCP clients: the Python SDK
//! (`mcp` from PyPI, driven by `tests/mcp/client.py`) and the MCP
//! Inspector's CLI (from npm), over stdio and streamable HTTP.
//!
//! `tools/test` installs both (a venv in `target/mcp-venv`, `npm ci` in
//! `tests/mcp`). Python scenarios run under both protocol eras: `auto`
//! negotiates 2026-07-28, `legacy` forces the `initialize` handshake.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{Folder, HttpServer, example, root, show, test_plugin};

const TOOLHOST: &str = env!("CARGO_BIN_EXE_toolhost");

/// The served folder: behave, with a manifest that lets a spinning call
/// run long enough for a slow client to cancel it, and stops it soon after
/// the cancel (B21).
fn folder() -> Folder {
    let folder = Folder::new();
    folder.add_with_manifest(
        &test_plugin("behave"),
        "behave",
        "[limits]\nfuel = 1_000_000_000_000\ncancel-grace = \"200ms\"\n",
    );
    folder
}

fn cache_dir() -> PathBuf {
    root().join("target").join("toolhost-test-cache")
}

fn python() -> PathBuf {
    let python = root().join("target/mcp-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run tools/test, which installs the MCP clients",
        python.display()
    );
    python
}

fn inspector() -> PathBuf {
    let bin = root().join("tests/mcp/node_modules/.bin/mcp-inspector");
    assert!(
        bin.exists(),
        "{} is missing: run tools/test, which installs the MCP clients",
        bin.display()
    );
    bin
}

enum Transport<'a> {
    Stdio(&'a Folder),
    Http(&'a HttpServer),
}

/// Run one scenario of `tests/mcp/client.py`; it checks the behaviour itself.
fn py(transport: Transport, mode: &str, scenario: &str, extra: &[&str]) -> String {
    let mut cmd = Command::new(python());
    cmd.arg(root().join("tests/mcp/client.py"))
        .args(["--mode", mode])
        .env("TOOLHOST_CACHE_DIR", cache_dir())
        .env("TOOLHOST_STATE", crate::common::test_state());
    match transport {
        Transport::Stdio(folder) => {
            cmd.args(["--stdio", TOOLHOST, "--plugins"])
                .arg(folder.path());
        }
        Transport::Http(server) => {
            cmd.args(["--url", &server.url]);
        }
    }
    let out = cmd
        .args(extra)
        .arg(scenario)
        .output()
        .expect("run client.py");
    assert!(
        out.status.success(),
        "{}",
        show(&format!("python {scenario} ({mode})"), &out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn py_stdio(mode: &str, scenario: &str) {
    let folder = folder();
    py(Transport::Stdio(&folder), mode, scenario, &[]);
}

fn py_http(mode: &str, scenario: &str) {
    let folder = folder();
    let server = HttpServer::start(&folder, &[]);
    py(Transport::Http(&server), mode, scenario, &[]);
}

fn py_list_changed(mode: &str, http: bool) {
    let folder = folder();
    let drop = example("rust-compute");
    let path = folder.path().to_string_lossy().into_owned();
    let extra = ["--folder", &path, "--drop", &drop.to_string_lossy()];
    if http {
        let server = HttpServer::start(&folder, &[]);
        py(Transport::Http(&server), mode, "list-changed", &extra);
    } else {
        py(Transport::Stdio(&folder), mode, "list-changed", &extra);
    }
}

// --- The Python SDK over stdio ---

#[test]
fn python_stdio_lists_tools_with_schemas_titles_and_companions() {
    py_stdio("auto", "list");
    py_stdio("legacy", "list");
}

#[test]
fn python_stdio_calls_a_tool_with_text_and_structured_data() {
    py_stdio("auto", "call");
}

#[test]
fn python_stdio_invalid_arguments_answer_with_is_error_naming_the_field() {
    py_stdio("auto", "invalid-arguments");
}

#[test]
fn python_stdio_updates_arrive_as_progress_and_the_first_answers() {
    py_stdio("auto", "progress");
    py_stdio("legacy", "progress");
}

#[test]
fn python_stdio_duplicates_are_rejected_or_need_confirming() {
    py_stdio("auto", "duplicates");
    py_stdio("legacy", "duplicates");
}

#[test]
fn python_stdio_cancelled_requests_cancel_their_calls() {
    py_stdio("auto", "cancel");
    py_stdio("legacy", "cancel");
}

#[test]
fn python_stdio_task_followed_to_completion() {
    py_stdio("auto", "task");
}

#[test]
fn python_stdio_task_cancelled_while_the_tool_spins() {
    py_stdio("auto", "task-cancel");
}

#[test]
fn python_stdio_list_changed_after_a_plugin_is_dropped_in() {
    py_list_changed("auto", false);
    py_list_changed("legacy", false);
}

// --- The Python SDK over streamable HTTP ---
//
// A 2026-07-28 request over HTTP has no session: each is a session of its
// own, closed when it ends (issue 11; tests/isolation.rs). The scenarios
// that follow a call up from a later request (progress, duplicates,
// cancel) therefore run in a legacy session only.

#[test]
fn python_http_lists_tools_with_schemas_titles_and_companions() {
    py_http("auto", "list");
    py_http("legacy", "list");
}

#[test]
fn python_http_calls_a_tool_with_text_and_structured_data() {
    py_http("auto", "call");
}

#[test]
fn python_http_invalid_arguments_answer_with_is_error_naming_the_field() {
    py_http("auto", "invalid-arguments");
}

#[test]
fn python_http_updates_arrive_as_progress_and_the_first_answers() {
    py_http("legacy", "progress");
}

#[test]
fn python_http_duplicates_are_rejected_or_need_confirming() {
    py_http("legacy", "duplicates");
}

#[test]
fn python_http_cancelled_requests_cancel_their_calls() {
    py_http("legacy", "cancel");
}

#[test]
fn python_http_task_followed_to_completion() {
    py_http("auto", "task");
}

#[test]
fn python_http_task_cancelled_while_the_tool_spins() {
    py_http("auto", "task-cancel");
}

#[test]
fn python_http_list_changed_after_a_plugin_is_dropped_in() {
    py_list_changed("auto", true);
    py_list_changed("legacy", true);
}

#[test]
fn http_refuses_a_foreign_host_header() {
    let folder = folder();
    let server = HttpServer::start(&folder, &[]);
    let addr = server
        .url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .expect("address")
        .to_owned();
    let request = "POST /mcp HTTP/1.1\r\nHost: evil.example\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
    let mut stream = std::net::TcpStream::connect(&addr).expect("connect");
    std::io::Write::write_all(&mut stream, request.as_bytes()).expect("send");
    let mut response = String::new();
    std::io::Read::read_to_string(&mut stream, &mut response).expect("read");
    let status = response.lines().next().unwrap_or_default().to_owned();
    assert!(status.contains(" 403 "), "{status}\n{}", server.log());
}

// --- The MCP Inspector's CLI ---

/// One `mcp-inspector --cli --format json` run against `target`; its JSON.
fn inspect(target: &[&str], era: &str, args: &[&str]) -> (Value, Output) {
    let out = Command::new(inspector())
        .args(["--cli", "--format", "json", "--protocol-era", era])
        .args(args)
        .args(target)
        .env("TOOLHOST_CACHE_DIR", cache_dir())
        .env("TOOLHOST_STATE", crate::common::test_state())
        .stdin(Stdio::null())
        .output()
        .expect("run the inspector");
    // The result goes to stdout; an error (or a tool's isError) also puts
    // an error object on stderr.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let json = stdout
        .lines()
        .chain(stderr.lines())
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    (json, out)
}

fn inspect_ok(target: &[&str], era: &str, args: &[&str]) -> Value {
    let (json, out) = inspect(target, era, args);
    assert!(
        out.status.success() && json.get("result").is_some(),
        "{}",
        show(&format!("inspector {args:?}"), &out)
    );
    json["result"].clone()
}

fn call<'a>(tool: &'a str, arguments: &'a str) -> Vec<&'a str> {
    vec![
        "--method",
        "tools/call",
        "--tool-name",
        tool,
        "--tool-args-json",
        arguments,
    ]
}

fn text(result: &Value) -> String {
    result["content"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(|b| b["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

fn stdio_target(folder: &Folder) -> Vec<String> {
    vec![
        TOOLHOST.to_owned(),
        "--plugins".to_owned(),
        folder.path().to_string_lossy().into_owned(),
        "serve".to_owned(),
    ]
}

/// What every transport must show the inspector: the list, a call with
/// data, invalid arguments, and a released call's first update.
fn inspector_basics(target: &[&str]) {
    let tools = inspect_ok(target, "legacy", &["--method", "tools/list"]);
    let tools = tools["tools"].as_array().expect("tools");
    let find = |name: &str| {
        tools
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("{name} is not listed"))
    };
    assert_eq!(find("typed")["title"], "Typed");
    assert!(find("data")["outputSchema"].is_object());
    assert!(find("confirm_me")["inputSchema"]["properties"]["confirm_duplicate"].is_object());
    find("toolhost_cancel_task");

    let data = inspect_ok(target, "legacy", &call("data", r#"{"n": 5}"#));
    assert_eq!(
        data["structuredContent"],
        serde_json::json!({"n": 5, "double": 10})
    );
    assert_eq!(data["isError"], false);

    // An isError result makes the inspector exit non-zero, with the result.
    let (json, _) = inspect(target, "legacy", &call("typed", r#"{"name": "x"}"#));
    assert_eq!(json["result"]["isError"], true, "{json}");
    assert!(text(&json["result"]).contains("count"), "{json}");

    let released = inspect_ok(
        target,
        "legacy",
        &call("progress", r#"{"n": 2, "sleep_ms": 50}"#),
    );
    let answer = text(&released);
    assert!(
        answer.contains("step 1 of 2") && answer.contains("call_"),
        "{answer}"
    );
}

#[test]
fn inspector_stdio_lists_calls_and_reports_invalid_arguments() {
    let folder = folder();
    let target = stdio_target(&folder);
    let target: Vec<&str> = target.iter().map(String::as_str).collect();
    inspector_basics(&target);
}

#[test]
fn inspector_http_lists_calls_and_reports_invalid_arguments() {
    let folder = folder();
    let server = HttpServer::start(&folder, &[]);
    inspector_basics(&[&server.url]);
}

#[test]
fn inspector_stdio_task_followed_to_completion() {
    let folder = folder();
    let target = stdio_target(&folder);
    let target: Vec<&str> = target.iter().map(String::as_str).collect();
    let result = inspect_ok(
        &target,
        "modern",
        &call("progress", r#"{"n": 3, "sleep_ms": 300}"#),
    );
    assert_eq!(text(&result), "done after 3 steps");
}

#[test]
fn inspector_http_task_followed_to_completion() {
    let folder = folder();
    let server = HttpServer::start(&folder, &[]);
    let result = inspect_ok(
        &[&server.url],
        "modern",
        &call("progress", r#"{"n": 3, "sleep_ms": 300}"#),
    );
    assert_eq!(text(&result), "done after 3 steps");
    assert!(server.logs("call answered with a task"), "{}", server.log());
}

/// The id of the first task the server answered with, from its log; it
/// follows a call of `tool`.
fn task_of(server: &HttpServer, tool: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let log = server.log();
        let task_id = log
            .lines()
            .filter(|l| l.contains("call answered with a task"))
            .find_map(|l| {
                let mut words = l.split_whitespace();
                words.find_map(|w| w.strip_prefix("task_id="))
            });
        if let Some(task_id) = task_id {
            return task_id.to_owned();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{tool} was never answered with a task\n{}", server.log());
}

/// `tasks/cancel` as a 2026-07-28 request of its own: the task is found
/// by its id alone.
fn cancel_task(url: &str, task_id: &str) -> Value {
    let body = serde_json::json!({
        "jsonrpc": "2.0", "id": 1, "method": "tasks/cancel",
        "params": {
            "taskId": task_id,
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {
                    "extensions": { "io.modelcontextprotocol/tasks": {} }
                },
                "io.modelcontextprotocol/clientInfo": { "name": "mcp-test", "version": "1" }
            }
        }
    });
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let text = runtime.block_on(async {
        reqwest::Client::new()
            .post(url)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json, text/event-stream")
            .header("MCP-Protocol-Version", "2026-07-28")
            .header("Mcp-Method", "tasks/cancel")
            .header("Mcp-Name", task_id)
            .body(body.to_string())
            .send()
            .await
            .expect("POST tasks/cancel")
            .text()
            .await
            .expect("body")
    });
    serde_json::from_str(&text)
        .ok()
        .or_else(|| {
            text.lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .find_map(|d| serde_json::from_str(d.trim()).ok())
        })
        .unwrap_or(Value::String(text))
}

/// Run the inspector in the background; its output when it ends.
fn inspect_in_background(url: &str, args: Vec<String>) -> std::thread::JoinHandle<(Value, Output)> {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        inspect(&[&url], "modern", &args)
    })
}

fn owned(args: Vec<&str>) -> Vec<String> {
    args.into_iter().map(str::to_owned).collect()
}

#[test]
fn inspector_http_task_cancelled_while_the_tool_spins() {
    let folder = folder();
    let server = HttpServer::start(&folder, &[]);
    let url = server.url.as_str();
    let spinning = inspect_in_background(url, owned(call("spin_cancellable", "{}")));
    // The CLI has no tasks/cancel: another request cancels the task by its
    // id, and the task the inspector follows ends cancelled. (The
    // companion tools cannot: each sessionless request is a session of its
    // own, which sees no other's calls.)
    let task_id = task_of(&server, "spin_cancellable");
    let cancelled = cancel_task(url, &task_id);
    assert!(cancelled.get("error").is_none(), "{cancelled}");
    let (json, out) = spinning.join().expect("inspector thread");
    let said = format!("{json}");
    assert!(
        said.contains("was cancelled"),
        "{}",
        show("spinning call", &out)
    );
    let log = server.log();
    assert!(log.contains("call answered with a task"), "{log}");
}

/// The inspector's CLI makes one request per run and cannot wait for a
/// notification: it sees the new list by asking again. The
/// `list_changed` notification itself is checked with the Python SDK
/// (`python_*_list_changed_after_a_plugin_is_dropped_in`).
#[test]
fn inspector_http_lists_a_plugin_dropped_in_without_a_restart() {
    let folder = folder();
    let server = HttpServer::start(&folder, &[]);
    let url = server.url.as_str();
    let init = inspect_ok(&[url], "legacy", &["--method", "initialize"]);
    assert_eq!(init["capabilities"]["tools"]["listChanged"], true, "{init}");
    let names = |result: Value| -> Vec<String> {
        result["tools"]
            .as_array()
            .map(|t| {
                t.iter()
                    .filter_map(|t| t["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(
        !names(inspect_ok(&[url], "legacy", &["--method", "tools/list"]))
            .contains(&"word_count".to_owned())
    );
    std::fs::copy(
        example("rust-compute"),
        folder.path().join("rust-compute.wasm"),
    )
    .expect("drop");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if names(inspect_ok(&[url], "legacy", &["--method", "tools/list"]))
            .contains(&"word_count".to_owned())
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "word_count never listed\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every served tool converts under the strict modes of two real agent
/// frameworks, openai-agents and pydantic-ai, with no fallback (issue 10).
#[test]
fn every_served_tool_converts_under_openai_agents_strict_mode() {
    let schema = Command::new(TOOLHOST)
        .args(["schema", "--format", "openai", "--plugins"])
        .arg(root().join("dist/plugins"))
        .env("TOOLHOST_CACHE_DIR", cache_dir())
        .env("TOOLHOST_STATE", crate::common::test_state())
        .output()
        .expect("run toolhost schema");
    assert!(schema.status.success(), "{}", show("schema", &schema));
    let mut check = Command::new(python())
        .arg(root().join("tests/mcp/strict_check.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run strict_check.py");
    {
        use std::io::Write;
        let mut stdin = check.stdin.take().expect("stdin");
        stdin.write_all(&schema.stdout).expect("write the schema");
    }
    let out = check.wait_with_output().expect("strict_check.py");
    assert!(out.status.success(), "{}", show("strict_check.py", &out));
}

/// B31 over MCP tasks: a task's id is its call's id in the task store, so
/// `tasks/get` from the Python SDK reads it from a new host after the old
/// one was killed: `failed` (interrupted) for the call that ran, the result
/// for the one that had ended.
#[test]
fn python_tasks_outlive_a_killed_host() {
    let folder = folder();
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("tasks.db").display().to_string();
    let server = HttpServer::start(&folder, &["--state", &state]);
    let out = py(Transport::Http(&server), "auto", "task-restart-start", &[]);
    let ids = out
        .lines()
        .find_map(|l| l.strip_prefix("TASKS "))
        .unwrap_or_else(|| panic!("no task ids in {out}"))
        .replace(' ', ",");
    drop(server); // SIGKILL
    let server = HttpServer::start(&folder, &["--state", &state]);
    py(
        Transport::Http(&server),
        "auto",
        "task-restart-read",
        &["--task-ids", &ids],
    );
}
