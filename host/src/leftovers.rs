//! What a call leaves to free once it has ended: its sandbox (the
//! `Store`, with its instance of the pool and its slot under the plugin's
//! cap). Freeing a sandbox takes wasmtime tens of microseconds (the pool
//! resets the memory the call dirtied), which a caller that writes the
//! answer itself can spend after the write instead of before it: the
//! client reads the answer meanwhile. [`keeping`] runs a future that keeps
//! what its calls leave, and hands it back with the future's output;
//! anywhere else a call's sandbox is freed as the call ends.

use std::cell::RefCell;
use std::future::Future;

tokio::task_local! {
    static KEPT: RefCell<Vec<Leftover>>;
}

/// One thing left to free.
type Leftover = Box<dyn Send>;

/// What the calls of a [`keeping`] future left: freed when dropped.
#[derive(Default)]
#[must_use = "dropping it frees what it holds"]
pub(crate) struct Leftovers {
    /// Only ever dropped.
    _held: Vec<Leftover>,
}

impl Leftovers {
    /// How many things it holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self._held.len()
    }
}

/// Run `future`, keeping what the calls it runs leave ([`leave`]) rather
/// than freeing it as each ends. Only the polls of `future` itself keep:
/// a call that goes on in a task of its own frees its leftovers there.
pub(crate) async fn keeping<F: Future>(future: F) -> (F::Output, Leftovers) {
    KEPT.scope(RefCell::new(Vec::new()), async {
        let output = future.await;
        let kept = KEPT.with(|kept| std::mem::take(&mut *kept.borrow_mut()));
        (output, Leftovers { _held: kept })
    })
    .await
}

/// Free `leftover` now, or keep it with the leftovers of the [`keeping`]
/// future running this, if any.
pub(crate) fn leave(leftover: impl Send + 'static) {
    let mut leftover = Some(leftover);
    let _ = KEPT.try_with(|kept| {
        if let Some(leftover) = leftover.take() {
            kept.borrow_mut().push(Box::new(leftover));
        }
    });
    drop(leftover);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Counts its drops.
    struct Counted(Arc<AtomicUsize>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn leftovers_are_kept_until_dropped_and_freed_at_once_elsewhere() {
        let freed = Arc::new(AtomicUsize::new(0));
        leave(Counted(freed.clone()));
        assert_eq!(
            freed.load(Ordering::SeqCst),
            1,
            "nothing keeps: freed at once"
        );

        let (answer, left) = keeping(async {
            leave(Counted(freed.clone()));
            tokio::task::yield_now().await;
            leave(Counted(freed.clone()));
            // A task of its own does not keep.
            let spawned = freed.clone();
            tokio::spawn(async move { leave(Counted(spawned)) })
                .await
                .expect("spawned");
            "answer"
        })
        .await;
        assert_eq!(answer, "answer");
        assert_eq!(left.len(), 2);
        assert_eq!(freed.load(Ordering::SeqCst), 2, "kept until dropped");
        drop(left);
        assert_eq!(freed.load(Ordering::SeqCst), 4);
    }
}
