//! Example plugin: a cancellable task that cleans up after itself.
//! `build_report` writes a report one section at a time into a temporary
//! file in the read-write folder granted as `/work`, and renames it into
//! place when done; when the call is cancelled it deletes the partial file
//! before returning, so a cancel never leaves half a report behind.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::{Value, json};
use toolhost_guest::{
    DuplicatePolicy, Plugin, ToolError, ToolOutput, ToolSpec, call_info, cancelled, spec, update,
};

/// Where the manifest mounts the granted read-write folder.
const ROOT: &str = "/work";
const MAX_SECTIONS: u64 = 50;
const MAX_SECTION_MS: u64 = 5000;
const DEFAULT_SECTION_MS: u64 = 300;
/// How often a pause looks at `cancelled()`, so a cancel is honoured well
/// within the host's grace period even with long pauses.
const PAUSE_STEP: Duration = Duration::from_millis(20);
/// The longest call id kept in a file name.
const MAX_ID_CHARS: usize = 64;

struct Cleanup;

/// The host writes an integral float such as `2.0` as `2` before a
/// plugin sees it, so plain integer fields take what the schema allows.
#[derive(Deserialize)]
struct Args {
    sections: u64,
    #[serde(default = "default_section_ms")]
    section_ms: u64,
}

fn default_section_ms() -> u64 {
    DEFAULT_SECTION_MS
}

/// A call id made safe for a file name: only `[A-Za-z0-9_-]`, at most 64
/// characters, never empty.
fn file_stem(call_id: &str) -> String {
    let stem: String = call_id
        .chars()
        .take(MAX_ID_CHARS)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if stem.is_empty() {
        "call".to_owned()
    } else {
        stem
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn header(call_id: &str, session_id: &str, sections: u64, started: u64) -> String {
    let session = if session_id.is_empty() {
        String::new()
    } else {
        format!(" in session {session_id}")
    };
    format!(
        "# Report {call_id}\n\n{sections} section(s), started at unix time {started}{session}.\n\n"
    )
}

fn section(i: u64, n: u64, now: u64) -> String {
    format!(
        "## Section {i} of {n}\n\nWritten at unix time {now}; {i} of {n} sections complete.\n\n"
    )
}

/// Sleeps `ms` milliseconds in short steps; true if the call was cancelled
/// meanwhile.
fn pause(ms: u64) -> bool {
    let mut left = Duration::from_millis(ms);
    while !left.is_zero() {
        if cancelled() {
            return true;
        }
        let step = left.min(PAUSE_STEP);
        sleep(step);
        left -= step;
    }
    cancelled()
}

/// A report being written. Unless it is finished, dropping it deletes the
/// file, so an error on the way leaves nothing behind either.
struct Partial {
    path: PathBuf,
    file: Option<File>,
}

impl Partial {
    fn create(path: PathBuf) -> io::Result<Self> {
        let file = File::create(&path)?;
        Ok(Self {
            path,
            file: Some(file),
        })
    }

    fn write(&mut self, text: &str) -> io::Result<()> {
        match &mut self.file {
            Some(file) => file.write_all(text.as_bytes()),
            None => Err(io::Error::other("the report is already closed")),
        }
    }

    /// Close the file and move it to `to`.
    fn finish(mut self, to: &Path) -> io::Result<()> {
        if let Some(file) = self.file.take() {
            file.sync_all()?;
        }
        fs::rename(&self.path, to)?;
        // Renamed: nothing left for `drop` to delete.
        self.path = PathBuf::new();
        Ok(())
    }

    /// Close the file and delete it.
    fn discard(mut self) -> io::Result<()> {
        self.file = None;
        let path = std::mem::take(&mut self.path);
        fs::remove_file(path)
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        self.file = None;
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn write_error(path: &Path, e: io::Error) -> ToolError {
    ToolError::failed(format!(
        "cannot write {}: {e} (is {ROOT} granted with write = true in the plugin manifest?)",
        path.display()
    ))
}

fn cancelled_output(partial: Partial, written: u64, n: u64) -> Result<ToolOutput, ToolError> {
    let path = partial.path.clone();
    partial.discard().map_err(|e| {
        ToolError::failed(format!(
            "cancelled after {written} of {n} sections, but could not remove {}: {e}",
            path.display()
        ))
    })?;
    Ok(ToolOutput::text(format!(
        "cancelled: removed partial report after {written} of {n} sections"
    )))
}

fn build_report(args: Args) -> Result<ToolOutput, ToolError> {
    let n = args.sections;
    if !(1..=MAX_SECTIONS).contains(&n) {
        return Err(ToolError::InvalidArguments(format!(
            "sections must be between 1 and {MAX_SECTIONS}"
        )));
    }
    if args.section_ms > MAX_SECTION_MS {
        return Err(ToolError::InvalidArguments(format!(
            "section_ms must be at most {MAX_SECTION_MS}"
        )));
    }
    let call = call_info();
    let stem = file_stem(&call.call_id);
    let root = Path::new(ROOT);
    let partial_path = root.join(format!(".report-{stem}.partial"));
    let final_path = root.join(format!("report-{stem}.md"));

    let mut partial =
        Partial::create(partial_path.clone()).map_err(|e| write_error(&partial_path, e))?;
    partial
        .write(&header(&call.call_id, &call.session_id, n, unix_now()))
        .map_err(|e| write_error(&partial_path, e))?;
    for i in 1..=n {
        if cancelled() {
            return cancelled_output(partial, i - 1, n);
        }
        partial
            .write(&section(i, n, unix_now()))
            .map_err(|e| write_error(&partial_path, e))?;
        if i < n {
            update(&format!("section {i} of {n} written"));
            if pause(args.section_ms) {
                return cancelled_output(partial, i, n);
            }
        }
    }
    partial
        .finish(&final_path)
        .map_err(|e| write_error(&final_path, e))?;

    let path = final_path.display().to_string();
    Ok(ToolOutput::text_and_data(
        format!("report written to {path} ({n} sections)"),
        &json!({ "path": path, "sections": n }),
    ))
}

/// The arguments of `build_report`, in the subset of JSON Schema that OpenAI
/// strict mode and Gemini accept: the optional one also takes `null`, which
/// `toolhost_guest::args` reads as absent.
fn input_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "sections": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_SECTIONS,
                "description": "How many sections the report has."
            },
            "section_ms": {
                "type": ["integer", "null"],
                "minimum": 0,
                "maximum": MAX_SECTION_MS,
                "description": format!("How long each section takes to write, in milliseconds. Default: {DEFAULT_SECTION_MS}.")
            }
        },
        "required": ["sections"]
    })
}

impl Plugin for Cleanup {
    fn describe() -> Vec<ToolSpec> {
        vec![ToolSpec {
            output_schema: Some(
                json!({
                    "type": "object",
                    "properties": {
                        "path": { "type": "string" },
                        "sections": { "type": "integer" }
                    },
                    "required": ["path", "sections"]
                })
                .to_string(),
            ),
            on_duplicate: DuplicatePolicy::Queue,
            cancellable: true,
            ..spec(
                "build_report",
                "Writes a report of a number of sections into /work, one section at a time, and returns its path. Runs in the background and reports each section; can be cancelled, and then removes the unfinished report. A second call waits until the running one has ended.",
                input_schema(),
            )
        }]
    }

    fn call(tool: String, arguments: String) -> Result<ToolOutput, ToolError> {
        match tool.as_str() {
            "build_report" => build_report(toolhost_guest::args(&arguments)?),
            other => Err(ToolError::failed(format!("no tool named {other}"))),
        }
    }
}

toolhost_guest::export_plugin!(Cleanup);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_ids_become_safe_file_names() {
        assert_eq!(file_stem("call_01J-abc"), "call_01J-abc");
        assert_eq!(file_stem("../../etc/passwd"), "______etc_passwd");
        assert_eq!(file_stem("a b.c/é"), "a_b_c__");
        assert_eq!(file_stem(""), "call");
        assert_eq!(file_stem(&"x".repeat(200)).len(), MAX_ID_CHARS);
    }

    #[test]
    fn arguments_take_defaults() {
        let args: Option<Args> = toolhost_guest::args(r#"{"sections": 3}"#).ok();
        assert_eq!(
            args.map(|a| (a.sections, a.section_ms)),
            Some((3, DEFAULT_SECTION_MS))
        );
        let args: Option<Args> =
            toolhost_guest::args(r#"{"sections": 2, "section_ms": null}"#).ok();
        assert_eq!(
            args.map(|a| (a.sections, a.section_ms)),
            Some((2, DEFAULT_SECTION_MS))
        );
    }

    #[test]
    fn the_input_schema_is_portable() {
        let schema = input_schema();
        assert_eq!(toolhost_guest::portable(schema.clone()), schema);
    }

    #[test]
    fn sections_say_how_far_the_report_is() {
        assert_eq!(
            section(2, 5, 7),
            "## Section 2 of 5\n\nWritten at unix time 7; 2 of 5 sections complete.\n\n"
        );
    }
}
