//! The peer benchmark's tools as a toolhost plugin: `echo` returns its text,
//! `sleep` sleeps in WASI, `spin` loops without ever calling the host. The
//! wassette and hyper-mcp plugins beside this one do the same, each in its
//! own host's format (`tools/bench-peers`).

use std::hint::black_box;
use std::thread::sleep;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use toolhost_guest::{Tool, ToolError, ToolOutput, Tools};

#[derive(Deserialize, JsonSchema)]
struct Text {
    /// The text to return.
    text: String,
}

#[derive(Deserialize, JsonSchema)]
struct Ms {
    /// How long to sleep, in milliseconds.
    ms: u64,
}

#[derive(Deserialize, JsonSchema)]
struct Nothing {}

fn spin() -> ! {
    let mut x = 0u64;
    loop {
        x = black_box(x.wrapping_add(1));
    }
}

struct Bench;

impl Tools for Bench {
    fn tools() -> Vec<Tool> {
        vec![
            Tool::new("echo", "Returns its text.", |Text { text }| {
                Ok::<_, ToolError>(ToolOutput::text(text))
            }),
            Tool::new("sleep", "Sleeps ms milliseconds.", |Ms { ms }| {
                sleep(Duration::from_millis(ms));
                Ok::<_, ToolError>(ToolOutput::text("slept"))
            }),
            Tool::new(
                "spin",
                "Loops forever without calling the host.",
                |Nothing {}| -> Result<ToolOutput, ToolError> { spin() },
            ),
        ]
    }
}

toolhost_guest::export_tools!(Bench);
