//! The two kinds of failure, kept apart: what the model is told (a
//! [`CallError`]'s model message), and what the operator needs to know (why a
//! plugin or a file was refused, the detail of a crash).

use std::path::PathBuf;
use std::time::Duration;

use crate::session::{CANCEL_TASK_TOOL, RUNNING_TASKS_TOOL};

/// The interface every plugin exports.
pub(crate) const TOOL_INTERFACE: &str = "toolhost:plugin/tool@0.1.0";

/// A plugin file that was refused, and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {kind}", path.display())]
pub struct LoadError {
    pub path: PathBuf,
    pub kind: LoadErrorKind,
}

impl LoadError {
    pub(crate) fn new(path: impl Into<PathBuf>, kind: LoadErrorKind) -> Self {
        Self {
            path: path.into(),
            kind,
        }
    }

    /// Why, in one line, without the file.
    pub fn reason(&self) -> String {
        self.kind.to_string()
    }
}

/// Why a plugin was refused.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LoadErrorKind {
    #[error("cannot read: {0}")]
    Unreadable(String),
    #[error("the file name is not valid UTF-8")]
    BadFileName,
    #[error("not a WebAssembly file")]
    NotWasm,
    #[error(
        "a core WebAssembly module, not a component; build for wasm32-wasip2 or run it through `wasm-tools component new`"
    )]
    CoreModule,
    #[error("an unknown WebAssembly layer")]
    UnknownLayer,
    #[error("bad manifest {0}")]
    BadManifest(FileError),
    #[error("limits.memory of {} is more than the host allows ({})", format_bytes(*asked), format_bytes(*allowed))]
    MemoryOverMax { asked: u64, allowed: u64 },
    #[error(
        "limits.max-concurrency of {asked} is more than the host allows ({allowed}: the other plugins keep part of the instance pool)"
    )]
    ConcurrencyOverMax { asked: u32, allowed: u32 },
    #[error("permissions.dirs grants write access to {}, which holds the plugin's own file or manifest", dir.display())]
    WritableSelf { dir: PathBuf },
    #[error("not a valid component: {0}")]
    NotAComponent(String),
    #[error(
        "does not export {TOOL_INTERFACE} (it exports: {exports}); build it against wit/plugin.wit"
    )]
    MissingExport { exports: String },
    #[error("imports something the host does not provide: {0}")]
    UnknownImport(String),
    #[error("its {TOOL_INTERFACE} export does not match wit/plugin.wit: {0}")]
    WrongExport(String),
    #[error("describe() did not return within {}", humantime::format_duration(*.0))]
    DescribeTimedOut(Duration),
    #[error(
        "no instance of the pool came free within {} to run describe(): calls and other describe()s hold them all",
        humantime::format_duration(*.0)
    )]
    PoolBusy(Duration),
    #[error("describe() used more than its {0} units of fuel")]
    DescribeOutOfFuel(u64),
    #[error("describe() failed: {0}")]
    DescribeTrapped(String),
    #[error("describe() returned no tools")]
    NoTools,
    #[error("describe() returned {count} tools, more than the {max} a plugin may have")]
    TooManyTools { count: usize, max: usize },
    #[error("invalid tool name {0:?}: use 1-64 characters of a-z, A-Z, 0-9, _ and -")]
    BadToolName(String),
    #[error("describe() lists the tool `{0}` twice")]
    ToolTwice(String),
    #[error(
        "the tool name `{0}` is reserved: names starting with `toolhost_`, in any case, are the host's own tools"
    )]
    ReservedToolName(String),
    /// A tool's schema or declaration cannot be used.
    #[error("tool `{tool}`: {problem}")]
    InvalidTool { tool: String, problem: String },
    #[error("manifest [tools.{0}]: the plugin has no tool named `{0}`")]
    UnknownToolOverride(String),
    #[error("the tool name `{tool}` is already provided by {}", other.display())]
    NameClash { tool: String, other: PathBuf },
    /// The host failed while loading; the detail is in the message.
    #[error("{0}")]
    Host(String),
    /// The host stopped (its runtime shut down) before the load ended.
    #[error("the host stopped before the load ended")]
    Stopped,
    /// A load of the file begun later, or its unload, ended first and
    /// decides: a version that serves overrides every earlier load, a
    /// refusal every earlier refusal. This load changed nothing, and is
    /// not recorded as a refusal.
    #[error("a later load of the file, or its unload, ended first; this load is not applied")]
    Superseded,
}

/// A file of the host or of a plugin (`toolhost.toml`, a manifest) that
/// cannot be used: the file, and what is wrong, naming the key.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct FileError {
    pub path: PathBuf,
    pub message: String,
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
    /// The number of updates a call may send.
    Updates(u64),
    /// The size of one update, in bytes.
    UpdateSize(u64),
    /// The size of a result (text and data), in bytes.
    ResultSize(u64),
    /// The host resources (streams, pollables, HTTP fields...) a call may
    /// hold at once.
    Resources(u64),
    /// The size of one `wasi:http` header map, in bytes.
    HttpFields(u64),
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Limit::Fuel(n) => write!(f, "fuel limit of {n} units"),
            Limit::Memory(b) => write!(f, "memory limit of {}", format_bytes(*b)),
            Limit::Timeout(d) => write!(f, "time limit of {}", humantime::format_duration(*d)),
            Limit::Updates(n) => write!(f, "limit of {n} updates"),
            Limit::UpdateSize(b) => write!(f, "update size limit of {}", format_bytes(*b)),
            Limit::ResultSize(b) => write!(f, "result size limit of {}", format_bytes(*b)),
            Limit::Resources(n) => write!(f, "limit of {n} resources held at once"),
            Limit::HttpFields(b) => {
                write!(f, "HTTP header size limit of {}", format_bytes(*b))
            }
        }
    }
}

/// Why a call did not produce a result.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
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
    /// The session already has its most calls running or waiting
    /// (`SessionOptions::max_live`); the call was not started.
    #[error(
        "not started: this conversation already has {max} tool calls running or queued, the most it may have. List them with {} and stop one with {}, or wait for one to end; then call again. Do not assume a result",
        RUNNING_TASKS_TOOL,
        CANCEL_TASK_TOOL
    )]
    SessionFull { max: usize },
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

    /// The limit that ended a call, read back from its
    /// [`model_message`](Self::model_message), which is all a call's record
    /// keeps of its error: `fuel limit of 1000 units` for
    /// `Error: the call was stopped: it exceeded its fuel limit of 1000
    /// units`; `None` when no limit ended it. A plugin whose own error
    /// message reads like a limit's is read as one: this is for the
    /// operator's eyes (the dashboard), not for decisions.
    pub fn limit_in(message: &str) -> Option<&str> {
        message
            .strip_prefix("Error: the call was stopped: it exceeded its ")
            .filter(|limit| !limit.is_empty())
    }
}

/// Sizes as people write them: `64 MiB`, `1 GiB`, `1.5 MiB`.
pub(crate) fn format_bytes(bytes: u64) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_limit_is_read_back_from_its_message() {
        let limits = [
            Limit::Fuel(1_000),
            Limit::Memory(64 << 20),
            Limit::Timeout(Duration::from_millis(300)),
            Limit::Updates(10),
            Limit::UpdateSize(4 << 10),
            Limit::ResultSize(1 << 20),
            Limit::Resources(100),
            Limit::HttpFields(64 << 10),
        ];
        for limit in limits {
            let message = CallError::Limit(limit).model_message();
            assert_eq!(
                CallError::limit_in(&message),
                Some(limit.to_string().as_str()),
                "{message}"
            );
        }
        for other in [
            CallError::ToolFailed("no such file".into()),
            CallError::Cancelled,
            CallError::Crashed {
                detail: "unreachable".into(),
            },
        ] {
            assert_eq!(CallError::limit_in(&other.model_message()), None);
        }
    }
}
