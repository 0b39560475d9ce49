//! The stdio transport: JSON-RPC messages, one a line, on the client's
//! pipes, read through [`wire`](super::wire) and pushed back on.
//!
//! Two bounds hold what a client can make the host keep:
//! - a line longer than [`McpOptions::max_message_size`] is skipped (never
//!   held whole) and answered with an error naming the limit;
//! - at most [`McpOptions::max_in_flight`] requests are unanswered at once:
//!   past it the host stops reading stdin until answers have been written.
//!   A client that sends calls and reads nothing then fills the pipes and
//!   waits, instead of the host buffering answers without end (rmcp writes
//!   each answer from a task of its own, however many are waiting).
//!
//! A request holds its permit until its answer is written. One the client
//! cancels holds it until its handler has ended (a `tools/call` handled
//! directly), or until rmcp has taken the cancel (any other request: rmcp
//! drops its answer from then on). A request whose id an unanswered one
//! holds is refused (MCP: a client never reuses a request id in a
//! session). Each request read has a serial number, and an answer frees
//! only the permit of the request it answers: a refusal of a line frees
//! none, and a late answer never frees the permit of a later request with
//! the same id.
//!
//! When stdin and stdout are pipes or sockets, as they are for a server an
//! MCP client starts, [`pipes`] reads and writes them through the runtime's
//! event loop. Tokio's own `stdin()` and `stdout()` hand every read and
//! write to a blocking thread and wake a worker when it is done: two thread
//! hand-offs per message, which cost more than parsing it.

use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::FutureExt;
use rmcp::model::{
    ClientJsonRpcMessage, ClientNotification, ClientRequest, JsonRpcMessage, JsonRpcRequest,
    RequestId, ServerJsonRpcMessage,
};
use rmcp::transport::Transport;
use rmcp::{Peer, RoleServer};
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter, ReadBuf,
};
use tokio::net::unix::pipe;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, SetOnce, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::McpOptions;
use super::direct::{self, cancelled_id, ends_in_first_poll, id_in_use};
use super::server::ToolServer;
use super::wire::{self, Read};
use crate::leftovers::{self, Leftovers};
use crate::session::Session;

/// Answers waiting to be written. Small: the bound on unanswered requests
/// is what limits the host's memory; this only smooths the writes.
const OUTGOING: usize = 64;

/// The writer's buffer: answers that fit go out in one write.
const WRITE_BUFFER: usize = 8 << 10;

/// How long closing waits for the last answers to be written: a client
/// that stopped reading would otherwise hold the host at exit.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// How long a `tools/call` read after `notifications/initialized` waits
/// for the direct handler, which is set as soon as rmcp has taken that
/// notification (microseconds later); past it the call goes through
/// rmcp's loop.
const DIRECT_WAIT: Duration = Duration::from_secs(1);

/// The requests read and not yet answered.
type Pending = Arc<Mutex<HashMap<RequestId, Unanswered>>>;

/// A request read and not yet answered.
struct Unanswered {
    _permit: OwnedSemaphorePermit,
    /// Which request read this is.
    serial: u64,
    /// Cancels a request handled directly ([`Direct`]); rmcp cancels the
    /// others.
    direct: Option<CancellationToken>,
    /// rmcp handed its answer to the writer: a cancel no longer frees it.
    answered: bool,
}

/// A message for the writer.
struct Outgoing {
    message: ServerJsonRpcMessage,
    /// The serial of the request it answers, whose permit its write frees;
    /// `None` for a refusal of a line, which answers none.
    answers: Option<u64>,
    /// What its call left to free once the answer is written.
    left: Leftovers,
}

impl Outgoing {
    fn refusal(message: ServerJsonRpcMessage) -> Self {
        Self {
            message,
            answers: None,
            left: Leftovers::default(),
        }
    }
}

/// The id a response or an error answers.
fn answered_id(message: &ServerJsonRpcMessage) -> Option<&RequestId> {
    match message {
        ServerJsonRpcMessage::Response(r) => Some(&r.id),
        ServerJsonRpcMessage::Error(e) => e.id.as_ref(),
        _ => None,
    }
}

/// The request `id` if it is the one read as `serial`, taken out of
/// `pending`.
fn take(pending: &Pending, id: &RequestId, serial: u64) -> Option<Unanswered> {
    let mut pending = lock(pending);
    match pending.get(id) {
        Some(u) if u.serial == serial => pending.remove(id),
        _ => None,
    }
}

/// What handles a `tools/call` without rmcp's service loop: a handler of
/// the connection and the connection's peer, set once rmcp has answered
/// `initialize` (before that, every request goes to rmcp).
pub(crate) struct Direct {
    pub(crate) server: Arc<ToolServer>,
    /// The connection's session, whose calls end when stdin does.
    pub(crate) session: Session,
    pub(crate) peer: Peer<RoleServer>,
    /// Cancelled when the server stops, as rmcp's loop cancels its
    /// requests: each call is cancelled, and its answer still written.
    pub(crate) stop: CancellationToken,
    /// Whether calls may run their first poll in the reader
    /// ([`FirstPolls`]): only where fuel metering makes them yield.
    pub(crate) first_poll: bool,
}

pub(crate) struct StdioTransport {
    direct: Arc<SetOnce<Arc<Direct>>>,
    pending: Pending,
    incoming: mpsc::Receiver<ClientJsonRpcMessage>,
    outgoing: Option<mpsc::Sender<Outgoing>>,
    reader: JoinHandle<()>,
    writer: Option<JoinHandle<()>>,
}

impl StdioTransport {
    pub(crate) fn new<R, W>(input: R, output: W, options: &McpOptions) -> Self
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let pending: Pending = Arc::default();
        let direct = Arc::new(SetOnce::new());
        let (to_rmcp, incoming) = mpsc::channel(1);
        let (outgoing, to_write) = mpsc::channel(OUTGOING);
        let stalled = Stalled::default();
        let reader = tokio::spawn(read_loop(
            BufReader::new(input),
            Lanes {
                rmcp: to_rmcp,
                answers: outgoing.clone(),
                stalled: stalled.clone(),
                direct: direct.clone(),
            },
            pending.clone(),
            Arc::new(Semaphore::new(options.max_in_flight.max(1))),
            options.max_message_size,
        ));
        let writer = tokio::spawn(write_loop(
            BufWriter::with_capacity(WRITE_BUFFER, output),
            to_write,
            stalled,
            pending.clone(),
        ));
        Self {
            direct,
            pending,
            incoming,
            outgoing: Some(outgoing),
            reader,
            writer: Some(writer),
        }
    }

    /// Where to set the [`Direct`] handler once rmcp has answered
    /// `initialize`.
    pub(crate) fn direct(&self) -> Arc<SetOnce<Arc<Direct>>> {
        self.direct.clone()
    }
}

impl Transport<RoleServer> for StdioTransport {
    type Error = std::io::Error;

    fn send(
        &mut self,
        item: ServerJsonRpcMessage,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let outgoing = self.outgoing.clone();
        // rmcp answers a request it still holds: the one of this id now.
        let answers = answered_id(&item).and_then(|id| {
            let mut pending = lock(&self.pending);
            let unanswered = pending.get_mut(id)?;
            unanswered.answered = true;
            Some(unanswered.serial)
        });
        async move {
            match outgoing {
                Some(tx) => tx
                    .send(Outgoing {
                        message: item,
                        answers,
                        left: Leftovers::default(),
                    })
                    .await
                    .map_err(|_| closed()),
                None => Err(closed()),
            }
        }
    }

    async fn receive(&mut self) -> Option<ClientJsonRpcMessage> {
        let message = self.incoming.recv().await;
        // Stdin closed: the client ends the connection (MCP's stdio
        // shutdown). Its calls are cancelled now (B24) and answered,
        // whichever loop runs them, and those still starting answer
        // "cancelled" without running: rmcp waits a while for its
        // requests' answers before it closes the transport, and the
        // session closes after that.
        if message.is_none()
            && let Some(direct) = self.direct.get()
        {
            direct.session.stop_calls();
        }
        // rmcp drops the answer of a request once it has taken its cancel,
        // which it does before it reads anything else: the request's permit
        // is free, unless its answer is out already.
        if let Some(id) = message.as_ref().and_then(cancelled_id) {
            let mut pending = lock(&self.pending);
            if pending
                .get(id)
                .is_some_and(|u| u.direct.is_none() && !u.answered)
            {
                pending.remove(id);
            }
        }
        message
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        // The reader may wait on stdin forever; its copy of the sender
        // goes with it, so the writer ends once the last answer is out.
        self.reader.abort();
        self.outgoing = None;
        // The connection ends (stdin closed, or the server stops): its
        // calls are cancelled and answered (B24), as rmcp's own requests
        // are; each holds a sender to the writer until it has ended.
        if let Some(direct) = self.direct.get() {
            direct.stop.cancel();
        }
        if let Some(mut writer) = self.writer.take()
            && tokio::time::timeout(CLOSE_WAIT, &mut writer).await.is_err()
        {
            tracing::warn!("the MCP client did not read its last answers");
            writer.abort();
        }
        Ok(())
    }
}

impl Drop for StdioTransport {
    /// rmcp may drop the transport without closing it (a first message
    /// that is not `initialize`): the tasks end with it, and with them the
    /// pipes, which [`Evented`] then puts back as they were.
    fn drop(&mut self) {
        self.reader.abort();
        if let Some(writer) = &self.writer {
            writer.abort();
        }
    }
}

pub(crate) type Input = Box<dyn AsyncRead + Send + Unpin>;
pub(crate) type Output = Box<dyn AsyncWrite + Send + Unpin>;

/// The process's stdin and stdout for the transport.
///
/// A pipe or a socket is set non-blocking and read or written by the
/// runtime's event loop, and put back as it was once the transport's task
/// that uses it has ended ([`Evented`]). Anything else (a terminal, a file)
/// goes through tokio's `stdin()`/`stdout()`, which work for any file.
///
/// # Panics
/// Outside a tokio runtime with IO enabled.
pub(crate) fn pipes() -> (Input, Output) {
    let stdin = std::io::stdin();
    let input: Input = match evented(stdin.as_fd(), pipe::Receiver::from_owned_fd_unchecked) {
        Some(receiver) => Box::new(receiver),
        None => Box::new(tokio::io::stdin()),
    };
    let stdout = std::io::stdout();
    let output: Output = match evented(stdout.as_fd(), pipe::Sender::from_owned_fd_unchecked) {
        Some(sender) => Box::new(sender),
        None => Box::new(tokio::io::stdout()),
    };
    (input, output)
}

/// `fd`, non-blocking and registered with the event loop, if it is a pipe
/// or a socket (the event loop refuses files). Any failure leaves `fd` as
/// it was.
fn evented<T>(
    fd: BorrowedFd<'_>,
    register: impl FnOnce(OwnedFd) -> std::io::Result<T>,
) -> Option<Evented<T>> {
    let copy = fd.try_clone_to_owned().ok()?;
    let kind = File::from(copy.try_clone().ok()?)
        .metadata()
        .ok()?
        .file_type();
    if !(kind.is_fifo() || kind.is_socket()) {
        return None;
    }
    let was_blocking = !rustix::fs::fcntl_getfl(&copy)
        .ok()?
        .contains(rustix::fs::OFlags::NONBLOCK);
    let restore = Restore {
        fd: copy.try_clone().ok()?,
        was_blocking,
    };
    rustix::io::ioctl_fionbio(&copy, true).ok()?;
    // On failure `restore` is dropped here, and sets the flag back.
    let io = register(copy).ok()?;
    Some(Evented {
        io,
        _restore: restore,
    })
}

/// A pipe or socket the event loop waits on, and what puts it back as it
/// was once it is dropped. The flag belongs to the open file, which the
/// process that started the host may share and go on using; it is set back
/// only after the last use here, so no write can block a runtime thread.
struct Evented<T> {
    // Dropped first (fields drop in order): the pipe, then the restore.
    io: T,
    _restore: Restore,
}

struct Restore {
    fd: OwnedFd,
    was_blocking: bool,
}

impl Drop for Restore {
    fn drop(&mut self) {
        if self.was_blocking
            && let Err(e) = rustix::io::ioctl_fionbio(&self.fd, false)
        {
            tracing::warn!(error = %e, "cannot set the stdio pipe back to blocking");
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Evented<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Evented<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

fn closed() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::BrokenPipe, "stdout is closed")
}

/// Where the reader sends what it reads.
struct Lanes {
    rmcp: mpsc::Sender<ClientJsonRpcMessage>,
    answers: mpsc::Sender<Outgoing>,
    stalled: Stalled,
    direct: Arc<SetOnce<Arc<Direct>>>,
}

/// Set while the writer waits for the client to read.
type Stalled = Arc<std::sync::atomic::AtomicBool>;

/// Read messages until stdin ends, waiting for a permit before each request.
async fn read_loop<R: AsyncRead + Unpin>(
    mut input: BufReader<R>,
    lanes: Lanes,
    pending: Pending,
    in_flight: Arc<Semaphore>,
    max: usize,
) {
    let mut line = Vec::new();
    let mut serial = 0;
    // Whether the client has said `notifications/initialized`: from then
    // on its calls are handled directly, even one read before the
    // handler is set.
    let mut initialized = false;
    let mut first_polls = FirstPolls::default();
    loop {
        let read = match read_line(&mut input, &mut line, max).await {
            Ok(Line::End) => return,
            Ok(Line::TooLong) => Read::Refused(wire::too_large(max)),
            Ok(Line::Read) => wire::read(&line),
            Err(e) => {
                tracing::warn!(error = %e, "reading stdin failed");
                return;
            }
        };
        match read {
            Read::Message(ClientJsonRpcMessage::Request(request))
                if lock(&pending).contains_key(&request.id) =>
            {
                let refusal = Outgoing::refusal(id_in_use(request.id));
                if lanes.answers.send(refusal).await.is_err() {
                    return;
                }
            }
            Read::Message(ClientJsonRpcMessage::Request(request)) => {
                let Ok(permit) = in_flight.clone().acquire_owned().await else {
                    return;
                };
                // A `tools/call` once `initialize` is answered: its
                // handler and what cancels it. A call through rmcp's loop
                // would give up its place in the bound as soon as it is
                // cancelled, while its call still runs.
                let call = matches!(request.request, ClientRequest::CallToolRequest(_));
                if call && initialized && lanes.direct.get().is_none() {
                    let _ = tokio::time::timeout(DIRECT_WAIT, lanes.direct.wait()).await;
                }
                let direct = (lanes.direct.get())
                    .filter(|_| call)
                    .map(|handler| (Arc::clone(handler), handler.stop.child_token()));
                serial += 1;
                let unanswered = Unanswered {
                    _permit: permit,
                    serial,
                    direct: direct.as_ref().map(|(_, cancel)| cancel.clone()),
                    answered: false,
                };
                lock(&pending).insert(request.id.clone(), unanswered);
                match direct {
                    Some((handler, cancel)) => {
                        let inline = handler.first_poll;
                        let tool = tool_key(&request.request);
                        let answering = Answering {
                            id: request.id.clone(),
                            serial,
                            pending: pending.clone(),
                            answers: lanes.answers.clone(),
                            stalled: lanes.stalled.clone(),
                            answered: false,
                        };
                        // Boxed: rmcp's dispatch makes the handler's future
                        // about 5 KiB, which the spawn would otherwise copy.
                        let call = Box::pin(call_directly(handler, request, cancel, answering));
                        first_polls.start(inline, tool, call);
                    }
                    None => {
                        let request = JsonRpcMessage::Request(request);
                        if lanes.rmcp.send(request).await.is_err() {
                            return;
                        }
                    }
                }
            }
            Read::Message(message) => {
                initialized |= matches!(
                    &message,
                    ClientJsonRpcMessage::Notification(n)
                        if matches!(n.notification, ClientNotification::InitializedNotification(_))
                );
                // A cancelled request gets no answer. A direct one is
                // cancelled here and keeps its permit until its handler
                // has ended (`Answering`); rmcp cancels the others, whose
                // permits are freed once it has taken the cancel
                // (`StdioTransport::receive`).
                if let Some(cancel) = cancelled_id(&message)
                    .and_then(|id| lock(&pending).get(id).and_then(|u| u.direct.clone()))
                {
                    cancel.cancel();
                }
                if lanes.rmcp.send(message).await.is_err() {
                    return;
                }
            }
            Read::Refused(answer) => {
                if lanes.answers.send(Outgoing::refusal(answer)).await.is_err() {
                    return;
                }
            }
            Read::Nothing | Read::Dropped(_) => {}
        }
    }
}

/// Which calls the reader polls once itself before it spawns them
/// ([`ends_in_first_poll`]). Most calls end in that poll (a trivial tool
/// takes microseconds), and one that has not goes on in a task of its own,
/// which polls it again. Spawning every call instead had the runtime wake
/// its other thread to steal each burst of them: with 16 calls in flight
/// that cost 1.4 times the host CPU per call (README, "A call's first
/// poll in the reader").
///
/// The reader waits meanwhile, and reads nothing: for what the call does
/// before its first yield, that is its checks, its admission and its
/// instantiation, then whichever comes first of a fuel yield interval
/// (about 0.1 ms), an epoch tick (1 ms) and a host call's start or return
/// 2 ms after the sandbox was made (`HOST_CALL_SLICE`). Two cases would
/// hold it longer, and so are spawned at once:
/// - every call, when the engine has no fuel (`Direct::first_poll`): a
///   fuel-metered call would then never yield;
/// - the calls of a tool two of whose calls in a row held the reader
///   longer than [`FIRST_POLL_LIMIT`] (a slow instantiation, or one long
///   host call, which nothing cuts short), for [`SLOW_BACKOFF`], doubled
///   each time its next call held the reader too, up to
///   [`MAX_SLOW_BACKOFF`]. One call held up once (descheduled, or the
///   first of a plugin) changes nothing. At most [`MAX_SLOW_TOOLS`] tools
///   are remembered, the others polled as usual.
#[derive(Default)]
struct FirstPolls {
    /// By [`tool_key`]: the tools whose last call held the reader.
    slow: HashMap<u64, Slow>,
}

/// A tool whose last call held the reader ([`FirstPolls`]).
#[derive(Clone, Copy, Debug)]
enum Slow {
    /// Once: its calls still run in the reader.
    Once,
    /// Twice or more in a row: its calls are spawned at once until
    /// `until`, for `backoff` this time.
    HeldOff {
        until: std::time::Instant,
        backoff: Duration,
    },
}

/// How long a call's first poll may hold the reader ([`FirstPolls`]).
const FIRST_POLL_LIMIT: Duration = Duration::from_millis(1);

/// How long a slow tool's calls are first spawned at once ([`FirstPolls`]).
const SLOW_BACKOFF: Duration = Duration::from_secs(1);

/// The longest a slow tool's calls are spawned at once before one is tried
/// in the reader again ([`FirstPolls`]).
const MAX_SLOW_BACKOFF: Duration = Duration::from_secs(64);

/// How many slow tools one connection remembers ([`FirstPolls`]).
const MAX_SLOW_TOOLS: usize = 1024;

impl FirstPolls {
    /// Start `call`, a call of the tool `tool` ([`tool_key`]): in the
    /// reader if `inline` and the tool's calls are not held off it, else
    /// in a task.
    fn start<F>(&mut self, inline: bool, tool: u64, mut call: Pin<Box<F>>)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let began = std::time::Instant::now();
        let last = self.slow.get(&tool).copied();
        let held_off = matches!(last, Some(Slow::HeldOff { until, .. }) if began < until);
        if inline && !held_off {
            let ended = ends_in_first_poll(call.as_mut());
            let took = began.elapsed();
            if took <= FIRST_POLL_LIMIT {
                if last.is_some() {
                    self.slow.remove(&tool);
                }
            } else if let Some(last) = last {
                // The second time in a row: off the reader for a while.
                let backoff = match last {
                    Slow::HeldOff { backoff, .. } => (backoff * 2).min(MAX_SLOW_BACKOFF),
                    Slow::Once => SLOW_BACKOFF,
                };
                tracing::debug!(
                    ?took,
                    ?backoff,
                    "calls of a tool held the stdio reader; they are spawned at once for a while"
                );
                let until = began + took + backoff;
                self.slow.insert(tool, Slow::HeldOff { until, backoff });
            } else if self.slow.len() < MAX_SLOW_TOOLS {
                self.slow.insert(tool, Slow::Once);
            }
            if ended {
                return;
            }
        }
        tokio::spawn(call);
    }
}

/// The tool a `tools/call` names, hashed: what [`FirstPolls`] remembers
/// without copying the name for every call.
fn tool_key(request: &ClientRequest) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    if let ClientRequest::CallToolRequest(call) = request {
        call.params.name.hash(&mut hasher);
    }
    hasher.finish()
}

/// Where a directly handled request's answer goes, and what frees its
/// permit if it ends with none: cancelled by the client, or its handler
/// gone (a panic unwinds through this).
struct Answering {
    id: RequestId,
    serial: u64,
    pending: Pending,
    answers: mpsc::Sender<Outgoing>,
    stalled: Stalled,
    answered: bool,
}

impl Answering {
    /// Hand `answer` to the writer, whose write frees the permit, and with
    /// it what its call `left` if the writer has nothing else to write:
    /// an answer queued behind others, or behind a client that does not
    /// read, frees its call's sandbox now. (The calls of a batch would be
    /// held up by each other's otherwise, and a client that stops reading
    /// would keep a queue of them; calls that end at the same instant as
    /// the writer stalls may still each keep one, at most one a thread.)
    async fn answer(mut self, answer: ServerJsonRpcMessage, left: Leftovers) {
        let idle = self.answers.capacity() == self.answers.max_capacity()
            && !self.stalled.load(std::sync::atomic::Ordering::Relaxed);
        let left = if idle {
            left
        } else {
            // Before the send, which waits while the queue is full.
            drop(left);
            Leftovers::default()
        };
        let answer = Outgoing {
            message: answer,
            answers: Some(self.serial),
            left,
        };
        // Fails only once the connection is closed.
        self.answered = self.answers.send(answer).await.is_ok();
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        if !self.answered {
            take(&self.pending, &self.id, self.serial);
        }
    }
}

/// Handle `request` ([`direct::answer`]) and hand its answer to the
/// writer, unless the client cancelled it (`cancel` cancelled while the
/// server does not stop). The call's sandbox goes with the answer, and is
/// freed once it is written ([`leftovers`]).
async fn call_directly(
    direct: Arc<Direct>,
    request: JsonRpcRequest<ClientRequest>,
    cancel: CancellationToken,
    answering: Answering,
) {
    let answered = direct::answer(&direct.server, &direct.peer, request, cancel.clone());
    let (answer, left) = leftovers::keeping(answered).await;
    if !cancel.is_cancelled() || direct.stop.is_cancelled() {
        answering.answer(answer, left).await;
    }
}

/// Write answers as they come, flushing whenever none is waiting (see
/// [`Cork`]); an answer written frees the permit of the request it
/// answers. What the answers' calls left is freed after the flush that
/// sends them, or before a write that would wait for the client to read:
/// it holds instances of the pool and slots of plugins.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut output: BufWriter<W>,
    mut to_write: mpsc::Receiver<Outgoing>,
    stalled: Stalled,
    pending: Pending,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut cork = Cork::default();
    let mut left_over: Vec<Leftovers> = Vec::new();
    while let Some(Outgoing {
        message,
        answers,
        left,
    }) = to_write.recv().await
    {
        // Out of `pending` before the write, so that a client reusing the
        // id once it has read the answer is not refused; its permit held
        // until the write is done.
        let _answered = answers
            .zip(answered_id(&message))
            .and_then(|(serial, id)| take(&pending, id, serial));
        let mut bytes = match serde_json::to_vec(&message) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::error!(error = %e, "an MCP answer could not be serialized");
                continue;
            }
        };
        bytes.push(b'\n');
        left_over.push(left);
        let written = async {
            // One that does not fit goes through to the client, which may
            // not be reading.
            let through = output.buffer().len() + bytes.len() >= WRITE_BUFFER;
            if through {
                left_over.clear();
                stalled.store(true, Relaxed);
            }
            output.write_all(&bytes).await?;
            stalled.store(false, Relaxed);
            if to_write.is_empty() && cork.worth_trying() && !lock(&pending).is_empty() {
                tokio::task::yield_now().await;
                cork.tried(!to_write.is_empty());
            }
            if to_write.is_empty() {
                match output.flush().now_or_never() {
                    Some(flushed) => flushed?,
                    // The client is not reading.
                    None => {
                        left_over.clear();
                        stalled.store(true, Relaxed);
                        output.flush().await?;
                        stalled.store(false, Relaxed);
                    }
                }
                left_over.clear();
            }
            std::io::Result::Ok(())
        };
        if let Err(e) = written.await {
            tracing::info!(error = %e, "stdout closed");
            return;
        }
    }
    let _ = output.flush().await;
}

/// Whether the writer lets the runtime run once before it flushes, while
/// other requests are unanswered: answers finished meanwhile then go out
/// in one write, one wake of the client rather than one each. A yield
/// with nothing else ready costs a wake of another runtime thread, so it
/// is only tried while it pays: after one that gathered no answer, the
/// next [`Cork::BACKOFF`] answers are flushed at once. (A client waiting
/// for one quick call at a time beside a long call would otherwise pay
/// that wake on every answer.)
#[derive(Default)]
struct Cork {
    /// Answers still to flush at once.
    skip: u32,
}

impl Cork {
    const BACKOFF: u32 = 64;

    fn worth_trying(&mut self) -> bool {
        self.skip = self.skip.saturating_sub(1);
        self.skip == 0
    }

    fn tried(&mut self, gathered: bool) {
        if !gathered {
            self.skip = Self::BACKOFF;
        }
    }
}

fn lock(pending: &Pending) -> std::sync::MutexGuard<'_, HashMap<RequestId, Unanswered>> {
    pending.lock().unwrap_or_else(PoisonError::into_inner)
}

enum Line {
    Read,
    TooLong,
    End,
}

/// Read one line (without its end) into `line`, holding at most `max`
/// bytes: the rest of a longer line is read and dropped.
async fn read_line<R: AsyncRead + Unpin>(
    input: &mut BufReader<R>,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Line> {
    line.clear();
    let mut too_long = false;
    loop {
        let available = input.fill_buf().await?;
        if available.is_empty() {
            // A last line without its end still counts.
            return Ok(match (too_long, line.is_empty()) {
                (true, _) => Line::TooLong,
                (false, true) => Line::End,
                (false, false) => Line::Read,
            });
        }
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(at) => (&available[..at], at + 1),
            None => (available, available.len()),
        };
        let ended = done > chunk.len();
        if !too_long {
            if line.len() + chunk.len() > max {
                too_long = true;
                line.clear();
                line.shrink_to(64 * 1024);
            } else {
                line.extend_from_slice(chunk);
            }
        }
        input.consume(done);
        if ended {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(if too_long { Line::TooLong } else { Line::Read });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncBufReadExt, DuplexStream, Lines, ReadHalf, WriteHalf};

    /// A transport allowing one unanswered request, and the client's ends
    /// of its pipes: this test plays rmcp through the transport's
    /// `receive` and `send`.
    fn one_in_flight() -> (
        StdioTransport,
        WriteHalf<DuplexStream>,
        Lines<BufReader<ReadHalf<DuplexStream>>>,
    ) {
        one_in_flight_through(64 * 1024)
    }

    /// The same, with pipes that hold `bytes` unread.
    fn one_in_flight_through(
        bytes: usize,
    ) -> (
        StdioTransport,
        WriteHalf<DuplexStream>,
        Lines<BufReader<ReadHalf<DuplexStream>>>,
    ) {
        let (client, server) = tokio::io::duplex(bytes);
        let (input, output) = tokio::io::split(server);
        let options = McpOptions {
            max_in_flight: 1,
            ..McpOptions::default()
        };
        let transport = StdioTransport::new(input, output, &options);
        let (read, write) = tokio::io::split(client);
        (transport, write, BufReader::new(read).lines())
    }

    async fn line(client: &mut WriteHalf<DuplexStream>, line: &str) {
        client
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("an open pipe");
    }

    /// The next line the host writes; fails once every task waits and
    /// none came.
    async fn answer(lines: &mut Lines<BufReader<ReadHalf<DuplexStream>>>) -> serde_json::Value {
        let line = tokio::time::timeout(Duration::from_secs(3600), lines.next_line())
            .await
            .expect("an answer")
            .expect("read")
            .expect("an open pipe");
        serde_json::from_str(&line).expect("JSON")
    }

    /// Answer the ping `id`, as rmcp would.
    async fn pong(transport: &mut StdioTransport, id: i64) {
        let pong = ServerJsonRpcMessage::response(
            rmcp::model::ServerResult::empty(()),
            RequestId::Number(id),
        );
        transport.send(pong).await.expect("an open pipe");
    }

    fn request_id(message: Option<ClientJsonRpcMessage>) -> RequestId {
        match message {
            Some(ClientJsonRpcMessage::Request(request)) => request.id,
            other => panic!("not a request: {other:?}"),
        }
    }

    /// Whether a message reaches rmcp before the runtime has nothing left
    /// to do: the clock is paused, so the timeout fires only once every
    /// task waits.
    async fn delivered(transport: &mut StdioTransport) -> bool {
        tokio::time::timeout(Duration::from_secs(3600), transport.receive())
            .await
            .is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_reusing_the_id_of_an_unanswered_one_is_refused_and_frees_no_room() {
        let (mut transport, mut client, mut lines) = one_in_flight();
        line(&mut client, r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).await;
        assert_eq!(request_id(transport.receive().await), RequestId::Number(1));

        // The same id again, while request 1 holds the one permit: refused
        // at once, never handed on, and request 1 still holds its permit.
        line(
            &mut client,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
        )
        .await;
        let refused = answer(&mut lines).await;
        assert_eq!(refused["id"], 1, "{refused}");
        assert_eq!(refused["error"]["code"], -32600, "{refused}");
        let message = refused["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("already in use"), "{refused}");

        line(&mut client, r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#).await;
        assert!(
            !delivered(&mut transport).await,
            "request 2 was read while request 1 was unanswered"
        );

        // Request 1 answered: request 2 is read.
        pong(&mut transport, 1).await;
        assert_eq!(answer(&mut lines).await["id"], 1);
        assert_eq!(request_id(transport.receive().await), RequestId::Number(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_line_with_the_id_of_an_unanswered_request_frees_no_room() {
        let (mut transport, mut client, mut lines) = one_in_flight();
        line(&mut client, r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).await;
        assert_eq!(request_id(transport.receive().await), RequestId::Number(1));

        // Unreadable params, with request 1's id: answered with an error,
        // which is no answer to request 1.
        line(
            &mut client,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":"str"}"#,
        )
        .await;
        let refused = answer(&mut lines).await;
        assert_eq!(refused["id"], 1, "{refused}");
        assert_eq!(refused["error"]["code"], -32602, "{refused}");

        line(&mut client, r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#).await;
        assert!(
            !delivered(&mut transport).await,
            "request 2 was read while request 1 was unanswered"
        );
    }

    /// A request cancelled once rmcp has answered it holds its permit until
    /// the answer is written, and that answer frees no later request of
    /// the same id.
    #[tokio::test(start_paused = true)]
    async fn an_answer_out_before_the_cancel_frees_only_its_own_request() {
        // The client reads nothing yet: the answer waits in the pipe.
        let (mut transport, mut client, mut lines) = one_in_flight_through(1);
        line(&mut client, r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).await;
        assert_eq!(request_id(transport.receive().await), RequestId::Number(1));
        pong(&mut transport, 1).await;

        line(
            &mut client,
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}"#,
        )
        .await;
        assert!(matches!(
            transport.receive().await,
            Some(ClientJsonRpcMessage::Notification(_))
        ));
        line(&mut client, r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).await;
        assert!(
            !delivered(&mut transport).await,
            "a request was read while the answer of request 1 was unwritten"
        );

        // The client reads: the answer is written, and only then is the
        // next request read.
        assert_eq!(answer(&mut lines).await["id"], 1);
        assert_eq!(request_id(transport.receive().await), RequestId::Number(1));
    }

    /// An output that keeps what is written and counts the writes.
    #[derive(Clone, Default)]
    struct Counted {
        bytes: Arc<Mutex<Vec<u8>>>,
        writes: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl AsyncWrite for Counted {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.writes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.bytes.lock().expect("bytes").extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// With another request unanswered, the writer lets the runtime run
    /// before it flushes an answer, and an answer finished meanwhile goes
    /// out in the same write.
    #[tokio::test]
    async fn an_answer_finished_while_the_writer_yields_shares_its_write() {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (input, _) = tokio::io::split(server);
        let output = Counted::default();
        let mut transport = StdioTransport::new(input, output.clone(), &McpOptions::default());
        let (_, mut client) = tokio::io::split(client);
        line(&mut client, r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).await;
        line(&mut client, r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#).await;
        assert_eq!(request_id(transport.receive().await), RequestId::Number(1));
        assert_eq!(request_id(transport.receive().await), RequestId::Number(2));

        pong(&mut transport, 1).await;
        // The writer takes the first answer and yields, the second request
        // still unanswered; then the second answer comes.
        tokio::task::yield_now().await;
        pong(&mut transport, 2).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while output
            .bytes
            .lock()
            .expect("bytes")
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            < 2
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the answers were not written"
            );
            tokio::task::yield_now().await;
        }
        assert_eq!(
            output.writes.load(std::sync::atomic::Ordering::Relaxed),
            1,
            "{}",
            String::from_utf8_lossy(&output.bytes.lock().expect("bytes"))
        );
    }

    #[test]
    fn after_a_yield_that_gathered_nothing_the_cork_rests() {
        let mut cork = Cork::default();
        assert!(cork.worth_trying());
        cork.tried(true);
        assert!(cork.worth_trying(), "a yield that paid is tried again");
        cork.tried(false);
        // Each try gathers nothing.
        let tried = (0..Cork::BACKOFF * 3)
            .filter(|_| {
                let trying = cork.worth_trying();
                if trying {
                    cork.tried(false);
                }
                trying
            })
            .count();
        assert_eq!(tried, 3, "one try in every {} answers", Cork::BACKOFF);
    }

    /// A call's future for the tests of [`FirstPolls`]: counts its polls,
    /// takes `busy` in each, and ends once `ends` (if any) is sent, waking
    /// the waker of its last poll as it ends, as a call's closing update
    /// channel does; or panics.
    struct Probe {
        polls: Arc<std::sync::atomic::AtomicUsize>,
        busy: Duration,
        ends: Option<tokio::sync::oneshot::Receiver<()>>,
        ended: Option<tokio::sync::oneshot::Sender<()>>,
        panics: bool,
    }

    impl Probe {
        fn new() -> Self {
            Self {
                polls: Arc::default(),
                busy: Duration::ZERO,
                ends: None,
                ended: None,
                panics: false,
            }
        }

        fn polls(&self) -> impl Fn() -> usize + use<> {
            let polls = self.polls.clone();
            move || polls.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    impl Future for Probe {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::sleep(self.busy);
            assert!(!self.panics, "a fault in the handler");
            if let Some(ends) = &mut self.ends
                && Pin::new(ends).poll(cx).is_pending()
            {
                return Poll::Pending;
            }
            cx.waker().wake_by_ref();
            if let Some(ended) = self.ended.take() {
                let _ = ended.send(());
            }
            Poll::Ready(())
        }
    }

    /// A waker that counts its wakes.
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_call_that_ends_in_its_first_poll_never_wakes_the_reader() {
        let call = Probe::new();
        let polls = call.polls();
        let wakes = Arc::new(Wakes(0.into()));
        let waker = std::task::Waker::from(wakes.clone());
        let mut first_polls = FirstPolls::default();
        let mut reader = std::pin::pin!(async { first_polls.start(true, 1, Box::pin(call)) });
        let read = reader.as_mut().poll(&mut Context::from_waker(&waker));
        assert!(read.is_ready());
        assert_eq!(polls(), 1, "the call ran in the reader");
        assert_eq!(
            wakes.0.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "the call woke the reader as it ended: the reader would be rescheduled"
        );
    }

    #[tokio::test]
    async fn a_call_still_running_after_its_first_poll_goes_on_in_its_own_task() {
        let (end, ends) = tokio::sync::oneshot::channel();
        let (ended, is_ended) = tokio::sync::oneshot::channel();
        let call = Probe {
            ends: Some(ends),
            ended: Some(ended),
            ..Probe::new()
        };
        let polls = call.polls();
        FirstPolls::default().start(true, 1, Box::pin(call));
        assert_eq!(polls(), 1, "polled once in the reader");
        tokio::task::yield_now().await;
        end.send(()).expect("the call waits");
        tokio::time::timeout(Duration::from_secs(10), is_ended)
            .await
            .expect("the call's task was woken and polled it to its end")
            .expect("the call ended");
    }

    #[tokio::test]
    async fn a_call_that_panics_in_its_first_poll_is_dropped_and_the_reader_goes_on() {
        let mut first_polls = FirstPolls::default();
        let call = Probe {
            panics: true,
            ..Probe::new()
        };
        let polls = call.polls();
        first_polls.start(true, 1, Box::pin(call));
        assert_eq!(polls(), 1);
        // Another tool's: printing the panic may have taken long enough
        // to mark this one slow.
        let next = Probe::new();
        let next_polls = next.polls();
        first_polls.start(true, 2, Box::pin(next));
        assert_eq!(next_polls(), 1, "the next call ran in the reader");
    }

    fn slow() -> Probe {
        Probe {
            busy: FIRST_POLL_LIMIT * 2,
            ..Probe::new()
        }
    }

    #[tokio::test]
    async fn a_tool_whose_calls_held_the_reader_twice_has_its_calls_spawned_at_once() {
        let mut first_polls = FirstPolls::default();
        for _ in 0..2 {
            let held = slow();
            let polls = held.polls();
            first_polls.start(true, 1, Box::pin(held));
            assert_eq!(polls(), 1, "ran in the reader");
        }
        let (same, other) = (Probe::new(), Probe::new());
        let (same_polls, other_polls) = (same.polls(), other.polls());
        first_polls.start(true, 1, Box::pin(same));
        first_polls.start(true, 2, Box::pin(other));
        assert_eq!(
            same_polls(),
            0,
            "the slow tool's next call is spawned unpolled"
        );
        assert_eq!(
            other_polls(),
            1,
            "another tool's call still runs in the reader"
        );
        tokio::time::timeout(Duration::from_secs(10), async {
            while same_polls() == 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the spawned call ran");
    }

    #[tokio::test]
    async fn a_call_that_held_the_reader_once_changes_nothing() {
        let mut first_polls = FirstPolls::default();
        first_polls.start(true, 1, Box::pin(slow()));
        first_polls.start(true, 1, Box::pin(Probe::new()));
        let next = Probe::new();
        let polls = next.polls();
        first_polls.start(true, 1, Box::pin(next));
        assert_eq!(polls(), 1, "still run in the reader");
        assert!(first_polls.slow.is_empty(), "forgotten once quick again");
    }

    #[tokio::test]
    async fn a_slow_tool_is_tried_in_the_reader_again_after_its_backoff() {
        let mut first_polls = FirstPolls::default();
        first_polls.start(true, 1, Box::pin(slow()));
        first_polls.start(true, 1, Box::pin(slow()));
        let backoff = |f: &FirstPolls| match f.slow[&1] {
            Slow::HeldOff { backoff, .. } => backoff,
            Slow::Once => Duration::ZERO,
        };
        assert_eq!(backoff(&first_polls), SLOW_BACKOFF);
        // Its backoff over, the tool's next call runs in the reader; slow
        // again, the backoff doubles.
        let expire = |f: &mut FirstPolls| match f.slow.get_mut(&1) {
            Some(Slow::HeldOff { until, .. }) => *until = std::time::Instant::now(),
            other => panic!("held slow: {other:?}"),
        };
        expire(&mut first_polls);
        let again = slow();
        let polls = again.polls();
        first_polls.start(true, 1, Box::pin(again));
        assert_eq!(polls(), 1, "tried in the reader again");
        assert_eq!(backoff(&first_polls), SLOW_BACKOFF * 2);
        // Quick this time: forgotten.
        expire(&mut first_polls);
        let quick = Probe::new();
        let polls = quick.polls();
        first_polls.start(true, 1, Box::pin(quick));
        assert_eq!(polls(), 1);
        assert!(first_polls.slow.is_empty());
    }

    #[tokio::test]
    async fn without_fuel_no_call_runs_in_the_reader() {
        let call = Probe::new();
        let polls = call.polls();
        FirstPolls::default().start(false, 1, Box::pin(call));
        assert_eq!(polls(), 0);
    }

    #[tokio::test]
    async fn a_long_line_is_skipped_whole_and_the_next_one_read() {
        let input: &[u8] = b"0123456789abcdef\nshort\r\nlast";
        let mut input = BufReader::with_capacity(4, input);
        let mut line = Vec::new();
        assert!(matches!(
            read_line(&mut input, &mut line, 8).await,
            Ok(Line::TooLong)
        ));
        assert!(matches!(
            read_line(&mut input, &mut line, 8).await,
            Ok(Line::Read)
        ));
        assert_eq!(line, b"short");
        assert!(matches!(
            read_line(&mut input, &mut line, 8).await,
            Ok(Line::Read)
        ));
        assert_eq!(line, b"last");
        assert!(matches!(
            read_line(&mut input, &mut line, 8).await,
            Ok(Line::End)
        ));
    }

    /// Counts its drops: a call's sandbox, as far as the writer sees.
    struct Sandbox(Arc<AtomicUsize>);

    impl Drop for Sandbox {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// What a call that left a [`Sandbox`] leaves.
    async fn left_by_a_call(freed: &Arc<AtomicUsize>) -> Leftovers {
        let sandbox = Sandbox(freed.clone());
        leftovers::keeping(async move { leftovers::leave(sandbox) })
            .await
            .1
    }

    /// A writer to a pipe that holds `bytes` unread: its queue, whether it
    /// is stalled, the client's end, and its task.
    fn writer_to_a_pipe_of(
        bytes: usize,
    ) -> (
        mpsc::Sender<Outgoing>,
        Stalled,
        DuplexStream,
        JoinHandle<()>,
    ) {
        let (client, server) = tokio::io::duplex(bytes);
        let (to_write, queue) = mpsc::channel(OUTGOING);
        let stalled = Stalled::default();
        let output = BufWriter::with_capacity(WRITE_BUFFER, server);
        let writer = tokio::spawn(write_loop(
            output,
            queue,
            stalled.clone(),
            Pending::default(),
        ));
        (to_write, stalled, client, writer)
    }

    /// Whether `freed` reaches `n` within 5 s.
    async fn freed_within(freed: &AtomicUsize, n: usize) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while freed.load(Ordering::SeqCst) < n {
            if std::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    fn empty_answer(id: i64) -> ServerJsonRpcMessage {
        ServerJsonRpcMessage::response(rmcp::model::ServerResult::empty(()), RequestId::Number(id))
    }

    /// The sandbox of a call whose answer went out is freed after the
    /// write; one whose answer waits for a client that does not read is
    /// freed at once, not held until the client reads.
    #[tokio::test]
    async fn a_calls_sandbox_is_freed_after_its_answer_or_when_the_client_does_not_read() {
        let (to_write, _, client, writer) = writer_to_a_pipe_of(64);
        let freed = Arc::new(AtomicUsize::new(0));
        let mut lines = BufReader::new(client).lines();

        let sent = Outgoing {
            message: empty_answer(1),
            answers: None,
            left: left_by_a_call(&freed).await,
        };
        assert!(to_write.send(sent).await.is_ok());
        let line = lines.next_line().await.expect("read").expect("a line");
        assert!(line.contains(r#""id":1"#), "{line}");
        assert!(freed_within(&freed, 1).await, "never freed");

        // The client stops reading: the pipe's 64 bytes fill, and the
        // writer waits for it with the second answer unwritten.
        for id in 2..4 {
            let sent = Outgoing {
                message: empty_answer(id),
                answers: None,
                left: left_by_a_call(&freed).await,
            };
            assert!(to_write.send(sent).await.is_ok());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            freed_within(&freed, 3).await,
            "held while the client does not read"
        );
        drop((to_write, lines));
        writer.abort();
    }

    /// An answer queued behind another frees its call's sandbox at once,
    /// before it waits for room in the writer's queue: only one that goes
    /// straight out holds it until it is written.
    #[tokio::test]
    async fn an_answer_queued_behind_another_frees_its_calls_sandbox_at_once() {
        let (answers, mut queue) = mpsc::channel(1);
        let freed = Arc::new(AtomicUsize::new(0));
        let answering = |id: i64| Answering {
            id: RequestId::Number(id),
            serial: 0,
            pending: Pending::default(),
            answers: answers.clone(),
            stalled: Stalled::default(),
            answered: false,
        };
        let first = left_by_a_call(&freed).await;
        answering(1).answer(empty_answer(1), first).await;
        assert_eq!(
            freed.load(Ordering::SeqCst),
            0,
            "the first goes straight out"
        );
        // The queue is full: the second waits for room.
        let second = left_by_a_call(&freed).await;
        let waiting = tokio::spawn(answering(2).answer(empty_answer(2), second));
        assert!(
            freed_within(&freed, 1).await,
            "held while it waits behind the first"
        );
        assert!(!waiting.is_finished(), "still waiting for room");
        drop(queue.recv().await.expect("the first"));
        waiting.await.expect("sent");
        drop(queue.recv().await.expect("the second"));
        assert_eq!(freed.load(Ordering::SeqCst), 2);
    }

    /// An answer longer than the writer's buffer goes straight through to
    /// the client: the sandbox its call left is freed before that write,
    /// which waits for a client that does not read.
    #[tokio::test]
    async fn a_long_answer_to_a_client_that_does_not_read_frees_its_calls_sandbox() {
        let (to_write, _, _client, writer) = writer_to_a_pipe_of(64);
        let freed = Arc::new(AtomicUsize::new(0));
        let text = "x".repeat(2 * WRITE_BUFFER);
        let result =
            rmcp::model::CallToolResult::success(vec![rmcp::model::ContentBlock::text(text)]);
        let sent = Outgoing {
            message: ServerJsonRpcMessage::response(
                rmcp::model::ServerResult::CallToolResult(result),
                RequestId::Number(1),
            ),
            answers: None,
            left: left_by_a_call(&freed).await,
        };
        assert!(to_write.send(sent).await.is_ok());
        assert!(
            freed_within(&freed, 1).await,
            "held while the client does not read"
        );
        writer.abort();
    }

    /// While the writer waits for a client that does not read, a call that
    /// ends frees its sandbox at once, though the writer's queue is empty.
    #[tokio::test]
    async fn an_answer_behind_a_stalled_writer_frees_its_calls_sandbox_at_once() {
        let (to_write, stalled, _client, writer) = writer_to_a_pipe_of(64);
        for id in 1.. {
            let sent = Outgoing {
                message: empty_answer(id),
                answers: None,
                left: Leftovers::default(),
            };
            assert!(to_write.send(sent).await.is_ok());
            tokio::time::sleep(Duration::from_millis(5)).await;
            if stalled.load(Ordering::SeqCst) {
                break;
            }
            assert!(id < 100, "the writer never stalled");
        }
        let freed = Arc::new(AtomicUsize::new(0));
        let answering = Answering {
            id: RequestId::Number(0),
            serial: 0,
            pending: Pending::default(),
            answers: to_write.clone(),
            stalled,
            answered: false,
        };
        let left = left_by_a_call(&freed).await;
        answering.answer(empty_answer(0), left).await;
        assert_eq!(freed.load(Ordering::SeqCst), 1);
        writer.abort();
    }
}
