//! Write toolhost plugins in Rust: the bindings of `wit/plugin.wit` and a
//! few conveniences.
//!
//! ```ignore
//! use toolhost_guest::{Plugin, ToolError, ToolOutput, ToolSpec, spec};
//!
//! struct Hello;
//!
//! impl Plugin for Hello {
//!     fn describe() -> Vec<ToolSpec> {
//!         vec![spec("hello", "Greets someone.", serde_json::json!({
//!             "type": "object",
//!             "properties": { "name": { "type": "string" } },
//!             "required": ["name"]
//!         }))]
//!     }
//!
//!     fn call(_tool: String, arguments: String) -> Result<ToolOutput, ToolError> {
//!         #[derive(serde::Deserialize)]
//!         struct Args { name: String }
//!         let args: Args = toolhost_guest::args(&arguments)?;
//!         Ok(ToolOutput::text(format!("Hello, {}!", args.name)))
//!     }
//! }
//!
//! toolhost_guest::export_plugin!(Hello);
//! ```

wit_bindgen::generate!({
    path: "../wit",
    world: "plugin",
    pub_export_macro: true,
    export_macro_name: "export_plugin",
    default_bindings_module: "toolhost_guest",
});

pub use self::exports::toolhost::plugin::tool::Guest as Plugin;
pub use self::toolhost::plugin::host::{call_info, cancelled, log, update};
pub use self::toolhost::plugin::types::{
    CallContext, Delivery, DuplicatePolicy, DuplicateScope, LogLevel, ToolError, ToolOutput,
    ToolSpec,
};

/// A tool spec with the usual defaults: duplicates allowed (by name), not
/// cancellable, conversational delivery. Change the fields that differ.
pub fn spec(name: &str, description: &str, input_schema: serde_json::Value) -> ToolSpec {
    ToolSpec {
        name: name.to_owned(),
        description: description.to_owned(),
        input_schema: input_schema.to_string(),
        output_schema: None,
        on_duplicate: DuplicatePolicy::Allow,
        duplicate_scope: DuplicateScope::Name,
        cancellable: false,
        delivery: Delivery::Conversational,
    }
}

/// Parse the (already validated) arguments into `T`.
pub fn args<T: serde::de::DeserializeOwned>(arguments: &str) -> Result<T, ToolError> {
    serde_json::from_str(arguments).map_err(|e| ToolError::InvalidArguments(e.to_string()))
}

impl ToolOutput {
    /// A result the model reads as text.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: Some(text.into()),
            data: None,
        }
    }

    /// A structured result; the model reads it as JSON.
    pub fn data(data: &impl serde::Serialize) -> Self {
        Self {
            text: None,
            data: Some(serde_json::to_string(data).unwrap_or_else(|_| "null".into())),
        }
    }

    /// A result with a sentence for the model and the data behind it.
    pub fn text_and_data(text: impl Into<String>, data: &impl serde::Serialize) -> Self {
        Self {
            text: Some(text.into()),
            ..Self::data(data)
        }
    }
}

impl ToolError {
    /// The tool failed; the message is for the model.
    pub fn failed(message: impl std::fmt::Display) -> Self {
        ToolError::Failed(message.to_string())
    }
}
