//! What the MCP HTTP server and the dashboard share: connections accepted
//! under a cap (past it a connection is answered 503 with a message naming
//! the limit, and closed), and request bodies read whole under a size and
//! a time limit.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// An HTTP response whose body is built in memory.
pub(crate) type Response = hyper::Response<BoxBody<Bytes, Infallible>>;

/// How long the server waits before accepting again after `accept` failed
/// (out of file descriptors, most often).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Connections past the cap being answered with a 503; past this many such
/// answers in progress, further ones are closed unanswered.
const REFUSALS: usize = 64;

/// How long a connection past the cap may take to send the request its
/// 503 answers.
const REFUSAL_TIME: Duration = Duration::from_secs(1);

/// How long a client may take to send a request's header; a client that
/// sends half a header and waits is dropped then.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a request's body may take to arrive, from its header on.
pub const BODY_TIME: Duration = Duration::from_secs(10);

/// How much of a body past its size limit is read (and dropped) before
/// the 413 answer: a client that is still sending would otherwise never
/// read it.
const DRAIN_MAX: usize = 512 * 1024 * 1024;

/// Why a request's body was not read. Its `Display` is the text for the
/// client; the servers answer it with [`status`](Self::status).
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyRefused {
    /// Over the size limit.
    #[error("the request body is over the limit of {max} bytes")]
    TooLarge { max: usize },
    /// Not all there in time.
    #[error("the request body took longer than {} s to arrive", time.as_secs_f64())]
    TooSlow { time: Duration },
    /// The connection failed while it was read.
    #[error("the request body could not be read")]
    Unreadable,
}

impl BodyRefused {
    /// The HTTP status it is answered with: 413, 408 or 400.
    pub(crate) fn status(&self) -> hyper::StatusCode {
        match self {
            Self::TooLarge { .. } => hyper::StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooSlow { .. } => hyper::StatusCode::REQUEST_TIMEOUT,
            Self::Unreadable => hyper::StatusCode::BAD_REQUEST,
        }
    }
}

/// Read `body` whole, at most `max` bytes, within `time` (the servers give
/// [`BODY_TIME`]). Past `max` the rest is read and dropped, up to 512 MiB
/// and within the same time, so that the client gets to read the 413
/// answer.
pub(crate) async fn read_body<B>(body: B, max: usize, time: Duration) -> Result<Bytes, BodyRefused>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    // Room for what the body says it holds, within the limit and at most
    // 256 KiB before anything arrived: a declared length costs nothing
    // until the bytes come.
    let expected = usize::try_from(body.size_hint().lower()).unwrap_or(max);
    let mut body = std::pin::pin!(body);
    let mut bytes = bytes::BytesMut::with_capacity(expected.min(max).min(256 << 10));
    let mut read = 0usize;
    let drain = async {
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            read = read.saturating_add(data.len());
            if read <= max {
                bytes.extend_from_slice(&data);
            } else {
                bytes = bytes::BytesMut::new();
                if read > DRAIN_MAX {
                    break;
                }
            }
        }
        Ok::<_, B::Error>(())
    };
    match tokio::time::timeout(time, drain).await {
        Ok(Ok(())) if read <= max => Ok(bytes.freeze()),
        Err(_) if read <= max => {
            tracing::debug!(read, "a request body took too long");
            Err(BodyRefused::TooSlow { time })
        }
        Ok(Ok(())) | Err(_) => Err(BodyRefused::TooLarge { max }),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "reading a request body failed");
            Err(BodyRefused::Unreadable)
        }
    }
}

/// The HTTP/1 connection settings both servers use: a client that has
/// not sent a request's header within [`HEADER_READ_TIMEOUT`] is dropped.
pub(crate) fn http1() -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
}

/// Accept connections on `listener` until `shutdown` resolves, at most
/// `max` open at once. Each accepted one goes to `connection` with the
/// permit that counts it (dropped when the connection ends); one past the
/// cap is answered with `refusal`, which names the limit, and closed.
/// Returns the semaphore of open connections, to wait for them.
pub(crate) async fn accept_until(
    listener: &TcpListener,
    max: usize,
    refusal: fn(usize) -> Response,
    shutdown: impl Future<Output = ()>,
    mut connection: impl FnMut(TcpStream, SocketAddr, OwnedSemaphorePermit),
) -> Arc<Semaphore> {
    let open = Arc::new(Semaphore::new(max));
    let refusals = Arc::new(Semaphore::new(REFUSALS));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, most often: retrying at once
                    // would spin until one is closed.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        // An answer goes out in more than one write: without this, Nagle's
        // algorithm holds the last one back until the client acknowledges
        // the first, which it delays, about 40 ms a request.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        match open.clone().try_acquire_owned() {
            Ok(permit) => connection(stream, peer, permit),
            Err(_) => {
                tracing::warn!(%peer, max, "HTTP connection limit reached; connection refused");
                if let Ok(slot) = refusals.clone().try_acquire_owned() {
                    tokio::spawn(refuse(stream, refusal(max), slot));
                }
            }
        }
    }
    open
}

/// Answer the request of a connection past the cap, then close it.
async fn refuse(stream: TcpStream, answer: Response, _slot: OwnedSemaphorePermit) {
    let answer = std::sync::Mutex::new(Some(answer));
    let refuse = hyper::service::service_fn(move |_request| {
        let answer = answer.lock().unwrap_or_else(|p| p.into_inner()).take();
        async move { Ok::<_, Infallible>(answer.unwrap_or_default()) }
    });
    let serving = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), refuse);
    let _ = tokio::time::timeout(REFUSAL_TIME, serving).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use http_body_util::StreamBody;
    use hyper::body::Frame;

    /// A body of `chunks`, then (if `more`) never another frame.
    fn body(
        chunks: &[&'static str],
        more: bool,
    ) -> StreamBody<impl futures::Stream<Item = Result<Frame<Bytes>, Infallible>>> {
        let sent = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))));
        let sent = futures::stream::iter(sent.collect::<Vec<_>>());
        let rest = if more {
            futures::stream::pending().boxed()
        } else {
            futures::stream::empty().boxed()
        };
        StreamBody::new(sent.chain(rest))
    }

    #[tokio::test]
    async fn a_body_is_read_whole_up_to_its_limit() {
        let read = read_body(body(&["ab", "cd"], false), 4, BODY_TIME).await;
        assert_eq!(read.expect("read"), "abcd");
        let over = read_body(body(&["ab", "cde"], false), 4, BODY_TIME).await;
        assert!(
            matches!(over, Err(BodyRefused::TooLarge { max: 4 })),
            "{over:?}"
        );
        let over = over.expect_err("too large");
        assert_eq!(over.status(), hyper::StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            over.to_string(),
            "the request body is over the limit of 4 bytes"
        );
    }

    #[tokio::test]
    async fn a_body_that_stops_arriving_is_refused_when_its_time_is_up() {
        let time = Duration::from_millis(50);
        let slow = read_body(body(&["ab"], true), 4, time)
            .await
            .expect_err("too slow");
        assert_eq!(slow.status(), hyper::StatusCode::REQUEST_TIMEOUT);
        assert_eq!(
            slow.to_string(),
            "the request body took longer than 0.05 s to arrive"
        );
        // Past the limit and still coming: too large, not too slow.
        let over = read_body(body(&["abcde"], true), 4, time).await;
        assert!(
            matches!(over, Err(BodyRefused::TooLarge { max: 4 })),
            "{over:?}"
        );
    }

    #[tokio::test]
    async fn an_accepted_connection_sends_without_delay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (seen, nodelay) = tokio::sync::oneshot::channel();
        let mut seen = Some(seen);
        let handed = Arc::new(tokio::sync::Notify::new());
        let stop = {
            let handed = handed.clone();
            async move { handed.notified().await }
        };
        let client = tokio::spawn(TcpStream::connect(addr));
        let refusal = |_| unreachable!("one connection");
        accept_until(&listener, 1, refusal, stop, |stream, _, _| {
            if let Some(seen) = seen.take() {
                let _ = seen.send(stream.nodelay().expect("nodelay"));
            }
            handed.notify_one();
        })
        .await;
        client.await.expect("join").expect("connect");
        assert!(nodelay.await.expect("a connection"));
    }
}
