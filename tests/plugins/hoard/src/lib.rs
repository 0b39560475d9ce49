//! Hostile test plugin: makes the host hold memory outside the plugin's own
//! memory limit. `fields` keeps creating `wasi:http` header maps, each with
//! a value of the given size, until the host stops it (the resource-table
//! cap); `header` grows one header map by 1 KiB values until the host stops
//! it (the header-fields cap); `ok` answers "ok".

use serde::Deserialize;
use toolhost_guest::{Plugin, ToolError, ToolOutput, ToolSpec, spec};
use wasi::http::types::Fields;

struct Hoard;

#[derive(Deserialize)]
struct FieldsArgs {
    count: u32,
    value_bytes: u32,
}

#[derive(Deserialize)]
struct HeaderArgs {
    kib: u32,
}

impl Plugin for Hoard {
    fn describe() -> Vec<ToolSpec> {
        vec![
            spec(
                "fields",
                "Creates `count` header maps with one value of `value_bytes` bytes each and holds them all.",
                serde_json::json!({
                    "type": "object",
                    "properties": {
                        "count": { "type": "integer", "minimum": 0 },
                        "value_bytes": { "type": "integer", "minimum": 0 }
                    },
                    "required": ["count", "value_bytes"]
                }),
            ),
            spec(
                "header",
                "Appends `kib` values of 1 KiB to one header map.",
                serde_json::json!({
                    "type": "object",
                    "properties": { "kib": { "type": "integer", "minimum": 0 } },
                    "required": ["kib"]
                }),
            ),
            spec(
                "ok",
                "Answers \"ok\".",
                serde_json::json!({ "type": "object", "properties": {} }),
            ),
        ]
    }

    fn call(tool: String, arguments: String) -> Result<ToolOutput, ToolError> {
        match tool.as_str() {
            "fields" => {
                let args: FieldsArgs = toolhost_guest::args(&arguments)?;
                let value = vec![b'v'; args.value_bytes as usize];
                let mut held = Vec::new();
                for i in 0..args.count {
                    let fields = Fields::new();
                    fields
                        .append("x-hoard", &value)
                        .map_err(|e| ToolError::failed(format!("fields {i}: {e:?}")))?;
                    held.push(fields);
                }
                Ok(ToolOutput::text(format!("held {}", held.len())))
            }
            "header" => {
                let args: HeaderArgs = toolhost_guest::args(&arguments)?;
                let fields = Fields::new();
                let value = vec![b'v'; 1024];
                for i in 0..args.kib {
                    fields
                        .append(&format!("x-hoard-{i}"), &value)
                        .map_err(|e| ToolError::failed(format!("value {i}: {e:?}")))?;
                }
                Ok(ToolOutput::text(format!("appended {} KiB", args.kib)))
            }
            _ => Ok(ToolOutput::text("ok")),
        }
    }
}

toolhost_guest::export_plugin!(Hoard);
