//! Well-behaved test plugin: one small tool for each behaviour in
//! `behaviour.md` that needs a plugin to show it.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::sleep;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use toolhost_guest::{
    Delivery, DuplicatePolicy, DuplicateScope, LogLevel, Plugin, ToolError, ToolOutput, ToolSpec,
    call_info, cancelled, log, spec, update,
};

struct Behave;

// Integer fields are plain `i64`: the host writes an integral float such as
// `2.0` as `2` before a plugin sees it (tests/calls.rs sends `21.0`).

#[derive(Deserialize)]
struct Padded {
    n: i64,
    pad: Option<String>,
}

#[derive(Deserialize)]
struct MaybeN {
    #[serde(default)]
    n: Option<i64>,
}

#[derive(Deserialize)]
struct Typed {
    name: String,
    count: i64,
    #[serde(default)]
    flag: bool,
}

#[derive(Deserialize)]
struct Ms {
    ms: i64,
}

#[derive(Deserialize)]
struct Fire {
    ms: i64,
    #[serde(default)]
    update: bool,
}

#[derive(Deserialize)]
struct Progress {
    n: i64,
    sleep_ms: i64,
}

#[derive(Deserialize)]
struct Iterations {
    iterations: i64,
}

fn no_args() -> Value {
    json!({ "type": "object", "properties": {} })
}

fn ms_arg() -> Value {
    json!({
        "type": "object",
        "properties": { "ms": { "type": "integer", "minimum": 0 } },
        "required": ["ms"]
    })
}

fn sleep_ms(ms: i64) {
    sleep(Duration::from_millis(ms.max(0).unsigned_abs()));
}

/// Sleeps in 5 ms steps until the call is cancelled.
fn wait_for_cancel() -> ToolOutput {
    while !cancelled() {
        sleep(Duration::from_millis(5));
    }
    ToolOutput::text("cleaned up")
}

/// Calls this instance has served: 1 in every call when each call gets a
/// fresh instance, more if an instance were ever reused.
static CALLS: AtomicU64 = AtomicU64::new(0);

fn spin_forever() -> ! {
    let mut x = 0u64;
    loop {
        x = black_box(x.wrapping_add(1));
    }
}

/// Cheap integer math, `iterations` times; the fuel tests count its cost.
fn spin_once(iterations: i64) -> u64 {
    let mut acc = 1u64;
    for i in 0..iterations.max(0).unsigned_abs() {
        acc = black_box(acc.wrapping_mul(6364136223846793005).wrapping_add(i));
    }
    acc
}

/// The output schema of `progress_data` and `update_then_data`.
fn steps_schema() -> String {
    json!({
        "type": "object",
        "properties": { "steps": { "type": "integer" } },
        "required": ["steps"]
    })
    .to_string()
}

fn specs() -> Vec<ToolSpec> {
    vec![
        spec("ok", "Returns the text \"ok\".", no_args()),
        ToolSpec {
            output_schema: Some(
                json!({
                    "type": "object",
                    "properties": {
                        "n": { "type": "integer" },
                        "double": { "type": "integer" },
                        "pad": { "type": "string", "pattern": "^x*$" }
                    },
                    "required": ["n", "double"]
                })
                .to_string(),
            ),
            ..spec(
                "data",
                "Returns n and twice n as data, and pad if given (its schema allows only x's).",
                json!({
                    "type": "object",
                    "properties": { "n": { "type": "integer" }, "pad": { "type": "string" } },
                    "required": ["n"]
                }),
            )
        },
        spec("text_and_data", "Returns both text and data.", no_args()),
        spec("nothing", "Returns neither text nor data.", no_args()),
        spec("fail", "Fails with \"it failed on purpose\".", no_args()),
        spec(
            "bad_args",
            "Rejects its arguments unless n is given and even.",
            json!({
                "type": "object",
                "properties": { "n": { "type": "integer" } }
            }),
        ),
        spec(
            "typed",
            "Echoes its typed arguments.",
            json!({
                "type": "object",
                "properties": {
                    "name": { "type": "string" },
                    "count": { "type": "integer" },
                    "flag": { "type": "boolean" }
                },
                "required": ["name", "count"],
                "additionalProperties": false
            }),
        ),
        spec("sleep", "Sleeps ms milliseconds.", ms_arg()),
        ToolSpec {
            cancellable: true,
            ..spec(
                "progress",
                "Sends n updates, sleep_ms apart, then returns.",
                json!({
                    "type": "object",
                    "properties": {
                        "n": { "type": "integer", "minimum": 0 },
                        "sleep_ms": { "type": "integer", "minimum": 0 }
                    },
                    "required": ["n", "sleep_ms"]
                }),
            )
        },
        ToolSpec {
            cancellable: true,
            output_schema: Some(steps_schema()),
            ..spec(
                "progress_data",
                "Sends one update, then returns {\"steps\": 1} as data.",
                no_args(),
            )
        },
        ToolSpec {
            output_schema: Some(steps_schema()),
            ..spec(
                "update_then_data",
                "Sends one update, then returns {\"steps\": 1} as data. Not cancellable.",
                no_args(),
            )
        },
        spec(
            "update_then_fail",
            "Sends one update, then fails.",
            no_args(),
        ),
        spec(
            "update_then_nothing",
            "Sends one update, then returns neither text nor data.",
            no_args(),
        ),
        ToolSpec {
            cancellable: true,
            ..spec(
                "wait_cancel",
                "Waits until cancelled, then cleans up and returns.",
                no_args(),
            )
        },
        ToolSpec {
            cancellable: true,
            ..spec(
                "wait_cancel_then_update",
                "Waits until cancelled, then sends an update while it cleans up, and returns.",
                no_args(),
            )
        },
        ToolSpec {
            cancellable: true,
            ..spec(
                "spin_cancellable",
                "Spins forever without calling the host.",
                no_args(),
            )
        },
        spec(
            "log_forever",
            "Logs the same 16 MiB message forever: little fuel, much work in the host.",
            no_args(),
        ),
        ToolSpec {
            cancellable: true,
            ..spec(
                "update_then_spin",
                "Sends one update, then spins forever without calling the host.",
                no_args(),
            )
        },
        spec("info", "Returns the call's ids as data.", no_args()),
        spec("log", "Logs one line at each level.", no_args()),
        spec(
            "spin_once",
            "Runs `iterations` rounds of cheap integer math and returns the result.",
            json!({
                "type": "object",
                "properties": { "iterations": { "type": "integer", "minimum": 0 } },
                "required": ["iterations"]
            }),
        ),
        ToolSpec {
            on_duplicate: DuplicatePolicy::Queue,
            ..spec(
                "queue_me",
                "Sleeps ms milliseconds; duplicates queue.",
                ms_arg(),
            )
        },
        ToolSpec {
            on_duplicate: DuplicatePolicy::Reject,
            ..spec(
                "reject_me",
                "Sleeps ms milliseconds; duplicates are rejected.",
                ms_arg(),
            )
        },
        ToolSpec {
            on_duplicate: DuplicatePolicy::Reject,
            duplicate_scope: DuplicateScope::NameAndArguments,
            ..spec(
                "reject_same",
                "Sleeps ms milliseconds; duplicates with equal arguments are rejected.",
                json!({
                    "type": "object",
                    "properties": {
                        "ms": { "type": "integer", "minimum": 0 },
                        "key": { "type": "string", "default": "a" }
                    },
                    "required": ["ms"]
                }),
            )
        },
        ToolSpec {
            on_duplicate: DuplicatePolicy::Confirm,
            ..spec(
                "confirm_me",
                "Sleeps ms milliseconds; duplicates need confirming.",
                ms_arg(),
            )
        },
        ToolSpec {
            on_duplicate: DuplicatePolicy::Replace,
            cancellable: true,
            ..spec(
                "replace_me",
                "Waits until cancelled, then takes 200 ms to clean up; a duplicate replaces the running call.",
                no_args(),
            )
        },
        spec(
            "count_calls",
            "Counts the calls this instance has served, sleeps ms milliseconds, and returns the count.",
            ms_arg(),
        ),
        ToolSpec {
            delivery: Delivery::FireAndForget,
            ..spec(
                "fire",
                "Fire and forget: optionally sends an update, sleeps ms milliseconds, returns \"fired\".",
                json!({
                    "type": "object",
                    "properties": {
                        "ms": { "type": "integer", "minimum": 0 },
                        "update": { "type": "boolean" }
                    },
                    "required": ["ms"]
                }),
            )
        },
    ]
}

impl Plugin for Behave {
    fn describe() -> Vec<ToolSpec> {
        specs()
    }

    fn call(tool: String, arguments: String) -> Result<ToolOutput, ToolError> {
        let args = arguments.as_str();
        match tool.as_str() {
            "ok" => Ok(ToolOutput::text("ok")),
            "data" => {
                let Padded { n, pad } = toolhost_guest::args(args)?;
                let mut data = json!({ "n": n, "double": 2 * n });
                if let Some(pad) = pad {
                    data["pad"] = pad.into();
                }
                Ok(ToolOutput::data(&data))
            }
            "text_and_data" => Ok(ToolOutput::text_and_data(
                "the answer is 42",
                &json!({ "answer": 42 }),
            )),
            "nothing" => Ok(ToolOutput {
                text: None,
                data: None,
            }),
            "fail" => Err(ToolError::failed("it failed on purpose")),
            "bad_args" => match toolhost_guest::args::<MaybeN>(args)?.n {
                Some(n) if n % 2 == 0 => Ok(ToolOutput::text(format!("{n} is even"))),
                _ => Err(ToolError::InvalidArguments("n must be even".into())),
            },
            "typed" => {
                let Typed { name, count, flag } = toolhost_guest::args(args)?;
                Ok(ToolOutput::text(format!(
                    "name={name} count={count} flag={flag}"
                )))
            }
            "sleep" => {
                sleep_ms(toolhost_guest::args::<Ms>(args)?.ms);
                Ok(ToolOutput::text("slept"))
            }
            "progress" => {
                let Progress { n, sleep_ms: pause } = toolhost_guest::args(args)?;
                for i in 1..=n {
                    if cancelled() {
                        return Ok(ToolOutput::text(format!("cancelled after {} steps", i - 1)));
                    }
                    update(&format!("step {i} of {n}"));
                    if i < n {
                        sleep_ms(pause);
                    }
                }
                Ok(ToolOutput::text(format!("done after {n} steps")))
            }
            "progress_data" | "update_then_data" => {
                update("step 1 of 1");
                sleep_ms(50);
                Ok(ToolOutput::data(&json!({ "steps": 1 })))
            }
            "update_then_fail" => {
                update("about to fail");
                Err(ToolError::failed("it failed after an update"))
            }
            "update_then_nothing" => {
                update("working on it");
                Ok(ToolOutput {
                    text: None,
                    data: None,
                })
            }
            "wait_cancel" => Ok(wait_for_cancel()),
            "wait_cancel_then_update" => {
                let out = wait_for_cancel();
                update("cleaning up");
                Ok(out)
            }
            "replace_me" => {
                let out = wait_for_cancel();
                // A slow clean-up: a replacing call that did not wait for
                // this one to end would start before it ends (B13).
                sleep_ms(200);
                Ok(out)
            }
            "count_calls" => {
                let n = CALLS.fetch_add(1, Ordering::SeqCst) + 1;
                sleep_ms(toolhost_guest::args::<Ms>(args)?.ms);
                Ok(ToolOutput::text(n.to_string()))
            }
            "spin_cancellable" => spin_forever(),
            "log_forever" => {
                let message = "x".repeat(16 << 20);
                loop {
                    log(LogLevel::Info, black_box(&message));
                }
            }
            "update_then_spin" => {
                update("spinning");
                spin_forever()
            }
            "info" => {
                let info = call_info();
                Ok(ToolOutput::data(&json!({
                    "call_id": info.call_id,
                    "session_id": info.session_id,
                    "tool": info.tool,
                })))
            }
            "log" => {
                for (level, name) in [
                    (LogLevel::Trace, "trace"),
                    (LogLevel::Debug, "debug"),
                    (LogLevel::Info, "info"),
                    (LogLevel::Warn, "warn"),
                    (LogLevel::Error, "error"),
                ] {
                    log(level, &format!("a line at {name} level"));
                }
                Ok(ToolOutput::text("logged"))
            }
            "spin_once" => {
                let Iterations { iterations } = toolhost_guest::args(args)?;
                Ok(ToolOutput::text(spin_once(iterations).to_string()))
            }
            "queue_me" | "reject_me" | "reject_same" | "confirm_me" => {
                sleep_ms(toolhost_guest::args::<Ms>(args)?.ms);
                Ok(ToolOutput::text("done"))
            }
            "fire" => {
                let Fire { ms, update: send } = toolhost_guest::args(args)?;
                if send {
                    update("fire is running");
                }
                sleep_ms(ms);
                Ok(ToolOutput::text("fired"))
            }
            other => Err(ToolError::failed(format!("no tool named {other}"))),
        }
    }
}

toolhost_guest::export_plugin!(Behave);
