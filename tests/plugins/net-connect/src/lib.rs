//! Hostile test plugin: `connect` opens a TCP connection to whatever address
//! it is given, to test that only the addresses in the manifest are reachable.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

use serde::Deserialize;
use toolhost_guest::{Plugin, ToolError, ToolOutput, ToolSpec, spec};

struct NetConnect;

#[derive(Deserialize)]
struct Args {
    addr: String,
}

/// Sends "ping\n" and reads one line back.
fn ping(addr: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.write_all(b"ping\n")?;
    stream.flush()?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

impl Plugin for NetConnect {
    fn describe() -> Vec<ToolSpec> {
        vec![spec(
            "connect",
            "Connects to ip:port over TCP, sends \"ping\" and returns the line it gets back.",
            serde_json::json!({
                "type": "object",
                "properties": { "addr": { "type": "string" } },
                "required": ["addr"]
            }),
        )]
    }

    fn call(_tool: String, arguments: String) -> Result<ToolOutput, ToolError> {
        let args: Args = toolhost_guest::args(&arguments)?;
        ping(&args.addr)
            .map(ToolOutput::text)
            .map_err(|e| ToolError::failed(format!("cannot talk to {}: {e}", args.addr)))
    }
}

toolhost_guest::export_plugin!(NetConnect);
