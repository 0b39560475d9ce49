//! Example plugin: a fire-and-forget tool. `audit_log` appends one JSON line
//! per event to `/audit/audit.log`, in the read-write folder the manifest
//! grants; the host answers the model at once and only logs the outcome.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::json;
use toolhost_guest::{Delivery, Plugin, ToolError, ToolOutput, ToolSpec, call_info, spec};

/// The log file, in the folder the manifest grants as `/audit`.
const LOG_FILE: &str = "/audit/audit.log";
/// The longest event, in characters.
const MAX_EVENT_CHARS: usize = 500;

struct Audit;

#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
enum Level {
    #[default]
    Info,
    Warn,
    Error,
}

#[derive(Deserialize)]
struct Args {
    event: String,
    #[serde(default)]
    level: Level,
    #[serde(default)]
    fields: BTreeMap<String, String>,
}

/// One line of the log, its keys in this order.
#[derive(Serialize)]
struct Entry<'a> {
    ts: u64,
    session: &'a str,
    call: &'a str,
    level: Level,
    event: &'a str,
    fields: &'a BTreeMap<String, String>,
}

impl Entry<'_> {
    /// The entry as one line of JSON, newline included. JSON escapes any
    /// newline inside the event or fields, so an entry is always one line.
    fn line(&self) -> Result<String, ToolError> {
        let mut line = serde_json::to_string(self).map_err(ToolError::failed)?;
        line.push('\n');
        Ok(line)
    }
}

fn check_event(event: &str) -> Result<(), ToolError> {
    let chars = event.chars().count();
    if (1..=MAX_EVENT_CHARS).contains(&chars) {
        Ok(())
    } else {
        Err(ToolError::InvalidArguments(format!(
            "event must be 1 to {MAX_EVENT_CHARS} characters long, not {chars}"
        )))
    }
}

fn audit_log(args: Args) -> Result<ToolOutput, ToolError> {
    check_event(&args.event)?;
    let call = call_info();
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let line = Entry {
        ts,
        session: &call.session_id,
        call: &call.call_id,
        level: args.level,
        event: &args.event,
        fields: &args.fields,
    }
    .line()?;
    // One write of the whole line in append mode, so that concurrent calls
    // do not interleave within a line.
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(LOG_FILE)
        .and_then(|mut file| file.write_all(line.as_bytes()))
        .map_err(|e| {
            ToolError::failed(format!(
                "cannot append to {LOG_FILE}: {e} (is /audit granted with write = true in the plugin manifest?)"
            ))
        })?;
    Ok(ToolOutput::text("logged"))
}

impl Plugin for Audit {
    fn describe() -> Vec<ToolSpec> {
        vec![ToolSpec {
            delivery: Delivery::FireAndForget,
            ..spec(
                "audit_log",
                "Records an event in the audit log. Fire and forget: the call answers at once that it started, and its outcome is not reported back.",
                json!({
                    "type": "object",
                    "properties": {
                        "event": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": MAX_EVENT_CHARS,
                            "description": "What happened, in a sentence."
                        },
                        "level": {
                            "type": "string",
                            "enum": ["info", "warn", "error"],
                            "default": "info"
                        },
                        "fields": {
                            "type": "object",
                            "additionalProperties": { "type": "string" },
                            "description": "Extra details as name-value pairs of strings."
                        }
                    },
                    "required": ["event"]
                }),
            )
        }]
    }

    fn call(tool: String, arguments: String) -> Result<ToolOutput, ToolError> {
        match tool.as_str() {
            "audit_log" => audit_log(toolhost_guest::args(&arguments)?),
            other => Err(ToolError::failed(format!("no tool named {other}"))),
        }
    }
}

toolhost_guest::export_plugin!(Audit);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_single_json_lines() {
        let fields = BTreeMap::from([("user".to_owned(), "ana".to_owned())]);
        let entry = Entry {
            ts: 1_700_000_000,
            session: "s1",
            call: "c1",
            level: Level::Warn,
            event: "two\nlines",
            fields: &fields,
        };
        assert_eq!(
            entry.line().ok().as_deref(),
            Some(
                "{\"ts\":1700000000,\"session\":\"s1\",\"call\":\"c1\",\"level\":\"warn\",\"event\":\"two\\nlines\",\"fields\":{\"user\":\"ana\"}}\n"
            )
        );
    }

    #[test]
    fn arguments_take_defaults() {
        let args: Option<Args> = toolhost_guest::args(r#"{"event": "login"}"#).ok();
        assert!(args.is_some_and(|a| a.level == Level::Info && a.fields.is_empty()));
        assert!(toolhost_guest::args::<Args>(r#"{"event": "x", "level": "debug"}"#).is_err());
    }

    #[test]
    fn events_are_bounded() {
        assert!(check_event("").is_err());
        assert!(check_event(&"é".repeat(MAX_EVENT_CHARS)).is_ok());
        assert!(check_event(&"é".repeat(MAX_EVENT_CHARS + 1)).is_err());
    }
}
