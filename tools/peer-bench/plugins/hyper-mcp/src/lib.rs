//! The peer benchmark's tools as a hyper-mcp plugin (its v2 interface, with
//! the Extism Rust PDK): `list_tools` answers an MCP `ListToolsResult`,
//! `call_tool` takes `{"request": CallToolRequestParams, "context": ..}` and
//! answers a `CallToolResult`. hyper-mcp names the tools `PLUGIN-echo`, ...

use std::hint::black_box;
use std::thread::sleep;
use std::time::Duration;

use extism_pdk::{FnResult, plugin_fn};
use serde_json::{Value, json};

fn text_result(text: &str) -> String {
    json!({ "content": [{ "type": "text", "text": text }] }).to_string()
}

fn error_result(message: &str) -> String {
    json!({ "content": [{ "type": "text", "text": message }], "isError": true }).to_string()
}

fn spin() -> ! {
    let mut x = 0u64;
    loop {
        x = black_box(x.wrapping_add(1));
    }
}

fn object(properties: Value, required: &[&str]) -> Value {
    json!({ "type": "object", "properties": properties, "required": required })
}

#[plugin_fn]
pub fn list_tools(_input: String) -> FnResult<String> {
    Ok(json!({ "tools": [
        {
            "name": "echo",
            "description": "Returns its text.",
            "inputSchema": object(json!({ "text": { "type": "string" } }), &["text"]),
        },
        {
            "name": "sleep",
            "description": "Sleeps ms milliseconds.",
            "inputSchema": object(json!({ "ms": { "type": "integer", "minimum": 0 } }), &["ms"]),
        },
        {
            "name": "spin",
            "description": "Loops forever without calling the host.",
            "inputSchema": object(json!({}), &[]),
        },
    ]})
    .to_string())
}

#[plugin_fn]
pub fn call_tool(input: String) -> FnResult<String> {
    let input: Value = serde_json::from_str(&input)?;
    let request = &input["request"];
    let arguments = &request["arguments"];
    Ok(match request["name"].as_str() {
        Some("echo") => match arguments["text"].as_str() {
            Some(text) => text_result(text),
            None => error_result("echo needs a text"),
        },
        Some("sleep") => match arguments["ms"].as_u64() {
            Some(ms) => {
                sleep(Duration::from_millis(ms));
                text_result("slept")
            }
            None => error_result("sleep needs ms"),
        },
        Some("spin") => spin(),
        _ => error_result("no such tool"),
    })
}
