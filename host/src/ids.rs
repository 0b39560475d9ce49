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

/// The most digits a `u64` is written with.
const U64_DIGITS: usize = 20;

fn next(kind: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    static RUN: OnceLock<String> = OnceLock::new();
    let run = RUN.get_or_init(|| {
        let bytes = uuid::Uuid::new_v4().into_bytes();
        bytes[..4].iter().map(|b| format!("{b:02x}")).collect()
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // At its length from the start: `format!` grew it twice, on every call.
    let mut id = String::with_capacity(kind.len() + run.len() + 2 + U64_DIGITS);
    write!(id, "{kind}_{run}_{n}").expect("a String takes any text");
    id
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_differ_and_name_their_kind() {
        let a = super::call_id();
        let b = super::call_id();
        assert_ne!(a, b);
        for (id, kind) in [(a, "call"), (super::session_id(), "session")] {
            let parts: Vec<&str> = id.split('_').collect();
            assert_eq!(parts.len(), 3, "{id}");
            assert_eq!(parts[0], kind, "{id}");
            assert!(
                parts[1].len() == 8 && parts[1].bytes().all(|b| b.is_ascii_hexdigit()),
                "{id}"
            );
            assert!(parts[2].parse::<u64>().is_ok(), "{id}");
        }
        assert_eq!(u64::MAX.to_string().len(), super::U64_DIGITS);
    }
}
