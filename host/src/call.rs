//! The call engine: validate the arguments, run one call in a fresh sandbox
//! under its limits, and turn what happened into an outcome.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;
use wasmtime::Store;

use crate::bindings::ToolError;
use crate::error::{CallError, Limit};
use crate::host::HostShared;
use crate::plugin::{Plugin, Tool, is_out_of_fuel};
use crate::sandbox::{CallControl, CallIdentity, CallState};

/// What a tool returned. `text` is what the model reads; `data` is the
/// structured result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Output {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl Output {
    /// What the model reads: the text, or else the data as JSON text; `None`
    /// when the tool returned neither.
    pub fn model_text(&self) -> Option<String> {
        match (&self.text, &self.data) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(d)) => Some(d.to_string()),
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

/// Parse `arguments` (JSON text) as a JSON object (B7).
pub(crate) fn parse_arguments(tool: &Tool, arguments: &str) -> Result<Value, CallError> {
    let invalid = |message: String| CallError::InvalidArguments {
        tool: tool.name.clone(),
        message,
    };
    let text = if arguments.trim().is_empty() {
        "{}"
    } else {
        arguments
    };
    let value: Value =
        serde_json::from_str(text).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(invalid("the arguments must be a JSON object".into()));
    }
    Ok(value)
}

/// Check parsed arguments against the tool's input schema (B7); the message
/// names each offending field.
pub(crate) fn check_arguments(tool: &Tool, value: &Value) -> Result<(), CallError> {
    let problems: Vec<String> = tool
        .validator
        .iter_errors(value)
        .take(5)
        .map(|e| {
            let at = e.instance_path.to_string();
            if at.is_empty() {
                e.to_string()
            } else {
                format!("at `{at}`: {e}")
            }
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CallError::InvalidArguments {
            tool: tool.name.clone(),
            message: problems.join("; "),
        })
    }
}

/// The value with integral floats written as integers. JSON Schema counts
/// `2.0` as an integer; most languages' JSON decoders do not, so plugins get
/// `2`.
pub(crate) fn integral_numbers(v: &Value) -> Value {
    match v {
        Value::Number(n) if n.is_f64() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
            _ => v.clone(),
        },
        Value::Array(items) => Value::Array(items.iter().map(integral_numbers).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), integral_numbers(v)))
                .collect(),
        ),
        _ => v.clone(),
    }
}

/// Run one call of `tool` with validated `arguments` in a fresh sandbox.
///
/// Waits for a free slot under the plugin's concurrency cap first; the
/// timeout counts from the start of the run. Updates the plugin sends go to
/// `updates`. Returns the result and the fuel used.
pub(crate) async fn run(
    shared: &HostShared,
    plugin: &Plugin,
    tool: &Tool,
    arguments: &Value,
    identity: CallIdentity,
    control: Arc<CallControl>,
    updates: Option<mpsc::UnboundedSender<String>>,
) -> (Result<Output, CallError>, u64) {
    let _permit = match plugin.running.clone().acquire_owned().await {
        Ok(p) => p,
        Err(_) => {
            return (
                Err(CallError::Unavailable {
                    detail: "the plugin was unloaded".into(),
                }),
                0,
            );
        }
    };
    let limits = &plugin.limits;
    let state = CallState::new(
        &plugin.grants,
        identity,
        limits.memory,
        control.clone(),
        updates,
    );
    let mut store = Store::new(&shared.engine, state);
    store.limiter(|s| s.limiter());
    if let Err(e) = crate::engine::meter(&mut store, limits.fuel, &shared.config.engine) {
        return (
            Err(CallError::Unavailable {
                detail: format!("{e:#}"),
            }),
            0,
        );
    }

    let arguments = integral_numbers(arguments).to_string();
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
    let ended = tokio::select! {
        r = tokio::time::timeout(limits.timeout, run) => match r {
            Ok(r) => Ok(r),
            Err(_) => Err(CallError::Limit(Limit::Timeout(limits.timeout))),
        },
        () = control.force_stopped() => Err(CallError::Cancelled),
    };
    let fuel_used = store
        .get_fuel()
        .map_or(0, |left| limits.fuel.saturating_sub(left));
    let result = match ended {
        Err(e) => Err(e),
        Ok(Err((true, e))) => Err(CallError::Unavailable {
            detail: format!("instantiating: {e:#}"),
        }),
        Ok(Err((false, e))) => Err(if is_out_of_fuel(&e) {
            CallError::Limit(Limit::Fuel(limits.fuel))
        } else if store.data().memory_limit_hit() {
            CallError::Limit(Limit::Memory(limits.memory))
        } else {
            CallError::Crashed {
                detail: format!("{e:?}"),
            }
        }),
        Ok(Ok(Err(ToolError::InvalidArguments(m)))) => Err(CallError::ToolInvalidArguments(m)),
        Ok(Ok(Err(ToolError::Failed(m)))) => Err(CallError::ToolFailed(m)),
        Ok(Ok(Ok(out))) => convert_output(tool, out.text, out.data),
    };
    (result, fuel_used)
}

fn convert_output(
    tool: &Tool,
    text: Option<String>,
    data: Option<String>,
) -> Result<Output, CallError> {
    let data = match data {
        None => None,
        Some(d) => {
            let v: Value = serde_json::from_str(&d).map_err(|e| CallError::Crashed {
                detail: format!("the tool returned data that is not JSON: {e}"),
            })?;
            if let Some(validator) = &tool.output_validator
                && let Err(e) = validator.validate(&v)
            {
                return Err(CallError::Crashed {
                    detail: format!(
                        "the tool returned data that does not match its output schema: {e}"
                    ),
                });
            }
            Some(v)
        }
    };
    Ok(Output { text, data })
}

/// Log how a call ended, for the operator.
pub(crate) fn log_outcome(plugin: &str, o: &CallOutcome) {
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
