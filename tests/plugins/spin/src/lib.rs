//! Hostile test plugin: `spin` loops forever without calling the host, so
//! only fuel or epoch interruption can stop it.

use std::hint::black_box;

use toolhost_guest::{Plugin, ToolError, ToolOutput, ToolSpec, spec};

struct Spin;

impl Plugin for Spin {
    fn describe() -> Vec<ToolSpec> {
        vec![spec(
            "spin",
            "Loops forever without calling the host.",
            serde_json::json!({ "type": "object", "properties": {} }),
        )]
    }

    fn call(_tool: String, _arguments: String) -> Result<ToolOutput, ToolError> {
        let mut x = 0u64;
        loop {
            x = black_box(x.wrapping_add(1));
        }
    }
}

toolhost_guest::export_plugin!(Spin);
