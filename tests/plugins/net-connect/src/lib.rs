//! Hostile test plugin: `connect` opens a TCP connection to whatever address
//! it is given, to test that only the addresses in the manifest are reachable;
//! `lookup` resolves whatever name it is given, to test that only the names
//! in the manifest can be looked up (a lookup can carry data out).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};

use serde::Deserialize;
use toolhost_guest::{Plugin, ToolError, ToolOutput, ToolSpec, spec};

struct NetConnect;

#[derive(Deserialize)]
struct Args {
    addr: String,
}

#[derive(Deserialize)]
struct Lookup {
    name: String,
}

/// The addresses `name` resolves to, one a line.
fn lookup(name: &str) -> std::io::Result<String> {
    let addrs: Vec<String> = (name, 0)
        .to_socket_addrs()?
        .map(|a| a.ip().to_string())
        .collect();
    Ok(addrs.join("\n"))
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
        vec![
            spec(
                "connect",
                "Connects to ip:port over TCP, sends \"ping\" and returns the line it gets back.",
                serde_json::json!({
                    "type": "object",
                    "properties": { "addr": { "type": "string" } },
                    "required": ["addr"]
                }),
            ),
            spec(
                "lookup",
                "Resolves a host name and returns its addresses, one a line.",
                serde_json::json!({
                    "type": "object",
                    "properties": { "name": { "type": "string" } },
                    "required": ["name"]
                }),
            ),
        ]
    }

    fn call(tool: String, arguments: String) -> Result<ToolOutput, ToolError> {
        if tool == "lookup" {
            let args: Lookup = toolhost_guest::args(&arguments)?;
            return lookup(&args.name)
                .map(ToolOutput::text)
                .map_err(|e| ToolError::failed(format!("cannot resolve {}: {e}", args.name)));
        }
        let args: Args = toolhost_guest::args(&arguments)?;
        ping(&args.addr)
            .map(ToolOutput::text)
            .map_err(|e| ToolError::failed(format!("cannot talk to {}: {e}", args.addr)))
    }
}

toolhost_guest::export_plugin!(NetConnect);
