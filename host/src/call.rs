//! The call engine: validate the arguments, run one call in a fresh sandbox
//! under its limits, and turn what happened into an outcome.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, TryAcquireError};

use crate::arguments::canonical_json;
use crate::bindings::ToolError;
use crate::engine::{Cooperative, InstancePermit, Runtime, run_slice};
use crate::error::{CallError, Limit};
use crate::ids::CallIdentity;
use crate::plugin::{Plugin, Tool, is_out_of_fuel};
use crate::registry::ToolEntry;
use crate::sandbox::{CallControl, CallState, Updates};
use crate::slots::Turns;

/// What a tool returned. `text` is what the model reads; `data` is the
/// structured result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Output {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

/// A value as JSON text. serde_json's writer, not its `Display`, which
/// goes through the formatter a few bytes at a time: 2.5 times as slow for
/// a small value.
pub(crate) fn json_text(value: &Value) -> String {
    serde_json::to_string(value).expect("JSON values are written: their keys are strings")
}

impl Output {
    /// What the model reads: the text, or else the data as JSON text; `None`
    /// when the tool returned neither.
    pub fn model_text(&self) -> Option<String> {
        match (&self.text, &self.data) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(d)) => Some(json_text(d)),
            (None, None) => None,
        }
    }
}

/// How one call ended.
#[derive(Debug, Clone)]
pub struct CallOutcome {
    pub call_id: String,
    pub tool: String,
    pub result: Result<Output, CallError>,
    /// Fuel the call burned; 0 when the plugin was never entered.
    pub fuel_used: u64,
    pub elapsed: Duration,
}

impl CallOutcome {
    /// The call's answer as the model reads it (B1, B5).
    pub fn model_text(&self) -> String {
        match &self.result {
            Ok(out) => out.model_text().unwrap_or_default(),
            Err(e) => e.model_message(),
        }
    }
}

/// Run one call of `entry`'s tool with validated `arguments` in a fresh sandbox,
/// and log how it ended.
///
/// Waits for a free slot under the plugin's concurrency cap first, in its
/// session's turn (`turns`), then for a free instance of the pool; the
/// timeout counts from the start of the run. Updates the plugin sends go
/// to `updates`.
pub(crate) async fn run(
    runtime: &Runtime,
    ToolEntry { plugin, tool }: &ToolEntry,
    arguments: &Value,
    identity: CallIdentity,
    turns: &Turns,
    control: Arc<CallControl>,
    updates: Option<Updates>,
) -> CallOutcome {
    let started = std::time::Instant::now();
    let call_id = identity.call_id.clone();
    let (result, fuel_used) = async {
        let limits = &plugin.limits;
        // The slot and the instance are held until after the store below
        // is freed (see the end).
        let (slot, pooled) = match enter(runtime, plugin, turns, &control).await {
            Ok(held) => held,
            Err(e) => return (Err(e), 0),
        };
        let state = CallState::new(&plugin.grants, identity, limits, control.clone(), updates);
        let mut store = match runtime.store(limits.metering, state, limits.fuel) {
            Ok(s) => s,
            Err(e) => {
                return (
                    Err(CallError::Unavailable {
                        detail: format!("{e:#}"),
                    }),
                    0,
                );
            }
        };

        let arguments = canonical_json(arguments);
        let run = async {
            let instance = plugin
                .pre
                .instantiate_async(&mut store)
                .await
                .map_err(|e| (true, e))?;
            instance
                .toolhost_plugin_tool()
                .call_call(&mut store, &tool.name, &arguments)
                .await
                .map_err(|e| (false, e))
        };
        let ended = {
            // Dropped with this block, so that `store` is free again after.
            let run = std::pin::pin!(run);
            let run = Cooperative::new(run, run_slice(limits.metering), || {
                control.is_force_stopped()
            });
            tokio::select! {
                // A call stopped by force is not polled into its plugin again.
                biased;
                () = control.force_stopped() => Err(CallError::Cancelled),
                r = tokio::time::timeout(limits.timeout, run) => match r {
                    Ok(r) => Ok(r),
                    Err(_) => Err(CallError::Limit(Limit::Timeout(limits.timeout))),
                },
            }
        };
        let fuel_used = Runtime::fuel_used(&store, limits.fuel);
        let result = match ended {
            Err(e) => Err(e),
            Ok(Err((true, e))) => Err(CallError::Unavailable {
                detail: format!("instantiating: {e:#}"),
            }),
            Ok(Err((false, e))) => Err(if is_out_of_fuel(&e) {
                CallError::Limit(Limit::Fuel(limits.fuel))
            } else if let Some(limit) = store.data().limit_hit(&e) {
                CallError::Limit(limit)
            } else {
                CallError::Crashed {
                    detail: format!("{e:?}"),
                }
            }),
            Ok(Ok(Err(ToolError::InvalidArguments(m)))) => Err(CallError::ToolInvalidArguments(m)),
            Ok(Ok(Err(ToolError::Failed(m)))) => Err(CallError::ToolFailed(m)),
            // Checked under the plugin's slot, which bounds how many of its
            // results are held at once.
            Ok(Ok(Ok(out))) => check_output(tool, out.text, out.data, limits.result_size).await,
        };
        // The store first, then the instance and the slot it held (a call
        // waiting for the slot then finds an instance free): freed now, or
        // once the answer is out where the caller writes it.
        crate::leftovers::leave((store, pooled, slot));
        (result, fuel_used)
    }
    .await;
    let outcome = CallOutcome {
        call_id,
        tool: tool.name.clone(),
        result,
        fuel_used,
        elapsed: started.elapsed(),
    };
    log_outcome(&plugin.name, &outcome);
    outcome
}

/// Take what a call runs in: a slot under its plugin's cap, then an
/// instance of the pool all plugins share.
///
/// A call that has to wait for a slot first waits for its session's turn
/// at the plugin (`turns`), which it holds until it has both: a session
/// has one call at a time in the plugin's queue, so that freed slots go
/// round the sessions waiting, not to whichever session queued most.
///
/// A call that finds both free enters its plugin even if it was cancelled
/// already: its tool reads `cancelled()` as true at once (B21), so a call
/// listed as running gets to clean up whenever the cancel comes, unless
/// it was stopped by force. A call that has to wait for either stops at
/// its cancel: it has nothing to clean up, and no reason to wait for its
/// grace period.
async fn enter(
    runtime: &Runtime,
    plugin: &Plugin,
    turns: &Turns,
    control: &CallControl,
) -> Result<(OwnedSemaphorePermit, InstancePermit), CallError> {
    let metering = plugin.limits.metering;
    let instance = async || runtime.instance(metering).await.map_err(unavailable);
    match plugin.running.free() {
        Ok(slot) => {
            if let Some(instance) = runtime.free_instance(metering).map_err(unavailable)? {
                if control.is_force_stopped() {
                    return Err(CallError::Cancelled);
                }
                return Ok((slot, instance));
            }
            wait_for(control, async { Ok((slot, instance().await?)) }).await
        }
        Err(TryAcquireError::NoPermits) => {
            let turn = turns.of(&plugin.path);
            let held = async {
                let _turn = turn.lock().await;
                let slot = plugin.running.next().await.map_err(|_| unloaded())?;
                Ok((slot, instance().await?))
            };
            wait_for(control, held).await
        }
        Err(TryAcquireError::Closed) => Err(unloaded()),
    }
}

/// Wait for `held`, unless `control` is cancelled first (or by the time
/// it is held).
async fn wait_for<T>(
    control: &CallControl,
    held: impl Future<Output = Result<T, CallError>>,
) -> Result<T, CallError> {
    let held = tokio::select! {
        biased;
        () = control.cancel_requested() => return Err(CallError::Cancelled),
        held = held => held?,
    };
    if control.is_cancelled() {
        return Err(CallError::Cancelled);
    }
    Ok(held)
}

/// How a call ends that its plugin's unloading stopped before it ran.
fn unloaded() -> CallError {
    let detail = "the plugin was unloaded".to_owned();
    CallError::Unavailable { detail }
}

/// How a call ends that could not get an instance of the pool.
fn unavailable(e: anyhow::Error) -> CallError {
    let detail = format!("{e:#}");
    CallError::Unavailable { detail }
}

/// Data or arguments bigger than this are parsed and validated off the
/// runtime's threads: a megabyte of JSON takes milliseconds, which would
/// hold up every other call and connection on that thread.
pub(crate) const CHECK_INLINE: usize = 64 << 10;

/// The result a tool returned, checked: within `max` bytes, and its data
/// JSON that matches the tool's output schema.
async fn check_output(
    tool: &Arc<Tool>,
    text: Option<String>,
    data: Option<String>,
    max: u64,
) -> Result<Output, CallError> {
    if data.as_ref().is_none_or(|d| d.len() <= CHECK_INLINE) {
        return convert_output(tool, text, data, max);
    }
    let tool = tool.clone();
    tokio::task::spawn_blocking(move || convert_output(&tool, text, data, max))
        .await
        .unwrap_or_else(|e| {
            Err(CallError::Crashed {
                detail: format!("checking the tool's result panicked: {e}"),
            })
        })
}

fn convert_output(
    tool: &Tool,
    text: Option<String>,
    data: Option<String>,
    max: u64,
) -> Result<Output, CallError> {
    let size = text.as_ref().map_or(0, String::len) + data.as_ref().map_or(0, String::len);
    if size as u64 > max {
        return Err(CallError::Limit(Limit::ResultSize(max)));
    }
    let data = match data {
        None => None,
        Some(d) => {
            let v: Value = serde_json::from_str(&d).map_err(|e| CallError::Crashed {
                detail: format!("the tool returned data that is not JSON: {e}"),
            })?;
            if let Some(validator) = tool.output_validator() {
                let problems = crate::schema::problems(validator?, &v, 1);
                if let Some(problem) = problems.map_or_else(Some, |p| p.into_iter().next()) {
                    return Err(CallError::Crashed {
                        detail: format!(
                            "the tool returned data that does not match its output schema: {problem}"
                        ),
                    });
                }
            }
            Some(v)
        }
    };
    Ok(Output { text, data })
}

/// Log how a call ended, for the operator.
fn log_outcome(plugin: &str, o: &CallOutcome) {
    let elapsed_us = o.elapsed.as_micros() as u64;
    match &o.result {
        Ok(_) => {
            tracing::debug!(plugin, tool = %o.tool, call_id = %o.call_id, fuel = o.fuel_used, elapsed_us, "call done")
        }
        Err(CallError::Crashed { detail } | CallError::Unavailable { detail }) => tracing::warn!(
            plugin, tool = %o.tool, call_id = %o.call_id, fuel = o.fuel_used, elapsed_us, %detail, "call failed"
        ),
        Err(CallError::Limit(limit)) => tracing::warn!(
            plugin, tool = %o.tool, call_id = %o.call_id, fuel = o.fuel_used, elapsed_us, %limit, "call hit a limit"
        ),
        Err(e) => {
            tracing::info!(plugin, tool = %o.tool, call_id = %o.call_id, fuel = o.fuel_used, elapsed_us, error = %e, "call ended with an error")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HostConfig;
    use crate::testing::copy_test_plugin;

    /// A call of behave's `wait_cancel` (loaded into a runtime of its own)
    /// whose control `stop` has acted on before it runs.
    async fn wait_cancel_after(stop: impl FnOnce(&CallControl)) -> CallOutcome {
        let folder = tempfile::tempdir().expect("temp dir");
        let path = copy_test_plugin("behave", folder.path());
        let config = HostConfig::default();
        let runtime = Arc::new(Runtime::new(&config.engine, None).expect("runtime"));
        let plugin = (crate::plugin::load(&runtime, &config, &path).await).expect("behave loads");
        let tool = (plugin.tools.iter().find(|t| t.name == "wait_cancel"))
            .expect("the tool")
            .clone();
        let identity = CallIdentity {
            plugin: "behave".into(),
            tool: tool.name.clone(),
            call_id: "c1".into(),
            session_id: "s1".into(),
        };
        let control = Arc::new(CallControl::default());
        stop(&control);
        let args = serde_json::json!({});
        let entry = ToolEntry {
            plugin: Arc::new(plugin),
            tool,
        };
        run(
            &runtime,
            &entry,
            &args,
            identity,
            &Turns::default(),
            control,
            None,
        )
        .await
    }

    /// A cancel that comes before the call has taken its free sandbox does
    /// not decide whether the tool sees it: the tool reads the flag (B21).
    #[tokio::test]
    async fn b21_a_call_cancelled_before_it_enters_a_free_sandbox_reads_the_flag() {
        let ended = wait_cancel_after(|c| CallControl::stop_all([(c, false)])).await;
        let out = ended.result.expect("the tool's own output");
        assert_eq!(out.text.as_deref(), Some("cleaned up"));
    }

    /// A call stopped by force before it entered never enters, free
    /// sandbox or not (B21, B24).
    #[tokio::test]
    async fn b21_a_call_stopped_by_force_before_it_enters_never_runs() {
        let ended = wait_cancel_after(CallControl::force_stop).await;
        assert!(
            matches!(ended.result, Err(CallError::Cancelled)),
            "{:?}",
            ended.result
        );
        assert_eq!(ended.fuel_used, 0, "it never ran");
    }
}
