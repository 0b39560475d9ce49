//! The live view's feed: server-sent events from every session of the host
//! ([`Host::subscribe`](crate::Host::subscribe)), no polling.
//!
//! `GET /events` sends `snapshot` first (the running and queued calls, read
//! after subscribing, so no event falls between the two), then `queued`,
//! `started`, `updated` (with the fuel so far) and `ended` as calls go,
//! and `pool` (the instance pool's use, [`Host::instances`](crate::Host::instances))
//! at once and then as it changes, at most every [`POOL_EVERY`].
//! `GET /events?task=ID` follows one call and ends with its `ended` (at
//! once when it has already ended). `lagged` says events were lost (a
//! browser too slow): reload.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt, stream};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;

use super::Shared;
use super::pages::{epoch_ms, live_records, settled};
use crate::InstanceUse;
use crate::records::{EventKind, HostEvent, TaskRecord};

/// How often at most a live view is told the pool's use: with many short
/// calls it changes with each one.
const POOL_EVERY: Duration = Duration::from_millis(250);

#[derive(Debug, Deserialize)]
pub(super) struct EventsQuery {
    task: Option<String>,
}

type Events = std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>>;

pub(super) async fn events(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<EventsQuery>,
) -> Response {
    let Ok(permit) = shared.streams.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many live views are open\n",
        )
            .into_response();
    };
    // Subscribe before reading the store: an event between the two shows
    // twice at worst, never not at all.
    let rx = shared.host.subscribe();
    let first: Vec<Event> = match &q.task {
        None => match live_records(&shared).await {
            Ok(records) => vec![snapshot(&records)],
            Err(e) => vec![Event::default().event("failed").data(e.to_string())],
        },
        Some(task) => {
            settled(&shared).await;
            match shared.host.store().get(task).await {
                Ok(Some(r)) if !r.call.status.is_live() => vec![ended_of(&r)],
                Ok(_) => Vec::new(),
                Err(e) => vec![Event::default().event("failed").data(e.to_string())],
            }
        }
    };
    let done = q.task.is_some() && !first.is_empty();
    let task = q.task.clone();
    let follow: Events = if done {
        Box::pin(stream::empty())
    } else {
        Box::pin(stream::unfold(
            (rx, task, false),
            |(mut rx, task, over)| async move {
                if over {
                    return None;
                }
                loop {
                    match rx.recv().await {
                        Ok(e) => {
                            if task.as_ref().is_some_and(|t| *t != e.task_id) {
                                continue;
                            }
                            let last =
                                task.is_some() && matches!(e.event.kind, EventKind::Ended { .. });
                            return Some((Ok::<_, Infallible>(event_of(&e)), (rx, task, last)));
                        }
                        Err(RecvError::Lagged(n)) => {
                            let lagged = Event::default().event("lagged").data(n.to_string());
                            return Some((Ok(lagged), (rx, task, false)));
                        }
                        Err(RecvError::Closed) => return None,
                    }
                }
            },
        ))
    };
    let follow: Events = match q.task {
        None => Box::pin(stream::select(follow, pool(shared.host.instances()))),
        Some(_) => follow,
    };
    let mut closing = shared.closing.subscribe();
    let stopped = async move {
        let _ = closing.wait_for(|c| *c).await;
    };
    let all = stream::iter(first.into_iter().map(Ok))
        .chain(follow)
        .take_until(stopped)
        // The permit goes when the browser does.
        .map(move |e| {
            let _ = &permit;
            e
        });
    Sse::new(all)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The pool's use now, then each change, at most every [`POOL_EVERY`]
/// (changes in between are folded into the next).
fn pool(use_now: watch::Receiver<InstanceUse>) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold((use_now, true), |(mut rx, first)| async move {
        if !first {
            tokio::time::sleep(POOL_EVERY).await;
            rx.changed().await.ok()?;
        }
        let u = *rx.borrow_and_update();
        let data = json!({ "size": u.size, "held": u.held, "waiting": u.waiting });
        let event = Event::default().event("pool").data(data.to_string());
        Some((Ok(event), (rx, false)))
    })
}

/// One host event as the page reads it: its kind as the event name, the
/// event as JSON.
fn event_of(e: &HostEvent) -> Event {
    let name = match e.event.kind {
        EventKind::Queued => "queued",
        EventKind::Started => "started",
        EventKind::Updated { .. } => "updated",
        EventKind::Ended { .. } => "ended",
    };
    let data = serde_json::to_string(e).unwrap_or_else(|_| "{}".into());
    Event::default().event(name).data(data)
}

/// The `ended` of a call that ended before its page subscribed.
fn ended_of(r: &TaskRecord) -> Event {
    let data = json!({
        "task_id": r.task_id,
        "call_id": r.call.call_id,
        "session_id": r.call.session_id,
        "tool": r.call.tool,
        "event": "ended",
        "status": r.call.status,
        "fuel_used": r.call.fuel_used,
    });
    Event::default().event("ended").data(data.to_string())
}

fn snapshot(records: &[TaskRecord]) -> Event {
    let calls: Vec<_> = records
        .iter()
        .map(|r| {
            let c = &r.call;
            json!({
                "task_id": r.task_id,
                "call_id": c.call_id,
                "session_id": c.session_id,
                "tool": c.tool,
                "status": c.status,
                "arguments": c.arguments,
                "since_ms": epoch_ms(c.started_at.unwrap_or(c.created_at)) as u64,
                "fuel_used": c.fuel_used,
                "latest": c.updates.last().map(|u| u.message.as_str()),
            })
        })
        .collect();
    Event::default()
        .event("snapshot")
        .data(serde_json::Value::Array(calls).to_string())
}
