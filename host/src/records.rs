//! What happened to each call: its record (B31) and its events (B29).
//!
//! Records are plain data that serialize to JSON, so a lasting store can keep
//! them as they are; for now a session keeps them in memory.

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
    /// Running when the host stopped; set when a lasting store is read back.
    Interrupted,
}

impl CallStatus {
    pub fn is_live(self) -> bool {
        matches!(self, CallStatus::Queued | CallStatus::Running)
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
    pub arguments: Value,
    pub status: CallStatus,
    pub updates: Vec<UpdateRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Output>,
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

/// What a call event says (B29): `Started`, then `Updated` 0..n times, then
/// exactly one `Ended`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum EventKind {
    Started,
    Updated {
        /// 1 for the first update.
        n: usize,
        message: String,
    },
    Ended {
        /// `done`, `error` or `cancelled`.
        status: CallStatus,
        #[serde(skip_serializing_if = "Option::is_none")]
        result: Option<Output>,
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

fn rfc3339<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}

fn rfc3339_opt<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => rfc3339(t, s),
        None => s.serialize_none(),
    }
}
