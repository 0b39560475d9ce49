//! What a session answers: the answer of a call, the conversation items
//! that follow it, and the one place where the end of a call becomes text
//! (through the templates, B30).

use serde::Serialize;
use serde_json::Value;

use crate::call::Output;
use crate::records::CallStatus;
use crate::templates::{Templates, render};

/// How a call was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerKind {
    /// The tool's result (B1), or its error (B5).
    Result,
    /// The first update: the call goes on in the background (B2).
    Released,
    /// A fire-and-forget call started (B9).
    Started,
    /// A duplicate not started, under `reject` or `confirm` (B11, B12).
    Duplicate,
    /// A duplicate waiting under `queue` (B14).
    Queued,
    /// Cancelled before its first update (B22).
    Cancelled,
}

/// The output that answers a call, under the call's own call_id.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    pub call_id: String,
    pub kind: AnswerKind,
    /// What the model reads.
    pub output: String,
    pub is_error: bool,
    /// The structured result, when the tool returned data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// The call's task id, for a call that ran: random, known only to
    /// whoever got this answer, it finds the call's record in the task
    /// store from any session and after a restart (B31).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
}

impl Answer {
    pub(crate) fn text(call_id: &str, kind: AnswerKind, output: String) -> Self {
        Self {
            call_id: call_id.to_owned(),
            kind,
            output,
            is_error: false,
            data: None,
            task_id: None,
        }
    }

    pub(crate) fn error(call_id: &str, output: String) -> Self {
        Self {
            is_error: true,
            ..Self::text(call_id, AnswerKind::Result, output)
        }
    }

    /// Data the model reads as JSON text.
    pub(crate) fn data(call_id: &str, data: Value) -> Self {
        let text = crate::call::json_text(&data);
        Self {
            data: Some(data),
            ..Self::text(call_id, AnswerKind::Result, text)
        }
    }
}

/// A conversation item produced after a call was answered: a function call
/// (`tool` with `arguments`) and its `output`, under `call_id`
/// (`<call>_update_<n>` or `<call>_final`) (B3, B4, B6, B22).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Item {
    pub call_id: String,
    /// The call this item belongs to.
    pub origin: String,
    pub tool: String,
    pub arguments: Value,
    pub output: String,
    pub is_error: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// The agent's turn when the item arrived (B27).
    #[serde(skip)]
    pub(crate) turn: u64,
}

/// What the model reads of a call cancelled (B22): its answer, or, once
/// `released`, what its end adds.
pub(crate) fn cancelled(
    templates: &Templates,
    call_id: &str,
    tool: &str,
    released: bool,
) -> Answer {
    let kind = if released {
        AnswerKind::Result
    } else {
        AnswerKind::Cancelled
    };
    let fields = [("call_id", call_id), ("tool", tool)];
    Answer::text(call_id, kind, render(&templates.cancelled, &fields))
}

/// What the model reads when a call ends: `released` says whether the call
/// had already answered (then its end is a `<call>_final` item, B4, B6,
/// B22) or answers now (B1, B5, B22). `error` is the model's message of a
/// failed call. `None`: a released call's result with neither text nor
/// data adds nothing (B4).
pub(crate) fn ending(
    templates: &Templates,
    call_id: &str,
    tool: &str,
    status: CallStatus,
    result: Option<&Output>,
    error: Option<&str>,
    released: bool,
) -> Option<Answer> {
    let error = error.unwrap_or("the call failed");
    match (status, released) {
        (CallStatus::Cancelled, _) => Some(cancelled(templates, call_id, tool, released)),
        (CallStatus::Done, false) => Some(Answer {
            data: result.and_then(|o| o.data.clone()),
            ..Answer::text(
                call_id,
                AnswerKind::Result,
                result.and_then(Output::model_text).unwrap_or_default(),
            )
        }),
        (CallStatus::Done, true) => {
            let o = result?;
            let text = o.model_text()?;
            Some(Answer {
                data: o.data.clone(),
                ..Answer::text(
                    call_id,
                    AnswerKind::Result,
                    render(
                        &templates.result,
                        &[("call_id", call_id), ("tool", tool), ("output", &text)],
                    ),
                )
            })
        }
        (_, false) => Some(Answer::error(call_id, error.to_owned())),
        (_, true) => Some(Answer::error(
            call_id,
            render(
                &templates.error,
                &[("call_id", call_id), ("tool", tool), ("error", error)],
            ),
        )),
    }
}
