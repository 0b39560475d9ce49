//! A call's arguments: parsed, validated against the tool's input schema
//! (B7), stripped of the `confirm_duplicate` argument (B12), and compared as
//! canonical JSON for duplicates (B15). Pure functions, no wasm.

use serde_json::Value;

use crate::bindings::{DuplicatePolicy, DuplicateScope};
use crate::error::CallError;
use crate::plugin::Tool;

/// The argument B12 adds to tools whose duplicate policy is `confirm`.
pub const CONFIRM_ARGUMENT: &str = "confirm_duplicate";

/// Parse `arguments` (JSON text) as a JSON object (B7); empty text is `{}`.
pub(crate) fn parse(tool: &Tool, arguments: &str) -> Result<Value, CallError> {
    let invalid = |message: String| CallError::InvalidArguments {
        tool: tool.name.clone(),
        message,
    };
    let text = if arguments.trim().is_empty() {
        "{}"
    } else {
        arguments
    };
    let value: Value =
        serde_json::from_str(text).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(invalid("the arguments must be a JSON object".into()));
    }
    Ok(value)
}

/// Check parsed arguments against the tool's input schema (B7); the message
/// names each offending field.
pub(crate) fn check(tool: &Tool, value: &Value) -> Result<(), CallError> {
    let problems = crate::schema::problems(tool.validator()?, value, 5);
    let message = match problems {
        Ok(problems) if problems.is_empty() => return Ok(()),
        Ok(problems) => problems.join("; "),
        Err(failed) => failed,
    };
    Err(CallError::InvalidArguments {
        tool: tool.name.clone(),
        message,
    })
}

/// B12: remove `confirm_duplicate` before validation and comparison; whether
/// it was set.
pub(crate) fn take_confirm(tool: &Tool, args: &mut Value) -> Result<bool, CallError> {
    if tool.on_duplicate != DuplicatePolicy::Confirm {
        return Ok(false);
    }
    match args
        .as_object_mut()
        .and_then(|o| o.remove(CONFIRM_ARGUMENT))
    {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(b),
        Some(_) => Err(CallError::InvalidArguments {
            tool: tool.name.clone(),
            message: format!("at `/{CONFIRM_ARGUMENT}`: must be a boolean"),
        }),
    }
}

/// A call's arguments, read.
pub(crate) struct Prepared {
    /// What the call runs with.
    pub(crate) args: Value,
    /// Whether the call confirmed it is a duplicate (B13).
    pub(crate) confirmed: bool,
    /// What it is compared by under `name-and-arguments`, if its tool
    /// compares arguments ([`duplicate_key`]).
    pub(crate) key: Option<String>,
}

/// Parse, strip the confirm argument, validate and make the duplicate key:
/// all the work that grows with the arguments, in one place, so that large
/// ones are read off the runtime's threads together.
pub(crate) fn prepare(tool: &Tool, arguments: &str) -> Result<Prepared, CallError> {
    let mut args = parse(tool, arguments)?;
    let confirmed = take_confirm(tool, &mut args)?;
    check(tool, &args)?;
    let key = (tool.duplicate_scope == DuplicateScope::NameAndArguments)
        .then(|| duplicate_key(&tool.input_schema, &args));
    Ok(Prepared {
        args,
        confirmed,
        key,
    })
}

/// The key two calls are compared by under `name-and-arguments` (B15): the
/// arguments with the schema's top-level defaults filled in, as canonical
/// JSON.
pub(crate) fn duplicate_key(schema: &Value, args: &Value) -> String {
    canonical_json(&with_defaults(schema, args))
}

/// The arguments with null-valued keys taken as absent and the schema's
/// top-level defaults filled in (B15).
fn with_defaults(schema: &Value, args: &Value) -> Value {
    let mut args = args.clone();
    if let Some(obj) = args.as_object_mut() {
        obj.retain(|_, v| !v.is_null());
    }
    if let (Some(props), Some(obj)) = (
        schema.get("properties").and_then(Value::as_object),
        args.as_object_mut(),
    ) {
        for (name, prop) in props {
            if let Some(default) = prop.get("default")
                && !obj.contains_key(name)
            {
                obj.insert(name.clone(), default.clone());
            }
        }
    }
    args
}

/// Canonical JSON text: keys sorted, integral numbers written as integers
/// (so 1 and 1.0 are equal) (B15). Plugins get their arguments so: JSON
/// Schema counts `2.0` as an integer, most languages' JSON decoders do not.
pub(crate) fn canonical_json(v: &Value) -> String {
    serde_json::to_string(&Canonical(v)).expect("JSON values are written: their keys are strings")
}

/// A value written as canonical JSON, without a copy of it.
struct Canonical<'a>(&'a Value);

impl serde::Serialize for Canonical<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Number(n) => match n.as_f64() {
                Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => {
                    s.serialize_i64(f as i64)
                }
                _ => n.serialize(s),
            },
            Value::Array(items) => s.collect_seq(items.iter().map(Canonical)),
            // serde_json's maps are sorted unless a crate turns on its
            // `preserve_order`.
            Value::Object(map) if map.keys().is_sorted() => {
                s.collect_map(map.iter().map(|(k, v)| (k, Canonical(v))))
            }
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_unstable_by_key(|(k, _)| *k);
                s.collect_map(entries.into_iter().map(|(k, v)| (k, Canonical(v))))
            }
            other => other.serialize(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_and_unifies_numbers() {
        let a: Value =
            serde_json::from_str(r#"{"b": 1, "a": {"y": [1.0, 2], "x": "s"}}"#).expect("json");
        let b: Value =
            serde_json::from_str(r#"{"a": {"x": "s", "y": [1, 2.0]}, "b": 1.0}"#).expect("json");
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(canonical_json(&a), r#"{"a":{"x":"s","y":[1,2]},"b":1}"#);
        let c: Value = serde_json::from_str(r#"{"b": 1.5}"#).expect("json");
        assert_eq!(canonical_json(&c), r#"{"b":1.5}"#);
    }

    #[test]
    fn defaults_are_filled_for_comparison() {
        let schema = json!({"type": "object", "properties": {"key": {"type": "string", "default": "a"}, "ms": {"type": "integer"}}});
        let args = json!({"ms": 5});
        assert_eq!(with_defaults(&schema, &args), json!({"ms": 5, "key": "a"}));
        assert_eq!(
            duplicate_key(&schema, &args),
            duplicate_key(&schema, &json!({"ms": 5, "key": "a"}))
        );
        assert_eq!(
            duplicate_key(&schema, &json!({"ms": 5, "key": null})),
            duplicate_key(&schema, &args),
            "null is absent"
        );
    }
}
