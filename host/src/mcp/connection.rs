//! One MCP connection's state: its session, its call ids, its tasks, and the
//! background work that lives exactly as long as it does.

use std::sync::Arc;

use rmcp::{Peer, RoleServer};
use tokio::sync::watch;

use super::McpOptions;
use super::tasks::Tasks;
use crate::host::Host;
use crate::session::Session;
use crate::templates::Templates;

/// A session and what the MCP layer keeps beside it.
pub(crate) struct Connection {
    host: Host,
    session: Session,
    options: Arc<McpOptions>,
    /// Its own table, or the one the sessionless requests of an HTTP
    /// server share.
    tasks: Arc<Tasks>,
    /// True once [`close`](Self::close) began; background work stops on it.
    closed: watch::Sender<bool>,
    /// Counts the open connections of an HTTP server, which waits for them
    /// on shutdown.
    open: Option<Arc<watch::Sender<usize>>>,
}

impl Connection {
    pub(crate) fn open(host: &Host, options: Arc<McpOptions>) -> Arc<Self> {
        Self::open_counted(host, options, None, None)
    }

    /// A connection counted in `open`, with the shared task table `tasks`
    /// (or a table of its own).
    pub(crate) fn open_counted(
        host: &Host,
        options: Arc<McpOptions>,
        open: Option<Arc<watch::Sender<usize>>>,
        tasks: Option<Arc<Tasks>>,
    ) -> Arc<Self> {
        let mut session_options = options.session.clone();
        session_options.id = None;
        // Later updates and results reach an MCP client through tasks or
        // the companion tools, never as deliveries: none are kept, and the
        // default texts say so.
        session_options.delivery = false;
        if session_options.templates.is_none() && *host.config().templates == Templates::default() {
            session_options.templates = Some(Arc::new(Templates::for_polling()));
        }
        let session = host.open_session(session_options);
        if let Some(open) = &open {
            open.send_modify(|n| *n += 1);
        }
        let connection = Arc::new(Self {
            host: host.clone(),
            tasks: tasks.unwrap_or_else(|| Arc::new(Tasks::for_connection(&options))),
            session,
            options,
            closed: watch::Sender::new(false),
            open,
        });
        tracing::info!(session = %connection.session.id(), "MCP connection opened");
        connection
    }

    pub(crate) fn host(&self) -> &Host {
        &self.host
    }

    pub(crate) fn session(&self) -> &Session {
        &self.session
    }

    pub(crate) fn options(&self) -> &McpOptions {
        &self.options
    }

    pub(crate) fn tasks(&self) -> &Tasks {
        &self.tasks
    }

    /// Resolves once the connection is closing.
    pub(crate) async fn closing(&self) {
        let mut rx = self.closed.subscribe();
        let _ = rx.wait_for(|closed| *closed).await;
    }

    /// Close the session (B24): cancel its cancellable calls, wait for the
    /// others up to the session's bound. Later calls of `close` return at once.
    pub(crate) async fn close(&self) {
        if self.closed.send_replace(true) {
            return;
        }
        tracing::info!(session = %self.session.id(), "MCP connection closing");
        self.session.close().await;
        if let Some(open) = &self.open {
            open.send_modify(|n| *n = n.saturating_sub(1));
        }
        tracing::info!(session = %self.session.id(), "MCP connection closed");
    }

    /// Start [`close`](Self::close) on a task of its own.
    pub(crate) fn close_soon(self: &Arc<Self>) {
        let connection = self.clone();
        tokio::spawn(async move { connection.close().await });
    }

    /// The changes of a load going on when the connection opened (the
    /// folder's first, at start) are no news: `tools/list` waits until the
    /// whole folder is listed ([`Host::listed`]), so the client's list has
    /// them. Waits for that and marks them seen; with no load going on, a
    /// change since `changed` was marked is news and stays unseen. A load
    /// that ends after the folder was listed changes nothing when it serves
    /// the tools it announced, and is news when it does not. (Checking
    /// `loading()` when a change wakes the follower instead raced with the
    /// load's end: the last plugin's change comes just before it, and was
    /// sent as news.)
    pub(crate) async fn skip_initial_load(&self, changed: &mut watch::Receiver<u64>) {
        if self.host.listing() {
            let listed_at = self.host.listed_at().await;
            // A change after the listing (the load of an announced plugin
            // that described other tools) stays news, even one that came
            // before this wakes.
            if *changed.borrow() == listed_at {
                changed.mark_unchanged();
            }
        }
    }

    /// Tell a legacy (`initialize`) client whenever the tool list changes,
    /// until the connection closes or the client goes.
    pub(crate) fn follow_tool_list(self: &Arc<Self>, peer: Peer<RoleServer>) {
        let connection = self.clone();
        let mut changed = self.host.tools_changed();
        changed.mark_unchanged();
        tokio::spawn(async move {
            tokio::select! {
                () = connection.closing() => return,
                () = connection.skip_initial_load(&mut changed) => {}
            }
            loop {
                tokio::select! {
                    () = connection.closing() => return,
                    result = changed.changed() => {
                        if result.is_err() {
                            return;
                        }
                    }
                }
                if let Err(e) = peer.notify_tool_list_changed().await {
                    tracing::debug!(session = %connection.session.id(), error = %e, "the client is gone; no more list_changed");
                    return;
                }
                tracing::info!(session = %connection.session.id(), "sent tools/list_changed");
            }
        });
    }
}

/// A connection that belongs to one rmcp service (an HTTP session): closed
/// when the service is dropped, which rmcp does when the session ends.
pub(crate) struct Owned(pub(crate) Arc<Connection>);

impl Drop for Owned {
    fn drop(&mut self) {
        let connection = self.0.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { connection.close().await });
            }
            // No runtime left: the process is ending, and dropping the
            // session stops its calls (B24).
            Err(_) => {
                tracing::debug!(session = %connection.session.id(), "closed without a runtime")
            }
        }
    }
}
