//! How a running call yields to the async runtime: through tokio's own
//! yield, so that the runtime polls its timers and I/O and keeps the call on
//! one thread.
//!
//! wasmtime yields a call (every `yield_interval` of fuel, or at every epoch
//! tick) by waking the call's task from inside its poll and returning
//! `Pending`. Tokio takes such a wake as a plain yield: the task goes to the
//! back of the worker's queue, and an idle worker is woken to steal it. A
//! spinning call then hops between runtime threads tens of thousands of
//! times a second, keeping a second core busy with wake-ups; and a worker
//! that always has the call to run polls timers and I/O only every 61
//! tasks, which delays timeouts, grace periods and everything else waiting
//! on the runtime while calls spin.
//!
//! [`Cooperative`] turns that wake into `tokio::task::yield_now`, which
//! defers the task until its worker has run its other tasks and polled the
//! timers and I/O, without waking another worker.
//!
//! Fuel counts the plugin's own instructions, not what a host call does
//! for it: a loop that asks for 32 MiB of random bytes, or logs 64 MiB, at
//! each turn burns little fuel and so would seldom yield, holding its
//! runtime thread and its time limit off for minutes. [`HostCallSlices`]
//! yields such a call at a host call once it has run [`HOST_CALL_SLICE`]
//! since it last yielded there.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures::task::AtomicWaker;
use wasmtime::{CallHook, CallHookHandler, StoreContextMut};

use crate::sandbox::CallState;

/// How long a call runs before it yields at its next host call.
pub(crate) const HOST_CALL_SLICE: std::time::Duration = std::time::Duration::from_millis(2);

/// The hook on a call's host calls that yields it every
/// [`HOST_CALL_SLICE`] (see the module's documentation).
pub(crate) struct HostCallSlices;

#[async_trait::async_trait]
impl CallHookHandler<CallState> for HostCallSlices {
    async fn handle_call_event(
        &self,
        mut store: StoreContextMut<'_, CallState>,
        hook: CallHook,
    ) -> wasmtime::Result<()> {
        if !matches!(hook, CallHook::CallingHost | CallHook::ReturningFromHost)
            || store.data().slice_started.elapsed() < HOST_CALL_SLICE
        {
            return Ok(());
        }
        tokio::task::yield_now().await;
        store.data_mut().slice_started = std::time::Instant::now();
        Ok(())
    }
}

/// Not being polled: a wake goes to the task.
const IDLE: u8 = 0;
/// Being polled: a wake is the future's own yield.
const POLLING: u8 = 1;
/// Woken while being polled.
const WOKEN: u8 = 2;

/// A future (a call running in wasmtime) whose own yields go through
/// `tokio::task::yield_now`. Wakes from elsewhere (a timer, a host call
/// finishing) wake the task as usual.
pub(crate) struct Cooperative<F> {
    inner: F,
    wake: Arc<SelfWake>,
    waker: Waker,
    yielding: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl<F: Future + Unpin> Cooperative<F> {
    pub(crate) fn new(inner: F) -> Self {
        let wake = Arc::new(SelfWake {
            state: AtomicU8::new(IDLE),
            task: AtomicWaker::new(),
        });
        Self {
            inner,
            waker: Waker::from(wake.clone()),
            wake,
            yielding: None,
        }
    }
}

impl<F: Future + Unpin> Future for Cooperative<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        loop {
            if let Some(yielding) = &mut this.yielding {
                if yielding.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.yielding = None;
            }
            this.wake.task.register(cx.waker());
            this.wake.state.store(POLLING, Ordering::Release);
            let polled = Pin::new(&mut this.inner).poll(&mut Context::from_waker(&this.waker));
            let woken = this.wake.state.swap(IDLE, Ordering::AcqRel) == WOKEN;
            match polled {
                Poll::Ready(output) => return Poll::Ready(output),
                // The first poll of `yield_now` defers the task and is
                // pending; the loop makes it.
                Poll::Pending if woken => this.yielding = Some(Box::pin(tokio::task::yield_now())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// The waker a [`Cooperative`] future polls its inner future with.
struct SelfWake {
    state: AtomicU8,
    task: AtomicWaker,
}

impl Wake for SelfWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        match self
            .state
            .compare_exchange(POLLING, WOKEN, Ordering::AcqRel, Ordering::Acquire)
        {
            // Noted; the poll turns it into a deferred yield (a wake from
            // another thread during the poll is served by that yield too).
            Ok(_) | Err(WOKEN) => {}
            Err(_) => self.task.wake(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wakes itself and is pending `n` times, like a wasmtime call yielding.
    struct Yields(u32);

    impl Future for Yields {
        type Output = ();

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.0 == 0 {
                return Poll::Ready(());
            }
            self.0 -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn own_yields_and_outside_wakes_both_reach_the_task() {
        let wait = std::time::Duration::from_secs(10);
        // A swallowed self-wake would leave the task asleep for good.
        tokio::time::timeout(wait, Cooperative::new(Yields(1000)))
            .await
            .expect("every own yield is resumed");
        let (tx, rx) = tokio::sync::oneshot::channel();
        let waiting = tokio::spawn(Cooperative::new(rx));
        tokio::task::yield_now().await;
        tx.send(7).expect("send");
        let got = tokio::time::timeout(wait, waiting)
            .await
            .expect("an outside wake is passed on");
        assert_eq!(got.expect("join").expect("value"), 7);
    }
}
