//! Hostile test plugin: `membomb` allocates and touches memory in 1 MiB
//! chunks until the memory limit stops it.

use std::hint::black_box;

use toolhost_guest::{Plugin, ToolError, ToolOutput, ToolSpec, spec};

struct Membomb;

impl Plugin for Membomb {
    fn describe() -> Vec<ToolSpec> {
        vec![spec(
            "membomb",
            "Allocates memory in 1 MiB chunks forever.",
            serde_json::json!({ "type": "object", "properties": {} }),
        )]
    }

    fn call(_tool: String, _arguments: String) -> Result<ToolOutput, ToolError> {
        let mut chunks = Vec::new();
        loop {
            // Filled with ones, not zeros, so every page is really written.
            chunks.push(black_box(vec![1u8; 1 << 20]));
            black_box(&chunks);
        }
    }
}

toolhost_guest::export_plugin!(Membomb);
