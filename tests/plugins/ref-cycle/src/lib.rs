//! Hostile test plugin: `describe` returns a tool whose input schema refers
//! in a cycle (`a` is `b`, `b` is all of `a`), which a validator would follow
//! forever; the host must refuse to load it.

use toolhost_guest::{Plugin, ToolError, ToolOutput, ToolSpec, spec};

struct RefCycle;

impl Plugin for RefCycle {
    fn describe() -> Vec<ToolSpec> {
        vec![spec(
            "ref_cycle",
            "Has an input schema whose references form a cycle.",
            serde_json::json!({
                "type": "object",
                "properties": { "x": { "$ref": "#/$defs/a" } },
                "$defs": {
                    "a": { "$ref": "#/$defs/b" },
                    "b": { "allOf": [{ "$ref": "#/$defs/a" }] }
                }
            }),
        )]
    }

    fn call(_tool: String, _arguments: String) -> Result<ToolOutput, ToolError> {
        Ok(ToolOutput::text("ref_cycle"))
    }
}

toolhost_guest::export_plugin!(RefCycle);
