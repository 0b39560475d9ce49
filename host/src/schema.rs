//! The checks a tool's JSON Schema passes before a validator is built from
//! it: a bound on its size, and no `$ref` cycle that validation would follow
//! forever.
//!
//! A recursive schema is fine when each turn of the recursion descends into
//! the data (a tree whose `children` items refer back to the node): the
//! data's depth bounds it. A cycle of references that applies in place
//! (`a` is `{"$ref": "#/$defs/b"}` and `b` is `{"$ref": "#/$defs/a"}`, or the
//! same through `allOf`, `anyOf`, `oneOf`, `not`, `if`/`then`/`else`) never
//! reaches the data, and a validator would follow it without end.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// The largest schema text a tool may declare, in bytes (input and output
/// schema each).
pub(crate) const MAX_SCHEMA_BYTES: usize = 256 * 1024;

/// Keywords whose subschemas apply to the same instance.
const IN_PLACE: &[&str] = &["allOf", "anyOf", "oneOf"];
const IN_PLACE_ONE: &[&str] = &["not", "if", "then", "else"];

/// Why a schema cannot be served, in one line; `None` when it can.
pub(crate) fn problem(schema: &Value) -> Option<String> {
    let mut defs: BTreeMap<String, &Value> = BTreeMap::new();
    for key in ["$defs", "definitions"] {
        if let Some(map) = schema.get(key).and_then(Value::as_object) {
            for (name, def) in map {
                defs.insert(format!("#/{key}/{name}"), def);
            }
        }
    }
    // The in-place references of the root and of each definition.
    let mut edges: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut root_refs = BTreeSet::new();
    in_place_refs(schema, &mut root_refs);
    edges.insert("#", root_refs);
    for (name, def) in &defs {
        let mut refs = BTreeSet::new();
        in_place_refs(def, &mut refs);
        edges.insert(name, refs);
    }
    // A cycle among the in-place references: depth-first, with the path.
    fn visit<'a>(
        node: &'a str,
        edges: &'a BTreeMap<&'a str, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<String> {
        if let Some(at) = path.iter().position(|n| *n == node) {
            let mut cycle: Vec<&str> = path[at..].to_vec();
            cycle.push(node);
            return Some(cycle.join(" → "));
        }
        if !done.insert(node) {
            return None;
        }
        path.push(node);
        for next in edges.get(node).into_iter().flatten() {
            if let Some((key, _)) = edges.get_key_value(next.as_str())
                && let Some(cycle) = visit(key, edges, path, done)
            {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for start in edges.keys() {
        if let Some(cycle) = visit(start, &edges, &mut Vec::new(), &mut done) {
            return Some(format!(
                "its $ref references form a cycle that never reaches the data ({cycle})"
            ));
        }
    }
    None
}

/// The local references that apply to the same instance as `schema`.
fn in_place_refs(schema: &Value, out: &mut BTreeSet<String>) {
    let Some(obj) = schema.as_object() else {
        return;
    };
    for key in ["$ref", "$dynamicRef"] {
        if let Some(r) = obj.get(key).and_then(Value::as_str) {
            out.insert(r.to_owned());
        }
    }
    for key in IN_PLACE {
        for sub in obj
            .get(*key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            in_place_refs(sub, out);
        }
    }
    for key in IN_PLACE_ONE {
        if let Some(sub) = obj.get(*key) {
            in_place_refs(sub, out);
        }
    }
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
        assert!(p.contains("#/$defs/a → #/$defs/b → #/$defs/a"), "{p}");
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
}
