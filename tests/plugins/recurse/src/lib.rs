//! Hostile test plugin: `recurse` recurses without bound until the stack
//! overflows.

use std::hint::black_box;

use toolhost_guest::{Plugin, ToolError, ToolOutput, ToolSpec, spec};

struct Recurse;

/// Never returns in practice: `black_box` hides that the exit is unreachable
/// and keeps the call from becoming a loop.
fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth; 16]);
    if black_box(depth) == u64::MAX {
        return depth;
    }
    black_box(recurse(black_box(depth + 1))).wrapping_add(frame[0])
}

impl Plugin for Recurse {
    fn describe() -> Vec<ToolSpec> {
        vec![spec(
            "recurse",
            "Recurses until the stack overflows.",
            serde_json::json!({ "type": "object", "properties": {} }),
        )]
    }

    fn call(_tool: String, _arguments: String) -> Result<ToolOutput, ToolError> {
        Ok(ToolOutput::text(recurse(0).to_string()))
    }
}

toolhost_guest::export_plugin!(Recurse);
