//! Input schemas that the LLM APIs agents use accept as they are, and the
//! arguments those APIs send, made what a plugin expects.
//!
//! OpenAI's strict mode and Gemini each accept a subset of JSON Schema, and
//! clients in strict mode rewrite a tool's schema: every property becomes
//! required, and the optional ones nullable, so the model sends `null` for
//! an argument it leaves out. [`portable`] writes a generated schema in the
//! common subset without changing what it accepts: only standard formats,
//! `const` as a one-value `enum`, a `type` on every `enum`, `required` on
//! every object (possibly empty), an object without properties closed,
//! `default` said in the description, and `null` accepted for every
//! optional property. [`absent_nulls`] then turns
//! those nulls back into absent keys, so `Option` and `#[serde(default)]`
//! fields see what the model meant.

use serde_json::{Map, Value, json};

/// The `format`s JSON Schema defines that OpenAI strict mode accepts
/// (<https://platform.openai.com/docs/guides/structured-outputs#supported-properties>).
/// schemars also writes OpenAPI's numeric formats (`int32`, `uint64`,
/// `double`, ...), which strict mode refuses and validators ignore; the
/// range they imply stays in `minimum` and `maximum`.
pub const STANDARD_FORMATS: &[&str] = &[
    "date-time",
    "time",
    "date",
    "duration",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "uuid",
];

/// `schema` in the subset of JSON Schema that OpenAI strict mode and Gemini
/// share, accepting the same arguments plus `null` for optional properties.
pub fn portable(mut schema: Value) -> Value {
    if let Some(root) = schema.as_object_mut() {
        root.remove("$schema");
        root.remove("title");
    }
    fix(&mut schema);
    schema
}

/// Rewrite one subschema and, first, every subschema inside it.
fn fix(schema: &mut Value) {
    let Some(node) = schema.as_object_mut() else {
        return;
    };
    for key in ["items", "additionalProperties", "not"] {
        if let Some(child) = node.get_mut(key) {
            fix(child);
        }
    }
    for key in ["anyOf", "oneOf", "allOf", "prefixItems"] {
        if let Some(Value::Array(children)) = node.get_mut(key) {
            children.iter_mut().for_each(fix);
        }
    }
    for key in ["properties", "$defs", "definitions"] {
        if let Some(Value::Object(children)) = node.get_mut(key) {
            children.values_mut().for_each(fix);
        }
    }

    if node
        .get("format")
        .and_then(Value::as_str)
        .is_some_and(|f| !STANDARD_FORMATS.contains(&f))
    {
        node.remove("format");
    }
    if let Some(value) = node.remove("const") {
        node.insert("enum".into(), json!([value]));
    }
    if !node.contains_key("type")
        && let Some(ty) = node
            .get("enum")
            .and_then(Value::as_array)
            .and_then(|v| type_of(v))
    {
        node.insert("type".into(), ty);
    }
    exclusive_consts_to_any_of(node);
    if let Some(default) = node.remove("default")
        && !default.is_null()
    {
        let said = format!("Default: {default}.");
        let description = match node.get("description").and_then(Value::as_str) {
            Some(d) if !d.is_empty() => format!("{} {said}", d.trim_end()),
            _ => said,
        };
        node.insert("description".into(), Value::String(description));
    }

    let is_object = node.get("type").and_then(Value::as_str) == Some("object")
        || node.contains_key("properties");
    if is_object {
        node.entry("type").or_insert_with(|| json!("object"));
        node.entry("properties").or_insert_with(|| json!({}));
        let required: Vec<String> = match node.get("required").and_then(Value::as_array) {
            Some(names) => names
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            None => Vec::new(),
        };
        node.insert("required".into(), json!(required));
        // An object that declares no keys takes none: said outright, since
        // strict-mode clients refuse an object that may hold any key.
        if node
            .get("properties")
            .and_then(Value::as_object)
            .is_some_and(Map::is_empty)
        {
            node.entry("additionalProperties").or_insert(json!(false));
        }
        if let Some(Value::Object(properties)) = node.get_mut("properties") {
            for (name, property) in properties.iter_mut() {
                if !required.contains(name) {
                    nullable(property);
                }
            }
        }
    }
}

/// The `type` of an `enum` with these values: one type, or the list of
/// them when they mix; `None` if a value is an array or object.
fn type_of(values: &[Value]) -> Option<Value> {
    let mut types: Vec<&str> = Vec::new();
    for value in values {
        let ty = match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) | Value::Object(_) => return None,
        };
        if !types.contains(&ty) {
            types.push(ty);
        }
    }
    // An integer is a number: one "number" covers both.
    if types.contains(&"number") {
        types.retain(|t| *t != "integer");
    }
    match types.as_slice() {
        [] => None,
        [one] => Some(json!(one)),
        many => Some(json!(many)),
    }
}

/// schemars writes a unit enum whose variants have doc comments as a
/// `oneOf` of one-value branches (and `{"type": "null"}` when optional).
/// Distinct values cannot match two branches,
/// so `anyOf` means the same, and strict mode accepts it where it refuses
/// `oneOf`.
fn exclusive_consts_to_any_of(node: &mut Map<String, Value>) {
    static NULL: Value = Value::Null;
    let Some(Value::Array(branches)) = node.get("oneOf") else {
        return;
    };
    let mut seen: Vec<&Value> = Vec::new();
    for branch in branches {
        let value = match branch
            .get("enum")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
        {
            Some([value]) => value,
            _ if branch.get("type").and_then(Value::as_str) == Some("null") => &NULL,
            _ => return,
        };
        if seen.contains(&value) {
            return;
        }
        seen.push(value);
    }
    if let Some(branches) = node.remove("oneOf") {
        node.insert("anyOf".into(), branches);
    }
}

/// Let an optional property be `null`, which [`absent_nulls`] reads as
/// absent. A plain type gains `"null"` in its `type`; an `enum`, a `$ref`
/// or a union becomes `anyOf: [it, {"type": "null"}]`, the form Gemini's
/// clients read as "nullable" (a `null` inside an `enum` they refuse).
fn nullable(property: &mut Value) {
    let Some(node) = property.as_object_mut() else {
        return;
    };
    let null_type = json!("null");
    if node.contains_key("enum")
        || node.contains_key("$ref")
        || node.contains_key("oneOf")
        || node.contains_key("allOf")
    {
        if node
            .get("enum")
            .and_then(Value::as_array)
            .is_some_and(|v| v.contains(&Value::Null))
            || node.get("type") == Some(&null_type)
        {
            return;
        }
        // The description stays outside, where strict mode allows it
        // beside `anyOf`.
        let description = node.remove("description");
        let inner = Value::Object(std::mem::take(node));
        node.insert("anyOf".into(), json!([inner, { "type": "null" }]));
        if let Some(description) = description {
            node.insert("description".into(), description);
        }
        return;
    }
    match node.get_mut("type") {
        Some(Value::String(ty)) if ty != "null" => {
            let ty = json!(ty);
            node.insert("type".into(), Value::Array(vec![ty, null_type]));
        }
        Some(Value::Array(types)) if !types.contains(&null_type) => types.push(null_type),
        Some(_) => {}
        None => {
            if let Some(Value::Array(branches)) = node.get_mut("anyOf")
                && !branches.iter().any(|b| b.get("type") == Some(&null_type))
            {
                branches.push(json!({ "type": "null" }));
            }
            // A property with no constraint at all already accepts null.
        }
    }
}

/// The arguments with every `null`-valued key of every object removed:
/// an optional argument sent as `null` by a client in strict mode is an
/// argument left out. Nulls inside arrays are values and stay.
pub fn absent_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(absent_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(absent_nulls),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemars::JsonSchema;
    use serde::Deserialize;

    /// How a level is written.
    #[derive(Deserialize, JsonSchema, Debug, PartialEq)]
    #[serde(rename_all = "lowercase")]
    #[allow(dead_code)]
    enum Level {
        /// Routine.
        Info,
        /// Worth a look.
        Warn,
    }

    #[derive(Deserialize, JsonSchema, Debug, PartialEq)]
    struct Pair {
        key: String,
        value: String,
    }

    /// Arguments with one of each kind of field.
    #[derive(Deserialize, JsonSchema, Debug, PartialEq)]
    struct Args {
        /// Required text.
        name: String,
        /// An optional folder.
        dir: Option<String>,
        /// How many, at most.
        #[serde(default = "ten")]
        limit: u64,
        #[serde(default)]
        ratio: f64,
        level: Option<Level>,
        #[serde(default)]
        tags: Vec<Pair>,
    }

    fn ten() -> u64 {
        10
    }

    fn schema() -> Value {
        crate::schema_of::<Args>()
    }

    /// Every subschema of `v`, with its JSON pointer.
    fn walk<'a>(v: &'a Value, at: String, out: &mut Vec<(String, &'a Value)>) {
        match v {
            Value::Object(map) => {
                out.push((at.clone(), v));
                for (k, child) in map {
                    walk(child, format!("{at}/{k}"), out);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(child, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn only_standard_formats_are_left() {
        let s = schema();
        let mut nodes = Vec::new();
        walk(&s, String::new(), &mut nodes);
        for (at, node) in nodes {
            if let Some(f) = node.get("format").and_then(Value::as_str) {
                assert!(STANDARD_FORMATS.contains(&f), "format {f} at {at}: {s}");
            }
        }
        // The range an unsigned format implied is still there.
        assert_eq!(s["properties"]["limit"]["minimum"], 0, "{s}");
        let kept = portable(json!({"type": "string", "format": "date-time"}));
        assert_eq!(kept["format"], "date-time");
    }

    #[test]
    fn optional_properties_accept_null_and_required_ones_do_not() {
        let s = schema();
        assert_eq!(s["required"], json!(["name"]), "{s}");
        assert_eq!(s["properties"]["name"]["type"], "string", "{s}");
        for name in ["dir", "limit", "ratio", "tags"] {
            let ty = &s["properties"][name]["type"];
            assert!(
                ty.as_array().is_some_and(|t| t.contains(&json!("null"))),
                "{name}: {s}"
            );
        }
        // The real validator (the host's) takes a null for each optional
        // argument, an enum's included, and still refuses a null name.
        let validator = jsonschema::validator_for(&s).expect("a valid schema");
        let nulls = json!({"name": "n", "dir": null, "limit": null, "ratio": null,
                           "level": null, "tags": null});
        assert!(validator.is_valid(&nulls), "{s}");
        assert!(!validator.is_valid(&json!({"name": null})), "{s}");
        assert!(
            !validator.is_valid(&json!({"name": "n", "level": "debug"})),
            "{s}"
        );
        assert!(
            validator.is_valid(&json!({"name": "n", "level": "warn"})),
            "{s}"
        );
    }

    #[test]
    fn every_enum_has_a_type_and_no_one_of_remains() {
        let s = schema();
        let mut nodes = Vec::new();
        walk(&s, String::new(), &mut nodes);
        for (at, node) in &nodes {
            if node.get("enum").is_some() {
                assert!(node.get("type").is_some(), "enum without type at {at}: {s}");
            }
            assert!(node.get("oneOf").is_none(), "oneOf at {at}: {s}");
            assert!(node.get("const").is_none(), "const at {at}: {s}");
        }
        let hand = portable(json!({
            "type": "object",
            "properties": { "stat": { "enum": ["sum", "mean"] }, "n": { "enum": [1, 2.5] } },
            "required": ["stat", "n"]
        }));
        assert_eq!(hand["properties"]["stat"]["type"], "string");
        assert_eq!(hand["properties"]["n"]["type"], "number");
    }

    #[test]
    fn every_object_has_required_and_properties() {
        let s = schema();
        let mut nodes = Vec::new();
        walk(&s, String::new(), &mut nodes);
        let objects: Vec<_> = nodes
            .iter()
            .filter(|(_, n)| {
                n.get("type") == Some(&json!("object"))
                    || n["type"]
                        .as_array()
                        .is_some_and(|t| t.contains(&json!("object")))
            })
            .collect();
        assert!(objects.len() >= 2, "the root and the pair: {s}");
        for (at, node) in objects {
            assert!(node["required"].is_array(), "no required at {at}: {s}");
            assert!(node["properties"].is_object(), "no properties at {at}: {s}");
        }
        let empty = portable(json!({"type": "object"}));
        assert_eq!(
            empty,
            json!({"type": "object", "properties": {}, "required": [], "additionalProperties": false})
        );
    }

    #[test]
    fn defaults_move_into_the_description() {
        let s = schema();
        let limit = &s["properties"]["limit"];
        assert!(limit.get("default").is_none(), "{s}");
        assert_eq!(
            limit["description"], "How many, at most. Default: 10.",
            "{s}"
        );
    }

    #[test]
    fn nested_types_are_inlined() {
        let s = schema();
        assert!(s.get("$defs").is_none(), "{s}");
        let pair = &s["properties"]["tags"]["items"];
        assert_eq!(pair["required"], json!(["key", "value"]), "{s}");
        assert!(
            s.get("$schema").is_none() && s.get("title").is_none(),
            "{s}"
        );
    }

    #[test]
    fn a_ref_made_nullable_keeps_its_description_outside() {
        let mut p = json!({"$ref": "#/$defs/Level", "description": "The level."});
        nullable(&mut p);
        assert_eq!(
            p,
            json!({"anyOf": [{"$ref": "#/$defs/Level"}, {"type": "null"}], "description": "The level."})
        );
    }

    #[test]
    fn nulls_sent_for_optional_arguments_read_as_absent() {
        let sent = r#"{"name": "n", "dir": null, "limit": null, "ratio": null,
                       "level": null, "tags": [{"key": "k", "value": "v"}]}"#;
        let args: Args = crate::args(sent).expect("nulls are absent");
        assert_eq!(
            args,
            Args {
                name: "n".into(),
                dir: None,
                limit: 10,
                ratio: 0.0,
                level: None,
                tags: vec![Pair {
                    key: "k".into(),
                    value: "v".into()
                }],
            }
        );
        // A null for a required argument is still an error, and a null in
        // an array is a value.
        assert!(crate::args::<Args>(r#"{"name": null}"#).is_err());
        let mut v = json!({"a": [null, {"b": null}]});
        absent_nulls(&mut v);
        assert_eq!(v, json!({"a": [null, {}]}));
    }
}
