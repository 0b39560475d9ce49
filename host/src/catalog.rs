//! The tools as the model sees them, in one place: what each tool's schema
//! and behaviour look like ([`ToolView`]), and every shape the tool list is
//! written in (MCP, OpenAI, Anthropic, and toolhost's own JSON for `list`
//! and `check`).
//!
//! Tool names need no adjusting: toolhost's rule (1-64 characters of
//! `[a-zA-Z0-9_-]`) is what OpenAI and Anthropic both accept, and the
//! companion tools follow it too.

use serde::Serialize;
use serde_json::{Value, json};

use crate::arguments::CONFIRM_ARGUMENT;
use crate::bindings::{Delivery, DuplicatePolicy, DuplicateScope};
use crate::plugin::Tool;

/// The `_meta` key of a tool in MCP's `tools/list` under which its
/// behaviour is described (see [`ToolView::behaviour`]).
pub const BEHAVIOUR_KEY: &str = "dev.toolhost/behaviour";

/// A tool as the model sees it, with its behaviour.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct ToolView {
    pub name: String,
    pub description: String,
    /// The input schema, with the `confirm_duplicate` argument on tools
    /// whose duplicate policy is `confirm` (B12).
    pub input_schema: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
    /// The plugin that provides it; `None` for the companion tools.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    pub on_duplicate: DuplicatePolicy,
    pub duplicate_scope: DuplicateScope,
    pub cancellable: bool,
    pub delivery: Delivery,
    /// False for a tool its manifest disabled (shown by `check` only).
    pub enabled: bool,
    /// Whether calls of it run as background calls (false for the
    /// companion tools, which the session answers itself).
    pub background: bool,
}

impl ToolView {
    /// The view of a plugin's tool.
    pub fn of(plugin: &str, t: &Tool) -> Self {
        let mut input_schema = t.input_schema.clone();
        if t.on_duplicate == DuplicatePolicy::Confirm {
            add_confirm_argument(&mut input_schema);
        }
        Self {
            name: t.name.clone(),
            description: t.description.clone(),
            input_schema,
            output_schema: t.output_schema.clone(),
            plugin: Some(plugin.to_owned()),
            on_duplicate: t.on_duplicate,
            duplicate_scope: t.duplicate_scope,
            cancellable: t.cancellable,
            delivery: t.delivery,
            enabled: t.enabled,
            background: true,
        }
    }

    /// A tool the session answers itself (the companion tools of B25).
    pub(crate) fn companion(name: &str, description: &str, input_schema: Value) -> Self {
        Self {
            name: name.into(),
            description: description.into(),
            input_schema,
            output_schema: None,
            plugin: None,
            on_duplicate: DuplicatePolicy::Allow,
            duplicate_scope: DuplicateScope::Name,
            cancellable: false,
            delivery: Delivery::Conversational,
            enabled: true,
            background: false,
        }
    }

    /// Whether the answer of a call is always the tool's result: not a
    /// duplicate notice (a policy other than `allow`), a started notice
    /// (fire-and-forget) or, as far as the declaration says, a first update
    /// (cancellable tools are the ones that run long and report progress).
    pub fn answers_with_result(&self) -> bool {
        answers_with_result(self.cancellable, self.on_duplicate, self.delivery)
    }

    /// The output schema as a tool list shows it: only for a tool that
    /// always answers with its result, since clients (MCP's among them)
    /// check every answer against a listed output schema, and a first
    /// update or a notice carries no data.
    pub fn listed_output_schema(&self) -> Option<&Value> {
        self.output_schema
            .as_ref()
            .filter(|_| self.answers_with_result())
    }

    /// What a client or bridge needs to know of how calls of the tool
    /// behave: its duplicate policy and scope, whether it is cancellable,
    /// and its delivery. `None` for the companion tools.
    pub fn behaviour(&self) -> Option<Value> {
        self.plugin.as_ref()?;
        Some(json!({
            "on_duplicate": self.on_duplicate.as_str(),
            "duplicate_scope": self.duplicate_scope.as_str(),
            "cancellable": self.cancellable,
            "delivery": self.delivery.as_str(),
        }))
    }

    /// The tool in MCP's `tools/list` shape, its behaviour under
    /// `_meta` [`BEHAVIOUR_KEY`].
    pub fn to_mcp(&self) -> Value {
        let mut v = json!({
            "name": self.name,
            "title": title(&self.name),
            "description": self.description,
            "inputSchema": self.input_schema,
        });
        if let Some(out) = self.listed_output_schema() {
            v["outputSchema"] = out.clone();
        }
        if let Some(behaviour) = self.behaviour() {
            v["_meta"] = json!({ BEHAVIOUR_KEY: behaviour });
        }
        v
    }

    /// The tool as toolhost's own JSON (`toolhost list --json`, `check
    /// --json`): name, plugin, description, schemas and behaviour.
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "plugin": self.plugin,
            "description": self.description,
            "input_schema": self.input_schema,
            "output_schema": self.output_schema,
            "on_duplicate": self.on_duplicate.as_str(),
            "duplicate_scope": self.duplicate_scope.as_str(),
            "cancellable": self.cancellable,
            "delivery": self.delivery.as_str(),
            "enabled": self.enabled,
        })
    }
}

fn answers_with_result(cancellable: bool, policy: DuplicatePolicy, delivery: Delivery) -> bool {
    !cancellable && policy == DuplicatePolicy::Allow && delivery == Delivery::Conversational
}

/// Whether a tool list shows the tool's output schema (see
/// [`ToolView::listed_output_schema`]).
pub(crate) fn lists_output_schema(t: &Tool) -> bool {
    t.output_schema.is_some() && answers_with_result(t.cancellable, t.on_duplicate, t.delivery)
}

/// An API whose tool format [`render`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaFormat {
    /// The `tools` of an MCP `tools/list` result.
    Mcp,
    /// OpenAI Chat Completions `tools` (`type: function`).
    OpenAi,
    /// Anthropic Messages `tools`.
    Anthropic,
}

impl std::str::FromStr for SchemaFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "mcp" => Ok(Self::Mcp),
            "openai" => Ok(Self::OpenAi),
            "anthropic" => Ok(Self::Anthropic),
            other => Err(format!(
                "unknown format `{other}`: use mcp, openai or anthropic"
            )),
        }
    }
}

/// The tools in `format`.
pub fn render(tools: &[ToolView], format: SchemaFormat) -> Value {
    match format {
        SchemaFormat::Mcp => {
            json!({ "tools": tools.iter().map(ToolView::to_mcp).collect::<Vec<_>>() })
        }
        SchemaFormat::OpenAi => tools
            .iter()
            .map(|t| {
                json!({
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.input_schema,
                    }
                })
            })
            .collect(),
        SchemaFormat::Anthropic => tools
            .iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "description": t.description,
                    "input_schema": t.input_schema,
                })
            })
            .collect(),
    }
}

/// The tools as OpenAI strict-mode function tools (`"strict": true`, every
/// schema converted by [`openai_strict`](crate::portable::openai_strict));
/// an error names each tool whose schema cannot be made strict.
pub fn render_openai_strict(tools: &[ToolView]) -> Result<Value, String> {
    let mut out = Vec::with_capacity(tools.len());
    let mut problems = Vec::new();
    for t in tools {
        match crate::portable::openai_strict(&t.input_schema) {
            Ok(parameters) => out.push(json!({
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": parameters,
                    "strict": true,
                }
            })),
            Err(e) => problems.push(format!("{}: {e}", t.name)),
        }
    }
    if problems.is_empty() {
        Ok(Value::Array(out))
    } else {
        Err(problems.join("\n"))
    }
}

/// A title for people: `search_text` becomes `Search text`.
pub fn title(name: &str) -> String {
    let words = name.replace(['_', '-'], " ");
    let mut chars = words.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn add_confirm_argument(schema: &mut Value) {
    if let Some(obj) = schema.as_object_mut() {
        let props = obj.entry("properties").or_insert_with(|| json!({}));
        if let Some(props) = props.as_object_mut() {
            props.insert(
                CONFIRM_ARGUMENT.into(),
                json!({
                    "type": "boolean",
                    "default": false,
                    "description": "Set to true to run this tool again while an earlier call of it is still running."
                }),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> ToolView {
        let mut v = ToolView::companion("search_text", "Search.", json!({"type": "object"}));
        v.output_schema = Some(json!({"type": "object"}));
        v.plugin = Some("rust-files".into());
        v
    }

    #[test]
    fn each_format_has_its_shape() {
        let tools = [view()];
        let mcp = render(&tools, SchemaFormat::Mcp);
        assert_eq!(mcp["tools"][0]["inputSchema"]["type"], "object");
        assert_eq!(mcp["tools"][0]["title"], "Search text");
        assert_eq!(mcp["tools"][0]["outputSchema"]["type"], "object");
        let openai = render(&tools, SchemaFormat::OpenAi);
        assert_eq!(openai[0]["type"], "function");
        assert_eq!(openai[0]["function"]["parameters"]["type"], "object");
        let anthropic = render(&tools, SchemaFormat::Anthropic);
        assert_eq!(anthropic[0]["input_schema"]["type"], "object");
        assert!("gemini".parse::<SchemaFormat>().is_err());
        assert_eq!(tools[0].to_json()["plugin"], "rust-files");
        let behaviour = &mcp["tools"][0]["_meta"][BEHAVIOUR_KEY];
        assert_eq!(behaviour["on_duplicate"], "allow");
        assert_eq!(behaviour["cancellable"], false);
        let companion = ToolView::companion("toolhost_cancel_task", "", json!({"type": "object"}));
        assert!(companion.to_mcp().get("_meta").is_none());
    }

    #[test]
    fn an_output_schema_is_listed_only_for_tools_that_answer_with_their_result() {
        for (cancellable, policy, delivery) in [
            (true, DuplicatePolicy::Allow, Delivery::Conversational),
            (false, DuplicatePolicy::Reject, Delivery::Conversational),
            (false, DuplicatePolicy::Allow, Delivery::FireAndForget),
        ] {
            let mut v = view();
            v.cancellable = cancellable;
            v.on_duplicate = policy;
            v.delivery = delivery;
            assert!(v.listed_output_schema().is_none());
            let mcp = render(&[v], SchemaFormat::Mcp);
            assert!(mcp["tools"][0].get("outputSchema").is_none(), "{mcp}");
        }
    }
}
