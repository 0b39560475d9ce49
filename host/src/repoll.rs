//! Futures polled again at once when they are woken during their own poll,
//! rather than through the runtime (#13).
//!
//! tokio takes a task woken during its own poll for one that yielded: it
//! goes to the back of the queue and the other worker is woken to steal
//! it, a futex wake and an idle worker's spin each time. Two kinds of
//! future are woken so, over and over:
//! - hyper's HTTP/1 connection, on every request with a body: the handler,
//!   asking for a chunk of the body and taking it, wakes the connection's
//!   dispatcher that sends it, which is the task being polled
//!   ([`repoll`]);
//! - a call running in wasmtime, at each of its fuel yields
//!   ([`Cooperative`](crate::engine::yielding::Cooperative)).
//!
//! [`PollWaker`] is what both poll with: it tells whether the future was
//! woken during the poll, and passes any other wake to the task.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures::task::AtomicWaker;

/// How many times in a row [`repoll`] polls a future that is woken during
/// each poll before it goes back to the runtime as a yield. hyper's own
/// yield (after 16 pipelined requests) is such a wake too, so up to three
/// times 16 requests are served before other tasks run.
const POLLS: usize = 3;

/// Not being polled: a wake goes to the task.
const IDLE: u8 = 0;
/// Being polled, not woken so far.
const POLLING: u8 = 1;
/// Woken while being polled.
const WOKEN: u8 = 2;

/// The waker a future is polled with by [`PollWaker::poll`].
pub(crate) struct PollWaker {
    shared: Arc<Shared>,
    waker: Waker,
}

struct Shared {
    state: AtomicU8,
    /// The waker of the task that polls.
    task: AtomicWaker,
}

impl PollWaker {
    pub(crate) fn new() -> Self {
        let shared = Arc::new(Shared {
            state: AtomicU8::new(IDLE),
            task: AtomicWaker::new(),
        });
        Self {
            waker: Waker::from(shared.clone()),
            shared,
        }
    }

    /// Poll `future` for the task of `cx`: its result, and whether it was
    /// woken during the poll (by itself or from another thread), so that
    /// it is to be polled again. A wake after the poll goes to the task.
    pub(crate) fn poll<F: Future + ?Sized>(
        &self,
        future: Pin<&mut F>,
        cx: &Context<'_>,
    ) -> (Poll<F::Output>, bool) {
        self.shared.task.register(cx.waker());
        self.shared.state.store(POLLING, Ordering::Release);
        let polled = future.poll(&mut Context::from_waker(&self.waker));
        let woken = self.shared.state.swap(IDLE, Ordering::AcqRel) == WOKEN;
        (polled, woken)
    }
}

impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // During a poll, the poller sees the mark. Once it has set the
        // state back to idle, the wake goes to the task: none is lost
        // between the two.
        if let Err(IDLE) =
            self.state
                .compare_exchange(POLLING, WOKEN, Ordering::AcqRel, Ordering::Acquire)
        {
            self.task.wake();
        }
    }
}

/// `future`, polled again at once (up to [`POLLS`] times in a row, while
/// the task has tokio's budget left) when it is woken during its own poll.
pub(crate) fn repoll<F: Future>(future: F) -> Repoll<F> {
    Repoll {
        future: Box::pin(future),
        waker: PollWaker::new(),
    }
}

/// See [`repoll`].
pub(crate) struct Repoll<F> {
    future: Pin<Box<F>>,
    waker: PollWaker,
}

impl<F: Future> Future for Repoll<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        for _ in 0..POLLS {
            let (polled, woken) = this.waker.poll(this.future.as_mut(), cx);
            if polled.is_ready() || !woken {
                return polled;
            }
            // With tokio's budget spent, what the future awaits would be
            // pending again.
            if !tokio::task::coop::has_budget_remaining() {
                break;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Counts the wakes the runtime would get.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Count {
        fn get(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count::default());
        (count.clone(), Waker::from(count))
    }

    fn poll_once<F: Future + ?Sized>(future: Pin<&mut F>, waker: &Waker) -> Poll<F::Output> {
        future.poll(&mut Context::from_waker(waker))
    }

    /// A future that counts its polls in `polls`, each of which is `poll`
    /// given the count so far.
    fn counted<T>(
        polls: &Arc<Count>,
        mut poll: impl FnMut(&mut Context<'_>, usize) -> Poll<T>,
    ) -> impl Future<Output = T> {
        let polls = polls.clone();
        std::future::poll_fn(move |cx| poll(cx, polls.0.fetch_add(1, Ordering::SeqCst)))
    }

    /// Wakes itself during its poll `times` times, then is ready; counts
    /// its polls.
    fn waking_itself(times: usize, polls: &Arc<Count>) -> impl Future<Output = ()> {
        counted(polls, move |cx, polled| {
            if polled == times {
                return Poll::Ready(());
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        })
    }

    #[test]
    fn a_future_woken_during_its_poll_is_polled_again_without_waking_the_runtime() {
        let (count, waker) = counting();
        let polls = Arc::new(Count::default());
        let mut future = std::pin::pin!(repoll(waking_itself(POLLS - 1, &polls)));
        let poll = poll_once(future.as_mut(), &waker);
        assert!(poll.is_ready());
        assert_eq!((count.get(), polls.get()), (0, POLLS));
    }

    #[test]
    fn one_that_keeps_waking_itself_goes_back_to_the_runtime_as_a_yield() {
        let (count, waker) = counting();
        let polls = Arc::new(Count::default());
        let mut future = std::pin::pin!(repoll(waking_itself(POLLS, &polls)));
        assert!(poll_once(future.as_mut(), &waker).is_pending());
        assert_eq!((count.get(), polls.get()), (1, POLLS));
        assert!(poll_once(future.as_mut(), &waker).is_ready());
    }

    #[test]
    fn a_future_not_woken_is_polled_once() {
        let (count, waker) = counting();
        let polls = Arc::new(Count::default());
        let mut future = std::pin::pin!(repoll(counted(&polls, |_, _| Poll::<()>::Pending)));
        assert!(poll_once(future.as_mut(), &waker).is_pending());
        assert_eq!((count.get(), polls.get()), (0, 1));
    }

    #[test]
    fn a_wake_from_another_thread_during_the_poll_polls_again() {
        let (count, waker) = counting();
        let polls = Arc::new(Count::default());
        let mut future = std::pin::pin!(repoll(counted(&polls, |cx, polled| {
            if polled == 1 {
                return Poll::Ready(());
            }
            let other = cx.waker().clone();
            std::thread::spawn(move || other.wake())
                .join()
                .expect("the waking thread ended");
            Poll::Pending
        })));
        assert!(poll_once(future.as_mut(), &waker).is_ready());
        assert_eq!((count.get(), polls.get()), (0, 2));
    }

    #[test]
    fn a_wake_after_the_poll_reaches_the_latest_task() {
        let (first, first_waker) = counting();
        let (latest, latest_waker) = counting();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut future = std::pin::pin!(repoll(rx));
        assert!(poll_once(future.as_mut(), &first_waker).is_pending());
        assert!(poll_once(future.as_mut(), &latest_waker).is_pending());
        std::thread::spawn(move || tx.send(()))
            .join()
            .expect("the sending thread ended")
            .expect("the receiver is alive");
        assert_eq!((first.get(), latest.get()), (0, 1));
        assert!(poll_once(future.as_mut(), &latest_waker).is_ready());
    }

    /// What it is for: hyper, serving a request with a body, wakes its own
    /// connection; under `repoll` none of that reaches the runtime, and the
    /// answer is written in one poll.
    #[tokio::test]
    async fn hyper_serving_a_post_wakes_nothing_through_the_runtime() {
        let (mut client, server) = tokio::io::duplex(64 << 10);
        client
            .write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello")
            .await
            .expect("written");
        let echo = hyper::service::service_fn(
            |request: hyper::Request<hyper::body::Incoming>| async move {
                let body = request.into_body().collect().await?.to_bytes();
                Ok::<_, hyper::Error>(hyper::Response::new(http_body_util::Full::new(body)))
            },
        );
        let connection = hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(server), echo);
        let mut connection = std::pin::pin!(repoll(connection));
        let (count, waker) = counting();
        let poll = poll_once(connection.as_mut(), &waker);
        assert!(
            poll.is_pending(),
            "the connection waits for the next request"
        );
        assert_eq!(count.get(), 0, "no wake went to the runtime");
        let mut answer = vec![0; 1024];
        let n = client.read(&mut answer).await.expect("read");
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("hello"),
            "{answer}"
        );
    }
}
