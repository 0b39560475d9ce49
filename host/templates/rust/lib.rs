//! {folder}: a toolhost plugin. `{tool}` counts the words in each line
//! of a text, reporting progress and stopping early when cancelled. Replace
//! it with your own tools; the `toolhost-guest` crate's documentation and
//! `plugins/README.md` in the checkout show the rest.

use std::thread::sleep;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use toolhost_guest::{Tool, ToolError, ToolOutput, Tools, cancelled, update};

/// At most about this many progress updates per call.
const MAX_UPDATES: usize = 10;

/// The arguments of `{tool}`: the input schema is generated from them.
#[derive(Deserialize, JsonSchema)]
struct Args {
    /// The text to count, line by line.
    text: String,
    /// A pause after each line, in milliseconds, to watch the progress.
    #[serde(default)]
    #[schemars(range(max = 1000))]
    delay_ms: u32,
}

/// What `{tool}` counted: the call's data.
#[derive(Serialize, JsonSchema)]
struct Counts {
    words: usize,
    lines: usize,
}

fn count_words(args: Args) -> Result<ToolOutput, ToolError> {
    if args.text.trim().is_empty() {
        return Err(ToolError::invalid("text must not be blank"));
    }
    let lines: Vec<&str> = args.text.split('\n').collect();
    let every = (lines.len() / MAX_UPDATES).max(1);
    let mut words = 0;
    for (done, line) in lines.iter().enumerate() {
        if cancelled() {
            let text = format!(
                "cancelled after {done} of {} lines: {words} words so far",
                lines.len()
            );
            return Ok(ToolOutput::text_and_data(text, &Counts { words, lines: done }));
        }
        words += line.split_whitespace().count();
        if (done + 1) % every == 0 {
            update(&format!("line {} of {}: {words} words so far", done + 1, lines.len()));
        }
        sleep(Duration::from_millis(args.delay_ms.into()));
    }
    let counts = Counts { words, lines: lines.len() };
    let text = format!("{words} words in {} lines", lines.len());
    Ok(ToolOutput::text_and_data(text, &counts))
}

struct Plugin;

impl Tools for Plugin {
    fn tools() -> Vec<Tool> {
        vec![
            Tool::new(
                "{tool}",
                "Counts the words in each line of `text`, reporting progress as it goes.",
                count_words,
            )
            .output::<Counts>()
            .cancellable(),
        ]
    }
}

toolhost_guest::export_tools!(Plugin);
