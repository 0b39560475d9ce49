//! Between toolhost's values and MCP's: tools, answers, and how a task ends.

use std::sync::Arc;

use rmcp::model::{CallToolResult, ContentBlock, JsonObject, TaskPayload, Tool};
use serde_json::{Value, json};

use crate::call::Output;
use crate::records::{CallRecord, CallStatus};
use crate::session::{Answer, ToolView};

/// A tool as `tools/list` shows it.
pub(crate) fn tool(view: &ToolView) -> Tool {
    let input = match &view.input_schema {
        Value::Object(o) => o.clone(),
        // Plugins are refused unless their schema is an object; this keeps
        // a bad one from breaking the whole list.
        _ => object(json!({ "type": "object" })),
    };
    let mut tool = Tool::new(view.name.clone(), view.description.clone(), Arc::new(input))
        .with_title(crate::schema::title(&view.name));
    // A client checks every answer against a listed output schema, and a
    // first update or a duplicate notice carries no data: list it only for
    // tools that always answer with their result.
    if let Some(Value::Object(output)) = view
        .output_schema
        .as_ref()
        .filter(|_| view.answers_with_result)
    {
        tool = tool.with_raw_output_schema(Arc::new(output.clone()));
    }
    tool
}

/// The `tools/call` result of a session's answer.
pub(crate) fn answer(answer: &Answer) -> CallToolResult {
    result(answer.output.clone(), answer.data.clone(), answer.is_error)
}

/// The `tools/call` result of a call that has ended: its result, its error
/// or the cancellation (B22).
pub(crate) fn ended(record: &CallRecord) -> CallToolResult {
    match record.status {
        CallStatus::Done => {
            let output = record.result.as_ref();
            let text = output.and_then(Output::model_text).unwrap_or_default();
            result(text, output.and_then(|o| o.data.clone()), false)
        }
        CallStatus::Cancelled => result("the call was cancelled".into(), None, true),
        _ => {
            let error = record.error.as_deref().unwrap_or("the call failed");
            result(error.to_owned(), None, true)
        }
    }
}

/// How a task ends when its call ended with `status` (B22 for
/// `cancelled`): its payload and status message. A tool error completes the
/// task with an `isError` result, as the extension asks; `failed` is kept
/// for faults of the host.
pub(crate) fn task_end(
    status: CallStatus,
    output: Option<&Output>,
    error: Option<&str>,
) -> (TaskPayload, Option<String>) {
    match status {
        CallStatus::Done => {
            let text = output.and_then(Output::model_text).unwrap_or_default();
            let data = output.and_then(|o| o.data.clone());
            let result = result(text, data, false);
            (completed(&result), Some("done".into()))
        }
        CallStatus::Error => {
            let message = error.unwrap_or("the call failed").to_owned();
            let result = result(message.clone(), None, true);
            (completed(&result), Some(message))
        }
        CallStatus::Cancelled => (TaskPayload::Cancelled, Some("cancelled".into())),
        other => {
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
        let json = data.to_string();
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
        let (p, _) = task_end(CallStatus::Cancelled, None, None);
        assert!(matches!(p, TaskPayload::Cancelled));
        let (p, m) = task_end(CallStatus::Error, None, Some("it failed"));
        match p {
            TaskPayload::Completed { result } => assert_eq!(result["isError"], json!(true)),
            other => panic!("{other:?}"),
        }
        assert_eq!(m.as_deref(), Some("it failed"));
        let out = Output {
            text: Some("done after 3 steps".into()),
            data: None,
        };
        match task_end(CallStatus::Done, Some(&out), None).0 {
            TaskPayload::Completed { result } => {
                assert_eq!(result["content"][0]["text"], json!("done after 3 steps"))
            }
            other => panic!("{other:?}"),
        }
    }
}
