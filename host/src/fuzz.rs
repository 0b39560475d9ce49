//! Fuzz targets for every parser that takes outside input: a plugin's
//! manifest, `toolhost.toml`, a tool's schema (from `describe()`), a call's
//! arguments against its schema, and MCP's JSON-RPC messages.
//!
//! They are [`bolero`] tests: `cargo test` runs each on random inputs for a
//! second (stable Rust, no fuzzing engine), and the same targets run under
//! libFuzzer or AFL with `cargo bolero test` where a nightly toolchain is at
//! hand. Longer runs:
//!
//! ```sh
//! BOLERO_RANDOM_TEST_TIME_MS=600000 cargo test -p toolhost --lib fuzz:: -- --nocapture
//! ```
//!
//! Every target asserts that nothing panics, that each input is handled
//! within [`PER_INPUT`], and that a refusal says what is wrong and where.
//! Inputs are built from the words each parser knows (keys, keywords,
//! methods) as well as from raw text, so that they get past the first
//! syntax check.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bolero::{TypeGenerator, check};
use serde_json::Value;

use crate::bindings::{Delivery, DuplicatePolicy, DuplicateScope, ToolSpec};
use crate::manifest::Manifest;

/// How long one input may take: far more than any takes, so that only a
/// runaway (a hang, an exponential blow-up) trips it.
const PER_INPUT: Duration = Duration::from_secs(5);

/// Run `f` on one input, failing when it takes longer than [`PER_INPUT`].
fn bounded<T>(what: &dyn std::fmt::Debug, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    let took = start.elapsed();
    assert!(took < PER_INPUT, "{took:?} for one input: {what:?}");
    out
}

/// How many inputs a target tried and how many got through to the end, so
/// that a generator that never gets past the first check fails the test.
#[derive(Default)]
struct Tally {
    tried: AtomicUsize,
    through: AtomicUsize,
}

impl Tally {
    fn count(&self, through: bool) {
        self.tried.fetch_add(1, Ordering::Relaxed);
        if through {
            self.through.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn check(&self, what: &str) {
        let (tried, through) = (
            self.tried.load(Ordering::Relaxed),
            self.through.load(Ordering::Relaxed),
        );
        eprintln!("{what}: {through} of {tried} inputs accepted");
        // Judged only on enough inputs: a loaded machine may run few in
        // the second `cargo test` gives a target.
        assert!(
            through > 0 || tried < 2000,
            "{what}: none of {tried} inputs got through"
        );
    }
}

/// A word picked from a vocabulary, or any text.
#[derive(Debug, Clone, TypeGenerator)]
enum Word {
    Known(u8),
    Any(String),
}

impl Word {
    fn pick<'a>(&'a self, vocabulary: &[&'a str]) -> &'a str {
        match self {
            Word::Known(i) => vocabulary[usize::from(*i) % vocabulary.len()],
            Word::Any(s) => s,
        }
    }
}

/// A TOML document as lines of tables and `key = value` pairs.
#[derive(Debug, TypeGenerator)]
struct TomlDoc {
    lines: Vec<TomlLine>,
}

#[derive(Debug, TypeGenerator)]
enum TomlLine {
    Table(Word),
    ArrayTable(Word),
    Pair(Word, TomlValue),
    Raw(String),
}

#[derive(Debug, TypeGenerator)]
enum TomlValue {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(Word),
    Array(Vec<Word>),
    Inline(Vec<(Word, Word)>),
}

impl TomlDoc {
    fn render(&self, tables: &[&str], keys: &[&str], strings: &[&str]) -> String {
        let quote = |w: &Word| toml_string(w.pick(strings));
        let mut text = String::new();
        for line in &self.lines {
            match line {
                TomlLine::Table(t) => text.push_str(&format!("[{}]", t.pick(tables))),
                TomlLine::ArrayTable(t) => text.push_str(&format!("[[{}]]", t.pick(tables))),
                TomlLine::Raw(s) => text.push_str(s),
                TomlLine::Pair(k, v) => {
                    let value = match v {
                        TomlValue::Int(n) => n.to_string(),
                        TomlValue::Float(f) => format!("{f:?}"),
                        TomlValue::Bool(b) => b.to_string(),
                        TomlValue::Str(w) => quote(w),
                        TomlValue::Array(ws) => {
                            format!("[{}]", ws.iter().map(quote).collect::<Vec<_>>().join(", "))
                        }
                        TomlValue::Inline(pairs) => format!(
                            "{{ {} }}",
                            pairs
                                .iter()
                                .map(|(k, v)| format!("{} = {}", k.pick(keys), quote(v)))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    };
                    text.push_str(&format!("{} = {value}", k.pick(keys)));
                }
            }
            text.push('\n');
        }
        text
    }
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

const LIMIT_KEYS: &[&str] = &[
    "fuel",
    "memory",
    "timeout",
    "max-concurrency",
    "cancel-grace",
    "updates",
    "update-size",
    "result-size",
    "log",
    "metering",
];

const VALUES: &[&str] = &[
    "1 MiB",
    "64KiB",
    "1e30 GiB",
    "-1",
    "10s",
    "5m",
    "-1s",
    "99999999999999999999h",
    "127.0.0.1:80",
    "localhost:9",
    "[::1]:80",
    "a.example:0",
    ":80",
    "host:99999",
    "/data",
    ".",
    "..",
    "/",
    "relative",
    "allow",
    "reject",
    "replace",
    "confirm",
    "queue",
    "name",
    "name-and-arguments",
    "HOME",
    "A=B",
    "",
    "{tool} {call_id}",
    "{unknown}",
    "{",
    "release",
    "final",
    "fuel",
    "epoch",
];

/// A refusal of a TOML file names where (a line and column) or what (the key).
fn names_where(message: &str, keys: &[&str]) -> bool {
    !message.is_empty()
        && !message.contains('\n')
        && (message.starts_with("line ") || keys.iter().any(|k| message.starts_with(k)))
}

#[test]
fn manifest() {
    let base = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(base.path().join("data")).expect("dir");
    let tables = [
        "limits",
        "permissions",
        "permissions.dirs",
        "tools",
        "tools.t",
        "tools.other",
        "other",
    ];
    let keys: Vec<&str> = LIMIT_KEYS
        .iter()
        .copied()
        .chain([
            "env",
            "dirs",
            "network",
            "host",
            "guest",
            "write",
            "on-duplicate",
            "duplicate-scope",
            "enabled",
        ])
        .collect();
    let tally = Tally::default();
    check!().with_type::<TomlDoc>().for_each(|doc| {
        let text = doc.render(&tables, &keys, VALUES);
        let parsed = bounded(&text, || Manifest::parse(&text, base.path()));
        tally.count(parsed.is_ok());
        match parsed {
            Err(e) => assert!(
                names_where(&e, &["limits.", "permissions.", "tools."]),
                "{e:?} for {text:?}"
            ),
            Ok(m) => {
                // What was accepted is what a later load will read back.
                for g in &m.permissions.network {
                    let again = Manifest::parse(
                        &format!(
                            "[permissions]\nnetwork = [{}]\n",
                            toml_string(&g.to_string())
                        ),
                        base.path(),
                    );
                    assert_eq!(
                        again.map(|m| m.permissions.network),
                        Ok(vec![g.clone()]),
                        "{text:?}"
                    );
                }
                for d in &m.permissions.dirs {
                    assert!(d.host.is_absolute() && d.guest.starts_with('/'), "{d:?}");
                }
            }
        }
    });
    tally.check("structured manifests");
    check!().with_type::<String>().for_each(|text| {
        if let Err(e) = bounded(text, || Manifest::parse(text, base.path())) {
            assert!(
                names_where(&e, &["limits.", "permissions.", "tools."]),
                "{e:?} for {text:?}"
            );
        }
    });
}

#[test]
fn host_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("toolhost.toml");
    let tables = ["limits", "templates", "profiles.p", "profiles", "other"];
    let keys: Vec<&str> = LIMIT_KEYS
        .iter()
        .copied()
        .chain([
            "update",
            "progress",
            "result",
            "error",
            "cancelled",
            "started",
            "reject",
            "confirm",
            "queued",
            "reply",
            "tools",
            "exclude",
            "answer",
        ])
        .collect();
    let tally = Tally::default();
    let check_file = |text: &str| {
        std::fs::write(&path, text).expect("write toolhost.toml");
        let loaded = bounded(&text, || crate::HostConfig::load_file(&path));
        tally.count(loaded.is_ok());
        if let Err(e) = loaded {
            assert_eq!(e.path, path);
            assert!(
                names_where(&e.message, &["limits.", "templates"]),
                "{:?} for {text:?}",
                e.message
            );
        }
    };
    check!()
        .with_type::<TomlDoc>()
        .for_each(|doc| check_file(&doc.render(&tables, &keys, VALUES)));
    tally.check("structured toolhost.toml files");
    check!()
        .with_type::<String>()
        .for_each(|text| check_file(text));
}

/// JSON built by a few steps, nested at most [`JsonOps::MAX_DEPTH`] deep.
#[derive(Debug, TypeGenerator)]
struct JsonOps {
    ops: Vec<JsonOp>,
}

#[derive(Debug, TypeGenerator)]
enum JsonOp {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Word),
    /// Open an array.
    Array,
    /// Open an object; values go under keys picked in turn.
    Object(Vec<Word>),
    Close,
}

impl JsonOps {
    const MAX_DEPTH: usize = 8;

    fn build(&self, words: &[&str]) -> Value {
        // Each open container, with the keys still to use for an object.
        let mut stack: Vec<(Value, Vec<String>)> = vec![(Value::Array(Vec::new()), Vec::new())];
        fn put(stack: &mut [(Value, Vec<String>)], v: Value) {
            let Some((top, keys)) = stack.last_mut() else {
                return;
            };
            match top {
                Value::Array(items) => items.push(v),
                Value::Object(map) => {
                    let key = keys.pop().unwrap_or_else(|| format!("k{}", map.len()));
                    map.insert(key, v);
                }
                _ => {}
            }
        }
        for op in &self.ops {
            let v = match op {
                JsonOp::Null => Value::Null,
                JsonOp::Bool(b) => Value::Bool(*b),
                JsonOp::Int(n) => Value::from(*n),
                JsonOp::Float(f) => {
                    serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
                }
                JsonOp::Str(w) => Value::String(w.pick(words).to_owned()),
                JsonOp::Array | JsonOp::Object(_) if stack.len() > Self::MAX_DEPTH => continue,
                JsonOp::Array => {
                    stack.push((Value::Array(Vec::new()), Vec::new()));
                    continue;
                }
                JsonOp::Object(keys) => {
                    let keys = keys
                        .iter()
                        .rev()
                        .map(|k| k.pick(words).to_owned())
                        .collect();
                    stack.push((Value::Object(Default::default()), keys));
                    continue;
                }
                JsonOp::Close if stack.len() > 1 => {
                    let (v, _) = stack.pop().unwrap_or((Value::Null, Vec::new()));
                    v
                }
                JsonOp::Close => continue,
            };
            put(&mut stack, v);
        }
        while stack.len() > 1 {
            let (v, _) = stack.pop().unwrap_or((Value::Null, Vec::new()));
            put(&mut stack, v);
        }
        let (root, _) = stack.pop().unwrap_or((Value::Null, Vec::new()));
        // The first value built, or the whole list when there are several.
        match root {
            Value::Array(mut items) if items.len() == 1 => items.remove(0),
            other => other,
        }
    }
}

/// The words of JSON Schema, and the names in the schemas below.
const SCHEMA_WORDS: &[&str] = &[
    "type",
    "object",
    "string",
    "integer",
    "number",
    "array",
    "boolean",
    "null",
    "properties",
    "required",
    "items",
    "prefixItems",
    "$ref",
    "#",
    "#/$defs/a",
    "#/$defs/b",
    "#/definitions/a",
    "#/properties/text",
    "$defs",
    "definitions",
    "a",
    "b",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
    "enum",
    "const",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "multipleOf",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "uniqueItems",
    "contains",
    "pattern",
    "(a+)+$",
    "^[a-z]*$",
    "format",
    "date-time",
    "email",
    "uri",
    "regex",
    "additionalProperties",
    "patternProperties",
    "propertyNames",
    "dependentSchemas",
    "dependentRequired",
    "unevaluatedProperties",
    "default",
    "$id",
    "$anchor",
    "$dynamicRef",
    "text",
    "n",
    "children",
    "confirm_duplicate",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!",
];

/// No compile cache: every schema is compiled when checked.
fn no_cache() -> crate::engine::CompileCache {
    crate::engine::CompileCache::new(None, String::new())
}

fn spec(name: &str, input_schema: String, policy: DuplicatePolicy) -> ToolSpec {
    ToolSpec {
        name: name.to_owned(),
        description: "fuzzed".to_owned(),
        input_schema,
        output_schema: None,
        on_duplicate: policy,
        duplicate_scope: DuplicateScope::NameAndArguments,
        cancellable: true,
        delivery: Delivery::Conversational,
    }
}

/// Tools with real schemas: flat, bounded numbers, a recursive tree, a
/// `confirm` policy.
/// (Unwind safe: a tool is only read.)
fn known_tools() -> AssertUnwindSafe<Vec<std::sync::Arc<crate::Tool>>> {
    let schemas = [
        r#"{"type":"object","properties":{"text":{"type":"string"}},"required":["text"]}"#,
        r#"{"type":"object","properties":{"n":{"type":"integer","minimum":0,"maximum":100,"default":3},"text":{"type":"string","maxLength":8,"pattern":"^[a-z]*$"}},"additionalProperties":false}"#,
        r##"{"type":"object","properties":{"children":{"type":"array","items":{"$ref":"#"}},"a":{"$ref":"#/$defs/a"}},"$defs":{"a":{"anyOf":[{"type":"string","format":"email"},{"type":"array","items":{"$ref":"#/$defs/a"}}]}}}"##,
        r#"{"type":"object","properties":{"text":{"enum":["a","b"]},"when":{"type":"string","format":"date-time"}}}"#,
    ];
    let specs = schemas
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let policy = if i == 3 {
                DuplicatePolicy::Confirm
            } else {
                DuplicatePolicy::Allow
            };
            spec(&format!("tool{i}"), (*s).to_owned(), policy)
        })
        .collect();
    AssertUnwindSafe(
        crate::plugin::check_tools(specs, &Manifest::default(), &no_cache())
            .expect("the known schemas load"),
    )
}

/// Arguments through the host's path: parse, strip `confirm_duplicate`,
/// validate; an accepted value is an object the schema accepts, and its
/// duplicate key is canonical. Whether they were accepted.
fn check_arguments(tool: &crate::Tool, text: &str) -> bool {
    match bounded(&text, || crate::arguments::prepare(tool, text)) {
        Err(crate::CallError::InvalidArguments {
            tool: name,
            message,
        }) => {
            assert_eq!(name, tool.name);
            assert!(!message.is_empty(), "{text:?}");
            false
        }
        Err(other) => panic!("{other:?} for {text:?}"),
        Ok(crate::arguments::Prepared { args, .. }) => {
            assert!(
                args.is_object() && tool.validator().expect("built").is_valid(&args),
                "{text:?}"
            );
            let key = crate::arguments::duplicate_key(&tool.input_schema, &args);
            let again: Value = serde_json::from_str(&key).expect("a duplicate key is JSON");
            assert_eq!(
                crate::arguments::duplicate_key(&tool.input_schema, &again),
                key,
                "{text:?}"
            );
            true
        }
    }
}

#[test]
fn arguments() {
    let tools = known_tools();
    let tally = Tally::default();
    check!()
        .with_type::<(u8, JsonOps)>()
        .for_each(|(which, ops)| {
            let tool = &tools[usize::from(*which) % tools.len()];
            tally.count(check_arguments(tool, &ops.build(SCHEMA_WORDS).to_string()));
        });
    tally.check("structured arguments");
    check!()
        .with_type::<(u8, String)>()
        .for_each(|(which, text)| {
            let tool = &tools[usize::from(*which) % tools.len()];
            check_arguments(tool, text);
        });
}

#[test]
fn schemas() {
    let tally = Tally::default();
    check!()
        .with_type::<(JsonOps, JsonOps)>()
        .for_each(|(schema, instance)| {
            let mut schema = schema.build(SCHEMA_WORDS);
            // Mostly object schemas, so that most get past the first check.
            if let Value::Object(map) = &mut schema {
                map.entry("type").or_insert_with(|| "object".into());
            }
            let text = schema.to_string();
            let loaded = bounded(&text, || {
                crate::plugin::check_tools(
                    vec![spec("fuzzed", text.clone(), DuplicatePolicy::Allow)],
                    &Manifest::default(),
                    &no_cache(),
                )
            });
            tally.count(loaded.is_ok());
            match loaded {
                Err(crate::LoadErrorKind::InvalidTool { tool, problem }) => {
                    assert_eq!(tool, "fuzzed");
                    assert!(problem.starts_with("input schema"), "{problem}");
                }
                Err(other) => panic!("{other:?} for {text}"),
                // A schema that loads validates any arguments in bounded time.
                Ok(tools) => {
                    let instance = instance.build(SCHEMA_WORDS);
                    let args = if instance.is_object() {
                        instance
                    } else {
                        serde_json::json!({ "text": instance, "children": [instance] })
                    };
                    check_arguments(&tools[0], &args.to_string());
                }
            }
        });
    tally.check("schemas");
}

/// A JSON-RPC message as a client could send it: mostly well formed, with
/// any part of it replaced at times.
#[derive(Debug, TypeGenerator)]
struct RpcMessage {
    /// Another `jsonrpc` version than "2.0", or none at all.
    odd_version: Option<Option<String>>,
    id: Option<RpcId>,
    method: Method,
    name: Word,
    arguments: Option<JsonOps>,
    /// Params other than `{name, arguments}`.
    odd_params: Option<JsonOps>,
}

#[derive(Debug, TypeGenerator)]
enum RpcId {
    Number(i64),
    Text(String),
    Json(JsonOps),
}

#[derive(Debug, TypeGenerator)]
enum Method {
    CallTool,
    Known(u8),
    Any(String),
}

const METHODS: &[&str] = &[
    "initialize",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "ping",
    "tools/list",
    "tools/call",
    "tasks/get",
    "tasks/list",
    "tasks/cancel",
    "tasks/result",
    "resources/list",
    "prompts/list",
    "logging/setLevel",
    "completion/complete",
];

/// What the MCP server does with a client's line: rmcp parses it as a
/// [`rmcp::model::ClientJsonRpcMessage`]; a `tools/call` request's
/// arguments become the host's arguments text for the tool it names.
/// Whether the line got that far.
fn check_mcp_line(line: &[u8], tools: &[std::sync::Arc<crate::Tool>]) -> bool {
    use rmcp::model::{ClientJsonRpcMessage, ClientRequest, JsonRpcMessage};
    let parsed = bounded(&String::from_utf8_lossy(line), || {
        serde_json::from_slice::<ClientJsonRpcMessage>(line)
    });
    let Ok(JsonRpcMessage::Request(request)) = parsed else {
        return false;
    };
    if let ClientRequest::CallToolRequest(call) = &request.request {
        let arguments = call
            .params
            .arguments
            .clone()
            .map(|a| Value::Object(a).to_string())
            .unwrap_or_default();
        if let Some(tool) = tools.iter().find(|t| t.name == call.params.name) {
            check_arguments(tool, &arguments);
            return true;
        }
    }
    false
}

#[test]
fn mcp_messages() {
    let tools = known_tools();
    let tally = Tally::default();
    check!().with_type::<RpcMessage>().for_each(|m| {
        let mut message = serde_json::Map::new();
        match &m.odd_version {
            None => _ = message.insert("jsonrpc".into(), "2.0".into()),
            Some(Some(v)) => _ = message.insert("jsonrpc".into(), v.as_str().into()),
            Some(None) => {}
        }
        if let Some(id) = &m.id {
            let id = match id {
                RpcId::Number(n) => Value::from(*n),
                RpcId::Text(t) => Value::from(t.as_str()),
                RpcId::Json(j) => j.build(SCHEMA_WORDS),
            };
            message.insert("id".into(), id);
        }
        let method = match &m.method {
            Method::CallTool => "tools/call",
            Method::Known(i) => METHODS[usize::from(*i) % METHODS.len()],
            Method::Any(s) => s,
        };
        message.insert("method".into(), method.into());
        let params = match &m.odd_params {
            Some(p) => p.build(SCHEMA_WORDS),
            None => {
                let mut p = serde_json::Map::new();
                let name = m.name.pick(&["tool0", "tool1", "tool2", "tool3"]);
                p.insert("name".into(), name.into());
                if let Some(a) = &m.arguments {
                    p.insert("arguments".into(), a.build(SCHEMA_WORDS));
                }
                Value::Object(p)
            }
        };
        message.insert("params".into(), params);
        tally.count(check_mcp_line(
            Value::Object(message).to_string().as_bytes(),
            &tools,
        ));
    });
    tally.check("structured MCP messages, as tools/call requests");
    check!().for_each(|bytes| {
        check_mcp_line(bytes, &tools);
    });
}

/// Found by `arguments`: without serde_json's `float_roundtrip`, this
/// number read back from its own JSON was another number, so a plugin got
/// an argument the client did not send, and a duplicate key changed when
/// read again.
#[test]
fn a_float_argument_reads_back_as_itself() {
    let tools = known_tools();
    for text in [
        r#"{"k0": 1.0482767989361088e-303}"#,
        r#"{"text": [-3.333505506513734e-197, 6.132150391078644e-234]}"#,
    ] {
        let arg: Value = serde_json::from_str(text).expect("JSON");
        let again: Value = serde_json::from_str(&arg.to_string()).expect("JSON");
        assert_eq!(arg, again, "{text}");
        assert!(check_arguments(&tools[2], text), "{text}");
    }
}
