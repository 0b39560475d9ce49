//! `tools/call`s answered without rmcp's service loop, in the task that
//! read them: what the stdio reader and the HTTP sessions share.
//!
//! rmcp's loop hands each request to a task of its own and each answer
//! back through the transport: over stdio one hop more than needed, over
//! HTTP four (the session's worker, the loop, the handler, the worker
//! again) on top of the connection's. A call handled directly is polled
//! first where it was read ([`ends_in_first_poll`]), and most calls end
//! there.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;

use rmcp::model::{
    ClientJsonRpcMessage, ClientNotification, ClientRequest, ErrorData, GetExtensions, GetMeta,
    JsonRpcRequest, RequestId, ServerJsonRpcMessage,
};
use rmcp::service::{RequestContext, Service};
use rmcp::{Peer, RoleServer};
use tokio_util::sync::CancellationToken;

use super::server::ToolServer;

/// Handle `request` as rmcp's service loop would: with a context carrying
/// its id, its `_meta` (the progress token, the protocol version), its
/// extensions (over HTTP, the request's head) and `cancel`.
pub(crate) async fn answer(
    server: &ToolServer,
    peer: &Peer<RoleServer>,
    request: JsonRpcRequest<ClientRequest>,
    cancel: CancellationToken,
) -> ServerJsonRpcMessage {
    let JsonRpcRequest {
        id, mut request, ..
    } = request;
    let mut context = RequestContext::new(id.clone(), peer.clone());
    context.ct = cancel;
    std::mem::swap(&mut context.meta, request.get_meta_mut());
    std::mem::swap(&mut context.extensions, request.extensions_mut());
    match server.handle_request(request, context).await {
        Ok(result) => ServerJsonRpcMessage::response(result, id),
        Err(error) => ServerJsonRpcMessage::error(error, Some(id)),
    }
}

/// Poll a call once, here in the task that read it; whether it has ended.
///
/// The poll is given a waker that does nothing: what the call wakes in it
/// (its update channel, closed as its sandbox is dropped) would otherwise
/// wake the reader, which its next pause then rescheduled as a yield,
/// waking the other thread all the same. A call left pending loses nothing
/// by it, since the task it is then spawned in polls it again at once and
/// registers its own waker.
///
/// A panic ends the call as it ends a spawned task: the call is dropped
/// (what it holds freed, nothing answered) and the reader goes on.
pub(crate) fn ends_in_first_poll<F: Future<Output = ()>>(call: Pin<&mut F>) -> bool {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| call.poll(&mut cx)));
    polled.map_or_else(
        |_| {
            tracing::error!("a tools/call handler panicked; the call is dropped");
            true
        },
        |poll| poll.is_ready(),
    )
}

/// The request a `notifications/cancelled` cancels.
pub(crate) fn cancelled_id(message: &ClientJsonRpcMessage) -> Option<&RequestId> {
    match message {
        ClientJsonRpcMessage::Notification(n) => match &n.notification {
            ClientNotification::CancelledNotification(c) => c.params.request_id.as_ref(),
            _ => None,
        },
        _ => None,
    }
}

/// The refusal of a request whose id an unanswered request holds.
pub(crate) fn id_in_use(id: RequestId) -> ServerJsonRpcMessage {
    tracing::warn!(%id, "an MCP request reuses the id of one not yet answered");
    ServerJsonRpcMessage::error(
        ErrorData::invalid_request(
            format!(
                "request id {id} is already in use by a request not yet answered; \
                 a client never reuses a request id. The request was not run"
            ),
            None,
        ),
        Some(id),
    )
}
