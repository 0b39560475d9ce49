//! The tool list in the shapes LLM APIs expect: MCP's `tools/list`, OpenAI
//! function tools, Anthropic tools.
//!
//! Tool names need no adjusting: toolhost's rule (1-64 characters of
//! `[a-zA-Z0-9_-]`) is what OpenAI and Anthropic both accept, and the
//! companion tools follow it too.

use serde_json::{Value, json};

use crate::session::ToolView;

/// An API whose tool format [`export`] writes.
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

/// A title for people: `search_text` becomes `Search text`.
pub fn title(name: &str) -> String {
    let words = name.replace(['_', '-'], " ");
    let mut chars = words.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The tools in `format`.
pub fn export(tools: &[ToolView], format: SchemaFormat) -> Value {
    match format {
        SchemaFormat::Mcp => {
            let tools: Vec<Value> = tools
                .iter()
                .map(|t| {
                    let mut v = json!({
                        "name": t.name,
                        "title": title(&t.name),
                        "description": t.description,
                        "inputSchema": t.input_schema,
                    });
                    if let Some(out) = t.output_schema.as_ref().filter(|_| t.answers_with_result) {
                        v["outputSchema"] = out.clone();
                    }
                    v
                })
                .collect();
            json!({ "tools": tools })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> ToolView {
        ToolView {
            name: "search_text".into(),
            description: "Search.".into(),
            input_schema: json!({"type": "object"}),
            output_schema: Some(json!({"type": "object"})),
            plugin: Some("rust-files".into()),
            cancellable: false,
            background: true,
            answers_with_result: true,
        }
    }

    #[test]
    fn each_format_has_its_shape() {
        let tools = [view()];
        let mcp = export(&tools, SchemaFormat::Mcp);
        assert_eq!(mcp["tools"][0]["inputSchema"]["type"], "object");
        assert_eq!(mcp["tools"][0]["title"], "Search text");
        assert_eq!(mcp["tools"][0]["outputSchema"]["type"], "object");
        let openai = export(&tools, SchemaFormat::OpenAi);
        assert_eq!(openai[0]["type"], "function");
        assert_eq!(openai[0]["function"]["parameters"]["type"], "object");
        let anthropic = export(&tools, SchemaFormat::Anthropic);
        assert_eq!(anthropic[0]["input_schema"]["type"], "object");
        assert!("gemini".parse::<SchemaFormat>().is_err());
    }

    #[test]
    fn mcp_lists_an_output_schema_only_for_tools_that_answer_with_their_result() {
        let released = ToolView {
            answers_with_result: false,
            ..view()
        };
        let mcp = export(&[released], SchemaFormat::Mcp);
        assert!(mcp["tools"][0].get("outputSchema").is_none(), "{mcp}");
    }
}
