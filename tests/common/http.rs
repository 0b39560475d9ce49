//! A host's MCP served over streamable HTTP in this process, spoken to by a
//! raw client (`reqwest`) in one legacy session.

use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use toolhost::Host;

use super::WAIT;

/// `host` served on a free loopback port until [`stop`](Self::stop).
pub struct InProcess {
    url: String,
    http: reqwest::Client,
    session: Option<String>,
    stop: oneshot::Sender<()>,
    serving: JoinHandle<()>,
}

impl InProcess {
    pub async fn serve(host: &Host) -> Self {
        let server = toolhost::mcp::bind_http(
            host,
            "127.0.0.1:0".parse().expect("addr"),
            toolhost::mcp::McpOptions::default(),
        )
        .await
        .expect("bind");
        let url = server.url();
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Self {
            url,
            http: reqwest::Client::new(),
            session: None,
            stop,
            serving,
        }
    }

    /// POST `body` in the session (once there is one), and read the whole
    /// answer, waiting at most [`WAIT`]; the session is the one the answer
    /// names, if it names one.
    pub async fn post(&mut self, body: Value) -> String {
        let mut request = (self.http.post(&self.url))
            .header("Content-Type", "application/json")
            .header("Accept", "application/json, text/event-stream");
        if let Some(session) = &self.session {
            request = request.header("Mcp-Session-Id", session);
        }
        let answered = async {
            let response = request
                .body(body.to_string())
                .send()
                .await
                .expect("a response");
            let session = (response.headers().get("mcp-session-id"))
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            (session, response.text().await.expect("a body"))
        };
        let (session, text) = tokio::time::timeout(WAIT, answered)
            .await
            .unwrap_or_else(|_| panic!("no answer to {body} within {WAIT:?}"));
        if session.is_some() {
            self.session = session;
        }
        text
    }

    /// `initialize` (2025-06-18) and `notifications/initialized`.
    pub async fn open(&mut self) {
        let opened = self
            .post(json!({
                "jsonrpc": "2.0", "id": 0, "method": "initialize",
                "params": {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": { "name": "toolhost-tests", "version": "1" }
                }
            }))
            .await;
        assert!(self.session.is_some(), "no session id: {opened}");
        self.post(json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }))
            .await;
    }

    /// A `tools/call` of `tool` with no arguments: its whole answer.
    pub async fn call(&mut self, id: u64, tool: &str) -> String {
        self.post(json!({
            "jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": { "name": tool, "arguments": {} }
        }))
        .await
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.serving.await.expect("server task");
    }
}
