//! The tasks of one connection (the MCP tasks extension, SEP-2663): which
//! call each task follows, its state while the call runs, and its result
//! once the call ended.
//!
//! The ids are random (UUID v4), since a task id is all a client needs to
//! read a task. A finished task is kept for the TTL after its end; a running
//! one is kept until it ends (its call is bounded by the tool's timeout).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use rmcp::model::{DetailedTask, Task, TaskPayload, TaskStatus};

struct Entry {
    call_id: String,
    task: Task,
    payload: TaskPayload,
    ended: Option<Instant>,
}

pub(crate) struct Tasks {
    entries: Mutex<HashMap<String, Entry>>,
    poll_interval: Duration,
    ttl: Duration,
}

impl Tasks {
    pub(crate) fn new(poll_interval: Duration, ttl: Duration) -> Self {
        Self {
            entries: Mutex::default(),
            poll_interval,
            ttl,
        }
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let ttl = self.ttl;
        entries.retain(|_, e| e.ended.is_none_or(|at| at.elapsed() < ttl));
        entries
    }

    /// A new working task that follows `call_id`.
    pub(crate) fn create(&self, call_id: &str, status_message: Option<String>) -> Task {
        let now = timestamp();
        let mut task = Task::new(
            uuid::Uuid::new_v4().to_string(),
            TaskStatus::Working,
            now.clone(),
            now,
        )
        .with_ttl_ms(millis(self.ttl))
        .with_poll_interval_ms(millis(self.poll_interval));
        task.status_message = status_message;
        self.entries().insert(
            task.task_id.clone(),
            Entry {
                call_id: call_id.to_owned(),
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

    /// What `tasks/get` answers.
    pub(crate) fn get(&self, task_id: &str) -> Option<DetailedTask> {
        self.entries()
            .get(task_id)
            .map(|e| DetailedTask::new(e.task.clone(), e.payload.clone()))
    }

    /// The call a task follows.
    pub(crate) fn call_id(&self, task_id: &str) -> Option<String> {
        self.entries().get(task_id).map(|e| e.call_id.clone())
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
    use rmcp::model::JsonObject;

    #[test]
    fn a_task_goes_from_working_to_its_end_and_is_kept_for_the_ttl() {
        let tasks = Tasks::new(Duration::from_millis(100), Duration::from_millis(50));
        let task = tasks.create("call_1", Some("step 1".into()));
        assert_eq!(task.status, TaskStatus::Working);
        assert_eq!(tasks.call_id(&task.task_id).as_deref(), Some("call_1"));
        tasks.set_message(&task.task_id, "step 2".into());
        let got = tasks.get(&task.task_id).expect("task");
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
        let got = tasks.get(&task.task_id).expect("task");
        assert_eq!(got.status(), TaskStatus::Completed);
        assert_eq!(got.task.status_message, None);

        std::thread::sleep(Duration::from_millis(60));
        assert!(tasks.get(&task.task_id).is_none(), "kept past its TTL");
    }

    #[test]
    fn task_ids_are_not_guessable_from_each_other() {
        let tasks = Tasks::new(Duration::from_secs(1), Duration::from_secs(1));
        let a = tasks.create("call_1", None).task_id;
        let b = tasks.create("call_2", None).task_id;
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
    }
}
