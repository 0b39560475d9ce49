//! Closing idle HTTP sessions. rmcp's own idle timer counts a session
//! whose request is still being answered (a long call in answer mode
//! "final") as idle, so the server keeps its own account of each session's
//! requests here instead.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rmcp::transport::streamable_http_server::SessionManager;

use super::sessions::Sessions;

/// The header that names an HTTP session (`Mcp-Session-Id`).
pub(super) const SESSION_HEADER: &str = "mcp-session-id";

/// When each HTTP session was last asked something, and how many of its
/// requests are being answered: a session with none for the idle time is
/// closed ([`close_idle`]). Only sessions open in the session manager are
/// followed, so a client naming made-up session ids adds nothing here.
#[derive(Default)]
pub(super) struct Activity {
    sessions: std::sync::Mutex<HashMap<Arc<str>, Seen>>,
}

struct Seen {
    /// When the server began to follow it.
    followed: Instant,
    last: Instant,
    answering: usize,
}

/// A request of a session being answered; dropped with its answer.
pub(super) struct Answering {
    activity: Arc<Activity>,
    session: Arc<str>,
}

impl Activity {
    fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Seen>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A request of a followed session came: it is active now, and it is
    /// being answered until the returned guard is dropped (a POST's answer,
    /// or a GET's stream of the server's messages).
    pub(super) fn request<B>(self: &Arc<Self>, request: &hyper::Request<B>) -> Option<Answering> {
        let id = request.headers().get(SESSION_HEADER)?.to_str().ok()?;
        let mut seen = self.seen();
        let session = seen.get_key_value(id)?.0.clone();
        let entry = seen.get_mut(&session)?;
        entry.last = Instant::now();
        if request.method() == hyper::Method::DELETE {
            return None;
        }
        entry.answering += 1;
        Some(Answering {
            activity: self.clone(),
            session,
        })
    }

    /// An `initialize` was answered with a session: follow it.
    pub(super) fn opened(&self, response: &hyper::Response<impl Sized>) {
        if let Some(id) = (response.headers().get(SESSION_HEADER)).and_then(|v| v.to_str().ok()) {
            self.seen()
                .entry(id.into())
                .or_insert_with(|| Seen::at(Instant::now()));
        }
    }

    /// Take out the sessions idle for `idle` at `now`, given those `open`
    /// as read at `now`. Sessions ended otherwise (DELETE, shutdown) are
    /// forgotten, but not those followed since `now`, which the reading
    /// missed; open ones not followed yet (their `initialize` was answered
    /// to a client already gone) are followed from now on.
    fn sweep(&self, open: &HashSet<Arc<str>>, idle: Duration, now: Instant) -> Vec<Arc<str>> {
        let mut seen = self.seen();
        seen.retain(|id, s| open.contains(id) || s.followed > now);
        for id in open {
            seen.entry(id.clone()).or_insert_with(|| Seen::at(now));
        }
        let stale: Vec<Arc<str>> = seen
            .iter()
            .filter(|(_, s)| s.answering == 0 && now.saturating_duration_since(s.last) >= idle)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &stale {
            seen.remove(id);
        }
        stale
    }
}

impl Seen {
    /// Followed from `now`, with no request being answered.
    fn at(now: Instant) -> Self {
        Self {
            followed: now,
            last: now,
            answering: 0,
        }
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        if let Some(entry) = self.activity.seen().get_mut(&self.session) {
            entry.answering -= 1;
            entry.last = Instant::now();
        }
    }
}

/// Close the sessions that have had no request for `idle` and none being
/// answered (B24: their calls are cancelled); their clients get 404 and
/// open new ones. Checked every quarter of `idle`; each closes on its own
/// task, so one whose calls take their close timeout delays no other.
pub(super) async fn close_idle(activity: Arc<Activity>, sessions: Arc<Sessions>, idle: Duration) {
    let every = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(30));
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let now = Instant::now();
        let open: HashSet<Arc<str>> = sessions
            .local()
            .sessions
            .read()
            .await
            .keys()
            .cloned()
            .collect();
        for id in activity.sweep(&open, idle, now) {
            tracing::info!(session = %id, ?idle, "MCP HTTP session idle; closing it");
            let sessions = sessions.clone();
            tokio::spawn(async move {
                if let Err(e) = sessions.close_session(&id).await {
                    tracing::debug!(session = %id, error = %e, "closing an idle session");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(10);

    fn request(method: hyper::Method, session: &str) -> hyper::Request<()> {
        hyper::Request::builder()
            .method(method)
            .header(SESSION_HEADER, session)
            .body(())
            .expect("a request")
    }

    fn set(ids: &[&str]) -> HashSet<Arc<str>> {
        ids.iter().map(|&id| id.into()).collect()
    }

    #[test]
    fn a_session_is_idle_only_with_no_request_for_the_idle_time() {
        let activity = Arc::new(Activity::default());
        let opened = hyper::Response::builder()
            .header(SESSION_HEADER, "a")
            .body(())
            .expect("a response");
        activity.opened(&opened);
        let open = set(&["a"]);
        let get = activity.request(&request(hyper::Method::GET, "a"));
        assert!(get.is_some(), "a GET's stream is being answered");
        let later = Instant::now() + IDLE * 2;
        assert!(
            activity.sweep(&open, IDLE, later).is_empty(),
            "its stream is open"
        );
        drop(get);
        let ended = Instant::now();
        assert!(activity.sweep(&open, IDLE, ended + IDLE / 2).is_empty());
        let delete = activity.request(&request(hyper::Method::DELETE, "a"));
        assert!(delete.is_none(), "a DELETE is not waited for");
        let idle = Instant::now() + IDLE;
        assert_eq!(activity.sweep(&open, IDLE, idle), vec![Arc::from("a")]);
        assert!(
            activity.sweep(&open, IDLE, idle).is_empty(),
            "taken out once"
        );
    }

    #[test]
    fn an_open_session_never_answered_to_its_client_is_closed_when_idle() {
        // Its `initialize` answer never reached `opened` (the client left,
        // or the sweep read the open sessions just before).
        let activity = Arc::new(Activity::default());
        let open = set(&["lost"]);
        let now = Instant::now();
        assert!(
            activity.sweep(&open, IDLE, now).is_empty(),
            "followed from now"
        );
        let stale = activity.sweep(&open, IDLE, now + IDLE);
        assert_eq!(stale, vec![Arc::from("lost")]);
        let made_up = activity.request(&request(hyper::Method::POST, "made-up"));
        assert!(made_up.is_none());
        assert!(activity.sweep(&set(&[]), IDLE, now).is_empty());
        assert!(activity.seen().is_empty(), "closed sessions are forgotten");
    }

    #[test]
    fn a_session_opened_after_the_open_ones_were_read_is_kept() {
        let activity = Arc::new(Activity::default());
        let read = Instant::now();
        let opened = hyper::Response::builder()
            .header(SESSION_HEADER, "new")
            .body(())
            .expect("a response");
        activity.opened(&opened);
        let busy = activity.request(&request(hyper::Method::POST, "new"));
        assert!(busy.is_some());
        assert!(activity.sweep(&set(&[]), IDLE, read).is_empty());
        // Followed still, with its request: never idle while it is answered.
        let later = Instant::now() + IDLE * 2;
        for at in [later, later + IDLE] {
            assert!(
                activity.sweep(&set(&["new"]), IDLE, at).is_empty(),
                "its request is still being answered"
            );
        }
        drop(busy);
        assert!(activity.sweep(&set(&[]), IDLE, later).is_empty());
        assert!(activity.seen().is_empty(), "closed, it is forgotten");
    }
}
