//! Hostile test plugin: `describe` returns a tool whose input schema does
//! not describe an object (`{"type": "string"}`); the host must refuse to
//! load it.

use toolhost_guest::{Plugin, ToolError, ToolOutput, ToolSpec, spec};

struct NotObject;

impl Plugin for NotObject {
    fn describe() -> Vec<ToolSpec> {
        vec![spec(
            "not_object",
            "Has an unusable input schema.",
            serde_json::json!({ "type": "string" }),
        )]
    }

    fn call(_tool: String, _arguments: String) -> Result<ToolOutput, ToolError> {
        Ok(ToolOutput::text("not_object"))
    }
}

toolhost_guest::export_plugin!(NotObject);
