//! The MCP request handler: tools, calls, tasks and change notifications
//! for one connection's session.

use std::sync::{Arc, OnceLock};

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CancelTaskParams, CreateTaskResult, GetTaskParams,
    GetTaskResult, Implementation, InitializeRequestParams, InitializeResult, ListToolsResult,
    PaginatedRequestParams, ProgressNotificationParam, ProgressToken, ProtocolVersion,
    ServerCapabilities, ServerConfig, SubscriptionFilter, TaskStatus, Tool, UpdateTaskParams,
};
use rmcp::service::{NotificationContext, RequestContext, SubscriptionContext};
use rmcp::{ErrorData, Peer, RoleServer, ServerHandler};
use serde_json::Value;
use tokio::sync::{broadcast, watch};

use super::McpOptions;
use super::connection::{Connection, Owned};
use super::convert;
use super::sessions::{CallProgress, DirectSlot};
use super::tasks::{Found, Reservation, Tasks};
use crate::catalog::ToolView;
use crate::host::Host;
use crate::records::{CallEvent, CallStatus, EventKind};
use crate::session::{AnswerKind, AnswerMode, CancelError, SessionOptions};

const INSTRUCTIONS: &str = "Tools run as background calls. A call that takes a while answers with \
its first progress update and its call_id, and goes on running: ask for its status with \
toolhost_task_status, list what runs with toolhost_running_tasks, and stop a cancellable call \
with toolhost_cancel_task. Do not assume results that an answer does not state.";

/// What an HTTP server's handlers share.
pub(crate) struct HttpLane {
    pub(crate) host: Host,
    pub(crate) options: Arc<McpOptions>,
    /// The tasks of sessionless (2026-07-28) requests, found by id alone.
    pub(crate) tasks: Arc<Tasks>,
    pub(crate) open: Arc<watch::Sender<usize>>,
    /// True once the server stops: sessionless connections kept for their
    /// tasks close then.
    pub(crate) stopping: watch::Sender<bool>,
}

enum Lane {
    /// stdio: the one connection; `serve_stdio` closes it.
    Fixed(Arc<Connection>),
    /// HTTP: a client that opens a session with `initialize` gets its own
    /// connection, closed with the handler; any other request (one handler
    /// each) gets a sessionless one, opened when first needed.
    Http {
        lane: Arc<HttpLane>,
        own: OnceLock<Own>,
    },
}

/// The connection of an HTTP handler.
#[derive(Clone)]
struct Own {
    /// Shared with the tasks of a sessionless connection, which keep it
    /// open until their calls end; the last one dropped closes it.
    owned: Arc<Owned>,
    sessionless: bool,
}

/// What keeps a sessionless connection open after its request: the task
/// that follows its call holds it until the call ends, or the server stops.
struct KeepOpen {
    _owned: Arc<Owned>,
    stopping: watch::Receiver<bool>,
}

/// The `rmcp` server handler of one connection (or, over HTTP, of one
/// stateless request).
pub(crate) struct ToolServer {
    lane: Lane,
}

impl ToolServer {
    pub(crate) fn for_connection(connection: Arc<Connection>) -> Self {
        Self {
            lane: Lane::Fixed(connection),
        }
    }

    pub(crate) fn for_http(lane: Arc<HttpLane>) -> Self {
        Self {
            lane: Lane::Http {
                lane,
                own: OnceLock::new(),
            },
        }
    }

    pub(crate) fn connection(&self) -> &Arc<Connection> {
        match &self.lane {
            Lane::Fixed(c) => c,
            Lane::Http { lane, own } => {
                &own.get_or_init(|| Own {
                    owned: Arc::new(Owned(Connection::open_counted(
                        &lane.host,
                        lane.options.clone(),
                        Some(lane.open.clone()),
                        Some(lane.tasks.clone()),
                    ))),
                    sessionless: true,
                })
                .owned
                .0
            }
        }
    }

    fn options(&self) -> &McpOptions {
        match &self.lane {
            Lane::Fixed(c) => c.options(),
            Lane::Http { lane, .. } => &lane.options,
        }
    }

    /// A request of the 2026-07-28 revision over HTTP, with no session.
    fn sessionless(&self) -> bool {
        match &self.lane {
            Lane::Fixed(_) => false,
            Lane::Http { own, .. } => own.get().is_none_or(|o| o.sessionless),
        }
    }

    /// The task table this handler's client reads: its connection's, or,
    /// for a sessionless request, the server's (without opening a session
    /// just to read it).
    fn tasks(&self) -> &Tasks {
        match &self.lane {
            Lane::Fixed(c) => c.tasks(),
            Lane::Http { lane, own } => match own.get() {
                Some(o) if !o.sessionless => o.owned.0.tasks(),
                _ => &lane.tasks,
            },
        }
    }

    /// The task `task_id` as this handler's client may see it: the one
    /// place `tasks/get`, `tasks/update` and `tasks/cancel` look tasks up.
    /// A task no table holds (its connection closed, or the host restarted)
    /// is read from the task store by its id, which only its client knows
    /// (B31): how its call ended, or `failed` for a call the host was
    /// stopped in.
    async fn find_task(&self, task_id: &str) -> Result<Found, ErrorData> {
        if let Some(found) = self.tasks().find(task_id) {
            return Ok(found);
        }
        // Its record may still wait in the store's gathering window:
        // committed first.
        let _ = self.host().store().settle().await;
        let record = self.host().store().get(task_id).await.map_err(|e| {
            ErrorData::internal_error(format!("cannot read task {task_id}: {e}"), None)
        })?;
        let record = record.ok_or_else(|| unknown_task(task_id))?;
        Ok(Found {
            task: super::tasks::stored(&record, self.options()),
            call_id: record.call.call_id,
            connection: std::sync::Weak::new(),
        })
    }

    fn host(&self) -> &Host {
        match &self.lane {
            Lane::Fixed(c) => c.host(),
            Lane::Http { lane, .. } => &lane.host,
        }
    }

    /// The tools as this handler's session lists them; a sessionless
    /// request that only lists needs no connection, just a session's view.
    fn tool_views(&self) -> Vec<ToolView> {
        match &self.lane {
            Lane::Http { lane, own } if own.get().is_none() => lane
                .host
                .open_session(SessionOptions {
                    delivery: false,
                    ..SessionOptions::default()
                })
                .tools(),
            _ => self.connection().session().tools(),
        }
    }

    fn tool_list(&self) -> Vec<Tool> {
        self.tool_views().iter().map(convert::tool).collect()
    }

    /// Answer with a task that follows `call_id` until it ends: under the
    /// call's task id, once the task store has the call on disk (B31), so
    /// `tasks/get` finds it after a restart too.
    async fn task(
        &self,
        reservation: Reservation,
        call_id: &str,
        status_message: Option<String>,
        events: broadcast::Receiver<CallEvent>,
    ) -> CallToolResponse {
        let connection = self.connection().clone();
        let session = connection.session();
        session.make_durable().await;
        let task_id = session
            .task_id(call_id)
            .unwrap_or_else(crate::store::new_task_id);
        let task = connection.tasks().create(
            reservation,
            Arc::downgrade(&connection),
            task_id,
            call_id,
            status_message,
        );
        tracing::info!(session = %connection.session().id(), call_id, task_id = %task.task_id, "call answered with a task");
        let keep = match &self.lane {
            Lane::Http { lane, own } => own.get().filter(|o| o.sessionless).map(|o| KeepOpen {
                _owned: o.owned.clone(),
                stopping: lane.stopping.subscribe(),
            }),
            Lane::Fixed(_) => None,
        };
        tokio::spawn(follow_task(
            connection,
            task.task_id.clone(),
            call_id.to_owned(),
            events,
            keep,
        ));
        CallToolResponse::Task(CreateTaskResult::new(task))
    }

    /// Run a `tools/call` (see [`ServerHandler::call_tool`]).
    async fn run_call(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let connection = self.connection().clone();
        let session = connection.session().clone();
        let call_id = crate::ids::call_id();
        let tool = request.name.to_string();
        let arguments = request
            .arguments
            .map(|a| crate::call::json_text(&Value::Object(a)))
            .unwrap_or_else(|| "{}".into());
        // Tasks are an extension of the 2026-07-28 revision: older peers
        // cannot tell a task from a result (their results carry no
        // `resultType`), whatever they declare.
        let tasks = connection.options().tasks
            && context
                .protocol_version()
                .is_some_and(|v| v.as_str() >= ProtocolVersion::V_2026_07_28.as_str())
            && context
                .client_capabilities()
                .is_some_and(|c| c.supports_tasks());
        // Held from the start, so that calls started together cannot all
        // find room and then overfill the table.
        let mut reservation = if tasks {
            connection.tasks().reserve()
        } else {
            None
        };
        if tasks && reservation.is_none() {
            let max = connection.tasks().max();
            tracing::warn!(session = %session.id(), %tool, max, "task limit reached");
            return Err(ErrorData::internal_error(
                format!(
                    "too many running tasks: the limit of {max} tasks (max_tasks) is reached; try again when one ends"
                ),
                None,
            ));
        }
        let mut progress = Progress::new(
            &context.peer,
            context.meta.get_progress_token(),
            context.extensions.get::<CallProgress>().cloned(),
        );
        tracing::debug!(session = %session.id(), %call_id, %tool, tasks, "tools/call");

        // In the final mode the request stays open until the call ends, its
        // updates going out as progress. A tool whose output schema is
        // listed always answers so (the client checks the answer against
        // it), and so does a sessionless request, whose session ends with
        // it: nothing could follow the call up later. A client with tasks
        // gets a task instead.
        let mode = if tasks {
            AnswerMode::Release
        } else if self.sessionless() {
            AnswerMode::Final
        } else {
            match connection.host().tool(&tool).await {
                Some(e) if crate::catalog::lists_output_schema(&e.tool) => AnswerMode::Final,
                _ => context
                    .meta
                    .get(super::ANSWER_KEY)
                    .and_then(Value::as_str)
                    .and_then(|m| m.parse().ok())
                    .unwrap_or(connection.options().answer),
            }
        };
        // Subscribed before the call starts, so none of its events is
        // missed; only when progress or a task needs them, since every
        // subscriber wakes for every call of the session.
        let mut events = (progress.wanted() || tasks).then(|| session.subscribe());
        // Polled here, not spawned: the call runs in this task until it
        // answers, and goes on by itself if this request is dropped.
        let call = session.call_cancelled_by(mode, Some(&context.ct), &call_id, &tool, &arguments);
        tokio::pin!(call);
        let task_after = connection.options().task_after;
        let task_after = async move {
            if tasks {
                tokio::time::sleep(task_after).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::pin!(task_after);
        let (mut cancel_asked, mut task_due) = (false, false);
        let answer = loop {
            tokio::select! {
                biased;
                answer = &mut call => break answer,
                () = context.ct.cancelled(), if !cancel_asked => {
                    cancel_asked = true;
                    // Nobody reads its answer now: it becomes no task.
                    reservation = None;
                    cancel_for_client(&connection, &call_id);
                    // A sessionless request is its session, which ends
                    // with it (B24): a call that cannot be cancelled is
                    // stopped after the close bound, not left to run with
                    // nobody to read its end.
                    if self.sessionless() {
                        connection.close_soon();
                    }
                }
                () = &mut task_after, if !task_due => task_due = true,
                event = next_event(&mut events) => progress.forward(&call_id, event).await,
            }
            // Still running: follow it as a task; the call goes on. Not
            // while it is still starting (a slow load, its validators):
            // dropped then, it would never run. Its first event (started
            // or queued) comes once it is live. Nor once the client has
            // cancelled the request: nobody reads its answer.
            if task_due
                && !cancel_asked
                && let Some(record) = session.record(&call_id)
                && reservation.is_some()
                && events.is_some()
                && let (Some(reservation), Some(events)) = (reservation.take(), events.take())
            {
                let message = record.updates.last().map(|u| u.message.clone());
                return Ok(self.task(reservation, &call_id, message, events).await);
            }
        };
        // The call's updates were all emitted before its answer: send the
        // ones not yet sent while the request is open. (A task follows
        // its call's events itself.)
        if let Some(rx) = events.as_mut().filter(|_| !tasks) {
            while let Ok(event) = rx.try_recv() {
                progress.forward(&call_id, Ok(event)).await;
            }
        }
        let followed = matches!(answer.kind, AnswerKind::Released | AnswerKind::Queued);
        if let Some(reservation) = reservation.take_if(|_| followed)
            && let Some(events) = events.take()
        {
            let message = match answer.kind {
                AnswerKind::Released => session
                    .record(&call_id)
                    .and_then(|r| r.updates.last().map(|u| u.message.clone())),
                _ => Some(answer.output.clone()),
            };
            return Ok(self.task(reservation, &call_id, message, events).await);
        }
        // The first update answered the call; its progress notification
        // goes out before the answer, while the request is still open.
        if answer.kind == AnswerKind::Released
            && let Some(mut events) = events
        {
            progress.flush_first(&call_id, &mut events).await;
        }
        progress.settle().await;
        Ok(CallToolResponse::Complete(convert::answer(&answer)))
    }
}

impl ServerHandler for ToolServer {
    fn get_info(&self) -> ServerConfig {
        let mut capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_tool_list_changed();
        if self.options().tasks {
            capabilities = capabilities.enable_tasks();
        }
        ServerConfig::new(capabilities.build())
            .with_server_info(
                Implementation::new("toolhost", env!("CARGO_PKG_VERSION")).with_title("toolhost"),
            )
            .with_instructions(INSTRUCTIONS)
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, ErrorData> {
        if let Lane::Http { lane, own } = &self.lane {
            let own = own.get_or_init(|| Own {
                owned: Arc::new(Owned(Connection::open_counted(
                    &lane.host,
                    lane.options.clone(),
                    Some(lane.open.clone()),
                    None,
                ))),
                sessionless: false,
            });
            // The session's calls are answered directly, by a handler of
            // the same connection.
            if let Some(slot) = context.extensions.get::<Arc<DirectSlot>>() {
                let server = ToolServer {
                    lane: Lane::Http {
                        lane: lane.clone(),
                        own: OnceLock::from(own.clone()),
                    },
                };
                slot.fill(server, context.peer.clone());
            }
        }
        context.peer.set_peer_info(request.clone());
        self.negotiate_initialize(&request)
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        // Only sessions opened with `initialize` get here; 2026-07-28
        // clients ask for changes with `subscriptions/listen` instead.
        self.connection().follow_tool_list(context.peer);
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        // Right after start the folder may still be loading; list it whole
        // (with the tools the cache knows of plugins still loading).
        self.connection().host().listed().await;
        Ok(ListToolsResult::with_all_items(self.tool_list()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tool_views()
            .iter()
            .find(|t| t.name == name)
            .map(convert::tool)
    }

    /// A `tools/call`. A panic in the host while it runs (a bug, such as an
    /// embedder's task store that panics) is answered as an error rather
    /// than leaving the request unanswered; the call ends as failed in its
    /// session as any call whose caller panicked does.
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let tool = request.name.to_string();
        // Boxed: the call's future is about 4 KiB, which every future it is
        // awaited in (rmcp's request dispatch, the stdio handler's spawned
        // task) would otherwise hold and move.
        let run = std::panic::AssertUnwindSafe(Box::pin(self.run_call(request, context)));
        match futures::FutureExt::catch_unwind(run).await {
            Ok(answer) => answer,
            Err(_) => {
                tracing::error!(%tool, "the host panicked running a tools/call");
                Err(ErrorData::internal_error(
                    format!(
                        "the host failed while running {tool}, a bug in toolhost (its log says more); \
                         the call did not complete"
                    ),
                    None,
                ))
            }
        }
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, ErrorData> {
        Ok(GetTaskResult::new(
            self.find_task(&request.task_id).await?.task,
        ))
    }

    async fn update_task(
        &self,
        request: UpdateTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        // toolhost's tools never ask the client for input, so there is
        // nothing to deliver; responses to unknown keys are ignored (SEP-2663).
        self.find_task(&request.task_id).await.map(|_| ())
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let found = self.find_task(&request.task_id).await?;
        // No connection of this session: the call ended, and its task shows
        // how, or it is another session's (here or in another host).
        let Some(connection) = found.connection.upgrade() else {
            if found.task.status() == TaskStatus::Working {
                return Err(ErrorData::invalid_params(
                    format!(
                        "task {} was started by another session (of this toolhost or another); only that session can cancel it",
                        request.task_id
                    ),
                    None,
                ));
            }
            return Ok(());
        };
        let call_id = found.call_id;
        match connection.session().cancel(&call_id) {
            Ok(()) => {
                tracing::info!(session = %connection.session().id(), %call_id, task_id = %request.task_id, "task cancelled by the client");
                Ok(())
            }
            // Already ended: its task shows how.
            Err(CancelError::NotFound(_)) => Ok(()),
            // B20: only cancellable tools can be cancelled.
            Err(e @ CancelError::NotCancellable { .. }) => {
                Err(ErrorData::invalid_params(e.to_string(), None))
            }
        }
    }

    fn accepted_subscription_filter(
        &self,
        _requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(SubscriptionFilter::builder().tools_list_changed().build())
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        let connection = self.connection().clone();
        let mut changed = connection.host().tools_changed();
        changed.mark_unchanged();
        if context.accepted().tools_list_changed != Some(true) {
            context.cancelled().await;
            return Ok(());
        }
        tokio::select! {
            () = context.cancelled() => return Ok(()),
            () = connection.closing() => return Ok(()),
            () = connection.skip_initial_load(&mut changed) => {}
        }
        loop {
            tokio::select! {
                () = context.cancelled() => return Ok(()),
                () = connection.closing() => return Ok(()),
                result = changed.changed() => {
                    if result.is_err() {
                        return Ok(());
                    }
                }
            }
            if let Err(e) = context.sink().notify_tool_list_changed().await {
                tracing::debug!(error = %e, "subscription gone");
                return Ok(());
            }
            tracing::info!(session = %connection.session().id(), "sent tools/list_changed on a subscription");
        }
    }
}

/// `notifications/cancelled` for an open call: cancel it (B20–B22). A call
/// that is not cancellable runs on; the client has stopped waiting for it.
/// One still starting stops before it runs.
fn cancel_for_client(connection: &Connection, call_id: &str) {
    let session = connection.session();
    match session.cancel(call_id) {
        Ok(()) => tracing::info!(session = %session.id(), call_id, "call cancelled by the client"),
        Err(CancelError::NotFound(_)) => {
            tracing::debug!(session = %session.id(), call_id, "the client cancelled a call that has ended, or is starting and is stopped by its request")
        }
        Err(e) => {
            tracing::info!(session = %session.id(), call_id, reason = %e, "the client cancelled a call that goes on")
        }
    }
}

fn unknown_task(task_id: &str) -> ErrorData {
    ErrorData::invalid_params(format!("unknown task `{task_id}`"), None)
}

/// Follow a call answered with a task until it ends, keeping the task's
/// status message on the latest update.
async fn follow_task(
    connection: Arc<Connection>,
    task_id: String,
    call_id: String,
    mut events: broadcast::Receiver<CallEvent>,
    mut keep: Option<KeepOpen>,
) {
    let tasks = connection.tasks();
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            // The server stops: close the session this task keeps open;
            // its calls end, and the task follows them to their end.
            () = stopping(&mut keep) => {
                keep = None;
                connection.close_soon();
                continue;
            }
        };
        match event {
            Ok(event) if event.call_id == call_id => match event.kind {
                EventKind::Updated { message, .. } => tasks.set_message(&task_id, message),
                EventKind::Ended {
                    status,
                    result,
                    error,
                    ..
                } => {
                    let answer = crate::session::ending_answer(
                        &call_id,
                        &event.tool,
                        status,
                        result.as_deref(),
                        error.as_deref(),
                    );
                    let (payload, message) = convert::task_end(status, answer.as_ref());
                    tasks.finish(&task_id, payload, message);
                    return;
                }
                EventKind::Queued | EventKind::Started => {}
            },
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(%call_id, missed, "task fell behind the session's events");
                if let Some(record) = connection.session().record(&call_id)
                    && !record.status.is_live()
                {
                    let answer = crate::session::ending_answer(
                        &call_id,
                        &record.tool,
                        record.status,
                        record.result.as_deref(),
                        record.error.as_deref(),
                    );
                    let (payload, message) = convert::task_end(record.status, answer.as_ref());
                    tasks.finish(&task_id, payload, message);
                    return;
                }
            }
            Err(broadcast::error::RecvError::Closed) => {
                let (payload, message) = convert::task_end(CallStatus::Interrupted, None);
                tasks.finish(&task_id, payload, message);
                return;
            }
        }
    }
}

/// Resolves once the server stops, or never when nothing is kept open.
async fn stopping(keep: &mut Option<KeepOpen>) {
    match keep {
        Some(k) => {
            let _ = k.stopping.wait_for(|stopping| *stopping).await;
        }
        None => std::future::pending().await,
    }
}

/// The next event, or never without a subscription.
async fn next_event(
    events: &mut Option<broadcast::Receiver<CallEvent>>,
) -> Result<CallEvent, broadcast::error::RecvError> {
    match events {
        Some(events) => events.recv().await,
        None => std::future::pending().await,
    }
}

/// Progress notifications of one request, when the client asked for them;
/// the request's peer borrowed, not cloned (a clone and its drop touch the
/// connection's shared counters on every call).
struct Progress<'a> {
    peer: &'a Peer<RoleServer>,
    token: Option<ProgressToken>,
    /// The call's own stream, for a call answered directly over HTTP.
    stream: Option<CallProgress>,
    sent: usize,
    last: Option<std::time::Instant>,
}

/// How long an answer waits after the last progress notification of its
/// request. The TypeScript SDK handles a notification in a later microtask
/// but an answer at once, dropping the request's progress handler: a
/// notification read together with the answer is lost.
const PROGRESS_SETTLE: std::time::Duration = std::time::Duration::from_millis(5);

impl<'a> Progress<'a> {
    fn new(
        peer: &'a Peer<RoleServer>,
        token: Option<ProgressToken>,
        stream: Option<CallProgress>,
    ) -> Self {
        Self {
            peer,
            token,
            stream,
            sent: 0,
            last: None,
        }
    }

    fn wanted(&self) -> bool {
        self.token.is_some()
    }

    /// Send an update of `call_id` as `notifications/progress`.
    async fn forward(
        &mut self,
        call_id: &str,
        event: Result<CallEvent, broadcast::error::RecvError>,
    ) {
        let Some(token) = &self.token else { return };
        let Ok(CallEvent {
            call_id: id,
            kind: EventKind::Updated { n, message, .. },
            ..
        }) = event
        else {
            return;
        };
        if id != call_id {
            return;
        }
        let mut params = ProgressNotificationParam::new(token.clone(), n as f64);
        params.message = Some(message);
        if let Some(stream) = &self.stream {
            stream.send(params);
        } else if let Err(e) = self.peer.notify_progress(params).await {
            tracing::debug!(call_id, error = %e, "progress not delivered");
        }
        self.sent = n;
        self.last = Some(std::time::Instant::now());
    }

    /// Wait until the last notification is [`PROGRESS_SETTLE`] old, so a
    /// client reads it before the answer.
    async fn settle(&self) {
        if let Some(last) = self.last {
            tokio::time::sleep_until((last + PROGRESS_SETTLE).into()).await;
        }
    }

    /// The call was answered by its first update, whose event is emitted
    /// just after the answer: send it now, unless already sent.
    async fn flush_first(&mut self, call_id: &str, events: &mut broadcast::Receiver<CallEvent>) {
        if self.token.is_none() || self.sent > 0 {
            return;
        }
        let wait = tokio::time::sleep(std::time::Duration::from_millis(200));
        tokio::pin!(wait);
        while self.sent == 0 {
            tokio::select! {
                () = &mut wait => return,
                event = events.recv() => {
                    if matches!(event, Err(broadcast::error::RecvError::Closed)) {
                        return;
                    }
                    self.forward(call_id, event).await;
                }
            }
        }
    }
}
