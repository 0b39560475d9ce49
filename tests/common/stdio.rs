//! `toolhost serve` on stdio as a process, spoken to in raw JSON-RPC lines.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;

use serde_json::{Value, json};

use super::{WAIT, root, test_state};

const TOOLHOST: &str = env!("CARGO_BIN_EXE_toolhost");

/// `toolhost serve` on stdio, spoken to line by line.
pub struct Server {
    child: Option<Child>,
    stdin: ChildStdin,
    lines: mpsc::Receiver<Value>,
    next_id: u64,
}

impl Server {
    pub fn start(folder: &Path, args: &[&str]) -> Self {
        let mut child = Command::new(TOOLHOST)
            .arg("--plugins")
            .arg(folder)
            .arg("--cache-dir")
            .arg(root().join("target/toolhost-test-cache"))
            .arg("serve")
            .args(args)
            .env("TOOLHOST_STATE", test_state())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start toolhost serve");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && tx.send(v).is_err()
                {
                    return;
                }
            }
        });
        let mut s = Self {
            child: Some(child),
            stdin,
            lines,
            next_id: 1,
        };
        let init = s.request(
            "initialize",
            json!({
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": { "name": "raw-test", "version": "0" }
            }),
        );
        s.wait_for(&init);
        s.send(json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }));
        s
    }

    pub fn send(&mut self, message: Value) {
        writeln!(self.stdin, "{message}").expect("write to toolhost");
        self.stdin.flush().expect("flush");
    }

    /// Send a request; its id.
    pub fn request(&mut self, method: &str, params: Value) -> Value {
        let id = json!(self.next_id);
        self.next_id += 1;
        self.send(json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }));
        id
    }

    /// Every message up to the answer of request `id`, the answer last.
    pub fn wait_for(&mut self, id: &Value) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            let m = self
                .lines
                .recv_timeout(WAIT)
                .unwrap_or_else(|_| panic!("no answer to request {id}; saw {seen:?}"));
            let done = m.get("id") == Some(id) && m.get("method").is_none();
            seen.push(m);
            if done {
                return seen;
            }
        }
    }
}

impl Server {
    /// The answers of requests `ids`, in that order, whatever order they
    /// come in; other messages are dropped.
    pub fn wait_for_all(&mut self, ids: &[Value]) -> Vec<Value> {
        let mut answers = std::collections::HashMap::new();
        while answers.len() < ids.len() {
            let m = self
                .lines
                .recv_timeout(WAIT)
                .unwrap_or_else(|_| panic!("{} of {} answers came", answers.len(), ids.len()));
            if m.get("method").is_none()
                && let Some(id) = m.get("id").filter(|id| ids.contains(id))
            {
                answers.insert(id.to_string(), m);
            }
        }
        ids.iter()
            .map(|id| answers.remove(&id.to_string()).expect("answered"))
            .collect()
    }

    /// SIGKILL, as a crash or the OOM killer would, and wait for the exit.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL");
        let _ = child.wait();
    }

    /// Call `tool` with `arguments` and wait: every message up to the
    /// answer, the answer last.
    pub fn call(&mut self, tool: &str, arguments: Value) -> Vec<Value> {
        let id = self.request(
            "tools/call",
            json!({ "name": tool, "arguments": arguments }),
        );
        self.wait_for(&id)
    }

    /// Send SIGTERM and wait for the process to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(sent.success());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        rx.recv_timeout(WAIT)
            .expect("toolhost exits after SIGTERM")
            .expect("wait")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
