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
//! - a stream that resumes takes the call's events from the one before,
//!   which ends: a call has one stream at a time;
//! - `notifications/cancelled` cancels the call and ends its stream, with
//!   no answer; closing the session cancels its calls and ends their
//!   streams likewise (B24: nothing is delivered to a closed session).

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

/// What a call's stream carries: its progress so far, then how it ends.
/// The sender dropped while the call runs: its handler is gone; no answer
/// comes.
struct Events {
    number: u64,
    /// Which stream carries them: one that resumes takes them from the one
    /// before, which then ends (a call has one stream, as with rmcp).
    stream: u64,
    /// The newest progress notifications, after `dropped` older ones.
    progress: VecDeque<ServerSseMessage>,
    dropped: usize,
    end: End,
}

enum End {
    Running,
    Answered(ServerSseMessage),
    /// Cancelled by its client, or its session closed: the stream ends,
    /// with nothing more (B24).
    Stopped,
}

impl Events {
    fn new(number: u64) -> Self {
        Self {
            number,
            stream: 0,
            progress: VecDeque::new(),
            dropped: 0,
            end: End::Running,
        }
    }

    /// Add a progress notification, the `k`th of the call, with the event
    /// id `d<call>-<k>`; none once the call has ended.
    fn progress(&mut self, message: ServerJsonRpcMessage) {
        if !matches!(self.end, End::Running) {
            return;
        }
        let k = self.dropped + self.progress.len() + 1;
        let id = format!("{}-{k}", event_id(self.number));
        self.progress.push_back(ServerSseMessage::new(id, message));
        if self.progress.len() > KEPT_PROGRESS {
            self.progress.pop_front();
            self.dropped += 1;
        }
    }

    /// End with `end`, unless ended already.
    fn end(&mut self, end: End) {
        if matches!(self.end, End::Running) {
            self.end = end;
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
        self.0.send_modify(|events| events.progress(message));
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
        let (number, events, stream) = {
            let mut calls = lock(&self.calls);
            let number = calls.last + 1;
            let (events, stream) = watch::channel(Events::new(number));
            if calls.running.contains_key(&id) {
                let refusal = ServerSseMessage::from_message(id_in_use(id));
                events.send_modify(|e| e.end(End::Answered(refusal)));
                return call_stream(None, stream, 0, 0);
            }
            calls.last = number;
            let running = Running {
                number,
                cancel: cancel.clone(),
                events: events.clone(),
            };
            calls.running.insert(id.clone(), running);
            (number, events, stream)
        };
        let progress = CallProgress(events.clone());
        request.request.extensions_mut().insert(progress);
        let ended = Ended {
            session: self.clone(),
            id,
        };
        // Boxed: rmcp's dispatch makes the handler's future about 5 KiB,
        // which the spawn would otherwise copy.
        let mut call = Box::pin(async move {
            let session = &ended.session;
            let message = direct::answer(&session.server, &session.peer, request, cancel.clone());
            let message = ServerSseMessage::from_message(message.await);
            // A cancelled call answers nothing, as with rmcp; nor does a
            // call of a closed session, whose stop cancelled it. Checked
            // as the answer is kept: what cancels the call then ends its
            // stream.
            events.send_modify(|e| {
                if !cancel.is_cancelled() {
                    e.end(End::Answered(message));
                }
            });
            drop(ended);
        });
        if !direct::ends_in_first_poll(call.as_mut()) {
            tokio::spawn(call);
        }
        let priming = retry.map(|retry| ServerSseMessage::priming(event_id(number), retry));
        call_stream(priming, stream, 0, 0)
    }

    /// The events of the running call numbered `number`, for a stream
    /// that resumes it, and which stream that is; the one before ends.
    fn resume(&self, number: u64) -> Option<(watch::Receiver<Events>, u64)> {
        let calls = lock(&self.calls);
        let running = calls.running.values().find(|r| r.number == number)?;
        let mut stream = 0;
        running.events.send_modify(|e| {
            e.stream += 1;
            stream = e.stream;
        });
        Some((running.events.subscribe(), stream))
    }

    /// Cancel the call `id` (`notifications/cancelled`) and end its stream.
    fn cancel(&self, id: &RequestId) {
        if let Some(running) = lock(&self.calls).running.get(id) {
            running.cancel.cancel();
            running.events.send_modify(|e| e.end(End::Stopped));
        }
    }

    /// Cancel the session's calls and end their streams.
    fn close(&self) {
        self.stop.cancel();
        for running in lock(&self.calls).running.values() {
            running.events.send_modify(|e| e.end(End::Stopped));
        }
        // The session's calls end with it (B24) now, not once whatever
        // holds its connection lets go: the handler of a call that cannot
        // be cancelled holds it until the call ends, and the session's
        // queued calls would still start meanwhile.
        self.server.connection().close_soon();
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

/// The SSE events of a call on its stream number `stream`: `priming`,
/// its progress from the one after the `from`th notification (0: from the
/// first), then its answer when it has one. It ends with no more when the
/// call is cancelled, its session closes or another stream resumes it.
fn call_stream(
    priming: Option<ServerSseMessage>,
    events: watch::Receiver<Events>,
    from: usize,
    stream: u64,
) -> impl Stream<Item = ServerSseMessage> + Send + Sync + 'static {
    let rest = futures::stream::unfold(Some((events, from)), move |state| async move {
        let (mut events, next) = state?;
        loop {
            let item = {
                let now = events.borrow_and_update();
                if now.stream != stream {
                    return None;
                }
                let next = next.max(now.dropped);
                match (&now.end, now.progress.get(next - now.dropped)) {
                    (End::Stopped, _) => return None,
                    (_, Some(progress)) => Some((progress.clone(), Some(next + 1))),
                    (End::Answered(answer), None) => Some((answer.clone(), None)),
                    (End::Running, None) => None,
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
        {
            direct.cancel(request);
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
            let resumed = self.direct(id).and_then(|d| d.resume(number));
            // rmcp answers a failed resume with an empty stream.
            let (events, stream) = resumed.ok_or(SessionError::InvalidEventId)?;
            return Ok(call_stream(None, events, from, stream).left_stream());
        }
        let stream = self.local.resume(id, last_event_id).await?;
        Ok(stream.right_stream())
    }
}

#[cfg(test)]
mod tests {
    use rmcp::model::{ErrorData, NumberOrString, ProgressToken};

    use super::*;

    fn progress(events: &watch::Sender<Events>, n: u32) {
        let token = ProgressToken(NumberOrString::Number(1));
        CallProgress(events.clone()).send(ProgressNotificationParam::new(token, f64::from(n)));
    }

    fn answer(events: &watch::Sender<Events>) {
        let error = ErrorData::internal_error("the answer", None);
        let answer = ServerJsonRpcMessage::error(error, Some(RequestId::Number(1)));
        events.send_modify(|e| e.end(End::Answered(ServerSseMessage::from_message(answer))));
    }

    /// The ids of a stream's events to its end; `answer` for an event
    /// with none.
    async fn ids(stream: impl Stream<Item = ServerSseMessage>) -> Vec<String> {
        let ids = stream.map(|e| e.event_id.unwrap_or_else(|| "answer".into()));
        ids.collect().await
    }

    #[test]
    fn an_event_id_names_its_call_and_how_many_notifications_it_follows() {
        assert_eq!(call_position("d7"), Some((7, 0)));
        assert_eq!(call_position("d7-3"), Some((7, 3)));
        for rmcps_or_bad in ["0/1", "7", "d", "dx", "d7-", "d-3", "d7-x"] {
            assert_eq!(call_position(rmcps_or_bad), None, "{rmcps_or_bad}");
        }
    }

    #[tokio::test]
    async fn a_stream_carries_the_progress_after_where_it_resumes_then_the_answer() {
        let (events, _) = watch::channel(Events::new(4));
        for n in 1..=3 {
            progress(&events, n);
        }
        answer(&events);
        let from = |k| ids(call_stream(None, events.subscribe(), k, 0));
        assert_eq!(from(0).await, ["d4-1", "d4-2", "d4-3", "answer"]);
        assert_eq!(from(2).await, ["d4-3", "answer"]);
        assert_eq!(from(3).await, ["answer"]);
    }

    #[tokio::test]
    async fn a_call_keeps_its_newest_progress_for_a_stream_that_resumes() {
        let (events, _) = watch::channel(Events::new(1));
        let sent = KEPT_PROGRESS as u32 + 6;
        for n in 1..=sent {
            progress(&events, n);
        }
        answer(&events);
        let all = ids(call_stream(None, events.subscribe(), 0, 0)).await;
        assert_eq!(all.len(), KEPT_PROGRESS + 1);
        assert_eq!(all[0], "d1-7");
        assert_eq!(all[KEPT_PROGRESS - 1], format!("d1-{sent}"));
    }

    #[tokio::test]
    async fn a_stream_ends_with_nothing_more_once_its_call_is_stopped_or_resumed_elsewhere() {
        // Cancelled, or its session closed: not even the progress kept.
        let (events, _) = watch::channel(Events::new(1));
        progress(&events, 1);
        events.send_modify(|e| e.end(End::Stopped));
        progress(&events, 2);
        answer(&events);
        assert!(
            ids(call_stream(None, events.subscribe(), 0, 0))
                .await
                .is_empty()
        );

        // Resumed by another stream.
        let (events, _) = watch::channel(Events::new(1));
        progress(&events, 1);
        let first = call_stream(None, events.subscribe(), 0, 0);
        events.send_modify(|e| e.stream += 1);
        answer(&events);
        assert!(ids(first).await.is_empty());
        let resumed = call_stream(None, events.subscribe(), 0, 1);
        assert_eq!(ids(resumed).await, ["d1-1", "answer"]);

        // Its handler gone: what came, and no answer.
        let (events, stream) = watch::channel(Events::new(1));
        progress(&events, 1);
        drop(events);
        assert_eq!(ids(call_stream(None, stream, 0, 0)).await, ["d1-1"]);
    }
}
