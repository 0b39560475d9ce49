//! MCP clients cannot reach each other or exhaust the host (issue 11): each
//! test runs the real `toolhost` binary and talks to it as a client would,
//! with raw JSON-RPC over HTTP (reqwest) or over its stdin and stdout.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Folder, HttpServer, test_plugin};

const MODERN: &str = "2026-07-28";

fn behave() -> Folder {
    let folder = Folder::new();
    folder.add(&test_plugin("behave"), "behave.wasm");
    folder
}

/// The `_meta` every 2026-07-28 request carries; `tasks` declares the
/// tasks extension.
fn meta(tasks: bool) -> Value {
    let extensions = if tasks {
        json!({ "io.modelcontextprotocol/tasks": {} })
    } else {
        json!({})
    };
    json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": { "extensions": extensions },
        "io.modelcontextprotocol/clientInfo": { "name": "isolation-test", "version": "1" },
    })
}

fn request(id: u64, method: &str, mut params: Value, tasks: bool) -> Value {
    params["_meta"] = meta(tasks);
    json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params })
}

fn call(id: u64, tool: &str, arguments: Value, tasks: bool) -> Value {
    request(
        id,
        "tools/call",
        json!({ "name": tool, "arguments": arguments }),
        tasks,
    )
}

/// A sessionless HTTP client: each request stands alone.
struct Client {
    http: reqwest::Client,
    url: String,
}

impl Client {
    fn new(url: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            url: url.to_owned(),
        }
    }

    /// POST one JSON-RPC message; the HTTP status and the answer to it (the
    /// JSON body, or the last SSE event with an id).
    async fn send_raw(&self, body: Vec<u8>) -> (u16, Value) {
        let mut request = self
            .http
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json, text/event-stream")
            .header("MCP-Protocol-Version", MODERN);
        // The standard headers of 2026-07-28 (SEP-2243) repeat the method
        // and the name it acts on.
        let readable = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&body);
        if let Ok(message) = serde_json::from_slice::<Value>(readable) {
            if let Some(method) = message["method"].as_str() {
                request = request.header("Mcp-Method", method);
            }
            let params = &message["params"];
            if let Some(name) = params["name"].as_str().or(params["taskId"].as_str()) {
                request = request.header("Mcp-Name", name);
            }
        }
        let response = request.body(body).send().await.expect("POST");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (status, answer_of(&text))
    }

    async fn send(&self, message: &Value) -> Value {
        let (status, answer) = self.send_raw(message.to_string().into_bytes()).await;
        assert_eq!(status, 200, "{message} answered {status}: {answer}");
        answer
    }
}

/// The JSON-RPC answer in a body: plain JSON, or the SSE event that has an id.
fn answer_of(text: &str) -> Value {
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return v;
    }
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .rfind(|v| v.get("id").is_some())
        .unwrap_or_else(|| Value::String(text.to_owned()))
}

fn structured(answer: &Value) -> &Value {
    &answer["result"]["structuredContent"]
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// The call id of the task `task_id`, from the server's log.
async fn call_of_task(server: &HttpServer, task_id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = server.log();
        if let Some(line) = log
            .lines()
            .find(|l| l.contains("call answered with a task") && l.contains(task_id))
        {
            let id = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("call_id="))
                .expect("call_id in the log line");
            return id.trim_matches('"').to_owned();
        }
        assert!(Instant::now() < deadline, "no task {task_id} in\n{log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Issue 11, case 3: a sessionless request gets a session of its own. A's
/// call, answered with a task, goes on; B cannot list it or cancel it by
/// its call id, but the task is found by its random id from any request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessionless_http_requests_cannot_list_or_cancel_each_others_calls() {
    let folder = behave();
    let server = HttpServer::start(&folder, &[]);
    let a = Client::new(&server.url);
    let b = Client::new(&server.url);

    // A: a cancellable call that waits to be cancelled, followed as a task.
    let created = a.send(&call(1, "wait_cancel", json!({}), true)).await;
    let task = &created["result"];
    assert_eq!(task["resultType"], "task", "{created}");
    let task_id = task["taskId"].as_str().expect("taskId").to_owned();
    let call_id = call_of_task(&server, &task_id).await;

    // B sees no running call and cannot cancel A's.
    let running = b
        .send(&call(2, "toolhost_running_tasks", json!({}), false))
        .await;
    assert_eq!(structured(&running)["tasks"], json!([]), "{running}");
    assert!(!running.to_string().contains(&call_id), "{running}");
    let cancel = b
        .send(&call(
            3,
            "toolhost_cancel_task",
            json!({ "call_id": call_id }),
            false,
        ))
        .await;
    assert_eq!(cancel["result"]["isError"], true, "{cancel}");

    // A's task still runs, read from a later request by its id alone.
    let get = |id| request(id, "tasks/get", json!({ "taskId": task_id }), true);
    let got = b.send(&get(4)).await;
    assert_eq!(got["result"]["status"], "working", "{got}");
    // A task id that was never given is unknown.
    let unknown = b
        .send(&request(
            5,
            "tasks/get",
            json!({ "taskId": "00000000-0000-4000-8000-000000000000" }),
            true,
        ))
        .await;
    assert!(
        unknown["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("unknown task")),
        "{unknown}"
    );

    // Cancelled by its task id from yet another request: the call ends.
    let cancelled = a
        .send(&request(
            6,
            "tasks/cancel",
            json!({ "taskId": task_id }),
            true,
        ))
        .await;
    assert!(cancelled.get("error").is_none(), "{cancelled}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = a.send(&get(7)).await;
        if got["result"]["status"] == "cancelled" {
            break;
        }
        assert!(Instant::now() < deadline, "never cancelled: {got}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A call followed as a task while it is still starting (here with
/// `task_after` at zero, while its plugin is still being compiled: a new
/// compile cache, so no tool is announced and a call waits for every load)
/// runs to its end, and its task with it, once the call is live: dropped
/// before it was live, the call would never run, and its task would stay
/// `working`. In process: `task_after` is the library's to set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_followed_as_a_task_while_it_starts_runs_to_its_end() {
    let folder = behave();
    let cache = tempfile::tempdir().expect("temp dir");
    let mut config = crate::common::config();
    config.cache_dir = Some(cache.path().to_owned());
    let host = toolhost::Host::new(config).expect("host");
    let loading = tokio::spawn({
        let (host, folder) = (host.clone(), folder.path().to_owned());
        async move { host.load_dir(&folder).await.expect("load") }
    });
    let mut options = toolhost::mcp::McpOptions::default();
    options.task_after = Duration::ZERO;
    let addr = "127.0.0.1:0".parse().expect("addr");
    let server = toolhost::mcp::bind_http(&host, addr, options)
        .await
        .expect("bind");
    let client = Client::new(&server.url());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));

    let created = client
        .send(&call(1, "sleep", json!({ "ms": 200 }), true))
        .await;
    let task_id = created["result"]["taskId"]
        .as_str()
        .unwrap_or_else(|| panic!("a task: {created}"))
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    for id in 2.. {
        let get = request(id, "tasks/get", json!({ "taskId": task_id }), true);
        let got = client.send(&get).await;
        if got["result"]["status"] == "completed" {
            break;
        }
        assert!(Instant::now() < deadline, "the call never ran: {got}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(());
    serving.await.expect("served");
    let report = loading.await.expect("loaded");
    assert!(report.refused.is_empty(), "{:?}", report.refused);
}

/// `behave` served over streamable HTTP in this process with `options`
/// (the library's own, some of which the command line does not set).
struct InProcess {
    _folder: Folder,
    host: toolhost::Host,
    url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<()>,
}

impl InProcess {
    async fn serve(options: toolhost::mcp::McpOptions) -> Self {
        let folder = behave();
        let host = toolhost::Host::new(crate::common::config()).expect("host");
        let report = host.load_dir(folder.path()).await.expect("load");
        assert!(report.refused.is_empty(), "{:?}", report.refused);
        let addr = "127.0.0.1:0".parse().expect("addr");
        let server = toolhost::mcp::bind_http(&host, addr, options)
            .await
            .expect("bind");
        let url = server.url();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Self {
            _folder: folder,
            host,
            url,
            stop,
            serving,
        }
    }

    /// Served with sessions that stop their calls by force half a second
    /// after they close (B24), and the host's events.
    async fn closing_soon() -> (Self, Events) {
        let mut options = toolhost::mcp::McpOptions::default();
        options.session.close_timeout = Duration::from_millis(500);
        let server = Self::serve(options).await;
        let events = server.host.subscribe();
        (server, events)
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.serving.await.expect("served");
    }
}

type Events = tokio::sync::broadcast::Receiver<toolhost::HostEvent>;

/// What `pick` makes of the first event it takes, within `within`.
async fn first_event<T>(
    events: &mut Events,
    within: Duration,
    mut pick: impl FnMut(toolhost::HostEvent) -> Option<T>,
) -> Option<T> {
    let next = async {
        loop {
            if let Some(picked) = pick(events.recv().await.expect("events")) {
                return picked;
            }
        }
    };
    tokio::time::timeout(within, next).await.ok()
}

/// The id of the next call of `tool` to start.
async fn started(events: &mut Events, tool: &str) -> String {
    first_event(events, Duration::from_secs(30), |e| {
        (e.event.tool == tool && e.event.kind == toolhost::EventKind::Started)
            .then_some(e.event.call_id)
    })
    .await
    .unwrap_or_else(|| panic!("no call of {tool} started"))
}

/// Whether call `call_id` ends as cancelled within 10 s.
async fn ends_cancelled(events: &mut Events, call_id: &str) -> bool {
    let status = first_event(events, Duration::from_secs(10), |e| match e.event.kind {
        toolhost::EventKind::Ended { status, .. } if e.event.call_id == call_id => Some(status),
        _ => None,
    })
    .await;
    status == Some(toolhost::CallStatus::Cancelled)
}

/// A table of tasks never holds more running tasks than `max_tasks`, even
/// for calls sent together: each holds its place from its start. Five
/// calls sent at once to a table of two: two are followed as tasks, three
/// are refused naming the limit. (Each call checked for room only at its
/// start, while the table was still empty, so all five became tasks
/// `task_after` later.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_sent_together_never_overfill_the_task_table() {
    let mut options = toolhost::mcp::McpOptions::default();
    options.max_tasks = 2;
    options.task_after = Duration::from_millis(300);
    let server = InProcess::serve(options).await;
    let client = Client::new(&server.url);

    let calls: Vec<Value> = (1..=5)
        .map(|id| call(id, "sleep", json!({ "ms": 2000 }), true))
        .collect();
    let answers = futures::future::join_all(calls.iter().map(|c| client.send(c))).await;
    let tasks = answers
        .iter()
        .filter(|a| a["result"]["taskId"].is_string())
        .count();
    let refused = answers
        .iter()
        .filter(|a| {
            a["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("max_tasks"))
        })
        .count();
    assert_eq!((tasks, refused), (2, 3), "{answers:#?}");
    server.stop().await;
}

/// A sessionless call without tasks waits for its end: its session ends
/// with the request, so nothing could follow a released call up later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessionless_call_without_tasks_answers_with_its_end() {
    let folder = behave();
    let server = HttpServer::start(&folder, &[]);
    let client = Client::new(&server.url);
    let answer = client
        .send(&call(
            1,
            "progress",
            json!({ "n": 2, "sleep_ms": 50 }),
            false,
        ))
        .await;
    let text = answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or("");
    assert_eq!(text, "done after 2 steps", "{answer}");
}

/// Sessionless requests close their sessions: thousands of calls with 50 KB
/// arguments leave the host's memory where it was, and each session's
/// opening is matched by its closing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessionless_requests_close_their_sessions_and_memory_stays_flat() {
    let folder = behave();
    let server = HttpServer::start(&folder, &[]);
    let client = Client::new(&server.url);
    let name = "x".repeat(50_000);
    let mut id = 0;
    let mut calls = |n: usize| {
        let batch: Vec<Value> = (0..n)
            .map(|_| {
                id += 1;
                call(id, "typed", json!({ "name": name, "count": 1 }), false)
            })
            .collect();
        batch
    };
    for message in calls(300) {
        let answer = client.send(&message).await;
        assert_eq!(answer["result"]["isError"], false, "{answer}");
    }
    let before = rss_kib(server.pid());
    for message in calls(2_000) {
        let answer = client.send(&message).await;
        assert_eq!(answer["result"]["isError"], false, "{answer}");
    }
    let after = rss_kib(server.pid());
    // Kept records would hold 2 000 × 50 KB ≈ 100 MB (1 000 of them, the
    // session's record bound: 50 MB).
    assert!(
        after < before + 16 * 1024,
        "RSS grew from {before} KiB to {after} KiB over 2 000 sessionless calls"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = server.log();
        let opened = log.matches("MCP connection opened").count();
        let closed = log.matches("MCP connection closed").count();
        if opened >= 2_300 && opened == closed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{opened} sessions opened, {closed} closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Issue 11, case 16: every malformed message over HTTP gets a JSON-RPC
/// error (under its id when it can be read), and the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_http_messages_get_json_rpc_errors() {
    let folder = behave();
    let server = HttpServer::start(&folder, &[]);
    let client = Client::new(&server.url);
    let meta = meta(false).to_string();

    let huge = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"typed","arguments":{{"name":"{}","count":1}},"_meta":{meta}}}}}"#,
        "x".repeat(5 * 1024 * 1024)
    );
    let (status, answer) = client.send_raw(huge.into_bytes()).await;
    assert_eq!(status, 413, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("max_message_size"), "{answer}");

    for (id, body, code) in malformed(&meta) {
        let (status, answer) = client.send_raw(body.into_bytes()).await;
        assert_eq!(answer["id"], id, "{status}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{status}: {answer}");
    }
    // What JSON-RPC leaves unanswered gets a 400 saying why over HTTP: a
    // blank body, a request whose id is null.
    let null_id = r#"{"jsonrpc":"2.0","id":null,"method":"tools/list"}"#;
    for (body, says) in [("  ", "empty"), (null_id, "without a string or number id")] {
        let (status, answer) = client.send_raw(body.as_bytes().to_vec()).await;
        assert_eq!(status, 400, "{body:?}: {answer}");
        assert_eq!(answer["error"]["code"], -32600, "{answer}");
        let message = answer["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(says), "{answer}");
    }
    // A byte order mark before a good message is skipped.
    let mut marked = b"\xEF\xBB\xBF".to_vec();
    marked.extend(call(8, "ok", json!({}), false).to_string().into_bytes());
    let (status, answer) = client.send_raw(marked).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["result"]["content"][0]["text"], "ok", "{answer}");

    let ok = client.send(&call(9, "ok", json!({}), false)).await;
    assert_eq!(ok["result"]["content"][0]["text"], "ok", "{ok}");
}

/// Requests that cannot be read, with their ids and the error code each
/// gets: 10 000-deep JSON, a lone surrogate, params of the wrong shape and
/// an unknown method.
fn malformed(meta: &str) -> Vec<(u64, String, i64)> {
    vec![
        (
            2,
            format!(
                r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"ok","arguments":{{"a":{}{}}},"_meta":{meta}}}}}"#,
                "[".repeat(10_000),
                "]".repeat(10_000)
            ),
            -32602,
        ),
        (
            3,
            format!(
                r#"{{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{{"name":"typed","arguments":{{"name":"\ud800","count":1}},"_meta":{meta}}}}}"#
            ),
            -32602,
        ),
        (
            4,
            r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":"str"}"#.to_owned(),
            -32602,
        ),
        (
            5,
            format!(
                r#"{{"jsonrpc":"2.0","id":5,"method":"no/such/method","params":{{"_meta":{meta}}}}}"#
            ),
            -32601,
        ),
    ]
}

/// The real binary over stdio, spoken to line by line. Its stdout is read
/// one line ahead of what the test asks for (a rendezvous channel), so a
/// test that asks for nothing reads nothing.
struct Stdio {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    answers: std::sync::mpsc::Receiver<Value>,
}

impl Stdio {
    fn start(folder: &Folder) -> Self {
        use std::process::{Command, Stdio as Pipe};
        let mut child = Command::new(env!("CARGO_BIN_EXE_toolhost"))
            .arg("--plugins")
            .arg(folder.path())
            .arg("serve")
            .env(
                "TOOLHOST_CACHE_DIR",
                crate::common::root()
                    .join("target")
                    .join("toolhost-test-cache"),
            )
            .env("TOOLHOST_STATE", crate::common::test_state())
            .stdin(Pipe::piped())
            .stdout(Pipe::piped())
            .stderr(Pipe::null())
            .spawn()
            .expect("start toolhost serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, answers) = std::sync::mpsc::sync_channel(0);
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let value = serde_json::from_str(&line).unwrap_or(Value::String(line));
                if tx.send(value).is_err() {
                    return;
                }
            }
        });
        let stdin = child.stdin.take();
        let mut stdio = Self {
            child,
            stdin,
            answers,
        };
        stdio.line(
            json!({
                "jsonrpc": "2.0", "id": 0, "method": "initialize",
                "params": {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": { "name": "isolation-test", "version": "1" }
                }
            })
            .to_string()
            .as_bytes(),
        );
        let init = stdio.answer();
        assert!(init["result"]["serverInfo"].is_object(), "{init}");
        stdio.line(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        stdio
    }

    fn line(&mut self, bytes: &[u8]) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("stdin");
        stdin.write_all(bytes).expect("write");
        stdin.write_all(b"\n").expect("write");
        stdin.flush().expect("flush");
    }

    /// How many calls of `tool` run or wait, asked as request `id`
    /// (`toolhost_running_tasks`).
    fn running(&mut self, id: u64, tool: &str) -> usize {
        self.line(&stdio_call(id, "toolhost_running_tasks", json!({})));
        let answer = self.answer();
        assert_eq!(answer["id"], id, "an answer to another request: {answer}");
        answer["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .matches(&format!(r#""tool":"{tool}""#))
            .count()
    }

    /// The next answer (not a notification).
    fn answer(&mut self) -> Value {
        loop {
            let message = self
                .answers
                .recv_timeout(Duration::from_secs(30))
                .expect("an answer within 30 s");
            if message.get("id").is_some() || message.get("error").is_some() {
                return message;
            }
        }
    }
}

impl Drop for Stdio {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stdio_call(id: u64, tool: &str, arguments: Value) -> Vec<u8> {
    json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": { "name": tool, "arguments": arguments }
    })
    .to_string()
    .into_bytes()
}

/// B21 over stdio: `notifications/cancelled` for an open `tools/call`
/// cancels its call, and the request gets no answer (the client gave up on
/// it); the connection goes on serving.
#[test]
fn b21_a_stdio_request_the_client_cancels_cancels_its_call_and_gets_no_answer() {
    let folder = behave();
    let mut stdio = Stdio::start(&folder);
    // The call stays open: it sends no update and waits to be cancelled.
    stdio.line(&stdio_call(1, "wait_cancel", json!({})));
    let running = |stdio: &mut Stdio, id: u64| stdio.running(id, "wait_cancel") > 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut id = 2;
    while !running(&mut stdio, id) {
        assert!(Instant::now() < deadline, "wait_cancel never ran");
        id += 1;
    }
    stdio.line(
        br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1,"reason":"the user moved on"}}"#,
    );
    // Until the call has ended, and once more after: any answer to
    // request 1 would come before these.
    loop {
        id += 1;
        if !running(&mut stdio, id) {
            break;
        }
        assert!(Instant::now() < deadline, "the cancelled call goes on");
    }
    stdio.line(&stdio_call(id + 1, "ok", json!({})));
    let ok = stdio.answer();
    assert_eq!(ok["id"], id + 1, "{ok}");
    assert_eq!(ok["result"]["content"][0]["text"], "ok", "{ok}");
}

/// A stdio client's calls that answer at once and run on (here
/// fire-and-forget ones, which wait for the plugin's 16 slots) are bounded
/// by its session's `max_live` (1 000): the next is refused as a tool
/// error saying so, and the companion tools still answer.
#[test]
fn a_stdio_session_refuses_calls_past_its_live_bound() {
    let folder = behave();
    let mut stdio = Stdio::start(&folder);
    for id in 1..=1000 {
        stdio.line(&stdio_call(id, "fire", json!({ "ms": 600_000 })));
        let started = stdio.answer();
        assert_eq!(started["id"], id, "{started}");
        assert_eq!(started["result"]["isError"], false, "{started}");
    }
    stdio.line(&stdio_call(1001, "fire", json!({ "ms": 0 })));
    let refused = stdio.answer();
    assert_eq!(refused["result"]["isError"], true, "{refused}");
    let text = refused["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(
        text.contains("already has 1000 tool calls running or queued"),
        "{refused}"
    );
    assert_eq!(stdio.running(1002, "fire"), 1000);
}

/// A stdio client that reuses the id of a request not yet answered (MCP:
/// a client never reuses a request id in a session) gets an error for the
/// second, which does not run; the first goes on, keeps its id and its
/// place in the bound of unanswered requests, and is answered as usual.
#[test]
fn a_stdio_request_reusing_an_unanswered_id_is_refused_and_the_first_goes_on() {
    let folder = behave();
    let mut stdio = Stdio::start(&folder);
    stdio.line(&stdio_call(1, "wait_cancel", json!({})));
    let running = |stdio: &mut Stdio, id: u64| stdio.running(id, "wait_cancel");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut id = 2;
    while running(&mut stdio, id) == 0 {
        assert!(Instant::now() < deadline, "wait_cancel never ran");
        id += 1;
    }

    // The same id for a call that would answer at once.
    stdio.line(&stdio_call(1, "ok", json!({})));
    let refused = stdio.answer();
    assert_eq!(refused["id"], 1, "{refused}");
    assert_eq!(refused["error"]["code"], -32600, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("already in use"), "{refused}");
    id += 1;
    assert_eq!(running(&mut stdio, id), 1, "the first call goes on, alone");

    // The first request is still the client's to cancel, and its call
    // ends.
    stdio.line(br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}"#);
    loop {
        id += 1;
        if running(&mut stdio, id) == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the cancelled call goes on");
    }
}

/// A client that closes stdin ends the connection (MCP's stdio shutdown):
/// its open calls are cancelled and answered (B24), and the host exits, at
/// once rather than after waiting for calls that would never end.
#[test]
fn b24_closing_stdin_cancels_and_answers_the_open_calls() {
    let folder = behave();
    let mut stdio = Stdio::start(&folder);
    stdio.line(&stdio_call(1, "wait_cancel", json!({})));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut id = 1;
    loop {
        id += 1;
        if stdio.running(id, "wait_cancel") == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "wait_cancel never ran");
    }
    closes_with_call_1_cancelled(stdio);
}

/// Close stdin (MCP's stdio shutdown): request 1 is answered "cancelled"
/// (B24), and the host exits.
fn closes_with_call_1_cancelled(mut stdio: Stdio) {
    drop(stdio.stdin.take());
    let answer = stdio.answer();
    assert_eq!(answer["id"], 1, "{answer}");
    let text = answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(text.contains("was cancelled"), "{answer}");
    let exited = stdio.child.wait().expect("wait");
    assert!(exited.success(), "{exited}");
}

/// B24 at a call's very start: stdin closed while the call is still
/// starting (its tool's validators are built on the process's first call,
/// which takes about 15 ms) answers it "cancelled" without running it; the
/// cancel is not lost, leaving the call to its time limit.
#[test]
fn b24_closing_stdin_as_a_call_starts_cancels_and_answers_it() {
    let folder = behave();
    let mut stdio = Stdio::start(&folder);
    stdio.line(&stdio_call(1, "wait_cancel", json!({})));
    closes_with_call_1_cancelled(stdio);
}

/// A `tools/call` the client cancelled keeps its place in the bound of
/// unanswered stdio requests (`McpOptions::max_in_flight`, 64 by default,
/// as `toolhost serve` has it) until its handler has ended: cancelling
/// frees no room for more work than the bound while the cancelled call
/// still cleans up. With 64 requests open, the one after the cancel is
/// read only once the cancelled call has ended.
#[test]
fn a_cancelled_stdio_request_holds_its_place_in_the_bound_until_its_call_ends() {
    const BOUND: u64 = 64;
    let folder = behave();
    let mut stdio = Stdio::start(&folder);
    // Waits to be cancelled, then takes 200 ms to clean up.
    stdio.line(&stdio_call(1, "replace_me", json!({})));
    let mut id = 1_000;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        id += 1;
        stdio.line(&stdio_call(id, "toolhost_running_tasks", json!({})));
        let answer = stdio.answer();
        assert_eq!(answer["id"], id, "{answer}");
        if answer["result"]["content"][0]["text"]
            .as_str()
            .is_some_and(|text| text.contains(r#""status":"running""#))
        {
            break;
        }
        assert!(Instant::now() < deadline, "replace_me never ran");
    }
    for id in 2..=BOUND {
        stdio.line(&stdio_call(id, "wait_cancel", json!({})));
    }
    stdio.line(br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}"#);
    stdio.line(&stdio_call(BOUND + 1, "toolhost_running_tasks", json!({})));
    let answer = stdio.answer();
    assert_eq!(answer["id"], BOUND + 1, "{answer}");
    let text = answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(
        !text.contains("replace_me"),
        "a request was read past the bound while the cancelled call still ran: {text}"
    );
}

/// Issue 11, case 16, on stdio: each malformed line is answered, and the
/// connection keeps serving.
#[test]
fn malformed_stdio_lines_get_json_rpc_errors() {
    let folder = behave();
    let mut stdio = Stdio::start(&folder);
    let meta = meta(false).to_string();

    let mut huge = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"typed","arguments":{"name":""#.to_vec();
    huge.extend(std::iter::repeat_n(b'x', 16 * 1024 * 1024));
    huge.extend(br#"","count":1}}}"#);
    stdio.line(&huge);
    drop(huge);
    let answer = stdio.answer();
    assert!(answer.get("id").is_none(), "{answer}");
    assert_eq!(answer["error"]["code"], -32600, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("max_message_size")),
        "{answer}"
    );

    for (id, line, code) in malformed(&meta) {
        stdio.line(line.as_bytes());
        let answer = stdio.answer();
        assert_eq!(answer["id"], id, "{answer}");
        assert_eq!(answer["error"]["code"], code, "{answer}");
    }
    stdio.line(b"not json at all");
    let answer = stdio.answer();
    assert_eq!(answer["error"]["code"], -32700, "{answer}");

    stdio.line(&stdio_call(9, "ok", json!({})));
    let ok = stdio.answer();
    assert_eq!(ok["id"], 9, "{ok}");
    assert_eq!(ok["result"]["content"][0]["text"], "ok", "{ok}");
}

/// Issue 11, case 9: a stdio client that writes calls and reads nothing.
/// The host stops reading once its bound of unanswered requests is
/// reached, so its memory stays flat; once the client reads, every call is
/// answered.
#[test]
fn a_stdio_client_that_stops_reading_is_pushed_back() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const CALLS: usize = 4_000;
    let folder = behave();
    let mut stdio = Stdio::start(&folder);
    let pid = stdio.child.id();
    stdio.line(&stdio_call(1, "ok", json!({})));
    assert_eq!(stdio.answer()["id"], 1);
    let before = rss_kib(pid);

    let mut stdin = stdio.stdin.take().expect("stdin");
    let written = Arc::new(AtomicUsize::new(0));
    let counter = written.clone();
    let name = "x".repeat(20_000);
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        for id in 0..CALLS {
            let mut line = stdio_call(10 + id as u64, "typed", json!({ "name": name, "count": 1 }));
            line.push(b'\n');
            if stdin.write_all(&line).is_err() {
                return;
            }
            counter.store(id + 1, Ordering::SeqCst);
        }
        drop(stdin);
    });

    // Wait until the writer is held back (no line for a second), or done.
    let mut last = 0;
    let mut still_since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = written.load(Ordering::SeqCst);
        if now == CALLS {
            break;
        }
        if now != last {
            last = now;
            still_since = Instant::now();
        } else if still_since.elapsed() > Duration::from_secs(2) {
            break;
        }
    }
    let held = rss_kib(pid);
    let sent = written.load(Ordering::SeqCst);
    assert!(
        sent < CALLS,
        "the host read all {CALLS} calls ({} MB) while nothing was read",
        CALLS * 20 / 1000
    );
    assert!(
        held < before + 64 * 1024,
        "RSS grew from {before} KiB to {held} KiB with {sent} calls written and none read"
    );

    // The client reads: every call is answered.
    let mut seen = std::collections::HashSet::new();
    while seen.len() < CALLS {
        let answer = stdio.answer();
        let id = answer["id"].as_u64().expect("id");
        assert_eq!(answer["result"]["isError"], false, "call {id} failed");
        seen.insert(id);
    }
    writer.join().expect("writer");
}

/// An `initialize` over HTTP, opening a legacy session: the HTTP status,
/// the answer and the session id.
async fn initialize(http: &reqwest::Client, url: &str, id: u64) -> (u16, Value, Option<String>) {
    let body = json!({
        "jsonrpc": "2.0", "id": id, "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": { "name": "isolation-test", "version": "1" }
        }
    });
    let response = http
        .post(url)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .body(body.to_string())
        .send()
        .await
        .expect("POST initialize");
    let status = response.status().as_u16();
    let session = response
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = response.text().await.expect("body");
    (status, answer_of(&text), session)
}

/// Open HTTP connections are capped, and with them the sessionless
/// requests in progress: past the cap a new connection is answered 503
/// with an error naming the limit, the open ones keep working, and a
/// closed one makes room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_connections_past_their_cap_are_answered_503_naming_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let folder = behave();
    let server = HttpServer::start(&folder, &["--max-connections", "2"]);
    let addr = server
        .url
        .trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .to_owned();
    let request = |id: u64| {
        let body = call(id, "ok", json!({}), false).to_string();
        format!(
            "POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: {MODERN}\r\n\
             Mcp-Method: tools/call\r\nMcp-Name: ok\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    // One exchange on a kept-alive connection: the whole response.
    async fn exchange(stream: &mut tokio::net::TcpStream, request: &str) -> String {
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let n = tokio::time::timeout_at(deadline.into(), stream.read(&mut buf))
                .await
                .expect("an answer in time")
                .expect("read");
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).to_string();
            // A 503 ends with the connection; an answer on a kept-alive
            // connection with its last chunk.
            if n == 0 || text.ends_with("\r\n0\r\n\r\n") {
                return text;
            }
        }
    }
    let mut first = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let mut second = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let one = exchange(&mut first, &request(1)).await;
    assert!(one.starts_with("HTTP/1.1 200"), "{one}");
    let two = exchange(&mut second, &request(2)).await;
    assert!(two.starts_with("HTTP/1.1 200"), "{two}");

    let mut third = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let refused = exchange(&mut third, &request(3)).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(
        refused.contains("max_connections") && refused.contains("limit of 2"),
        "{refused}"
    );
    // The open ones go on.
    let again = exchange(&mut first, &request(4)).await;
    assert!(again.starts_with("HTTP/1.1 200"), "{again}");

    // A closed connection makes room for a new one.
    drop(second);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut fourth = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        let answer = exchange(&mut fourth, &request(5)).await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "no room after a close: {answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        server.logs("HTTP connection limit reached"),
        "{}",
        server.log()
    );
}

/// Issue 11, case 8: HTTP sessions are capped, and an idle one is closed
/// (B24) after its idle lifetime, making room for another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_sessions_are_capped_and_idle_ones_close() {
    let folder = behave();
    let server = HttpServer::start(&folder, &["--max-sessions", "3", "--session-idle", "2s"]);
    let http = reqwest::Client::new();
    for id in 1..=3 {
        let (status, answer, session) = initialize(&http, &server.url, id).await;
        assert_eq!(status, 200, "{answer}");
        assert!(session.is_some(), "no session id: {answer}");
    }
    let (status, refused, session) = initialize(&http, &server.url, 4).await;
    assert_eq!(status, 503, "{refused}");
    assert_eq!(refused["id"], 4, "{refused}");
    assert!(session.is_none());
    let message = refused["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("max_sessions") && message.contains('3'),
        "{refused}"
    );
    // Sessionless requests are not counted.
    let ok = Client::new(&server.url)
        .send(&call(5, "ok", json!({}), false))
        .await;
    assert_eq!(ok["result"]["content"][0]["text"], "ok", "{ok}");

    // The three go idle and close; a new session opens.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, answer, _) = initialize(&http, &server.url, 6).await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no session closed while idle: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // And the other two, at most a quarter of the idle time later.
    while server.log().matches("MCP connection closed").count() < 3 {
        assert!(Instant::now() < deadline, "{}", server.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A POST in `session` at `url`: its status and answer.
async fn post_in(http: &reqwest::Client, url: &str, session: &str, body: &Value) -> (u16, Value) {
    let response = http
        .post(url)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .header("Mcp-Session-Id", session)
        .header("Mcp-Protocol-Version", "2025-06-18")
        .json(body)
        .send()
        .await
        .expect("send");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (status, answer_of(&text))
}

/// B24 over HTTP: a session ended by `DELETE` stops its calls, also one
/// that cannot be cancelled and whose request is still open (answer mode
/// "final"): by force, once the close bound is over. (That request's
/// handler held the session's connection, and the session closed only
/// when the handler ended, with its call.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b24_a_deleted_http_session_stops_a_call_that_cannot_be_cancelled() {
    let (server, mut events) = InProcess::closing_soon().await;
    let (http, url) = (reqwest::Client::new(), server.url.clone());
    let (status, answer, session) = initialize(&http, &url, 1).await;
    assert_eq!(status, 200, "{answer}");
    let session = session.expect("a session id");
    let initialized = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
    post_in(&http, &url, &session, &initialized).await;

    // `sleep` is not cancellable; a minute is longer than this test waits.
    let sleep = json!({
        "jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {
            "name": "sleep", "arguments": { "ms": 60_000 },
            "_meta": { "dev.toolhost/answer": "final" }
        }
    });
    let waiting = tokio::spawn({
        let (http, url, session) = (http.clone(), url.clone(), session.clone());
        async move { post_in(&http, &url, &session, &sleep).await }
    });
    let call_id = started(&mut events, "sleep").await;
    let deleted = http
        .delete(&url)
        .header("Mcp-Session-Id", &session)
        .header("Mcp-Protocol-Version", "2025-06-18")
        .send()
        .await
        .expect("DELETE");
    assert_eq!(deleted.status().as_u16(), 200);
    assert!(
        ends_cancelled(&mut events, &call_id).await,
        "the deleted session's call is stopped, not left to run its minute"
    );
    waiting.abort();
    server.stop().await;
}

/// B24 for a sessionless request: its session ends with it. A client that
/// goes away while its call (one that cannot be cancelled) runs has the
/// call stopped once the close bound is over, not left to run on with
/// nobody to read its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b24_a_sessionless_request_dropped_stops_its_call() {
    let (server, mut events) = InProcess::closing_soon().await;
    let client = Client::new(&server.url);

    // `sleep` is not cancellable; a minute is longer than this test waits.
    let sleep = call(1, "sleep", json!({ "ms": 60_000 }), false);
    let waiting = tokio::spawn(async move { client.send(&sleep).await });
    let call_id = started(&mut events, "sleep").await;
    // The client goes: its request, and the connection, are dropped.
    waiting.abort();
    assert!(
        ends_cancelled(&mut events, &call_id).await,
        "the dropped request's call is stopped, not left to run its minute"
    );
    server.stop().await;
}

/// A session whose call is still being answered is not idle, however long
/// the call takes (answer mode "final", no progress); once answered and
/// left alone, it closes and its client gets 404 (B24).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_session_answering_a_long_call_is_not_idle() {
    let folder = behave();
    let server = HttpServer::start(&folder, &["--session-idle", "1s"]);
    let http = reqwest::Client::new();
    let (status, answer, session) = initialize(&http, &server.url, 1).await;
    assert_eq!(status, 200, "{answer}");
    let session = session.expect("a session id");
    let initialized = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
    post_in(&http, &server.url, &session, &initialized).await;
    let mut long = json!({
        "jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": { "name": "sleep", "arguments": { "ms": 3000 } }
    });
    long["params"]["_meta"] = json!({ "dev.toolhost/answer": "final" });
    let (status, answer) = post_in(&http, &server.url, &session, &long).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["result"]["content"][0]["text"], "slept", "{answer}");

    // Left alone (a request would make it active again), it closes.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !server.log().contains("MCP HTTP session idle; closing it") {
        assert!(Instant::now() < deadline, "never closed:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ping = json!({ "jsonrpc": "2.0", "id": 3, "method": "ping" });
    let (status, answer) = post_in(&http, &server.url, &session, &ping).await;
    assert_eq!(status, 404, "{answer}");
}

/// The dashboard beside `/mcp` shows and cancels every session's calls:
/// an MCP client, which does not see the server's output, cannot use it
/// without the token the server printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_beside_mcp_needs_the_token_the_server_printed() {
    let folder = behave();
    let server = HttpServer::start(&folder, &[]);
    let (base, token) = server.dashboard();
    assert!(token.len() >= 32, "{token}");
    let http = reqwest::Client::new();
    for path in ["", "history", "events"] {
        let status = http
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("get")
            .status();
        assert_eq!(status.as_u16(), 401, "/{path} without the token");
    }
    let with = http
        .get(format!("{base}history"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("get");
    assert_eq!(with.status().as_u16(), 200);
}

/// A `tools/call` over stdio answers as rmcp answers it over HTTP: a
/// client of a revision before 2026-07-28 (the stdio helper's 2025-06-18)
/// gets a result without `resultType`, which its revision does not have.
#[test]
fn a_stdio_answer_to_a_client_of_an_older_revision_carries_no_result_type() {
    let folder = behave();
    let mut stdio = crate::common::stdio::Server::start(folder.path(), &[]);
    let id = stdio.request("tools/call", json!({ "name": "ok", "arguments": {} }));
    let answer = stdio.wait_for(&id).pop().expect("an answer");
    assert_eq!(answer["result"]["content"][0]["text"], "ok", "{answer}");
    assert!(answer["result"].get("resultType").is_none(), "{answer}");
}
