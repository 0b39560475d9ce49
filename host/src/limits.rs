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
/// - `max_concurrency`: 16 running calls per plugin; more wait their turn,
///   the waiting sessions one call each in turn
/// - `cancel_grace`: 1 second between a cancel and a forced stop
/// - `updates`: 10 000 `update()` calls per call
/// - `update_size`: 16 KiB per update message
/// - `result_size`: 16 MiB of result (text and data) per call
/// - `log`: 1 MiB of `log()` messages per call; past it they are counted
///   and dropped (a plugin's stdout and stderr have 64 KiB each)
/// - `metering`: [`Metering::Fuel`]
///
/// Exceeding `updates`, `update_size` or `result_size` ends the call as an
/// error naming the limit (B23).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Limits {
    pub fuel: u64,
    pub memory: u64,
    pub timeout: Duration,
    pub max_concurrency: u32,
    pub cancel_grace: Duration,
    pub updates: u64,
    pub update_size: u64,
    pub result_size: u64,
    pub log: u64,
    pub metering: Metering,
}

/// How a plugin's calls are metered, and so how they are interrupted.
///
/// `Fuel`, the default, counts the work a call does: the `fuel` limit
/// bounds it deterministically, and the same call stops at the same point
/// on any machine. It costs about a third more time on compute-heavy code
/// (Cranelift's counter update and check in every basic block).
///
/// `Epoch` gives that up: the plugin runs in an engine of its own with
/// epoch interruption, a check of a shared counter that a host thread
/// advances every millisecond, at loop heads and function entries only.
/// It was meant to be faster, but with wasmtime 48 it is not on the tight
/// loop measured (`count_primes`: +40 % to +60 % over unmetered, fuel +37 %
/// to +49 %; the check makes Cranelift spill registers in the loop). Its
/// calls have no fuel budget and report no fuel used; the time limit,
/// cancellation and the forced stop (B21) still apply, taking effect
/// within about a millisecond, also in a loop that never calls the host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Metering {
    #[default]
    Fuel,
    Epoch,
}

impl Metering {
    /// The name used in manifests and `toolhost.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Metering::Fuel => "fuel",
            Metering::Epoch => "epoch",
        }
    }
}

impl std::str::FromStr for Metering {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fuel" => Ok(Metering::Fuel),
            "epoch" => Ok(Metering::Epoch),
            other => Err(format!(
                "{other:?} is not a metering mode: use \"fuel\" (the default) or \"epoch\""
            )),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            fuel: 10_000_000_000,
            memory: 128 << 20,
            timeout: Duration::from_secs(300),
            max_concurrency: 16,
            cancel_grace: Duration::from_secs(1),
            updates: 10_000,
            update_size: 16 << 10,
            result_size: 16 << 20,
            log: 1 << 20,
            metering: Metering::Fuel,
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
            updates: o.updates.unwrap_or(self.updates),
            update_size: o.update_size.unwrap_or(self.update_size),
            result_size: o.result_size.unwrap_or(self.result_size),
            log: o.log.unwrap_or(self.log),
            metering: o.metering.unwrap_or(self.metering),
        }
    }
}

impl std::fmt::Display for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.metering {
            Metering::Fuel => write!(f, "fuel {}", self.fuel)?,
            Metering::Epoch => write!(f, "epoch-metered (no fuel budget)")?,
        }
        write!(
            f,
            ", memory {}, timeout {}, {} calls at once, cancel grace {}, \
             {} updates of {} at most, result {}, log {}",
            crate::error::format_bytes(self.memory),
            humantime::format_duration(self.timeout),
            self.max_concurrency,
            humantime::format_duration(self.cancel_grace),
            self.updates,
            crate::error::format_bytes(self.update_size),
            crate::error::format_bytes(self.result_size),
            crate::error::format_bytes(self.log),
        )
    }
}
