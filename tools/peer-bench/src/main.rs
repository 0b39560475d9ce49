//! The peer benchmark's client: a raw JSON-RPC client over MCP stdio that
//! starts toolhost and the peer wasm MCP hosts (wassette, hyper-mcp) with the
//! same echo, sleep and spin tools, measures them interleaved over a few
//! rounds, and prints the table (medians of the rounds) with toolhost/peer
//! ratios, then what each does with spinning and sleeping calls.
//!
//! Run by `tools/bench-peers`, which builds everything and writes the plan:
//! `peer-bench PLAN.json`. The plan names each server's command line, its
//! environment, how to start it with no compile cache (`{fresh}` in an
//! argument or a variable stands for a new empty folder) and its tool names.
//!
//! Figures, per server and round:
//! - sequential `tools/call echo` round trips: p50 and p99;
//! - server CPU per call (utime + stime from `/proc/PID/stat`, in clock
//!   ticks of 10 ms, hence the many calls), sequential and with 16 in flight;
//! - calls/s with 16 in flight;
//! - start to `tools/list` listing echo, with a warm cache and without;
//! - peak RSS (`VmHWM`) after the calls;
//! - for a server whose plan says how to serve streamable HTTP (toolhost),
//!   the same echo calls over HTTP in one legacy session: round trip p50,
//!   server CPU per call sequential and with 16 in flight (a connection
//!   each), calls/s.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Linux's USER_HZ: the unit of utime and stime in `/proc/PID/stat` (100 on
/// every mainstream kernel build; std has no `sysconf`).
const TICKS_PER_SECOND: f64 = 100.0;
/// How long any one answer may take before the server is judged stuck.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take from start to listing the echo tool.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a spinning call is watched before the client cancels it.
const SPIN_WATCH: Duration = Duration::from_secs(5);
/// How long an echo may take while calls spin before it counts as unanswered.
const ECHO_UNDER_SPIN_TIMEOUT: Duration = Duration::from_secs(3);

type Result<T> = std::result::Result<T, String>;

fn main() {
    if let Err(e) = run() {
        eprintln!("peer-bench: {e}");
        std::process::exit(1);
    }
}

// --- The plan ---------------------------------------------------------------

struct Plan {
    rounds: usize,
    calls: usize,
    in_flight: usize,
    starts: usize,
    scratch: PathBuf,
    servers: Vec<ServerPlan>,
}

/// A command line and the variables set for it.
struct Launch {
    argv: Vec<String>,
    env: Vec<(String, String)>,
}

struct ServerPlan {
    name: String,
    warm: Launch,
    /// The same, with no compile cache; `None` when the server keeps none.
    cold: Option<Launch>,
    /// What "no cache" means for this server, for the table's notes.
    no_cache: String,
    echo: String,
    sleep: String,
    spin: String,
    /// How to serve MCP over streamable HTTP, if the server is measured so.
    http: Option<HttpPlan>,
}

/// A server's streamable HTTP launch: `{port}` in an argument or in the
/// URL stands for a free loopback port.
struct HttpPlan {
    launch: Launch,
    url: String,
}

fn field<'a>(v: &'a Value, key: &str) -> Result<&'a Value> {
    v.get(key).ok_or_else(|| format!("the plan has no `{key}`"))
}

fn string(v: &Value, key: &str) -> Result<String> {
    field(v, key)?
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("`{key}` in the plan is not a string"))
}

fn count(v: &Value, key: &str) -> Result<usize> {
    field(v, key)?
        .as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("`{key}` in the plan is not a positive integer"))
}

fn strings(v: &Value, key: &str) -> Result<Vec<String>> {
    field(v, key)?
        .as_array()
        .and_then(|a| a.iter().map(|s| s.as_str().map(str::to_owned)).collect())
        .filter(|a: &Vec<String>| !a.is_empty())
        .ok_or_else(|| format!("`{key}` in the plan is not a list of strings"))
}

fn env_of(v: &Value, key: &str) -> Result<Vec<(String, String)>> {
    let Some(map) = v.get(key) else {
        return Ok(Vec::new());
    };
    map.as_object()
        .and_then(|m| {
            m.iter()
                .map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect()
        })
        .ok_or_else(|| format!("`{key}` in the plan is not an object of strings"))
}

impl Plan {
    fn read(path: &Path) -> Result<Self> {
        let text =
            fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let v: Value =
            serde_json::from_str(&text).map_err(|e| format!("parsing {}: {e}", path.display()))?;
        let servers = field(&v, "servers")?
            .as_array()
            .ok_or("`servers` in the plan is not a list")?
            .iter()
            .map(|s| {
                let cold = match s.get("cold_argv") {
                    None | Some(Value::Null) => None,
                    Some(_) => Some(Launch {
                        argv: strings(s, "cold_argv")?,
                        env: env_of(s, "cold_env")?,
                    }),
                };
                Ok(ServerPlan {
                    name: string(s, "name")?,
                    warm: Launch {
                        argv: strings(s, "argv")?,
                        env: env_of(s, "env")?,
                    },
                    cold,
                    no_cache: string(s, "no_cache")?,
                    echo: string(s, "echo")?,
                    sleep: string(s, "sleep")?,
                    spin: string(s, "spin")?,
                    http: match s.get("http_argv") {
                        None | Some(Value::Null) => None,
                        Some(_) => Some(HttpPlan {
                            launch: Launch {
                                argv: strings(s, "http_argv")?,
                                env: env_of(s, "env")?,
                            },
                            url: string(s, "http_url")?,
                        }),
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if servers.is_empty() {
            return Err("the plan has no servers".into());
        }
        Ok(Self {
            rounds: count(&v, "rounds")?,
            calls: count(&v, "calls")?,
            in_flight: count(&v, "in_flight")?,
            starts: count(&v, "starts")?,
            scratch: PathBuf::from(string(&v, "scratch")?),
            servers,
        })
    }
}

// --- One server over stdio ----------------------------------------------------

enum Incoming {
    Response { id: u64, at: Instant, body: Value },
    Notification { method: String },
    Closed,
}

/// A running server: its stdin, and its stdout read by a thread that stamps
/// each answer with the time it arrived.
struct Server {
    child: Child,
    stdin: ChildStdin,
    incoming: Receiver<Incoming>,
    /// Answers read while waiting for another one.
    early: HashMap<u64, (Instant, Value)>,
    notifications: Vec<String>,
    next_id: u64,
    name: String,
}

/// The outcome of one request: its answer, or that none came in time.
enum Answer {
    Ok { at: Instant, body: Value },
    None,
}

impl Server {
    fn spawn(name: &str, launch: &Launch, log: &Path) -> Result<Self> {
        let mut child = command(launch, log)?
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{name}: starting {}: {e}", launch.argv[0]))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, incoming) = channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let at = Instant::now();
                let Ok(body) = serde_json::from_str::<Value>(&line) else {
                    continue; // not JSON-RPC: ignored, as a client would
                };
                let message = match (body.get("id").and_then(Value::as_u64), body.get("method")) {
                    (Some(id), None) => Incoming::Response { id, at, body },
                    (_, Some(method)) => Incoming::Notification {
                        method: method.as_str().unwrap_or_default().to_owned(),
                    },
                    _ => continue,
                };
                if tx.send(message).is_err() {
                    return;
                }
            }
            let _ = tx.send(Incoming::Closed);
        });
        Ok(Self {
            child,
            stdin,
            incoming,
            early: HashMap::new(),
            notifications: Vec::new(),
            next_id: 1,
            name: name.to_owned(),
        })
    }

    fn write(&mut self, message: &Value) -> Result<()> {
        let mut line = message.to_string();
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .map_err(|e| format!("{}: writing to the server: {e}", self.name))
    }

    fn request(&mut self, method: &str, params: Value) -> Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        self.write(&json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }))?;
        Ok(id)
    }

    fn notify(&mut self, method: &str, params: Value) -> Result<()> {
        self.write(&json!({ "jsonrpc": "2.0", "method": method, "params": params }))
    }

    fn call(&mut self, tool: &str, arguments: Value) -> Result<u64> {
        self.request(
            "tools/call",
            json!({ "name": tool, "arguments": arguments }),
        )
    }

    /// Read what the server sent until `deadline`, keeping answers; true
    /// when the answer to `id` has come.
    fn pump(&mut self, id: Option<u64>, deadline: Instant) -> Result<bool> {
        loop {
            if let Some(id) = id
                && self.early.contains_key(&id)
            {
                return Ok(true);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.incoming.recv_timeout(left) {
                Ok(Incoming::Response { id, at, body }) => {
                    self.early.insert(id, (at, body));
                }
                Ok(Incoming::Notification { method }) => self.notifications.push(method),
                Ok(Incoming::Closed) | Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!("{}: the server closed its stdout", self.name));
                }
                Err(RecvTimeoutError::Timeout) => return Ok(false),
            }
        }
    }

    fn wait_until(&mut self, id: u64, deadline: Instant) -> Result<Answer> {
        if self.pump(Some(id), deadline)? {
            let (at, body) = self.early.remove(&id).ok_or("lost an answer")?;
            return Ok(Answer::Ok { at, body });
        }
        Ok(Answer::None)
    }

    /// The answer to `id`, which must come within [`ANSWER_TIMEOUT`].
    fn wait(&mut self, id: u64) -> Result<(Instant, Value)> {
        match self.wait_until(id, Instant::now() + ANSWER_TIMEOUT)? {
            Answer::Ok { at, body } => Ok((at, body)),
            Answer::None => Err(format!(
                "{}: no answer to request {id} in {ANSWER_TIMEOUT:?}",
                self.name
            )),
        }
    }

    fn initialize(&mut self) -> Result<()> {
        let id = self.request("initialize", initialize_params())?;
        let (_, answer) = self.wait(id)?;
        if answer.get("result").is_none() {
            return Err(format!("{}: initialize failed: {answer}", self.name));
        }
        self.notify("notifications/initialized", json!({}))
    }

    /// List the tools until `tool` is among them (a server may serve its
    /// plugins as they load, and say so with `tools/list_changed`).
    fn wait_for_tool(&mut self, tool: &str, deadline: Instant) -> Result<()> {
        loop {
            let id = self.request("tools/list", json!({}))?;
            let (_, answer) = self.wait(id)?;
            let tools = answer
                .pointer("/result/tools")
                .and_then(Value::as_array)
                .ok_or_else(|| format!("{}: tools/list failed: {answer}", self.name))?;
            if tools.iter().any(|t| t["name"] == tool) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let names: Vec<_> = tools.iter().map(|t| t["name"].to_string()).collect();
                return Err(format!(
                    "{}: no tool {tool} listed after {START_TIMEOUT:?}; listed: {}",
                    self.name,
                    names.join(", ")
                ));
            }
            // Relist on the next list_changed, or after 10 ms at the latest.
            self.notifications.clear();
            let until = (Instant::now() + Duration::from_millis(10)).min(deadline);
            while Instant::now() < until
                && !self
                    .notifications
                    .iter()
                    .any(|m| m.ends_with("list_changed"))
            {
                self.pump(None, (Instant::now() + Duration::from_millis(1)).min(until))?;
            }
        }
    }

    fn cpu_ticks(&self) -> Result<u64> {
        cpu_ticks(self.child.id())
    }

    fn peak_rss_kib(&self) -> Result<u64> {
        let path = format!("/proc/{}/status", self.child.id());
        let status = fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| format!("no VmHWM in {path}"))
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `launch` as a command, its stderr appended to `log`.
fn command(launch: &Launch, log: &Path) -> Result<Command> {
    let stderr = File::options()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("opening {}: {e}", log.display()))?;
    let mut command = Command::new(&launch.argv[0]);
    command
        .args(&launch.argv[1..])
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .stderr(stderr);
    Ok(command)
}

/// What `initialize` says of this client, over stdio and HTTP alike.
fn initialize_params() -> Value {
    json!({
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": { "name": "peer-bench", "version": "0.1.0" },
    })
}

/// utime + stime of the whole process `pid` (live and ended threads), in
/// ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let stat = fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
    stat_cpu_ticks(&stat).ok_or_else(|| format!("no utime and stime in {stat}"))
}

/// utime + stime from a `/proc/PID/stat` line. The command name may hold
/// spaces and parentheses, so fields count from after its last ')': utime
/// and stime are fields 14 and 15 of the line, 12 and 13 after the name.
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The text of a `tools/call` answer, or why it is not a successful one.
fn call_text(answer: &Value) -> std::result::Result<String, String> {
    if let Some(error) = answer.get("error") {
        return Err(format!("error {}", error["message"]));
    }
    let result = &answer["result"];
    let text = result["content"][0]["text"].as_str().unwrap_or_default();
    if result["isError"] == true {
        return Err(format!("tool error: {text}"));
    }
    Ok(text.to_owned())
}

fn short(s: &str) -> String {
    let s = s.replace('\n', " ");
    match s.char_indices().nth(120) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

// --- One server over streamable HTTP ------------------------------------------

/// A server serving MCP over streamable HTTP, killed when dropped.
struct HttpServer {
    child: Child,
    client: HttpClient,
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client of one legacy session (`initialize`, then `Mcp-Session-Id` on
/// every request), on a connection of its own: clones share the session
/// but not the connection.
struct HttpClient {
    agent: ureq::Agent,
    url: String,
    session: Option<String>,
    name: String,
}

impl Clone for HttpClient {
    fn clone(&self) -> Self {
        Self {
            agent: http_agent(),
            url: self.url.clone(),
            session: self.session.clone(),
            name: self.name.clone(),
        }
    }
}

/// An HTTP/1.1 client that keeps its connection open between requests,
/// reads error statuses as answers and uses no proxy (the servers are on
/// loopback).
fn http_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(ANSWER_TIMEOUT))
        .build()
        .into()
}

/// The answer to request `id` in an HTTP body: the body itself (JSON), or
/// one of the messages in the `data:` lines of a server-sent event stream
/// (which may also carry a priming event and notifications).
fn answer_in(body: &str, id: &Value) -> Option<Value> {
    if body.trim_start().starts_with('{') {
        return serde_json::from_str(body).ok();
    }
    (body.lines())
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find(|m| m.get("id") == Some(id) && m.get("method").is_none())
}

/// A free loopback port, for a server to bind next.
fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

impl HttpClient {
    /// POST `message`; for a request, its answer, read from a JSON body or
    /// from the `data:` lines of a server-sent event stream.
    fn post(&mut self, message: &Value) -> Result<Option<Value>> {
        let mut request = (self.agent.post(&self.url))
            .header("Content-Type", "application/json")
            .header("Accept", "application/json, text/event-stream");
        if let Some(session) = &self.session {
            request = request.header("Mcp-Session-Id", session);
        }
        let mut response = request
            .send(message.to_string())
            .map_err(|e| format!("{}: POST {}: {e}", self.name, self.url))?;
        if let Some(session) =
            (response.headers().get("mcp-session-id")).and_then(|v| v.to_str().ok())
        {
            self.session = Some(session.to_owned());
        }
        let status = response.status();
        let body = (response.body_mut().read_to_string())
            .map_err(|e| format!("{}: reading an answer: {e}", self.name))?;
        if !status.is_success() {
            return Err(format!("{}: HTTP {status}: {}", self.name, short(&body)));
        }
        let Some(id) = message.get("id") else {
            return Ok(None);
        };
        match answer_in(&body, id) {
            Some(answer) => Ok(Some(answer)),
            None => Err(format!(
                "{}: no answer to request {id} in {}",
                self.name,
                short(&body)
            )),
        }
    }

    fn request(&mut self, id: u64, method: &str, params: Value) -> Result<Value> {
        let message = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        self.post(&message)?
            .ok_or_else(|| format!("{}: no answer to {method}", self.name))
    }

    /// An echo of `text` as request `id`, checked; how long it took.
    fn echo(&mut self, tool: &str, id: u64, text: &str) -> Result<Duration> {
        let t0 = Instant::now();
        let answer = self.request(
            id,
            "tools/call",
            json!({ "name": tool, "arguments": { "text": text } }),
        )?;
        let took = t0.elapsed();
        check_echo(&self.name, &answer, text)?;
        Ok(took)
    }
}

impl HttpServer {
    /// Start the server on a free port, open a session and wait until it
    /// lists `echo`.
    fn start(name: &str, plan: &HttpPlan, echo: &str, log: &Path) -> Result<Self> {
        let port = free_port()?.to_string();
        let fill = |s: &String| s.replace("{port}", &port);
        let launch = Launch {
            argv: plan.launch.argv.iter().map(fill).collect(),
            env: plan.launch.env.clone(),
        };
        let child = command(&launch, log)?
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("{name}: starting {}: {e}", launch.argv[0]))?;
        let mut server = Self {
            child,
            client: HttpClient {
                agent: http_agent(),
                url: fill(&plan.url),
                session: None,
                name: name.to_owned(),
            },
        };
        let deadline = Instant::now() + START_TIMEOUT;
        // Until the server listens, connecting fails.
        loop {
            match server.client.request(0, "initialize", initialize_params()) {
                Ok(answer) if answer.get("result").is_some() => break,
                Ok(answer) => return Err(format!("{name}: initialize failed: {answer}")),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => thread::sleep(Duration::from_millis(10)),
            }
        }
        if server.client.session.is_none() {
            return Err(format!("{name}: initialize over HTTP opened no session"));
        }
        server
            .client
            .post(&json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }))?;
        loop {
            let answer = server.client.request(1, "tools/list", json!({}))?;
            let listed = (answer.pointer("/result/tools").and_then(Value::as_array))
                .is_some_and(|tools| tools.iter().any(|t| t["name"] == echo));
            if listed {
                return Ok(server);
            }
            if Instant::now() >= deadline {
                return Err(format!("{name}: no tool {echo} listed over HTTP: {answer}"));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

// --- Measurements -------------------------------------------------------------

/// One round's figures for one server.
#[derive(Default, Clone)]
struct Figures {
    p50_us: f64,
    p99_us: f64,
    cpu_seq_us: f64,
    cpu_par_us: f64,
    calls_per_s: f64,
    start_warm_ms: f64,
    start_cold_ms: Option<f64>,
    peak_rss_mib: f64,
    sleeps_ms: f64,
    http: Option<HttpFigures>,
}

/// One round's figures over streamable HTTP.
#[derive(Default, Clone)]
struct HttpFigures {
    p50_us: f64,
    cpu_seq_us: f64,
    cpu_par_us: f64,
    calls_per_s: f64,
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Bench<'a> {
    plan: &'a Plan,
    fresh: usize,
}

impl Bench<'_> {
    fn log(&self, server: &ServerPlan) -> PathBuf {
        self.plan.scratch.join(format!("{}.log", server.name))
    }

    /// A new empty folder, for a start with no cache.
    fn fresh_dir(&mut self) -> Result<PathBuf> {
        self.fresh += 1;
        let dir = self.plan.scratch.join(format!("fresh-{}", self.fresh));
        fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        Ok(dir)
    }

    fn start(&self, server: &ServerPlan) -> Result<Server> {
        let mut s = Server::spawn(&server.name, &server.warm, &self.log(server))?;
        s.initialize()?;
        s.wait_for_tool(&server.echo, Instant::now() + START_TIMEOUT)?;
        Ok(s)
    }

    /// Milliseconds from spawn to `tools/list` listing echo.
    fn time_start(&self, server: &ServerPlan, launch: &Launch) -> Result<f64> {
        let t0 = Instant::now();
        let mut s = Server::spawn(&server.name, launch, &self.log(server))?;
        s.initialize()?;
        s.wait_for_tool(&server.echo, t0 + START_TIMEOUT)?;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        s.stop();
        Ok(ms)
    }

    fn cold_start(&mut self, server: &ServerPlan) -> Result<Option<f64>> {
        let Some(cold) = &server.cold else {
            return Ok(None);
        };
        let dir = self.fresh_dir()?;
        let dir = dir.to_string_lossy();
        let fill = |s: &String| s.replace("{fresh}", &dir);
        let launch = Launch {
            argv: cold.argv.iter().map(fill).collect(),
            env: cold.env.iter().map(|(k, v)| (k.clone(), fill(v))).collect(),
        };
        self.time_start(server, &launch).map(Some)
    }

    fn echo_checked(&self, s: &mut Server, server: &ServerPlan, i: usize) -> Result<Duration> {
        let text = format!("echo {i}");
        let t0 = Instant::now();
        let id = s.call(&server.echo, json!({ "text": text }))?;
        let (at, answer) = s.wait(id)?;
        check_echo(&server.name, &answer, &text)?;
        Ok(at - t0)
    }

    fn round(&mut self, server: &ServerPlan) -> Result<Figures> {
        let plan = self.plan;
        let mut f = Figures::default();

        let mut warm = Vec::new();
        let mut cold = Vec::new();
        for _ in 0..plan.starts {
            warm.push(self.time_start(server, &server.warm)?);
            if let Some(ms) = self.cold_start(server)? {
                cold.push(ms);
            }
        }
        f.start_warm_ms = median(warm);
        f.start_cold_ms = (!cold.is_empty()).then(|| median(cold));

        let mut s = self.start(server)?;
        for i in 0..plan.calls / 10 {
            self.echo_checked(&mut s, server, i)?; // warm-up
        }

        // Sequential round trips.
        let cpu0 = s.cpu_ticks()?;
        let mut lat = Vec::with_capacity(plan.calls);
        for i in 0..plan.calls {
            lat.push(self.echo_checked(&mut s, server, i)?);
        }
        let cpu1 = s.cpu_ticks()?;
        lat.sort();
        f.p50_us = percentile(&lat, 50).as_secs_f64() * 1e6;
        f.p99_us = percentile(&lat, 99).as_secs_f64() * 1e6;
        f.cpu_seq_us = ticks_per_call_us(cpu1 - cpu0, plan.calls);

        // A window of calls in flight, refilled as answers come.
        let total = plan.calls * 2;
        let cpu0 = s.cpu_ticks()?;
        let t0 = Instant::now();
        let mut in_flight = std::collections::VecDeque::new();
        let mut sent = 0;
        while sent < total || !in_flight.is_empty() {
            while sent < total && in_flight.len() < plan.in_flight {
                let text = format!("echo {sent}");
                in_flight.push_back((s.call(&server.echo, json!({ "text": text }))?, text));
                sent += 1;
            }
            // Answers may come in any order: take the oldest that has come.
            let (id, text) = in_flight.pop_front().ok_or("nothing in flight")?;
            let (_, answer) = s.wait(id)?;
            check_echo(&server.name, &answer, &text)?;
        }
        let wall = t0.elapsed();
        let cpu1 = s.cpu_ticks()?;
        f.calls_per_s = total as f64 / wall.as_secs_f64();
        f.cpu_par_us = ticks_per_call_us(cpu1 - cpu0, total);
        f.peak_rss_mib = s.peak_rss_kib()? as f64 / 1024.0;

        // Four concurrent 200 ms sleeps: parallel, or one after another?
        let t0 = Instant::now();
        let ids = (0..4)
            .map(|_| s.call(&server.sleep, json!({ "ms": 200 })))
            .collect::<Result<Vec<_>>>()?;
        for id in ids {
            let (_, answer) = s.wait(id)?;
            call_text(&answer).map_err(|e| format!("{}: sleep: {e}", server.name))?;
        }
        f.sleeps_ms = t0.elapsed().as_secs_f64() * 1e3;
        s.stop();

        if let Some(http) = &server.http {
            f.http = Some(self.http_round(server, http)?);
        }
        Ok(f)
    }

    /// The echo calls again over streamable HTTP: sequential on one
    /// connection, then `in_flight` connections calling at once, each
    /// waiting for its answer before its next call.
    fn http_round(&self, server: &ServerPlan, plan: &HttpPlan) -> Result<HttpFigures> {
        let calls = self.plan.calls;
        let s = HttpServer::start(&server.name, plan, &server.echo, &self.log(server))?;
        let pid = s.child.id();
        let mut client = s.client.clone();
        let mut id = 10;
        for i in 0..calls / 10 {
            id += 1;
            client.echo(&server.echo, id, &format!("echo {i}"))?; // warm-up
        }

        let cpu0 = cpu_ticks(pid)?;
        let mut lat = Vec::with_capacity(calls);
        for i in 0..calls {
            id += 1;
            lat.push(client.echo(&server.echo, id, &format!("echo {i}"))?);
        }
        let cpu1 = cpu_ticks(pid)?;
        lat.sort();
        let p50_us = percentile(&lat, 50).as_secs_f64() * 1e6;
        let cpu_seq_us = ticks_per_call_us(cpu1 - cpu0, calls);

        // Each connection makes its first call before the clock starts.
        let in_flight = self.plan.in_flight;
        let each = calls * 2 / in_flight;
        let start = std::sync::Barrier::new(in_flight + 1);
        let (cpu0, cpu1, wall) = thread::scope(|scope| -> Result<_> {
            let workers: Vec<_> = (0..in_flight)
                .map(|w| {
                    let mut client = s.client.clone();
                    let (start, tool) = (&start, &server.echo);
                    scope.spawn(move || -> Result<()> {
                        let base = 1_000_000 * (w as u64 + 1);
                        let first = client.echo(tool, base, "first");
                        start.wait();
                        first?;
                        for i in 1..=each {
                            client.echo(tool, base + i as u64, &format!("echo {w}/{i}"))?;
                        }
                        Ok(())
                    })
                })
                .collect();
            start.wait();
            let cpu0 = cpu_ticks(pid)?;
            let t0 = Instant::now();
            for w in workers {
                w.join().map_err(|_| "an HTTP client thread panicked")??;
            }
            let wall = t0.elapsed();
            Ok((cpu0, cpu_ticks(pid)?, wall))
        })?;
        let total = each * in_flight;
        Ok(HttpFigures {
            p50_us,
            cpu_seq_us,
            cpu_par_us: ticks_per_call_us(cpu1 - cpu0, total),
            calls_per_s: total as f64 / wall.as_secs_f64(),
        })
    }

    /// What spinning calls do to the server, in words. Each question gets a
    /// server of its own, so one's stuck call cannot colour the next answer.
    fn spinning(&mut self, server: &ServerPlan, cores: usize) -> Result<Vec<String>> {
        let mut out = Vec::new();

        // One spinning call alone: does the server stop it, or a cancel?
        let mut s = self.start(server)?;
        let t0 = Instant::now();
        let spin = s.call(&server.spin, json!({}))?;
        out.push(match s.wait_until(spin, t0 + SPIN_WATCH)? {
            Answer::Ok { at, body } => format!(
                "one spinning call: stopped by the server after {:.2} s ({})",
                (at - t0).as_secs_f64(),
                short(&call_text(&body).err().unwrap_or_else(|| "a result".into()))
            ),
            Answer::None => {
                s.notify(
                    "notifications/cancelled",
                    json!({ "requestId": spin, "reason": "peer-bench" }),
                )?;
                let c0 = Instant::now();
                // MCP lets a server leave a cancelled request unanswered, so
                // whether the loop still runs shows in the CPU it burns.
                let after = match s.wait_until(spin, c0 + Duration::from_secs(2))? {
                    Answer::Ok { at, .. } => format!(
                        "answered {:.0} ms after the cancel",
                        (at - c0).as_secs_f64() * 1e3
                    ),
                    Answer::None => "no answer 2 s after the cancel".into(),
                };
                let cpu0 = s.cpu_ticks()?;
                thread::sleep(Duration::from_secs(1));
                let busy = (s.cpu_ticks()? - cpu0) as f64 / TICKS_PER_SECOND * 100.0;
                format!(
                    "one spinning call: still running after {} s; cancelled by the client: \
                     {after}, then the server used {busy:.0} % of a core",
                    SPIN_WATCH.as_secs()
                )
            }
        });
        s.stop();

        // One spinning call, with an echo every 50 ms beside it for 2 s
        // (toolhost stops a spinning call by fuel in about 0.2 s).
        let mut s = self.start(server)?;
        let t0 = Instant::now();
        let spin = s.call(&server.spin, json!({}))?;
        let mut echo_worst = Duration::ZERO;
        let mut echo_missed = 0;
        let mut echoes = 0;
        while t0.elapsed() < Duration::from_secs(2) {
            if let Answer::Ok { .. } =
                s.wait_until(spin, Instant::now() + Duration::from_millis(50))?
            {
                break;
            }
            let e0 = Instant::now();
            let id = s.call(&server.echo, json!({ "text": "beside" }))?;
            echoes += 1;
            match s.wait_until(id, e0 + ECHO_UNDER_SPIN_TIMEOUT)? {
                Answer::Ok { at, .. } => echo_worst = echo_worst.max(at - e0),
                Answer::None => echo_missed += 1,
            }
        }
        out.push(if echoes == 0 {
            "echo beside one: none sent (the spin ended first)".into()
        } else if echo_missed == 0 {
            format!(
                "echo beside one: {echoes} of {echoes} answered, slowest {:.1} ms",
                echo_worst.as_secs_f64() * 1e3
            )
        } else {
            format!(
                "echo beside one: {} of {echoes} answered within {} s",
                echoes - echo_missed,
                ECHO_UNDER_SPIN_TIMEOUT.as_secs()
            )
        });
        s.stop();

        // As many spinning calls as cores, then an echo.
        let mut s = self.start(server)?;
        let t0 = Instant::now();
        let spins = (0..cores)
            .map(|_| s.call(&server.spin, json!({})))
            .collect::<Result<Vec<_>>>()?;
        s.pump(None, Instant::now() + Duration::from_millis(300))?;
        let e0 = Instant::now();
        let id = s.call(&server.echo, json!({ "text": "beside" }))?;
        out.push(match s.wait_until(id, e0 + ECHO_UNDER_SPIN_TIMEOUT)? {
            Answer::Ok { at, .. } => format!(
                "{cores} spinning calls ({cores} cores): an echo answered in {:.1} ms",
                (at - e0).as_secs_f64() * 1e3
            ),
            Answer::None => format!(
                "{cores} spinning calls ({cores} cores): an echo got no answer in {} s",
                ECHO_UNDER_SPIN_TIMEOUT.as_secs()
            ),
        });
        // When the spins end by themselves, say when the last one did.
        let deadline = t0 + SPIN_WATCH;
        let mut last = None;
        for id in spins {
            match s.wait_until(id, deadline)? {
                Answer::Ok { at, .. } => last = Some(at - t0),
                Answer::None => {
                    last = None;
                    break;
                }
            }
        }
        out.push(match last {
            Some(after) => format!(
                "  all {cores} stopped by the server within {:.2} s",
                after.as_secs_f64()
            ),
            None => format!(
                "  not all stopped by the server within {} s",
                SPIN_WATCH.as_secs()
            ),
        });
        s.stop();
        Ok(out)
    }
}

fn check_echo(name: &str, answer: &Value, text: &str) -> Result<()> {
    match call_text(answer) {
        Ok(got) if got == text => Ok(()),
        Ok(got) => Err(format!("{name}: echo answered {got:?}, not {text:?}")),
        Err(e) => Err(format!("{name}: echo: {e}")),
    }
}

fn ticks_per_call_us(ticks: u64, calls: usize) -> f64 {
    ticks as f64 / TICKS_PER_SECOND * 1e6 / calls as f64
}

// --- The table ------------------------------------------------------------------

fn fmt_num(v: f64) -> String {
    if v >= 10_000.0 {
        let n = v.round() as u64;
        format!("{} {:03}", n / 1000, n % 1000)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

struct Row {
    label: &'static str,
    unit: &'static str,
    value: fn(&Figures) -> Option<f64>,
}

const ROWS: &[Row] = &[
    Row {
        label: "sequential round trip p50",
        unit: "µs",
        value: |f| Some(f.p50_us),
    },
    Row {
        label: "sequential round trip p99",
        unit: "µs",
        value: |f| Some(f.p99_us),
    },
    Row {
        label: "server CPU per call, sequential",
        unit: "µs",
        value: |f| Some(f.cpu_seq_us),
    },
    Row {
        label: "server CPU per call, 16 in flight",
        unit: "µs",
        value: |f| Some(f.cpu_par_us),
    },
    Row {
        label: "calls/s, 16 in flight",
        unit: "",
        value: |f| Some(f.calls_per_s),
    },
    Row {
        label: "streamable HTTP: round trip p50",
        unit: "µs",
        value: |f| f.http.as_ref().map(|h| h.p50_us),
    },
    Row {
        label: "streamable HTTP: server CPU per call, sequential",
        unit: "µs",
        value: |f| f.http.as_ref().map(|h| h.cpu_seq_us),
    },
    Row {
        label: "streamable HTTP: server CPU per call, 16 in flight",
        unit: "µs",
        value: |f| f.http.as_ref().map(|h| h.cpu_par_us),
    },
    Row {
        label: "streamable HTTP: calls/s, 16 in flight",
        unit: "",
        value: |f| f.http.as_ref().map(|h| h.calls_per_s),
    },
    Row {
        label: "start to `tools/list` answered, warm cache",
        unit: "ms",
        value: |f| Some(f.start_warm_ms),
    },
    Row {
        label: "same, no cache",
        unit: "ms",
        value: |f| f.start_cold_ms,
    },
    Row {
        label: "peak RSS",
        unit: "MiB",
        value: |f| Some(f.peak_rss_mib),
    },
    Row {
        label: "4 concurrent 200 ms sleeps, wall",
        unit: "ms",
        value: |f| Some(f.sleeps_ms),
    },
];

fn print_table(plan: &Plan, rounds: &[Vec<Figures>]) {
    let names: Vec<&str> = plan.servers.iter().map(|s| s.name.as_str()).collect();
    let medians: Vec<Vec<Option<f64>>> = ROWS
        .iter()
        .map(|row| {
            (0..names.len())
                .map(|i| {
                    let v: Option<Vec<f64>> = rounds.iter().map(|r| (row.value)(&r[i])).collect();
                    v.map(median)
                })
                .collect()
        })
        .collect();
    let mut header = format!("| figure (median of {} rounds) |", rounds.len());
    let mut rule = "|---|".to_owned();
    for n in &names {
        header += &format!(" {n} |");
        rule += "---|";
    }
    for n in names.iter().skip(1) {
        header += &format!(" {}/{n} |", names[0]);
        rule += "---|";
    }
    println!("{header}\n{rule}");
    for (row, values) in ROWS.iter().zip(&medians) {
        let mut line = format!("| {} |", row.label);
        for v in values {
            line += &match v {
                Some(v) if row.unit.is_empty() => format!(" {} |", fmt_num(*v)),
                Some(v) => format!(" {} {} |", fmt_num(*v), row.unit),
                None => " – |".to_owned(),
            };
        }
        for v in values.iter().skip(1) {
            line += &match (values[0], v) {
                (Some(a), Some(b)) if *b > 0.0 => format!(" {:.2} |", a / b),
                _ => " – |".to_owned(),
            };
        }
        println!("{line}");
    }
    println!();
    for s in &plan.servers {
        println!("no cache, {}: {}", s.name, s.no_cache);
    }
}

/// The 1-minute load average: how quiet the machine was.
fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [plan_path] = args.as_slice() else {
        return Err("usage: peer-bench PLAN.json (tools/bench-peers writes it)".into());
    };
    let plan = Plan::read(Path::new(plan_path))?;
    fs::create_dir_all(&plan.scratch)
        .map_err(|e| format!("creating {}: {e}", plan.scratch.display()))?;
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    let mut bench = Bench {
        plan: &plan,
        fresh: 0,
    };
    let load_before = load_average();

    // One start each first, unmeasured: it fills the warm caches.
    for server in &plan.servers {
        bench.start(server)?.stop();
    }
    let mut rounds = Vec::new();
    for round in 1..=plan.rounds {
        let mut figures = Vec::new();
        for server in &plan.servers {
            eprintln!("round {round}/{}: {}", plan.rounds, server.name);
            figures.push(bench.round(server)?);
        }
        rounds.push(figures);
    }
    println!();
    print_table(&plan, &rounds);
    println!(
        "machine: {cores} cores; load average {load_before} before the rounds, {} after",
        load_average()
    );
    println!("\nratios are toolhost ÷ peer: below 1 is toolhost ahead, except calls/s.");
    println!("\nspinning calls (a loop that never calls the host):");
    for server in &plan.servers {
        eprintln!("spinning: {}", server.name);
        for line in bench.spinning(server, cores)? {
            println!("  {}: {line}", server.name);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_utime_and_stime_past_an_odd_command_name() {
        let stat = "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    37 5 0 0 20 0 9 0 100 1000000 2000 18446744073709551615";
        assert_eq!(stat_cpu_ticks(stat), Some(42));
        assert_eq!(stat_cpu_ticks("4242 (cut"), None);
    }

    #[test]
    fn takes_percentiles_and_medians_from_the_sorted_values() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(percentile(&v, 50), Duration::from_micros(51));
        assert_eq!(percentile(&v, 99), Duration::from_micros(100));
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
    }

    #[test]
    fn finds_an_answer_in_a_json_body_or_among_server_sent_events() {
        let id = json!(7);
        let answer = json!({ "jsonrpc": "2.0", "id": 7, "result": {} });
        assert_eq!(answer_in(&answer.to_string(), &id), Some(answer.clone()));
        let events = format!(
            "data: \nid: 0/3\nretry: 3000\n\n\
             data: {}\n\n\
             data: {answer}\nid: 1/3\n\n",
            json!({ "jsonrpc": "2.0", "method": "notifications/progress", "params": { "id": 7 } })
        );
        assert_eq!(answer_in(&events, &id), Some(answer));
        assert_eq!(answer_in(&events, &json!(8)), None);
        assert_eq!(answer_in("data: \nid: 0/3\n\n", &id), None);
    }

    #[test]
    fn groups_thousands_in_large_figures() {
        assert_eq!(fmt_num(20_400.4), "20 400");
        assert_eq!(fmt_num(158.2), "158");
        assert_eq!(fmt_num(19.84), "19.8");
    }
}
