//! The delivery of later results (B26–B28): updates and results of released
//! calls collect as pending items, and go out together as one reply request
//! when the agent is idle.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use super::answer::Item;
use crate::templates::{Templates, render};

#[derive(Default)]
struct Pending {
    items: VecDeque<Item>,
    /// A reply request is out and not yet acknowledged.
    out: bool,
    /// Bumped each time the agent speaks (B27).
    turn: u64,
    closed: bool,
}

/// A session's pending items. With delivery off (as over MCP, where later
/// results reach the model through tasks or the companion tools) nothing
/// is kept.
pub(crate) struct Delivery {
    enabled: bool,
    templates: Arc<Templates>,
    settle: Duration,
    pending: Mutex<Pending>,
    /// Woken when items arrive, a reply comes back, or the session closes.
    changed: Notify,
    next_reply: AtomicU64,
}

impl Delivery {
    pub(crate) fn new(enabled: bool, templates: Arc<Templates>, settle: Duration) -> Self {
        Self {
            enabled,
            templates,
            settle,
            pending: Mutex::default(),
            changed: Notify::new(),
            next_reply: AtomicU64::new(1),
        }
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    /// Add an item, stamped with the agent's current turn.
    pub(crate) fn push(&self, mut item: Item) {
        if !self.enabled {
            return;
        }
        let mut pending = self.pending();
        if pending.closed {
            return;
        }
        item.turn = pending.turn;
        pending.items.push_back(item);
        drop(pending);
        self.changed.notify_waiters();
    }

    pub(crate) fn agent_spoke(&self) {
        self.pending().turn += 1;
    }

    pub(crate) fn has_pending(&self) -> bool {
        !self.pending().items.is_empty()
    }

    /// Nothing is delivered from now on (B24).
    pub(crate) fn close(&self) {
        let mut pending = self.pending();
        pending.closed = true;
        pending.items.clear();
        drop(pending);
        self.changed.notify_waiters();
    }

    pub(crate) fn try_reply(self: &Arc<Self>) -> Option<ReplyRequest> {
        let mut pending = self.pending();
        if pending.closed || pending.out || pending.items.is_empty() {
            return None;
        }
        let items: Vec<Item> = pending.items.drain(..).collect();
        pending.out = true;
        let maybe_told = items.iter().any(|i| i.turn < pending.turn);
        drop(pending);
        let template = if maybe_told {
            &self.templates.reply_maybe_told
        } else {
            &self.templates.reply
        };
        Some(ReplyRequest {
            delivery: self.clone(),
            id: self.next_reply.fetch_add(1, Ordering::Relaxed),
            instructions: render(template, &[("count", &items.len().to_string())]),
            maybe_told,
            items,
            acked: false,
        })
    }

    pub(crate) async fn next_reply(self: &Arc<Self>) -> Option<ReplyRequest> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let ready = {
                let pending = self.pending();
                if pending.closed {
                    return None;
                }
                !pending.items.is_empty() && !pending.out
            };
            if ready {
                // Let results that finish together go out together.
                tokio::time::sleep(self.settle).await;
                if let Some(d) = self.try_reply() {
                    return Some(d);
                }
                continue;
            }
            notified.await;
        }
    }
}

/// Items taken out of the pending list. [`ack`](Self::ack) it once the
/// agent has replied; dropped without an ack, its items go back to pending
/// and are offered again (B28).
#[derive(Debug)]
pub struct ReplyRequest {
    delivery: Arc<Delivery>,
    pub id: u64,
    pub items: Vec<Item>,
    /// The reply instructions (B26, B27).
    pub instructions: String,
    /// Whether the agent spoke after some of the items arrived (B27).
    pub maybe_told: bool,
    acked: bool,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery").finish_non_exhaustive()
    }
}

impl ReplyRequest {
    /// The agent replied: the items are done with.
    pub fn ack(mut self) {
        self.acked = true;
        self.delivery.pending().out = false;
        self.delivery.changed.notify_waiters();
    }
}

impl Drop for ReplyRequest {
    fn drop(&mut self) {
        if self.acked {
            return;
        }
        let mut pending = self.delivery.pending();
        pending.out = false;
        if !pending.closed {
            for item in self.items.drain(..).rev() {
                pending.items.push_front(item);
            }
        }
        drop(pending);
        self.delivery.changed.notify_waiters();
    }
}
