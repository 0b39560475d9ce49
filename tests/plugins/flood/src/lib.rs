//! Hostile test plugin: `flood` writes as much to stdout and stderr as it is
//! asked to, to test the host's output caps.

use std::io::Write;

use serde::Deserialize;
use toolhost_guest::{Plugin, ToolError, ToolOutput, ToolSpec, spec};

struct Flood;

#[derive(Deserialize)]
struct Args {
    bytes: f64,
}

/// Writes `bytes` bytes as lines of 100 (99 characters and a newline).
/// Write errors are ignored: the host may close or cap the stream.
fn flood(out: &mut impl Write, bytes: usize, fill: u8) {
    let mut line = [fill; 100];
    line[99] = b'\n';
    let mut left = bytes;
    while left > 0 {
        let n = left.min(line.len());
        if out.write_all(&line[..n]).is_err() {
            return;
        }
        left -= n;
    }
    let _ = out.flush();
}

impl Plugin for Flood {
    fn describe() -> Vec<ToolSpec> {
        vec![spec(
            "flood",
            "Writes `bytes` bytes to stdout and a tenth as many to stderr, then returns \"flooded\".",
            serde_json::json!({
                "type": "object",
                "properties": { "bytes": { "type": "integer", "minimum": 0 } },
                "required": ["bytes"]
            }),
        )]
    }

    fn call(_tool: String, arguments: String) -> Result<ToolOutput, ToolError> {
        let args: Args = toolhost_guest::args(&arguments)?;
        // Validated as a non-negative integer; `as` saturates anything larger.
        let bytes = args.bytes as usize;
        flood(&mut std::io::stdout().lock(), bytes, b'o');
        flood(&mut std::io::stderr().lock(), bytes / 10, b'e');
        Ok(ToolOutput::text("flooded"))
    }
}

toolhost_guest::export_plugin!(Flood);
