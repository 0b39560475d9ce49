//! The SQLite task store: one file in WAL mode, one writer thread that
//! commits queued writes in batches, readers on their own connections.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, Transaction, params};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::oneshot;

use super::{
    CallEnd, CallSummary, Durability, Filter, Health, Listed, LostStarts, Retention, StoreError,
    StoreOptions, TaskRecord, TaskStore, Ticket, arguments_and_result, update_weight,
};
use crate::call::Output;
use crate::records::{CallRecord, CallStatus, UpdateRecord};

/// Writes the writer takes into one transaction, at most.
const MAX_BATCH: usize = 4_096;
/// How long the writer gathers lazy writes into one transaction; a durable
/// write (or a flush) ends the wait. A commit costs about what the
/// statements of 25 calls do, so at 5 ms sequential MCP calls (about 20 a
/// window) spent more on commits than on statements; at 25 ms the writer
/// takes 7.1 rather than 12.5 µs of CPU per call. A crash loses at most
/// this much of the lazy writes: inline calls' records (answered already),
/// `running` marks and updates; a background call's start and end are
/// durable. Readers that must see the newest records (the dashboard, a
/// lookup by task id) settle first rather than wait for the window.
const LAZY_WINDOW: Duration = Duration::from_millis(25);
/// Idle reader connections kept for the next read.
const MAX_IDLE_READERS: usize = 4;
/// How long a connection waits for a lock another one holds.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// `PRAGMA application_id` of a toolhost task store ("tool").
const APPLICATION_ID: i64 = 0x746f_6f6c;
/// The schema this code reads and writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 2;
/// A host's lock file older than this whose lock nobody holds is a gone
/// host's, removed when a store opens.
const STALE_LOCK: Duration = Duration::from_secs(60);
/// The WAL is truncated to this size after a checkpoint.
const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

const SCHEMA: &str = "
CREATE TABLE tasks (
    task_id TEXT PRIMARY KEY NOT NULL,
    call_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    tool TEXT NOT NULL,
    arguments TEXT NOT NULL,
    status TEXT NOT NULL,
    result TEXT,
    error TEXT,
    fuel_used INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    ended_at INTEGER,
    interrupted_at INTEGER,
    -- NULL while the call is queued or running: what orphans and pruning use.
    finished_at INTEGER,
    updates_total INTEGER NOT NULL DEFAULT 0,
    updates_dropped INTEGER NOT NULL DEFAULT 0,
    -- The store (one per host process) that recorded the call: its calls
    -- are orphans only once it is gone.
    host_id TEXT
);
CREATE INDEX tasks_created ON tasks (created_at);
CREATE INDEX tasks_live ON tasks (task_id) WHERE finished_at IS NULL;
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX tasks_session ON tasks (session_id, created_at);
CREATE TABLE updates (
    task_id TEXT NOT NULL REFERENCES tasks (task_id) ON DELETE CASCADE,
    -- 1 for the call's first update, counting those folded away.
    n INTEGER NOT NULL,
    at INTEGER NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (task_id, n)
) WITHOUT ROWID;
";

const TASK_COLUMNS: &str = "task_id, call_id, session_id, tool, arguments, status, result, \
     error, fuel_used, created_at, started_at, ended_at, interrupted_at, updates_dropped";

/// Task records in a SQLite file; see the [module docs](super).
///
/// The writer thread also prunes by [`StoreOptions::retention`]: when the
/// store opens, then every [`StoreOptions::prune_every`].
///
/// Dropping the store waits for the writer to commit what is queued (at
/// most [`StoreOptions::queue`] writes), then closes the file.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    /// Held, never read, while the store is open: says this host is alive.
    /// Dropped after the writer finished.
    _owner: Owner,
    queue: usize,
    queue_bytes: usize,
    writes: Option<Sender<(Op, usize)>>,
    writer: Option<JoinHandle<()>>,
    readers: Mutex<Vec<Connection>>,
    shared: Arc<Shared>,
}

/// This store's claim on the calls it records. Several hosts may share
/// one file (every `toolhost serve` of a user opens the default one), so a
/// host marks as interrupted only the calls of hosts that are gone: each
/// open store holds an exclusive lock on `FILE-hosts/ID.lock`, which the
/// system releases when the process ends, however it ends (SIGKILL too).
#[derive(Debug)]
struct Owner {
    id: String,
    dir: PathBuf,
    lock: Option<std::fs::File>,
}

impl Owner {
    fn claim(db: &Path) -> Result<Owner, String> {
        let mut dir = db.as_os_str().to_owned();
        dir.push("-hosts");
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create the folder {}: {e}", dir.display()))?;
        let id = uuid::Uuid::new_v4().to_string();
        let path = dir.join(format!("{id}.lock"));
        let lock = std::fs::File::create(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        lock.try_lock()
            .map_err(|e| format!("cannot lock {}: {e}", path.display()))?;
        Owner::sweep(&dir);
        Ok(Owner {
            id,
            dir,
            lock: Some(lock),
        })
    }

    /// Remove the lock files of hosts that are gone. A host that ends
    /// removes its own, but one that is killed leaves it behind, and only
    /// the ids of hosts with calls still running are checked when orphans
    /// are marked: without this, each killed host would leave a file for
    /// good. A file younger than [`STALE_LOCK`] is left alone, since its
    /// host may be between creating it and locking it.
    fn sweep(dir: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let Some(stale) = SystemTime::now().checked_sub(STALE_LOCK) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".lock")) else {
                continue;
            };
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|modified| modified < stale);
            if old {
                Owner::is_gone(dir, id);
            }
        }
    }

    /// Whether the host that recorded under `id` is gone: its lock file is
    /// missing or can be locked. A gone host's file is removed. A file that
    /// cannot be opened for another reason (out of file descriptors, no
    /// permission) says nothing: its host is taken to be running, since
    /// taking it for gone would mark its calls interrupted.
    fn is_gone(dir: &Path, id: &str) -> bool {
        let path = dir.join(format!("{id}.lock"));
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) => return e.kind() == std::io::ErrorKind::NotFound,
        };
        match file.try_lock() {
            Ok(()) => {
                let _ = std::fs::remove_file(&path);
                true
            }
            Err(_) => false,
        }
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        if self.lock.take().is_some() {
            let _ = std::fs::remove_file(self.dir.join(format!("{}.lock", self.id)));
        }
    }
}

/// What the callers and the writer both see.
#[derive(Debug, Default)]
struct Shared {
    /// Why commits fail, while they do.
    problem: Mutex<Option<String>>,
    lost_writes: AtomicU64,
    /// Starts dropped from a full queue, or in a batch that failed to
    /// commit. An id whose end was dropped from the queue before its
    /// batch's failure was recorded stays until the set is emptied.
    lost_starts: Mutex<LostStarts>,
    /// The queue was found full and that was logged; cleared by a commit.
    queue_full: AtomicBool,
    /// Writes sent and not yet taken by the writer, which the queue's bound
    /// applies to. The channel itself is unbounded, so that it allocates as
    /// it fills: a bounded one allocates all its slots when the store
    /// opens, a tenth of a host's start.
    queued: AtomicUsize,
    /// What the writes sent and not yet committed weigh, which the queue's
    /// bound on bytes applies to: a batch holds its writes until its
    /// commit.
    queued_bytes: AtomicUsize,
}

impl Shared {
    fn problem(&self) -> MutexGuard<'_, Option<String>> {
        self.problem
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lost_starts(&self) -> MutexGuard<'_, LostStarts> {
        (self.lost_starts.lock()).unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether an end that found no record of `task_id` follows a start the
    /// store lost and said so: while commits fail, or a start dropped from
    /// a full queue or lost in a failed batch.
    fn lost_start(&self, task_id: &str) -> bool {
        let lost = self.lost_starts().forget(task_id);
        lost || self.problem().is_some()
    }
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// One message to the writer.
#[derive(Debug)]
enum Op {
    Start(Box<TaskRecord>, Option<Reply<()>>),
    Running(String, SystemTime),
    Update(String, UpdateRecord, u64),
    End(String, Box<CallEnd>, Option<Reply<()>>),
    Flush(Reply<()>),
    /// Like `Flush`, answered at commit without making it synced.
    Settle(Reply<()>),
    Orphans(SystemTime, Reply<u64>),
    Prune(Retention, SystemTime, Reply<u64>),
}

impl Op {
    /// Its commit must be synced before it is answered.
    fn durable(&self) -> bool {
        matches!(
            self,
            Op::Start(_, Some(_)) | Op::End(_, _, Some(_)) | Op::Flush(_)
        )
    }

    /// Somebody waits for its answer: it ends the writer's gathering.
    fn urgent(&self) -> bool {
        !matches!(
            self,
            Op::Start(_, None) | Op::Running(..) | Op::Update(..) | Op::End(_, _, None)
        )
    }

    fn is_write(&self) -> bool {
        matches!(
            self,
            Op::Start(..) | Op::Running(..) | Op::Update(..) | Op::End(..)
        )
    }
}

impl SqliteStore {
    /// Open (creating it and its folder if needed) the store at `path`.
    ///
    /// Fails with [`StoreError::Open`] naming the file when it cannot be
    /// created or written, is not a SQLite database, is another program's
    /// database, or was made by a newer toolhost.
    pub fn open(path: &Path, options: StoreOptions) -> Result<SqliteStore, StoreError> {
        let open_error = |reason: String| StoreError::Open {
            path: path.to_owned(),
            reason,
        };
        if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(folder).map_err(|e| {
                open_error(format!(
                    "cannot create the folder {}: {e}",
                    folder.display()
                ))
            })?;
        }
        let conn = Connection::open(path).map_err(|e| open_error(describe(&e)))?;
        prepare_writer(&conn, &options).map_err(open_error)?;
        let owner = Owner::claim(path).map_err(open_error)?;

        let shared = Arc::new(Shared::default());
        let (writes, queue) = mpsc::channel();
        let writer = Writer {
            conn,
            owner: owner.id.clone(),
            hosts: owner.dir.clone(),
            path: path.to_owned(),
            shared: shared.clone(),
            max_updates: options.max_updates.max(1),
            queue_bytes: options.queue_bytes,
            retention: options.retention,
            prune_every: options.prune_every,
            synchronous_full: false,
        };
        let writer = std::thread::Builder::new()
            .name("toolhost-store".into())
            .spawn(move || writer.run(queue))
            .map_err(|e| open_error(format!("cannot start the writer thread: {e}")))?;
        Ok(SqliteStore {
            path: path.to_owned(),
            _owner: owner,
            queue: options.queue.max(1),
            queue_bytes: options.queue_bytes,
            writes: Some(writes),
            writer: Some(writer),
            readers: Mutex::new(Vec::new()),
            shared,
        })
    }

    /// The file the store keeps.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A write (if `is_write`) was lost, or part of it, to a full queue:
    /// counted, and logged once until a commit.
    fn lost(&self, is_write: bool) {
        if is_write {
            self.shared.lost_writes.fetch_add(1, Ordering::Relaxed);
        }
        if !self.shared.queue_full.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                path = %self.path.display(),
                queue = self.queue,
                queue_bytes = self.queue_bytes,
                "task store queue full: dropping records until the writer catches up"
            );
        }
    }

    /// Whether a write weighing `weight` bytes would find room now.
    fn has_room_for(&self, weight: usize) -> bool {
        let queued = self.shared.queued_bytes.load(Ordering::Relaxed);
        queued == 0 || queued + weight <= self.queue_bytes
    }

    /// Queue `op`, which holds `weight` bytes, for the writer without
    /// waiting; a full queue drops it. A write alone in the queue is taken
    /// whatever it weighs; what holds no bytes (a flush) is bounded by the
    /// count alone.
    fn send(&self, op: Op, weight: usize) -> Result<(), StoreError> {
        let Some(writes) = &self.writes else {
            return Err(StoreError::Closed);
        };
        let is_write = op.is_write();
        let urgent = op.urgent();
        let full = if self.shared.queued.fetch_add(1, Ordering::Relaxed) >= self.queue {
            Some(StoreError::Full(self.queue))
        } else {
            let before = self
                .shared
                .queued_bytes
                .fetch_add(weight, Ordering::Relaxed);
            let heavy = weight > 0 && before > 0 && before + weight > self.queue_bytes;
            if heavy {
                self.shared
                    .queued_bytes
                    .fetch_sub(weight, Ordering::Relaxed);
            }
            heavy.then_some(StoreError::FullBytes(self.queue_bytes))
        };
        if let Some(full) = full {
            self.shared.queued.fetch_sub(1, Ordering::Relaxed);
            match &op {
                Op::Start(record, _) => {
                    let id = record.task_id.clone();
                    self.shared.lost_starts().lose(std::iter::once(id));
                }
                // That end will not come.
                Op::End(id, ..) => {
                    self.shared.lost_starts().forget(id);
                }
                _ => {}
            }
            self.lost(is_write);
            return Err(full);
        }
        match writes.send((op, weight)) {
            Ok(()) => {
                // The writer gathering lazy writes sleeps through them; one
                // that somebody waits for wakes it, and so does a queue
                // holding half the bytes it may.
                let heavy = self.shared.queued_bytes.load(Ordering::Relaxed) > self.queue_bytes / 2;
                if (urgent || heavy)
                    && let Some(writer) = &self.writer
                {
                    writer.thread().unpark();
                }
                Ok(())
            }
            Err(_) => {
                self.shared.queued.fetch_sub(1, Ordering::Relaxed);
                self.shared
                    .queued_bytes
                    .fetch_sub(weight, Ordering::Relaxed);
                Err(StoreError::Closed)
            }
        }
    }

    fn write(
        &self,
        durability: Durability,
        weight: usize,
        op: impl FnOnce(Option<Reply<()>>) -> Op,
    ) -> Ticket {
        match durability {
            Durability::Lazy => Ticket::ready(self.send(op(None), weight)),
            Durability::Durable => {
                let (reply, ticket) = Ticket::waiting();
                match self.send(op(Some(reply)), weight) {
                    Ok(()) => ticket,
                    Err(e) => Ticket::ready(Err(e)),
                }
            }
        }
    }

    fn ask<T: Send + 'static>(
        &self,
        op: impl FnOnce(Reply<T>) -> Op,
    ) -> BoxFuture<'_, Result<T, StoreError>> {
        let (reply, answer) = oneshot::channel();
        let sent = self.send(op(reply), 0);
        Box::pin(async move {
            sent?;
            answer.await.unwrap_or(Err(StoreError::Closed))
        })
    }

    /// Run `read` on an idle reader connection, opening one if none is.
    fn read<T>(
        &self,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let failed = |reason: String| StoreError::Failed {
            path: self.path.clone(),
            reason,
        };
        let idle = self
            .readers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        let conn = match idle {
            Some(conn) => conn,
            None => open_reader(&self.path).map_err(|e| failed(describe(&e)))?,
        };
        let result = read(&conn).map_err(|e| failed(describe(&e)));
        let mut readers = self
            .readers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if readers.len() < MAX_IDLE_READERS {
            readers.push(conn);
        }
        result
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // The writer drains the queue, commits and closes once no sender is left.
        self.writes = None;
        if let Some(writer) = self.writer.take() {
            // Awake, it finds the queue closed and commits without waiting
            // out its gathering window.
            writer.thread().unpark();
            if writer.join().is_err() {
                tracing::error!(path = %self.path.display(), "the task store writer panicked");
            }
        }
    }
}

impl TaskStore for SqliteStore {
    fn start(&self, record: TaskRecord, durability: Durability) -> Ticket {
        let weight = record.weight(arguments_and_result(&record));
        self.write(durability, weight, |reply| {
            Op::Start(Box::new(record), reply)
        })
    }

    fn running(&self, task_id: &str, at: SystemTime) {
        let weight = std::mem::size_of::<Op>() + task_id.len();
        let _ = self.send(Op::Running(task_id.to_owned(), at), weight);
    }

    fn update(&self, task_id: &str, update: UpdateRecord, fuel_used: u64) {
        let weight = update_weight(task_id, &update);
        let _ = self.send(Op::Update(task_id.to_owned(), update, fuel_used), weight);
    }

    fn end(&self, task_id: &str, mut end: CallEnd, durability: Durability) -> Ticket {
        let mut weight = end.weight(task_id);
        if end.result.is_some() && !self.has_room_for(weight) {
            // The call's answer carried its result; what its record must
            // not lose is that it ended, or it stays `running`.
            end.result = None;
            end.error.get_or_insert_with(|| {
                format!(
                    "the result was not kept: the task store's queue held more than {} bytes",
                    self.queue_bytes
                )
            });
            weight = end.weight(task_id);
            self.lost(true);
        }
        self.write(durability, weight, |reply| {
            Op::End(task_id.to_owned(), Box::new(end), reply)
        })
    }

    fn flush(&self) -> Ticket {
        let (reply, ticket) = Ticket::waiting();
        match self.send(Op::Flush(reply), 0) {
            Ok(()) => ticket,
            Err(e) => Ticket::ready(Err(e)),
        }
    }

    fn settle(&self) -> Ticket {
        let (reply, ticket) = Ticket::waiting();
        match self.send(Op::Settle(reply), 0) {
            Ok(()) => ticket,
            Err(e) => Ticket::ready(Err(e)),
        }
    }

    fn get<'a>(
        &'a self,
        task_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<TaskRecord>, StoreError>> {
        Box::pin(async move {
            self.read(|conn| {
                let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE task_id = ?1");
                let row = conn
                    .prepare_cached(&sql)?
                    .query_row([task_id], read_task)
                    .optional()?;
                row.map(|row| with_updates(conn, row)).transpose()
            })
        })
    }

    fn list<'a>(
        &'a self,
        filter: &'a Filter,
    ) -> BoxFuture<'a, Result<Vec<TaskRecord>, StoreError>> {
        Box::pin(async move {
            self.read(|conn| {
                filtered(conn, TASK_COLUMNS, filter, read_task)?
                    .into_iter()
                    .map(|row| with_updates(conn, row))
                    .collect()
            })
        })
    }

    fn list_brief<'a>(
        &'a self,
        filter: &'a Filter,
    ) -> BoxFuture<'a, Result<Vec<Listed>, StoreError>> {
        // An update's `n` counts those folded away: the last one's is how
        // many the call sent.
        const BRIEF: &str = "task_id, session_id, tool, status, fuel_used, created_at, \
             started_at, ended_at, max(updates_dropped, \
             coalesce((SELECT max(n) FROM updates u WHERE u.task_id = tasks.task_id), 0))";
        Box::pin(async move {
            self.read(|conn| {
                filtered(conn, BRIEF, filter, |row| {
                    Ok(Listed {
                        task_id: row.get(0)?,
                        session_id: row.get(1)?,
                        summary: CallSummary {
                            tool: row.get(2)?,
                            status: read_status(row, 3)?,
                            fuel_used: from_i64(row.get(4)?),
                            created_at: time(row.get(5)?),
                            started_at: row.get::<_, Option<i64>>(6)?.map(time),
                            ended_at: row.get::<_, Option<i64>>(7)?.map(time),
                        },
                        updates: from_i64(row.get(8)?),
                    })
                })
            })
        })
    }

    fn summaries(
        &self,
        since: SystemTime,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<CallSummary>, StoreError>> {
        Box::pin(async move {
            self.read(|conn| {
                let limit = i64::try_from(limit).unwrap_or(i64::MAX);
                conn.prepare_cached(
                    "SELECT tool, status, fuel_used, created_at, started_at, ended_at \
                     FROM tasks WHERE created_at >= ?1 \
                     ORDER BY created_at DESC, rowid DESC LIMIT ?2",
                )?
                .query_map(params![nanos(since), limit], |row| {
                    Ok(CallSummary {
                        tool: row.get(0)?,
                        status: read_status(row, 1)?,
                        fuel_used: from_i64(row.get(2)?),
                        created_at: time(row.get(3)?),
                        started_at: row.get::<_, Option<i64>>(4)?.map(time),
                        ended_at: row.get::<_, Option<i64>>(5)?.map(time),
                    })
                })?
                .collect()
            })
        })
    }

    fn mark_orphans(&self, found_at: SystemTime) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.ask(|reply| Op::Orphans(found_at, reply))
    }

    fn prune(
        &self,
        retention: Retention,
        now: SystemTime,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.ask(|reply| Op::Prune(retention, now, reply))
    }

    fn health(&self) -> Health {
        Health {
            store: "sqlite",
            path: Some(self.path.clone()),
            lasting: true,
            problem: self.shared.problem().clone(),
            lost_writes: self.shared.lost_writes.load(Ordering::Relaxed),
        }
    }
}

/// Set up the writer's connection: WAL, the schema, a check that the file
/// is ours and writable. The error is the reason, for [`StoreError::Open`].
fn prepare_writer(conn: &Connection, options: &StoreOptions) -> Result<(), String> {
    let sql = |e: rusqlite::Error| describe(&e);
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sql)?;
    // The first statement that reads the file: a corrupt one fails here.
    let application_id: i64 = conn
        .pragma_query_value(None, "application_id", |row| row.get(0))
        .map_err(sql)?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sql)?;
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))
        .map_err(sql)?;
    let ours = application_id == APPLICATION_ID;
    if !ours && (application_id != 0 || tables > 0) {
        return Err("it is another program's database, not a toolhost task store".into());
    }
    if version > SCHEMA_VERSION {
        return Err(format!(
            "it was made by a newer toolhost (schema {version}; this one reads {SCHEMA_VERSION})"
        ));
    }
    // Only a file found to be ours is switched to WAL.
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))
        .map_err(sql)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!(
            "cannot use WAL mode here (the journal mode stays `{mode}`)"
        ));
    }
    if conn.is_readonly(rusqlite::MAIN_DB).map_err(sql)? {
        return Err("the file is read-only".into());
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(sql)?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(sql)?;
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
        .map_err(sql)?;

    if !ours {
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {SCHEMA} PRAGMA application_id = {APPLICATION_ID}; \
             PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
        ))
        .map_err(sql)?;
    } else if version < 2 {
        // Schema 1 had no host_id: its live calls count as orphans.
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; ALTER TABLE tasks ADD COLUMN host_id TEXT; \
             PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
        ))
        .map_err(sql)?;
    } else {
        // Take the write lock once, so a file that cannot be written is
        // found now rather than at the first call.
        conn.execute_batch("BEGIN IMMEDIATE; COMMIT;")
            .map_err(sql)?;
    }
    #[cfg(test)]
    if let Some(pages) = options.max_pages {
        conn.pragma_update(None, "max_page_count", pages as i64)
            .map_err(sql)?;
    }
    #[cfg(not(test))]
    let _ = options;
    Ok(())
}

fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "query_only", true)?;
    Ok(conn)
}

/// SQLite's message, with what to do where it helps.
fn describe(e: &rusqlite::Error) -> String {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => {
            format!("{e} (it is not a SQLite file; move it away to start a new store)")
        }
        Some(ErrorCode::DatabaseCorrupt) => {
            format!("{e} (the file is damaged; move it away to start a new store)")
        }
        Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => {
            format!("{e} (the file or its folder cannot be written)")
        }
        Some(ErrorCode::DiskFull) => format!("{e} (free some space)"),
        _ => e.to_string(),
    }
}

/// The writer thread's state: the only connection that writes.
struct Writer {
    conn: Connection,
    /// This store's id ([`Owner`]), recorded with each call it starts.
    owner: String,
    /// Where the hosts' lock files are.
    hosts: PathBuf,
    path: PathBuf,
    shared: Arc<Shared>,
    max_updates: usize,
    /// [`StoreOptions::queue_bytes`].
    queue_bytes: usize,
    retention: Retention,
    prune_every: Option<Duration>,
    /// `PRAGMA synchronous` is FULL (a batch with a durable write) rather
    /// than NORMAL.
    synchronous_full: bool,
}

/// An answer held until its batch commits.
enum Answer {
    Done(Reply<()>, Result<(), StoreError>),
    Count(Reply<u64>, Result<u64, StoreError>),
}

/// Why one operation failed: only its own fault, or the whole batch's.
enum Failure {
    Refused(String),
    /// An end for a task with no live record: its start was never written,
    /// or it has ended already.
    NotLive,
    Fatal(rusqlite::Error),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            // A duplicate task id, an update for a task never recorded.
            Some(ErrorCode::ConstraintViolation) => Failure::Refused(e.to_string()),
            _ => Failure::Fatal(e),
        }
    }
}

impl Writer {
    fn run(mut self, queue: Receiver<(Op, usize)>) {
        let mut next_prune = self.prune_every.map(|_| Instant::now());
        loop {
            if let (Some(at), Some(every)) = (next_prune, self.prune_every)
                && Instant::now() >= at
            {
                self.prune_now();
                next_prune = Some(Instant::now() + every);
            }
            let (first, first_weight) = match next_prune {
                Some(at) => {
                    match queue.recv_timeout(at.saturating_duration_since(Instant::now())) {
                        Ok(sent) => sent,
                        Err(RecvTimeoutError::Timeout) => continue,
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                None => match queue.recv() {
                    Ok(sent) => sent,
                    Err(_) => break,
                },
            };
            // Taken off the queue: room for one more.
            self.shared.queued.fetch_sub(1, Ordering::Relaxed);
            // Group commit: lazy writes wait up to LAZY_WINDOW for company,
            // so a stream of calls costs one commit per window, not three
            // per call. The writer sleeps meanwhile rather than wait on the
            // queue, so the callers' pushes wake nobody; a write somebody
            // waits for wakes it (`SqliteStore::send`) and commits at once,
            // and so does a queue half full by its bytes.
            let mut urgent = first.urgent();
            let mut batch = vec![first];
            // Released once committed: until then the batch holds it.
            let mut weight = first_weight;
            let until = Instant::now() + LAZY_WINDOW;
            loop {
                while batch.len() < MAX_BATCH {
                    match queue.try_recv() {
                        Ok((op, op_weight)) => {
                            // Taken off the queue: room for one more.
                            self.shared.queued.fetch_sub(1, Ordering::Relaxed);
                            urgent |= op.urgent();
                            batch.push(op);
                            weight += op_weight;
                        }
                        Err(TryRecvError::Empty) => break,
                        // The store is dropped: commit what there is now.
                        Err(TryRecvError::Disconnected) => {
                            urgent = true;
                            break;
                        }
                    }
                }
                let now = Instant::now();
                if urgent || batch.len() >= MAX_BATCH || now >= until || self.heavy() {
                    break;
                }
                std::thread::park_timeout(until - now);
            }
            self.commit(batch, weight);
        }
    }

    /// The writes waiting hold half the bytes the queue may: commit them
    /// rather than gather more.
    fn heavy(&self) -> bool {
        self.shared.queued_bytes.load(Ordering::Relaxed) > self.queue_bytes / 2
    }

    /// Apply `batch` in one transaction, free the `weight` of queue bytes
    /// it held, then answer those waiting: one who waited for the batch
    /// (a flush) finds its bytes free.
    fn commit(&mut self, batch: Vec<Op>, weight: usize) {
        let durable = batch.iter().any(Op::durable);
        let writes = batch.iter().filter(|op| op.is_write()).count() as u64;
        let changes = self.conn.total_changes();
        let mut answers = Vec::new();
        let (batch, open) = coalesce(batch);
        let outcome = self.apply(batch, durable, &mut answers);
        self.shared
            .queued_bytes
            .fetch_sub(weight, Ordering::Relaxed);
        match outcome {
            Ok(()) => {
                // Only a batch that wrote something shows that writes are
                // kept again: one of ends whose starts were lost writes
                // nothing, and commits on a full disk.
                let wrote = self.conn.total_changes() > changes;
                if wrote && self.shared.problem().take().is_some() {
                    tracing::info!(path = %self.path.display(), "task records are kept again");
                }
                self.shared.queue_full.store(false, Ordering::Relaxed);
            }
            Err(e) => {
                let reason = describe(&e);
                self.shared.lost_writes.fetch_add(writes, Ordering::Relaxed);
                let mut problem = self.shared.problem();
                if problem.is_none() {
                    tracing::error!(
                        path = %self.path.display(),
                        error = %reason,
                        "task store failing: records are not being kept"
                    );
                }
                *problem = Some(reason.clone());
                drop(problem);
                // Their ends come later, perhaps once commits succeed again.
                self.shared.lost_starts().lose(open.into_keys());
                let failed = StoreError::Failed {
                    path: self.path.clone(),
                    reason,
                };
                for answer in &mut answers {
                    match answer {
                        Answer::Done(_, result) => *result = Err(failed.clone()),
                        Answer::Count(_, result) => *result = Err(failed.clone()),
                    }
                }
            }
        }
        for answer in answers {
            // A caller that stopped waiting is fine: `send` fails, unheard.
            match answer {
                Answer::Done(reply, result) => drop(reply.send(result)),
                Answer::Count(reply, result) => drop(reply.send(result)),
            }
        }
    }

    fn apply(
        &mut self,
        batch: Vec<Op>,
        durable: bool,
        answers: &mut Vec<Answer>,
    ) -> rusqlite::Result<()> {
        let begun = self.sync_for(durable).and_then(|()| {
            (self.conn).transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        });
        let tx = match begun {
            Ok(tx) => tx,
            Err(e) => {
                // Answered with the batch's failure, as below (dropped,
                // their callers would be told the store is closed).
                for op in batch {
                    hold(op, answers);
                }
                return Err(e);
            }
        };
        let ctx = Ctx {
            max_updates: self.max_updates,
            owner: &self.owner,
            hosts: &self.hosts,
            shared: &self.shared,
        };
        let mut failed = None;
        for op in batch {
            if failed.is_some() {
                // Answered with the batch's failure once it rolls back.
                hold(op, answers);
                continue;
            }
            if let Err(e) = apply_one(&tx, op, &ctx, answers) {
                failed = Some(e);
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        tx.commit()
    }

    /// `PRAGMA synchronous` is FULL for a batch with a durable write,
    /// NORMAL otherwise.
    fn sync_for(&mut self, durable: bool) -> rusqlite::Result<()> {
        if durable != self.synchronous_full {
            let mode = if durable { "FULL" } else { "NORMAL" };
            self.conn.pragma_update(None, "synchronous", mode)?;
            self.synchronous_full = durable;
        }
        Ok(())
    }

    /// The periodic prune, in its own transaction.
    fn prune_now(&mut self) {
        let retention = self.retention;
        let result = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .and_then(|tx| {
                let n = prune(&tx, retention, SystemTime::now())?;
                tx.commit().map(|()| n)
            });
        match result {
            Ok(0) => {}
            Ok(pruned) => {
                tracing::info!(path = %self.path.display(), pruned, "task records pruned")
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %describe(&e), "cannot prune task records")
            }
        }
    }
}

/// Fold the later lazy writes of a call started in the same batch into its
/// start: a call that runs between two commits, as most do, costs one
/// INSERT rather than an INSERT and two UPDATEs. What would be refused
/// (a `running` for a call not queued, an end as a live status, a second
/// end) is left as it came, to be refused the same way. Also gives the
/// starts of the batch whose ends are yet to come, by task id.
fn coalesce(batch: Vec<Op>) -> (Vec<Op>, HashMap<String, usize>) {
    let mut out: Vec<Op> = Vec::with_capacity(batch.len());
    // Starts of this batch not yet ended, by task id: where they are in `out`.
    let mut open: HashMap<String, usize> = HashMap::new();
    for op in batch {
        let op = match op {
            Op::Start(record, reply) => {
                if record.finished_at().is_none() {
                    open.insert(record.task_id.clone(), out.len());
                }
                Op::Start(record, reply)
            }
            Op::Running(id, at) => match started(&mut out, &open, &id) {
                Some(call) if call.status == CallStatus::Queued => {
                    call.status = CallStatus::Running;
                    call.started_at = Some(at);
                    continue;
                }
                _ => Op::Running(id, at),
            },
            Op::Update(id, update, fuel_used) => match started(&mut out, &open, &id) {
                Some(call) => {
                    call.updates.push(update);
                    call.fuel_used = fuel_used;
                    continue;
                }
                None => Op::Update(id, update, fuel_used),
            },
            Op::End(id, end, None) if !end.status.is_live() => {
                match started(&mut out, &open, &id) {
                    Some(call) => {
                        call.status = end.status;
                        call.result = end.result;
                        call.error = end.error;
                        call.fuel_used = end.fuel_used;
                        call.ended_at = Some(end.ended_at);
                        open.remove(&id);
                        continue;
                    }
                    None => Op::End(id, end, None),
                }
            }
            // Ended, though not folded: what follows for it is not either.
            Op::End(id, end, Some(reply)) if !end.status.is_live() => {
                open.remove(&id);
                Op::End(id, end, Some(reply))
            }
            op => op,
        };
        out.push(op);
    }
    (out, open)
}

/// The record of the call `task_id` started earlier in the batch.
fn started<'a>(
    out: &'a mut [Op],
    open: &HashMap<String, usize>,
    task_id: &str,
) -> Option<&'a mut CallRecord> {
    match out.get_mut(*open.get(task_id)?) {
        Some(Op::Start(record, _)) => Some(&mut record.call),
        _ => None,
    }
}

/// What a batch's operations need of the writer.
struct Ctx<'a> {
    max_updates: usize,
    owner: &'a str,
    hosts: &'a Path,
    shared: &'a Shared,
}

/// Apply one operation in the batch's transaction; its answer waits for
/// the commit. An error is fatal to the batch; a refused write is not.
fn apply_one(
    tx: &Transaction<'_>,
    op: Op,
    ctx: &Ctx<'_>,
    answers: &mut Vec<Answer>,
) -> rusqlite::Result<()> {
    let max_updates = ctx.max_updates;
    // A refused start or end is worth a warning; a refused update or
    // `running` follows a start that was refused or dropped, already told.
    let (task_id, result, reply, warn) = match op {
        Op::Start(record, reply) => {
            let result = insert(tx, &record, ctx.owner, max_updates);
            (record.task_id, result, reply, true)
        }
        Op::Running(id, at) => {
            let result = set_running(tx, &id, at);
            (id, result, None, false)
        }
        Op::Update(id, update, fuel_used) => {
            let result = append_update(tx, &id, &update, Some(fuel_used), max_updates);
            (id, result, None, false)
        }
        Op::End(id, end, reply) => {
            let result = set_end(tx, &id, &end);
            (id, result, reply, true)
        }
        Op::Flush(reply) | Op::Settle(reply) => {
            answers.push(Answer::Done(reply, Ok(())));
            return Ok(());
        }
        Op::Orphans(at, reply) => {
            return count(mark_orphans(tx, at, ctx), reply, answers);
        }
        Op::Prune(retention, now, reply) => {
            return count(prune(tx, retention, now), reply, answers);
        }
    };
    // The end of a lost start: one line a call for as long as the store
    // fails would drown the line that said why.
    let lost_start = matches!(result, Err(Failure::NotLive)) && ctx.shared.lost_start(&task_id);
    let refused = |reason: String, warn: bool| {
        if warn {
            tracing::warn!(task_id, reason, "task store refused a write");
        } else {
            tracing::debug!(task_id, reason, "task store refused a write");
        }
        (Err(StoreError::Refused { task_id, reason }), None)
    };
    let (outcome, fatal) = match result {
        Ok(()) => (Ok(()), None),
        Err(Failure::Refused(reason)) => refused(reason, warn),
        Err(Failure::NotLive) => refused("no live task by this id".into(), warn && !lost_start),
        // The answer is replaced by the batch's failure.
        Err(Failure::Fatal(e)) => (Ok(()), Some(e)),
    };
    if let Some(reply) = reply {
        answers.push(Answer::Done(reply, outcome));
    }
    fatal.map_or(Ok(()), Err)
}

fn count(
    result: rusqlite::Result<u64>,
    reply: Reply<u64>,
    answers: &mut Vec<Answer>,
) -> rusqlite::Result<()> {
    let n = *result.as_ref().unwrap_or(&0);
    answers.push(Answer::Count(reply, Ok(n)));
    result.map(drop)
}

/// Keep the answer of an operation not applied, to fail it with its batch.
fn hold(op: Op, answers: &mut Vec<Answer>) {
    match op {
        Op::Start(_, Some(reply))
        | Op::End(_, _, Some(reply))
        | Op::Flush(reply)
        | Op::Settle(reply) => {
            answers.push(Answer::Done(reply, Ok(())));
        }
        Op::Orphans(_, reply) | Op::Prune(_, _, reply) => answers.push(Answer::Count(reply, Ok(0))),
        Op::Start(..) | Op::Running(..) | Op::Update(..) | Op::End(..) => {}
    }
}

fn insert(
    tx: &Transaction<'_>,
    record: &TaskRecord,
    owner: &str,
    max_updates: usize,
) -> Result<(), Failure> {
    let call = &record.call;
    let result = call
        .result
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| Failure::Refused(format!("cannot encode the result: {e}")))?;
    tx.prepare_cached(
        "INSERT INTO tasks (task_id, call_id, session_id, tool, arguments, status, result, \
         error, fuel_used, created_at, started_at, ended_at, interrupted_at, finished_at, \
         updates_total, updates_dropped, host_id) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?15, ?16)",
    )?
    .execute(params![
        record.task_id,
        call.call_id,
        call.session_id,
        call.tool,
        crate::call::json_text(&call.arguments),
        call.status.as_str(),
        result,
        call.error,
        to_i64(call.fuel_used),
        nanos(call.created_at),
        call.started_at.map(nanos),
        call.ended_at.map(nanos),
        record.interrupted_at.map(nanos),
        record.finished_at().map(nanos),
        to_i64(record.updates_dropped),
        owner,
    ])?;
    for update in &call.updates {
        append_update(tx, &record.task_id, update, None, max_updates)?;
    }
    Ok(())
}

fn set_running(tx: &Transaction<'_>, task_id: &str, at: SystemTime) -> Result<(), Failure> {
    let changed = tx
        .prepare_cached(
            "UPDATE tasks SET status = 'running', started_at = ?2 \
             WHERE task_id = ?1 AND status = 'queued'",
        )?
        .execute(params![task_id, nanos(at)])?;
    match changed {
        0 => Err(Failure::Refused("no queued task by this id".into())),
        _ => Ok(()),
    }
}

/// Append one update as number `updates_total + 1` (with the call's fuel
/// so far, `fuel_used`; none for an update recorded with its start), then
/// fold the oldest past `max_updates` into `updates_dropped`.
fn append_update(
    tx: &Transaction<'_>,
    task_id: &str,
    update: &UpdateRecord,
    fuel_used: Option<u64>,
    max_updates: usize,
) -> Result<(), Failure> {
    let n: i64 = tx
        .prepare_cached(
            "UPDATE tasks SET updates_total = updates_total + 1, \
             fuel_used = coalesce(?2, fuel_used) WHERE task_id = ?1 \
             RETURNING updates_total",
        )?
        .query_row(params![task_id, fuel_used.map(to_i64)], |row| row.get(0))
        .optional()?
        .ok_or_else(|| Failure::Refused("no task by this id".into()))?;
    tx.prepare_cached("INSERT INTO updates (task_id, n, at, message) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![task_id, n, nanos(update.at), update.message])?;
    let oldest_kept = n - to_i64(max_updates as u64) + 1;
    if oldest_kept > 1 {
        let folded = tx
            .prepare_cached("DELETE FROM updates WHERE task_id = ?1 AND n < ?2")?
            .execute(params![task_id, oldest_kept])?;
        if folded > 0 {
            tx.prepare_cached(
                "UPDATE tasks SET updates_dropped = updates_dropped + ?2 WHERE task_id = ?1",
            )?
            .execute(params![task_id, folded as i64])?;
        }
    }
    Ok(())
}

fn set_end(tx: &Transaction<'_>, task_id: &str, end: &CallEnd) -> Result<(), Failure> {
    if end.status.is_live() {
        return Err(Failure::Refused(format!(
            "a call cannot end as `{}`",
            end.status.as_str()
        )));
    }
    let result = end
        .result
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| Failure::Refused(format!("cannot encode the result: {e}")))?;
    let changed = tx
        .prepare_cached(
            "UPDATE tasks SET status = ?2, result = ?3, error = ?4, fuel_used = ?5, \
             ended_at = ?6, finished_at = ?6 \
             WHERE task_id = ?1 AND finished_at IS NULL",
        )?
        .execute(params![
            task_id,
            end.status.as_str(),
            result,
            end.error,
            to_i64(end.fuel_used),
            nanos(end.ended_at),
        ])?;
    match changed {
        0 => Err(Failure::NotLive),
        _ => Ok(()),
    }
}

/// Mark the live calls of hosts that are gone (see [`Owner`]), never this
/// store's own or those of a host still running.
fn mark_orphans(
    tx: &Transaction<'_>,
    found_at: SystemTime,
    ctx: &Ctx<'_>,
) -> rusqlite::Result<u64> {
    let owners = tx
        .prepare_cached(
            "SELECT DISTINCT host_id FROM tasks WHERE finished_at IS NULL \
             AND host_id IS NOT ?1",
        )?
        .query_map([ctx.owner], |row| row.get::<_, Option<String>>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut n = 0;
    for owner in owners {
        if owner
            .as_deref()
            .is_some_and(|id| !Owner::is_gone(ctx.hosts, id))
        {
            continue;
        }
        n += tx
            .prepare_cached(
                "UPDATE tasks SET status = 'interrupted', interrupted_at = ?1, finished_at = ?1 \
                 WHERE finished_at IS NULL AND host_id IS ?2",
            )?
            .execute(params![nanos(found_at), owner])?;
    }
    Ok(n as u64)
}

fn prune(tx: &Transaction<'_>, retention: Retention, now: SystemTime) -> rusqlite::Result<u64> {
    let cutoff = now.checked_sub(retention.keep).unwrap_or(UNIX_EPOCH);
    let by_age = tx
        .prepare_cached("DELETE FROM tasks WHERE finished_at IS NOT NULL AND finished_at < ?1")?
        .execute([nanos(cutoff)])?;
    let finished: i64 = tx
        .prepare_cached("SELECT count(*) FROM tasks WHERE finished_at IS NOT NULL")?
        .query_row([], |row| row.get(0))?;
    let excess = finished - to_i64(retention.max);
    let by_count = if excess > 0 {
        tx.prepare_cached(
            "DELETE FROM tasks WHERE rowid IN (SELECT rowid FROM tasks \
             WHERE finished_at IS NOT NULL ORDER BY finished_at, rowid LIMIT ?1)",
        )?
        .execute([excess])?
    } else {
        0
    };
    Ok((by_age + by_count) as u64)
}

/// The `tasks` rows `filter` picks, newest first, their `columns` read by
/// `row`.
fn filtered<T>(
    conn: &Connection,
    columns: &str,
    filter: &Filter,
    row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>> {
    let sql = format!(
        "SELECT {columns} FROM tasks \
         WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR tool = ?2) \
           AND (?3 IS NULL OR session_id = ?3) \
           AND (?5 IS NULL OR created_at >= ?5) AND (?6 IS NULL OR created_at < ?6) \
         ORDER BY created_at DESC, rowid DESC LIMIT ?4"
    );
    let limit = i64::try_from(filter.limit).unwrap_or(i64::MAX);
    conn.prepare_cached(&sql)?
        .query_map(
            params![
                filter.status.map(CallStatus::as_str),
                filter.tool,
                filter.session_id,
                limit,
                filter.since.map(nanos),
                filter.until.map(nanos),
            ],
            row,
        )?
        .collect()
}

/// A `tasks` row as read, before its updates.
fn read_task(row: &rusqlite::Row<'_>) -> rusqlite::Result<TaskRecord> {
    let json = |i: usize, text: String| {
        serde_json::from_str::<Value>(&text).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
        })
    };
    let status = read_status(row, 5)?;
    let result = row
        .get::<_, Option<String>>(6)?
        .map(|text| {
            serde_json::from_str::<StoredOutput>(&text).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    6,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })
        })
        .transpose()?
        .map(|o| Output {
            text: o.text,
            data: o.data,
        });
    Ok(TaskRecord {
        task_id: row.get(0)?,
        call: CallRecord {
            call_id: row.get(1)?,
            session_id: row.get(2)?,
            tool: row.get(3)?,
            arguments: Arc::new(json(4, row.get(4)?)?),
            status,
            updates: Vec::new(),
            result: result.map(Arc::new),
            error: row.get(7)?,
            fuel_used: from_i64(row.get(8)?),
            created_at: time(row.get(9)?),
            started_at: row.get::<_, Option<i64>>(10)?.map(time),
            ended_at: row.get::<_, Option<i64>>(11)?.map(time),
        },
        interrupted_at: row.get::<_, Option<i64>>(12)?.map(time),
        updates_dropped: from_i64(row.get(13)?),
    })
}

fn read_status(row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<CallStatus> {
    let status: String = row.get(i)?;
    status.parse::<CallStatus>().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
    })
}

fn with_updates(conn: &Connection, mut record: TaskRecord) -> rusqlite::Result<TaskRecord> {
    record.call.updates = conn
        .prepare_cached("SELECT at, message FROM updates WHERE task_id = ?1 ORDER BY n")?
        .query_map([&record.task_id], |row| {
            Ok(UpdateRecord {
                at: time(row.get(0)?),
                message: row.get(1)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(record)
}

/// [`Output`] as stored: its JSON form read back.
#[derive(Deserialize)]
struct StoredOutput {
    text: Option<String>,
    data: Option<Value>,
}

/// Times are kept as nanoseconds since the Unix epoch, so they read back
/// exactly (until 2262).
fn nanos(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn time(nanos: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(nanos.max(0) as u64)
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn from_i64(n: i64) -> u64 {
    n.max(0) as u64
}

#[cfg(test)]
mod coalesce_tests {
    use super::*;

    fn record(task_id: &str) -> Box<TaskRecord> {
        Box::new(TaskRecord::new(
            task_id.into(),
            CallRecord {
                call_id: "c".into(),
                session_id: "s".into(),
                tool: "t".into(),
                arguments: Arc::new(Value::Null),
                status: CallStatus::Queued,
                updates: Vec::new(),
                result: None,
                error: None,
                fuel_used: 0,
                created_at: UNIX_EPOCH,
                started_at: None,
                ended_at: None,
            },
        ))
    }

    fn end(status: CallStatus) -> Box<CallEnd> {
        Box::new(CallEnd {
            status,
            result: None,
            error: None,
            fuel_used: 3,
            ended_at: UNIX_EPOCH + Duration::from_secs(2),
        })
    }

    #[test]
    fn a_call_started_and_ended_in_one_batch_is_one_insert() {
        let update = UpdateRecord {
            at: UNIX_EPOCH,
            message: "half".into(),
        };
        let batch = vec![
            Op::Start(record("a"), None),
            Op::Running("a".into(), UNIX_EPOCH + Duration::from_secs(1)),
            Op::Update("a".into(), update.clone(), 2),
            // Another call's writes stay as they are.
            Op::Update("b".into(), update.clone(), 0),
            Op::End("a".into(), end(CallStatus::Done), None),
            // What would be refused is left to be refused.
            Op::End("a".into(), end(CallStatus::Error), None),
            Op::Running("a".into(), UNIX_EPOCH),
        ];
        let (out, _) = coalesce(batch);
        let [
            Op::Start(a, None),
            Op::Update(b, _, _),
            Op::End(again, _, None),
            Op::Running(late, _),
        ] = out.as_slice()
        else {
            panic!("{out:?}");
        };
        assert_eq!((b.as_str(), again.as_str(), late.as_str()), ("b", "a", "a"));
        let call = &a.call;
        assert_eq!(call.status, CallStatus::Done);
        assert_eq!(call.started_at, Some(UNIX_EPOCH + Duration::from_secs(1)));
        assert_eq!(call.updates, [update]);
        assert_eq!(call.fuel_used, 3);
        assert_eq!(call.ended_at, Some(UNIX_EPOCH + Duration::from_secs(2)));
    }

    #[test]
    fn an_end_somebody_waits_for_or_a_live_end_is_not_folded() {
        let (reply, _answer) = oneshot::channel();
        let (out, _) = coalesce(vec![
            Op::Start(record("a"), None),
            Op::End("a".into(), end(CallStatus::Running), None),
            Op::End("a".into(), end(CallStatus::Done), Some(reply)),
        ]);
        assert_eq!(out.len(), 3, "{out:?}");
    }

    #[test]
    fn what_follows_an_end_somebody_waits_for_is_not_folded_either() {
        let (reply, _answer) = oneshot::channel();
        let update = UpdateRecord {
            at: UNIX_EPOCH,
            message: "late".into(),
        };
        let (out, _) = coalesce(vec![
            Op::Start(record("a"), None),
            Op::End("a".into(), end(CallStatus::Done), Some(reply)),
            Op::Update("a".into(), update, 4),
        ]);
        let [Op::Start(a, None), Op::End(..), Op::Update(..)] = out.as_slice() else {
            panic!("{out:?}");
        };
        assert!(a.call.updates.is_empty(), "{a:?}");
    }

    #[test]
    fn the_batch_names_its_starts_whose_ends_are_yet_to_come() {
        let (reply, _answer) = oneshot::channel();
        let (_, open) = coalesce(vec![
            Op::Start(record("ended"), None),
            Op::End("ended".into(), end(CallStatus::Done), None),
            Op::Start(record("waited-for"), None),
            Op::End("waited-for".into(), end(CallStatus::Done), Some(reply)),
            Op::Start(record("live"), None),
            Op::End("live".into(), end(CallStatus::Running), None),
        ]);
        assert_eq!(open.into_keys().collect::<Vec<_>>(), ["live"]);
    }
}
