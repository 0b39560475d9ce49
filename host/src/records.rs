//! What happened to each call: its record (B31) and its events (B29).
//!
//! Records are plain data that serialize to JSON: a session keeps them in
//! memory, and the task store (`store`) keeps them across restarts.

use std::sync::Arc;
use std::time::SystemTime;

use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::call::Output;

/// Where a call is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CallStatus {
    Queued,
    Running,
    Done,
    Error,
    Cancelled,
    /// Running when the host stopped: set when a lasting store is read
    /// back, and in a session's record of a call whose runtime shut down
    /// under it.
    Interrupted,
}

impl CallStatus {
    /// Every status, in the order of a call's life.
    pub const ALL: [CallStatus; 6] = [
        CallStatus::Queued,
        CallStatus::Running,
        CallStatus::Done,
        CallStatus::Error,
        CallStatus::Cancelled,
        CallStatus::Interrupted,
    ];

    pub fn is_live(self) -> bool {
        matches!(self, CallStatus::Queued | CallStatus::Running)
    }

    /// The name a record shows, as serialized: `queued`, `running`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            CallStatus::Queued => "queued",
            CallStatus::Running => "running",
            CallStatus::Done => "done",
            CallStatus::Error => "error",
            CallStatus::Cancelled => "cancelled",
            CallStatus::Interrupted => "interrupted",
        }
    }
}

impl std::str::FromStr for CallStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CallStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| format!("unknown call status `{s}`"))
    }
}

/// One update a call sent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpdateRecord {
    #[serde(serialize_with = "rfc3339")]
    pub at: SystemTime,
    pub message: String,
}

/// Everything known about one call (B31).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallRecord {
    pub call_id: String,
    pub session_id: String,
    pub tool: String,
    /// Shared by the call and its records in the session and the task
    /// store: a call's arguments are copied by none of them.
    pub arguments: Arc<Value>,
    pub status: CallStatus,
    pub updates: Vec<UpdateRecord>,
    /// What the tool returned: `None` while it runs, and when it failed or
    /// was stopped before returning (a cancelled call that returned has
    /// one). One copy, shared by the session's record, the call's event and
    /// the memory store's record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Arc<Output>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub fuel_used: u64,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: SystemTime,
    #[serde(serialize_with = "rfc3339_opt")]
    pub started_at: Option<SystemTime>,
    #[serde(serialize_with = "rfc3339_opt")]
    pub ended_at: Option<SystemTime>,
}

/// A call's record as a task store keeps it (B31): the record, the random
/// task id it is found by across sessions and restarts, and what the store
/// adds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskRecord {
    /// Random, known only to the client that started the call: a call_id
    /// alone does not tell calls of different sessions apart.
    pub task_id: String,
    #[serde(flatten)]
    pub call: CallRecord,
    /// Updates folded away past the store's bound per call, oldest first
    /// (`call.updates` keeps the newest).
    pub updates_dropped: u64,
    /// When a host found the call left `queued` or `running` by a host that
    /// stopped, and marked it `interrupted`.
    #[serde(
        serialize_with = "rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub interrupted_at: Option<SystemTime>,
}

impl TaskRecord {
    /// About how many bytes the record holds in memory: its arguments,
    /// updates, result and error, as parsed; `arguments_and_result` is
    /// what its arguments and result weigh ([`json_weight`],
    /// [`output_weight`]), measured by the caller before it takes the lock
    /// the record is under: a result may be 16 MiB of JSON, which takes
    /// milliseconds to walk.
    pub(crate) fn weight(&self, arguments_and_result: usize) -> usize {
        let c = &self.call;
        let updates: usize = c
            .updates
            .iter()
            .map(|u| std::mem::size_of::<UpdateRecord>() + u.message.len())
            .sum();
        std::mem::size_of::<Self>()
            + arguments_and_result
            + updates
            + c.error.as_ref().map_or(0, String::len)
    }
}

/// About how many bytes a call's output holds in memory: its text and
/// data.
pub(crate) fn output_weight(output: &Output) -> usize {
    output.text.as_ref().map_or(0, String::len) + output.data.as_ref().map_or(0, json_weight)
}

/// About how many bytes a parsed JSON value holds: its nodes and text.
pub(crate) fn json_weight(value: &serde_json::Value) -> usize {
    use serde_json::Value;
    let node = std::mem::size_of::<Value>();
    node + match value {
        Value::String(s) => s.len(),
        Value::Array(items) => items.iter().map(json_weight).sum(),
        // A map's entry: its key, and about a node more for the tree.
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| k.len() + node + json_weight(v))
            .sum(),
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
    }
}

/// What a call event says (B29): `Started`, then `Updated` 0..n times, then
/// exactly one `Ended`. A call that waits for duplicates first (B14) says
/// `Queued` before all of them.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum EventKind {
    Queued,
    Started,
    Updated {
        /// 1 for the first update.
        n: usize,
        message: String,
        /// The fuel the call had burned when it sent the update.
        fuel_used: u64,
    },
    Ended {
        /// `done`, `error` or `cancelled`.
        status: CallStatus,
        /// What the tool returned, if it returned (shared with the records).
        #[serde(skip_serializing_if = "Option::is_none")]
        result: Option<Arc<Output>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        fuel_used: u64,
    },
}

/// One event of one call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallEvent {
    pub call_id: String,
    pub session_id: String,
    pub tool: String,
    #[serde(serialize_with = "rfc3339")]
    pub at: SystemTime,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// One event of any session of a host ([`Host::subscribe`](crate::Host::subscribe)),
/// with the task id that finds its record in the task store.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostEvent {
    pub task_id: String,
    /// The call's arguments, on its `queued` and `started` events only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
    #[serde(flatten)]
    pub event: CallEvent,
}

fn rfc3339<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}

fn rfc3339_opt<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => rfc3339(t, s),
        None => s.serialize_none(),
    }
}
