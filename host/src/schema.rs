//! The checks a tool's JSON Schema passes before a validator is built from
//! it, so that validating a call's arguments or result is bounded by the
//! schema's size and the data's, whatever schema a plugin declares:
//! - its text is at most [`MAX_SCHEMA_BYTES`];
//! - every `$ref` points inside the schema (`#` or a JSON pointer `#/...`)
//!   at something there; anchors, dynamic and recursive references are
//!   refused;
//! - no cycle of references applies in place: `a` is `{"$ref": "#/$defs/b"}`
//!   and `b` is `{"$ref": "#/$defs/a"}`, or the same through `allOf`,
//!   `anyOf`, `oneOf`, `not`, `if`/`then`/`else` or `dependentSchemas`,
//!   never reaches the data, and a validator would follow it without end;
//! - with every reference replaced by what it points at, the schema has at
//!   most [`MAX_EXPANDED`] subschemas. A schema of a few hundred bytes
//!   whose definitions each refer twice to the one before doubles with
//!   each: a validator walks every copy, for every value it checks.
//!
//! A recursive schema is fine when each turn of the recursion descends into
//! the data (a tree whose `children` items refer back to the node): the
//! data's depth bounds it, and the expansion counts the turn once.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

/// The largest schema text a tool may declare, in bytes (input and output
/// schema each).
pub(crate) const MAX_SCHEMA_BYTES: usize = 256 * 1024;

/// The most subschemas a schema may have with its references expanded.
pub(crate) const MAX_EXPANDED: u64 = 10_000;

/// The deepest a schema's subschemas may nest, references followed.
pub(crate) const MAX_DEPTH: usize = 128;

fn too_deep() -> String {
    format!("its subschemas nest, with its $ref references followed, more than {MAX_DEPTH} deep")
}

/// Keywords whose value is one subschema, and whether it applies to the
/// same value as the schema that holds it (in place).
const ONE: &[(&str, bool)] = &[
    ("not", true),
    ("if", true),
    ("then", true),
    ("else", true),
    ("items", false),
    ("additionalItems", false),
    ("additionalProperties", false),
    ("propertyNames", false),
    ("contains", false),
    ("unevaluatedItems", false),
    ("unevaluatedProperties", false),
    ("contentSchema", false),
];
/// Keywords whose value is an array of subschemas.
const MANY: &[(&str, bool)] = &[
    ("allOf", true),
    ("anyOf", true),
    ("oneOf", true),
    ("prefixItems", false),
    ("items", false),
];
/// Keywords whose value maps names to subschemas. Definitions apply only
/// where a reference takes them.
const NAMED: &[(&str, bool)] = &[
    ("properties", false),
    ("patternProperties", false),
    ("dependentSchemas", true),
    ("dependencies", true),
];
const DEFINITIONS: &[&str] = &["$defs", "definitions"];
/// Ways of referring that are not a pointer into the schema itself.
const REFUSED: &[&str] = &[
    "$anchor",
    "$dynamicAnchor",
    "$dynamicRef",
    "$recursiveRef",
    "$recursiveAnchor",
];

/// Why a schema cannot be served, in one line; `None` when it can.
pub(crate) fn problem(schema: &Value) -> Option<String> {
    let mut check = Check {
        root: schema,
        seen: HashSet::new(),
        targets: Vec::new(),
        targeted: HashSet::new(),
    };
    if let Err(problem) = check.walk(schema, 0) {
        return Some(problem);
    }
    // In-place cycles, from the root and from every target of a reference.
    let mut done = HashSet::new();
    for (start, name) in std::iter::once((schema, "#")).chain(check.targets.iter().copied()) {
        let mut path = vec![(id(start), name)];
        match in_place_cycle(schema, start, &mut path, &mut done) {
            None => {}
            Some(Ok(cycle)) => {
                return Some(format!(
                    "its $ref references form a cycle that never reaches the data ({cycle})"
                ));
            }
            Some(Err(problem)) => return Some(problem),
        }
    }
    let size = expanded(schema, schema, &mut Vec::new(), &mut HashMap::new());
    if size == u64::MAX {
        return Some(too_deep());
    }
    if size > MAX_EXPANDED {
        return Some(format!(
            "with its $ref references expanded it has more than {MAX_EXPANDED} subschemas, \
             which every value checked against it would go through"
        ));
    }
    None
}

fn id(v: &Value) -> *const Value {
    v
}

/// What a `$ref` in the schema `root` points at.
fn resolve<'a>(root: &'a Value, reference: &str) -> Result<&'a Value, String> {
    let outside = || format!("`$ref` {reference:?} is not a pointer into the schema (\"#/...\")");
    let fragment = reference.strip_prefix('#').ok_or_else(outside)?;
    let pointer = percent_encoding::percent_decode_str(fragment)
        .decode_utf8()
        .map_err(|_| outside())?;
    if pointer.is_empty() {
        return Ok(root);
    }
    if !pointer.starts_with('/') {
        return Err(outside());
    }
    root.pointer(&pointer)
        .filter(|v| v.is_object() || v.is_boolean())
        .ok_or_else(|| format!("`$ref` {reference:?} points at no schema in the schema"))
}

/// The subschemas `schema` applies, each with whether it applies in place.
fn applied(schema: &Value) -> impl Iterator<Item = (&Value, bool)> {
    let obj = schema.as_object();
    let one = ONE
        .iter()
        .filter_map(move |(k, in_place)| Some((obj?.get(*k)?, *in_place)))
        .filter(|(v, _)| !v.is_array());
    let many = MANY.iter().flat_map(move |(k, in_place)| {
        let items = obj.and_then(|o| o.get(*k)).and_then(Value::as_array);
        items.into_iter().flatten().map(|v| (v, *in_place))
    });
    let named = NAMED.iter().flat_map(move |(k, in_place)| {
        let map = obj.and_then(|o| o.get(*k)).and_then(Value::as_object);
        map.into_iter()
            .flat_map(|m| m.values())
            .map(|v| (v, *in_place))
    });
    one.chain(many)
        .chain(named)
        .filter(|(v, _)| v.is_object() || v.is_boolean())
}

struct Check<'a> {
    root: &'a Value,
    seen: HashSet<*const Value>,
    /// Each distinct target of a reference, with the reference.
    targets: Vec<(&'a Value, &'a str)>,
    targeted: HashSet<*const Value>,
}

impl<'a> Check<'a> {
    /// Check the keywords of `schema` and of everything it holds or refers
    /// to, once each.
    fn walk(&mut self, schema: &'a Value, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(too_deep());
        }
        if !self.seen.insert(id(schema)) {
            return Ok(());
        }
        let Some(obj) = schema.as_object() else {
            return Ok(());
        };
        if let Some(k) = REFUSED.iter().find(|k| obj.contains_key(**k)) {
            return Err(format!(
                "`{k}` is not supported: refer with `$ref` and a pointer (\"#/$defs/NAME\")"
            ));
        }
        if depth > 0 && obj.contains_key("$id") {
            return Err("`$id` is supported only at the schema's root".into());
        }
        if let Some(r) = obj.get("$ref") {
            let r = r.as_str().ok_or("`$ref` is not a string")?;
            let target = resolve(self.root, r)?;
            if self.targeted.insert(id(target)) {
                self.targets.push((target, r));
            }
            self.walk(target, depth + 1)?;
        }
        let defs = DEFINITIONS.iter().filter_map(|k| obj.get(*k)?.as_object());
        for def in defs.flat_map(|m| m.values()) {
            self.walk(def, depth + 1)?;
        }
        for (sub, _) in applied(schema) {
            self.walk(sub, depth + 1)?;
        }
        Ok(())
    }
}

/// A cycle of in-place references from the last schema of `path`, named by
/// the references on it (or a path too deep to follow); `done` holds the
/// schemas already found to have none.
fn in_place_cycle<'a>(
    root: &'a Value,
    schema: &'a Value,
    path: &mut Vec<(*const Value, &'a str)>,
    done: &mut HashSet<*const Value>,
) -> Option<Result<String, String>> {
    if done.contains(&id(schema)) {
        return None;
    }
    let reference = schema.get("$ref").and_then(Value::as_str);
    let next = reference
        .and_then(|r| Some((resolve(root, r).ok()?, r)))
        .into_iter()
        .chain(
            applied(schema)
                .filter(|(_, in_place)| *in_place)
                .map(|(sub, _)| (sub, "")),
        );
    for (sub, name) in next {
        if let Some(at) = path.iter().position(|(n, _)| *n == id(sub)) {
            let mut names: Vec<&str> = path[at..].iter().map(|(_, n)| *n).collect();
            names.push(name);
            names.retain(|n| !n.is_empty());
            return Some(Ok(names.join(" → ")));
        }
        if path.len() > MAX_DEPTH {
            return Some(Err(too_deep()));
        }
        path.push((id(sub), name));
        let cycle = in_place_cycle(root, sub, path, done);
        path.pop();
        if cycle.is_some() {
            return cycle;
        }
    }
    done.insert(id(schema));
    None
}

/// How many subschemas `schema` has with its references expanded, a turn
/// of recursion (a reference back to a schema being expanded) counted once.
/// Past [`MAX_EXPANDED`] the count stops.
fn expanded(
    root: &Value,
    schema: &Value,
    stack: &mut Vec<*const Value>,
    memo: &mut HashMap<*const Value, u64>,
) -> u64 {
    let key = id(schema);
    if let Some(n) = memo.get(&key) {
        return *n;
    }
    if stack.contains(&key) {
        return 1;
    }
    if stack.len() > MAX_DEPTH {
        return u64::MAX;
    }
    stack.push(key);
    let reference = schema.get("$ref").and_then(Value::as_str);
    let target = reference.and_then(|r| resolve(root, r).ok());
    let mut n: u64 = 1;
    for sub in target.into_iter().chain(applied(schema).map(|(s, _)| s)) {
        n = n.saturating_add(expanded(root, sub, stack, memo));
        if n > MAX_EXPANDED {
            break;
        }
    }
    stack.pop();
    memo.insert(key, n);
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_ref_cycle_in_place_is_refused() {
        let schema = json!({
            "type": "object",
            "properties": { "x": { "$ref": "#/$defs/a" } },
            "$defs": { "a": { "$ref": "#/$defs/b" }, "b": { "allOf": [{ "$ref": "#/$defs/a" }] } }
        });
        let p = problem(&schema).expect("refused");
        assert!(
            p.contains("#/$defs/a → #/$defs/b → #/$defs/a")
                || p.contains("#/$defs/b → #/$defs/a → #/$defs/b"),
            "{p}"
        );
        let self_ref = json!({ "$defs": { "a": { "$ref": "#/$defs/a" } } });
        assert!(problem(&self_ref).is_some());
    }

    #[test]
    fn recursion_through_the_data_is_fine() {
        let tree = json!({
            "type": "object",
            "properties": { "root": { "$ref": "#/$defs/node" } },
            "$defs": { "node": {
                "type": "object",
                "properties": { "children": { "type": "array", "items": { "$ref": "#/$defs/node" } } }
            } }
        });
        assert_eq!(problem(&tree), None);
        assert_eq!(problem(&json!({ "type": "object" })), None);
    }

    /// `d0` is a string; each `dN` is `anyOf[not dN-1, dN-1]`: a few
    /// hundred bytes that double with each definition.
    fn doubling(levels: usize) -> Value {
        let mut defs = serde_json::Map::new();
        defs.insert("d0".into(), json!({ "type": "string" }));
        for i in 1..=levels {
            let before = format!("#/$defs/d{}", i - 1);
            defs.insert(
                format!("d{i}"),
                json!({ "anyOf": [{ "not": { "$ref": before } }, { "$ref": before }] }),
            );
        }
        json!({ "$ref": format!("#/$defs/d{levels}"), "$defs": defs })
    }

    #[test]
    fn a_schema_that_doubles_with_each_reference_is_refused() {
        assert_eq!(problem(&doubling(8)), None, "about 1 500 subschemas");
        let p = problem(&doubling(16)).expect("refused");
        assert!(p.contains("more than 10000 subschemas"), "{p}");
        // The check itself stays linear in the schema's size.
        let started = std::time::Instant::now();
        assert!(problem(&doubling(2_000)).is_some());
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn a_cycle_through_any_pointer_is_refused() {
        let schema = json!({ "allOf": [{ "$ref": "#/allOf/1" }, { "$ref": "#/allOf/0" }] });
        let p = problem(&schema).expect("refused");
        assert!(p.contains("#/allOf/1 → #/allOf/0"), "{p}");
        // Escaped and percent-encoded pointers name the same schemas.
        let escaped = json!({
            "$defs": { "a/b": { "$ref": "#/$defs/c%20d" }, "c d": { "$ref": "#/$defs/a~1b" } }
        });
        assert!(problem(&escaped).is_some_and(|p| p.contains("cycle")));
    }

    #[test]
    fn only_pointers_into_the_schema_are_followed() {
        for (schema, why) in [
            (
                json!({ "$ref": "https://example.com/s.json" }),
                "not a pointer into the schema",
            ),
            (json!({ "$ref": "#node" }), "not a pointer into the schema"),
            (json!({ "$ref": "#/$defs/missing" }), "points at no schema"),
            (
                json!({ "$defs": { "a": { "$anchor": "a" } } }),
                "`$anchor` is not supported",
            ),
            (
                json!({ "$dynamicRef": "#a" }),
                "`$dynamicRef` is not supported",
            ),
            (
                json!({ "properties": { "x": { "$id": "x" } } }),
                "only at the schema's root",
            ),
            (json!({ "$ref": 3 }), "not a string"),
        ] {
            let p = problem(&schema).unwrap_or_else(|| panic!("{schema} accepted"));
            assert!(p.contains(why), "{schema}: {p}");
        }
        // A property named `$ref`, or one in a default, is data, not a reference.
        let data = json!({
            "type": "object",
            "$id": "https://example.com/tool",
            "properties": { "$ref": { "type": "string", "default": { "$ref": "elsewhere" } } }
        });
        assert_eq!(problem(&data), None);
    }
}
