//! A future that is polled again at once when it wakes itself during its
//! own poll, rather than through the runtime (#13).
//!
//! hyper's HTTP/1 connection task does this on every request with a body:
//! the handler, taking a chunk of the body, wakes the connection's
//! dispatcher that sent it, which is the task being polled. tokio takes a
//! task woken during its own poll for one that yielded: it goes to the back
//! of the queue and the other worker is woken to steal it, a futex wake and
//! an idle worker's spin for each request. Polling again here does what
//! tokio would do next, without the round through the scheduler.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures::task::AtomicWaker;

/// How many times in a row a future that keeps waking itself is polled
/// before it goes back to the runtime, as a yield: what wakes itself to let
/// others run (hyper does, after 16 pipelined requests) still lets them.
const POLLS: usize = 3;

/// Not being polled: a wake goes to the runtime.
const IDLE: u8 = 0;
/// Being polled, not woken so far.
const POLLING: u8 = 1;
/// Woken while being polled: it is polled again.
const WOKEN: u8 = 2;

/// `future`, polled again at once (up to [`POLLS`] times in a row) when it
/// wakes itself during its own poll.
pub(crate) fn repoll<F: Future>(future: F) -> Repoll<F> {
    let shared = Arc::new(Shared {
        state: AtomicU8::new(IDLE),
        outer: AtomicWaker::new(),
    });
    Repoll {
        future: Box::pin(future),
        waker: Waker::from(shared.clone()),
        shared,
    }
}

/// See [`repoll`].
pub(crate) struct Repoll<F> {
    future: Pin<Box<F>>,
    shared: Arc<Shared>,
    /// The waker the future sees: [`Shared`], which forwards to the
    /// runtime's waker unless the future is being polled.
    waker: Waker,
}

struct Shared {
    state: AtomicU8,
    /// The runtime's waker of the task that polls this.
    outer: AtomicWaker,
}

impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // During a poll the loop in `poll` sees the mark. Once it has set
        // the state back to idle, the wake goes to the runtime: a wake is
        // never lost between the two.
        if let Err(IDLE) =
            self.state
                .compare_exchange(POLLING, WOKEN, Ordering::AcqRel, Ordering::Acquire)
        {
            self.outer.wake();
        }
    }
}

impl<F: Future> Future for Repoll<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        this.shared.outer.register(cx.waker());
        let mut inner = Context::from_waker(&this.waker);
        for _ in 0..POLLS {
            this.shared.state.store(POLLING, Ordering::Release);
            let poll = this.future.as_mut().poll(&mut inner);
            let state = this.shared.state.swap(IDLE, Ordering::AcqRel);
            if poll.is_ready() || state != WOKEN {
                return poll;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Counts the wakes the runtime would get.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Wakes itself during its poll `times` times, then is ready.
    fn waking_itself(mut times: usize) -> impl Future<Output = ()> {
        std::future::poll_fn(move |cx| {
            if times == 0 {
                return Poll::Ready(());
            }
            times -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        })
    }

    #[test]
    fn a_future_that_wakes_itself_is_polled_again_without_waking_the_runtime() {
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let mut future = std::pin::pin!(repoll(waking_itself(POLLS - 1)));
        let poll = future.as_mut().poll(&mut Context::from_waker(&waker));
        assert!(poll.is_ready());
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn one_that_keeps_waking_itself_goes_back_to_the_runtime_as_a_yield() {
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let mut future = std::pin::pin!(repoll(waking_itself(POLLS)));
        let mut cx = Context::from_waker(&waker);
        assert!(future.as_mut().poll(&mut cx).is_pending());
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(future.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn a_wake_after_the_poll_reaches_the_runtime() {
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut future = std::pin::pin!(repoll(rx));
        let mut cx = Context::from_waker(&waker);
        assert!(future.as_mut().poll(&mut cx).is_pending());
        std::thread::spawn(move || tx.send(()))
            .join()
            .expect("the sending thread ended")
            .expect("the receiver is alive");
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(future.as_mut().poll(&mut cx).is_ready());
    }
}
