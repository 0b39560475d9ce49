//! A task store that is still opening: the host serves meanwhile, and the
//! records it writes wait, in order and bounded, until the store is there.
//!
//! Opening a new SQLite store syncs its file several times (3 ms and more
//! here); nothing a client asks first (`initialize`, `tools/list`) needs
//! it, so a start need not wait for it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use futures::future::BoxFuture;
use tokio::sync::{SetOnce, oneshot};

use super::{
    CallEnd, CallSummary, Durability, Filter, Health, Listed, LostStarts, MemoryStore, Retention,
    StoreError, StoreOptions, TaskRecord, TaskStore, Ticket, arguments_and_result, update_weight,
};
use crate::records::UpdateRecord;
use crate::startup::SetUpGate;

/// A [`TaskStore`] whose store is opened by a task of its own, once the
/// host's start lets it or it is first used (see [`crate::startup`]).
///
/// Until it opens, writes wait in a queue of at most
/// [`StoreOptions::queue`] writes and [`StoreOptions::queue_bytes`] bytes
/// (past it they are dropped and counted, as a full store queue does), a
/// durable write's ticket resolves once the
/// store has taken the write, and reads wait for the store. Once it opens,
/// the waiting writes go to it in the order they came, and every call is
/// forwarded, but for the ends of the starts it dropped: those are refused
/// here, at debug level, since the drop was logged (B31).
#[derive(Debug)]
pub(crate) struct OpeningStore {
    store: SetOnce<Arc<dyn TaskStore>>,
    waiting: Mutex<Waiting>,
    /// [`Waiting::dropped_starts`] holds an id; written only under the
    /// lock. An end looks at it first: until the calls whose starts were
    /// dropped have all ended, each end takes the lock to look for its id.
    dropped_any: AtomicBool,
    bound: usize,
    bound_bytes: usize,
    /// Opened when the store's opening may begin: by the host's start,
    /// or by the first call here (see [`crate::startup`]).
    begin: SetUpGate,
}

#[derive(Debug, Default)]
struct Waiting {
    writes: Vec<Deferred>,
    /// What `writes` weigh.
    bytes: usize,
    lost: u64,
    /// The full queue was logged (once, by the first write or flush that
    /// found it full).
    told: bool,
    /// The starts dropped: the store never saw them, and would warn of
    /// each end.
    dropped_starts: LostStarts,
}

type Reply = oneshot::Sender<Result<(), StoreError>>;

/// What a call to the store is, for how it waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A write nobody waits for.
    Lazy,
    /// A write whose ticket resolves once the store has it.
    Durable,
    /// A flush or settle: waited for, and not a write to lose.
    Barrier,
}

impl From<Durability> for Kind {
    fn from(durability: Durability) -> Self {
        match durability {
            Durability::Lazy => Kind::Lazy,
            Durability::Durable => Kind::Durable,
        }
    }
}

#[derive(Debug)]
enum Deferred {
    Start(TaskRecord, Durability, Option<Reply>),
    Running(String, SystemTime),
    Update(String, UpdateRecord, u64),
    End(String, CallEnd, Durability, Option<Reply>),
    Flush(Reply),
    Settle(Reply),
}

impl OpeningStore {
    /// Open the store with `opening` on a task of its own once `begin`
    /// opens, which any call here does, and serve as [`OpeningStore`]
    /// says meanwhile. An opening that panics leaves a [`MemoryStore`]
    /// whose health says so.
    pub(crate) fn spawn(
        opening: impl Future<Output = Arc<dyn TaskStore>> + Send + 'static,
        options: StoreOptions,
        begin: SetUpGate,
    ) -> Arc<Self> {
        let this = Arc::new(OpeningStore {
            store: SetOnce::new(),
            waiting: Mutex::default(),
            dropped_any: AtomicBool::new(false),
            bound: options.queue.max(1),
            bound_bytes: options.queue_bytes,
            begin: begin.clone(),
        });
        let opened = this.clone();
        tokio::spawn(async move {
            if !begin.wait().await {
                // The host was dropped before anything used its store:
                // whoever still holds it reads an empty one that says so.
                let why = "the host was dropped before its task store opened";
                opened.opened(Arc::new(MemoryStore::fallback(options, why.into())));
                return;
            }
            // A task of its own, so that a panic is caught.
            let store = tokio::spawn(opening).await.unwrap_or_else(|e| {
                tracing::error!(error = %e, "opening the task store failed");
                Arc::new(MemoryStore::fallback(
                    options,
                    format!("opening the task store failed: {e}"),
                ))
            });
            opened.opened(store);
        });
        this
    }

    /// The store is open: hand it what waited, then let every call through.
    fn opened(&self, store: Arc<dyn TaskStore>) {
        let mut waiting = self.waiting();
        let mut answers = Vec::new();
        waiting.bytes = 0;
        for write in std::mem::take(&mut waiting.writes) {
            let (ticket, reply) = match write {
                Deferred::Start(record, durability, reply) => {
                    (store.start(record, durability), reply)
                }
                Deferred::Running(task_id, at) => {
                    store.running(&task_id, at);
                    continue;
                }
                Deferred::Update(task_id, update, fuel) => {
                    store.update(&task_id, update, fuel);
                    continue;
                }
                Deferred::End(task_id, end, durability, reply) => {
                    (store.end(&task_id, end, durability), reply)
                }
                Deferred::Flush(reply) => (store.flush(), Some(reply)),
                Deferred::Settle(reply) => (store.settle(), Some(reply)),
            };
            answers.extend(reply.map(|reply| (ticket, reply)));
        }
        // Set under the lock: a write that found no store waits for the
        // lock, then finds it, so none lands behind a later one. Tickets
        // are answered after it, so whoever a ticket wakes finds the store
        // open.
        let _ = self.store.set(store);
        drop(waiting);
        for (ticket, reply) in answers {
            tokio::spawn(async move {
                let _ = reply.send(ticket.await);
            });
        }
    }

    fn waiting(&self) -> MutexGuard<'_, Waiting> {
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `forward` `value` to the open store, or queue what `defer` makes of
    /// it and a reply (given unless `kind` is lazy), weighing `weight`
    /// bytes (measured only if it waits). The task id `start_id` finds
    /// in a start is remembered if it is dropped.
    fn write<T>(
        &self,
        kind: Kind,
        start_id: impl FnOnce(&T) -> Option<String>,
        value: T,
        weight: impl FnOnce(&T) -> usize,
        forward: impl FnOnce(&dyn TaskStore, T) -> Ticket,
        defer: impl FnOnce(T, Option<Reply>) -> Deferred,
    ) -> Ticket {
        if let Some(store) = self.store.get() {
            return forward(store.as_ref(), value);
        }
        // Every write begins the opening, so before it has begun nothing
        // waits to be flushed or settled: a barrier does not begin it (a
        // command that ends before it used its store does not open it to
        // flush it).
        if kind == Kind::Barrier && !self.begin.is_open() {
            return Ticket::ready(Ok(()));
        }
        self.begin.open();
        let mut waiting = self.waiting();
        if let Some(store) = self.store.get() {
            return forward(store.as_ref(), value);
        }
        let weight = weight(&value);
        let full = if waiting.writes.len() >= self.bound {
            Some(StoreError::Full(self.bound))
        } else if weight > 0 && waiting.bytes > 0 && waiting.bytes + weight > self.bound_bytes {
            Some(StoreError::FullBytes(self.bound_bytes))
        } else {
            None
        };
        if let Some(full) = full {
            if kind != Kind::Barrier {
                waiting.lost += 1;
            }
            if let Some(task_id) = start_id(&value) {
                waiting.dropped_starts.lose(std::iter::once(task_id));
                self.dropped_any.store(true, Ordering::Release);
            }
            if !std::mem::replace(&mut waiting.told, true) {
                tracing::warn!(
                    queue = self.bound,
                    queue_bytes = self.bound_bytes,
                    "the task store is still opening and its queue is full: dropping records"
                );
            }
            return Ticket::ready(Err(full));
        }
        waiting.bytes += weight;
        if kind == Kind::Lazy {
            waiting.writes.push(defer(value, None));
            Ticket::ready(Ok(()))
        } else {
            let (reply, ticket) = Ticket::waiting();
            waiting.writes.push(defer(value, Some(reply)));
            ticket
        }
    }

    async fn open(&self) -> &dyn TaskStore {
        self.begin.open();
        self.store.wait().await.as_ref()
    }

    /// Whether the start of `task_id` was dropped; forgotten as its end
    /// asks.
    fn dropped_start(&self, task_id: &str) -> bool {
        if !self.dropped_any.load(Ordering::Acquire) {
            return false;
        }
        let mut waiting = self.waiting();
        let dropped = waiting.dropped_starts.forget(task_id);
        if waiting.dropped_starts.is_empty() {
            self.dropped_any.store(false, Ordering::Release);
        }
        dropped
    }
}

impl TaskStore for OpeningStore {
    fn start(&self, record: TaskRecord, durability: Durability) -> Ticket {
        self.write(
            durability.into(),
            |record| Some(record.task_id.clone()),
            record,
            |record| record.weight(arguments_and_result(record)),
            |store, record| store.start(record, durability),
            |record, reply| Deferred::Start(record, durability, reply),
        )
    }

    fn running(&self, task_id: &str, at: SystemTime) {
        let _ = self.write(
            Kind::Lazy,
            |_| None,
            at,
            |_| std::mem::size_of::<Deferred>() + task_id.len(),
            |store, at| {
                store.running(task_id, at);
                Ticket::ready(Ok(()))
            },
            |at, _| Deferred::Running(task_id.to_owned(), at),
        );
    }

    fn update(&self, task_id: &str, update: UpdateRecord, fuel_used: u64) {
        let _ = self.write(
            Kind::Lazy,
            |_| None,
            update,
            |update| update_weight(task_id, update),
            |store, update| {
                store.update(task_id, update, fuel_used);
                Ticket::ready(Ok(()))
            },
            |update, _| Deferred::Update(task_id.to_owned(), update, fuel_used),
        );
    }

    fn end(&self, task_id: &str, end: CallEnd, durability: Durability) -> Ticket {
        if self.dropped_start(task_id) {
            let reason = "no live task by this id: its start was dropped while the store opened";
            tracing::debug!(task_id, reason, "task store refused a write");
            return Ticket::ready(Err(StoreError::Refused {
                task_id: task_id.to_owned(),
                reason: reason.into(),
            }));
        }
        self.write(
            durability.into(),
            |_| None,
            end,
            |end| end.weight(task_id),
            |store, end| store.end(task_id, end, durability),
            |end, reply| Deferred::End(task_id.to_owned(), end, durability, reply),
        )
    }

    fn flush(&self) -> Ticket {
        self.write(
            Kind::Barrier,
            |_| None,
            (),
            |()| 0,
            |store, ()| store.flush(),
            |(), reply| Deferred::Flush(reply.expect("a barrier has a reply")),
        )
    }

    fn settle(&self) -> Ticket {
        self.write(
            Kind::Barrier,
            |_| None,
            (),
            |()| 0,
            |store, ()| store.settle(),
            |(), reply| Deferred::Settle(reply.expect("a barrier has a reply")),
        )
    }

    fn get<'a>(
        &'a self,
        task_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<TaskRecord>, StoreError>> {
        Box::pin(async move { self.open().await.get(task_id).await })
    }

    fn list<'a>(
        &'a self,
        filter: &'a Filter,
    ) -> BoxFuture<'a, Result<Vec<TaskRecord>, StoreError>> {
        Box::pin(async move { self.open().await.list(filter).await })
    }

    fn list_brief<'a>(
        &'a self,
        filter: &'a Filter,
    ) -> BoxFuture<'a, Result<Vec<Listed>, StoreError>> {
        Box::pin(async move { self.open().await.list_brief(filter).await })
    }

    fn summaries(
        &self,
        since: SystemTime,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<CallSummary>, StoreError>> {
        Box::pin(async move { self.open().await.summaries(since, limit).await })
    }

    fn mark_orphans(&self, found_at: SystemTime) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move { self.open().await.mark_orphans(found_at).await })
    }

    fn prune(
        &self,
        retention: Retention,
        now: SystemTime,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move { self.open().await.prune(retention, now).await })
    }

    fn health(&self) -> Health {
        let lost = self.waiting().lost;
        match self.store.get() {
            Some(store) => {
                let mut health = store.health();
                health.lost_writes += lost;
                health
            }
            None => Health {
                store: "opening",
                path: None,
                lasting: false,
                problem: Some("the task store is still opening".into()),
                lost_writes: lost,
            },
        }
    }
}
