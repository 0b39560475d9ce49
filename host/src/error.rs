//! The two kinds of failure, kept apart: what the model is told, and what
//! the operator needs to know.

use std::path::PathBuf;
use std::time::Duration;

/// A plugin file that was refused, with one line saying why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct LoadError {
    pub path: PathBuf,
    pub reason: String,
}

impl LoadError {
    pub(crate) fn new(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// A limit that ended a call (B23).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The fuel budget, in units of fuel.
    Fuel(u64),
    /// The memory limit, in bytes.
    Memory(u64),
    /// The wall-clock timeout.
    Timeout(Duration),
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Limit::Fuel(n) => write!(f, "fuel limit of {n} units"),
            Limit::Memory(b) => write!(f, "memory limit of {}", format_bytes(*b)),
            Limit::Timeout(d) => write!(f, "time limit of {}", humantime::format_duration(*d)),
        }
    }
}

/// Why a call did not produce a result.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// No enabled tool has this name (B8).
    #[error("unknown tool `{name}`")]
    UnknownTool { name: String },
    /// The arguments failed validation before the plugin was entered (B7).
    #[error("invalid arguments for tool `{tool}`: {message}")]
    InvalidArguments { tool: String, message: String },
    /// The tool said its arguments were unusable.
    #[error("{0}")]
    ToolInvalidArguments(String),
    /// The tool said it failed.
    #[error("{0}")]
    ToolFailed(String),
    /// A limit ended the call (B23).
    #[error("the call was stopped: it exceeded its {0}")]
    Limit(Limit),
    /// The plugin trapped or panicked; the detail is for the log only (B5).
    #[error("the tool crashed")]
    Crashed { detail: String },
    /// The host could not run the call; the detail is for the log only (B5).
    #[error("the tool could not be run")]
    Unavailable { detail: String },
    /// The call was cancelled before it produced a result.
    #[error("the call was cancelled")]
    Cancelled,
}

impl CallError {
    /// The message the model reads. Plugin-written messages pass as they are;
    /// traps and host failures become a short generic sentence (B5).
    pub fn model_message(&self) -> String {
        match self {
            CallError::UnknownTool { name } => {
                format!(
                    "Error: there is no tool named `{name}`. Use one of the tools you were given."
                )
            }
            CallError::Crashed { .. } => {
                "Error: the tool crashed while running. Do not assume any result.".to_owned()
            }
            CallError::Unavailable { .. } => {
                "Error: the tool could not be run right now. Do not assume any result.".to_owned()
            }
            other => format!("Error: {other}"),
        }
    }

    /// The detail the operator needs, where it differs from the message.
    pub fn detail(&self) -> Option<&str> {
        match self {
            CallError::Crashed { detail } | CallError::Unavailable { detail } => Some(detail),
            _ => None,
        }
    }
}

/// Sizes as people write them: `64 MiB`, `1 GiB`, `1.5 MiB`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (size, unit) in UNITS {
        if bytes >= size {
            return if bytes.is_multiple_of(size) {
                format!("{} {unit}", bytes / size)
            } else {
                format!("{:.1} {unit}", bytes as f64 / size as f64)
            };
        }
    }
    format!("{bytes} B")
}
