//! Sessions: one conversation's calls, each a background task, with
//! duplicate policies, cancellation, records, events and the delivery of
//! later results (B2–B4, B6, B9–B16, B20–B30).
//!
//! ```no_run
//! # async fn demo(host: toolhost::Host) {
//! let session = host.open_session(Default::default());
//! let answer = session.call("c1", "index_directory", "{}").await;
//! println!("{}", answer.output); // the result, or the first update
//! // Later, when the agent is idle:
//! if let Some(delivery) = session.next_reply().await {
//!     for item in &delivery.items {
//!         println!("{} -> {}", item.call_id, item.output);
//!     }
//!     println!("{}", delivery.instructions);
//!     delivery.ack(); // dropped without ack, the items come back (B28)
//! }
//! session.close().await;
//! # }
//! ```

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::oneshot::error::RecvError;
use tokio::sync::{Notify, broadcast, mpsc, oneshot, watch};

use crate::bindings::{Delivery, DuplicatePolicy, DuplicateScope};
use crate::call::{self, CallOutcome};
use crate::error::CallError;
use crate::host::{Host, ToolEntry};
use crate::records::{CallEvent, CallRecord, CallStatus, EventKind, UpdateRecord};
use crate::sandbox::{CallControl, CallIdentity};
use crate::templates::{Templates, render};

/// The argument B12 adds to tools whose duplicate policy is `confirm`.
pub const CONFIRM_ARGUMENT: &str = "confirm_duplicate";
/// The companion tools (B25).
pub const RUNNING_TASKS_TOOL: &str = "toolhost_running_tasks";
pub const TASK_STATUS_TOOL: &str = "toolhost_task_status";
pub const CANCEL_TASK_TOOL: &str = "toolhost_cancel_task";

/// Settings of a session.
///
/// Defaults:
/// - `templates`: the host's templates ([`HostConfig::templates`](crate::HostConfig))
/// - `close_timeout`: 30 seconds that non-cancellable calls get to finish
///   when the session closes (B24)
/// - `settle`: 20 ms that a delivery waits after the first pending item, so
///   results arriving together go out as one reply (B26)
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub id: Option<String>,
    pub templates: Option<Arc<Templates>>,
    pub close_timeout: Duration,
    pub settle: Duration,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            id: None,
            templates: None,
            close_timeout: Duration::from_secs(30),
            settle: Duration::from_millis(20),
        }
    }
}

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
    #[serde(skip)]
    turn: u64,
}

/// A tool as a session lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ToolView {
    pub name: String,
    pub description: String,
    pub input_schema: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
    /// The plugin that provides it; `None` for the companion tools.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    pub cancellable: bool,
    pub background: bool,
    /// Whether the answer of a call is always the tool's result: not a
    /// duplicate notice (a policy other than `allow`), a started notice
    /// (fire-and-forget) or, as far as the declaration says, a first update
    /// (cancellable tools are the ones that run long and report progress).
    /// MCP lists a tool's output schema only then: its clients check every
    /// answer against it.
    pub answers_with_result: bool,
}

/// Why a cancel was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CancelError {
    #[error("there is no running or queued call `{0}` in this session")]
    NotFound(String),
    #[error("call `{call_id}` ({tool}) is not cancellable")]
    NotCancellable { call_id: String, tool: String },
}

/// A running or queued call and what is needed to stop it or wait for it.
struct Live {
    tool: String,
    key: Option<String>,
    cancellable: bool,
    grace: Duration,
    control: Arc<CallControl>,
    ended: watch::Receiver<bool>,
}

#[derive(Default)]
struct State {
    closed: bool,
    live: HashMap<String, Live>,
    /// Call ids in the order calls were made, with their records.
    order: Vec<String>,
    records: HashMap<String, CallRecord>,
    pending: VecDeque<Item>,
    delivery_out: bool,
    /// Bumped each time the agent speaks (B27).
    turn: u64,
}

struct Inner {
    id: String,
    host: Host,
    templates: Arc<Templates>,
    close_timeout: Duration,
    settle: Duration,
    state: Mutex<State>,
    events: broadcast::Sender<CallEvent>,
    /// Woken when pending items arrive or a delivery comes back.
    pending_changed: Notify,
    /// Woken when a live call ends.
    call_ended: Notify,
    next_reply: AtomicU64,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn emit(&self, call_id: &str, tool: &str, kind: EventKind) {
        // No subscriber is fine.
        let _ = self.events.send(CallEvent {
            call_id: call_id.to_owned(),
            session_id: self.id.clone(),
            tool: tool.to_owned(),
            at: SystemTime::now(),
            kind,
        });
    }
}

impl Drop for Inner {
    /// The last handle is gone: nothing may run on (B24).
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        for live in state.live.values() {
            live.control.force_stop();
        }
    }
}

/// One conversation with a host. Cheap to clone; clones share the session.
/// When the last clone is dropped its calls are stopped; [`close`](Self::close)
/// does it gracefully.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

impl Host {
    /// Open a session on this host.
    pub fn open_session(&self, options: SessionOptions) -> Session {
        let id = options
            .id
            .unwrap_or_else(|| format!("session_{}", NEXT_SESSION.fetch_add(1, Ordering::Relaxed)));
        let templates = options
            .templates
            .unwrap_or_else(|| Arc::new(self.config().templates.clone()));
        Session {
            inner: Arc::new(Inner {
                id,
                host: self.clone(),
                templates,
                close_timeout: options.close_timeout,
                settle: options.settle,
                state: Mutex::default(),
                events: broadcast::channel(4096).0,
                pending_changed: Notify::new(),
                call_ended: Notify::new(),
                next_reply: AtomicU64::new(1),
            }),
        }
    }
}

impl Session {
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The tools as the model sees them: every enabled tool, `confirm`
    /// tools with the `confirm_duplicate` argument (B12), and the three
    /// companion tools (B25), always listed while any tool is loaded so the
    /// list stays stable.
    pub fn tools(&self) -> Vec<ToolView> {
        let entries = self.inner.host.tools();
        let mut tools: Vec<ToolView> = entries
            .iter()
            .map(|e| {
                let t = &e.tool;
                let mut schema = t.input_schema.clone();
                if t.on_duplicate == DuplicatePolicy::Confirm {
                    add_confirm_argument(&mut schema);
                }
                ToolView {
                    name: t.name.clone(),
                    description: t.description.clone(),
                    input_schema: schema,
                    output_schema: t.output_schema.clone(),
                    plugin: Some(e.plugin.name().to_owned()),
                    cancellable: t.cancellable,
                    background: true,
                    answers_with_result: !t.cancellable
                        && t.on_duplicate == DuplicatePolicy::Allow
                        && t.delivery == Delivery::Conversational,
                }
            })
            .collect();
        if !tools.is_empty() {
            tools.extend(companion_tools());
        }
        tools
    }

    /// Call a tool under `call_id` and wait for its answer: the result, the
    /// first update, a duplicate notice, an error, or a started notice.
    /// The call goes on after the answer; what follows is delivered.
    ///
    /// # Cancel safety
    /// Dropping the future does not stop the call; its answer is lost and its
    /// record and events remain.
    pub async fn call(&self, call_id: &str, tool: &str, arguments: &str) -> Answer {
        let inner = &self.inner;
        match tool {
            RUNNING_TASKS_TOOL => return self.running_tasks_answer(call_id),
            TASK_STATUS_TOOL => return self.task_status_answer(call_id, arguments),
            CANCEL_TASK_TOOL => return self.cancel_answer(call_id, arguments),
            _ => {}
        }
        let error = |e: CallError| Answer {
            call_id: call_id.to_owned(),
            kind: AnswerKind::Result,
            output: e.model_message(),
            is_error: true,
            data: None,
        };
        let Some(entry) = inner.host.tool(tool).await else {
            return error(CallError::UnknownTool {
                name: tool.to_owned(),
            });
        };
        let t = &entry.tool;
        let mut args = match call::parse_arguments(t, arguments) {
            Ok(a) => a,
            Err(e) => return error(e),
        };
        let confirmed = match take_confirm(t, &mut args) {
            Ok(c) => c,
            Err(e) => return error(e),
        };
        if let Err(e) = call::check_arguments(t, &args) {
            return error(e);
        }
        let key = (t.duplicate_scope == DuplicateScope::NameAndArguments)
            .then(|| canonical_json(&with_defaults(&t.input_schema, &args)));

        // B16: the duplicate check and the registration of the call happen
        // under one lock.
        let (wait_for, answer_now) = {
            let mut state = inner.state();
            if state.closed {
                return error(CallError::Unavailable {
                    detail: "the session is closed".into(),
                });
            }
            if state.records.contains_key(call_id) {
                return error(CallError::InvalidArguments {
                    tool: t.name.clone(),
                    message: format!("call_id `{call_id}` was already used in this session"),
                });
            }
            // Under `allow` duplicates do not matter: no scan of the running
            // calls, which may be thousands.
            let dups: Vec<(&String, &Live)> = if t.on_duplicate == DuplicatePolicy::Allow {
                Vec::new()
            } else {
                state
                    .live
                    .iter()
                    .filter(|(_, l)| l.tool == t.name && (key.is_none() || l.key == key))
                    .collect()
            };
            let notice = |template: &str| {
                let running = dups
                    .iter()
                    .map(|(id, _)| format!("`{id}`"))
                    .collect::<Vec<_>>()
                    .join(", ");
                Answer {
                    call_id: call_id.to_owned(),
                    kind: AnswerKind::Duplicate,
                    output: render(
                        template,
                        &[
                            ("call_id", call_id),
                            ("tool", &t.name),
                            ("running", &running),
                        ],
                    ),
                    is_error: false,
                    data: None,
                }
            };
            let mut wait_for = Vec::new();
            let mut answer_now = None;
            if !dups.is_empty() {
                match t.on_duplicate {
                    DuplicatePolicy::Allow => {}
                    DuplicatePolicy::Reject => return notice(&inner.templates.reject),
                    DuplicatePolicy::Confirm if !confirmed => {
                        return notice(&inner.templates.confirm);
                    }
                    DuplicatePolicy::Confirm => {}
                    DuplicatePolicy::Replace => {
                        if let Some((id, _)) = dups.iter().find(|(_, l)| !l.cancellable) {
                            return error(CallError::ToolFailed(format!(
                                "cannot replace call `{id}`: it is not cancellable; nothing was cancelled"
                            )));
                        }
                        for (_, l) in &dups {
                            cancel_live(l);
                            wait_for.push(l.ended.clone());
                        }
                    }
                    DuplicatePolicy::Queue => {
                        wait_for = dups.iter().map(|(_, l)| l.ended.clone()).collect();
                        let mut a = notice(&inner.templates.queued);
                        a.kind = AnswerKind::Queued;
                        answer_now = Some(a);
                    }
                }
            }
            let (ended_tx, ended_rx) = watch::channel(false);
            let control = Arc::new(CallControl::default());
            let queued = !wait_for.is_empty();
            state.live.insert(
                call_id.to_owned(),
                Live {
                    tool: t.name.clone(),
                    key,
                    cancellable: t.cancellable,
                    grace: entry.plugin.limits().cancel_grace,
                    control: control.clone(),
                    ended: ended_rx,
                },
            );
            state.order.push(call_id.to_owned());
            state.records.insert(
                call_id.to_owned(),
                CallRecord {
                    call_id: call_id.to_owned(),
                    session_id: inner.id.clone(),
                    tool: t.name.clone(),
                    arguments: args.clone(),
                    status: if queued {
                        CallStatus::Queued
                    } else {
                        CallStatus::Running
                    },
                    updates: Vec::new(),
                    result: None,
                    error: None,
                    fuel_used: 0,
                    created_at: SystemTime::now(),
                    started_at: None,
                    ended_at: None,
                },
            );
            ((wait_for, control, ended_tx), answer_now)
        };
        let (wait_for, control, ended_tx) = wait_for;
        let fire_and_forget = t.delivery == Delivery::FireAndForget;
        let answer_now = answer_now.or_else(|| {
            fire_and_forget.then(|| Answer {
                call_id: call_id.to_owned(),
                kind: AnswerKind::Started,
                output: render(
                    &inner.templates.started,
                    &[("call_id", call_id), ("tool", &t.name)],
                ),
                is_error: false,
                data: None,
            })
        });
        let (answer_tx, answer_rx) = oneshot::channel();
        let task = Task {
            session: Arc::downgrade(inner),
            call_id: call_id.to_owned(),
            entry: entry.clone(),
            args,
            control,
            ended: ended_tx,
            answer: if answer_now.is_some() {
                None
            } else {
                Some(answer_tx)
            },
            fire_and_forget,
            released_by_update: false,
            templates: inner.templates.clone(),
            host: inner.host.clone(),
            session_id: inner.id.clone(),
        };
        let run = task.run(wait_for);
        let Some(answer) = answer_now else {
            return match Inline::new(run).until(answer_rx).await {
                Ok(answer) => answer,
                Err(_) => error(CallError::Unavailable {
                    detail: "the call ended without an answer".into(),
                }),
            };
        };
        tokio::spawn(run);
        answer
    }

    /// Ask a running or queued call to stop (B20–B22): `cancelled()` turns
    /// true at once, and after the plugin's grace period the call is stopped
    /// by force at its next fuel check.
    pub fn cancel(&self, call_id: &str) -> Result<(), CancelError> {
        let state = self.inner.state();
        let live = state
            .live
            .get(call_id)
            .ok_or_else(|| CancelError::NotFound(call_id.to_owned()))?;
        if !live.cancellable {
            return Err(CancelError::NotCancellable {
                call_id: call_id.to_owned(),
                tool: live.tool.clone(),
            });
        }
        cancel_live(live);
        Ok(())
    }

    /// The running and queued calls of this session, oldest first.
    pub fn running(&self) -> Vec<CallRecord> {
        let state = self.inner.state();
        state
            .order
            .iter()
            .filter(|id| state.live.contains_key(*id))
            .filter_map(|id| state.records.get(id).cloned())
            .collect()
    }

    /// The record of a call of this session (B31).
    pub fn record(&self, call_id: &str) -> Option<CallRecord> {
        self.inner.state().records.get(call_id).cloned()
    }

    /// The record of a call once it has ended; `None` for a call_id this
    /// session does not know.
    pub async fn ended(&self, call_id: &str) -> Option<CallRecord> {
        let live = self
            .inner
            .state()
            .live
            .get(call_id)
            .map(|l| l.ended.clone());
        if let Some(mut ended) = live {
            // An error means the task is gone: it ended too.
            let _ = ended.wait_for(|ended| *ended).await;
        }
        self.record(call_id)
    }

    /// Every call's record, in the order the calls were made.
    pub fn records(&self) -> Vec<CallRecord> {
        let state = self.inner.state();
        state
            .order
            .iter()
            .filter_map(|id| state.records.get(id).cloned())
            .collect()
    }

    /// The events of every call of this session from now on (B29). A
    /// subscriber that falls more than 4096 events behind loses the oldest.
    pub fn subscribe(&self) -> broadcast::Receiver<CallEvent> {
        self.inner.events.subscribe()
    }

    /// The agent spoke: items pending from before this are delivered with
    /// the instructions that they may already be told (B27).
    pub fn agent_spoke(&self) {
        self.inner.state().turn += 1;
    }

    /// Whether items are waiting for delivery.
    pub fn has_pending(&self) -> bool {
        !self.inner.state().pending.is_empty()
    }

    /// Take everything pending as one delivery, if anything is pending and
    /// no other delivery is out.
    pub fn try_reply(&self) -> Option<ReplyRequest> {
        let mut state = self.inner.state();
        if state.closed || state.delivery_out || state.pending.is_empty() {
            return None;
        }
        let items: Vec<Item> = state.pending.drain(..).collect();
        state.delivery_out = true;
        let maybe_told = items.iter().any(|i| i.turn < state.turn);
        let count = items.len().to_string();
        let template = if maybe_told {
            &self.inner.templates.reply_maybe_told
        } else {
            &self.inner.templates.reply
        };
        Some(ReplyRequest {
            session: self.inner.clone(),
            id: self.inner.next_reply.fetch_add(1, Ordering::Relaxed),
            instructions: render(template, &[("count", &count)]),
            maybe_told,
            items,
            acked: false,
        })
    }

    /// Wait until something is pending, then take it all as one delivery
    /// (B26). Call it when the agent is idle. `None` once the session is
    /// closed.
    ///
    /// # Cancel safety
    /// Cancel safe: items are taken only when the delivery is returned.
    pub async fn next_reply(&self) -> Option<ReplyRequest> {
        loop {
            let notified = self.inner.pending_changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let ready = {
                let state = self.inner.state();
                if state.closed {
                    return None;
                }
                !state.pending.is_empty() && !state.delivery_out
            };
            if ready {
                // Let results that finish together go out together.
                tokio::time::sleep(self.inner.settle).await;
                if let Some(d) = self.try_reply() {
                    return Some(d);
                }
                continue;
            }
            notified.await;
        }
    }

    /// Close the session (B24): cancel its cancellable calls, give the others
    /// up to the close timeout, then stop everything by force. Nothing is
    /// delivered afterwards.
    pub async fn close(&self) {
        let inner = &self.inner;
        {
            let mut state = inner.state();
            state.closed = true;
            state.pending.clear();
            for live in state.live.values() {
                if live.cancellable {
                    cancel_live(live);
                }
            }
        }
        inner.pending_changed.notify_waiters();
        let deadline = Instant::now() + inner.close_timeout;
        loop {
            let notified = inner.call_ended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if inner.state().live.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                for live in inner.state().live.values() {
                    live.control.force_stop();
                }
            }
            let _ = tokio::time::timeout_at(deadline.into(), notified).await;
        }
    }

    fn running_tasks_answer(&self, call_id: &str) -> Answer {
        let now = SystemTime::now();
        let tasks: Vec<Value> = self
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
        data_answer(call_id, json!({ "tasks": tasks }))
    }

    fn task_status_answer(&self, call_id: &str, arguments: &str) -> Answer {
        match companion_argument(arguments) {
            Err(output) => companion_error(call_id, output),
            Ok(target) => match self.record(&target) {
                None => companion_error(
                    call_id,
                    format!("Error: there is no call `{target}` in this session."),
                ),
                Some(record) => data_answer(
                    call_id,
                    serde_json::to_value(&record).unwrap_or(Value::Null),
                ),
            },
        }
    }

    fn cancel_answer(&self, call_id: &str, arguments: &str) -> Answer {
        match companion_argument(arguments) {
            Err(output) => companion_error(call_id, output),
            Ok(target) => match self.cancel(&target) {
                Err(e) => companion_error(call_id, format!("Error: {e}.")),
                Ok(()) => Answer {
                    call_id: call_id.to_owned(),
                    kind: AnswerKind::Result,
                    output: format!(
                        "Cancelling call `{target}`. Its end will be delivered; do not assume its result."
                    ),
                    is_error: false,
                    data: None,
                },
            },
        }
    }
}

fn companion_argument(arguments: &str) -> Result<String, String> {
    let v: Value = serde_json::from_str(arguments)
        .map_err(|e| format!("Error: invalid arguments: not valid JSON: {e}"))?;
    v.get("call_id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| "Error: invalid arguments: `call_id` (a string) is required.".to_owned())
}

/// A companion tool's data answer; the model reads the JSON text.
fn data_answer(call_id: &str, data: Value) -> Answer {
    Answer {
        call_id: call_id.to_owned(),
        kind: AnswerKind::Result,
        output: data.to_string(),
        is_error: false,
        data: Some(data),
    }
}

fn companion_error(call_id: &str, output: String) -> Answer {
    Answer {
        call_id: call_id.to_owned(),
        kind: AnswerKind::Result,
        output,
        is_error: true,
        data: None,
    }
}

fn cancel_live(live: &Live) {
    live.control.cancel();
    let control = live.control.clone();
    let grace = live.grace;
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        control.force_stop();
    });
}

/// Items taken out of the pending list. [`ack`](Self::ack) it once the
/// agent has replied; dropped without an ack, its items go back to pending
/// and are offered again (B28).
#[derive(Debug)]
pub struct ReplyRequest {
    session: Arc<Inner>,
    pub id: u64,
    pub items: Vec<Item>,
    /// The reply instructions (B26, B27).
    pub instructions: String,
    /// Whether the agent spoke after some of the items arrived (B27).
    pub maybe_told: bool,
    acked: bool,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl ReplyRequest {
    /// The agent replied: the items are done with.
    pub fn ack(mut self) {
        self.acked = true;
        self.session.state().delivery_out = false;
        self.session.pending_changed.notify_waiters();
    }
}

impl Drop for ReplyRequest {
    fn drop(&mut self) {
        if self.acked {
            return;
        }
        let mut state = self.session.state();
        state.delivery_out = false;
        if !state.closed {
            for item in self.items.drain(..).rev() {
                state.pending.push_front(item);
            }
        }
        drop(state);
        self.session.pending_changed.notify_waiters();
    }
}

/// A call's task, run by the caller until the call is answered: a call that
/// returns without updates (most do) then costs no task spawn and no wake-up
/// of another thread. Whatever is left of it is spawned, also when the
/// caller stops waiting, so dropping `Session::call` never stops the call.
struct Inline {
    task: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    runtime: tokio::runtime::Handle,
}

impl Inline {
    fn new(task: impl Future<Output = ()> + Send + 'static) -> Self {
        Self {
            task: Some(Box::pin(task)),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// Runs the task until `answer` is sent, then hands the rest to the
    /// runtime.
    async fn until<T>(mut self, mut answer: oneshot::Receiver<T>) -> Result<T, RecvError> {
        if let Some(task) = self.task.as_mut() {
            tokio::select! {
                biased;
                () = task => self.task = None,
                received = &mut answer => return received,
            }
        }
        // The task ended, having sent the answer or dropped its sender.
        answer.await
    }
}

impl Drop for Inline {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            self.runtime.spawn(task);
        }
    }
}

/// One call's background task.
struct Task {
    session: Weak<Inner>,
    session_id: String,
    host: Host,
    templates: Arc<Templates>,
    call_id: String,
    entry: ToolEntry,
    args: Value,
    control: Arc<CallControl>,
    ended: watch::Sender<bool>,
    /// Present until the call is answered.
    answer: Option<oneshot::Sender<Answer>>,
    fire_and_forget: bool,
    /// The first update answered the call (B2), so later ones count from it.
    released_by_update: bool,
}

impl Task {
    async fn run(mut self, wait_for: Vec<watch::Receiver<bool>>) {
        // B13/B14: wait for the duplicates to end; a cancel while queued ends
        // the wait.
        for mut rx in wait_for {
            tokio::select! {
                _ = rx.wait_for(|ended| *ended) => {}
                () = self.control.force_stopped() => break,
            }
        }
        let tool = self.entry.tool.name.clone();
        if self.control.is_cancelled() {
            let outcome = CallOutcome {
                call_id: self.call_id.clone(),
                tool: tool.clone(),
                result: Err(CallError::Cancelled),
                fuel_used: 0,
                elapsed: Duration::ZERO,
            };
            self.end(outcome);
            return;
        }
        self.with_state(|s, id| {
            if let Some(r) = s.records.get_mut(id) {
                r.status = CallStatus::Running;
                r.started_at = Some(SystemTime::now());
            }
        });
        if let Some(inner) = self.session.upgrade() {
            inner.emit(&self.call_id, &tool, EventKind::Started);
        }

        let (tx, mut rx) = mpsc::unbounded_channel();
        let identity = CallIdentity {
            plugin: self.entry.plugin.name().into(),
            tool: tool.clone(),
            call_id: self.call_id.clone(),
            session_id: self.session_id.clone(),
        };
        let host = self.host.clone();
        let entry = self.entry.clone();
        let args = self.args.clone();
        let control = self.control.clone();
        let run = async move {
            host.run_validated(&entry, identity, &args, control, Some(tx))
                .await
        };
        tokio::pin!(run);
        let mut updates = 0usize;
        let outcome = loop {
            tokio::select! {
                biased;
                Some(message) = rx.recv() => {
                    updates += 1;
                    self.update(updates, message);
                }
                outcome = &mut run => break outcome,
            }
        };
        while let Ok(message) = rx.try_recv() {
            updates += 1;
            self.update(updates, message);
        }
        self.end(outcome);
    }

    fn with_state<R>(&self, f: impl FnOnce(&mut State, &str) -> R) -> Option<R> {
        let inner = self.session.upgrade()?;
        let mut state = inner.state();
        Some(f(&mut state, &self.call_id))
    }

    fn tool(&self) -> &str {
        &self.entry.tool.name
    }

    fn item(
        &self,
        suffix: &str,
        output: String,
        is_error: bool,
        data: Option<Value>,
        turn: u64,
    ) -> Item {
        Item {
            call_id: format!("{}_{suffix}", self.call_id),
            origin: self.call_id.clone(),
            tool: self.tool().to_owned(),
            arguments: self.args.clone(),
            output,
            is_error,
            data,
            turn,
        }
    }

    fn push_pending(&self, inner: &Inner, state: &mut State, item: Item) {
        if state.closed {
            return;
        }
        state.pending.push_back(item);
        inner.pending_changed.notify_waiters();
    }

    fn update(&mut self, n: usize, message: String) {
        let Some(inner) = self.session.upgrade() else {
            return;
        };
        let tool = self.tool().to_owned();
        let mut state = inner.state();
        if let Some(r) = state.records.get_mut(&self.call_id) {
            r.updates.push(UpdateRecord {
                at: SystemTime::now(),
                message: message.clone(),
            });
        }
        if self.fire_and_forget {
            tracing::info!(tool = %tool, call_id = %self.call_id, %message, "fire-and-forget update");
        } else if let Some(answer) = self.answer.take() {
            // B2: the first update answers the call.
            self.released_by_update = true;
            let output = render(
                &self.templates.update,
                &[
                    ("call_id", &self.call_id),
                    ("tool", &tool),
                    ("message", &message),
                ],
            );
            let _ = answer.send(Answer {
                call_id: self.call_id.clone(),
                kind: AnswerKind::Released,
                output,
                is_error: false,
                data: None,
            });
        } else {
            // B3: later updates are new items, numbered from 1 after the one
            // that answered (queued calls number from their first update).
            let k = if self.released_by_update { n - 1 } else { n };
            let output = render(
                &self.templates.progress,
                &[
                    ("call_id", &self.call_id),
                    ("tool", &tool),
                    ("message", &message),
                    ("n", &k.to_string()),
                ],
            );
            let turn = state.turn;
            let item = self.item(&format!("update_{k}"), output, false, None, turn);
            self.push_pending(&inner, &mut state, item);
        }
        drop(state);
        inner.emit(&self.call_id, &tool, EventKind::Updated { n, message });
    }

    fn end(mut self, outcome: CallOutcome) {
        let tool = self.tool().to_owned();
        let cancelled =
            self.control.is_cancelled() || matches!(outcome.result, Err(CallError::Cancelled));
        let status = match (&outcome.result, cancelled) {
            (_, true) => CallStatus::Cancelled,
            (Ok(_), false) => CallStatus::Done,
            (Err(_), false) => CallStatus::Error,
        };
        let error_text = outcome.result.as_ref().err().map(|e| e.model_message());
        let result = outcome.result.as_ref().ok().cloned();
        let inner = self.session.upgrade();
        if let Some(inner) = &inner {
            let mut state = inner.state();
            if let Some(r) = state.records.get_mut(&self.call_id) {
                r.status = status;
                r.result = result.clone();
                r.error = error_text.clone();
                r.fuel_used = outcome.fuel_used;
                r.ended_at = Some(SystemTime::now());
            }
            if self.fire_and_forget {
                tracing::info!(tool = %tool, call_id = %self.call_id, status = ?status, "fire-and-forget call ended");
            } else if let Some(answer) = self.answer.take() {
                let _ = answer.send(self.final_answer(&outcome, status));
            } else {
                let turn = state.turn;
                let item = match status {
                    CallStatus::Cancelled => Some(self.item(
                        "final",
                        render(
                            &self.templates.cancelled,
                            &[("call_id", &self.call_id), ("tool", &tool)],
                        ),
                        false,
                        None,
                        turn,
                    )),
                    CallStatus::Error => Some(self.item(
                        "final",
                        render(
                            &self.templates.error,
                            &[
                                ("call_id", &self.call_id),
                                ("tool", &tool),
                                ("error", error_text.as_deref().unwrap_or_default()),
                            ],
                        ),
                        true,
                        None,
                        turn,
                    )),
                    // B4: a result with neither text nor data adds nothing.
                    _ => result.as_ref().and_then(|o| {
                        let text = o.model_text()?;
                        Some(self.item(
                            "final",
                            render(
                                &self.templates.result,
                                &[
                                    ("call_id", &self.call_id),
                                    ("tool", &tool),
                                    ("output", &text),
                                ],
                            ),
                            false,
                            o.data.clone(),
                            turn,
                        ))
                    }),
                };
                if let Some(item) = item {
                    self.push_pending(inner, &mut state, item);
                }
            }
            state.live.remove(&self.call_id);
        }
        let _ = self.ended.send(true);
        if let Some(inner) = inner {
            inner.emit(
                &self.call_id,
                &tool,
                EventKind::Ended {
                    status,
                    result,
                    error: error_text,
                    fuel_used: outcome.fuel_used,
                },
            );
            inner.call_ended.notify_waiters();
        }
    }

    /// The answer of a call that ends before its first update (B1, B5, B22).
    fn final_answer(&self, outcome: &CallOutcome, status: CallStatus) -> Answer {
        let (kind, output, is_error, data) = match (status, &outcome.result) {
            (CallStatus::Cancelled, _) => (
                AnswerKind::Cancelled,
                render(
                    &self.templates.cancelled,
                    &[("call_id", &self.call_id), ("tool", self.tool())],
                ),
                false,
                None,
            ),
            (_, Ok(o)) => (
                AnswerKind::Result,
                o.model_text().unwrap_or_default(),
                false,
                o.data.clone(),
            ),
            (_, Err(e)) => (AnswerKind::Result, e.model_message(), true, None),
        };
        Answer {
            call_id: self.call_id.clone(),
            kind,
            output,
            is_error,
            data,
        }
    }
}

fn add_confirm_argument(schema: &mut Value) {
    if let Some(obj) = schema.as_object_mut() {
        let props = obj.entry("properties").or_insert_with(|| json!({}));
        if let Some(props) = props.as_object_mut() {
            props.insert(
                CONFIRM_ARGUMENT.into(),
                json!({
                    "type": "boolean",
                    "default": false,
                    "description": "Set to true to run this tool again while an earlier call of it is still running."
                }),
            );
        }
    }
}

/// B12: remove `confirm_duplicate` before validation and comparison.
fn take_confirm(tool: &crate::plugin::Tool, args: &mut Value) -> Result<bool, CallError> {
    if tool.on_duplicate != DuplicatePolicy::Confirm {
        return Ok(false);
    }
    match args
        .as_object_mut()
        .and_then(|o| o.remove(CONFIRM_ARGUMENT))
    {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(b),
        Some(_) => Err(CallError::InvalidArguments {
            tool: tool.name.clone(),
            message: format!("at `/{CONFIRM_ARGUMENT}`: must be a boolean"),
        }),
    }
}

/// The arguments with the schema's top-level defaults filled in (B15).
fn with_defaults(schema: &Value, args: &Value) -> Value {
    let mut args = args.clone();
    if let (Some(props), Some(obj)) = (
        schema.get("properties").and_then(Value::as_object),
        args.as_object_mut(),
    ) {
        for (name, prop) in props {
            if let Some(default) = prop.get("default")
                && !obj.contains_key(name)
            {
                obj.insert(name.clone(), default.clone());
            }
        }
    }
    args
}

/// Canonical JSON text: keys sorted, integral numbers written as integers
/// (so 1 and 1.0 are equal) (B15).
pub(crate) fn canonical_json(v: &Value) -> String {
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    write(&map[k], out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(&call::integral_numbers(v), &mut out);
    out
}

fn companion_tools() -> Vec<ToolView> {
    let call_id_schema = json!({
        "type": "object",
        "properties": { "call_id": { "type": "string", "description": "The call_id of the call." } },
        "required": ["call_id"],
        "additionalProperties": false
    });
    let view = |name: &str, description: &str, schema: Value| ToolView {
        name: name.into(),
        description: description.into(),
        input_schema: schema,
        output_schema: None,
        plugin: None,
        cancellable: false,
        background: false,
        answers_with_result: true,
    };
    vec![
        view(
            RUNNING_TASKS_TOOL,
            "List the tool calls of this conversation that are still running or queued: call_id, tool, arguments, status, start time, elapsed time and latest update.",
            json!({ "type": "object", "properties": {}, "additionalProperties": false }),
        ),
        view(
            TASK_STATUS_TOOL,
            "Get the status of one tool call by call_id: its status, every update, and its result or error.",
            call_id_schema.clone(),
        ),
        view(
            CANCEL_TASK_TOOL,
            "Cancel a running or queued tool call by call_id. Only cancellable tools can be cancelled.",
            call_id_schema,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_and_unifies_numbers() {
        let a: Value =
            serde_json::from_str(r#"{"b": 1, "a": {"y": [1.0, 2], "x": "s"}}"#).expect("json");
        let b: Value =
            serde_json::from_str(r#"{"a": {"x": "s", "y": [1, 2.0]}, "b": 1.0}"#).expect("json");
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(canonical_json(&a), r#"{"a":{"x":"s","y":[1,2]},"b":1}"#);
        let c: Value = serde_json::from_str(r#"{"b": 1.5}"#).expect("json");
        assert_eq!(canonical_json(&c), r#"{"b":1.5}"#);
    }

    #[test]
    fn defaults_are_filled_for_comparison() {
        let schema = json!({"type": "object", "properties": {"key": {"type": "string", "default": "a"}, "ms": {"type": "integer"}}});
        let args = json!({"ms": 5});
        assert_eq!(with_defaults(&schema, &args), json!({"ms": 5, "key": "a"}));
        assert_eq!(
            canonical_json(&with_defaults(&schema, &args)),
            canonical_json(&with_defaults(&schema, &json!({"ms": 5, "key": "a"})))
        );
    }
}
