//! Accepting HTTP connections under a cap, as the MCP HTTP server and the
//! dashboard both do: past the cap a connection is answered 503 with a
//! message naming the limit, and closed.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
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
