//! Sessions: one conversation's calls, each a background task, with
//! duplicate policies, cancellation, records, events and the delivery of
//! later results (B2–B4, B6, B9–B16, B20–B30).
//!
//! A session is opened from a [`Host`](crate::Host). Its parts:
//! - `admission`: what happens to a new call while duplicates run (a pure
//!   decision, B10–B16);
//! - `task`: a call's life, from queued to ended;
//! - `delivery`: the pending items and reply requests (B26–B28), an option
//!   that the MCP server turns off;
//! - `companion`: the tools the session answers itself (B25);
//! - `answer`: the answer and item types, and the one place where the end of
//!   a call becomes text.
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

mod admission;
mod answer;
mod companion;
mod delivery;
mod start;
mod task;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Notify, broadcast, watch};
use tokio_util::sync::CancellationToken;

use self::delivery::Delivery;
use self::start::{Start, Starting};
use self::task::{Finish, Inline};
use crate::call::{CallOutcome, Output};
use crate::catalog::ToolView;
use crate::error::CallError;
use crate::records::{CallEvent, CallRecord, CallStatus, EventKind, HostEvent, TaskRecord};
use crate::registry::Registry;
use crate::sandbox::CallControl;
use crate::slots::Turns;
use crate::store::StoreError;
use crate::templates::Templates;

pub use self::answer::{Answer, AnswerKind, Item};
pub use self::companion::{CANCEL_TASK_TOOL, RUNNING_TASKS_TOOL, TASK_STATUS_TOOL};
pub use self::delivery::ReplyRequest;
pub use crate::config::AnswerMode;

/// What a call that ended with `status` answers when it answers at its end
/// (B1, B5, B22), for answers given later than the call: MCP tasks, and
/// calls read back from the task store. The default templates serve: only
/// a released call's end uses the session's.
pub(crate) fn ending_answer(
    call_id: &str,
    tool: &str,
    status: CallStatus,
    result: Option<&Output>,
    error: Option<&str>,
) -> Option<Answer> {
    answer::ending(
        &Templates::default(),
        call_id,
        tool,
        status,
        result,
        error,
        false,
    )
}

/// Settings of a session. Start from [`SessionOptions::default`].
///
/// Defaults:
/// - `id`: a new unique id
/// - `templates`: the host's templates ([`HostConfig::templates`](crate::HostConfig))
/// - `answer`: [`AnswerMode::Release`]: the first update answers a call
/// - `delivery`: true: later updates and results collect for
///   [`Session::next_reply`]; false keeps none (for clients that follow
///   calls another way, such as MCP's)
/// - `close_timeout`: 30 seconds that non-cancellable calls get to finish
///   when the session closes (B24)
/// - `settle`: 20 ms that a delivery waits after the first pending item, so
///   results arriving together go out as one reply (B26)
/// - `keep_records`: 1000 records of finished calls kept in the session;
///   past it the oldest finished ones are dropped (running and queued
///   calls always keep theirs; the task store keeps them all)
/// - `keep_bytes`: 16 MiB that the finished records kept in the session
///   may weigh in memory (their arguments, updates and results); past it
///   the oldest finished ones are dropped, all but the newest
/// - `max_live`: 1000 calls running or waiting at once (queued duplicates,
///   fire-and-forget calls and calls waiting for a slot count too; 0 is
///   taken as 1); a call that would add one past it is refused, saying
///   so, and nothing else changes. Duplicate notices still answer, and a
///   replacing call takes the place of those it cancels
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SessionOptions {
    pub id: Option<String>,
    pub templates: Option<Arc<Templates>>,
    pub answer: AnswerMode,
    pub delivery: bool,
    pub close_timeout: Duration,
    pub settle: Duration,
    pub keep_records: usize,
    pub keep_bytes: usize,
    pub max_live: usize,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            id: None,
            templates: None,
            answer: AnswerMode::Release,
            delivery: true,
            close_timeout: Duration::from_secs(30),
            settle: Duration::from_millis(20),
            keep_records: 1000,
            keep_bytes: 16 << 20,
            max_live: 1000,
        }
    }
}

/// Why a cancel was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CancelError {
    #[error("there is no running, queued or starting call `{0}` in this session")]
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

impl Live {
    /// Ask the call to stop; after its grace period, stop it by force (B21).
    fn cancel(&self) {
        Self::cancel_all([self]);
    }

    /// [`cancel`](Self::cancel) each of `calls`, every flag raised before
    /// any call is woken ([`CallControl::stop_all`]).
    fn cancel_all<'a>(calls: impl IntoIterator<Item = &'a Self>) {
        let calls: Vec<&Self> = calls.into_iter().collect();
        // A grace of zero stops at once, not at the timer's next tick.
        CallControl::stop_all(calls.iter().map(|l| (&*l.control, l.grace.is_zero())));
        for l in calls.into_iter().filter(|l| !l.grace.is_zero()) {
            let control = l.control.clone();
            let grace = l.grace;
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                control.force_stop();
            });
        }
    }
}

#[derive(Default)]
struct State {
    closed: bool,
    /// Its client has gone ([`Session::stop_calls`]): a call still
    /// starting is cancelled before it runs.
    stopping: bool,
    live: HashMap<String, Live>,
    /// Calls still starting, by call id, from their first step that may
    /// wait (a load, validators, large arguments) until they are live or
    /// answered: a cancel that comes meanwhile is kept here for the start
    /// to see (B20, B22).
    starting: HashMap<String, StartingCall>,
    /// Call ids in the order calls were made, with their records (and the
    /// task id each is found by in the store).
    order: VecDeque<String>,
    records: HashMap<String, Kept>,
    /// What the finished records weigh together.
    finished_weight: usize,
}

/// A call still starting ([`State::starting`]). Starts under one call id
/// at once (all but one are refused) share it, each with its number.
struct StartingCall {
    /// The tool the first of them names.
    tool: String,
    starts: usize,
    /// The number the next start under this id takes.
    next: u64,
    /// The starts numbered below this were asked to stop by
    /// [`Session::cancel`]; a start that comes after the cancel was not.
    cancelled_below: u64,
}

/// A call's record as its session keeps it.
struct Kept {
    record: TaskRecord,
    /// What the record weighs ([`TaskRecord::weight`]) once its call has
    /// ended; 0 while it runs. Kept beside the record rather than in a map
    /// of its own: one map insert and removal less for every call.
    weight: usize,
}

impl State {
    /// Cancel the cancellable live calls (B20, B21).
    fn cancel_live(&self) {
        Live::cancel_all(self.live.values().filter(|l| l.cancellable));
    }
}

struct Inner {
    id: String,
    registry: Arc<Registry>,
    templates: Arc<Templates>,
    answer: AnswerMode,
    close_timeout: Duration,
    keep_records: usize,
    keep_bytes: usize,
    max_live: usize,
    state: Mutex<State>,
    delivery: Arc<Delivery>,
    /// Made on the first subscription: a session nobody watches pays for
    /// no events.
    events: OnceLock<broadcast::Sender<CallEvent>>,
    /// Woken when a live call ends once the session is closing (`close`).
    call_ended: Notify,
    /// The session's turns at its plugins' slots, shared with its calls.
    turns: Arc<Turns>,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The call `call_id` ended: weigh its record (its arguments and
    /// result weigh `arguments_and_result`), and drop the oldest finished
    /// records past the bounds, all but the newest (this one).
    fn forget_finished(&self, state: &mut State, call_id: &str, arguments_and_result: usize) {
        if let Some(kept) = state.records.get_mut(call_id) {
            let old = std::mem::replace(&mut kept.weight, kept.record.weight(arguments_and_result));
            state.finished_weight = state.finished_weight + kept.weight - old;
        }
        let mut finished = state.order.len() - state.live.len();
        let mut i = 0;
        while finished > 1
            && (finished > self.keep_records || state.finished_weight > self.keep_bytes)
            && i < state.order.len()
        {
            // The call that just ended is the newest finished one, though
            // it may have started first.
            if state.order[i] == call_id || state.live.contains_key(&state.order[i]) {
                i += 1;
                continue;
            }
            if let Some(kept) = state
                .order
                .remove(i)
                .and_then(|id| state.records.remove(&id))
            {
                state.finished_weight -= kept.weight;
            }
            finished -= 1;
        }
    }

    /// Send a call's event to the session's subscribers and the host's;
    /// `arguments` go with `Started` to the host's.
    fn emit(
        &self,
        task_id: &str,
        arguments: Option<&serde_json::Value>,
        call_id: &str,
        tool: &str,
        kind: EventKind,
    ) {
        let session = self.events.get().filter(|s| s.receiver_count() > 0);
        let host = (self.registry.events.get()).filter(|h| h.receiver_count() > 0);
        if session.is_none() && host.is_none() {
            return;
        }
        let event = CallEvent {
            call_id: call_id.to_owned(),
            session_id: self.id.clone(),
            tool: tool.to_owned(),
            at: SystemTime::now(),
            kind,
        };
        // No subscriber left is fine.
        if let Some(host) = host {
            let _ = host.send(HostEvent {
                task_id: task_id.to_owned(),
                arguments: arguments.cloned(),
                event: event.clone(),
            });
        }
        if let Some(session) = session {
            let _ = session.send(event);
        }
    }
}

impl Drop for Inner {
    /// The last handle is gone: nothing may run on (B24).
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        CallControl::force_stop_all(state.live.values().map(|l| &*l.control));
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A session that may be gone: what the host keeps of its sessions.
#[derive(Clone)]
pub(crate) struct WeakSession(Weak<Inner>);

impl WeakSession {
    pub(crate) fn upgrade(&self) -> Option<Session> {
        self.0.upgrade().map(|inner| Session { inner })
    }

    pub(crate) fn is_gone(&self) -> bool {
        self.0.strong_count() == 0
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

impl Session {
    pub(crate) fn open(registry: Arc<Registry>, options: SessionOptions) -> Self {
        let templates = options
            .templates
            .unwrap_or_else(|| registry.config.templates.clone());
        Session {
            inner: Arc::new(Inner {
                id: options.id.unwrap_or_else(crate::ids::session_id),
                delivery: Arc::new(Delivery::new(
                    options.delivery,
                    templates.clone(),
                    options.settle,
                )),
                registry,
                templates,
                answer: options.answer,
                close_timeout: options.close_timeout,
                keep_records: options.keep_records,
                keep_bytes: options.keep_bytes,
                max_live: options.max_live.max(1),
                state: Mutex::default(),
                events: OnceLock::new(),
                call_ended: Notify::new(),
                turns: Arc::default(),
            }),
        }
    }

    /// A handle that does not keep the session open.
    pub(crate) fn downgrade(&self) -> WeakSession {
        WeakSession(Arc::downgrade(&self.inner))
    }

    /// Cancel this session's call found by `task_id`, if it has one.
    pub(crate) fn cancel_task(&self, task_id: &str) -> Option<Result<(), CancelError>> {
        let call_id = (self.inner.state().records.values())
            .find(|k| k.record.task_id == task_id)
            .map(|k| k.record.call.call_id.clone())?;
        Some(self.cancel(&call_id))
    }

    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The tools as the model sees them: every served tool, and those of
    /// plugins still loading that the compile cache knows from an earlier
    /// load ([`Host::listed`](crate::Host::listed)); `confirm` tools with
    /// the `confirm_duplicate` argument (B12); and the three companion
    /// tools (B25), always listed while any tool is listed so the list
    /// stays stable.
    pub fn tools(&self) -> Vec<ToolView> {
        let mut tools: Vec<ToolView> = (self.inner.registry.listed_tools().iter())
            .map(|(plugin, tool)| ToolView::of(plugin, tool))
            .collect();
        if !tools.is_empty() {
            tools.extend(companion::views());
        }
        tools
    }

    /// Call a tool under `call_id` and wait for its answer: the result, the
    /// first update (in the session's [`AnswerMode::Release`]), a duplicate
    /// notice, an error, or a started notice. The call goes on after the
    /// answer; what follows is delivered.
    ///
    /// # Cancel safety
    /// Dropping the future does not stop the call; its answer is lost and its
    /// record and events remain.
    pub async fn call(&self, call_id: &str, tool: &str, arguments: &str) -> Answer {
        self.call_in(self.inner.answer, call_id, tool, arguments)
            .await
    }

    /// [`call`](Self::call), answering in `mode`: with [`AnswerMode::Final`]
    /// the answer is the call's end (its updates go to the events only).
    ///
    /// # Cancel safety
    /// As [`call`](Self::call).
    pub async fn call_in(
        &self,
        mode: AnswerMode,
        call_id: &str,
        tool: &str,
        arguments: &str,
    ) -> Answer {
        self.call_cancelled_by(mode, None, call_id, tool, arguments)
            .await
    }

    /// [`call_in`](Self::call_in), with what cancels the call (B20–B22)
    /// while it is still starting: cancelled then, the call answers
    /// "cancelled" without running, as when [`cancel`](Self::cancel) names
    /// it then. Once it is live, [`cancel`](Self::cancel) cancels it.
    pub(crate) async fn call_cancelled_by(
        &self,
        mode: AnswerMode,
        cancel: Option<&CancellationToken>,
        call_id: &str,
        tool: &str,
        arguments: &str,
    ) -> Answer {
        let start = Starting {
            mode,
            to_end: false,
            cancel,
        };
        match self.start(start, call_id, tool, arguments).await {
            Start::Answered(a) => a,
            Start::Refused(e) => Answer::error(call_id, e.model_message()),
            Start::Running {
                now: Some(now),
                task,
                wait_for,
                ..
            } => {
                let task_id = task.task_id.clone();
                tokio::spawn(task.run(wait_for));
                // Started or queued: it goes on in the background.
                self.make_durable().await;
                Answer {
                    task_id: Some(task_id),
                    ..now
                }
            }
            Start::Running {
                now: None,
                answer,
                task,
                wait_for,
            } => {
                let task_id = task.task_id.clone();
                match Inline::new(task.run(wait_for)).until(answer).await {
                    Ok(finish) => {
                        if finish.outcome.is_none() {
                            // Released by an update: the call goes on.
                            self.make_durable().await;
                        }
                        Answer {
                            task_id: Some(task_id),
                            ..finish.answer
                        }
                    }
                    Err(_) => Answer::error(
                        call_id,
                        CallError::Unavailable {
                            detail: "the call ended without an answer".into(),
                        }
                        .model_message(),
                    ),
                }
            }
        }
    }

    /// Run a call to its end and return how it ended: the path of
    /// [`Host::call`](crate::Host::call).
    pub(crate) async fn call_to_end(
        &self,
        call_id: &str,
        tool: &str,
        arguments: &str,
    ) -> CallOutcome {
        let started = Instant::now();
        let outcome = |result: Result<Output, CallError>| CallOutcome {
            call_id: call_id.to_owned(),
            tool: tool.to_owned(),
            result,
            fuel_used: 0,
            elapsed: started.elapsed(),
        };
        match self
            .start(
                Starting {
                    mode: AnswerMode::Final,
                    to_end: true,
                    cancel: None,
                },
                call_id,
                tool,
                arguments,
            )
            .await
        {
            Start::Refused(e) => outcome(Err(e)),
            Start::Answered(a) if a.kind == AnswerKind::Cancelled => {
                outcome(Err(CallError::Cancelled))
            }
            Start::Answered(a) => outcome(if a.is_error {
                Err(CallError::ToolFailed(a.output))
            } else {
                Ok(Output {
                    text: Some(a.output),
                    data: a.data,
                })
            }),
            Start::Running {
                answer,
                task,
                wait_for,
                ..
            } => match Inline::new(task.run(wait_for)).until(answer).await {
                Ok(Finish {
                    outcome: Some(o), ..
                }) => o,
                _ => outcome(Err(CallError::Unavailable {
                    detail: "the call ended without an answer".into(),
                })),
            },
        }
    }

    /// Ask a running or queued call to stop (B20–B22): `cancelled()` turns
    /// true at once, and after the plugin's grace period the call is stopped
    /// by force at its next fuel check. A call still starting (its plugin
    /// loading, its validators being built, large arguments being
    /// checked) answers "cancelled" without running; one that has not
    /// waited for any of these is not found yet. A tool that is not
    /// cancellable is refused with [`CancelError::NotCancellable`], except
    /// one not known yet when it is asked (its plugin still loading): that
    /// cancel is `Ok`, and the call runs if its tool turns out not to be
    /// cancellable.
    pub fn cancel(&self, call_id: &str) -> Result<(), CancelError> {
        let mut state = self.inner.state();
        let not_cancellable = |tool: &str| CancelError::NotCancellable {
            call_id: call_id.to_owned(),
            tool: tool.to_owned(),
        };
        if let Some(live) = state.live.get(call_id) {
            if !live.cancellable {
                return Err(not_cancellable(&live.tool));
            }
            live.cancel();
            return Ok(());
        }
        let starting = state
            .starting
            .get_mut(call_id)
            .ok_or_else(|| CancelError::NotFound(call_id.to_owned()))?;
        if self.inner.registry.cancellable(&starting.tool) == Some(false) {
            return Err(not_cancellable(&starting.tool));
        }
        starting.cancelled_below = starting.next;
        Ok(())
    }

    /// The client has gone, and the session answers what it had asked
    /// until it closes (B24): cancel every cancellable running or queued
    /// call, as [`cancel`](Self::cancel) would each, every flag raised at
    /// once, and each call still starting before it runs.
    pub(crate) fn stop_calls(&self) {
        let mut state = self.inner.state();
        state.stopping = true;
        state.cancel_live();
    }

    /// The running and queued calls of this session, oldest first.
    pub fn running(&self) -> Vec<CallRecord> {
        let state = self.inner.state();
        state
            .order
            .iter()
            .filter(|id| state.live.contains_key(*id))
            .filter_map(|id| state.records.get(id).map(|k| k.record.call.clone()))
            .collect()
    }

    /// The record of a call of this session (B31).
    pub fn record(&self, call_id: &str) -> Option<CallRecord> {
        self.inner
            .state()
            .records
            .get(call_id)
            .map(|k| k.record.call.clone())
    }

    /// The task id of a call of this session: what finds its record in the
    /// host's [task store](crate::Host::store), from any session and after
    /// a restart (B31).
    pub fn task_id(&self, call_id: &str) -> Option<String> {
        self.inner
            .state()
            .records
            .get(call_id)
            .map(|k| k.record.task_id.clone())
    }

    /// The record of a call of this session with its task id.
    pub(crate) fn task_record(&self, call_id: &str) -> Option<TaskRecord> {
        (self.inner.state().records.get(call_id)).map(|k| k.record.clone())
    }

    /// Make what the store holds of this session's calls durable: before
    /// an answer that says a call goes on in the background (B31). A store
    /// that cannot keep it is logged; the answer goes out all the same.
    pub(crate) async fn make_durable(&self) {
        match self.inner.registry.store.flush().await {
            Ok(()) => {}
            // The store logged its failure or its full queue once; one line
            // a call would drown that line.
            Err(e @ (StoreError::Failed { .. } | StoreError::Full(_))) => {
                tracing::debug!(session = %self.inner.id, error = %e, "a background call's record is not on disk");
            }
            Err(e) => {
                tracing::warn!(session = %self.inner.id, error = %e, "a background call's record is not on disk");
            }
        }
    }

    /// The record of a call once it has ended; `None` for a call_id this
    /// session does not know.
    ///
    /// # Cancel safety
    /// Cancel safe.
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
            .filter_map(|id| state.records.get(id).map(|k| k.record.call.clone()))
            .collect()
    }

    /// The events of every call of this session from now on (B29). A
    /// subscriber that falls more than 4096 events behind loses the oldest.
    pub fn subscribe(&self) -> broadcast::Receiver<CallEvent> {
        self.inner
            .events
            .get_or_init(|| broadcast::channel(4096).0)
            .subscribe()
    }

    /// The agent spoke: items pending from before this are delivered with
    /// the instructions that they may already be told (B27).
    pub fn agent_spoke(&self) {
        self.inner.delivery.agent_spoke();
    }

    /// Whether items are waiting for delivery.
    pub fn has_pending(&self) -> bool {
        self.inner.delivery.has_pending()
    }

    /// Take everything pending as one delivery, if anything is pending and
    /// no other delivery is out.
    pub fn try_reply(&self) -> Option<ReplyRequest> {
        self.inner.delivery.try_reply()
    }

    /// Wait until something is pending, then take it all as one delivery
    /// (B26). Call it when the agent is idle. `None` once the session is
    /// closed.
    ///
    /// # Cancel safety
    /// Cancel safe: items are taken only when the delivery is returned.
    pub async fn next_reply(&self) -> Option<ReplyRequest> {
        self.inner.delivery.next_reply().await
    }

    /// Close the session (B24): cancel its cancellable calls, give the others
    /// up to the close timeout, then stop everything by force. Nothing is
    /// delivered afterwards.
    ///
    /// # Cancel safety
    /// Cancel safe: the calls were told to stop; dropping the future only
    /// stops waiting for them (the last dropped handle stops them by force).
    pub async fn close(&self) {
        let inner = &self.inner;
        {
            let mut state = inner.state();
            state.closed = true;
            state.cancel_live();
        }
        inner.delivery.close();
        let deadline = Instant::now() + inner.close_timeout;
        let mut forced = false;
        loop {
            let notified = inner.call_ended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if inner.state().live.is_empty() {
                return;
            }
            if !forced && Instant::now() >= deadline {
                forced = true;
                let state = inner.state();
                CallControl::force_stop_all(state.live.values().map(|l| &*l.control));
            }
            if forced {
                notified.await;
            } else {
                let _ = tokio::time::timeout_at(deadline.into(), notified).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::testing::{copy_test_plugin, root};
    use crate::{Host, HostConfig};

    async fn behave_session() -> (Session, tempfile::TempDir) {
        let folder = tempfile::tempdir().expect("temp dir");
        copy_test_plugin("behave", folder.path());
        let mut config = HostConfig::default();
        config.engine.instances = 64;
        config.cache_dir = Some(root().join("target/toolhost-test-cache"));
        let host = Host::new(config).expect("host");
        let report = host.load_dir(folder.path()).await.expect("load");
        assert!(report.refused.is_empty(), "{:?}", report.refused);
        (host.open_session(SessionOptions::default()), folder)
    }

    /// B20, B22: a call whose cancel came while it was still starting
    /// answers "cancelled" without running, and leaves no record (a cancel
    /// that found no call to cancel was lost, and `wait_cancel` ran until
    /// cancelled); a tool that is not cancellable runs all the same.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_cancelled_while_it_starts_answers_cancelled_without_running() {
        let (session, _folder) = behave_session().await;
        let cancel = CancellationToken::new();
        cancel.cancel();
        let call =
            |id, tool| session.call_cancelled_by(AnswerMode::Final, Some(&cancel), id, tool, "{}");
        let wait = std::time::Duration::from_secs(30);
        let answer = tokio::time::timeout(wait, call("c1", "wait_cancel"))
            .await
            .expect("answered at once, not left waiting");
        assert_eq!(answer.kind, AnswerKind::Cancelled, "{answer:?}");
        assert!(answer.output.contains("was cancelled"), "{answer:?}");
        assert!(session.record("c1").is_none(), "it did not run");

        let ok = tokio::time::timeout(wait, call("c2", "ok"))
            .await
            .expect("answered");
        assert_eq!((ok.kind, ok.output.as_str()), (AnswerKind::Result, "ok"));
    }

    /// A call still starting: its arguments, well past the size checked
    /// inline, are being checked off the runtime (for a millisecond or so)
    /// when its first poll returns.
    async fn starting<'a>(
        session: &'a Session,
        call_id: &'a str,
        tool: &'a str,
        arguments: &'a str,
    ) -> std::pin::Pin<Box<impl Future<Output = Answer> + 'a>> {
        let mut call = Box::pin(session.call_in(AnswerMode::Final, call_id, tool, arguments));
        assert!(futures::poll!(call.as_mut()).is_pending());
        assert!(session.record(call_id).is_none(), "still starting");
        call
    }

    /// B20, B22: `Session::cancel` of a call still starting is not lost (it
    /// found no call, and `wait_cancel` ran until cancelled): the call
    /// answers "cancelled" without running; a tool that is not cancellable
    /// says so, and runs; a start under the same id that comes after the
    /// cancel is not cancelled by it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_cancelled_by_its_id_while_it_starts_answers_cancelled_without_running() {
        let (session, _folder) = behave_session().await;
        let arguments = format!("{{}}{}", " ".repeat(16 * crate::call::CHECK_INLINE));
        let wait = std::time::Duration::from_secs(30);

        let call = starting(&session, "c1", "wait_cancel", &arguments).await;
        session.cancel("c1").expect("the starting call is found");
        let answer = tokio::time::timeout(wait, call)
            .await
            .expect("answered at once, not left waiting");
        assert_eq!(answer.kind, AnswerKind::Cancelled, "{answer:?}");
        assert!(session.record("c1").is_none(), "it did not run");

        let call = starting(&session, "c2", "ok", &arguments).await;
        let refused = session.cancel("c2");
        assert!(
            matches!(refused, Err(CancelError::NotCancellable { .. })),
            "{refused:?}"
        );
        let ok = tokio::time::timeout(wait, call).await.expect("answered");
        assert_eq!((ok.kind, ok.output.as_str()), (AnswerKind::Result, "ok"));
        assert!(
            matches!(session.cancel("c3"), Err(CancelError::NotFound(_))),
            "no call c3"
        );

        let first = starting(&session, "c4", "wait_cancel", &arguments).await;
        session.cancel("c4").expect("the starting call is found");
        let mut second = starting(&session, "c4", "wait_cancel", &arguments).await;
        let answer = tokio::time::timeout(wait, first).await.expect("answered");
        assert_eq!(answer.kind, AnswerKind::Cancelled, "{answer:?}");
        let mut events = session.subscribe();
        let live = async {
            while let Ok(event) = events.recv().await {
                if (event.call_id.as_str(), &event.kind) == ("c4", &EventKind::Started) {
                    break;
                }
            }
        };
        tokio::time::timeout(wait, async {
            tokio::select! {
                answer = second.as_mut() => panic!("the later start did not run: {answer:?}"),
                () = live => {}
            }
        })
        .await
        .expect("the later start runs");
        session.cancel("c4").expect("the running call is found");
        let answer = tokio::time::timeout(wait, second).await.expect("answered");
        assert_eq!(answer.kind, AnswerKind::Cancelled, "{answer:?}");
        assert!(
            session.inner.state().starting.is_empty(),
            "none left starting"
        );
    }

    /// B24: once its client has gone, a session's calls still starting
    /// answer "cancelled" without running.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn once_its_client_has_gone_a_sessions_starting_calls_answer_cancelled() {
        let (session, _folder) = behave_session().await;
        session.stop_calls();
        let wait = std::time::Duration::from_secs(30);
        let answer = tokio::time::timeout(wait, session.call("c1", "wait_cancel", "{}"))
            .await
            .expect("answered at once, not left waiting");
        assert_eq!(answer.kind, AnswerKind::Cancelled, "{answer:?}");
        assert!(session.record("c1").is_none(), "it did not run");
    }
}
