//! Identifiers: of calls and sessions, and who a call is.
//!
//! Every id the host makes comes from here. An id is a kind, a part chosen
//! at random when the process starts, and a counter: unique on a host across
//! restarts, cheap to make, and not guessable from a count alone.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Who a call is, for the plugin's `call-info()` and for every log line.
#[derive(Debug, Clone, Default)]
pub(crate) struct CallIdentity {
    pub(crate) plugin: Arc<str>,
    pub(crate) tool: String,
    pub(crate) call_id: String,
    pub(crate) session_id: String,
}

/// A new call id: `call_<random>_<n>`.
pub(crate) fn call_id() -> String {
    next("call")
}

/// A new session id: `session_<random>_<n>`.
pub(crate) fn session_id() -> String {
    next("session")
}

fn next(kind: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    static RUN: OnceLock<String> = OnceLock::new();
    let run = RUN.get_or_init(|| {
        let bytes = uuid::Uuid::new_v4().into_bytes();
        bytes[..4].iter().map(|b| format!("{b:02x}")).collect()
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // At its length from the start: `format!` grew it twice, on every call.
    let mut id = String::with_capacity(kind.len() + run.len() + 2 + 20);
    for part in [kind, "_", run, "_"] {
        id.push_str(part);
    }
    write!(id, "{n}").expect("a String takes any text");
    id
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_differ_and_name_their_kind() {
        let a = super::call_id();
        let b = super::call_id();
        assert_ne!(a, b);
        assert!(a.starts_with("call_") && a.len() > "call_".len() + 9, "{a}");
        assert!(super::session_id().starts_with("session_"));
    }
}
