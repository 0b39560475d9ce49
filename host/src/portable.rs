//! Tool input schemas against the rules of the LLM APIs agents use: the
//! conversion to an OpenAI strict-mode schema, and the keywords OpenAI strict
//! mode or Gemini refuse, for `toolhost check` to warn about.
//!
//! The rules are OpenAI's "Supported schemas" for Structured Outputs (the
//! same for strict function tools: every property required, optional ones
//! nullable, `additionalProperties: false` on every object, a subset of
//! keywords and `format`s, at most 10 levels of nested objects and 5000
//! properties), the conversion the `openai-agents` package applies to MCP
//! tools (`ensure_strict_json_schema`, which refuses any object that may hold
//! undeclared keys), and Gemini's function declarations, whose `parameters`
//! are a subset of OpenAPI 3.0 (one `type` per schema, `enum` of strings,
//! no `$ref`, `const`, `oneOf`, `allOf` or open-ended objects, and an
//! object with no properties refused).
//!
//! ```
//! use serde_json::json;
//! use toolhost::portable::{openai_strict, warnings};
//!
//! let schema = json!({
//!     "type": "object",
//!     "properties": { "dir": { "type": "string", "minLength": 1 } }
//! });
//! let strict = openai_strict(&schema).unwrap();
//! assert_eq!(strict["required"], json!(["dir"]));
//! assert_eq!(strict["properties"]["dir"]["type"], json!(["string", "null"]));
//! assert!(warnings(&schema).iter().any(|w| w.contains("minLength")));
//! ```

use serde_json::{Map, Value, json};

/// The `format`s OpenAI strict mode accepts, all defined by JSON Schema.
pub const OPENAI_FORMATS: &[&str] = &[
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

/// Validation keywords OpenAI strict mode refuses. [`openai_strict`] drops
/// them and says the constraint in the description: the host still checks
/// the arguments against the plugin's own schema, so the constraint holds.
const OPENAI_REFUSED: &[&str] = &[
    "minLength",
    "maxLength",
    "patternProperties",
    "unevaluatedProperties",
    "propertyNames",
    "minProperties",
    "maxProperties",
    "unevaluatedItems",
    "contains",
    "minContains",
    "maxContains",
    "uniqueItems",
];

/// Keywords whose meaning no strict-mode schema can carry: a schema using
/// them is refused rather than loosened.
const OPENAI_UNSUPPORTED: &[&str] = &[
    "allOf",
    "not",
    "if",
    "then",
    "else",
    "dependentRequired",
    "dependentSchemas",
    "prefixItems",
];

/// Keywords that only annotate, removed by [`openai_strict`] (`default` is
/// said in the description first).
const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$id",
    "$comment",
    "title",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
];

/// OpenAI's limits on one strict schema.
const MAX_OBJECT_DEPTH: usize = 10;
const MAX_PROPERTIES: usize = 5000;

/// Keywords Gemini's `parameters` (its OpenAPI 3.0 subset) refuse.
const GEMINI_REFUSED: &[&str] = &[
    "$ref",
    "$defs",
    "const",
    "oneOf",
    "allOf",
    "not",
    "if",
    "patternProperties",
    "propertyNames",
    "prefixItems",
    "uniqueItems",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "contains",
];

/// The `format`s Gemini accepts, by type.
fn gemini_formats(ty: &str) -> &'static [&'static str] {
    match ty {
        "string" => &["date-time", "enum"],
        "integer" => &["int32", "int64"],
        "number" => &["float", "double"],
        _ => &[],
    }
}

/// `schema` as OpenAI strict mode wants it, accepting the same arguments
/// (give or take what the description now says): every object closed with
/// `additionalProperties: false` and every property required, the optional
/// ones made nullable; `oneOf` written as `anyOf` and `const` as a
/// one-value `enum` (the host still checks the original schema); refused
/// validation keywords and non-standard `format`s moved into the
/// description; annotations removed.
///
/// Refused, with a message naming the place: a root that is not a plain
/// object, an object that may hold undeclared keys (a map: make it an array
/// of `{key, value}` pairs), an array whose items have no type, the
/// keywords strict mode has no form for (`allOf`, `not`, `if`,
/// `prefixItems`, ...), and schemas beyond OpenAI's size limits.
pub fn openai_strict(schema: &Value) -> Result<Value, String> {
    let mut out = schema.clone();
    let root = out
        .as_object()
        .ok_or_else(|| "the schema is not a JSON object".to_owned())?;
    if root.contains_key("anyOf") || root.contains_key("oneOf") {
        return Err("at /: the root must be a plain object, not a union".into());
    }
    match root.get("type") {
        Some(Value::String(t)) if t == "object" => {}
        None if root.contains_key("properties") || root.is_empty() => {}
        other => {
            return Err(format!(
                "at /: the root must be an object, not {}",
                other.map_or("untyped".into(), Value::to_string)
            ));
        }
    }
    let mut state = Walk::default();
    state.strict(&mut out, "", true, 0)?;
    if state.properties > MAX_PROPERTIES {
        return Err(format!(
            "{} properties in all: OpenAI strict mode takes at most {MAX_PROPERTIES}",
            state.properties
        ));
    }
    Ok(out)
}

#[derive(Default)]
struct Walk {
    properties: usize,
}

impl Walk {
    fn strict(
        &mut self,
        schema: &mut Value,
        at: &str,
        root: bool,
        depth: usize,
    ) -> Result<(), String> {
        let here = if at.is_empty() { "/" } else { at };
        let Some(node) = schema.as_object_mut() else {
            // `true` or `false`: a schema strict mode cannot express.
            return Err(format!("at {here}: a boolean schema has no strict form"));
        };
        if let Some(key) = OPENAI_UNSUPPORTED.iter().find(|k| node.contains_key(**k)) {
            return Err(format!(
                "at {here}: `{key}` has no form in OpenAI strict mode"
            ));
        }
        if let Some(r) = node.get("$ref").and_then(Value::as_str)
            && r != "#"
            && !(r.starts_with("#/$defs/") || r.starts_with("#/definitions/"))
        {
            return Err(format!(
                "at {here}: `$ref` {r} is neither `#` nor a definition"
            ));
        }

        for key in ANNOTATIONS {
            node.remove(*key);
        }
        let mut notes: Vec<String> = Vec::new();
        if let Some(default) = node.remove("default")
            && !default.is_null()
        {
            notes.push(format!("default: {default}"));
        }
        for key in OPENAI_REFUSED {
            if let Some(v) = node.remove(*key) {
                notes.push(format!("{key}: {v}"));
            }
        }
        if let Some(f) = node.get("format").and_then(Value::as_str)
            && !OPENAI_FORMATS.contains(&f)
        {
            node.remove("format");
        }
        if let Some(p) = node.get("pattern").and_then(Value::as_str)
            && ["(?=", "(?!", "(?<=", "(?<!"].iter().any(|l| p.contains(l))
            && let Some(p) = node.remove("pattern")
        {
            notes.push(format!("pattern: {p}"));
        }
        if !notes.is_empty() {
            let said = notes.join(", ");
            let text = match node.get("description").and_then(Value::as_str) {
                Some(d) if !d.trim().is_empty() => format!("{} ({said})", d.trim_end()),
                _ => format!("({said})"),
            };
            node.insert("description".into(), Value::String(text));
        }
        if let Some(value) = node.remove("const") {
            node.insert("enum".into(), json!([value]));
        }
        if !node.contains_key("type")
            && let Some(ty) = node
                .get("enum")
                .and_then(Value::as_array)
                .and_then(|v| enum_type(v))
        {
            node.insert("type".into(), ty);
        }
        if let Some(branches) = node.remove("oneOf") {
            node.insert("anyOf".into(), branches);
        }
        // A `$ref` beside other keywords: strict mode takes siblings beside
        // `anyOf` only.
        if node.len() > 1
            && let Some(r) = node.remove("$ref")
        {
            let mut branches = vec![json!({ "$ref": r })];
            if let Some(Value::Array(more)) = node.remove("anyOf") {
                branches.extend(more);
            }
            node.insert("anyOf".into(), Value::Array(branches));
        }

        for key in ["$defs", "definitions"] {
            if let Some(Value::Object(defs)) = node.get_mut(key) {
                for (name, def) in defs.iter_mut() {
                    self.strict(def, &format!("{at}/{key}/{name}"), false, 0)?;
                }
            }
        }
        if let Some(Value::Array(branches)) = node.get_mut("anyOf") {
            for (i, branch) in branches.iter_mut().enumerate() {
                self.strict(branch, &format!("{at}/anyOf/{i}"), false, depth)?;
            }
        }

        let types = types_of(node);
        let is_array = types.contains(&"array");
        let is_object = types.contains(&"object") || node.contains_key("properties");
        if is_array {
            match node.get_mut("items") {
                Some(items) if is_typed(items) => {
                    self.strict(items, &format!("{at}/items"), false, depth)?;
                }
                _ => {
                    return Err(format!(
                        "at {here}: an array needs `items` with a type in OpenAI strict mode"
                    ));
                }
            }
        }
        if is_object {
            if depth >= MAX_OBJECT_DEPTH {
                return Err(format!(
                    "at {here}: objects nest deeper than the {MAX_OBJECT_DEPTH} levels OpenAI strict mode takes"
                ));
            }
            self.close(node, at, here, root, depth)?;
        }
        Ok(())
    }

    /// Close an object: no undeclared keys, every property required, the
    /// optional ones nullable.
    fn close(
        &mut self,
        node: &mut Map<String, Value>,
        at: &str,
        here: &str,
        root: bool,
        depth: usize,
    ) -> Result<(), String> {
        let declared = node
            .get("properties")
            .and_then(Value::as_object)
            .is_some_and(|p| !p.is_empty());
        match node.get("additionalProperties") {
            None | Some(Value::Bool(false)) => {}
            Some(_) => {
                return Err(format!(
                    "at {here}: an object with undeclared keys (`additionalProperties`) has no strict form; make it an array of {{key, value}} pairs"
                ));
            }
        }
        // An object that declares nothing and does not say it is closed
        // takes any keys; the root alone means "no arguments".
        if !declared && !root && node.get("additionalProperties") != Some(&Value::Bool(false)) {
            return Err(format!(
                "at {here}: an object that declares no properties may hold any keys and has no strict form"
            ));
        }
        node.insert("additionalProperties".into(), Value::Bool(false));
        node.entry("type").or_insert_with(|| json!("object"));
        let required: Vec<String> = node
            .get("required")
            .and_then(Value::as_array)
            .map(|names| {
                names
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let properties = node
            .entry("properties")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .ok_or_else(|| format!("at {here}: `properties` is not an object"))?;
        self.properties += properties.len();
        let mut all = Vec::with_capacity(properties.len());
        for (name, property) in properties.iter_mut() {
            self.strict(
                property,
                &format!("{at}/properties/{name}"),
                false,
                depth + 1,
            )?;
            if !required.contains(name) {
                nullable(property);
            }
            all.push(Value::String(name.clone()));
        }
        node.insert("required".into(), Value::Array(all));
        Ok(())
    }
}

/// Let a property be `null` too: a strict-mode model sends `null` for an
/// argument it leaves out.
fn nullable(property: &mut Value) {
    let Some(node) = property.as_object_mut() else {
        return;
    };
    let null_type = json!("null");
    if accepts_null(node) {
        return;
    }
    if node.contains_key("enum") || node.contains_key("$ref") {
        let description = node.remove("description");
        let inner = Value::Object(std::mem::take(node));
        node.insert("anyOf".into(), json!([inner, { "type": "null" }]));
        if let Some(description) = description {
            node.insert("description".into(), description);
        }
        return;
    }
    match node.get_mut("type") {
        Some(Value::String(ty)) => {
            let ty = json!(ty);
            node.insert("type".into(), Value::Array(vec![ty, null_type]));
        }
        Some(Value::Array(types)) => types.push(null_type),
        _ => {
            if let Some(Value::Array(branches)) = node.get_mut("anyOf") {
                branches.push(json!({ "type": "null" }));
            }
        }
    }
}

/// Whether a schema's own `type`, `enum` or `anyOf` already lets `null` in.
fn accepts_null(node: &Map<String, Value>) -> bool {
    let null_type = json!("null");
    let by_type = match node.get("type") {
        Some(Value::String(t)) => t == "null",
        Some(Value::Array(ts)) => ts.contains(&null_type),
        _ => false,
    };
    let by_enum = node
        .get("enum")
        .and_then(Value::as_array)
        .is_some_and(|v| v.contains(&Value::Null));
    let by_branch = node
        .get("anyOf")
        .and_then(Value::as_array)
        .is_some_and(|b| b.iter().any(|b| b.as_object().is_some_and(accepts_null)));
    by_type || by_enum || by_branch
}

/// The types a schema names in `type`.
fn types_of(node: &Map<String, Value>) -> Vec<&str> {
    match node.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// Whether an `items` schema gives its elements a type.
fn is_typed(items: &Value) -> bool {
    ["type", "$ref", "anyOf", "oneOf", "enum", "const"]
        .iter()
        .any(|k| items.get(k).is_some())
}

/// The `type` of an `enum` with these values, or `None` if one is an array
/// or object.
fn enum_type(values: &[Value]) -> Option<Value> {
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
    if types.contains(&"number") {
        types.retain(|t| *t != "integer");
    }
    match types.as_slice() {
        [] => None,
        [one] => Some(json!(one)),
        many => Some(json!(many)),
    }
}

/// One line per keyword of `schema` that OpenAI strict mode or Gemini
/// refuse, or that a strict-mode client would change the meaning of: where
/// (a JSON pointer), which keyword, which API, and what to do.
pub fn warnings(schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    warn(schema, "", true, &mut out);
    out
}

fn warn(schema: &Value, at: &str, root: bool, out: &mut Vec<String>) {
    let here = if at.is_empty() { "/" } else { at };
    let Some(node) = schema.as_object() else {
        return;
    };
    let mut say = |keyword: &str, api: &str, what: &str| {
        out.push(format!("{here}: `{keyword}`: {api}: {what}"));
    };
    for key in OPENAI_REFUSED {
        if node.contains_key(*key) {
            say(
                key,
                "OpenAI strict mode",
                "refused; say it in the description",
            );
        }
    }
    for key in OPENAI_UNSUPPORTED {
        if node.contains_key(*key) {
            say(
                key,
                "OpenAI strict mode",
                "refused, with no strict equivalent",
            );
        }
    }
    if node.contains_key("default") {
        say(
            "default",
            "OpenAI strict mode",
            "refused; say the default in the description",
        );
    }
    if node.contains_key("oneOf") {
        say("oneOf", "OpenAI strict mode", "refused; use anyOf");
    }
    for key in GEMINI_REFUSED {
        if node.contains_key(*key) {
            say(key, "Gemini", "not in its schema subset");
        }
    }
    let types = types_of(node);
    if let Some(f) = node.get("format").and_then(Value::as_str) {
        if !OPENAI_FORMATS.contains(&f) {
            say(
                "format",
                "OpenAI strict mode",
                &format!("`{f}` is refused; drop it"),
            );
        }
        if !types.iter().any(|t| gemini_formats(t).contains(&f)) {
            say("format", "Gemini", &format!("`{f}` is refused"));
        }
    }
    if let Some(values) = node.get("enum").and_then(Value::as_array) {
        if !node.contains_key("type") {
            say("enum", "Gemini", "an enum needs a `type`");
        }
        if values.iter().any(|v| !v.is_string()) {
            say(
                "enum",
                "Gemini",
                "only strings may be enum values; for null use anyOf [.., {\"type\": \"null\"}]",
            );
        }
    }
    let non_null: Vec<&&str> = types.iter().filter(|t| **t != "null").collect();
    if non_null.len() > 1 {
        say(
            "type",
            "Gemini",
            "one type per schema (besides null); use anyOf",
        );
    }
    let is_object = types.contains(&"object") || node.contains_key("properties");
    if is_object {
        let properties = node.get("properties").and_then(Value::as_object);
        let closed = node.get("additionalProperties") == Some(&Value::Bool(false));
        match node.get("additionalProperties") {
            Some(Value::Bool(false)) | None => {}
            Some(_) => {
                say(
                    "additionalProperties",
                    "OpenAI strict mode and Gemini",
                    "an object with undeclared keys is refused; make it an array of {key, value} pairs",
                );
            }
        }
        if properties.is_none_or(Map::is_empty) {
            if !closed {
                say(
                    "properties",
                    "OpenAI strict mode",
                    "an object that declares no properties may hold any keys (openai-agents refuses it); add \"additionalProperties\": false",
                );
            }
            say(
                "properties",
                "Gemini",
                if root {
                    "an object with no properties is refused; a client must send no parameters"
                } else {
                    "an object with no properties is refused"
                },
            );
        }
        if !node.contains_key("required") {
            say(
                "required",
                "OpenAI strict mode",
                "missing; clients that check strictness (pydantic-ai) fall back to non-strict; add \"required\": []",
            );
        }
        let required: Vec<&str> = node
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for (name, property) in properties.into_iter().flatten() {
            if !required.contains(&name.as_str())
                && property.as_object().is_some_and(|p| !accepts_null(p))
            {
                out.push(format!(
                    "{at}/properties/{name}: optional but not nullable: OpenAI strict mode: a strict client makes it required, so the model cannot leave it out; let it be null"
                ));
            }
        }
    }
    for key in ["items", "additionalProperties", "not"] {
        if let Some(child) = node.get(key) {
            warn(child, &format!("{at}/{key}"), false, out);
        }
    }
    for key in ["anyOf", "oneOf", "allOf", "prefixItems"] {
        if let Some(Value::Array(children)) = node.get(key) {
            for (i, child) in children.iter().enumerate() {
                warn(child, &format!("{at}/{key}/{i}"), false, out);
            }
        }
    }
    for key in ["properties", "$defs", "definitions"] {
        if let Some(Value::Object(children)) = node.get(key) {
            for (name, child) in children {
                warn(child, &format!("{at}/{key}/{name}"), false, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `audit_log` of rust-audit before this module existed: an open-ended
    /// object, length keywords, a default, optional properties not nullable.
    fn old_audit_log() -> Value {
        json!({
            "type": "object",
            "properties": {
                "event": { "type": "string", "minLength": 1, "maxLength": 500,
                           "description": "What happened, in a sentence." },
                "level": { "type": "string", "enum": ["info", "warn", "error"], "default": "info" },
                "fields": { "type": "object", "additionalProperties": { "type": "string" },
                            "description": "Extra details as name-value pairs of strings." }
            },
            "required": ["event"]
        })
    }

    /// `audit_log` as rust-audit declares it now.
    fn audit_log() -> Value {
        json!({
            "type": "object",
            "properties": {
                "event": { "type": "string",
                           "description": "What happened, in a sentence of 1 to 500 characters." },
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
                        "properties": { "key": { "type": "string" }, "value": { "type": "string" } },
                        "required": ["key", "value"]
                    },
                    "description": "Extra details, as key-value pairs of strings; each key at most once."
                }
            },
            "required": ["event"]
        })
    }

    /// `csv_group` of python-csv before: an enum without a type, a default.
    fn old_csv_group() -> Value {
        json!({
            "type": "object",
            "properties": {
                "file": { "type": "string" },
                "by": { "type": "string" },
                "column": { "type": "string" },
                "stat": { "enum": ["count", "sum", "mean", "median", "min", "max"], "default": "sum" }
            },
            "required": ["file", "by", "column"]
        })
    }

    /// `primes` of rust-compute as schemars wrote it before: a `uint64`.
    fn old_primes() -> Value {
        json!({
            "type": "object",
            "properties": {
                "limit": { "type": "integer", "format": "uint64", "minimum": 0, "maximum": 100000000 }
            },
            "required": ["limit"]
        })
    }

    fn companion_without_arguments() -> Value {
        json!({ "type": "object", "properties": {} })
    }

    /// Every object in `v` is closed and requires exactly its properties.
    fn assert_strict(v: &Value) {
        if let Some(node) = v.as_object() {
            if node.contains_key("properties") {
                assert_eq!(node["additionalProperties"], false, "{v}");
                let keys: Vec<&String> = node["properties"]
                    .as_object()
                    .expect("map")
                    .keys()
                    .collect();
                let required: Vec<&str> = node["required"]
                    .as_array()
                    .expect("required")
                    .iter()
                    .filter_map(Value::as_str)
                    .collect();
                assert_eq!(keys, required, "{v}");
            }
            for key in [
                "default",
                "minLength",
                "maxLength",
                "oneOf",
                "const",
                "title",
            ] {
                assert!(!node.contains_key(key), "{key} left in {v}");
            }
            node.values().for_each(assert_strict);
        } else if let Some(items) = v.as_array() {
            items.iter().for_each(assert_strict);
        }
    }

    #[test]
    fn an_open_ended_object_is_refused_with_its_place() {
        let err = openai_strict(&old_audit_log()).expect_err("a map has no strict form");
        assert!(err.contains("/properties/fields"), "{err}");
        assert!(err.contains("key, value"), "{err}");
    }

    #[test]
    fn audit_log_converts_and_keeps_its_meaning() {
        let strict = openai_strict(&audit_log()).expect("portable");
        assert_strict(&strict);
        let mut required: Vec<&str> = strict["required"]
            .as_array()
            .expect("required")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        required.sort_unstable();
        assert_eq!(required, ["event", "fields", "level"]);
        // Already nullable: not wrapped twice.
        assert_eq!(
            strict["properties"]["level"]["anyOf"]
                .as_array()
                .map(Vec::len),
            Some(2)
        );
        assert_eq!(
            strict["properties"]["fields"]["type"],
            json!(["array", "null"])
        );
        assert_eq!(
            strict["properties"]["fields"]["items"]["additionalProperties"],
            false
        );
        assert!(
            warnings(&audit_log()).is_empty(),
            "{:?}",
            warnings(&audit_log())
        );
    }

    #[test]
    fn refused_keywords_move_into_the_description() {
        let strict = openai_strict(&old_csv_group()).expect("convertible");
        assert_strict(&strict);
        let stat = &strict["properties"]["stat"];
        assert_eq!(stat["anyOf"][0]["type"], "string", "{stat}");
        assert_eq!(stat["anyOf"][1]["type"], "null", "{stat}");
        assert_eq!(stat["description"], "(default: \"sum\")", "{stat}");

        let mut event = old_audit_log();
        event["properties"]["fields"] = json!({ "type": "string" });
        let strict = openai_strict(&event).expect("convertible");
        assert_eq!(
            strict["properties"]["event"]["description"],
            "What happened, in a sentence. (minLength: 1, maxLength: 500)"
        );
        let primes = openai_strict(&old_primes()).expect("convertible");
        assert!(
            primes["properties"]["limit"].get("format").is_none(),
            "{primes}"
        );
        assert_eq!(primes["properties"]["limit"]["maximum"], 100000000);
    }

    #[test]
    fn a_tool_without_arguments_is_a_closed_empty_object() {
        let strict = openai_strict(&companion_without_arguments()).expect("convertible");
        assert_eq!(
            strict,
            json!({"type": "object", "properties": {}, "additionalProperties": false, "required": []})
        );
        let nested =
            json!({"type": "object", "properties": {"x": {"type": "object"}}, "required": ["x"]});
        assert!(openai_strict(&nested).is_err());
    }

    #[test]
    fn what_has_no_strict_form_is_refused() {
        for schema in [
            json!({"anyOf": [{"type": "object"}, {"type": "null"}]}),
            json!({"type": "array", "items": {"type": "string"}}),
            json!({"type": "object", "properties": {"a": {"type": "array"}}}),
            json!({"type": "object", "properties": {"a": {"allOf": [{"type": "string"}]}}}),
            json!({"type": "object", "properties": {"a": {"$ref": "https://example.invalid/s"}}}),
        ] {
            assert!(openai_strict(&schema).is_err(), "{schema}");
        }
        let mut deep = json!({"type": "string"});
        for _ in 0..12 {
            deep = json!({"type": "object", "properties": {"a": deep}, "required": ["a"]});
        }
        let err = openai_strict(&deep).expect_err("too deep");
        assert!(err.contains("10 levels"), "{err}");
    }

    #[test]
    fn one_of_becomes_any_of_and_refs_with_siblings_are_wrapped() {
        let schema = json!({
            "type": "object",
            "properties": {
                "level": { "$ref": "#/$defs/Level", "description": "How bad." },
                "mode": { "oneOf": [{ "const": "a" }, { "const": "b" }] }
            },
            "required": ["level", "mode"],
            "$defs": { "Level": { "type": "string", "enum": ["info", "warn"] } }
        });
        let strict = openai_strict(&schema).expect("convertible");
        assert_eq!(
            strict["properties"]["level"]["anyOf"][0]["$ref"],
            "#/$defs/Level"
        );
        assert_eq!(
            strict["properties"]["mode"]["anyOf"][1],
            json!({"enum": ["b"], "type": "string"})
        );
    }

    #[test]
    fn warnings_name_the_place_the_keyword_and_the_api() {
        let w = warnings(&old_audit_log());
        let has = |needle: &str| w.iter().any(|l| l.contains(needle));
        assert!(
            has("/properties/event: `minLength`: OpenAI strict mode"),
            "{w:#?}"
        );
        assert!(
            has("/properties/level: `default`: OpenAI strict mode"),
            "{w:#?}"
        );
        assert!(
            has("/properties/fields: `additionalProperties`: OpenAI strict mode and Gemini"),
            "{w:#?}"
        );
        assert!(
            has("/properties/level: optional but not nullable"),
            "{w:#?}"
        );

        let w = warnings(&old_csv_group());
        assert!(
            w.iter()
                .any(|l| l.contains("/properties/stat: `enum`: Gemini: an enum needs a `type`")),
            "{w:#?}"
        );

        let w = warnings(&old_primes());
        assert!(
            w.iter()
                .any(|l| l.contains("`format`: OpenAI strict mode: `uint64`")),
            "{w:#?}"
        );

        let w = warnings(&companion_without_arguments());
        assert!(
            w.iter()
                .any(|l| l.starts_with("/: `required`: OpenAI strict mode")),
            "{w:#?}"
        );
        assert!(
            w.iter().any(|l| l.starts_with("/: `properties`: Gemini")),
            "{w:#?}"
        );
    }
}
