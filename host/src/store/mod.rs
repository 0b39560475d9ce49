//! The task store: where call records live so that they outlast the host
//! (B31).
//!
//! A [`TaskStore`] keeps one [`TaskRecord`] per call, found by a random task
//! id ([`new_task_id`]) that only the client which started the call knows.
//! Two stores come with the host:
//!
//! - [`SqliteStore`], the default: one SQLite file (WAL mode) in the user's
//!   data folder ([`default_path`]), or wherever the caller says. One writer
//!   thread takes every write from a bounded queue and commits them in
//!   batches, so recording a call costs the caller a queue push, never a
//!   disk write.
//! - [`MemoryStore`]: the same interface in memory, bounded, lost at exit
//!   (`--no-state`, embedders, and the fallback when the file cannot be
//!   opened).
//!
//! # The life of a record
//!
//! ```no_run
//! # async fn demo(record: toolhost::CallRecord) -> anyhow::Result<()> {
//! use std::time::SystemTime;
//! use toolhost::CallStatus;
//! use toolhost::store::{
//!     CallEnd, Durability, SqliteStore, StoreOptions, TaskRecord, TaskStore, new_task_id,
//! };
//!
//! let path = toolhost::store::default_path().expect("a data folder");
//! let store = SqliteStore::open(&path, StoreOptions::default())?;
//! // Once, before the first call: calls a stopped host left behind.
//! let _interrupted = store.mark_orphans(SystemTime::now()).await?;
//!
//! let task_id = new_task_id();
//! // A call that goes on in the background: durable before it is answered.
//! store.start(TaskRecord::new(task_id.clone(), record), Durability::Durable).await?;
//! store.running(&task_id, SystemTime::now());
//! store.end(&task_id, CallEnd {
//!     status: CallStatus::Done,
//!     result: None,
//!     error: None,
//!     fuel_used: 1_000,
//!     ended_at: SystemTime::now(),
//! }, Durability::Lazy).await?; // `Ok` once queued
//! let record = store.get(&task_id).await?;
//! # Ok(()) }
//! ```
//!
//! Writes (`start`, `running`, `update`, `end`) return at once. A
//! [`Durability::Durable`] write gives a [`Ticket`] that resolves once its
//! transaction committed (and was synced to disk); a [`Durability::Lazy`]
//! one only says whether it was queued. Reads see committed writes: await
//! [`TaskStore::settle`] first to read your own lazy writes (or
//! [`TaskStore::flush`] to also have them on disk).
//!
//! # Who reads what
//!
//! The task id is what lets a client read its call: random, given only to
//! the client that started the call, so no client can guess another's.
//! [`TaskStore::get`] is the client's read; [`TaskStore::list`] shows every
//! session's calls and is for the operator (the CLI), or for a session's
//! own calls when filtered by its `session_id`.
//!
//! A read by [`SqliteStore`] runs on the thread that polls it, on a
//! connection of its own (WAL: it never waits for the writer): a read by
//! task id takes well under a millisecond, a listing of 50 records a few
//! (see the benchmark in the tests).
//!
//! # When the store fails
//!
//! Opening reports a clear [`StoreError::Open`] naming the file (corrupt,
//! not a task store, a folder that cannot be written); [`open_or_memory`]
//! logs it and serves from memory instead. A failure while running (disk
//! full, I/O error) is logged once with its reason; the store goes on
//! accepting writes, drops what it cannot keep, counts it, and says so in
//! [`TaskStore::health`] until a commit succeeds again. No write ever blocks
//! or fails a call: a full queue drops the write (counted) rather than wait,
//! and a durable write or a flush that meets a full queue resolves at once
//! to [`StoreError::Full`]. The queue is bounded by what its writes hold
//! too ([`StoreOptions::queue_bytes`]): past it a write is dropped the same
//! way ([`StoreError::FullBytes`]), except a call's end, which is kept
//! without its result, so that the record does not stay `running`.
//!
//! # Another store
//!
//! The trait holds no SQLite type, and its reads and the writer's
//! maintenance (`mark_orphans`, `prune`) return futures, so a store on a
//! server (PostgreSQL: several hosts sharing one task table) is a second
//! implementation of [`TaskStore`], handed to the engine as an
//! `Arc<dyn TaskStore>` like the others. Such a store would keep its writes
//! queued the same way (a task on the runtime instead of a thread, writing
//! batches with `COPY` or multi-row inserts), and add an owner column (the
//! host's id with a lease it renews), so that `mark_orphans` marks only the
//! records of hosts whose lease ran out, never those of a host still
//! running. Task ids are UUIDs with 74 random bits ([`new_task_id`]),
//! unique across hosts.

mod memory;
mod opening;
mod sqlite;

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use serde::{Deserialize, Deserializer};
use tokio::sync::oneshot;

use crate::call::Output;
use crate::records::{CallRecord, CallStatus, UpdateRecord, json_weight, output_weight};

pub use self::memory::MemoryStore;
pub(crate) use self::opening::OpeningStore;
pub use self::sqlite::SqliteStore;
pub use crate::records::TaskRecord;

/// Writes waiting for the writer, at most, by default: past it a write is
/// dropped and counted rather than make a call wait.
pub const DEFAULT_QUEUE: usize = 65_536;
/// Bytes the writes waiting for the writer may hold (their arguments,
/// results, updates), by default: past it a write is dropped and counted,
/// and a call's end is kept without its result.
pub const DEFAULT_QUEUE_BYTES: usize = 64 << 20;
/// Updates kept per call, by default: past it the oldest are folded into
/// [`TaskRecord::updates_dropped`].
pub const DEFAULT_MAX_UPDATES: usize = 1_000;
/// Finished records a [`MemoryStore`] keeps, by default; the oldest
/// finished go first.
pub const DEFAULT_MEMORY_RECORDS: usize = 10_000;
/// Bytes the finished records of a [`MemoryStore`] may hold, by default;
/// the oldest finished go first.
pub const DEFAULT_MEMORY_BYTES: usize = 64 << 20;
/// How often the writer prunes by the [`Retention`], by default.
pub const DEFAULT_PRUNE_EVERY: Duration = Duration::from_secs(60 * 60);
/// Records a listing returns when no limit is given.
pub const DEFAULT_LIST_LIMIT: usize = 50;
/// Task ids of lost starts (dropped from a full queue, or in a batch that
/// failed) that each store remembers, so as not to warn of their ends:
/// about 1 MiB each for the SQLite store and the one still opening.
pub(crate) const MAX_LOST_STARTS: usize = 10_000;

/// The task ids of starts a store lost and logged once: their ends find
/// no record, and are not worth a line each. At most [`MAX_LOST_STARTS`],
/// then emptied, since some of those ends never come (lost too, or of
/// calls that never end).
#[derive(Debug, Default)]
pub(crate) struct LostStarts(HashSet<String>);

impl LostStarts {
    /// Remember `task_ids`; past the bound, start again with them (the
    /// newest).
    pub(crate) fn lose(&mut self, task_ids: impl ExactSizeIterator<Item = String>) {
        if self.0.len() + task_ids.len() > MAX_LOST_STARTS {
            self.0.clear();
        }
        self.0.extend(task_ids);
    }

    /// Whether the start of `task_id` was lost; forgotten now that its
    /// end came.
    pub(crate) fn forget(&mut self, task_id: &str) -> bool {
        self.0.remove(task_id)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A new task id: a UUID v7 in its hyphenated form, the time it was made
/// to the millisecond, then 74 random bits.
///
/// The random bits make it a capability (no client can guess another's
/// call, B31); the time in front makes ids of one store sort as they come,
/// so each new record lands beside the last one in the store's index
/// instead of on a random page, which the journal would write once per
/// call.
pub fn new_task_id() -> String {
    // The random bits of a v4 UUID (thread-local, cryptographically secure
    // with `fast-rng`), bytes 6 to 15: its version and variant bits are the
    // ones v7 sets in the same places, so all 74 random bits v7 has are
    // random.
    let random = uuid::Uuid::new_v4().into_bytes();
    let mut bits = [0; 10];
    bits.copy_from_slice(&random[6..]);
    let millis = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    uuid::Builder::from_unix_timestamp_millis(millis, &bits)
        .into_uuid()
        .to_string()
}

/// Where the task store lives unless told otherwise:
/// `DATA_DIR/toolhost/tasks.db` (`~/.local/share/toolhost/tasks.db` on
/// Linux); `None` when the system has no data folder.
pub fn default_path() -> Option<PathBuf> {
    dirs::data_dir().map(|d| d.join("toolhost").join("tasks.db"))
}

/// Open the SQLite store at `path`, or, if it cannot be opened, log why and
/// serve from a [`MemoryStore`] whose [`health`](TaskStore::health) says
/// records are not kept and why. The host serves either way.
pub fn open_or_memory(path: &Path, options: StoreOptions) -> Arc<dyn TaskStore> {
    match SqliteStore::open(path, options.clone()) {
        Ok(store) => Arc::new(store),
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "task records will not be kept");
            Arc::new(MemoryStore::fallback(options, e.to_string()))
        }
    }
}

/// The task store's interface: what the session engine, the companion tools
/// and the CLI use, whatever keeps the records.
///
/// Writes return at once and never fail a call; reads and maintenance are
/// futures. Calls to one store may come from any thread.
pub trait TaskStore: Send + Sync + fmt::Debug {
    /// Record a new call, `queued` or `running` (its `status`). A task id
    /// already recorded is refused (logged; a durable ticket says so).
    fn start(&self, record: TaskRecord, durability: Durability) -> Ticket;

    /// The queued call `task_id` started running at `at`.
    fn running(&self, task_id: &str, at: SystemTime);

    /// Append an update to a live call, sent when the call had burned
    /// `fuel_used`: a live record's `fuel_used` is the fuel as of its
    /// latest update. Past the store's bound per call the oldest update is
    /// folded into `updates_dropped`.
    fn update(&self, task_id: &str, update: UpdateRecord, fuel_used: u64);

    /// The call ended. Applies only to a call still `queued` or `running`,
    /// so a call ends once (B29).
    fn end(&self, task_id: &str, end: CallEnd, durability: Durability) -> Ticket;

    /// Resolves once every write made before it is committed and synced.
    fn flush(&self) -> Ticket;

    /// Resolves once every write made before it is committed, so that a
    /// read sees it; unlike [`flush`](Self::flush) it does not wait for the
    /// disk (what a page that reads its own writes needs, at no sync).
    fn settle(&self) -> Ticket;

    /// One record by its task id, with its kept updates.
    fn get<'a>(&'a self, task_id: &'a str)
    -> BoxFuture<'a, Result<Option<TaskRecord>, StoreError>>;

    /// Records matching `filter`, newest first (by `created_at`).
    fn list<'a>(&'a self, filter: &'a Filter)
    -> BoxFuture<'a, Result<Vec<TaskRecord>, StoreError>>;

    /// Records matching `filter` in brief, newest first: what a listing
    /// shows, without their arguments, updates or results, which can weigh
    /// megabytes a record once read.
    fn list_brief<'a>(
        &'a self,
        filter: &'a Filter,
    ) -> BoxFuture<'a, Result<Vec<Listed>, StoreError>> {
        Box::pin(async move {
            let records = self.list(filter).await?;
            Ok(records.iter().map(Listed::of).collect())
        })
    }

    /// The calls created at or after `since`, newest first, at most
    /// `limit`, in brief (no arguments, updates or result): what figures
    /// over a recent span are made of, at a fraction of a listing's cost.
    fn summaries(
        &self,
        since: SystemTime,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<CallSummary>, StoreError>>;

    /// Mark every record left `queued` or `running` by a host that is gone
    /// as `interrupted`, found at `found_at`; returns how many. Records of
    /// this store, and of other hosts still running on the same store, are
    /// left alone. Call it once after opening.
    fn mark_orphans(&self, found_at: SystemTime) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// Remove finished records (not `queued` or `running`) that finished
    /// before `now - retention.keep`, then the oldest finished past
    /// `retention.max`; returns how many. Stores also prune by themselves
    /// (see [`StoreOptions::prune_every`]).
    fn prune(
        &self,
        retention: Retention,
        now: SystemTime,
    ) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// Whether records are being kept, and if not, why.
    fn health(&self) -> Health;
}

/// Whether the caller waits for a write to be on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Queued; committed with the next batch. An inline call's record.
    Lazy,
    /// The ticket resolves once the write's transaction committed and was
    /// synced. A call that goes on in the background, before its answer.
    Durable,
}

/// How a call ended, as [`TaskStore::end`] records it.
#[derive(Debug, Clone, PartialEq)]
pub struct CallEnd {
    /// `done`, `error` or `cancelled`.
    pub status: CallStatus,
    /// What the tool returned, if it returned (shared with the session's
    /// record).
    pub result: Option<Arc<Output>>,
    pub error: Option<String>,
    pub fuel_used: u64,
    pub ended_at: SystemTime,
}

impl CallEnd {
    /// About how many bytes the end of `task_id` holds while it waits.
    fn weight(&self, task_id: &str) -> usize {
        std::mem::size_of::<Self>()
            + task_id.len()
            + self.result.as_deref().map_or(0, output_weight)
            + self.error.as_ref().map_or(0, String::len)
    }
}

/// What a record's arguments and result weigh, as [`TaskRecord::weight`]
/// takes it.
fn arguments_and_result(record: &TaskRecord) -> usize {
    json_weight(&record.call.arguments) + record.call.result.as_deref().map_or(0, output_weight)
}

/// About how many bytes an update of `task_id` holds while it waits.
fn update_weight(task_id: &str, update: &UpdateRecord) -> usize {
    std::mem::size_of::<UpdateRecord>() + task_id.len() + update.message.len()
}

/// Which records [`TaskStore::list`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub status: Option<CallStatus>,
    pub tool: Option<String>,
    pub session_id: Option<String>,
    /// Created at or after this time.
    pub since: Option<SystemTime>,
    /// Created before this time.
    pub until: Option<SystemTime>,
    /// At most this many; default [`DEFAULT_LIST_LIMIT`].
    pub limit: usize,
}

impl Default for Filter {
    fn default() -> Self {
        Filter {
            status: None,
            tool: None,
            session_id: None,
            since: None,
            until: None,
            limit: DEFAULT_LIST_LIMIT,
        }
    }
}

impl Filter {
    /// Whether `call` passes the filter (all but the limit).
    pub(crate) fn matches(&self, call: &CallRecord) -> bool {
        self.status.is_none_or(|s| s == call.status)
            && self.tool.as_ref().is_none_or(|t| *t == call.tool)
            && (self.session_id.as_ref()).is_none_or(|s| *s == call.session_id)
            && self.since.is_none_or(|t| call.created_at >= t)
            && self.until.is_none_or(|t| call.created_at < t)
    }
}

/// One call in brief, as [`TaskStore::summaries`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSummary {
    pub tool: String,
    pub status: CallStatus,
    /// The fuel it burned: at its end, or as of its latest update.
    pub fuel_used: u64,
    pub created_at: SystemTime,
    pub started_at: Option<SystemTime>,
    pub ended_at: Option<SystemTime>,
}

/// One call as a listing shows it ([`TaskStore::list_brief`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub task_id: String,
    pub session_id: String,
    pub summary: CallSummary,
    /// The updates it sent, kept or not.
    pub updates: u64,
}

impl Listed {
    pub(crate) fn of(record: &TaskRecord) -> Self {
        Listed {
            task_id: record.task_id.clone(),
            session_id: record.call.session_id.clone(),
            summary: CallSummary::of(&record.call),
            updates: record.call.updates.len() as u64 + record.updates_dropped,
        }
    }
}

impl CallSummary {
    pub(crate) fn of(call: &CallRecord) -> Self {
        CallSummary {
            tool: call.tool.clone(),
            status: call.status,
            fuel_used: call.fuel_used,
            created_at: call.created_at,
            started_at: call.started_at,
            ended_at: call.ended_at,
        }
    }
}

/// How long finished records are kept and how many at most: the `[records]`
/// table of `toolhost.toml`.
///
/// ```toml
/// [records]
/// keep = "7d"      # default "30d"; any humantime duration ("12h", "2w")
/// max = 50000      # default 100000
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Retention {
    /// Finished records older than this (by when they finished) are
    /// removed. Default 30 days.
    #[serde(deserialize_with = "duration")]
    pub keep: Duration,
    /// At most this many finished records are kept; the oldest finished go
    /// first. Default 100 000.
    pub max: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            keep: Duration::from_secs(30 * 24 * 60 * 60),
            max: 100_000,
        }
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text)
        .map_err(|e| serde::de::Error::custom(format!("`{text}` is not a duration: {e}")))
}

/// How a store behaves; every field has a documented default. Build it
/// with `..StoreOptions::default()` (tests add a field of their own).
#[derive(Debug, Clone, PartialEq)]
pub struct StoreOptions {
    /// Writes waiting for the writer, at most. Default [`DEFAULT_QUEUE`].
    pub queue: usize,
    /// Bytes the writes waiting for the writer hold, at most (about; a
    /// write alone in the queue is always taken). Default
    /// [`DEFAULT_QUEUE_BYTES`].
    pub queue_bytes: usize,
    /// Updates kept per call. Default [`DEFAULT_MAX_UPDATES`].
    pub max_updates: usize,
    /// What pruning keeps. Default [`Retention::default`].
    pub retention: Retention,
    /// How often the store prunes by itself (first when it opens); `None`
    /// never (a CLI that only reads). Default [`DEFAULT_PRUNE_EVERY`].
    pub prune_every: Option<Duration>,
    /// Finished records a [`MemoryStore`] keeps. Default
    /// [`DEFAULT_MEMORY_RECORDS`].
    pub memory_records: usize,
    /// Bytes the finished records of a [`MemoryStore`] hold, at most
    /// (about; the newest is always kept). Default
    /// [`DEFAULT_MEMORY_BYTES`].
    pub memory_bytes: usize,
    /// Test only: cap the database's pages, to meet a full disk for real.
    #[cfg(test)]
    pub(crate) max_pages: Option<u64>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            queue: DEFAULT_QUEUE,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            max_updates: DEFAULT_MAX_UPDATES,
            retention: Retention::default(),
            prune_every: Some(DEFAULT_PRUNE_EVERY),
            memory_records: DEFAULT_MEMORY_RECORDS,
            memory_bytes: DEFAULT_MEMORY_BYTES,
            #[cfg(test)]
            max_pages: None,
        }
    }
}

/// Whether a store keeps records, as the host shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// `sqlite` or `memory`.
    pub store: &'static str,
    /// The file, for a store on disk.
    pub path: Option<PathBuf>,
    /// Records outlast the host (a store on disk that works).
    pub lasting: bool,
    /// Why records are not being kept right now; `None` when they are.
    pub problem: Option<String>,
    /// Writes dropped since the store opened (failed or the queue was full).
    pub lost_writes: u64,
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.problem, &self.path) {
            (Some(problem), _) => write!(f, "task records are not being kept: {problem}")?,
            (None, Some(path)) => write!(f, "task records kept in {}", path.display())?,
            (None, None) => write!(f, "task records kept in memory only")?,
        }
        if self.lost_writes > 0 {
            write!(f, " ({} writes lost)", self.lost_writes)?;
        }
        Ok(())
    }
}

/// What went wrong in a task store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the task store {}: {reason}", path.display())]
    Open { path: PathBuf, reason: String },
    #[error("the task store {} failed: {reason}", path.display())]
    Failed { path: PathBuf, reason: String },
    #[error("the task store's queue is full ({0} writes waiting); the write is dropped")]
    Full(usize),
    #[error(
        "the task store's queue is full (its writes hold more than {0} bytes); the write is dropped"
    )]
    FullBytes(usize),
    #[error("the task store is closed")]
    Closed,
    #[error("task {task_id}: {reason}")]
    Refused { task_id: String, reason: String },
}

impl TaskRecord {
    /// A record for `call` under `task_id`, nothing dropped or interrupted.
    pub fn new(task_id: String, call: CallRecord) -> Self {
        TaskRecord {
            task_id,
            call,
            updates_dropped: 0,
            interrupted_at: None,
        }
    }

    /// When the record finished: ended, or found interrupted.
    pub(crate) fn finished_at(&self) -> Option<SystemTime> {
        if self.call.status.is_live() {
            return None;
        }
        Some(
            self.call
                .ended_at
                .or(self.interrupted_at)
                .unwrap_or(self.call.created_at),
        )
    }
}

/// The answer to a write: await it for `Ok` once the write is queued
/// (lazy) or committed and synced (durable), or for the reason it was not
/// kept. Dropping it changes nothing, so a lazy write's ticket can be let go
/// (`let _ = store.start(..)`).
///
/// # Cancel safety
/// Dropping the future before it resolves does not undo the write.
#[derive(Debug)]
#[must_use = "a ticket says whether the write was kept"]
pub struct Ticket(TicketState);

#[derive(Debug)]
enum TicketState {
    Ready(Result<(), StoreError>),
    Waiting(oneshot::Receiver<Result<(), StoreError>>),
}

impl Ticket {
    pub(crate) fn ready(result: Result<(), StoreError>) -> Self {
        Ticket(TicketState::Ready(result))
    }

    pub(crate) fn waiting() -> (oneshot::Sender<Result<(), StoreError>>, Self) {
        let (tx, rx) = oneshot::channel();
        (tx, Ticket(TicketState::Waiting(rx)))
    }
}

impl IntoFuture for Ticket {
    type Output = Result<(), StoreError>;
    type IntoFuture = BoxFuture<'static, Result<(), StoreError>>;

    fn into_future(self) -> Self::IntoFuture {
        match self.0 {
            TicketState::Ready(result) => Box::pin(std::future::ready(result)),
            // A writer that went away without answering: the store closed.
            TicketState::Waiting(rx) => {
                Box::pin(async move { rx.await.unwrap_or(Err(StoreError::Closed)) })
            }
        }
    }
}

#[cfg(test)]
mod tests;
