//! The in-memory task store: the same interface, nothing kept after exit.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;

use super::{
    CallEnd, CallSummary, Durability, Filter, Health, Retention, StoreError, StoreOptions,
    TaskRecord, TaskStore, Ticket, arguments_and_result,
};
use crate::records::{CallStatus, UpdateRecord, output_weight};

/// Task records in memory, for `--no-state`, embedders, and a host whose
/// store file cannot be opened.
///
/// Bounded: it keeps every live record (the host bounds how many calls
/// run) and at most [`StoreOptions::memory_records`] finished ones (default
/// [`DEFAULT_MEMORY_RECORDS`](super::DEFAULT_MEMORY_RECORDS)) weighing at
/// most [`StoreOptions::memory_bytes`] (default
/// [`DEFAULT_MEMORY_BYTES`](super::DEFAULT_MEMORY_BYTES); the newest is
/// kept whatever it weighs), dropping the one that finished first. It prunes by [`StoreOptions::retention`] on a
/// write once [`StoreOptions::prune_every`] has passed since the last time.
#[derive(Debug)]
pub struct MemoryStore {
    state: Mutex<State>,
    max_updates: usize,
    max_finished: usize,
    max_bytes: usize,
    retention: Retention,
    prune_every: Option<std::time::Duration>,
    /// Why a lasting store could not be used, for [`TaskStore::health`].
    problem: Option<String>,
}

#[derive(Debug)]
struct State {
    records: HashMap<String, Entry>,
    /// Finished records by when they finished, then by when they came.
    finished: BTreeSet<(SystemTime, u64, String)>,
    /// What the finished records weigh together.
    finished_weight: usize,
    next_seq: u64,
    last_prune: Instant,
}

#[derive(Debug)]
struct Entry {
    /// Order of arrival: breaks ties between equal times.
    seq: u64,
    record: TaskRecord,
    /// What its arguments and result weigh, measured before the lock.
    heavy: usize,
    /// What it weighs, once finished ([`TaskRecord::weight`]).
    weight: usize,
}

impl MemoryStore {
    pub fn new(options: StoreOptions) -> Self {
        MemoryStore {
            state: Mutex::new(State {
                records: HashMap::new(),
                finished: BTreeSet::new(),
                finished_weight: 0,
                next_seq: 0,
                last_prune: Instant::now(),
            }),
            max_updates: options.max_updates.max(1),
            max_finished: options.memory_records.max(1),
            max_bytes: options.memory_bytes,
            retention: options.retention,
            prune_every: options.prune_every,
            problem: None,
        }
    }

    /// A memory store standing in for a lasting one that failed to open;
    /// its health says records are not kept, and `why`.
    pub fn fallback(options: StoreOptions, why: String) -> Self {
        MemoryStore {
            problem: Some(format!("{why}; records are kept in memory only")),
            ..MemoryStore::new(options)
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Apply `change` to the record `task_id`, which adds `heavier` bytes
    /// of result to it, then index it if it finished and keep the bounds.
    fn change(
        &self,
        task_id: &str,
        heavier: usize,
        change: impl FnOnce(&mut TaskRecord, usize) -> Result<(), String>,
    ) -> Result<(), StoreError> {
        let refused = |reason: String| StoreError::Refused {
            task_id: task_id.to_owned(),
            reason,
        };
        let mut state = self.state();
        let entry = state
            .records
            .get_mut(task_id)
            .ok_or_else(|| refused("no task by this id".into()))?;
        let was_finished = entry.record.finished_at();
        change(&mut entry.record, self.max_updates).map_err(refused)?;
        entry.heavy += heavier;
        if let (None, Some(at)) = (was_finished, entry.record.finished_at()) {
            entry.weight = entry.record.weight(entry.heavy);
            let (seq, weight) = (entry.seq, entry.weight);
            state.finished.insert((at, seq, task_id.to_owned()));
            state.finished_weight += weight;
        }
        self.keep_bounds(&mut state);
        Ok(())
    }

    fn keep_bounds(&self, state: &mut State) {
        while state.finished.len() > self.max_finished
            || (state.finished.len() > 1 && state.finished_weight > self.max_bytes)
        {
            remove_first(state);
        }
        if let Some(every) = self.prune_every
            && state.last_prune.elapsed() >= every
        {
            prune(state, self.retention, SystemTime::now());
            state.last_prune = Instant::now();
        }
    }
}

fn remove_first(state: &mut State) -> bool {
    match state.finished.pop_first() {
        Some((_, _, task_id)) => match state.records.remove(&task_id) {
            Some(entry) => {
                state.finished_weight -= entry.weight;
                true
            }
            None => false,
        },
        None => false,
    }
}

fn prune(state: &mut State, retention: Retention, now: SystemTime) -> u64 {
    let cutoff = now.checked_sub(retention.keep).unwrap_or(UNIX_EPOCH);
    let mut pruned = 0;
    while state
        .finished
        .first()
        .is_some_and(|(at, _, _)| *at < cutoff)
    {
        pruned += u64::from(remove_first(state));
    }
    while state.finished.len() as u64 > retention.max {
        pruned += u64::from(remove_first(state));
    }
    pruned
}

/// Push `update`, folding the oldest past `max` into `updates_dropped`.
fn push_update(record: &mut TaskRecord, update: UpdateRecord, max: usize) {
    let updates = &mut record.call.updates;
    updates.push(update);
    if updates.len() > max {
        let folded = updates.len() - max;
        updates.drain(..folded);
        record.updates_dropped += folded as u64;
    }
}

impl TaskStore for MemoryStore {
    fn start(&self, mut record: TaskRecord, _durability: Durability) -> Ticket {
        let updates = std::mem::take(&mut record.call.updates);
        for update in updates {
            push_update(&mut record, update, self.max_updates);
        }
        // Measured before the lock: arguments may be megabytes of JSON.
        let heavy = arguments_and_result(&record);
        let mut state = self.state();
        if state.records.contains_key(&record.task_id) {
            return Ticket::ready(Err(StoreError::Refused {
                task_id: record.task_id,
                reason: "a task by this id is already recorded".into(),
            }));
        }
        let seq = state.next_seq;
        state.next_seq += 1;
        let mut weight = 0;
        if let Some(at) = record.finished_at() {
            weight = record.weight(heavy);
            state.finished.insert((at, seq, record.task_id.clone()));
            state.finished_weight += weight;
        }
        let entry = Entry {
            seq,
            record,
            heavy,
            weight,
        };
        state.records.insert(entry.record.task_id.clone(), entry);
        self.keep_bounds(&mut state);
        Ticket::ready(Ok(()))
    }

    fn running(&self, task_id: &str, at: SystemTime) {
        let _ = self.change(task_id, 0, |record, _| {
            if record.call.status != CallStatus::Queued {
                return Err("no queued task by this id".into());
            }
            record.call.status = CallStatus::Running;
            record.call.started_at = Some(at);
            Ok(())
        });
    }

    fn update(&self, task_id: &str, update: UpdateRecord, fuel_used: u64) {
        let _ = self.change(task_id, 0, |record, max| {
            push_update(record, update, max);
            record.call.fuel_used = fuel_used;
            Ok(())
        });
    }

    fn end(&self, task_id: &str, end: CallEnd, _durability: Durability) -> Ticket {
        let result = end.result.as_deref().map_or(0, output_weight);
        Ticket::ready(self.change(task_id, result, |record, _| {
            if end.status.is_live() {
                return Err(format!("a call cannot end as `{}`", end.status.as_str()));
            }
            if !record.call.status.is_live() {
                return Err("no live task by this id".into());
            }
            let call = &mut record.call;
            call.status = end.status;
            call.result = end.result;
            call.error = end.error;
            call.fuel_used = end.fuel_used;
            call.ended_at = Some(end.ended_at);
            Ok(())
        }))
    }

    fn flush(&self) -> Ticket {
        Ticket::ready(Ok(()))
    }

    fn settle(&self) -> Ticket {
        Ticket::ready(Ok(()))
    }

    fn get<'a>(
        &'a self,
        task_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<TaskRecord>, StoreError>> {
        let record = self.state().records.get(task_id).map(|e| e.record.clone());
        Box::pin(std::future::ready(Ok(record)))
    }

    fn list<'a>(
        &'a self,
        filter: &'a Filter,
    ) -> BoxFuture<'a, Result<Vec<TaskRecord>, StoreError>> {
        let state = self.state();
        let mut found: Vec<&Entry> = state
            .records
            .values()
            .filter(|e| filter.matches(&e.record.call))
            .collect();
        found.sort_by_key(|e| std::cmp::Reverse((e.record.call.created_at, e.seq)));
        let records = found
            .into_iter()
            .take(filter.limit)
            .map(|e| e.record.clone())
            .collect();
        Box::pin(std::future::ready(Ok(records)))
    }

    fn summaries(
        &self,
        since: SystemTime,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<CallSummary>, StoreError>> {
        let state = self.state();
        let mut found: Vec<&Entry> = (state.records.values())
            .filter(|e| e.record.call.created_at >= since)
            .collect();
        found.sort_by_key(|e| std::cmp::Reverse((e.record.call.created_at, e.seq)));
        let summaries = (found.into_iter().take(limit))
            .map(|e| CallSummary::of(&e.record.call))
            .collect();
        Box::pin(std::future::ready(Ok(summaries)))
    }

    /// Every record of a memory store is this process's own, kept by a
    /// host that is running: none is an orphan.
    fn mark_orphans(&self, _found_at: SystemTime) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(std::future::ready(Ok(0)))
    }

    fn prune(
        &self,
        retention: Retention,
        now: SystemTime,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        let pruned = prune(&mut self.state(), retention, now);
        Box::pin(std::future::ready(Ok(pruned)))
    }

    fn health(&self) -> Health {
        Health {
            store: "memory",
            path: None,
            lasting: false,
            problem: self.problem.clone(),
            lost_writes: 0,
        }
    }
}
