//! A new call, before it runs: validated (B7, B12), decided on by its
//! duplicate policy (B10–B15) and registered with its record, the decision
//! and the registration under one lock (B16).

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::admission::{Admission, Duplicate, admit};
use super::answer::{self, Answer, AnswerKind};
use super::task::{Finish, Task};
use super::{Inner, Kept, Live, Session, StartingCall, State, companion};
use crate::arguments;
use crate::bindings::{Delivery as DeliveryKind, DuplicatePolicy};
use crate::call;
use crate::config::AnswerMode;
use crate::error::CallError;
use crate::records::{CallRecord, CallStatus, EventKind, TaskRecord};
use crate::sandbox::CallControl;
use crate::store::Durability;
use crate::templates::render;

/// What became of a new call before it runs.
pub(super) enum Start {
    /// Answered without running (companion tools, duplicate notices).
    Answered(Answer),
    /// Refused before the plugin was entered (B7, B8).
    Refused(CallError),
    /// Running: answered at once (`now`), or when `answer` is sent.
    Running {
        now: Option<Answer>,
        answer: oneshot::Receiver<Finish>,
        task: Box<Task>,
        wait_for: Vec<watch::Receiver<bool>>,
    },
}

/// How a new call is to start.
pub(super) struct Starting<'a> {
    pub(super) mode: AnswerMode,
    /// Nothing answers before the call's end (not even a fire-and-forget
    /// start or a queued notice).
    pub(super) to_end: bool,
    /// What cancels the call beside [`Session::cancel`] by its id:
    /// cancelled before the call is live, it stops the call before it
    /// runs.
    pub(super) cancel: Option<&'a CancellationToken>,
}

impl Session {
    /// Validate a call, decide on it (B10–B16) and register it.
    pub(super) async fn start(
        &self,
        starting: Starting<'_>,
        call_id: &str,
        tool: &str,
        arguments: &str,
    ) -> Start {
        let Starting {
            mode,
            to_end,
            cancel,
        } = starting;
        let inner = &self.inner;
        if companion::is_companion(tool) {
            return Start::Answered(companion::answer(self, call_id, tool, arguments).await);
        }
        // Among the session's starting calls, for a cancel by id to find,
        // only from the first step that may wait (a load, validators, large
        // arguments): a start that runs straight through to its
        // registration cannot be told from one that began after a cancel
        // that found nothing, and pays no more.
        let mut listed = None;
        let list = |listed: &mut Option<_>| {
            listed.get_or_insert_with(|| StartingGuard::new(inner, call_id, tool));
        };
        let entry = match inner.registry.find(tool) {
            Some(entry) => entry,
            None => {
                list(&mut listed);
                let Some(entry) = inner.registry.tool(tool).await else {
                    return Start::Refused(CallError::UnknownTool {
                        name: tool.to_owned(),
                    });
                };
                entry
            }
        };
        let t = &entry.tool;
        if !t.prepared() {
            list(&mut listed);
            // A validator left for later (a schema the cache knows) is built
            // off the runtime's threads: the first one of a process takes
            // about 15 ms, and a plugin's schema may take longer. Both are
            // built before the plugin runs, so a schema that fails now
            // fails the call before it has any effect.
            if let Err(e) = t.prepare_off_runtime().await {
                return Start::Refused(e);
            }
        }
        let prepared = if arguments.len() <= call::CHECK_INLINE {
            arguments::prepare(t, arguments)
        } else {
            list(&mut listed);
            let (tool, arguments) = (t.clone(), arguments.to_owned());
            tokio::task::spawn_blocking(move || arguments::prepare(&tool, &arguments))
                .await
                .unwrap_or_else(|e| {
                    Err(CallError::Unavailable {
                        detail: format!("checking the arguments panicked: {e}"),
                    })
                })
        };
        let (args, confirmed, key) = match prepared {
            Ok(p) => (Arc::new(p.args), p.confirmed, p.key),
            Err(e) => return Start::Refused(e),
        };

        // B16: the duplicate check and the registration of the call happen
        // under one lock.
        let mut state = inner.state();
        if state.closed {
            return Start::Refused(CallError::Unavailable {
                detail: "the session is closed".into(),
            });
        }
        if state.records.contains_key(call_id) {
            return Start::Refused(CallError::InvalidArguments {
                tool: t.name.clone(),
                message: format!("call_id `{call_id}` was already used in this session"),
            });
        }
        // B20, B22, B24: cancelled while it was still starting (by its
        // client, or as its client went), checked under the lock a later
        // cancel takes (`Session::cancel`), so that none is lost. It
        // answers "cancelled" without running, and decides nothing about
        // its duplicates.
        let asked = listed.as_ref().is_some_and(|s| s.asked(&state));
        if t.cancellable
            && (state.stopping || asked || cancel.is_some_and(CancellationToken::is_cancelled))
        {
            tracing::info!(session = %inner.id, call_id, tool = %t.name, "call cancelled before it started");
            let cancelled = answer::cancelled(&inner.templates, call_id, &t.name, false);
            return Start::Answered(cancelled);
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
        let decision = admit(
            t.on_duplicate,
            confirmed,
            &dups
                .iter()
                .map(|(id, l)| Duplicate {
                    call_id: id,
                    cancellable: l.cancellable,
                })
                .collect::<Vec<_>>(),
        );
        let notice = |template: &str, kind: AnswerKind| {
            let running = dups
                .iter()
                .map(|(id, _)| format!("`{id}`"))
                .collect::<Vec<_>>()
                .join(", ");
            Answer::text(
                call_id,
                kind,
                render(
                    template,
                    &[
                        ("call_id", call_id),
                        ("tool", &t.name),
                        ("running", &running),
                    ],
                ),
            )
        };
        let mut wait_for = Vec::new();
        let mut now = None;
        // A call that would add to the session's running and waiting calls
        // past its bound is not started. Duplicate notices still answer
        // (B11, B12), and a replacing call takes the place of the calls it
        // cancels (B13).
        let full = state.live.len() >= inner.max_live;
        match decision {
            Admission::Start | Admission::Queue if full => {
                let max = inner.max_live;
                let plugin = entry.plugin.name();
                tracing::warn!(session = %inner.id, plugin, tool = %t.name, call_id, max, "live-call limit reached");
                return Start::Refused(CallError::SessionFull { max });
            }
            Admission::Start => {}
            Admission::Reject => {
                return Start::Answered(notice(&inner.templates.reject, AnswerKind::Duplicate));
            }
            Admission::Confirm => {
                return Start::Answered(notice(&inner.templates.confirm, AnswerKind::Duplicate));
            }
            Admission::CannotReplace { call_id: id } => {
                return Start::Refused(CallError::ToolFailed(format!(
                    "cannot replace call `{id}`: it is not cancellable; nothing was cancelled"
                )));
            }
            Admission::Replace => {
                Live::cancel_all(dups.iter().map(|(_, l)| *l));
                wait_for = dups.iter().map(|(_, l)| l.ended.clone()).collect();
            }
            Admission::Queue => {
                wait_for = dups.iter().map(|(_, l)| l.ended.clone()).collect();
                if mode == AnswerMode::Release {
                    now = Some(notice(&inner.templates.queued, AnswerKind::Queued));
                }
            }
        }
        if t.delivery == DeliveryKind::FireAndForget {
            now = Some(Answer::text(
                call_id,
                AnswerKind::Started,
                render(
                    &inner.templates.started,
                    &[("call_id", call_id), ("tool", &t.name)],
                ),
            ));
        }
        let (ended_tx, ended_rx) = watch::channel(false);
        let control = Arc::new(CallControl::default());
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
        state.order.push_back(call_id.to_owned());
        if let Some(listed) = &mut listed {
            listed.release(&mut state);
        }
        let task_id = crate::store::new_task_id();
        let queued = !wait_for.is_empty();
        let created_at = SystemTime::now();
        let record = TaskRecord::new(
            task_id.clone(),
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
                created_at,
                // A call that runs at once starts as it is recorded; a
                // queued one when it leaves the queue (`Task::run`).
                started_at: (!queued).then_some(created_at),
                ended_at: None,
            },
        );
        state.records.insert(
            call_id.to_owned(),
            Kept {
                record: record.clone(),
                weight: 0,
            },
        );
        drop(state);
        if to_end {
            now = None;
        }
        // Made before the store is told of the call: should the store (an
        // embedder's, perhaps) panic, the task's drop ends the live call.
        let (answer_tx, answer) = oneshot::channel();
        let task = Box::new(Task {
            session: Arc::downgrade(inner),
            session_id: inner.id.clone(),
            runtime: inner.registry.runtime.clone(),
            templates: inner.templates.clone(),
            delivery: inner.delivery.clone(),
            call_id: call_id.to_owned(),
            task_id,
            store: inner.registry.store.clone(),
            entry: entry.clone(),
            args,
            control,
            turns: inner.turns.clone(),
            ended: ended_tx,
            answer: now.is_none().then_some(answer_tx),
            mode,
            released_by_update: false,
            fuel_used: 0,
            finished: false,
        });
        // Lazy: an answer that says the call goes on makes it durable first
        // (`Session::make_durable`).
        let _ = task.store.start(record, Durability::Lazy);
        if queued {
            let (task_id, args) = (&task.task_id, &task.args);
            inner.emit(task_id, Some(args), call_id, &t.name, EventKind::Queued);
        }
        Start::Running {
            now,
            answer,
            task,
            wait_for,
        }
    }
}

/// Keeps a call among its session's starting calls ([`State::starting`])
/// from its first step that may wait until it is live or answered.
struct StartingGuard<'a> {
    inner: &'a Inner,
    call_id: &'a str,
    /// This start's number among those under its call id.
    number: u64,
    held: bool,
}

impl<'a> StartingGuard<'a> {
    fn new(inner: &'a Inner, call_id: &'a str, tool: &str) -> Self {
        let mut state = inner.state();
        let starting = state
            .starting
            .entry(call_id.to_owned())
            .or_insert_with(|| StartingCall {
                tool: tool.to_owned(),
                starts: 0,
                next: 0,
                cancelled_below: 0,
            });
        starting.starts += 1;
        let number = starting.next;
        starting.next += 1;
        Self {
            inner,
            call_id,
            number,
            held: true,
        }
    }

    /// Whether [`Session::cancel`] asked this start to stop.
    fn asked(&self, state: &State) -> bool {
        (state.starting.get(self.call_id)).is_some_and(|s| self.number < s.cancelled_below)
    }

    /// The call is live: out of the starting calls, under the lock that
    /// made it live.
    fn release(&mut self, state: &mut State) {
        if std::mem::take(&mut self.held)
            && let Some(starting) = state.starting.get_mut(self.call_id)
        {
            starting.starts -= 1;
            if starting.starts == 0 {
                state.starting.remove(self.call_id);
            }
        }
    }
}

impl Drop for StartingGuard<'_> {
    fn drop(&mut self) {
        if self.held {
            let inner = self.inner;
            self.release(&mut inner.state());
        }
    }
}
