//! One call's life as a background task: wait for the duplicates it queued
//! behind (B13, B14), run in its sandbox, turn its updates into the answer
//! (B2), items (B3) and events (B29), and its end into a record, an item or
//! the answer (B1, B4–B6, B22).

use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::sync::oneshot::error::RecvError;
use tokio::sync::{mpsc, oneshot, watch};

use super::Inner;
use super::answer::{Answer, AnswerKind, Item, ending};
use super::delivery::Delivery;
use crate::bindings::Delivery as DeliveryKind;
use crate::call::{self, CallOutcome, Output};
use crate::config::AnswerMode;
use crate::engine::Runtime;
use crate::error::CallError;
use crate::ids::CallIdentity;
use crate::records::{CallRecord, CallStatus, EventKind, UpdateRecord, json_weight, output_weight};
use crate::registry::ToolEntry;
use crate::sandbox::{CallControl, SentUpdate};
use crate::slots::Turns;
use crate::store::{CallEnd, Durability, TaskStore};
use crate::templates::{Templates, render};

/// How a call answered, and, when it answered at its end, how it ended.
pub(super) struct Finish {
    pub(super) answer: Answer,
    pub(super) outcome: Option<CallOutcome>,
}

/// One call's background task.
pub(super) struct Task {
    pub(super) session: Weak<Inner>,
    pub(super) session_id: String,
    pub(super) runtime: Arc<Runtime>,
    pub(super) templates: Arc<Templates>,
    pub(super) delivery: Arc<Delivery>,
    pub(super) call_id: String,
    /// The call's id in the task store.
    pub(super) task_id: String,
    pub(super) store: Arc<dyn TaskStore>,
    pub(super) entry: ToolEntry,
    pub(super) args: Arc<Value>,
    pub(super) control: Arc<CallControl>,
    /// The session's turns at its plugins' slots (`call::run`).
    pub(super) turns: Arc<Turns>,
    pub(super) ended: watch::Sender<bool>,
    /// Present until the call is answered.
    pub(super) answer: Option<oneshot::Sender<Finish>>,
    pub(super) mode: AnswerMode,
    /// The first update answered the call (B2), so later ones count from it.
    pub(super) released_by_update: bool,
    /// The fuel as of the latest update: what a call whose run was lost
    /// had burned, as far as anyone knows.
    pub(super) fuel_used: u64,
    /// `end` has run (or begun): what `Drop` checks.
    pub(super) finished: bool,
}

impl Task {
    fn fire_and_forget(&self) -> bool {
        self.entry.tool.delivery == DeliveryKind::FireAndForget
    }

    fn tool(&self) -> &str {
        &self.entry.tool.name
    }

    pub(super) async fn run(mut self, wait_for: Vec<watch::Receiver<bool>>) {
        // B13/B14: wait for the duplicates to end; a cancel while queued ends
        // the call at once (it has nothing to clean up). A call that did
        // not queue is listed as running already: it enters its plugin,
        // cancelled or not (`call::run`).
        let queued = !wait_for.is_empty();
        for mut rx in wait_for {
            tokio::select! {
                _ = rx.wait_for(|ended| *ended) => {}
                () = self.control.cancel_requested() => break,
            }
        }
        if queued && self.control.is_cancelled() {
            self.end(self.outcome(Err(CallError::Cancelled)));
            return;
        }
        // A call that did not wait was recorded as started (`start`).
        let started_at = queued.then(SystemTime::now);
        if let Some(at) = started_at {
            self.store.running(&self.task_id, at);
        }
        if let Some(inner) = self.session.upgrade() {
            if let Some(at) = started_at
                && let Some(r) = inner
                    .state()
                    .records
                    .get_mut(&self.call_id)
                    .map(|k| &mut k.record)
            {
                r.call.status = CallStatus::Running;
                r.call.started_at = Some(at);
            }
            inner.emit(
                &self.task_id,
                Some(&self.args),
                &self.call_id,
                self.tool(),
                EventKind::Started,
            );
        }

        let (tx, mut rx) = mpsc::unbounded_channel();
        let identity = CallIdentity {
            plugin: self.entry.plugin.name().into(),
            tool: self.tool().to_owned(),
            call_id: self.call_id.clone(),
            session_id: self.session_id.clone(),
        };
        let runtime = self.runtime.clone();
        let entry = self.entry.clone();
        let args = self.args.clone();
        let control = self.control.clone();
        let turns = self.turns.clone();
        let run = async move {
            call::run(&runtime, &entry, &args, identity, &turns, control, Some(tx)).await
        };
        tokio::pin!(run);
        let mut updates = 0usize;
        let outcome = loop {
            tokio::select! {
                biased;
                Some(sent) = rx.recv() => {
                    updates += 1;
                    self.update(updates, *sent);
                }
                outcome = &mut run => break outcome,
            }
        };
        while let Ok(sent) = rx.try_recv() {
            updates += 1;
            self.update(updates, *sent);
        }
        self.end(outcome);
    }

    /// The outcome of a call that never ran, or whose run was lost.
    fn outcome(&self, result: Result<Output, CallError>) -> CallOutcome {
        CallOutcome {
            call_id: self.call_id.clone(),
            tool: self.tool().to_owned(),
            result,
            fuel_used: self.fuel_used,
            elapsed: Duration::ZERO,
        }
    }

    fn item(&self, suffix: &str, answer: Answer) -> Item {
        Item {
            call_id: format!("{}_{suffix}", self.call_id),
            origin: self.call_id.clone(),
            tool: self.tool().to_owned(),
            arguments: (*self.args).clone(),
            output: answer.output,
            is_error: answer.is_error,
            data: answer.data,
            turn: 0,
        }
    }

    fn update(&mut self, n: usize, sent: SentUpdate) {
        let SentUpdate {
            message,
            fuel_used,
            after_cancel,
        } = sent;
        self.fuel_used = fuel_used;
        let update = UpdateRecord {
            at: SystemTime::now(),
            message: message.clone(),
        };
        // Before the update can answer the call (B2), which then makes the
        // store durable.
        self.store.update(&self.task_id, update.clone(), fuel_used);
        let Some(inner) = self.session.upgrade() else {
            return;
        };
        if let Some(r) = inner
            .state()
            .records
            .get_mut(&self.call_id)
            .map(|k| &mut k.record)
        {
            r.call.updates.push(update);
            r.call.fuel_used = fuel_used;
            // The newest updates, as the task store keeps them: between
            // its bound and twice it, to move them seldom.
            let kept = crate::store::DEFAULT_MAX_UPDATES;
            if r.call.updates.len() >= 2 * kept {
                let dropped = r.call.updates.len() - kept;
                r.call.updates.drain(..dropped);
                r.updates_dropped += dropped as u64;
            }
        }
        let tool = self.tool().to_owned();
        if self.fire_and_forget() {
            tracing::info!(tool = %tool, call_id = %self.call_id, %message, "fire-and-forget update");
        } else if self.mode == AnswerMode::Release
            && !after_cancel
            && let Some(answer) = self.answer.take()
        {
            // B2: the first update answers the call; not one sent once it
            // was cancelled, when its end answers "cancelled" (B22).
            self.released_by_update = true;
            let output = render(
                &self.templates.update,
                &[
                    ("call_id", &self.call_id),
                    ("tool", &tool),
                    ("message", &message),
                ],
            );
            let _ = answer.send(Finish {
                answer: Answer::text(&self.call_id, AnswerKind::Released, output),
                outcome: None,
            });
        } else if self.answer.is_none() && self.delivery.enabled() {
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
            let item = self.item(
                &format!("update_{k}"),
                Answer::text(&self.call_id, AnswerKind::Result, output),
            );
            self.delivery.push(item);
        }
        inner.emit(
            &self.task_id,
            None,
            &self.call_id,
            &tool,
            EventKind::Updated {
                n,
                message,
                fuel_used,
            },
        );
    }

    /// The call ended: record it, answer or deliver its end, and take it
    /// off the session's live calls. Runs once.
    fn end(&mut self, outcome: CallOutcome) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let tool = self.tool().to_owned();
        let cancelled =
            self.control.is_cancelled() || matches!(outcome.result, Err(CallError::Cancelled));
        let status = match (&outcome.result, cancelled) {
            (_, true) => CallStatus::Cancelled,
            (Ok(_), false) => CallStatus::Done,
            (Err(_), false) => CallStatus::Error,
        };
        let error = outcome.result.as_ref().err().map(CallError::model_message);
        // One copy of the output, shared by the records and the event.
        let result = outcome.result.as_ref().ok().cloned().map(Arc::new);
        let fuel_used = outcome.fuel_used;
        let ended_at = SystemTime::now();
        let end = CallEnd {
            status,
            result: result.clone(),
            error: error.clone(),
            fuel_used,
            ended_at,
        };
        // A call answered with its end has it in the answer; one that went
        // on in the background is what its client comes back for, and a
        // host killed in the store's gathering window would leave it
        // `running`, then `interrupted` (B31): its end is committed at once.
        let released = self.answer.is_none();
        let durability = if released {
            Durability::Durable
        } else {
            Durability::Lazy
        };
        // The store may be an embedder's: a panic in it must not keep the
        // call live, nor escape this when `Drop` runs it while unwinding.
        let stored = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.store.end(&self.task_id, end, durability)
        }));
        if stored.is_err() {
            tracing::error!(call_id = %self.call_id, "the task store panicked recording a call's end");
        }
        let results = result.as_deref().map_or(0, output_weight);
        let inner = self.leave_live(results, |r| {
            r.status = status;
            r.result = result.clone();
            r.error = error.clone();
            r.fuel_used = fuel_used;
            r.ended_at = Some(ended_at);
        });
        let text = ending(
            &self.templates,
            &self.call_id,
            &tool,
            status,
            result.as_deref(),
            error.as_deref(),
            released,
        );
        if let Some(answer) = self.answer.take() {
            if let Some(text) = text {
                let _ = answer.send(Finish {
                    answer: text,
                    outcome: Some(outcome),
                });
            }
        } else if self.fire_and_forget() {
            tracing::info!(tool = %tool, call_id = %self.call_id, status = ?status, "fire-and-forget call ended");
        } else if let Some(text) = text {
            let item = self.item("final", text);
            self.delivery.push(item);
        }
        let _ = self.ended.send(true);
        if let Some((inner, closing)) = inner {
            inner.emit(
                &self.task_id,
                None,
                &self.call_id,
                &tool,
                EventKind::Ended {
                    status,
                    result,
                    error,
                    fuel_used,
                },
            );
            if closing {
                inner.call_ended.notify_waiters();
            }
        }
    }
}

impl Task {
    /// Take the call off its session's live calls, its record changed by
    /// `record` and weighed with its arguments and `results` bytes; the
    /// session, if it is still there, and whether it is closing, when
    /// `Session::close` waits for `call_ended`. (Only then: a notify takes
    /// a lock, which every call's end would otherwise pay.)
    fn leave_live(
        &self,
        results: usize,
        record: impl FnOnce(&mut CallRecord),
    ) -> Option<(Arc<Inner>, bool)> {
        let inner = self.session.upgrade()?;
        // Weighed before the session's lock is taken.
        let heavy = json_weight(&self.args) + results;
        let mut state = inner.state();
        if let Some(r) = state.records.get_mut(&self.call_id).map(|k| &mut k.record) {
            record(&mut r.call);
        }
        state.live.remove(&self.call_id);
        inner.forget_finished(&mut state, &self.call_id, heavy);
        let closing = state.closed;
        drop(state);
        Some((inner, closing))
    }

    /// The host stopped running the call: off the live calls, its record
    /// `interrupted`.
    fn interrupted(&mut self) {
        self.finished = true;
        let fuel_used = self.fuel_used;
        let inner = self.leave_live(0, |r| {
            r.status = CallStatus::Interrupted;
            r.fuel_used = fuel_used;
            r.ended_at = Some(SystemTime::now());
        });
        let _ = self.ended.send(true);
        if let Some((inner, true)) = inner {
            inner.call_ended.notify_waiters();
        }
    }
}

impl Drop for Task {
    /// A task dropped before its call ended takes the call off the
    /// session's live calls, where it would otherwise stay: listed as
    /// running, holding a place of `max_live`, and holding up
    /// `Session::close`.
    /// - Dropped by a panic (a fault in the host, or in an embedder's task
    ///   store): the call ends as failed, recorded, delivered and emitted
    ///   like any other error.
    /// - Dropped by its runtime shutting down (the host is stopping): the
    ///   session's record turns `interrupted`, and the task store keeps
    ///   the call as running, to be found `interrupted` when a host opens
    ///   it again (B31).
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if std::thread::panicking() {
            tracing::error!(
                session = %self.session_id,
                tool = %self.tool(),
                call_id = %self.call_id,
                "a call's task panicked; the call is recorded as failed"
            );
            self.end(self.outcome(Err(CallError::Unavailable {
                detail: "the host failed while running the call".into(),
            })));
        } else {
            self.interrupted();
        }
    }
}

/// A call's task, run by the caller until the call is answered: a call that
/// returns without updates (most do) then costs no task spawn and no wake-up
/// of another thread. Whatever is left of it is spawned, also when the
/// caller stops waiting, so dropping `Session::call` never stops the call.
pub(super) struct Inline {
    task: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    runtime: tokio::runtime::Handle,
}

impl Inline {
    pub(super) fn new(task: impl Future<Output = ()> + Send + 'static) -> Self {
        Self {
            task: Some(Box::pin(task)),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// Runs the task until `answer` is sent, then hands the rest to the
    /// runtime.
    pub(super) async fn until<T>(
        mut self,
        mut answer: oneshot::Receiver<T>,
    ) -> Result<T, RecvError> {
        std::future::poll_fn(|cx| {
            // Polled out of `self.task` and put back only while pending: a
            // task that panics is dropped with the panic (ending its call,
            // `Task`'s `Drop`), never spawned again.
            if let Some(mut task) = self.task.take()
                && task.as_mut().poll(cx).is_pending()
            {
                self.task = Some(task);
            }
            // A task that ended sent the answer or dropped its sender.
            Pin::new(&mut answer).poll(cx)
        })
        .await
    }
}

impl Drop for Inline {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            self.runtime.spawn(task);
        }
    }
}
