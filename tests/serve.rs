//! `toolhost serve` as a process, with a raw JSON-RPC client: answer modes,
//! tool behaviour in `tools/list`, shutdown on SIGTERM, `DELETE /mcp`; and
//! the live folder's change notices through the library.

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::stdio::Server;
use crate::common::{Folder, HttpServer, WAIT, example, host_for, test_plugin};

fn progress_messages(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .map(|m| {
            m["params"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

fn answer_text(messages: &[Value]) -> String {
    let last = messages.last().expect("an answer");
    last["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text in {last}"))
        .to_owned()
}

fn behave_folder() -> Folder {
    let folder = Folder::new();
    folder.add(&test_plugin("behave"), "behave");
    folder
}

#[test]
fn final_mode_answers_with_the_result_after_every_update_as_progress() {
    let folder = behave_folder();
    let mut s = Server::start(folder.path(), &["--answer", "final"]);
    let id = s.request(
        "tools/call",
        json!({
            "name": "progress",
            "arguments": { "n": 3, "sleep_ms": 20 },
            "_meta": { "progressToken": "p1" }
        }),
    );
    let messages = s.wait_for(&id);
    assert_eq!(
        progress_messages(&messages),
        ["step 1 of 3", "step 2 of 3", "step 3 of 3"],
        "{messages:?}"
    );
    assert!(
        answer_text(&messages).contains("done after 3 steps"),
        "{messages:?}"
    );
}

/// Over stdio a call's sandbox (its instance, and its slot under the
/// plugin's cap) is freed after its answer is written, not as the call
/// ends: with one slot, calls one after the other each find it free again,
/// and so does a call after one answered by its first update.
#[test]
fn stdio_calls_give_their_plugins_one_slot_back_after_each_answer() {
    let folder = Folder::new();
    folder.add_with_manifest(
        &test_plugin("behave"),
        "behave",
        "[limits]\nmax-concurrency = 1\n",
    );
    let mut s = Server::start(folder.path(), &["--answer", "release"]);
    for round in 0..10 {
        let messages = s.call("ok", json!({}));
        assert!(
            messages.last().is_some_and(|m| m.get("result").is_some()),
            "call {round}: {messages:?}"
        );
        let messages = s.call("progress", json!({ "n": 1, "sleep_ms": 0 }));
        assert!(
            messages.last().is_some_and(|m| m.get("result").is_some()),
            "released call {round}: {messages:?}"
        );
    }
}

#[test]
fn a_request_chooses_its_answer_mode_with_meta() {
    let folder = behave_folder();
    let mut s = Server::start(folder.path(), &[]);
    // The server's default: the first update answers (B2).
    let id = s.request(
        "tools/call",
        json!({ "name": "progress", "arguments": { "n": 2, "sleep_ms": 20 } }),
    );
    let released = answer_text(&s.wait_for(&id));
    assert!(released.starts_with("step 1 of 2"), "{released}");
    assert!(
        released.contains("toolhost_task_status") && !released.contains("will be delivered"),
        "B30: over MCP the answer says how to learn more: {released}"
    );
    let id = s.request(
        "tools/call",
        json!({
            "name": "progress",
            "arguments": { "n": 2, "sleep_ms": 20 },
            "_meta": { "dev.toolhost/answer": "final" }
        }),
    );
    let text = answer_text(&s.wait_for(&id));
    assert!(text.contains("done after 2 steps"), "{text}");
}

#[test]
fn tools_list_describes_each_tools_behaviour_in_meta() {
    let folder = behave_folder();
    let mut s = Server::start(folder.path(), &[]);
    let id = s.request("tools/list", json!({}));
    let messages = s.wait_for(&id);
    let tools = messages.last().expect("answer")["result"]["tools"]
        .as_array()
        .expect("tools")
        .clone();
    let find = |name: &str| {
        tools
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("{name} not listed"))
            .clone()
    };
    let behaviour = |name: &str| find(name)["_meta"]["dev.toolhost/behaviour"].clone();
    assert_eq!(behaviour("wait_cancel")["cancellable"], json!(true));
    assert_eq!(behaviour("update_then_fail")["cancellable"], json!(false));
    assert_eq!(behaviour("reject_me")["on_duplicate"], json!("reject"));
    assert_eq!(behaviour("progress")["delivery"], json!("conversational"));
    assert!(
        find("toolhost_cancel_task").get("_meta").is_none(),
        "companion tools carry no behaviour"
    );
}

#[test]
fn sigterm_cancels_running_calls_and_lets_them_clean_up() {
    let work = tempfile::tempdir().expect("work dir");
    let folder = Folder::new();
    folder.add_with_manifest(
        &example("rust-cleanup"),
        "rust-cleanup",
        &format!(
            "[permissions]\ndirs = [{{ host = \"{}\", guest = \"/work\", write = true }}]\n",
            work.path().display()
        ),
    );
    let mut s = Server::start(folder.path(), &[]);
    let id = s.request(
        "tools/call",
        json!({ "name": "build_report", "arguments": { "sections": 50, "section_ms": 200 } }),
    );
    // Released by its first update: the partial file exists.
    let answer = answer_text(&s.wait_for(&id));
    assert!(!answer.is_empty());
    let partial = || {
        std::fs::read_dir(work.path())
            .expect("read work dir")
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().ends_with(".partial"))
    };
    assert!(partial(), "the report is being written");
    let status = s.terminate();
    assert!(status.success(), "{status:?}");
    assert!(!partial(), "the cancelled call removed its partial file");
}

/// B24 on stdio: SIGTERM cancels a call whose request is still open, and
/// the request is answered (the call was cancelled) before the host exits.
#[test]
fn b24_sigterm_answers_an_open_request_with_its_cancelled_call() {
    let folder = behave_folder();
    let mut s = Server::start(folder.path(), &[]);
    // It sends no update: the request stays open until the call ends.
    let id = s.request(
        "tools/call",
        json!({ "name": "wait_cancel", "arguments": {} }),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !answer_text(&s.call("toolhost_running_tasks", json!({}))).contains("wait_cancel") {
        assert!(
            std::time::Instant::now() < deadline,
            "wait_cancel never ran"
        );
    }
    let status = s.terminate();
    assert!(status.success(), "{status:?}");
    let answer = answer_text(&s.wait_for(&id));
    assert!(answer.contains("was cancelled"), "{answer}");
}

/// `toolhost serve --http` over `folder` (stopped when dropped, also when
/// a check fails), and the `host:port` it listens on.
fn start_http(folder: &Folder) -> (HttpServer, String) {
    let server = HttpServer::start(folder, &[]);
    let addr = server
        .url
        .trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .to_owned();
    (server, addr)
}

/// One raw HTTP/1.1 exchange.
fn http(addr: &str, request: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.write_all(request.as_bytes()).expect("send");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

fn initialize_request(extra_headers: &str) -> String {
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": { "protocolVersion": "2025-06-18", "capabilities": {},
                    "clientInfo": { "name": "raw-test", "version": "0" } }
    })
    .to_string();
    format!(
        "POST /mcp HTTP/1.1\r\nHost: localhost\r\n{extra_headers}Content-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// `DELETE /mcp` ends an open session with 200; a session id that names
/// no open session (ended already, or never opened) gets 404, as any other
/// request naming it does.
#[test]
fn delete_ends_an_http_session_with_200_and_an_unknown_one_gets_404() {
    let folder = behave_folder();
    let (_server, addr) = start_http(&folder);
    let response = http(&addr, &initialize_request(""));
    let session = response
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("mcp-session-id")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no session id in {response}"));
    let delete = |session: &str| {
        http(
            &addr,
            &format!(
                "DELETE /mcp HTTP/1.1\r\nHost: localhost\r\nMcp-Session-Id: {session}\r\nConnection: close\r\n\r\n"
            ),
        )
    };
    let response = delete(&session);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    for unknown in [session.as_str(), "no-such-session"] {
        let response = delete(unknown);
        assert!(
            response.starts_with("HTTP/1.1 404"),
            "{unknown}: {response}"
        );
        assert!(response.contains("no open MCP session"), "{response}");
    }
}

/// A request on a connection of its own, whose answer is read as it comes.
struct Exchange {
    stream: std::net::TcpStream,
    read: String,
}

impl Exchange {
    fn send(addr: &str, request: &str) -> Self {
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        stream.write_all(request.as_bytes()).expect("send");
        Self {
            stream,
            read: String::new(),
        }
    }

    /// Read more of the answer, which must go on.
    fn read_more(&mut self) {
        let mut buffer = [0; 4096];
        let n = self.stream.read(&mut buffer).expect("read within WAIT");
        assert!(n > 0, "the answer ended: {}", self.read);
        self.read.push_str(&String::from_utf8_lossy(&buffer[..n]));
    }

    /// Read the answer to its end, which must come within [`WAIT`]; all
    /// of it. (SSE keep-alives would otherwise keep a stream that never
    /// ends being read.)
    fn rest(mut self) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        let mut buffer = [0; 4096];
        loop {
            assert!(
                std::time::Instant::now() < deadline,
                "the answer did not end within {WAIT:?}: {}",
                self.read
            );
            match self.stream.read(&mut buffer) {
                Ok(0) => return self.read,
                Ok(n) => self.read.push_str(&String::from_utf8_lossy(&buffer[..n])),
                Err(e) => panic!("the answer did not end ({e}): {}", self.read),
            }
        }
    }

    /// The id of the SSE event that opened the answer: the call's priming
    /// event.
    fn priming_event_id(&mut self) -> String {
        while !self.read.contains("id: ") {
            self.read_more();
        }
        let at = self.read.find("id: ").expect("an event id") + "id: ".len();
        while !self.read[at..].contains('\n') {
            self.read_more();
        }
        let line = &self.read[at..];
        line[..line.find('\n').expect("a whole line")]
            .trim()
            .to_owned()
    }
}

/// A POST of `body` in `session` (`Connection: close` when `close`).
fn post(session: &str, body: &Value, close: bool) -> String {
    let body = body.to_string();
    let connection = if close { "Connection: close\r\n" } else { "" };
    format!(
        "POST /mcp HTTP/1.1\r\nHost: localhost\r\nMcp-Session-Id: {session}\r\n\
         Mcp-Protocol-Version: 2025-06-18\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\n{connection}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A `tools/call` of `tool` with `arguments`, as request `id`.
fn tool_call(id: u64, tool: &str, arguments: Value) -> Value {
    json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": { "name": tool, "arguments": arguments }
    })
}

/// A session opened over raw HTTP (`initialize`, then
/// `notifications/initialized`): its id.
fn open_session(addr: &str) -> String {
    let response = http(addr, &initialize_request(""));
    let session = response
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("mcp-session-id")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no session id in {response}"));
    let initialized = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
    let response = http(addr, &post(&session, &initialized, true));
    assert!(response.starts_with("HTTP/1.1 202"), "{response}");
    session
}

/// A session of its own at `addr` and its call `id` of `wait_cancel`,
/// whose stream has opened: the session's id and the call's answer.
fn waiting_call(addr: &str, id: u64) -> (String, Exchange) {
    let session = open_session(addr);
    let wait = tool_call(id, "wait_cancel", json!({}));
    let mut waiting = Exchange::send(addr, &post(&session, &wait, true));
    waiting.priming_event_id();
    (session, waiting)
}

/// `GET` of `session`'s stream from the event `last_event_id` on
/// (`Last-Event-ID`), read to its end.
fn resume(addr: &str, session: &str, last_event_id: &str) -> String {
    http(
        addr,
        &format!(
            "GET /mcp HTTP/1.1\r\nHost: localhost\r\nMcp-Session-Id: {session}\r\n\
             Mcp-Protocol-Version: 2025-06-18\r\nAccept: text/event-stream\r\n\
             Last-Event-ID: {last_event_id}\r\nConnection: close\r\n\r\n"
        ),
    )
}

/// `notifications/cancelled` of the request `id`.
fn cancelled(id: u64) -> Value {
    json!({
        "jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": { "requestId": id, "reason": "the user moved on" }
    })
}

/// Ask `session` for its running calls (`toolhost_running_tasks`, as
/// requests `first_id`, `first_id + 1`, …) until what it answers is
/// `done`, within [`WAIT`]; `what` says what was awaited.
fn running_tasks_until(
    addr: &str,
    session: &str,
    first_id: u64,
    what: &str,
    done: impl Fn(&str) -> bool,
) {
    let deadline = std::time::Instant::now() + WAIT;
    for id in first_id.. {
        let running_tasks = tool_call(id, "toolhost_running_tasks", json!({}));
        let running = http(addr, &post(session, &running_tasks, true));
        assert!(running.contains(&format!(r#""id":{id}"#)), "{running}");
        if done(&running) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {WAIT:?}: {running}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A call answered in its HTTP connection opens its stream with a priming
/// event, from which the client resumes (`Last-Event-ID`) after the
/// connection drops, and gets the answer of the call, which ran on.
#[test]
fn an_http_call_resumes_from_its_priming_event_after_its_connection_drops() {
    let folder = behave_folder();
    let (_server, addr) = start_http(&folder);
    let session = open_session(&addr);
    let sleep = tool_call(2, "sleep", json!({ "ms": 1500 }));
    let mut call = Exchange::send(&addr, &post(&session, &sleep, false));
    let event = call.priming_event_id();
    drop(call);
    let resumed = resume(&addr, &session, &event);
    assert!(resumed.starts_with("HTTP/1.1 200"), "{resumed}");
    assert!(
        resumed.contains(r#""id":2"#) && resumed.contains("slept"),
        "the call's answer, resumed from {event}: {resumed}"
    );
}

/// A call with a progress token, answered in its HTTP connection, has its
/// updates on its own stream as progress, each an event of its own, then
/// its answer; a stream resumed from one of those events gets the ones
/// after it and the answer, and the stream before it ends.
#[test]
fn an_http_calls_progress_is_on_its_own_stream_and_resumes_from_each_event() {
    let folder = behave_folder();
    let (_server, addr) = start_http(&folder);
    let session = open_session(&addr);
    let progress = json!({
        "jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": { "name": "progress", "arguments": { "n": 3, "sleep_ms": 1500 },
                    "_meta": { "progressToken": "p2", "dev.toolhost/answer": "final" } }
    });
    let mut call = Exchange::send(&addr, &post(&session, &progress, true));
    while !call.read.contains("step 1 of 3") {
        call.read_more();
    }
    let first = call.read.find("step 1 of 3").expect("read");
    while !call.read[first..].contains("\n\n") {
        call.read_more();
    }
    let event = &call.read[first..];
    let event = &event[..event.find("\n\n").expect("read")];
    assert!(event.contains(r#""progressToken":"p2""#), "{event}");
    let id = event
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .unwrap_or_else(|| panic!("a progress event with an id: {event}"))
        .trim()
        .to_owned();

    let resumed = resume(&addr, &session, &id);
    assert!(resumed.starts_with("HTTP/1.1 200"), "{resumed}");
    let at = |text: &str| {
        resumed
            .find(text)
            .unwrap_or_else(|| panic!("{text} resumed from {id}: {resumed}"))
    };
    assert!(!resumed.contains("step 1 of 3"), "{resumed}");
    assert!(
        at("step 2 of 3") < at("step 3 of 3") && at("step 3 of 3") < at("done after 3 steps"),
        "{resumed}"
    );
    assert!(resumed.contains(r#""id":2"#), "{resumed}");
    let first = call.rest();
    assert!(!first.contains(r#""id":2"#), "the stream before: {first}");
}

/// `notifications/cancelled` ends an HTTP call's stream at once, with no
/// answer, also when the call goes on (`sleep` is not cancellable, B20).
#[test]
fn an_http_cancel_ends_the_calls_stream_at_once_though_the_call_goes_on() {
    let folder = behave_folder();
    let (_server, addr) = start_http(&folder);
    let session = open_session(&addr);
    let sleep = tool_call(3, "sleep", json!({ "ms": 120_000 }));
    let mut call = Exchange::send(&addr, &post(&session, &sleep, true));
    call.priming_event_id();
    let response = http(&addr, &post(&session, &cancelled(3), true));
    assert!(response.starts_with("HTTP/1.1 202"), "{response}");
    let rest = call.rest();
    assert!(!rest.contains(r#""id":3"#), "no answer: {rest}");
    running_tasks_until(&addr, &session, 4, "the call goes on", |running| {
        running.contains(r#"\"tool\":\"sleep\""#)
    });
}

/// B20/B21 over HTTP: a request that reuses the id of a running call is
/// refused and runs nothing; `notifications/cancelled` cancels the call,
/// whose stream then ends with no answer, as MCP asks.
#[test]
fn an_http_call_is_cancelled_by_its_request_id_and_its_id_is_not_reused_meanwhile() {
    let folder = behave_folder();
    let (_server, addr) = start_http(&folder);
    // The call may still be starting (its tool's validators are built on
    // the server's first call, in about 15 ms): its id is taken all the
    // same, and a cancel is not lost.
    let (session, waiting) = waiting_call(&addr, 7);
    let reused = http(&addr, &post(&session, &tool_call(7, "ok", json!({})), true));
    assert!(
        reused.contains("already in use") && !reused.contains(r#""result""#),
        "{reused}"
    );

    let response = http(&addr, &post(&session, &cancelled(7), true));
    assert!(response.starts_with("HTTP/1.1 202"), "{response}");
    let rest = waiting.rest();
    assert!(
        !rest.contains(r#""id":7"#),
        "a cancelled call answers nothing: {rest}"
    );
    // The call ends too: wait_cancel runs until cancelled.
    running_tasks_until(&addr, &session, 8, "the cancelled call ends", |running| {
        !running.contains("wait_cancel")
    });
}

/// B24 over HTTP: ending a session ends the streams of its calls, with
/// nothing delivered to it.
#[test]
fn b24_ending_an_http_session_ends_its_calls_streams_with_no_answer() {
    let folder = behave_folder();
    let (_server, addr) = start_http(&folder);
    let (session, waiting) = waiting_call(&addr, 3);
    let response = http(
        &addr,
        &format!(
            "DELETE /mcp HTTP/1.1\r\nHost: localhost\r\nMcp-Session-Id: {session}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let rest = waiting.rest();
    assert!(!rest.contains(r#""id":3"#), "{rest}");
}

#[test]
fn foreign_origins_and_doubled_host_headers_are_refused() {
    let folder = behave_folder();
    let (_server, addr) = start_http(&folder);
    for origin in ["http://evil.example", "null"] {
        let response = http(&addr, &initialize_request(&format!("Origin: {origin}\r\n")));
        assert!(response.starts_with("HTTP/1.1 403"), "{origin}: {response}");
    }
    let response = http(&addr, &initialize_request("Host: evil.example\r\n"));
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    let response = http(
        &addr,
        &initialize_request("Origin: http://localhost:5173\r\n"),
    );
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "a local page: {response}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_folder_is_quiet_until_the_served_tools_change() {
    let folder = Folder::new();
    let compute = folder.add(&example("rust-compute"), "rust-compute");
    let (host, report) = host_for(&folder).await;
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    let mut changed = host.tools_changed();
    changed.mark_unchanged();
    let _watch = host.watch_folder(folder.path()).expect("watch");

    // Reading the files and writing one again unchanged are no changes.
    std::fs::read(&compute).expect("read");
    let bytes = std::fs::read(&compute).expect("read");
    std::fs::write(&compute, &bytes).expect("rewrite");
    // A quiet window several times the folder's settle time: nothing may
    // arrive in it (a notice that comes later would be as wrong).
    let quiet = tokio::time::timeout(Duration::from_secs(2), changed.changed()).await;
    assert!(quiet.is_err(), "no list change for unchanged files");

    folder.add(&example("rust-files"), "rust-files");
    tokio::time::timeout(WAIT, changed.changed())
        .await
        .expect("a new plugin changes the list")
        .expect("host alive");
    assert!(
        host.tools().iter().any(|t| t.tool.name == "search_text"),
        "the new tool is served when the change is announced"
    );
    let again = tokio::time::timeout(Duration::from_secs(2), changed.changed()).await;
    assert!(again.is_err(), "one plugin added, one notice");
}

/// `serve --http` serves the dashboard beside `/mcp` (issue 14): its live
/// view at `/`, behind the same Host check and its token; `/mcp` answers
/// as before.
#[test]
fn serve_http_serves_the_dashboard_beside_mcp() {
    let folder = behave_folder();
    let (server, addr) = start_http(&folder);
    let (_, token) = server.dashboard();
    let get = |path: &str, host: &str| {
        http(
            &addr,
            &format!(
                "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
            ),
        )
    };
    let live = get("/", "localhost");
    assert!(live.starts_with("HTTP/1.1 200"), "{live}");
    assert!(live.contains("Live calls"), "{live}");
    // The page may come before the folder is loaded ("Plugins are still
    // loading"): read it again until it lists the plugin.
    let deadline = std::time::Instant::now() + WAIT;
    let mut plugins = get("/plugins", "localhost");
    while !plugins.contains("behave") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        plugins = get("/plugins", "localhost");
    }
    assert!(plugins.contains("behave"), "{plugins}");
    let foreign = get("/", "evil.example");
    assert!(foreign.starts_with("HTTP/1.1 403"), "{foreign}");
    let response = http(&addr, &initialize_request(""));
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

/// The requests of one short session: initialize, then `ok` and `data` of
/// the behave plugin, as a client writes them.
fn one_session_of_requests() -> String {
    [
        json!({ "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": { "name": "files", "version": "0" } } }),
        json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }),
        json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": { "name": "ok", "arguments": {} } }),
        json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": { "name": "data", "arguments": { "n": 21 } } }),
    ]
    .iter()
    .map(|m| format!("{m}\n"))
    .collect()
}

fn serve_command(folder: &Folder) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_toolhost"));
    command
        .arg("--plugins")
        .arg(folder.path())
        .arg("--cache-dir")
        .arg(crate::common::root().join("target/toolhost-test-cache"))
        .args(["--no-state", "serve"])
        .stderr(std::process::Stdio::null());
    command
}

/// Whether `fd`'s open file is in non-blocking mode.
fn non_blocking(fd: impl std::os::fd::AsFd) -> bool {
    rustix::fs::fcntl_getfl(fd)
        .expect("fcntl")
        .contains(rustix::fs::OFlags::NONBLOCK)
}

#[test]
fn serve_on_stdio_reads_requests_from_a_file_and_writes_answers_to_one() {
    // Files cannot be waited on by the event loop as pipes are: stdio falls
    // back to tokio's own stdin and stdout for them (a terminal likewise).
    let folder = behave_folder();
    let io = Folder::new();
    let requests = io.write("requests.jsonl", one_session_of_requests().as_bytes());
    let answers = io.path().join("answers.jsonl");
    let status = serve_command(&folder)
        .stdin(std::fs::File::open(&requests).expect("open requests"))
        .stdout(std::fs::File::create(&answers).expect("create answers"))
        .status()
        .expect("run toolhost serve");
    assert!(status.success(), "{status}");
    let written = std::fs::read_to_string(&answers).expect("read answers");
    let messages: Vec<Value> = written
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON message a line"))
        .collect();
    let answer = |id: u64| {
        messages
            .iter()
            .find(|m| m["id"] == id)
            .unwrap_or_else(|| panic!("no answer to {id} in {written}"))
    };
    assert_eq!(answer(1)["result"]["content"][0]["text"], "ok", "{written}");
    assert_eq!(
        answer(2)["result"]["structuredContent"],
        json!({ "n": 21, "double": 42 }),
        "{written}"
    );
}

#[test]
fn serve_on_stdio_leaves_its_pipes_as_it_found_them() {
    // The host reads and writes pipes through its event loop, which needs
    // them non-blocking; the flag belongs to the open pipe, which the
    // process that started the host may go on using after it. Here stdin
    // comes blocking and stdout non-blocking.
    let folder = behave_folder();
    let (stdin, mut to_host) = std::io::pipe().expect("pipe");
    let (from_host, stdout) = std::io::pipe().expect("pipe");
    let (stdin_copy, stdout_copy) = (
        stdin.try_clone().expect("dup"),
        stdout.try_clone().expect("dup"),
    );
    rustix::io::ioctl_fionbio(&stdout_copy, true).expect("set non-blocking");
    let mut child = serve_command(&folder)
        .stdin(stdin)
        .stdout(stdout)
        .spawn()
        .expect("start toolhost serve");
    to_host
        .write_all(one_session_of_requests().as_bytes())
        .expect("write requests");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(from_host));
    let mut answered = Vec::new();
    while answered.len() < 3 {
        let line = lines.next().expect("an answer").expect("read");
        answered.push(serde_json::from_str::<Value>(&line).expect("JSON"));
    }
    assert!(
        non_blocking(&stdin_copy) && non_blocking(&stdout_copy),
        "the host reads its pipes through its event loop"
    );
    drop(to_host);
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status}");
    assert!(!non_blocking(&stdin_copy), "stdin left non-blocking");
    assert!(non_blocking(&stdout_copy), "stdout made blocking");
}
