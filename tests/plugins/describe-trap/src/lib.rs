//! Hostile test plugin: `describe` panics, which traps the instance.

use toolhost_guest::{Plugin, ToolError, ToolOutput, ToolSpec};

struct DescribeTrap;

impl Plugin for DescribeTrap {
    fn describe() -> Vec<ToolSpec> {
        panic!("describe-trap panicked on purpose");
    }

    fn call(_tool: String, _arguments: String) -> Result<ToolOutput, ToolError> {
        Err(ToolError::failed("describe traps, so nothing is callable"))
    }
}

toolhost_guest::export_plugin!(DescribeTrap);
