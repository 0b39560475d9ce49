//! Hostile test plugin: `describe` returns a tool whose input schema is
//! valid JSON, describes an object, but is not a valid JSON Schema (a
//! property of `"type": 12`); the host must refuse to load it.

use toolhost_guest::{Plugin, ToolError, ToolOutput, ToolSpec, spec};

struct BadSchema;

impl Plugin for BadSchema {
    fn describe() -> Vec<ToolSpec> {
        vec![spec(
            "bad_schema",
            "Has an unusable input schema.",
            serde_json::json!({ "type": "object", "properties": { "n": { "type": 12 } } }),
        )]
    }

    fn call(_tool: String, _arguments: String) -> Result<ToolOutput, ToolError> {
        Ok(ToolOutput::text("bad_schema"))
    }
}

toolhost_guest::export_plugin!(BadSchema);
