//! The limits every call runs under.

use std::time::Duration;

use crate::manifest::LimitOverrides;

/// Per-call limits of a plugin: the host's defaults with the manifest's
/// `[limits]` on top.
///
/// Defaults:
/// - `fuel`: 10 000 000 000 units per call (seconds of compute)
/// - `memory`: 128 MiB per instance
/// - `timeout`: 5 minutes of wall clock per call
/// - `max_concurrency`: 16 running calls per plugin; more wait their turn
/// - `cancel_grace`: 1 second between a cancel and a forced stop
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub fuel: u64,
    pub memory: u64,
    pub timeout: Duration,
    pub max_concurrency: u32,
    pub cancel_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            fuel: 10_000_000_000,
            memory: 128 << 20,
            timeout: Duration::from_secs(300),
            max_concurrency: 16,
            cancel_grace: Duration::from_secs(1),
        }
    }
}

impl Limits {
    /// These limits with a manifest's overrides applied.
    pub fn with(&self, o: &LimitOverrides) -> Self {
        Self {
            fuel: o.fuel.unwrap_or(self.fuel),
            memory: o.memory.unwrap_or(self.memory),
            timeout: o.timeout.unwrap_or(self.timeout),
            max_concurrency: o.max_concurrency.unwrap_or(self.max_concurrency),
            cancel_grace: o.cancel_grace.unwrap_or(self.cancel_grace),
        }
    }
}
