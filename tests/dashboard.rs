//! The dashboard (issue 14) from outside: its pages over HTTP against a
//! host serving the example plugins, its live events, "try a tool", and
//! who may use it. `dashboard_browser.rs`-style checks in a real browser
//! are at the end (headless Chromium).

use std::net::SocketAddr;

use crate::common::{Folder, WAIT, config, root};
use fantoccini::Locator;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use toolhost::Host;
use toolhost::dashboard::{self, DashboardError, DashboardOptions};

/// A host serving the example plugins, and its dashboard on a free
/// loopback port.
async fn dashboard_with(options: DashboardOptions) -> (Host, SocketAddr) {
    let host = Host::new(config()).expect("host");
    let report = host
        .load_dir(root().join("dist").join("plugins"))
        .await
        .expect("load");
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    let addr = serve(&host, options).await;
    (host, addr)
}

async fn serve(host: &Host, options: DashboardOptions) -> SocketAddr {
    let server = dashboard::bind(host, "127.0.0.1:0".parse().expect("addr"), options)
        .await
        .expect("bind");
    let addr = server.local_addr();
    tokio::spawn(server.run(std::future::pending()));
    addr
}

/// An HTTP/1.1 answer: status, headers (lowercase names) and body.
struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Send one request with `Connection: close` and read the whole answer.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut text = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        text.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        text.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
        text.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    text.push_str("\r\n");
    text.push_str(body);
    exchange(addr, text.as_bytes()).await
}

/// Send `request` as it is on a new connection, and read the answer.
async fn exchange(addr: SocketAddr, request: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("an answer in time")
        .expect("read");
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    Reply {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, &[], "").await
}

/// Text as the pages escape it.
fn escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The task id a "try a tool" answer redirects to.
fn task_of(reply: &Reply) -> String {
    assert_eq!(reply.status, 303, "{}", reply.body);
    let location = reply.header("location").expect("a location");
    location
        .strip_prefix("/calls/")
        .expect("a call page")
        .to_owned()
}

/// An open event stream, read as it comes.
struct Events {
    stream: TcpStream,
    seen: String,
}

impl Events {
    async fn open(addr: SocketAddr, path: &str) -> Self {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let text =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
        stream.write_all(text.as_bytes()).await.expect("write");
        Events {
            stream,
            seen: String::new(),
        }
    }

    /// Forget the events read so far: [`until`](Self::until) then finds
    /// only later ones.
    fn forget(&mut self) {
        let read = self.seen.rfind("\n\n").map_or(0, |end| end + 2);
        self.seen.drain(..read);
    }

    /// Read until the stream so far holds an event line `event: NAME`
    /// followed by data holding `needle`; returns that data line.
    async fn until(&mut self, name: &str, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let lines: Vec<&str> = self.seen.lines().collect();
            for w in lines.windows(2) {
                if w[0] == format!("event: {name}")
                    && w[1].starts_with("data: ")
                    && w[1].contains(needle)
                {
                    return w[1].to_owned();
                }
            }
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no `{name}` event with {needle} in:\n{}", self.seen))
                .expect("read");
            assert!(n > 0, "the stream ended before `{name}`:\n{}", self.seen);
            self.seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
}

/// The dashboard serving alone holds at most `max_connections` open; one
/// past it is answered 503, naming the limit, and the others go on.
#[tokio::test(flavor = "multi_thread")]
async fn a_connection_past_the_dashboards_cap_is_answered_503_naming_it() {
    let mut options = DashboardOptions::default();
    options.max_connections = 2;
    let (host, addr) = dashboard_with(options).await;
    // Two live views hold both connections open.
    let mut first = Events::open(addr, "/events").await;
    first.until("snapshot", "[").await;
    let mut second = Events::open(addr, "/events").await;
    second.until("snapshot", "[").await;

    let refused = get(addr, "/").await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(
        refused
            .body
            .contains("limit of 2 open connections (max_connections)"),
        "{}",
        refused.body
    );
    // The open ones are still served: a call's events reach them.
    host.call("word_count", r#"{"text": "a b"}"#).await;
    first.until("started", "word_count").await;
    second.until("started", "word_count").await;
}

/// A request body is read whole before the pages see it, under the
/// dashboard's own limit (and time): past it, declared or sent in chunks,
/// the answer is 413 naming it, and the dashboard goes on serving.
#[tokio::test(flavor = "multi_thread")]
async fn a_body_past_the_dashboards_limit_is_answered_413_naming_it() {
    let (_host, addr) = dashboard_with(DashboardOptions::default()).await;
    let head = |framing: &str| {
        format!(
            "POST /tools/word_count HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
             Content-Type: application/x-www-form-urlencoded\r\n{framing}\r\n\r\n"
        )
    };
    // Declared too large: refused before a byte of it is read.
    let declared = head(&format!("Content-Length: {}", dashboard::MAX_BODY + 1));
    let chunk = format!("{:x}\r\n{}\r\n", 1 << 20, "a".repeat(1 << 20));
    let chunked = format!(
        "{}5\r\ntext=\r\n{}0\r\n\r\n",
        head("Transfer-Encoding: chunked"),
        chunk.repeat(3)
    );
    for request in [declared, chunked] {
        let refused = exchange(addr, request.as_bytes()).await;
        assert_eq!(refused.status, 413, "{}", refused.body);
        assert!(
            refused.body.contains("over the dashboard's limit of 2 MiB"),
            "{}",
            refused.body
        );
    }
    let served = request(addr, "POST", "/tools/word_count", &[], "text=a+b").await;
    assert_eq!(served.status, 303, "{}", served.body);
}

/// The guard comes first: a request it refuses has nothing of its body
/// read (the limit is not what answers).
#[tokio::test(flavor = "multi_thread")]
async fn a_request_the_guard_refuses_is_refused_before_its_body_is_read() {
    let (_host, addr) = dashboard_with(DashboardOptions::default()).await;
    let request = format!(
        "POST /tools/word_count HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\
         Content-Length: {}\r\n\r\n",
        dashboard::MAX_BODY + 1
    );
    let refused = exchange(addr, request.as_bytes()).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_non_loopback_bind_without_a_token_is_refused() {
    let host = Host::new(config()).expect("host");
    let addr: SocketAddr = "0.0.0.0:0".parse().expect("addr");
    let refused = dashboard::bind(&host, addr, DashboardOptions::default()).await;
    assert!(
        matches!(refused, Err(DashboardError::TokenRequired { .. })),
        "{refused:?}"
    );
    let mut options = DashboardOptions::default();
    options.token = Some(String::new());
    let refused = dashboard::bind(&host, addr, options).await;
    assert!(matches!(refused, Err(DashboardError::TokenRequired { .. })));
    let mut options = DashboardOptions::default();
    options.token = Some("s3cret".into());
    assert!(dashboard::bind(&host, addr, options).await.is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_command_refuses_a_non_loopback_address_without_a_token() {
    let (ok, _, err) = crate::common::toolhost(&["dashboard", "--addr", "0.0.0.0:0"]);
    assert!(!ok);
    assert!(err.contains("without a token"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cross_origin_request_is_refused() {
    let (_host, addr) = dashboard_with(DashboardOptions::default()).await;
    let form = "text=one+two";
    let other = request(
        addr,
        "POST",
        "/tools/word_count",
        &[("Origin", "http://evil.example")],
        form,
    )
    .await;
    assert_eq!(other.status, 403, "{}", other.body);
    // Same host name, another port: another origin too.
    let port = request(
        addr,
        "POST",
        "/tools/word_count",
        &[("Origin", "http://127.0.0.1:1")],
        form,
    )
    .await;
    assert_eq!(port.status, 403);
    let site = request(
        addr,
        "POST",
        "/tools/word_count",
        &[("Sec-Fetch-Site", "cross-site")],
        form,
    )
    .await;
    assert_eq!(site.status, 403);
    let origin = format!("http://{addr}");
    let own = request(
        addr,
        "POST",
        "/tools/word_count",
        &[("Origin", &origin)],
        form,
    )
    .await;
    assert_eq!(own.status, 303, "{}", own.body);
    // A name that resolves to this machine by DNS rebinding.
    let rebound = request(addr, "GET", "/", &[("Host", "attacker.example")], "").await;
    assert_eq!(rebound.status, 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_token_is_checked_on_every_request() {
    let mut options = DashboardOptions::default();
    options.token = Some("s3cret".into());
    let (_host, addr) = dashboard_with(options).await;
    for path in [
        "/",
        "/history",
        "/plugins",
        "/events",
        "/assets/dashboard.css",
    ] {
        assert_eq!(get(addr, path).await.status, 401, "{path}");
    }
    let wrong = request(addr, "GET", "/", &[("Authorization", "Bearer s3cre")], "").await;
    assert_eq!(wrong.status, 401);
    let bearer = request(
        addr,
        "GET",
        "/plugins",
        &[("Authorization", "Bearer s3cret")],
        "",
    )
    .await;
    assert_eq!(bearer.status, 200);
    let visit = get(addr, "/?token=s3cret").await;
    assert_eq!(visit.status, 303);
    let cookie = visit.header("set-cookie").expect("a cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().expect("name=value");
    let with_cookie = request(addr, "GET", "/history", &[("Cookie", pair)], "").await;
    assert_eq!(with_cookie.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn history_and_a_calls_page_show_a_finished_call() {
    let (host, addr) = dashboard_with(DashboardOptions::default()).await;
    let session = host.open_session(Default::default());
    let answer = session
        .call("c1", "word_count", r#"{"text": "one two three"}"#)
        .await;
    let task_id = answer.task_id.expect("a task id");
    let record = session.ended("c1").await.expect("a record");

    let history = get(addr, "/history?tool=word_count&status=done").await;
    assert_eq!(history.status, 200);
    assert!(
        history.body.contains(&format!("/calls/{task_id}")),
        "{}",
        history.body
    );
    let other = get(addr, "/history?tool=word_count&status=error").await;
    assert!(!other.body.contains(&task_id));
    let by_session = get(addr, &format!("/history?session={}", session.id())).await;
    assert!(by_session.body.contains(&task_id));

    let page = get(addr, &format!("/calls/{task_id}")).await;
    assert_eq!(page.status, 200);
    let result = record.result.expect("a result");
    let text = result.text.clone().expect("a result text");
    let data = result.data.clone().expect("result data");
    for shown in [
        escaped(&text),
        escaped(&serde_json::to_string_pretty(&data).expect("JSON")),
        format!("<dd>{}</dd>", record.fuel_used),
        "<dd id=\"limit-hit\">none</dd>".to_owned(),
        "status-done".to_owned(),
        escaped(r#""text": "one two three""#),
    ] {
        assert!(
            page.body.contains(&shown),
            "{shown} missing from\n{}",
            page.body
        );
    }
    assert_eq!(get(addr, "/calls/no-such-task").await.status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_plugins_page_shows_grants_tools_and_refusals() {
    let folder = Folder::new();
    let granted = tempfile::tempdir().expect("temp dir");
    let manifest = format!(
        "[permissions]\n\
         env = [\"HOME\", \"LANG\"]\n\
         dirs = [{{ host = \"{}\", guest = \"/data\", write = true }}]\n\
         network = [\"127.0.0.1:8080\", \"api.example.com:443\"]\n",
        granted.path().display()
    );
    let wasm = folder.add_with_manifest(
        &crate::common::example("rust-compute"),
        "rust-compute",
        &manifest,
    );
    folder.add(&crate::common::test_plugin("bad-schema"), "bad-schema");
    let (host, report) = crate::common::host_for(&folder).await;
    let reason = crate::common::refusal(&report, "bad-schema.wasm");
    let plugin = &report.loaded[0];
    let size = std::fs::metadata(&wasm).expect("plugin file").len();
    // As the page rounds it: to the millisecond.
    let load_time = std::time::Duration::from_millis(plugin.load_time().as_millis() as u64);
    let addr = serve(&host, DashboardOptions::default()).await;
    let page = get(addr, "/plugins").await;
    assert_eq!(page.status, 200);
    for shown in [
        escaped(&reason),
        "bad-schema.wasm".to_owned(),
        "href=\"/tools/word_count\"".to_owned(),
        escaped(&host.tools()[0].plugin.limits().to_string()),
        "<dt>Environment</dt><dd>HOME, LANG</dd>".to_owned(),
        format!(
            "<code>{}</code> as <code>/data</code> (read-write)",
            escaped(&granted.path().display().to_string())
        ),
        "<dt>Network</dt><dd>127.0.0.1:8080, api.example.com:443</dd>".to_owned(),
        format!("<dt>Size</dt><dd>{}</dd>", bytesize::ByteSize(size)),
        format!(
            "<dt>Loaded in</dt><dd>{}",
            humantime::format_duration(load_time)
        ),
    ] {
        assert!(
            page.body.contains(&shown),
            "{shown} missing from\n{}",
            page.body
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_calls_page_names_the_limit_that_stopped_it_and_shows_its_error() {
    let folder = Folder::new();
    folder.add_with_manifest(
        &crate::common::test_plugin("spin"),
        "spin",
        "[limits]\nfuel = 5_000_000\n",
    );
    let (host, report) = crate::common::host_for(&folder).await;
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    let addr = serve(&host, DashboardOptions::default()).await;
    let session = host.open_session(Default::default());
    let answer = session.call("c1", "spin", "{}").await;
    assert!(answer.is_error, "{}", answer.output);
    let task_id = answer.task_id.expect("a task id");
    let record = crate::common::ended(&session, "c1").await;
    let error = record.error.expect("an error");

    let page = get(addr, &format!("/calls/{task_id}")).await;
    assert_eq!(page.status, 200);
    for shown in [
        "status-error".to_owned(),
        escaped(&error),
        "<dd id=\"limit-hit\">fuel limit of 5000000 units</dd>".to_owned(),
    ] {
        assert!(
            page.body.contains(&shown),
            "{shown} missing from\n{}",
            page.body
        );
    }
}

/// The task id an MCP answer carries.
fn answer_task_id(answer: &serde_json::Value) -> String {
    answer["result"]["_meta"][toolhost::mcp::TASK_ID_KEY]
        .as_str()
        .unwrap_or_else(|| panic!("no task id in {answer}"))
        .to_owned()
}

/// `toolhost dashboard --addr 127.0.0.1:0` over a folder and a task store,
/// its address read from its stderr; stopped when dropped.
struct DashboardCommand(std::process::Child, SocketAddr);

impl DashboardCommand {
    fn start(folder: &Folder, state: &std::path::Path) -> Self {
        use std::ffi::OsStr;
        let args = [
            OsStr::new("--plugins"),
            folder.path().as_os_str(),
            OsStr::new("--state"),
            state.as_os_str(),
        ];
        let mut command = args.to_vec();
        command.extend(["dashboard", "--addr", "127.0.0.1:0"].map(OsStr::new));
        let (child, url, _) =
            crate::common::start_announcing(&command, "toolhost: dashboard on http://", WAIT);
        let addr = url.trim_end_matches('/').parse().expect("an address");
        DashboardCommand(child, addr)
    }
}

impl Drop for DashboardCommand {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `toolhost dashboard` on its own, over the store a killed `toolhost
/// serve` left: the history has its calls, a finished one with its result,
/// and the one that was running is shown as interrupted, with when it was
/// found (B31).
#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_command_shows_a_stopped_hosts_calls_and_its_interrupted_ones() {
    use serde_json::json;
    let folder = Folder::new();
    folder.add(&crate::common::test_plugin("behave"), "behave");
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("tasks.db");
    let state_arg = state.display().to_string();

    let mut serve = crate::common::stdio::Server::start(folder.path(), &["--state", &state_arg]);
    let done = serve.call("data", json!({ "n": 2 })).pop().expect("answer");
    let done = answer_task_id(&done);
    // Released by its first update, so durable before its answer, and with
    // it every write before it (the finished call's end).
    let running = serve
        .call("progress", json!({ "n": 2, "sleep_ms": 600_000 }))
        .pop()
        .expect("answer");
    let running = answer_task_id(&running);
    serve.kill();

    let dashboard = DashboardCommand::start(&folder, &state);
    let addr = dashboard.1;
    let history = get(addr, "/history").await;
    assert_eq!(history.status, 200);
    for id in [&done, &running] {
        assert!(
            history.body.contains(&format!("/calls/{id}")),
            "{id} missing from\n{}",
            history.body
        );
    }
    let interrupted = get(addr, "/history?status=interrupted").await;
    assert!(interrupted.body.contains(&format!("/calls/{running}")));
    assert!(!interrupted.body.contains(&format!("/calls/{done}")));

    let page = get(addr, &format!("/calls/{running}")).await;
    assert_eq!(page.status, 200);
    for shown in [
        "status-interrupted",
        "<dt>Interrupted</dt>",
        "The host stopped while this call was running; found at ",
        "step 1 of 2",
    ] {
        assert!(
            page.body.contains(shown),
            "{shown} missing from\n{}",
            page.body
        );
    }
    // Not a duration that goes on growing: when the host stopped is not known.
    assert!(!page.body.contains("data-since"), "{}", page.body);
    let page = get(addr, &format!("/calls/{done}")).await;
    assert!(page.body.contains("status-done"), "{}", page.body);
    assert!(
        page.body.contains(&escaped(
            &serde_json::to_string_pretty(&json!({ "n": 2, "double": 4 })).expect("JSON")
        )),
        "{}",
        page.body
    );
    drop(dashboard);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_argument_shows_what_the_model_would_be_told() {
    let (host, addr) = dashboard_with(DashboardOptions::default()).await;
    let told = host
        .call("index_directory", r#"{"delay_ms": "soon"}"#)
        .await
        .model_text();
    let reply = request(addr, "POST", "/tools/index_directory", &[], "delay_ms=soon").await;
    assert_eq!(reply.status, 422);
    assert!(
        reply.body.contains(&escaped(&told)),
        "{told} missing from\n{}",
        reply.body
    );
    // What was typed stays in the form.
    assert!(reply.body.contains("value=\"soon\""), "{}", reply.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_tool_form_has_a_field_per_argument() {
    let (_host, addr) = dashboard_with(DashboardOptions::default()).await;
    let page = get(addr, "/tools/index_directory").await;
    assert_eq!(page.status, 200);
    for field in ["name=\"dir\"", "name=\"delay_ms\"", "name=\"_json\""] {
        assert!(
            page.body.contains(field),
            "{field} missing from\n{}",
            page.body
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn live_events_follow_a_call_started_from_the_form_until_it_is_cancelled() {
    let (_host, addr) = dashboard_with(DashboardOptions::default()).await;
    let mut all = Events::open(addr, "/events").await;
    all.until("snapshot", "[").await;
    let started = request(addr, "POST", "/tools/index_directory", &[], "delay_ms=300").await;
    let task_id = task_of(&started);
    let mut one = Events::open(addr, &format!("/events?task={task_id}")).await;
    let data = all.until("started", &task_id).await;
    assert!(data.contains(r#""arguments":{"delay_ms":300}"#), "{data}");
    all.until("updated", &task_id).await;
    one.until("updated", &task_id).await;

    let live = get(addr, "/").await;
    assert!(
        live.body.contains(&format!("task-{task_id}")),
        "{}",
        live.body
    );
    let cancel = request(addr, "POST", &format!("/calls/{task_id}/cancel"), &[], "").await;
    assert_eq!(cancel.status, 303, "{}", cancel.body);
    all.until("ended", r#""status":"cancelled""#).await;
    one.until("ended", &task_id).await;

    let history = get(addr, "/history?status=cancelled&tool=index_directory").await;
    assert!(history.body.contains(&task_id), "{}", history.body);
    let page = get(addr, &format!("/calls/{task_id}")).await;
    assert!(page.body.contains("status-cancelled"));
    // A page opened after the end hears of it at once.
    let mut late = Events::open(addr, &format!("/events?task={task_id}")).await;
    late.until("ended", "cancelled").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_of_another_session_is_cancelled_by_its_task_id() {
    let (host, addr) = dashboard_with(DashboardOptions::default()).await;
    let session = host.open_session(Default::default());
    let answer = session
        .call("c1", "index_directory", r#"{"delay_ms": 300}"#)
        .await;
    let task_id = answer.task_id.expect("a task id");
    let cancel = request(addr, "POST", &format!("/calls/{task_id}/cancel"), &[], "").await;
    assert_eq!(cancel.status, 303, "{}", cancel.body);
    let record = tokio::time::timeout(WAIT, session.ended("c1"))
        .await
        .expect("ends")
        .expect("a record");
    assert_eq!(record.status, toolhost::CallStatus::Cancelled);
    let again = request(addr, "POST", &format!("/calls/{task_id}/cancel"), &[], "").await;
    assert_eq!(again.status, 409);
}

/// The `behave` test plugin's host and its dashboard.
async fn behave_dashboard() -> (Host, SocketAddr, Folder) {
    let folder = Folder::new();
    folder.add(&crate::common::test_plugin("behave"), "behave");
    let (host, report) = crate::common::host_for(&folder).await;
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    let addr = serve(&host, DashboardOptions::default()).await;
    (host, addr, folder)
}

/// The HTML of the figures row of `tool`.
fn figures_row<'a>(page: &'a str, tool: &str) -> &'a str {
    let start = page
        .find(&format!("<tr data-tool=\"{tool}\">"))
        .unwrap_or_else(|| panic!("no figures row for {tool} in\n{page}"));
    let row = &page[start..];
    &row[..row.find("</tr>").expect("the row ends")]
}

/// Nearest-rank percentile, as the figures count it.
fn nearest_rank<T: Copy + Ord>(values: &mut [T], p: usize) -> T {
    values.sort_unstable();
    values[(values.len() * p).div_ceil(100).max(1) - 1]
}

#[tokio::test(flavor = "multi_thread")]
async fn the_figures_count_the_calls_of_the_last_hour() {
    let (host, addr, _folder) = behave_dashboard().await;
    let session = host.open_session(Default::default());
    let mut records = Vec::new();
    for (i, n) in [3, 40, 7, 12].into_iter().enumerate() {
        let id = format!("d{i}");
        session
            .call(
                &id,
                "spin_once",
                &format!(r#"{{"iterations": {}}}"#, n * 1000),
            )
            .await;
        records.push(session.ended(&id).await.expect("a record"));
    }
    for id in ["f1", "f2"] {
        session.call(id, "fail", "{}").await;
        session.ended(id).await.expect("a record");
    }

    let page = get(addr, "/").await;
    assert_eq!(page.status, 200);
    let spin = figures_row(&page.body, "spin_once");
    let mut fuel: Vec<u64> = records.iter().map(|r| r.fuel_used).collect();
    let mut micros: Vec<u128> = (records.iter())
        .map(|r| {
            let (start, end) = (r.started_at.expect("started"), r.ended_at.expect("ended"));
            end.duration_since(start).expect("in order").as_micros()
        })
        .collect();
    assert!(fuel.iter().all(|&f| f > 0), "{fuel:?}");
    for shown in [
        r#"data-calls="4""#.to_owned(),
        r#"data-errors="0" data-finished="4""#.to_owned(),
        format!(
            r#"data-p50="{}" data-p99="{}""#,
            nearest_rank(&mut fuel, 50),
            nearest_rank(&mut fuel, 99)
        ),
        format!(
            r#"data-p50-us="{}" data-p99-us="{}""#,
            nearest_rank(&mut micros, 50),
            nearest_rank(&mut micros, 99)
        ),
        "0.0 % (0 of 4)".to_owned(),
        // The per-minute chart, its label and a bar.
        r#"aria-label="4 calls in the last hour, at most "#.to_owned(),
        "<rect x=".to_owned(),
    ] {
        assert!(spin.contains(&shown), "{shown} missing from\n{spin}");
    }
    let fail = figures_row(&page.body, "fail");
    for shown in [
        r#"data-calls="2""#,
        r#"data-errors="2" data-finished="2""#,
        "100.0 % (2 of 2)",
    ] {
        assert!(fail.contains(shown), "{shown} missing from\n{fail}");
    }
    // The busiest tool first.
    assert!(page.body.find("data-tool=\"spin_once\"") < page.body.find("data-tool=\"fail\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_history_filters_by_time() {
    let (host, addr, _folder) = behave_dashboard().await;
    let session = host.open_session(Default::default());
    let task_id = session
        .call("c1", "ok", "{}")
        .await
        .task_id
        .expect("a task id");
    session.ended("c1").await.expect("a record");

    let shows = |path: &'static str| {
        let task_id = task_id.clone();
        async move {
            let page = get(addr, path).await;
            assert_eq!(page.status, 200, "{path}: {}", page.body);
            page.body.contains(&task_id)
        }
    };
    assert!(shows("/history?since=1h").await);
    assert!(shows("/history?since=1h&tool=ok&status=done").await);
    assert!(
        !shows("/history?until=1h").await,
        "created before an hour ago"
    );
    assert!(!shows("/history?since=2000-01-01&until=2000-01-02+12:00").await);
    assert!(shows("/history?since=2000-01-01&until=2999-01-01T00:00:00Z").await);
    let bad = get(addr, "/history?since=yesterday-ish").await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("yesterday-ish"), "{}", bad.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_live_view_shows_queued_calls_and_the_fuel_so_far() {
    let (host, addr, _folder) = behave_dashboard().await;
    let session = host.open_session(Default::default());
    let mut events = Events::open(addr, "/events").await;
    events.until("snapshot", "[").await;

    // A call that sends an update, then sleeps: its fuel so far is what it
    // had burned at the update.
    let progress = session
        .call("p1", "progress", r#"{"n": 2, "sleep_ms": 5000}"#)
        .await;
    let progress_id = progress.task_id.expect("a task id");
    let data = events.until("updated", &progress_id).await;
    let event: serde_json::Value =
        serde_json::from_str(data.trim_start_matches("data: ")).expect("json");
    let fuel = event["fuel_used"].as_u64().expect("fuel_used");
    assert!(fuel > 0, "{event}");

    // A queued call: its event, then its row.
    let first = session.clone();
    let running =
        tokio::spawn(async move { first.call("q1", "queue_me", r#"{"ms": 2000}"#).await });
    events.until("started", r#""call_id":"q1""#).await;
    let queued = session.call("q2", "queue_me", r#"{"ms": 1}"#).await;
    assert_eq!(queued.kind, toolhost::AnswerKind::Queued);
    let queued_id = queued.task_id.expect("a task id");
    let data = events.until("queued", &queued_id).await;
    assert!(data.contains(r#""arguments":{"ms":1}"#), "{data}");

    // p1 and q1 each hold an instance of the pool; q2 waits for q1.
    let mut pool = host.instances();
    let held = tokio::time::timeout(WAIT, pool.wait_for(|u| u.held == 2));
    let size = held.await.expect("two held").expect("pool").size;
    let live = get(addr, "/").await;
    let used = format!("Instance pool: 2 of {size} in use");
    assert!(live.body.contains(&used), "{used} not in\n{}", live.body);
    let row = |task_id: &str| {
        let start = live
            .body
            .find(&format!("id=\"task-{task_id}\""))
            .unwrap_or_else(|| panic!("no row for {task_id} in\n{}", live.body));
        let row = &live.body[start..];
        row[..row.find("</tr>").expect("the row ends")].to_owned()
    };
    assert!(row(&queued_id).contains("status-queued"));
    let shown = format!(r#"<td class="num fuel">{fuel}</td>"#);
    assert!(
        row(&progress_id).contains(&shown),
        "{shown} not in {}",
        row(&progress_id)
    );
    // The call's own page says so too.
    let page = get(addr, &format!("/calls/{progress_id}")).await;
    assert!(
        page.body.contains(&format!("{fuel} so far")),
        "{}",
        page.body
    );

    session.cancel("p1").expect("cancel");
    running.await.expect("the first call");
    events.until("ended", &queued_id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_live_view_follows_the_instance_pool() {
    let (host, addr, _folder) = behave_dashboard().await;
    let session = host.open_session(Default::default());
    let mut events = Events::open(addr, "/events").await;
    events.until("pool", r#""held":0"#).await;
    events.forget();
    let a = session
        .call("p1", "progress", r#"{"n": 2, "sleep_ms": 60000}"#)
        .await;
    assert_eq!(a.kind, toolhost::AnswerKind::Released);
    events.until("pool", r#""held":1"#).await;
    events.forget();
    session.cancel("p1").expect("cancel");
    events.until("pool", r#""held":0"#).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_plugins_page_names_each_plugin_s_language() {
    let (_host, addr) = dashboard_with(DashboardOptions::default()).await;
    let page = get(addr, "/plugins").await;
    for (plugin, language) in [
        ("rust-files", "Rust"),
        ("c-checksum", "C"),
        ("python-csv", "Python"),
        ("js-markdown", "JavaScript"),
    ] {
        let start = (page.body.find(&format!("<h2>{plugin}</h2>")))
            .unwrap_or_else(|| panic!("no {plugin} in\n{}", page.body));
        let section = &page.body[start..];
        let section = &section[..section.find("</section>").expect("the section ends")];
        let shown = format!(r#"<dd class="language">{language}</dd>"#);
        assert!(section.contains(&shown), "{shown} missing from\n{section}");
    }
}

/// Headless Chromium, driven through chromedriver (Debian's `chromium` and
/// `chromium-driver`, which `tools/test` installs).
mod browser {
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    use fantoccini::{Client, ClientBuilder, Locator};
    use hyper_util::client::legacy::connect::HttpConnector;
    use serde_json::json;

    pub const WAIT: Duration = Duration::from_secs(30);

    /// A browser session; the driver stops with it.
    pub struct Browser {
        pub client: Client,
        driver: Child,
    }

    impl Drop for Browser {
        fn drop(&mut self) {
            let _ = self.driver.kill();
            let _ = self.driver.wait();
        }
    }

    pub async fn open() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "chromedriver: install Debian's chromium and chromium-driver (tools/test does)",
            );
        let browser = Browser {
            client: connect(port).await,
            driver,
        };
        browser
            .client
            .set_window_size(1200, 800)
            .await
            .expect("window size");
        browser
    }

    async fn connect(port: u16) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"] }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => return client,
                // The driver is not listening yet.
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("no WebDriver session: {e}"),
            }
        }
    }

    /// Wait for an element matching `css`.
    pub async fn element(client: &Client, css: &str) -> fantoccini::elements::Element {
        client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no `{css}`: {e}"))
    }

    /// Wait for an element matching the XPath `xpath`.
    pub async fn xpath(client: &Client, xpath: &str) -> fantoccini::elements::Element {
        client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::XPath(xpath))
            .await
            .unwrap_or_else(|e| panic!("no `{xpath}`: {e}"))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn browser_starts_index_directory_sees_its_updates_cancels_it_and_finds_it_in_history() {
    let (host, addr) = dashboard_with(DashboardOptions::default()).await;
    // Some calls of the last hour, for the figures below the live calls.
    let earlier = host.open_session(Default::default());
    for (i, text) in ["one two", "the quick brown fox", "a b c d e f"]
        .iter()
        .enumerate()
    {
        let id = format!("w{i}");
        earlier
            .call(
                &id,
                "word_count",
                &serde_json::json!({ "text": text }).to_string(),
            )
            .await;
        earlier.ended(&id).await.expect("a record");
    }
    earlier
        .call("s1", "search_text", r#"{"query": "wasm"}"#)
        .await;
    earlier.ended("s1").await.expect("a record");
    let b = browser::open().await;
    let c = &b.client;
    c.goto(&format!("http://{addr}/tools/index_directory"))
        .await
        .expect("open the tool");
    let delay = browser::element(c, "input[name=delay_ms]").await;
    delay.clear().await.expect("clear");
    delay.send_keys("400").await.expect("type");
    browser::element(c, "#try button[type=submit]")
        .await
        .click()
        .await
        .expect("submit");
    // The call's page, its updates arriving after it loaded.
    let call = browser::element(c, "#call[data-live=true]").await;
    let task_id = call.attr("data-task").await.expect("attr").expect("a task");
    let loaded = c
        .find_all(Locator::Css("#updates li"))
        .await
        .expect("updates")
        .len();
    browser::xpath(c, &format!("//ol[@id='updates']/li[{}]", loaded + 1)).await;

    // The live view shows it running, with its latest update.
    c.goto(&format!("http://{addr}/")).await.expect("open live");
    let row = format!("#task-{task_id}");
    browser::element(c, &row).await;
    browser::xpath(
        c,
        &format!(
            "//tr[@id='task-{task_id}']/td[contains(@class,'latest')][normalize-space(.)!='']"
        ),
    )
    .await;
    // Its fuel so far, a number above zero once it has sent an update.
    let fuel = browser::element(c, &format!("{row} td.fuel"))
        .await
        .text()
        .await
        .expect("text");
    assert!(fuel.trim().parse::<u64>().is_ok_and(|f| f > 0), "{fuel}");
    // The pool's use follows a second call, started elsewhere.
    let pool = "//p[@id='pool'][contains(., 'Instance pool: 1 of ')]";
    browser::xpath(c, pool).await;
    let second = earlier
        .call("i2", "index_directory", r#"{"delay_ms": 400}"#)
        .await;
    assert!(!second.is_error, "{second:?}");
    browser::xpath(c, &pool.replace("1 of", "2 of")).await;
    earlier.cancel("i2").expect("cancel the second");
    browser::xpath(c, pool).await;
    browser::element(c, "#figures-table tr[data-tool=word_count] svg[role=img]").await;
    let screenshot = c.screenshot().await.expect("screenshot");
    let png = root().join("target").join("dashboard.png");
    std::fs::write(&png, screenshot).expect("save the screenshot");

    browser::element(c, &format!("{row} button"))
        .await
        .click()
        .await
        .expect("cancel");
    // The call's page, once the call has ended.
    browser::element(c, "#call[data-live=false] .status-cancelled").await;
    c.goto(&format!(
        "http://{addr}/history?status=cancelled&tool=index_directory"
    ))
    .await
    .expect("open history");
    browser::element(c, &format!("#history a[href='/calls/{task_id}']")).await;
    b.client.clone().close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread")]
async fn browser_shows_a_refused_plugin_with_its_reason_and_a_bad_argument_as_the_model_reads_it() {
    let folder = Folder::new();
    folder.add(&crate::common::example("rust-compute"), "rust-compute");
    folder.add(&crate::common::test_plugin("bad-schema"), "bad-schema");
    let (host, report) = crate::common::host_for(&folder).await;
    let reason = crate::common::refusal(&report, "bad-schema.wasm");
    let addr = serve(&host, DashboardOptions::default()).await;
    let b = browser::open().await;
    let c = &b.client;
    c.goto(&format!("http://{addr}/plugins"))
        .await
        .expect("open plugins");
    let refused = browser::element(c, "#refused")
        .await
        .text()
        .await
        .expect("text");
    assert!(refused.contains("bad-schema.wasm"), "{refused}");
    assert!(refused.contains(reason.trim()), "{reason} not in {refused}");

    let told = host.call("word_count", r#"{"text": 7}"#).await.model_text();
    c.goto(&format!("http://{addr}/tools/word_count"))
        .await
        .expect("open tool");
    browser::element(c, "details summary")
        .await
        .click()
        .await
        .expect("open JSON");
    browser::element(c, "#f-json")
        .await
        .send_keys(r#"{"text": 7}"#)
        .await
        .expect("type");
    browser::element(c, "#try button[type=submit]")
        .await
        .click()
        .await
        .expect("submit");
    let shown = browser::element(c, "#refusal pre")
        .await
        .text()
        .await
        .expect("text");
    assert_eq!(shown.trim(), told.trim());
    b.client.clone().close().await.expect("close");
}
