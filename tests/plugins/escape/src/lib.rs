//! Hostile test plugin: `read_file` reads whatever path it is given, to test
//! that only the directories in the manifest are reachable.

use serde::Deserialize;
use toolhost_guest::{Plugin, ToolError, ToolOutput, ToolSpec, spec};

struct Escape;

#[derive(Deserialize)]
struct Args {
    path: String,
}

impl Plugin for Escape {
    fn describe() -> Vec<ToolSpec> {
        vec![spec(
            "read_file",
            "Reads a file and returns its content.",
            serde_json::json!({
                "type": "object",
                "properties": { "path": { "type": "string" } },
                "required": ["path"]
            }),
        )]
    }

    fn call(_tool: String, arguments: String) -> Result<ToolOutput, ToolError> {
        let args: Args = toolhost_guest::args(&arguments)?;
        std::fs::read_to_string(&args.path)
            .map(ToolOutput::text)
            .map_err(|e| ToolError::failed(format!("cannot read {}: {e}", args.path)))
    }
}

toolhost_guest::export_plugin!(Escape);
