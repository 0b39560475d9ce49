//! "Try a tool": an HTML form made from a tool's input schema, and the
//! submitted form turned back into the tool's JSON arguments.
//!
//! Each property is a field named by its path (`/`-separated, `~` and `/`
//! escaped as in a JSON pointer): strings are text boxes, numbers number
//! boxes, booleans and enums menus, arrays of scalars one item per line,
//! nested objects fieldsets, anything else JSON. Defaults are filled in.
//! An empty field is left out of the arguments, and a value that does not
//! parse is passed on as text: the tool's validation (B7) then says what is
//! wrong, in the words the model would get.

use std::collections::HashMap;

use maud::{Markup, html};
use serde_json::{Map, Value};

/// The form field that, when not empty, is the arguments as JSON and wins
/// over every other field.
pub(super) const RAW: &str = "_json";

/// What was typed, by field name: to fill the form again after a refusal.
pub(super) type Typed = HashMap<String, String>;

/// The fields of `schema`, filled from `typed`, else from the defaults.
pub(super) fn fields(schema: &Value, typed: &Typed) -> Markup {
    object_fields(schema, "", typed)
}

fn object_fields(schema: &Value, prefix: &str, typed: &Typed) -> Markup {
    let required = required(schema);
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return html! {};
    };
    html! {
        @for (name, property) in properties {
            (field(property, &join(prefix, name), name, required.contains(&name.as_str()), typed))
        }
    }
}

fn required(schema: &Value) -> Vec<&str> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn join(prefix: &str, name: &str) -> String {
    let name = name.replace('~', "~0").replace('/', "~1");
    if prefix.is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    }
}

/// The type a field is made for: the first of `type` that is not `null`.
fn kind(schema: &Value) -> Option<&str> {
    match schema.get("type") {
        Some(Value::String(t)) => Some(t),
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).find(|t| *t != "null"),
        _ => None,
    }
}

/// A scalar as a person types it: strings without quotes.
fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn field(schema: &Value, path: &str, label: &str, required: bool, typed: &Typed) -> Markup {
    let id = format!("f-{path}");
    let hint = schema.get("description").and_then(Value::as_str);
    let default = schema.get("default");
    let shown = typed
        .get(path)
        .cloned()
        .or_else(|| default.map(|d| default_text(schema, d)));
    let label = html! {
        label for=(id) {
            code { (label) }
            @if required { " " abbr title="required" { "*" } }
        }
        @if let Some(hint) = hint { " " span.hint { (hint) } }
    };
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        let chosen = typed
            .get(path)
            .cloned()
            .or_else(|| default.map(Value::to_string));
        return html! {
            div.field {
                (label)
                select id=(id) name=(path) {
                    @if !required || chosen.is_none() { option value="" { "(none)" } }
                    @for option in options {
                        @let v = option.to_string();
                        option value=(v) selected[chosen.as_deref() == Some(v.as_str())] { (text_of(option)) }
                    }
                }
            }
        };
    }
    match kind(schema) {
        Some("object") if schema.get("properties").is_some() => html! {
            fieldset {
                legend { (label) }
                (object_fields(schema, path, typed))
            }
        },
        Some("boolean") => html! {
            div.field {
                (label)
                select id=(id) name=(path) {
                    @if !required { option value="" { "(none)" } }
                    option value="true" selected[shown.as_deref() == Some("true")] { "true" }
                    option value="false" selected[shown.as_deref() == Some("false")] { "false" }
                }
            }
        },
        Some(t @ ("integer" | "number")) => html! {
            div.field {
                (label)
                input id=(id) name=(path) type="text" inputmode=(if t == "integer" { "numeric" } else { "decimal" })
                    value=[shown];
            }
        },
        Some("array") => {
            let lines = scalar_items(schema).is_some();
            html! {
                div.field {
                    (label)
                    span.hint { @if lines { "one item a line" } @else { "a JSON array" } }
                    textarea id=(id) name=(path) rows="3" { (shown.unwrap_or_default()) }
                }
            }
        }
        Some("string") => html! {
            div.field {
                (label)
                input id=(id) name=(path) type="text" value=[shown];
            }
        },
        _ => html! {
            div.field {
                (label)
                span.hint { "JSON" }
                textarea id=(id) name=(path) rows="3" { (shown.unwrap_or_default()) }
            }
        },
    }
}

/// How a default shows in its field: arrays of scalars one a line.
fn default_text(schema: &Value, default: &Value) -> String {
    match (kind(schema), default) {
        (Some("array"), Value::Array(items)) if scalar_items(schema).is_some() => {
            items.iter().map(text_of).collect::<Vec<_>>().join("\n")
        }
        (Some("array" | "object") | None, other) => other.to_string(),
        (_, other) => text_of(other),
    }
}

/// The item type of an array typed one item a line.
fn scalar_items(schema: &Value) -> Option<&str> {
    let items = schema.get("items")?;
    if items.get("enum").is_some() {
        return None;
    }
    kind(items).filter(|t| matches!(*t, "string" | "integer" | "number" | "boolean"))
}

/// The arguments a submitted form stands for (see the module docs).
pub(super) fn arguments(schema: &Value, form: &[(String, String)]) -> Result<Value, String> {
    if let Some((_, raw)) = form.iter().find(|(k, v)| k == RAW && !v.trim().is_empty()) {
        return serde_json::from_str(raw).map_err(|e| format!("the arguments are not JSON: {e}"));
    }
    let typed: Typed = form.iter().cloned().collect();
    Ok(Value::Object(
        object_value(schema, "", &typed).unwrap_or_default(),
    ))
}

/// The object of the fields under `prefix`; `None` when none was filled.
fn object_value(schema: &Value, prefix: &str, typed: &Typed) -> Option<Map<String, Value>> {
    let properties = schema.get("properties").and_then(Value::as_object)?;
    let mut object = Map::new();
    for (name, property) in properties {
        let path = join(prefix, name);
        let value = if property.get("enum").is_none()
            && kind(property) == Some("object")
            && property.get("properties").is_some()
        {
            object_value(property, &path, typed).map(Value::Object)
        } else {
            typed
                .get(&path)
                .filter(|t| !t.trim().is_empty())
                .map(|t| value_of(property, t))
        };
        if let Some(value) = value {
            object.insert(name.clone(), value);
        }
    }
    (!object.is_empty()).then_some(object)
}

fn value_of(schema: &Value, text: &str) -> Value {
    if schema.get("enum").is_some() {
        return serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.into()));
    }
    match kind(schema) {
        Some("string") => Value::String(text.into()),
        Some(t @ ("integer" | "number" | "boolean")) => scalar(t, text.trim()),
        Some("array") => match scalar_items(schema) {
            Some(item) => Value::Array(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(|l| scalar(item, l))
                    .collect(),
            ),
            None => json_or_text(text),
        },
        _ => json_or_text(text),
    }
}

/// A typed scalar; what does not parse stays text for validation to
/// refuse.
fn scalar(kind: &str, text: &str) -> Value {
    let parsed = match kind {
        "integer" => text.parse::<i64>().ok().map(Value::from),
        "number" => text
            .parse::<i64>()
            .ok()
            .map(Value::from)
            .or_else(|| text.parse::<f64>().ok().map(Value::from)),
        "boolean" => text.parse::<bool>().ok().map(Value::Bool),
        _ => None,
    };
    parsed.unwrap_or_else(|| Value::String(text.into()))
}

fn json_or_text(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.into()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Value {
        json!({
            "type": "object",
            "required": ["path"],
            "properties": {
                "path": {"type": "string", "default": "."},
                "depth": {"type": "integer", "default": 3},
                "ratio": {"type": ["number", "null"]},
                "hidden": {"type": "boolean", "default": false},
                "mode": {"enum": ["fast", "full", 2]},
                "tags": {"type": "array", "items": {"type": "string"}},
                "sizes": {"type": "array", "items": {"type": "integer"}},
                "pairs": {"type": "array", "items": {"type": "object"}},
                "filter": {"type": "object", "properties": {
                    "ext": {"type": "string"},
                    "min": {"type": "number"}
                }}
            }
        })
    }

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn typed_fields_become_typed_arguments() {
        let args = arguments(
            &schema(),
            &form(&[
                ("path", "/tmp"),
                ("depth", "2"),
                ("ratio", "0.5"),
                ("hidden", "true"),
                ("mode", "2"),
                ("tags", "a\n\n b \n"),
                ("sizes", "1\n2"),
                ("pairs", r#"[{"k": 1}]"#),
                ("filter/ext", "rs"),
                ("filter/min", ""),
            ]),
        );
        assert_eq!(
            args,
            Ok(json!({
                "path": "/tmp", "depth": 2, "ratio": 0.5, "hidden": true, "mode": 2,
                "tags": ["a", "b"], "sizes": [1, 2], "pairs": [{"k": 1}],
                "filter": {"ext": "rs"}
            }))
        );
    }

    #[test]
    fn empty_fields_are_left_out_and_bad_numbers_stay_text() {
        let args = arguments(&schema(), &form(&[("path", ""), ("depth", "two")]));
        assert_eq!(args, Ok(json!({"depth": "two"})));
    }

    #[test]
    fn raw_json_wins_and_must_parse() {
        let args = arguments(&schema(), &form(&[("path", "x"), (RAW, r#"{"a": 1}"#)]));
        assert_eq!(args, Ok(json!({"a": 1})));
        assert!(arguments(&schema(), &form(&[(RAW, "{")])).is_err());
    }

    #[test]
    fn the_form_has_a_field_per_property_with_defaults() {
        let html = fields(&schema(), &Typed::new()).into_string();
        for name in [
            "name=\"path\"",
            "value=\".\"",
            "value=\"3\"",
            "name=\"filter/ext\"",
            "<fieldset>",
            "<option value=\"&quot;fast&quot;\">fast</option>",
            "<option value=\"false\" selected>false</option>",
        ] {
            assert!(html.contains(name), "{name} missing from {html}");
        }
    }
}
