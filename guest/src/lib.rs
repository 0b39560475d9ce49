//! Write toolhost plugins in Rust: a plain typed function becomes a tool.
//!
//! The arguments are a struct deriving `Deserialize` and `JsonSchema`, so the
//! input schema is generated from the type; `update`, `cancelled`, `log` and
//! `call_info` are plain functions; any error that converts into
//! [`ToolError`] ends the call as a tool error; `describe()` is assembled
//! from the registered tools.
//!
//! ```ignore
//! use schemars::JsonSchema;
//! use serde::Deserialize;
//! use toolhost_guest::{Tool, ToolError, ToolOutput, Tools};
//!
//! /// Arguments of `greet`.
//! #[derive(Deserialize, JsonSchema)]
//! struct Greet {
//!     /// Who to greet.
//!     name: String,
//! }
//!
//! fn greet(args: Greet) -> Result<ToolOutput, ToolError> {
//!     Ok(ToolOutput::text(format!("Hello, {}!", args.name)))
//! }
//!
//! struct Hello;
//!
//! impl Tools for Hello {
//!     fn tools() -> Vec<Tool> {
//!         vec![Tool::new("greet", "Greets someone by name.", greet)]
//!     }
//! }
//!
//! toolhost_guest::export_tools!(Hello);
//! ```
//!
//! The raw bindings are there too: implement [`Plugin`] and call
//! [`export_plugin!`] to write `describe` and `call` by hand.

use schemars::JsonSchema;
use serde::de::DeserializeOwned;

mod portable;

pub use self::portable::{STANDARD_FORMATS, portable};

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
pub use schemars;

/// A set of tools, exported with [`export_tools!`].
pub trait Tools {
    fn tools() -> Vec<Tool>;
}

type Handler = Box<dyn Fn(&str) -> Result<ToolOutput, ToolError>>;

/// One tool: its spec and the function that runs it. Schemas are generated
/// only when the host asks `describe()`, never on a call.
pub struct Tool {
    spec: ToolSpec,
    input_schema: fn() -> serde_json::Value,
    output_schema: Option<fn() -> serde_json::Value>,
    handler: Handler,
}

impl Tool {
    /// A tool whose input schema is generated from `A`. Defaults: duplicates
    /// allowed (by name), not cancellable, conversational delivery.
    pub fn new<A, E>(
        name: &str,
        description: &str,
        run: impl Fn(A) -> Result<ToolOutput, E> + 'static,
    ) -> Self
    where
        A: DeserializeOwned + JsonSchema,
        E: Into<ToolError>,
    {
        Self {
            spec: ToolSpec {
                name: name.to_owned(),
                description: description.to_owned(),
                input_schema: String::new(),
                output_schema: None,
                on_duplicate: DuplicatePolicy::Allow,
                duplicate_scope: DuplicateScope::Name,
                cancellable: false,
                delivery: Delivery::Conversational,
            },
            input_schema: schema_of::<A>,
            output_schema: None,
            handler: Box::new(move |arguments| {
                let args: A = self::args(arguments)?;
                run(args).map_err(Into::into)
            }),
        }
    }

    /// Declare the schema of the data the tool returns, generated from `T`.
    pub fn output<T: JsonSchema>(mut self) -> Self {
        self.output_schema = Some(schema_of::<T>);
        self
    }

    /// The tool checks [`cancelled`] and may be cancelled.
    pub fn cancellable(mut self) -> Self {
        self.spec.cancellable = true;
        self
    }

    /// What happens when the tool is called while a call of it runs.
    pub fn on_duplicate(mut self, policy: DuplicatePolicy, scope: DuplicateScope) -> Self {
        self.spec.on_duplicate = policy;
        self.spec.duplicate_scope = scope;
        self
    }

    /// The call answers at once; its outcome is logged, never told.
    pub fn fire_and_forget(mut self) -> Self {
        self.spec.delivery = Delivery::FireAndForget;
        self
    }

    /// The spec `describe()` returns, with its schemas generated.
    pub fn spec(&self) -> ToolSpec {
        ToolSpec {
            input_schema: (self.input_schema)().to_string(),
            output_schema: self.output_schema.map(|s| s().to_string()),
            ..self.spec.clone()
        }
    }
}

/// The JSON Schema of `T`, nested types inlined, made [`portable`]: OpenAI
/// strict mode and Gemini take it as it is, and an optional field also
/// accepts `null`, which [`args`] reads as absent.
pub fn schema_of<T: JsonSchema>() -> serde_json::Value {
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .with(|s| s.inline_subschemas = true)
        .into_generator()
        .into_root_schema_for::<T>();
    portable(schema.to_value())
}

#[doc(hidden)]
pub fn describe<T: Tools>() -> Vec<ToolSpec> {
    T::tools().iter().map(Tool::spec).collect()
}

#[doc(hidden)]
pub fn dispatch<T: Tools>(name: &str, arguments: &str) -> Result<ToolOutput, ToolError> {
    match T::tools().into_iter().find(|t| t.spec.name == name) {
        Some(tool) => (tool.handler)(arguments),
        None => Err(ToolError::Failed(format!("no tool named `{name}`"))),
    }
}

/// Export a [`Tools`] type as the plugin.
#[macro_export]
macro_rules! export_tools {
    ($tools:ty) => {
        struct __ToolhostExports;

        impl $crate::Plugin for __ToolhostExports {
            fn describe() -> ::std::vec::Vec<$crate::ToolSpec> {
                $crate::describe::<$tools>()
            }

            fn call(
                name: ::std::string::String,
                arguments: ::std::string::String,
            ) -> ::std::result::Result<$crate::ToolOutput, $crate::ToolError> {
                $crate::dispatch::<$tools>(&name, &arguments)
            }
        }

        $crate::export_plugin!(__ToolhostExports);
    };
}

/// A tool spec with the usual defaults: duplicates allowed (by name), not
/// cancellable, conversational delivery. For hand-written schemas.
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

/// A folder `dir` under the granted folder `root`, which must not climb out
/// of it: `"/data/notes"`, `"/notes"` and `"notes/"` all mean `root/notes`.
/// Returns the path and its prefix relative to `root` (`"notes/"`, or `""`
/// for `root` itself); a `..` part is invalid arguments.
pub fn dir_under(root: &str, dir: Option<&str>) -> Result<(std::path::PathBuf, String), ToolError> {
    let dir = dir.map(|d| {
        let d = d
            .strip_prefix(root)
            .filter(|rest| rest.is_empty() || rest.starts_with('/'))
            .unwrap_or(d);
        d.trim_matches('/')
    });
    let Some(dir) = dir.filter(|d| !d.is_empty()) else {
        return Ok((std::path::PathBuf::from(root), String::new()));
    };
    if dir.split(['/', '\\']).any(|part| part == "..") {
        return Err(ToolError::InvalidArguments(format!(
            "dir must stay inside {root}: `..` is not allowed"
        )));
    }
    Ok((std::path::Path::new(root).join(dir), format!("{dir}/")))
}

/// Parse the (already validated) arguments into `T`. A key whose value is
/// `null` is left out first: clients in OpenAI strict mode send `null` for
/// an optional argument the model did not give, and `T` sees it absent.
pub fn args<T: DeserializeOwned>(arguments: &str) -> Result<T, ToolError> {
    let invalid = |e: serde_json::Error| ToolError::InvalidArguments(e.to_string());
    let mut value: serde_json::Value = serde_json::from_str(arguments).map_err(invalid)?;
    portable::absent_nulls(&mut value);
    serde_json::from_value(value).map_err(invalid)
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

    /// The arguments were unusable; the message is for the model.
    pub fn invalid(message: impl std::fmt::Display) -> Self {
        ToolError::InvalidArguments(message.to_string())
    }
}

impl From<std::io::Error> for ToolError {
    fn from(e: std::io::Error) -> Self {
        ToolError::Failed(e.to_string())
    }
}

impl From<String> for ToolError {
    fn from(message: String) -> Self {
        ToolError::Failed(message)
    }
}

impl From<&str> for ToolError {
    fn from(message: &str) -> Self {
        ToolError::Failed(message.to_owned())
    }
}
