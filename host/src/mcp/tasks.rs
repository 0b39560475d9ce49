//! A table of tasks (the MCP tasks extension, SEP-2663): which call each
//! task follows, its state while the call runs, and its result once the
//! call ended. A stdio connection and a legacy HTTP session each have one;
//! the sessionless requests of an HTTP server share one, where a task is
//! found by its id alone.
//!
//! The ids are random (UUID v4), since a task id is all a client needs to
//! read a task. A finished task is kept for the TTL after its end, and at
//! most `max` tasks are kept: the oldest finished ones go first. A running
//! one is kept until it ends (its call is bounded by the tool's timeout);
//! a table full of running tasks refuses new ones. The results kept weigh
//! at most `max_bytes` together: past it the oldest finished tasks go,
//! all but the newest. A call that may become
//! a task holds a [`Reservation`] from its start, so calls started
//! together cannot all find room and then overfill the table.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime};

use rmcp::model::{DetailedTask, JsonObject, Task, TaskPayload, TaskStatus};

use super::McpOptions;
use super::connection::Connection;
use crate::records::{CallStatus, TaskRecord};

struct Entry {
    call_id: String,
    /// The connection whose session runs the call; weak, so that a task
    /// kept after its end keeps nothing of its session alive.
    connection: Weak<Connection>,
    task: Task,
    payload: TaskPayload,
    ended: Option<Instant>,
    /// What its payload weighs ([`payload_weight`]), once it ended.
    weight: usize,
}

/// Room for one task in a [`Tasks`] table, counted as a running task
/// while held.
pub(crate) struct Reservation(Arc<AtomicUsize>);

impl Drop for Reservation {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A task found by its id: what `tasks/get` answers, and what
/// `tasks/cancel` needs to reach its call.
pub(crate) struct Found {
    pub(crate) task: DetailedTask,
    pub(crate) call_id: String,
    /// Gone once the call ended and its connection closed.
    pub(crate) connection: Weak<Connection>,
}

pub(crate) struct Tasks {
    entries: Mutex<HashMap<String, Entry>>,
    /// Reservations held (each counts as a running task); raised only
    /// under `entries`' lock.
    reserved: Arc<AtomicUsize>,
    poll_interval: Duration,
    ttl: Duration,
    max: usize,
    max_bytes: usize,
}

impl Tasks {
    pub(crate) fn new(
        poll_interval: Duration,
        ttl: Duration,
        max: usize,
        max_bytes: usize,
    ) -> Self {
        Self {
            entries: Mutex::default(),
            reserved: Arc::default(),
            poll_interval,
            ttl,
            max: max.max(1),
            max_bytes,
        }
    }

    /// The table `options` describe.
    pub(crate) fn for_connection(options: &McpOptions) -> Self {
        Self::new(
            options.task_poll_interval,
            options.task_ttl,
            options.max_tasks,
            options.max_task_bytes,
        )
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let ttl = self.ttl;
        entries.retain(|_, e| e.ended.is_none_or(|at| at.elapsed() < ttl));
        entries
    }

    /// The most tasks kept at once.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Room for one more task, held until [`Tasks::create`] takes it or
    /// it is dropped; `None` when the running tasks and the reservations
    /// held fill the table.
    pub(crate) fn reserve(&self) -> Option<Reservation> {
        let entries = self.entries();
        let running = entries.values().filter(|e| e.ended.is_none()).count();
        // Raised under the lock: two calls cannot both take the last place.
        if running + self.reserved.load(Ordering::SeqCst) >= self.max {
            return None;
        }
        self.reserved.fetch_add(1, Ordering::SeqCst);
        Some(Reservation(self.reserved.clone()))
    }

    /// A new working task `task_id` (the call's id in the task store,
    /// random) that follows `call_id` of `connection`'s session, in the
    /// room `reservation` held, making room by dropping the oldest
    /// finished tasks.
    pub(crate) fn create(
        &self,
        reservation: Reservation,
        connection: Weak<Connection>,
        task_id: String,
        call_id: &str,
        status_message: Option<String>,
    ) -> Task {
        let now = timestamp();
        let mut task = Task::new(task_id, TaskStatus::Working, now.clone(), now)
            .with_ttl_ms(millis(self.ttl))
            .with_poll_interval_ms(millis(self.poll_interval));
        task.status_message = status_message;
        let mut entries = self.entries();
        if entries.len() >= self.max {
            let excess = entries.len() + 1 - self.max;
            for (_, id, _) in oldest_finished(&entries, None).into_iter().take(excess) {
                entries.remove(&id);
            }
        }
        entries.insert(
            task.task_id.clone(),
            Entry {
                call_id: call_id.to_owned(),
                connection,
                task: task.clone(),
                payload: TaskPayload::Working,
                ended: None,
                weight: 0,
            },
        );
        // Counted as running now: given back under the lock.
        drop(reservation);
        task
    }

    /// The latest update of a working task.
    pub(crate) fn set_message(&self, task_id: &str, message: String) {
        if let Some(e) = self.entries().get_mut(task_id)
            && e.ended.is_none()
        {
            e.task.status_message = Some(message);
            e.task.last_updated_at = timestamp();
        }
    }

    /// The task's call ended: `payload` is terminal. Past `max_bytes` of
    /// results kept, the oldest finished tasks are dropped, all but this
    /// one.
    pub(crate) fn finish(&self, task_id: &str, payload: TaskPayload, message: Option<String>) {
        // Weighed, and what it drops freed, outside the table's lock.
        let weight = payload_weight(&payload);
        let mut dropped = Vec::new();
        let mut entries = self.entries();
        let Some(e) = entries.get_mut(task_id).filter(|e| e.ended.is_none()) else {
            return;
        };
        e.task.status = payload.status();
        e.task.status_message = message;
        e.task.last_updated_at = timestamp();
        e.weight = weight;
        e.payload = payload;
        e.ended = Some(Instant::now());
        let mut kept: usize = entries.values().map(|e| e.weight).sum();
        if kept <= self.max_bytes {
            return;
        }
        for (_, id, weight) in oldest_finished(&entries, Some(task_id)) {
            if kept <= self.max_bytes {
                break;
            }
            dropped.extend(entries.remove(&id));
            kept -= weight;
        }
        drop(entries);
        drop(dropped);
    }

    /// The task `task_id`, if kept.
    pub(crate) fn find(&self, task_id: &str) -> Option<Found> {
        self.entries().get(task_id).map(|e| Found {
            task: DetailedTask::new(e.task.clone(), e.payload.clone()),
            call_id: e.call_id.clone(),
            connection: e.connection.clone(),
        })
    }
}

/// The task of a call read back from the task store (B31): `working`
/// while it runs (in another host), how it ended once it ended, and
/// `failed` for a call the host was stopped in.
pub(crate) fn stored(record: &TaskRecord, options: &McpOptions) -> DetailedTask {
    let call = &record.call;
    let created = humantime::format_rfc3339_millis(call.created_at).to_string();
    let updated = call
        .ended_at
        .or(record.interrupted_at)
        .or(call.updates.last().map(|u| u.at))
        .unwrap_or(call.created_at);
    let (payload, message) = match call.status {
        CallStatus::Queued | CallStatus::Running => (
            TaskPayload::Working,
            call.updates.last().map(|u| u.message.clone()),
        ),
        CallStatus::Interrupted => {
            let message = "interrupted: the host stopped while the call ran".to_owned();
            (
                TaskPayload::Failed {
                    error: match serde_json::json!({ "code": -32603, "message": message }) {
                        serde_json::Value::Object(o) => o,
                        _ => JsonObject::new(),
                    },
                },
                Some(message),
            )
        }
        status => {
            let answer = crate::session::ending_answer(
                &call.call_id,
                &call.tool,
                status,
                call.result.as_deref(),
                call.error.as_deref(),
            );
            super::convert::task_end(status, answer.as_ref())
        }
    };
    let mut task = Task::new(
        record.task_id.clone(),
        payload.status(),
        created,
        humantime::format_rfc3339_millis(updated).to_string(),
    )
    .with_ttl_ms(millis(options.task_ttl))
    .with_poll_interval_ms(millis(options.task_poll_interval));
    task.status_message = message;
    DetailedTask::new(task, payload)
}

/// The finished tasks of `entries` but `except`, oldest first: when each
/// ended, its id and what it weighs.
fn oldest_finished(
    entries: &HashMap<String, Entry>,
    except: Option<&str>,
) -> Vec<(Instant, String, usize)> {
    let mut finished: Vec<(Instant, String, usize)> = entries
        .iter()
        .filter(|(id, _)| Some(id.as_str()) != except)
        .filter_map(|(id, e)| e.ended.map(|at| (at, id.clone(), e.weight)))
        .collect();
    finished.sort_unstable();
    finished
}

/// What a finished task's payload holds, about as it sits in memory.
fn payload_weight(payload: &TaskPayload) -> usize {
    let map = |m: &JsonObject| {
        m.iter()
            .map(|(k, v)| k.len() + crate::records::json_weight(v))
            .sum::<usize>()
    };
    match payload {
        TaskPayload::Completed { result } => map(result),
        TaskPayload::Failed { error } => map(error),
        _ => 0,
    }
}

fn timestamp() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::new_task_id;

    #[test]
    fn a_task_goes_from_working_to_its_end_and_is_kept_for_the_ttl() {
        let tasks = Tasks::new(
            Duration::from_millis(100),
            Duration::from_millis(50),
            10,
            1 << 20,
        );
        let room = tasks.reserve().expect("room");
        let task = tasks.create(
            room,
            Weak::new(),
            new_task_id(),
            "call_1",
            Some("step 1".into()),
        );
        assert_eq!(task.status, TaskStatus::Working);
        assert_eq!(
            tasks.find(&task.task_id).map(|f| f.call_id).as_deref(),
            Some("call_1")
        );
        tasks.set_message(&task.task_id, "step 2".into());
        let got = tasks.find(&task.task_id).expect("task").task;
        assert_eq!(got.task.status_message.as_deref(), Some("step 2"));
        assert_eq!(got.status(), TaskStatus::Working);

        tasks.finish(
            &task.task_id,
            TaskPayload::Completed {
                result: JsonObject::new(),
            },
            None,
        );
        // A late update does not reopen it.
        tasks.set_message(&task.task_id, "step 3".into());
        let got = tasks.find(&task.task_id).expect("task").task;
        assert_eq!(got.status(), TaskStatus::Completed);
        assert_eq!(got.task.status_message, None);

        std::thread::sleep(Duration::from_millis(60));
        assert!(tasks.find(&task.task_id).is_none(), "kept past its TTL");
    }

    #[test]
    fn a_full_table_drops_its_oldest_finished_task_and_refuses_when_all_run() {
        let tasks = Tasks::new(Duration::from_secs(1), Duration::from_secs(60), 2, 1 << 20);
        let done = |id: &str| {
            tasks.finish(
                id,
                TaskPayload::Completed {
                    result: JsonObject::new(),
                },
                None,
            )
        };
        let create = |id: &str| {
            let room = tasks.reserve().expect("room");
            tasks
                .create(room, Weak::new(), new_task_id(), id, None)
                .task_id
        };
        let a = create("call_a");
        let b = create("call_b");
        assert!(
            tasks.reserve().is_none(),
            "two running tasks fill a table of two"
        );
        done(&a);
        std::thread::sleep(Duration::from_millis(2));
        done(&b);
        let c = create("call_c");
        assert!(tasks.find(&a).is_none(), "the oldest finished task stays");
        assert!(tasks.find(&b).is_some() && tasks.find(&c).is_some());
    }

    /// Calls that start together each hold a place from their start: once
    /// the places are all held, a further call finds no room, even before
    /// any of them became a task; a place given back without a task is
    /// free again.
    #[test]
    fn reservations_count_as_running_tasks_until_they_are_given_back() {
        let tasks = Tasks::new(Duration::from_secs(1), Duration::from_secs(60), 2, 1 << 20);
        let first = tasks.reserve().expect("room for the first");
        let second = tasks.reserve().expect("room for the second");
        assert!(
            tasks.reserve().is_none(),
            "two places held fill a table of two"
        );
        tasks.create(first, Weak::new(), new_task_id(), "call_a", None);
        assert!(tasks.reserve().is_none(), "one task and one place held");
        drop(second);
        assert!(tasks.reserve().is_some(), "the place given back is free");
    }

    /// The results kept weigh at most `max_bytes`: a finished task whose
    /// result would take the table past it drops the oldest finished
    /// tasks, and is kept itself whatever it weighs.
    #[test]
    fn results_past_the_byte_bound_drop_the_oldest_finished_tasks() {
        let tasks = Tasks::new(Duration::from_secs(1), Duration::from_secs(60), 100, 10_000);
        let result = |bytes: usize| {
            let mut result = JsonObject::new();
            result.insert("text".into(), "x".repeat(bytes).into());
            TaskPayload::Completed { result }
        };
        let mut ids = Vec::new();
        for (n, bytes) in [4_000, 4_000, 4_000, 20_000].into_iter().enumerate() {
            let room = tasks.reserve().expect("room");
            let id = tasks
                .create(room, Weak::new(), new_task_id(), &format!("call_{n}"), None)
                .task_id;
            tasks.finish(&id, result(bytes), None);
            std::thread::sleep(Duration::from_millis(2));
            ids.push(id);
        }
        let kept: Vec<bool> = ids.iter().map(|id| tasks.find(id).is_some()).collect();
        assert_eq!(kept, [false, false, false, true], "the newest stays alone");

        let room = tasks.reserve().expect("room");
        let small = tasks
            .create(room, Weak::new(), new_task_id(), "call_small", None)
            .task_id;
        tasks.finish(&small, result(100), None);
        assert!(tasks.find(&small).is_some());
        assert!(
            tasks.find(&ids[3]).is_none(),
            "the oldest finished goes first"
        );
    }
}
