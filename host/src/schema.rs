//! The checks a tool's JSON Schema passes before a validator is built from
//! it, so that validating a call's arguments or result is bounded by the
//! schema's size and the data's, whatever schema a plugin declares:
//! - its text is at most [`MAX_SCHEMA_BYTES`], each pattern at most
//!   [`MAX_PATTERN_BYTES`];
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
//!   each: a validator walks every copy, for every value it checks. What a
//!   schema with `unevaluatedProperties` or `unevaluatedItems` applies
//!   counts three times, as building its validator takes;
//! - no recursion applies twice to the same property or item of a value
//!   (two branches of a union that each refer back for `next`), or passes
//!   through `unevaluatedProperties` or `unevaluatedItems` (whose
//!   validator checks what it applies again): checking a value nested n
//!   deep would take 2^n steps.
//!
//! A recursive schema is fine when each turn of the recursion descends into
//! the data once (a tree whose `children` items refer back to the node):
//! the data's depth bounds it, and the expansion counts the turn once.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

/// The largest schema text a tool may declare, in bytes (input and output
/// schema each).
pub(crate) const MAX_SCHEMA_BYTES: usize = 256 * 1024;

/// The most subschemas a schema may have with its references expanded.
pub(crate) const MAX_EXPANDED: u64 = 10_000;

/// The longest pattern (`pattern`, or a `patternProperties` name) a schema
/// may hold, in bytes: building its matcher takes time in proportion to
/// its length times the escapes in it.
pub(crate) const MAX_PATTERN_BYTES: usize = 1024;

/// The deepest a schema's subschemas may nest, references followed.
pub(crate) const MAX_DEPTH: usize = 128;

/// The most steps the check of how a schema's recursion applies may take.
const MAX_RECURSION_STEPS: usize = 100_000;

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
        nodes: Vec::new(),
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
    let size = match expanded(schema, schema, &mut Vec::new(), &mut 0) {
        Ok(size) => size,
        Err(problem) => return Some(problem),
    };
    if size > MAX_EXPANDED {
        return Some(format!(
            "with its $ref references expanded it has more than {MAX_EXPANDED} subschemas, \
             which every value checked against it would go through"
        ));
    }
    recursion_applied_twice(schema, &check.nodes)
}

/// Which values under a schema's value a descending subschema applies to:
/// a named property; the properties matching one of a schema's
/// `patternProperties` (counted as matching every name); the properties
/// a schema neither names nor matches (`additionalProperties`,
/// `unevaluatedProperties`); the item at a position (`prefixItems`); any
/// item; property names; content.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key<'a> {
    Property(&'a str),
    Pattern(Holder<'a>),
    Unnamed(Holder<'a>),
    Position(usize),
    Item,
    Name,
    Content,
}

/// A schema, compared by address.
#[derive(Debug, Clone, Copy)]
struct Holder<'a>(&'a Value);

impl PartialEq for Holder<'_> {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.0, other.0)
    }
}

impl Eq for Holder<'_> {}

impl std::hash::Hash for Holder<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        id(self.0).hash(state);
    }
}

impl Holder<'_> {
    fn names(&self, name: &str) -> bool {
        self.0
            .get("properties")
            .and_then(Value::as_object)
            .is_some_and(|p| p.contains_key(name))
    }
}

impl Key<'_> {
    fn of<'a>(keyword: &str, holder: &'a Value) -> Key<'a> {
        match keyword {
            "items" | "additionalItems" | "contains" | "unevaluatedItems" => Key::Item,
            "propertyNames" => Key::Name,
            "contentSchema" => Key::Content,
            _ => Key::Unnamed(Holder(holder)),
        }
    }

    fn shown(&self) -> String {
        match self {
            Key::Property(name) => format!("property `{name}`"),
            Key::Pattern(_) | Key::Unnamed(_) => "its properties".into(),
            Key::Position(i) => format!("item {i}"),
            Key::Item => "its items".into(),
            Key::Name => "its property names".into(),
            Key::Content => "its content".into(),
        }
    }
}

/// The subschemas `schema` applies to values under its value, by which.
fn descending(schema: &Value) -> Vec<(Key<'_>, &Value)> {
    let Some(obj) = schema.as_object() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, v) in obj {
        let k = k.as_str();
        match (k, v) {
            ("properties", Value::Object(map)) => {
                out.extend(map.iter().map(|(name, v)| (Key::Property(name), v)));
            }
            ("patternProperties", Value::Object(map)) => {
                out.extend(map.values().map(|v| (Key::Pattern(Holder(schema)), v)));
            }
            ("items" | "prefixItems", Value::Array(items)) => {
                out.extend(items.iter().enumerate().map(|(i, v)| (Key::Position(i), v)));
            }
            _ if ONE.iter().any(|(one, in_place)| *one == k && !in_place) => {
                out.push((Key::of(k, schema), v));
            }
            _ => {}
        }
    }
    out.retain(|(_, v)| v.is_object() || v.is_boolean());
    out
}

/// The first key that `counts` (how often a schema's recursion applies
/// under each key) applies more than once to one value, at worst. A
/// property gets its own count and, from each schema, that schema's
/// patterns' or its unnamed-property one's (those exclude each other;
/// the unnamed one not for a property the schema names). An item at a
/// position gets its own count and every any-item one.
fn applied_twice(counts: &HashMap<&Key<'_>, u64>) -> Option<String> {
    let mut holders: HashMap<Holder<'_>, (u64, u64)> = HashMap::new();
    let mut items = 0;
    for (key, n) in counts {
        match key {
            Key::Pattern(h) => holders.entry(*h).or_default().0 += n,
            Key::Unnamed(h) => holders.entry(*h).or_default().1 += n,
            Key::Item => items += n,
            _ => {}
        }
    }
    let from_holders = |name: Option<&str>| -> u64 {
        (holders.iter())
            .map(|(h, (patterns, unnamed))| match name {
                Some(name) if h.names(name) => *patterns,
                _ => *patterns.max(unnamed),
            })
            .sum()
    };
    if items > 1 {
        return Some(Key::Item.shown());
    }
    if from_holders(None) > 1 {
        return Some("its properties".into());
    }
    counts.iter().find_map(|(key, n)| {
        let total = match key {
            Key::Property(name) => n + from_holders(Some(name)),
            Key::Position(_) => n + items,
            Key::Name | Key::Content => *n,
            _ => 0,
        };
        (total > 1).then(|| key.shown())
    })
}

/// The first `max` problems `validator` finds in `value`, each with where
/// it is. A validator that panics is an error instead: jsonschema 0.33
/// unwraps a pattern's result under `unevaluatedProperties`, which fails
/// when the match passes its backtracking limit.
pub(crate) fn problems(
    validator: &jsonschema::Validator,
    value: &Value,
    max: usize,
) -> Result<Vec<String>, String> {
    let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // Checking a valid value builds no errors: they are gathered only
        // for a value that fails, most calls' arguments being valid.
        if validator.is_valid(value) {
            return Vec::new();
        }
        (validator.iter_errors(value).take(max))
            .map(|e| {
                let at = e.instance_path.to_string();
                if at.is_empty() {
                    e.to_string()
                } else {
                    format!("at `{at}`: {e}")
                }
            })
            .collect()
    }));
    found.map_err(|_| {
        "the schema's validator failed on this value (a pattern may have taken too long to match)"
            .to_owned()
    })
}

/// A recursion that applies twice to the same value: a schema that, with
/// what it applies in place, reaches back to itself through two of its
/// subschemas for the same property or item (`allOf` of two copies of
/// `{"properties": {"next": {"$ref": "#"}}}`). Each turn doubles the
/// schemas a value nested one deeper is checked against, which the data's
/// depth alone does not bound. Any-property and any-item subschemas count
/// as applying to every property or item.
fn recursion_applied_twice(root: &Value, nodes: &[&Value]) -> Option<String> {
    let index: HashMap<*const Value, usize> =
        nodes.iter().enumerate().map(|(i, n)| (id(n), i)).collect();
    let node = |v: &Value| index.get(&id(v)).copied();
    let target = |v: &Value| {
        v.get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| resolve(root, r).ok())
    };
    // Every edge, for the strongly connected parts.
    let edges: Vec<Vec<usize>> = nodes
        .iter()
        .map(|n| {
            let subs = applied(n).map(|(s, _)| s).chain(target(n));
            subs.filter_map(node).collect()
        })
        .collect();
    let part = strongly_connected(&edges);
    let mut size = vec![0usize; nodes.len()];
    for p in &part {
        size[*p] += 1;
    }
    let cyclic = |i: usize| size[part[i]] > 1 || edges[i].contains(&i);
    if let Some(i) = (0..nodes.len()).find(|&i| cyclic(i) && unevaluated(nodes[i])) {
        let keyword = UNEVALUATED.iter().find(|k| nodes[i].get(**k).is_some());
        return Some(format!(
            "its recursion passes through `{}`, whose validator checks each level again, so \
             checking a value nested n deep would take 2^n steps (`additionalProperties` or \
             `items` would not)",
            keyword.unwrap_or(&UNEVALUATED[0])
        ));
    }
    // For each schema, its descending subschemas and those of what it
    // applies in place, counted as often as they apply (in-place cycles
    // are refused before, so this is a walk of an acyclic graph).
    let mut memo: HashMap<usize, HashMap<(Key<'_>, usize), u64>> = HashMap::new();
    let mut work = 0usize;
    for (i, n) in nodes.iter().enumerate() {
        if !cyclic(i) {
            continue;
        }
        let counts = match in_place_descents(n, &node, &target, &mut memo, &mut work, 0) {
            Ok(counts) => counts,
            Err(problem) => return Some(problem),
        };
        let mut mine: HashMap<&Key<'_>, u64> = HashMap::new();
        for ((key, child), count) in &counts {
            if part[*child] == part[i] {
                *mine.entry(key).or_default() += count;
            }
        }
        let twice = applied_twice(&mine);
        if let Some(at) = twice {
            return Some(format!(
                "its recursion applies twice to {at} of the same value, so checking a value \
                 nested n deep would take 2^n steps"
            ));
        }
    }
    None
}

/// The descending subschemas of `schema` and of what it applies in place,
/// by (which values, schema), with how often each applies; an error when
/// it nests past [`MAX_DEPTH`] or the count takes more than
/// [`MAX_RECURSION_STEPS`] in all.
fn in_place_descents<'a>(
    schema: &'a Value,
    node: &impl Fn(&Value) -> Option<usize>,
    target: &impl Fn(&'a Value) -> Option<&'a Value>,
    memo: &mut HashMap<usize, HashMap<(Key<'a>, usize), u64>>,
    work: &mut usize,
    depth: usize,
) -> Result<HashMap<(Key<'a>, usize), u64>, String> {
    let Some(me) = node(schema) else {
        return Ok(HashMap::new());
    };
    if let Some(known) = memo.get(&me) {
        return Ok(known.clone());
    }
    if depth > MAX_DEPTH {
        return Err(too_deep());
    }
    let mut counts: HashMap<(Key<'a>, usize), u64> = HashMap::new();
    for (key, sub) in descending(schema) {
        if let Some(child) = node(sub) {
            *counts.entry((key, child)).or_default() += 1;
        }
    }
    let in_place = (applied(schema).filter(|(_, in_place)| *in_place))
        .map(|(s, _)| s)
        .chain(target(schema));
    for sub in in_place {
        let theirs = in_place_descents(sub, node, target, memo, work, depth + 1)?;
        *work += theirs.len();
        if *work > MAX_RECURSION_STEPS {
            return Err(format!(
                "checking how its recursion applies takes more than {MAX_RECURSION_STEPS} steps"
            ));
        }
        for (k, n) in theirs {
            *counts.entry(k).or_default() += n;
        }
    }
    memo.insert(me, counts.clone());
    Ok(counts)
}

/// The strongly connected part of each node of the graph `edges`
/// (Tarjan's algorithm, without recursion).
fn strongly_connected(edges: &[Vec<usize>]) -> Vec<usize> {
    const UNSEEN: usize = usize::MAX;
    let n = edges.len();
    let (mut index, mut low, mut part) = (vec![UNSEEN; n], vec![0; n], vec![UNSEEN; n]);
    let (mut on_stack, mut stack, mut next, mut parts) = (vec![false; n], Vec::new(), 0, 0);
    for start in 0..n {
        if index[start] != UNSEEN {
            continue;
        }
        // (node, next edge to look at)
        let mut calls = vec![(start, 0usize)];
        index[start] = next;
        low[start] = next;
        next += 1;
        stack.push(start);
        on_stack[start] = true;
        while let Some(&mut (v, ref mut e)) = calls.last_mut() {
            if let Some(&w) = edges[v].get(*e) {
                *e += 1;
                if index[w] == UNSEEN {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    calls.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            calls.pop();
            if let Some(&(parent, _)) = calls.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    part[w] = parts;
                    if w == v {
                        break;
                    }
                }
                parts += 1;
            }
        }
    }
    part
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
    /// Every schema in it, in the order first seen.
    nodes: Vec<&'a Value>,
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
        self.nodes.push(schema);
        let Some(obj) = schema.as_object() else {
            return Ok(());
        };
        if let Some(k) = REFUSED.iter().find(|k| obj.contains_key(**k)) {
            return Err(format!(
                "`{k}` is not supported: refer with `$ref` and a pointer (\"#/$defs/NAME\")"
            ));
        }
        let names = obj.get("patternProperties").and_then(Value::as_object);
        let patterns = names.into_iter().flat_map(|m| m.keys().map(String::as_str));
        let pattern = obj.get("pattern").and_then(Value::as_str);
        if let Some(long) = patterns
            .chain(pattern)
            .find(|p| p.len() > MAX_PATTERN_BYTES)
        {
            let start: String = long.chars().take(40).collect();
            return Err(format!(
                "the pattern `{start}…` is longer than {MAX_PATTERN_BYTES} bytes"
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
/// of recursion (a reference back to a schema being expanded) counted once;
/// an error when they nest past [`MAX_DEPTH`]. Each step counts at least
/// one subschema, so the walk stops after [`MAX_EXPANDED`] steps in all:
/// nothing is remembered between branches, since a count cut short by a
/// turn of recursion holds only under the same schemas above it.
///
/// What a schema with `unevaluatedProperties` or `unevaluatedItems`
/// applies counts three times: the validator builds each of its
/// subschemas once to check and twice more to learn which properties or
/// items they evaluated, so each level of such nesting triples the work
/// of building one.
fn expanded(
    root: &Value,
    schema: &Value,
    stack: &mut Vec<*const Value>,
    steps: &mut u64,
) -> Result<u64, String> {
    let key = id(schema);
    if stack.contains(&key) {
        return Ok(1);
    }
    if stack.len() > MAX_DEPTH {
        return Err(too_deep());
    }
    *steps += 1;
    if *steps > MAX_EXPANDED {
        return Ok(MAX_EXPANDED + 1);
    }
    stack.push(key);
    let reference = schema.get("$ref").and_then(Value::as_str);
    let target = reference.and_then(|r| resolve(root, r).ok());
    let times = if unevaluated(schema) { 3 } else { 1 };
    let mut n: u64 = 1;
    for sub in target.into_iter().chain(applied(schema).map(|(s, _)| s)) {
        // On an error the walk ends: its stack is dropped as it is.
        let theirs = expanded(root, sub, stack, steps)?;
        n = n.saturating_add(theirs.saturating_mul(times));
        if n > MAX_EXPANDED {
            break;
        }
    }
    stack.pop();
    Ok(n)
}

const UNEVALUATED: [&str; 2] = ["unevaluatedProperties", "unevaluatedItems"];

fn unevaluated(schema: &Value) -> bool {
    UNEVALUATED.iter().any(|k| schema.get(*k).is_some())
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

    #[test]
    fn a_recursion_that_applies_twice_to_one_value_is_refused() {
        let same_property = json!({ "allOf": [
            { "properties": { "next": { "$ref": "#" } } },
            { "properties": { "next": { "$ref": "#" } } }
        ] });
        let p = problem(&same_property).expect("refused");
        assert!(p.contains("twice to property `next`"), "{p}");
        let items = json!({
            "$defs": { "list": { "items": { "$ref": "#/$defs/list" } } },
            "$ref": "#/$defs/list"
        });
        assert_eq!(problem(&items), None, "one turn per item is fine");
        let twice = json!({
            "$defs": {
                "node": { "allOf": [{ "$ref": "#/$defs/one" }, { "$ref": "#/$defs/one" }] },
                "one": { "items": { "$ref": "#/$defs/node" } }
            },
            "$ref": "#/$defs/node"
        });
        let p = problem(&twice).expect("refused");
        assert!(p.contains("twice to its items"), "{p}");
    }

    #[test]
    fn a_recursion_under_named_and_other_properties_is_fine() {
        // `additionalProperties` applies only to properties its schema does
        // not name; from another schema in place it applies to them too.
        let apart = json!({
            "properties": { "next": { "$ref": "#" } },
            "additionalProperties": { "$ref": "#" }
        });
        assert_eq!(problem(&apart), None);
        let together = json!({ "allOf": [
            { "properties": { "next": { "$ref": "#" } } },
            { "additionalProperties": { "$ref": "#" } }
        ] });
        let p = problem(&together).expect("refused");
        assert!(p.contains("twice to property `next`"), "{p}");
        let patterns = json!({
            "properties": { "next": { "$ref": "#" } },
            "patternProperties": { "^n": { "$ref": "#" } }
        });
        assert!(problem(&patterns).is_some(), "a pattern may match `next`");
    }

    /// `levels` of `allOf` nested in place, each with `keyword: false`.
    fn nested(levels: usize, keyword: &str) -> Value {
        let mut schema = json!({ "properties": { "a": { "type": "string" } } });
        for _ in 0..levels {
            schema = json!({ "allOf": [schema, { "properties": { "b": {} } }], keyword: false });
        }
        schema
    }

    #[test]
    fn nested_unevaluated_properties_count_three_times_a_level() {
        // Building a validator for 14 levels took 10 s, 3 times the time
        // of 13 (jsonschema 0.33); `additionalProperties` stays linear.
        assert_eq!(problem(&nested(5, "unevaluatedProperties")), None);
        let p = problem(&nested(10, "unevaluatedProperties")).expect("refused");
        assert!(p.contains("more than 10000 subschemas"), "{p}");
        assert_eq!(problem(&nested(100, "additionalProperties")), None);
    }

    #[test]
    fn a_recursion_through_unevaluated_properties_is_refused() {
        // Checking 16 levels of this tree took 4.5 s, 18 levels 34 s.
        let tree = json!({
            "type": "object",
            "properties": { "child": { "$ref": "#" } },
            "unevaluatedProperties": false
        });
        let p = problem(&tree).expect("refused");
        assert!(p.contains("passes through `unevaluatedProperties`"), "{p}");
        let itself = json!({ "type": "object", "unevaluatedProperties": { "$ref": "#" } });
        assert!(problem(&itself).is_some());
        // Beside a recursion it is fine.
        let beside = json!({
            "$defs": { "node": { "properties": { "next": { "$ref": "#/$defs/node" } } } },
            "properties": { "head": { "$ref": "#/$defs/node" } },
            "unevaluatedProperties": false
        });
        assert_eq!(problem(&beside), None);
    }

    #[test]
    fn unevaluated_properties_nested_in_the_data_count_three_times_a_level() {
        let mut schema = json!({ "type": "string" });
        for _ in 0..25 {
            schema = json!({ "properties": { "a": schema }, "unevaluatedProperties": false });
        }
        let p = problem(&schema).expect("refused");
        assert!(p.contains("more than 10000 subschemas"), "{p}");
    }

    #[test]
    fn recursions_into_different_properties_or_positions_are_fine() {
        // Extensions by pattern, others by `additionalProperties`; a pair
        // (pydantic's `tuple[Node, Node]`).
        let extensions = json!({
            "patternProperties": { "^x-": { "$ref": "#" } },
            "additionalProperties": { "$ref": "#" }
        });
        let pair = json!({
            "$defs": { "node": { "type": "array", "prefixItems": [
                { "$ref": "#/$defs/node" }, { "$ref": "#/$defs/node" }
            ] } },
            "$ref": "#/$defs/node"
        });
        for schema in [extensions, pair] {
            assert_eq!(problem(&schema), None, "{schema}");
        }
        let both = json!({ "prefixItems": [{ "$ref": "#" }], "items": { "$ref": "#" }, "contains": { "$ref": "#" } });
        assert!(problem(&both).is_some(), "`contains` applies to item 0 too");
    }

    #[test]
    fn the_expansion_stops_after_its_budget_of_steps() {
        // Each link applies `X` (9 000 subschemas) and the link before: a
        // count per branch would walk `X` once per link.
        let big: serde_json::Map<String, Value> =
            (0..9_000).map(|i| (format!("f{i}"), json!({}))).collect();
        let mut defs = serde_json::Map::new();
        defs.insert("X".into(), json!({ "properties": big }));
        defs.insert("L0".into(), json!({ "type": "object" }));
        for k in 1..60 {
            let link = json!({ "allOf": [{ "$ref": "#/$defs/X" }, { "$ref": format!("#/$defs/L{}", k - 1) }] });
            defs.insert(format!("L{k}"), link);
        }
        let schema = json!({ "$defs": defs, "$ref": "#/$defs/L59" });
        let mut steps = 0;
        let size = expanded(&schema, &schema, &mut Vec::new(), &mut steps);
        assert!(size.is_ok_and(|n| n > MAX_EXPANDED));
        assert!(steps <= MAX_EXPANDED + 1, "{steps} steps");
    }

    #[test]
    fn a_long_pattern_is_refused() {
        let fine = json!({ "type": "string", "pattern": "a".repeat(MAX_PATTERN_BYTES) });
        assert_eq!(problem(&fine), None);
        let long = json!({ "type": "string", "pattern": "a".repeat(MAX_PATTERN_BYTES + 1) });
        let p = problem(&long).expect("refused");
        assert!(p.contains("longer than 1024 bytes"), "{p}");
        let key = "b".repeat(MAX_PATTERN_BYTES + 1);
        let named = json!({ "properties": { "x": { "patternProperties": { key: {} } } } });
        assert!(problem(&named).is_some());
    }

    #[test]
    fn a_count_cut_short_by_recursion_is_not_reused_elsewhere() {
        // Under `X`, `A`'s reference back to `X` counts once; under the
        // root, each of the 300 references to `A` takes all of `X` (8 000
        // subschemas) again.
        let big: serde_json::Map<String, Value> =
            (0..8_000).map(|i| (format!("f{i}"), json!({}))).collect();
        let mut all_of = vec![json!({ "$ref": "#/$defs/X" })];
        all_of.extend((0..300).map(|_| json!({ "$ref": "#/$defs/A" })));
        let schema = json!({
            "$defs": {
                "X": { "allOf": [{ "$ref": "#/$defs/A" }, { "properties": big }] },
                "A": { "properties": { "p": { "$ref": "#/$defs/X" } } }
            },
            "allOf": all_of
        });
        let p = problem(&schema).expect("refused");
        assert!(p.contains("more than 10000 subschemas"), "{p}");
    }

    #[test]
    fn a_validator_that_panics_is_an_error() {
        let schema = json!({
            "allOf": [{ "patternProperties": { "^(a+)+\\1b": {} } }],
            "unevaluatedProperties": false
        });
        let validator = jsonschema::draft202012::new(&schema).expect("a schema");
        let fine = problems(&validator, &json!({ "b": 1 }), 5);
        assert_eq!(fine.map(|p| p.len()), Ok(1), "`b` is unevaluated");
        let slow = json!({ "a".repeat(40): 1 });
        let failed = problems(&validator, &slow, 5).expect_err("an error");
        assert!(failed.contains("validator failed"), "{failed}");
    }

    #[test]
    fn common_recursive_schemas_are_fine() {
        // A binary tree, a JSON value (as pydantic writes `JsonValue`), a
        // linked list.
        let tree = json!({
            "$defs": { "node": { "type": "object", "properties": {
                "left": { "$ref": "#/$defs/node" }, "right": { "$ref": "#/$defs/node" }
            } } },
            "$ref": "#/$defs/node"
        });
        let json_value = json!({
            "$defs": { "json": { "anyOf": [
                { "type": "object", "additionalProperties": { "$ref": "#/$defs/json" } },
                { "type": "array", "items": { "$ref": "#/$defs/json" } },
                { "type": "string" }, { "type": "number" }, { "type": "boolean" }, { "type": "null" }
            ] } },
            "type": "object",
            "properties": { "value": { "$ref": "#/$defs/json" } }
        });
        let list = json!({
            "type": "object",
            "properties": { "head": { "type": "integer" }, "tail": { "anyOf": [{ "$ref": "#" }, { "type": "null" }] } }
        });
        for schema in [tree, json_value, list] {
            assert_eq!(problem(&schema), None, "{schema}");
        }
    }
}
