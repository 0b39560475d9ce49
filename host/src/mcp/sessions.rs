//! The HTTP sessions: rmcp's [`LocalSessionManager`], with a session's
//! `tools/call`s answered directly in the HTTP connection that posts them.
//!
//! rmcp routes every request of a session through the session's worker
//! task, which opens the request's stream, then through its service loop,
//! which spawns the handler, and the answer back the same way: six hand-offs
//! between tasks for one call, each a wake-up of another thread. A call
//! that asks for no progress needs none of them: it is handled as stdio
//! handles its calls ([`direct`]), polled first in the connection's task,
//! where most calls end.
//!
//! What the client sees stays as rmcp makes it:
//! - every check of the request (its headers, protocol version and
//!   session) is rmcp's, made before the request reaches
//!   [`SessionManager::create_stream`];
//! - the answer is an SSE stream opened with a priming event, whose id
//!   (`d` and the call's number in its session, unlike any of rmcp's ids)
//!   resumes the stream with `Last-Event-ID` while the call runs; as with
//!   rmcp, an answer made while no stream waits for it is not kept;
//! - a call with a progress token has its progress on its own stream,
//!   before its answer, each notification an event with an id of its own
//!   (`d<call>-<k>`) from which the stream resumes; the last
//!   [`KEPT_PROGRESS`] are kept for a stream that resumes;
//! - `notifications/cancelled` cancels the call, which then answers
//!   nothing; closing the session cancels its calls and ends their
//!   streams, with no answer (B24: nothing is delivered to a closed
//!   session).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use futures::{Stream, StreamExt};
use rmcp::model::{
    ClientJsonRpcMessage, ClientRequest, GetExtensions, JsonRpcRequest, ProgressNotification,
    ProgressNotificationParam, RequestId, ServerJsonRpcMessage, ServerNotification,
};
use rmcp::transport::streamable_http_server::session::local::{
    LocalSessionManager, LocalSessionManagerError, SessionError,
};
use rmcp::transport::streamable_http_server::session::{
    ServerSseMessage, SessionId, SessionManager,
};
use rmcp::{Peer, RoleServer};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::direct::{self, cancelled_id, id_in_use};
use super::server::ToolServer;

/// The sessions of an HTTP server ([module docs](self)).
pub(crate) struct Sessions {
    local: LocalSessionManager,
    /// By session id: what answers the session's calls directly, from its
    /// `initialize` to its close.
    direct: Mutex<HashMap<SessionId, Arc<DirectSession>>>,
}

impl Sessions {
    pub(crate) fn new(local: LocalSessionManager) -> Self {
        Self {
            local,
            direct: Mutex::default(),
        }
    }

    /// rmcp's sessions, which say which sessions are open.
    pub(crate) fn local(&self) -> &LocalSessionManager {
        &self.local
    }

    fn direct(&self, id: &SessionId) -> Option<Arc<DirectSession>> {
        lock(&self.direct).get(id).cloned()
    }
}

/// Where a session's handler leaves, as it answers `initialize`, what
/// answers the session's calls directly: rmcp passes it to the handler
/// in the request's extensions.
#[derive(Default)]
pub(crate) struct DirectSlot(OnceLock<Arc<DirectSession>>);

impl DirectSlot {
    /// `server` handles the session's calls and `peer` is its client.
    pub(crate) fn fill(&self, server: ToolServer, peer: Peer<RoleServer>) {
        let _ = self.0.set(Arc::new(DirectSession {
            server,
            peer,
            stop: CancellationToken::new(),
            calls: Mutex::default(),
        }));
    }
}

/// What answers one session's calls directly.
pub(crate) struct DirectSession {
    server: ToolServer,
    peer: Peer<RoleServer>,
    /// Cancelled when the session closes, as rmcp's loop cancels its
    /// requests then: each call is cancelled, and still answers.
    stop: CancellationToken,
    calls: Mutex<Calls>,
}

/// A session's direct calls that have not answered yet.
#[derive(Default)]
struct Calls {
    /// The number of the session's last call.
    last: u64,
    running: HashMap<RequestId, Running>,
}

struct Running {
    number: u64,
    cancel: CancellationToken,
    events: watch::Sender<Events>,
}

/// The progress notifications of a call kept for a stream that resumes:
/// the newest, past which a stream that lags loses the oldest.
const KEPT_PROGRESS: usize = 64;

/// What a call's stream carries: its progress so far, then its end. The
/// sender dropped while the call runs: cancelled by the client, or its
/// handler gone; no answer comes.
struct Events {
    number: u64,
    /// The newest progress notifications, after `dropped` older ones.
    progress: VecDeque<ServerSseMessage>,
    dropped: usize,
    end: End,
}

enum End {
    Running,
    Answered(ServerSseMessage),
    /// Its session closed.
    Closed,
}

impl Events {
    fn new(number: u64) -> Self {
        Self {
            number,
            progress: VecDeque::new(),
            dropped: 0,
            end: End::Running,
        }
    }
}

/// Where a direct call's progress goes: onto its own stream. Passed to the
/// handler in the request's extensions.
#[derive(Clone)]
pub(crate) struct CallProgress(watch::Sender<Events>);

impl CallProgress {
    /// Add `progress` to the call's stream, as its next event.
    pub(crate) fn send(&self, progress: ProgressNotificationParam) {
        let message = ServerJsonRpcMessage::notification(ServerNotification::ProgressNotification(
            ProgressNotification::new(progress),
        ));
        self.0.send_modify(|events| {
            let k = events.dropped + events.progress.len() + 1;
            let id = format!("{}-{k}", event_id(events.number));
            events
                .progress
                .push_back(ServerSseMessage::new(id, message));
            if events.progress.len() > KEPT_PROGRESS {
                events.progress.pop_front();
                events.dropped += 1;
            }
        });
    }
}

impl DirectSession {
    /// Start the call `request` and answer with its stream, opened with a
    /// priming event when `retry` is set (as rmcp opens its streams).
    fn call(
        self: &Arc<Self>,
        mut request: JsonRpcRequest<ClientRequest>,
        retry: Option<Duration>,
    ) -> impl Stream<Item = ServerSseMessage> + Send + Sync + 'static + use<> {
        let id = request.id.clone();
        let cancel = self.stop.child_token();
        let (number, answer, answered) = {
            let mut calls = lock(&self.calls);
            let number = calls.last + 1;
            let (answer, answered) = watch::channel(Events::new(number));
            if calls.running.contains_key(&id) {
                let refusal = ServerSseMessage::from_message(id_in_use(id));
                answer.send_modify(|e| e.end = End::Answered(refusal));
                return call_stream(None, answered, 0);
            }
            calls.last = number;
            let running = Running {
                number,
                cancel: cancel.clone(),
                events: answer.clone(),
            };
            calls.running.insert(id.clone(), running);
            (number, answer, answered)
        };
        (request.request.extensions_mut()).insert(CallProgress(answer.clone()));
        let ended = Ended {
            session: self.clone(),
            id,
        };
        // Boxed: rmcp's dispatch makes the handler's future about 5 KiB,
        // which the spawn would otherwise copy.
        let mut call = Box::pin(async move {
            let session = &ended.session;
            let message = direct::answer(&session.server, &session.peer, request, cancel.clone());
            let message = message.await;
            // A cancelled call answers nothing, as with rmcp; nor does a
            // call of a closed session, whose stop cancelled it.
            if !cancel.is_cancelled() {
                let message = ServerSseMessage::from_message(message);
                answer.send_modify(|e| e.end = End::Answered(message));
            }
            drop(ended);
        });
        if !direct::ends_in_first_poll(call.as_mut()) {
            tokio::spawn(call);
        }
        let priming = retry.map(|retry| ServerSseMessage::priming(event_id(number), retry));
        call_stream(priming, answered, 0)
    }

    /// The events of the running call numbered `number`.
    fn running(&self, number: u64) -> Option<watch::Receiver<Events>> {
        let calls = lock(&self.calls);
        let mut running = calls.running.values();
        running
            .find(|r| r.number == number)
            .map(|r| r.events.subscribe())
    }

    /// Cancel the session's calls and end their streams.
    fn close(&self) {
        self.stop.cancel();
        for running in lock(&self.calls).running.values() {
            running.events.send_modify(|e| e.end = End::Closed);
        }
    }
}

/// Takes a call out of its session's running calls when the call ends, or
/// is dropped (a panic unwinds through this). Its id is its own until
/// then: a request reusing it is refused.
struct Ended {
    session: Arc<DirectSession>,
    id: RequestId,
}

impl Drop for Ended {
    fn drop(&mut self) {
        lock(&self.session.calls).running.remove(&self.id);
    }
}

/// The SSE events of a call: `priming`, its progress from the `from`th
/// notification on (the first is 0), then its answer when it has one;
/// nothing more if it ends with none or its session closes.
fn call_stream(
    priming: Option<ServerSseMessage>,
    events: watch::Receiver<Events>,
    from: usize,
) -> impl Stream<Item = ServerSseMessage> + Send + Sync + 'static {
    let rest = futures::stream::unfold(Some((events, from)), |state| async move {
        let (mut events, next) = state?;
        loop {
            let item = {
                let now = events.borrow_and_update();
                let next = next.max(now.dropped);
                match (now.progress.get(next - now.dropped), &now.end) {
                    (Some(progress), _) => Some((progress.clone(), Some(next + 1))),
                    (None, End::Answered(answer)) => Some((answer.clone(), None)),
                    (None, End::Closed) => return None,
                    (None, End::Running) => None,
                }
            };
            if let Some((event, next)) = item {
                return Some((event, next.map(|next| (events, next))));
            }
            events.changed().await.ok()?;
        }
    });
    futures::stream::iter(priming).chain(rest)
}

/// The event id of the priming event of a session's call `number`.
fn event_id(number: u64) -> String {
    format!("d{number}")
}

/// The call an event id of [`event_id`] names, and how many of its
/// progress notifications the event follows: `d<call>` is its priming
/// event, `d<call>-<k>` its `k`th notification.
fn call_position(event_id: &str) -> Option<(u64, usize)> {
    let id = event_id.strip_prefix('d')?;
    match id.split_once('-') {
        None => Some((id.parse().ok()?, 0)),
        Some((call, k)) => Some((call.parse().ok()?, k.parse().ok()?)),
    }
}

/// Whether `request` is answered directly: a `tools/call`.
fn answers_directly(request: &ClientRequest) -> bool {
    matches!(request, ClientRequest::CallToolRequest(_))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SessionManager for Sessions {
    type Error = LocalSessionManagerError;
    type Transport = <LocalSessionManager as SessionManager>::Transport;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        self.local.create_session().await
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        mut message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        let slot = Arc::new(DirectSlot::default());
        if let ClientJsonRpcMessage::Request(request) = &mut message {
            request.request.extensions_mut().insert(slot.clone());
        }
        let answer = self.local.initialize_session(id, message).await?;
        if let Some(direct) = slot.0.get() {
            lock(&self.direct).insert(id.clone(), direct.clone());
            // Closed meanwhile: its close found nothing here to stop.
            if !self.local.has_session(id).await? {
                lock(&self.direct).remove(id);
            }
        }
        Ok(answer)
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        self.local.has_session(id).await
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        let direct = lock(&self.direct).remove(id);
        if let Some(direct) = direct {
            direct.close();
        }
        self.local.close_session(id).await
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        if let ClientJsonRpcMessage::Request(request) = &message
            && answers_directly(&request.request)
            && let Some(direct) = self.direct(id)
        {
            let ClientJsonRpcMessage::Request(request) = message else {
                unreachable!("matched as a request above");
            };
            let retry = self.local.session_config.sse_retry;
            return Ok(direct.call(request, retry).left_stream());
        }
        let stream = self.local.create_stream(id, message).await?;
        Ok(stream.right_stream())
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        if let Some(request) = cancelled_id(&message)
            && let Some(direct) = self.direct(id)
            && let Some(running) = lock(&direct.calls).running.get(request)
        {
            running.cancel.cancel();
        }
        // rmcp's loop ignores a cancel of a request it does not run.
        self.local.accept_message(id, message).await
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.local.create_standalone_stream(id).await
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        if let Some((number, from)) = call_position(&last_event_id) {
            let events = self.direct(id).and_then(|d| d.running(number));
            // rmcp answers a failed resume with an empty stream.
            let events = events.ok_or(SessionError::InvalidEventId)?;
            return Ok(call_stream(None, events, from).left_stream());
        }
        let stream = self.local.resume(id, last_event_id).await?;
        Ok(stream.right_stream())
    }
}
