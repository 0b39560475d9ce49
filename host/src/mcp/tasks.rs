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
//! a table full of running tasks refuses new ones.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, Weak};
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
    poll_interval: Duration,
    ttl: Duration,
    max: usize,
}

impl Tasks {
    pub(crate) fn new(poll_interval: Duration, ttl: Duration, max: usize) -> Self {
        Self {
            entries: Mutex::default(),
            poll_interval,
            ttl,
            max: max.max(1),
        }
    }

    /// The table `options` describe.
    pub(crate) fn for_connection(options: &McpOptions) -> Self {
        Self::new(
            options.task_poll_interval,
            options.task_ttl,
            options.max_tasks,
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

    /// Whether a new task would find room: false when every kept task is
    /// still running.
    pub(crate) fn has_room(&self) -> bool {
        let entries = self.entries();
        entries.len() < self.max || entries.values().any(|e| e.ended.is_some())
    }

    /// A new working task `task_id` (the call's id in the task store,
    /// random) that follows `call_id` of `connection`'s session, making room
    /// by dropping the oldest finished tasks.
    pub(crate) fn create(
        &self,
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
            let mut finished: Vec<(Instant, String)> = entries
                .iter()
                .filter_map(|(id, e)| e.ended.map(|at| (at, id.clone())))
                .collect();
            finished.sort_unstable();
            let excess = entries.len() + 1 - self.max;
            for (_, id) in finished.into_iter().take(excess) {
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
            },
        );
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

    /// The task's call ended: `payload` is terminal.
    pub(crate) fn finish(&self, task_id: &str, payload: TaskPayload, message: Option<String>) {
        if let Some(e) = self.entries().get_mut(task_id)
            && e.ended.is_none()
        {
            e.task.status = payload.status();
            e.task.status_message = message;
            e.task.last_updated_at = timestamp();
            e.payload = payload;
            e.ended = Some(Instant::now());
        }
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
        let tasks = Tasks::new(Duration::from_millis(100), Duration::from_millis(50), 10);
        let task = tasks.create(Weak::new(), new_task_id(), "call_1", Some("step 1".into()));
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
        let tasks = Tasks::new(Duration::from_secs(1), Duration::from_secs(60), 2);
        let done = |id: &str| {
            tasks.finish(
                id,
                TaskPayload::Completed {
                    result: JsonObject::new(),
                },
                None,
            )
        };
        let a = tasks
            .create(Weak::new(), new_task_id(), "call_a", None)
            .task_id;
        let b = tasks
            .create(Weak::new(), new_task_id(), "call_b", None)
            .task_id;
        assert!(!tasks.has_room(), "two running tasks fill a table of two");
        done(&a);
        std::thread::sleep(Duration::from_millis(2));
        done(&b);
        assert!(tasks.has_room());
        let c = tasks
            .create(Weak::new(), new_task_id(), "call_c", None)
            .task_id;
        assert!(tasks.find(&a).is_none(), "the oldest finished task stays");
        assert!(tasks.find(&b).is_some() && tasks.find(&c).is_some());
    }
}
