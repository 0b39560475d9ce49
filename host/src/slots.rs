//! A plugin's slots, the cap on its running calls, and the sessions'
//! turns at them: a session has one call at a time in a plugin's line, so
//! that freed slots go round the sessions waiting rather than to whichever
//! queued most.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore, TryAcquireError, watch};

/// A plugin file's slots, kept across its reloads so that the calls of the
/// old and the new version count together; closed when the file is
/// unloaded.
#[derive(Debug, Clone)]
pub(crate) struct Slots {
    permits: Arc<Semaphore>,
    /// Calls in line for a slot: one per session at most.
    in_line: Arc<watch::Sender<usize>>,
}

impl Slots {
    pub(crate) fn new(cap: u32) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(cap as usize)),
            in_line: Arc::new(watch::Sender::new(0)),
        }
    }

    /// A slot if one is free now. Freed slots go to the calls in line
    /// first, so none is free while a call waits.
    pub(crate) fn free(&self) -> Result<OwnedSemaphorePermit, TryAcquireError> {
        self.permits.clone().try_acquire_owned()
    }

    /// Wait in line for a slot, counted in [`Slots::in_line`] from when the
    /// call is in line until it has its slot or stops waiting.
    pub(crate) async fn next(&self) -> Result<OwnedSemaphorePermit, AcquireError> {
        let mut next = std::pin::pin!(self.permits.clone().acquire_owned());
        // Polled once first, which puts the call in line.
        let first = std::future::poll_fn(|cx| Poll::Ready(next.as_mut().poll(cx))).await;
        if let Poll::Ready(slot) = first {
            return slot;
        }
        self.in_line.send_modify(|n| *n += 1);
        let _counted = InLine(&self.in_line);
        next.await
    }

    /// The plugin file is out of service: calls waiting in line, and any
    /// that comes for a slot later, end without running ([`next`] and
    /// [`free`] fail). Running calls keep their slots to their end.
    ///
    /// [`next`]: Slots::next
    /// [`free`]: Slots::free
    pub(crate) fn close(&self) {
        self.permits.close();
    }

    /// How many calls wait in line for a slot.
    pub(crate) fn in_line(&self) -> watch::Receiver<usize> {
        self.in_line.subscribe()
    }

    /// Change the cap from `had` to `cap`. Slots held by running calls
    /// that are past a lower cap are taken out as they come back, so the
    /// new cap holds once those calls end.
    pub(crate) fn set_cap(&self, had: u32, cap: u32) {
        if cap > had {
            self.permits.add_permits((cap - had) as usize);
        } else if cap < had {
            let fewer = (had - cap) as usize;
            let owed = fewer - self.permits.forget_permits(fewer);
            if owed > 0 {
                let permits = self.permits.clone();
                tokio::spawn(async move {
                    if let Ok(p) = permits.acquire_many_owned(owed as u32).await {
                        p.forget();
                    }
                });
            }
        }
    }
}

/// A call in line, counted out however its wait ends.
struct InLine<'a>(&'a watch::Sender<usize>);

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// A session's turns at its plugins' slots: one lock per plugin file, for
/// its calls that wait for a slot of that plugin to take one at a time.
#[derive(Debug, Default)]
pub(crate) struct Turns(Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>);

impl Turns {
    /// The turn at the plugin of `path`. Turns nobody holds or waits for
    /// are dropped when a new one is made, so there are no more than the
    /// plugins the session waits for at once.
    pub(crate) fn of(&self, path: &Path) -> Arc<tokio::sync::Mutex<()>> {
        let mut turns = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(turn) = turns.get(path) {
            return turn.clone();
        }
        turns.retain(|_, turn| Arc::strong_count(turn) > 1);
        turns.entry(path.to_owned()).or_default().clone()
    }
}
