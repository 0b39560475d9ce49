//! toolhost runs tools written as WebAssembly components for LLM agents,
//! each call in its own sandbox under fuel, memory and time limits.
//!
//! A plugin is a component built against `wit/plugin.wit`; a folder of them,
//! each with an optional `NAME.toml` manifest, is what a [`Host`] serves. A
//! conversation is a [`Session`]: every call in it is a background task whose
//! first update answers the model while the work goes on.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use toolhost::{Host, HostConfig};
//!
//! let host = Host::new(HostConfig::default())?;
//! let report = host.load_dir("dist/plugins").await?;
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
//!
//! The path of a call, and what each module does, is in `ARCHITECTURE.md`.

mod arguments;
mod bindings;
mod call;
pub mod catalog;
mod config;
pub mod dashboard;
mod engine;
mod error;
mod folder;
#[cfg(test)]
mod fuzz;
mod host;
mod ids;
mod leftovers;
mod limits;
mod listen;
pub mod manifest;
pub mod mcp;
mod output;
mod plugin;
pub mod portable;
mod producers;
mod records;
mod registry;
mod repoll;
mod sandbox;
mod schema;
mod session;
mod slots;
mod startup;
pub mod store;
mod templates;
#[cfg(test)]
mod testing;

pub use self::arguments::CONFIRM_ARGUMENT;
pub use self::bindings::{Delivery, DuplicatePolicy, DuplicateScope};
pub use self::call::{CallOutcome, Output};
pub use self::config::{DashboardConfig, HostConfig, Profile};
pub use self::engine::{EngineConfig, InstanceUse};
pub use self::error::{CallError, FileError, Limit, LoadError, LoadErrorKind};
pub use self::folder::{FolderChanges, FolderWatch};
pub use self::host::Host;
pub use self::limits::{Limits, Metering};
pub use self::plugin::{Plugin, Tool};
pub use self::records::{CallEvent, CallRecord, CallStatus, EventKind, HostEvent, UpdateRecord};
pub use self::registry::{LoadReport, ToolEntry};
pub use self::session::{
    Answer, AnswerKind, AnswerMode, CANCEL_TASK_TOOL, CancelError, Item, RUNNING_TASKS_TOOL,
    ReplyRequest, Session, SessionOptions, TASK_STATUS_TOOL,
};
pub use self::templates::Templates;
