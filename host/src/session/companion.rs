//! The companion tools (B25): the session answers them itself, from its
//! records, so a model can list, follow and cancel its background calls.
//! The status tool also reads the host's task store by task id, so a call
//! of an earlier session, or from before a restart, can be followed by
//! whoever was given its task id (B31).

use std::time::SystemTime;

use serde_json::{Value, json};

use super::Session;
use super::answer::Answer;
use crate::catalog::ToolView;

/// Lists the running and queued calls of the session.
pub const RUNNING_TASKS_TOOL: &str = "toolhost_running_tasks";
/// The status, updates and outcome of one call.
pub const TASK_STATUS_TOOL: &str = "toolhost_task_status";
/// Cancels a running or queued call.
pub const CANCEL_TASK_TOOL: &str = "toolhost_cancel_task";

/// Whether `tool` is a companion tool.
pub(crate) fn is_companion(tool: &str) -> bool {
    matches!(
        tool,
        RUNNING_TASKS_TOOL | TASK_STATUS_TOOL | CANCEL_TASK_TOOL
    )
}

/// The three tools as the model sees them, always the same so the tool list
/// (and the model's prompt cache) stays stable.
pub(crate) fn views() -> [ToolView; 3] {
    let call_id_schema = |description: &str| {
        json!({
            "type": "object",
            "properties": { "call_id": { "type": "string", "description": description } },
            "required": ["call_id"],
            "additionalProperties": false
        })
    };
    [
        ToolView::companion(
            RUNNING_TASKS_TOOL,
            "List the tool calls of this conversation that are still running or queued: call_id, tool, arguments, status, start time, elapsed time and latest update.",
            json!({ "type": "object", "properties": {}, "required": [], "additionalProperties": false }),
        ),
        ToolView::companion(
            TASK_STATUS_TOOL,
            "Get the status of one tool call by call_id: its status, every update, and its result or error.",
            call_id_schema(
                "The call_id of the call, or its task_id (to read a call of an earlier conversation).",
            ),
        ),
        ToolView::companion(
            CANCEL_TASK_TOOL,
            "Cancel a running or queued tool call by call_id. Only cancellable tools can be cancelled.",
            call_id_schema("The call_id of the call."),
        ),
    ]
}

/// The answer of a companion tool called as `call_id`.
pub(crate) async fn answer(
    session: &Session,
    call_id: &str,
    tool: &str,
    arguments: &str,
) -> Answer {
    match tool {
        RUNNING_TASKS_TOOL => running_tasks(session, call_id),
        TASK_STATUS_TOOL => match target(arguments) {
            Err(e) => Answer::error(call_id, e),
            Ok(target) => status(session, call_id, &target).await,
        },
        _ => match target(arguments) {
            Err(e) => Answer::error(call_id, e),
            Ok(target) => match session.cancel(&target) {
                Err(e) => Answer::error(call_id, format!("Error: {e}.")),
                // Still starting: it has no record.
                Ok(()) if session.record(&target).is_none() => Answer::text(
                    call_id,
                    super::AnswerKind::Result,
                    format!(
                        "Call `{target}` was cancelled before it started: it will not run (unless its tool, still loading, turns out not to be cancellable)."
                    ),
                ),
                Ok(()) => Answer::text(
                    call_id,
                    super::AnswerKind::Result,
                    format!(
                        "Cancelling call `{target}`. Ask toolhost_task_status for how it ended; do not assume its result."
                    ),
                ),
            },
        },
    }
}

/// The record of `target`: a call of this session by its call_id, else any
/// call by its task id. A task id is random and given only with its call's
/// answer, so knowing it is what entitles a reader; a call_id of another
/// session finds nothing.
async fn status(session: &Session, call_id: &str, target: &str) -> Answer {
    let record = match session.task_record(target) {
        Some(record) => Ok(Some(record)),
        None => {
            // Its record may still wait in the store's gathering window
            // (an inline call's end is written lazily): committed first.
            let store = &session.inner.registry.store;
            let _ = store.settle().await;
            store.get(target).await
        }
    };
    match record {
        Ok(Some(record)) => Answer::data(
            call_id,
            serde_json::to_value(&record).unwrap_or(Value::Null),
        ),
        Ok(None) => Answer::error(
            call_id,
            format!(
                "Error: there is no call `{target}` in this session, and no task with that id."
            ),
        ),
        Err(e) => Answer::error(
            call_id,
            format!(
                "Error: the call `{target}` is not in this session, and the task records cannot be read: {e}."
            ),
        ),
    }
}

fn running_tasks(session: &Session, call_id: &str) -> Answer {
    let now = SystemTime::now();
    let tasks: Vec<Value> = session
        .running()
        .iter()
        .map(|r| {
            json!({
                "call_id": r.call_id,
                "tool": r.tool,
                "arguments": r.arguments,
                "status": r.status,
                "started_at": r.started_at.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
                "elapsed_seconds": r.started_at.and_then(|t| now.duration_since(t).ok()).map(|d| d.as_secs_f64()),
                "last_update": r.updates.last().map(|u| u.message.clone()),
            })
        })
        .collect();
    Answer::data(call_id, json!({ "tasks": tasks }))
}

/// The `call_id` argument of the status and cancel tools.
fn target(arguments: &str) -> Result<String, String> {
    let v: Value = serde_json::from_str(arguments)
        .map_err(|e| format!("Error: invalid arguments: not valid JSON: {e}"))?;
    v.get("call_id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| "Error: invalid arguments: `call_id` (a string) is required.".to_owned())
}
