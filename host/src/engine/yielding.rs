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
//! Such a yield still costs a wake of another worker: the worker, its own
//! queue empty for the moment, searches the others for work, and when it
//! then finds the yielded call again it wakes a parked worker to search in
//! its stead (tokio's rule for a worker leaving the searching state). Over
//! MCP stdio that wake is a write to the event loop's eventfd, and a lone
//! spinning call, yielding every 1 000 000 units of fuel, spent two thirds
//! to three quarters of its time on them (0.52–0.87 s against 0.19–0.21 s
//! for the same call on one runtime thread, about 9 000 wakes for 10 000
//! yields). So
//! [`Cooperative`] lets a fuel-metered call's own yields through to the
//! runtime only once per [`RUN_SLICE`]: within a slice it resumes the call
//! at once, unless the call was stopped by force, which its select then
//! sees, or its task has spent tokio's budget for one poll. The first poll
//! is not continued, so that a call polled where it must not stay long
//! (the stdio reader) leaves at its first yield. What waits for the task to
//! be polled (a timeout, the handler of a call polled in it) waits up to a
//! slice longer.
//!
//! Fuel counts the plugin's own instructions, not what a host call does
//! for it: a loop that asks for 32 MiB of random bytes, or logs 64 MiB, at
//! each turn burns little fuel and so would seldom yield, holding its
//! runtime thread and its time limit off for minutes. [`HostCallSlices`]
//! yields such a call at a host call once it has run [`HOST_CALL_SLICE`]
//! since it last yielded there.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use wasmtime::{CallHook, CallHookHandler, StoreContextMut};

use crate::limits::Metering;
use crate::repoll::PollWaker;
use crate::sandbox::CallState;

/// How long a call runs before it yields at its next host call.
pub(crate) const HOST_CALL_SLICE: Duration = Duration::from_millis(2);

/// How long a fuel-metered call's own yields are resumed at once, before
/// one goes to the runtime ([`Cooperative`]).
pub(crate) const RUN_SLICE: Duration = Duration::from_micros(500);

/// The slice of a call metered so: an epoch-metered call yields once a
/// tick (1 ms), longer than a slice, so each of its yields goes to the
/// runtime, as it did.
pub(crate) fn run_slice(metering: Metering) -> Duration {
    match metering {
        Metering::Fuel => RUN_SLICE,
        Metering::Epoch => Duration::ZERO,
    }
}

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
        store.data_mut().slice_started = Instant::now();
        Ok(())
    }
}

/// A future (a call running in wasmtime) whose own yields go through
/// `tokio::task::yield_now`, at most one per `slice` after its first poll
/// (every one while `stopped` says so). Wakes from elsewhere (a timer, a
/// host call finishing) wake the task as usual.
pub(crate) struct Cooperative<F, S> {
    inner: F,
    waker: PollWaker,
    yielding: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    slice: Duration,
    /// Whether the call must go back to its task at its next yield (it
    /// was stopped by force).
    stopped: S,
    polled: bool,
}

impl<F: Future + Unpin, S: Fn() -> bool> Cooperative<F, S> {
    pub(crate) fn new(inner: F, slice: Duration, stopped: S) -> Self {
        Self {
            inner,
            waker: PollWaker::new(),
            yielding: None,
            slice,
            stopped,
            polled: false,
        }
    }
}

impl<F: Future + Unpin, S: Fn() -> bool + Unpin> Future for Cooperative<F, S> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        // The first poll leaves at the first yield; later ones run a slice.
        let slice_ends = this.polled.then(|| Instant::now() + this.slice);
        this.polled = true;
        loop {
            if let Some(yielding) = &mut this.yielding {
                if yielding.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.yielding = None;
            }
            let (polled, woken) = this.waker.poll(Pin::new(&mut this.inner), cx);
            match polled {
                Poll::Ready(output) => return Poll::Ready(output),
                // Its own yield, within the slice: resumed at once. Not
                // once the task has spent tokio's budget for one poll: off
                // a worker thread (`Runtime::block_on`) what the call
                // awaits then wakes it at once, and would be pending again.
                Poll::Pending
                    if woken
                        && slice_ends.is_some_and(|end| Instant::now() < end)
                        && tokio::task::coop::has_budget_remaining()
                        && !(this.stopped)() => {}
                // The first poll of `yield_now` defers the task and is
                // pending; the loop makes it.
                Poll::Pending if woken => this.yielding = Some(Box::pin(tokio::task::yield_now())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;

    /// Wakes itself and is pending `n` times, like a wasmtime call yielding,
    /// each time after running `gap`.
    struct Yields {
        n: u32,
        gap: Duration,
    }

    impl Yields {
        fn quick(n: u32) -> Self {
            Self {
                n,
                gap: Duration::ZERO,
            }
        }
    }

    impl Future for Yields {
        type Output = ();

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.n == 0 {
                return Poll::Ready(());
            }
            self.n -= 1;
            let until = Instant::now() + self.gap;
            while Instant::now() < until {
                std::hint::spin_loop();
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    /// Counts the polls of the task it runs in.
    struct TaskPolls<F> {
        inner: F,
        polls: u32,
    }

    impl<F: Future + Unpin> Future for TaskPolls<F> {
        type Output = (F::Output, u32);

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            self.polls += 1;
            match Pin::new(&mut self.inner).poll(cx) {
                Poll::Ready(out) => Poll::Ready((out, self.polls)),
                Poll::Pending => Poll::Pending,
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn own_yields_reach_the_runtime_once_a_slice_after_the_first() {
        // 1 000 quick yields: the first returns to the task, the rest fit
        // in one slice, or a few if the thread is descheduled (before, every
        // yield went to the runtime: 1 001 polls).
        let run = TaskPolls {
            inner: Cooperative::new(Yields::quick(1000), RUN_SLICE, || false),
            polls: 0,
        };
        let ((), polls) = tokio::spawn(run).await.expect("join");
        assert!((2..=20).contains(&polls), "{polls} polls of the task");
        // Stopped by force: every yield goes back to the task, whose
        // select would see it.
        let run = TaskPolls {
            inner: Cooperative::new(Yields::quick(1000), RUN_SLICE, || true),
            polls: 0,
        };
        let ((), polls) = tokio::spawn(run).await.expect("join");
        assert_eq!(polls, 1001);
        // Yields 100 µs apart, 5 ms in all: the slices end.
        let run = TaskPolls {
            inner: Cooperative::new(
                Yields {
                    n: 50,
                    gap: Duration::from_micros(100),
                },
                RUN_SLICE,
                || false,
            ),
            polls: 0,
        };
        let ((), polls) = tokio::spawn(run).await.expect("join");
        assert!(polls >= 5, "{polls} polls of the task");
        // Epoch-metered: every yield goes to the runtime.
        let run = TaskPolls {
            inner: Cooperative::new(Yields::quick(1000), run_slice(Metering::Epoch), || false),
            polls: 0,
        };
        let ((), polls) = tokio::spawn(run).await.expect("join");
        assert_eq!(polls, 1001);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_off_a_worker_that_spent_its_budget_is_not_resumed_at_once() {
        // Polled by `block_on` (this test's body), where a spent budget's
        // wake comes at once: resumed, it would be pending again, over and
        // over until the slice ended.
        let polls = std::sync::atomic::AtomicU32::new(0);
        let mut spends = Box::pin(async {
            for _ in 0..1000 {
                tokio::task::coop::consume_budget().await;
            }
        });
        let counted = std::future::poll_fn(|cx| {
            polls.fetch_add(1, Ordering::Relaxed);
            spends.as_mut().poll(cx)
        });
        let run = Cooperative::new(Box::pin(counted), RUN_SLICE, || false);
        run.await;
        let polls = polls.load(Ordering::Relaxed);
        // One poll, and one more each time the budget (128) ran out.
        assert!(polls <= 20, "{polls} polls of the call");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn own_yields_and_outside_wakes_both_reach_the_task() {
        let wait = std::time::Duration::from_secs(10);
        // A swallowed self-wake would leave the task asleep for good.
        tokio::time::timeout(
            wait,
            Cooperative::new(Yields::quick(1000), RUN_SLICE, || false),
        )
        .await
        .expect("every own yield is resumed");
        let (tx, rx) = tokio::sync::oneshot::channel();
        let waiting = tokio::spawn(Cooperative::new(rx, RUN_SLICE, || false));
        tokio::task::yield_now().await;
        tx.send(7).expect("send");
        let got = tokio::time::timeout(wait, waiting)
            .await
            .expect("an outside wake is passed on");
        assert_eq!(got.expect("join").expect("value"), 7);
    }
}
