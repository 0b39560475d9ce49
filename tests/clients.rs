//! `toolhost serve` in answer mode `final` against MCP clients from other
//! projects, as their users run them (issue 10): fastmcp's `Client` over
//! stdio and streamable HTTP, langchain-mcp-adapters' `MultiServerMCPClient`
//! (a session per tool call) over stdio, both driven by
//! `tests/mcp/clients.py`, and the TypeScript SDK over stdio
//! (`tests/mcp/ts-client.mjs`).
//!
//! `tools/test` installs them: fastmcp in `target/mcp-venv` beside the
//! Python SDK, langchain in its own `target/langchain-venv` (it needs
//! `mcp<2`), the TypeScript SDK with `npm ci` in `tests/mcp`.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::common::{Folder, HttpServer, root, show, test_plugin};

const TOOLHOST: &str = env!("CARGO_BIN_EXE_toolhost");

/// The served folder: the behave test plugin, whose `progress` tool sends
/// `n` updates and ends with "done after n steps".
fn folder() -> Folder {
    let folder = Folder::new();
    folder.add(&test_plugin("behave"), "behave");
    folder
}

fn cache_dir() -> PathBuf {
    root().join("target").join("toolhost-test-cache")
}

fn installed(path: &str) -> PathBuf {
    let path = root().join(path);
    assert!(
        path.exists(),
        "{} is missing: run tools/test, which installs the MCP clients",
        path.display()
    );
    path
}

/// Run one scenario of `tests/mcp/clients.py` with `venv`'s python; it
/// checks the behaviour itself. `answer_by`: `flag` (`serve --answer
/// final`) or `meta` (the per-request `_meta` key).
fn py(venv: &str, scenario: &str, answer_by: &str, server: Option<&HttpServer>) {
    let folder = server.is_none().then(folder);
    let mut cmd = Command::new(installed(&format!("target/{venv}/bin/python")));
    cmd.arg(root().join("tests/mcp/clients.py"))
        .args(["--answer-by", answer_by])
        .env("TOOLHOST_CACHE_DIR", cache_dir())
        .env("TOOLHOST_STATE", crate::common::test_state());
    match (server, &folder) {
        (Some(server), _) => cmd.args(["--url", &server.url]),
        (None, Some(folder)) => cmd
            .args(["--stdio", TOOLHOST, "--plugins"])
            .arg(folder.path()),
        (None, None) => unreachable!("a folder is made when there is no server"),
    };
    let out = cmd.arg(scenario).output().expect("run clients.py");
    let log = server.map(HttpServer::log).unwrap_or_default();
    assert!(
        out.status.success(),
        "{}\n--- server\n{log}",
        show(&format!("{scenario} ({answer_by})"), &out)
    );
}

// --- langchain-mcp-adapters ---

/// A "Done when" of issue 10: a client that opens a session per tool call
/// gets the final result of a background tool, not its first update.
#[test]
fn langchain_session_per_call_gets_the_final_result_of_a_background_tool() {
    py("langchain-venv", "langchain", "flag", None);
}

// --- fastmcp ---

#[test]
fn fastmcp_stdio_answer_final_by_flag_sends_every_update_then_the_result() {
    py("mcp-venv", "fastmcp", "flag", None);
}

#[test]
fn fastmcp_stdio_answer_final_by_meta_sends_every_update_then_the_result() {
    py("mcp-venv", "fastmcp", "meta", None);
}

#[test]
fn fastmcp_http_answer_final_by_meta_sends_every_update_then_the_result() {
    let folder = folder();
    let server = HttpServer::start(&folder, &[]);
    py("mcp-venv", "fastmcp", "meta", Some(&server));
}

#[test]
fn fastmcp_http_answer_final_by_flag_sends_every_update_then_the_result() {
    let folder = folder();
    let server = HttpServer::start(&folder, &["--answer", "final"]);
    py("mcp-venv", "fastmcp", "flag", Some(&server));
}

// --- The TypeScript SDK ---

#[test]
fn typescript_stdio_answer_final_sends_every_update_then_the_result() {
    installed("tests/mcp/node_modules/@modelcontextprotocol/sdk");
    let folder = folder();
    let out = Command::new("node")
        .arg(installed("tests/mcp/ts-client.mjs"))
        .arg(TOOLHOST)
        .arg(folder.path())
        .env("TOOLHOST_CACHE_DIR", cache_dir())
        .env("TOOLHOST_STATE", crate::common::test_state())
        .stdin(Stdio::null())
        .output()
        .expect("run node");
    assert!(out.status.success(), "{}", show("ts-client.mjs", &out));
}

#[test]
fn typescript_http_answer_final_sends_every_update_then_the_result() {
    installed("tests/mcp/node_modules/@modelcontextprotocol/sdk");
    let folder = folder();
    let server = HttpServer::start(&folder, &["--answer", "final"]);
    let out = Command::new("node")
        .arg(installed("tests/mcp/ts-client.mjs"))
        .args(["--url", &server.url])
        .stdin(Stdio::null())
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "{}\n--- server log\n{}",
        show("ts-client.mjs", &out),
        server.log()
    );
}
