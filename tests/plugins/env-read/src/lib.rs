//! Hostile test plugin: `read_env` reads whatever environment variable it is
//! given, to test that only the variables in the manifest are passed.

use serde::Deserialize;
use toolhost_guest::{Plugin, ToolError, ToolOutput, ToolSpec, spec};

struct EnvRead;

#[derive(Deserialize)]
struct Args {
    name: String,
}

impl Plugin for EnvRead {
    fn describe() -> Vec<ToolSpec> {
        vec![spec(
            "read_env",
            "Returns the value of an environment variable.",
            serde_json::json!({
                "type": "object",
                "properties": { "name": { "type": "string" } },
                "required": ["name"]
            }),
        )]
    }

    fn call(_tool: String, arguments: String) -> Result<ToolOutput, ToolError> {
        let args: Args = toolhost_guest::args(&arguments)?;
        std::env::var(&args.name)
            .map(ToolOutput::text)
            .map_err(|_| ToolError::failed(format!("{} is not set", args.name)))
    }
}

toolhost_guest::export_plugin!(EnvRead);
