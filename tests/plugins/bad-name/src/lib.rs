//! Hostile test plugin: `describe` returns a tool named `has space`, which is
//! not a valid tool name.

use toolhost_guest::{Plugin, ToolError, ToolOutput, ToolSpec, spec};

struct BadName;

impl Plugin for BadName {
    fn describe() -> Vec<ToolSpec> {
        vec![spec(
            "has space",
            "Has a name outside [a-zA-Z0-9_-].",
            serde_json::json!({ "type": "object", "properties": {} }),
        )]
    }

    fn call(_tool: String, _arguments: String) -> Result<ToolOutput, ToolError> {
        Ok(ToolOutput::text("bad name"))
    }
}

toolhost_guest::export_plugin!(BadName);
