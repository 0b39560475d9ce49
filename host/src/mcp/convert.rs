//! Between toolhost's values and MCP's: tools, answers, and how a task ends.

use std::sync::Arc;

use rmcp::model::{CallToolResult, ContentBlock, JsonObject, MetaObject, TaskPayload, Tool};
use serde_json::{Value, json};

use crate::catalog::ToolView;
use crate::records::CallStatus;
use crate::session::Answer;

/// A tool as `tools/list` shows it.
pub(crate) fn tool(view: &ToolView) -> Tool {
    match serde_json::from_value(view.to_mcp()) {
        Ok(tool) => tool,
        // Plugins are refused unless their schema is an object; this keeps
        // a bad one from breaking the whole list.
        Err(e) => {
            tracing::warn!(tool = %view.name, error = %e, "tool not listable over MCP");
            Tool::new(
                view.name.clone(),
                view.description.clone(),
                Arc::new(object(json!({ "type": "object" }))),
            )
        }
    }
}

/// The `tools/call` result of a session's answer; a call that ran carries
/// its task id in `_meta` ([`TASK_ID_KEY`](super::TASK_ID_KEY)), which
/// reads its record later from any connection, also after a restart (B31).
pub(crate) fn answer(answer: &Answer) -> CallToolResult {
    let mut result = result(answer.output.clone(), answer.data.clone(), answer.is_error);
    if let Some(task_id) = &answer.task_id {
        let mut meta = JsonObject::new();
        meta.insert(super::TASK_ID_KEY.into(), Value::String(task_id.clone()));
        result.meta = Some(MetaObject(meta));
    }
    result
}

/// How a task ends when its call ended with `status` (B22 for
/// `cancelled`), `answer` being what the call would have answered: its
/// payload and status message. A tool error completes the task with an
/// `isError` result, as the extension asks; `failed` is kept for faults of
/// the host.
pub(crate) fn task_end(
    status: CallStatus,
    answer: Option<&Answer>,
) -> (TaskPayload, Option<String>) {
    match (status, answer) {
        (CallStatus::Cancelled, _) => (TaskPayload::Cancelled, Some("cancelled".into())),
        (CallStatus::Done | CallStatus::Error, Some(a)) => {
            let message = if a.is_error {
                a.output.clone()
            } else {
                "done".into()
            };
            (completed(&self::answer(a)), Some(message))
        }
        (other, _) => {
            let message = format!("the call ended as {other:?}");
            (
                TaskPayload::Failed {
                    error: object(json!({ "code": -32603, "message": message })),
                },
                Some(message),
            )
        }
    }
}

/// Text content, and with data its structured form plus the JSON text (for
/// clients that read only text).
fn result(text: String, data: Option<Value>, is_error: bool) -> CallToolResult {
    let mut content = Vec::new();
    if !text.is_empty() {
        content.push(ContentBlock::text(text.clone()));
    }
    if let Some(data) = &data {
        let json = crate::call::json_text(data);
        if json != text {
            content.push(ContentBlock::text(json));
        }
    }
    let mut result = if is_error {
        CallToolResult::error(content)
    } else {
        CallToolResult::success(content)
    };
    result.structured_content = data;
    result
}

fn completed(result: &CallToolResult) -> TaskPayload {
    TaskPayload::Completed {
        result: match serde_json::to_value(result) {
            Ok(Value::Object(o)) => o,
            _ => JsonObject::new(),
        },
    }
}

fn object(v: Value) -> JsonObject {
    match v {
        Value::Object(o) => o,
        _ => JsonObject::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::AnswerKind;

    fn answer_of(output: &str, data: Option<Value>, is_error: bool) -> Answer {
        Answer {
            call_id: "call_1".into(),
            kind: AnswerKind::Result,
            output: output.into(),
            is_error,
            data,
            task_id: None,
        }
    }

    #[test]
    fn data_comes_back_structured_and_as_json_text() {
        let data = json!({ "n": 2, "double": 4 });
        let r = answer(&answer_of(&data.to_string(), Some(data.clone()), false));
        assert_eq!(r.structured_content, Some(data.clone()));
        assert_eq!(r.content.len(), 1, "the JSON text once");
        let r = answer(&answer_of("the answer", Some(data), false));
        assert_eq!(r.content.len(), 2, "the text, then the JSON text");
        assert_eq!(r.is_error, Some(false));
    }

    #[test]
    fn errors_are_marked() {
        let r = answer(&answer_of("Error: bad", None, true));
        assert_eq!(r.is_error, Some(true));
        assert!(r.structured_content.is_none());
    }

    #[test]
    fn a_task_ends_by_the_status_of_its_call() {
        let (p, _) = task_end(CallStatus::Cancelled, None);
        assert!(matches!(p, TaskPayload::Cancelled));
        let (p, m) = task_end(CallStatus::Error, Some(&answer_of("it failed", None, true)));
        match p {
            TaskPayload::Completed { result } => assert_eq!(result["isError"], json!(true)),
            other => panic!("{other:?}"),
        }
        assert_eq!(m.as_deref(), Some("it failed"));
        let done = answer_of("done after 3 steps", None, false);
        match task_end(CallStatus::Done, Some(&done)).0 {
            TaskPayload::Completed { result } => {
                assert_eq!(result["content"][0]["text"], json!("done after 3 steps"))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            task_end(CallStatus::Interrupted, None).0,
            TaskPayload::Failed { .. }
        ));
    }
}
