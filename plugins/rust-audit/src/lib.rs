//! Example plugin: a fire-and-forget tool. `audit_log` appends one JSON line
//! per event to `/audit/audit.log`, in the read-write folder the manifest
//! grants; the host answers the model at once and only logs the outcome.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
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
    fields: Vec<Field>,
}

/// One extra detail. The model sends details as a list of pairs rather than
/// an object with any keys: OpenAI strict mode and Gemini refuse an object
/// whose keys are not declared.
#[derive(Deserialize)]
struct Field {
    key: String,
    value: String,
}

/// The details as the log writes them, an object; a key given twice is
/// invalid arguments rather than a silent choice between its values.
fn fields_map(fields: Vec<Field>) -> Result<BTreeMap<String, String>, ToolError> {
    let mut map = BTreeMap::new();
    for Field { key, value } in fields {
        if map.contains_key(&key) {
            return Err(ToolError::invalid(format!("field `{key}` is given twice")));
        }
        map.insert(key, value);
    }
    Ok(map)
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
    let fields = fields_map(args.fields)?;
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
        fields: &fields,
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

/// The arguments of `audit_log`, in the subset of JSON Schema that OpenAI
/// strict mode and Gemini accept: no length keywords (the plugin checks the
/// event's length itself), details as a list of pairs, and optional
/// arguments that also take `null`, which `toolhost_guest::args` reads as
/// absent.
fn input_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "event": {
                "type": "string",
                "description": format!("What happened, in a sentence of 1 to {MAX_EVENT_CHARS} characters.")
            },
            "level": {
                "anyOf": [
                    { "type": "string", "enum": ["info", "warn", "error"] },
                    { "type": "null" }
                ],
                "description": "How serious the event is. Default: info."
            },
            "fields": {
                "type": ["array", "null"],
                "items": {
                    "type": "object",
                    "properties": {
                        "key": { "type": "string" },
                        "value": { "type": "string" }
                    },
                    "required": ["key", "value"]
                },
                "description": "Extra details, as key-value pairs of strings; each key at most once."
            }
        },
        "required": ["event"]
    })
}

impl Plugin for Audit {
    fn describe() -> Vec<ToolSpec> {
        vec![ToolSpec {
            delivery: Delivery::FireAndForget,
            ..spec(
                "audit_log",
                "Records an event in the audit log. Fire and forget: the call answers at once that it started, and its outcome is not reported back.",
                input_schema(),
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
        let args: Option<Args> =
            toolhost_guest::args(r#"{"event": "login", "level": null, "fields": null}"#).ok();
        assert!(args.is_some_and(|a| a.level == Level::Info && a.fields.is_empty()));
        assert!(toolhost_guest::args::<Args>(r#"{"event": "x", "level": "debug"}"#).is_err());
    }

    #[test]
    fn fields_are_pairs_with_distinct_keys() {
        let pair = |k: &str, v: &str| Field {
            key: k.into(),
            value: v.into(),
        };
        let map = fields_map(vec![pair("user", "ana"), pair("ip", "10.0.0.1")]);
        assert_eq!(
            map.ok(),
            Some(BTreeMap::from([
                ("ip".to_owned(), "10.0.0.1".to_owned()),
                ("user".to_owned(), "ana".to_owned())
            ]))
        );
        assert!(fields_map(vec![pair("user", "ana"), pair("user", "bo")]).is_err());
    }

    #[test]
    fn the_input_schema_is_portable() {
        let schema = input_schema();
        assert_eq!(toolhost_guest::portable(schema.clone()), schema);
    }

    #[test]
    fn events_are_bounded() {
        assert!(check_event("").is_err());
        assert!(check_event(&"é".repeat(MAX_EVENT_CHARS)).is_ok());
        assert!(check_event(&"é".repeat(MAX_EVENT_CHARS + 1)).is_err());
    }
}
