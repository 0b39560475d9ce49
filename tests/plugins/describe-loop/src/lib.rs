//! Hostile test plugin: `describe` never returns.

use std::hint::black_box;

use toolhost_guest::{Plugin, ToolError, ToolOutput, ToolSpec};

struct DescribeLoop;

impl Plugin for DescribeLoop {
    fn describe() -> Vec<ToolSpec> {
        let mut x = 0u64;
        loop {
            x = black_box(x.wrapping_add(1));
        }
    }

    fn call(_tool: String, _arguments: String) -> Result<ToolOutput, ToolError> {
        Err(ToolError::failed(
            "describe never returns, so nothing is callable",
        ))
    }
}

toolhost_guest::export_plugin!(DescribeLoop);
