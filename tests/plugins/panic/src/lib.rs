//! Hostile test plugin: `panic` panics, which traps the instance.

use toolhost_guest::{Plugin, ToolError, ToolOutput, ToolSpec, spec};

struct Panic;

impl Plugin for Panic {
    fn describe() -> Vec<ToolSpec> {
        vec![spec(
            "panic",
            "Panics.",
            serde_json::json!({ "type": "object", "properties": {} }),
        )]
    }

    fn call(_tool: String, _arguments: String) -> Result<ToolOutput, ToolError> {
        panic!("the panic plugin panicked on purpose");
    }
}

toolhost_guest::export_plugin!(Panic);
