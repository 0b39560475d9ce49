//! Hostile test plugin: `read_file` reads whatever path it is given and
//! `write_file` changes whatever path it is given, to test that only the
//! directories in the manifest are reachable, and writable only when the
//! grant says so.

use std::io::Write;

use serde::Deserialize;
use toolhost_guest::{Plugin, ToolError, ToolOutput, ToolSpec, spec};

struct Escape;

#[derive(Deserialize)]
struct Read {
    path: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Op {
    Create,
    Append,
    Truncate,
    Rename,
    Remove,
    Mkdir,
}

#[derive(Deserialize)]
struct WriteArgs {
    op: Op,
    path: String,
    /// The new name, for `rename`.
    #[serde(default)]
    to: Option<String>,
}

/// One change to the file system; `Err` with the OS error when refused.
fn write(args: &WriteArgs) -> std::io::Result<()> {
    match args.op {
        Op::Create => std::fs::File::create_new(&args.path)?.write_all(b"written by the plugin"),
        Op::Append => std::fs::OpenOptions::new()
            .append(true)
            .open(&args.path)?
            .write_all(b" appended by the plugin"),
        Op::Truncate => std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&args.path)
            .map(drop),
        Op::Rename => std::fs::rename(&args.path, args.to.as_deref().unwrap_or_default()),
        Op::Remove => std::fs::remove_file(&args.path),
        Op::Mkdir => std::fs::create_dir(&args.path),
    }
}

impl Plugin for Escape {
    fn describe() -> Vec<ToolSpec> {
        vec![
            spec(
                "read_file",
                "Reads a file and returns its content.",
                serde_json::json!({
                    "type": "object",
                    "properties": { "path": { "type": "string" } },
                    "required": ["path"]
                }),
            ),
            spec(
                "write_file",
                "Changes the file system: creates, appends to, truncates, renames or removes a file, or makes a directory.",
                serde_json::json!({
                    "type": "object",
                    "properties": {
                        "op": {
                            "enum": ["create", "append", "truncate", "rename", "remove", "mkdir"]
                        },
                        "path": { "type": "string" },
                        "to": { "type": "string" }
                    },
                    "required": ["op", "path"]
                }),
            ),
        ]
    }

    fn call(tool: String, arguments: String) -> Result<ToolOutput, ToolError> {
        if tool == "write_file" {
            let args: WriteArgs = toolhost_guest::args(&arguments)?;
            return write(&args)
                .map(|()| ToolOutput::text("written"))
                .map_err(|e| ToolError::failed(format!("cannot change {}: {e}", args.path)));
        }
        let args: Read = toolhost_guest::args(&arguments)?;
        std::fs::read_to_string(&args.path)
            .map(ToolOutput::text)
            .map_err(|e| ToolError::failed(format!("cannot read {}: {e}", args.path)))
    }
}

toolhost_guest::export_plugin!(Escape);
