//! When a host's background set-up begins.
//!
//! A host made by [`Host::opening`](crate::Host::opening) sets up its
//! engine (mostly reserving the instance pool) and opens its task store
//! (SQLite syncs a new file several times) in the background. A client's
//! first requests, `initialize` and `tools/list`, need neither, and on two
//! cores that work beside the start's announcements of the tools the
//! compile cache knows made the listing about a quarter slower. So both
//! begin when the start's announcements end, or as soon as anything needs
//! them: a load, [`Host::set_up`](crate::Host::set_up), a call's record, a
//! read of the store.

use std::sync::Arc;

use tokio::sync::SetOnce;
use tokio_util::sync::{CancellationToken, DropGuard};

/// Opened once, by whatever comes first of what may open it; what waits
/// for it begins then, unless the host was dropped first (the gate is
/// then abandoned, and nothing waits for it any more). Cheap to clone;
/// clones share the gate.
#[derive(Debug, Clone, Default)]
pub(crate) struct SetUpGate(Arc<Gate>);

#[derive(Debug, Default)]
struct Gate {
    open: SetOnce<()>,
    abandoned: CancellationToken,
}

impl SetUpGate {
    /// A gate opened already: the set-up begins at once.
    pub(crate) fn opened() -> Self {
        let gate = Self::default();
        gate.open();
        gate
    }

    /// Let the set-up begin (again is nothing).
    pub(crate) fn open(&self) {
        let _ = self.0.open.set(());
    }

    /// Whether the set-up may begin (or has).
    pub(crate) fn is_open(&self) -> bool {
        self.0.open.initialized()
    }

    /// What abandons the gate when it is dropped: held by what the
    /// set-up is for (the host's engines), so that a host dropped before
    /// it was set up leaves no task waiting.
    pub(crate) fn abandon_on_drop(&self) -> DropGuard {
        self.0.abandoned.clone().drop_guard()
    }

    /// Wait until the gate is open (`true`), or abandoned while it was
    /// closed (`false`).
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub(crate) async fn wait(&self) -> bool {
        tokio::select! {
            biased;
            _ = self.0.open.wait() => true,
            () = self.0.abandoned.cancelled() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// On a paused clock: a wait gives every task its turn.
    #[tokio::test(start_paused = true)]
    async fn a_gate_lets_its_waiters_through_once_opened_and_stays_open() {
        let gate = SetUpGate::default();
        let waiting = tokio::spawn({
            let gate = gate.clone();
            async move { gate.wait().await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiting.is_finished(), "through a closed gate");
        assert!(!gate.is_open());
        gate.open();
        gate.open();
        assert!(gate.is_open());
        let through = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert!(through.expect("through once open").expect("joined"));
        let opened = tokio::time::timeout(Duration::from_secs(5), SetUpGate::opened().wait()).await;
        assert!(opened.expect("an opened gate is open"));

        let gate = SetUpGate::default();
        drop(gate.abandon_on_drop());
        let abandoned = tokio::time::timeout(Duration::from_secs(5), gate.wait()).await;
        assert!(!abandoned.expect("an abandoned gate ends the wait"));
    }
}
