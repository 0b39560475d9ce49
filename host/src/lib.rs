//! toolhost runs tools written as WebAssembly components for LLM agents,
//! each call in its own sandbox under fuel, memory and time limits.
//!
//! A plugin is a component built against `wit/plugin.wit`; a folder of them,
//! each with an optional `NAME.toml` manifest, is what a [`Host`] serves.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use toolhost::{Host, HostConfig};
//!
//! let host = Host::new(HostConfig::default())?;
//! let report = host.load_dir("plugins-dist").await?;
//! for refused in &report.refused {
//!     eprintln!("refused {refused}");
//! }
//! for entry in host.tools() {
//!     println!("{} ({})", entry.tool.name, entry.plugin.name());
//! }
//! let outcome = host.call("word_count", r#"{"text": "one two three"}"#).await;
//! println!("{} (fuel used: {})", outcome.model_text(), outcome.fuel_used);
//! # Ok(()) }
//! ```

mod bindings;
mod cache;
mod call;
mod config;
mod engine;
mod error;
mod folder;
mod host;
mod limits;
mod manifest;
pub mod mcp;
mod output;
mod plugin;
pub mod portable;
mod records;
mod sandbox;
mod schema;
mod session;
mod templates;

pub use self::bindings::{Delivery, DuplicatePolicy, DuplicateScope};
pub use self::cache::CompileCache;
pub use self::call::{CallOutcome, Output};
pub use self::config::{ConfigError, Profile};
pub use self::engine::{EngineConfig, FUEL_YIELD_INTERVAL};
pub use self::error::{CallError, Limit, LoadError, format_bytes};
pub use self::folder::FolderWatch;
pub use self::host::{Host, HostConfig, LoadReport, ToolEntry};
pub use self::limits::Limits;
pub use self::manifest::{
    DirGrant, LimitOverrides, Manifest, ManifestError, NetworkGrant, Permissions, ToolOverride,
};
pub use self::output::{MAX_LINE, OUTPUT_BUDGET};
pub use self::plugin::{Plugin, TOOL_INTERFACE, Tool, valid_tool_name};
pub use self::records::{CallEvent, CallRecord, CallStatus, EventKind, UpdateRecord};
pub use self::sandbox::{CallControl, CallIdentity};
pub use self::schema::{SchemaFormat, export as export_schema, title};
pub use self::session::{
    Answer, AnswerKind, CANCEL_TASK_TOOL, CONFIRM_ARGUMENT, CancelError, Item, RUNNING_TASKS_TOOL,
    ReplyRequest, Session, SessionOptions, TASK_STATUS_TOOL, ToolView,
};
pub use self::templates::Templates;
