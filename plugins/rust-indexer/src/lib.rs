//! Example plugin: a long, multi-step task. `index_directory` reads every
//! file of the read-only folder granted as `/data`, one at a time, counting
//! lines, words and the most frequent words; it reports progress with
//! `update` and stops early, keeping what it has, when the call is cancelled.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use toolhost_guest::{
    DuplicatePolicy, DuplicateScope, Plugin, ToolError, ToolOutput, ToolSpec, cancelled, spec,
    update,
};

/// Where the manifest mounts the granted folder.
const ROOT: &str = "/data";
/// At most this many progress updates per call, however big the tree.
const MAX_UPDATES: usize = 20;
/// At most this many files are indexed; the rest are counted but not read.
const MAX_FILES: usize = 10_000;
/// Files larger than this are skipped.
const MAX_FILE_SIZE: u64 = 4 << 20;
/// The longest artificial pause per file.
const MAX_DELAY_MS: u64 = 1000;
/// How often a pause looks at `cancelled()`, so a cancel is honoured well
/// within the host's grace period.
const PAUSE_STEP: Duration = Duration::from_millis(20);
/// Most frequent words in the whole result, and per file.
const TOP_WORDS: usize = 20;
const TOP_WORDS_PER_FILE: usize = 5;

/// Words too common to say anything about a text.
const STOP_WORDS: &[&str] = &[
    "about", "after", "all", "also", "and", "any", "are", "back", "been", "before", "but", "can",
    "could", "did", "does", "each", "every", "first", "for", "from", "had", "has", "have", "her",
    "him", "his", "how", "into", "its", "just", "last", "let", "more", "most", "much", "new",
    "nobody", "not", "now", "off", "once", "one", "only", "our", "out", "own", "same", "see",
    "she", "should", "since", "some", "still", "than", "that", "the", "their", "them", "then",
    "there", "these", "they", "this", "two", "under", "until", "use", "very", "was", "way", "well",
    "were", "what", "when", "where", "which", "while", "who", "why", "will", "with", "would",
    "yes", "you", "your",
];

struct Indexer;

/// The host writes an integral float such as `2.0` as `2` before a
/// plugin sees it, so plain integer fields take what the schema allows.
#[derive(Deserialize)]
struct Args {
    dir: Option<String>,
    #[serde(default)]
    delay_ms: u64,
}

/// The folder to index: `dir` under the root, which must not climb out.
/// Returns the path and its prefix relative to the root.
fn start_dir(dir: Option<&str>) -> Result<(PathBuf, String), ToolError> {
    toolhost_guest::dir_under(ROOT, dir)
}

/// Every file under `dir` as (path, path relative to the root), sorted.
/// Unreadable subfolders are skipped.
fn list_files(dir: &Path, rel: &str, out: &mut Vec<(PathBuf, String)>) -> io::Result<()> {
    let mut entries = fs::read_dir(dir)?.collect::<io::Result<Vec<_>>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let rel = format!("{rel}{}", entry.file_name().to_string_lossy());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            let _ = list_files(&entry.path(), &format!("{rel}/"), out);
        } else if kind.is_file() {
            out.push((entry.path(), rel));
        }
    }
    Ok(())
}

/// The words of `text` worth counting for "top words": lowercased, at least
/// three letters, not a stop word.
fn terms(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .map(|w| {
            let w = w.trim_matches('\'');
            w.strip_suffix("'s").unwrap_or(w).to_lowercase()
        })
        .filter(|w| {
            w.chars().count() >= 3
                && w.chars().any(char::is_alphabetic)
                && !STOP_WORDS.contains(&w.as_str())
        })
}

/// The `n` most frequent words, most frequent first, ties alphabetically.
fn top(counts: &HashMap<String, u64>, n: usize) -> Vec<(String, u64)> {
    let mut words: Vec<(String, u64)> = counts.iter().map(|(w, c)| (w.clone(), *c)).collect();
    words.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    words.truncate(n);
    words
}

/// Whether to report progress after `done` of `total` files: after every
/// file for small trees, evenly spread for big ones, at most `MAX_UPDATES`
/// in all, and never after the last file (the result says it).
fn should_report(done: usize, total: usize) -> bool {
    let step = total.div_ceil(MAX_UPDATES).max(1);
    done < total && done.is_multiple_of(step)
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

#[derive(Serialize)]
struct FileEntry {
    path: String,
    lines: usize,
    words: usize,
    top_words: Vec<(String, u64)>,
}

/// What has been indexed so far.
#[derive(Default)]
struct Index {
    files: Vec<FileEntry>,
    skipped: Vec<String>,
    total_lines: usize,
    total_words: usize,
    counts: HashMap<String, u64>,
}

impl Index {
    fn add(&mut self, path: &str, text: &str) {
        let lines = text.lines().count();
        let words = text.split_whitespace().count();
        let mut counts = HashMap::new();
        for term in terms(text) {
            *counts.entry(term).or_insert(0) += 1;
        }
        for (term, n) in &counts {
            *self.counts.entry(term.clone()).or_insert(0) += n;
        }
        self.total_lines += lines;
        self.total_words += words;
        self.files.push(FileEntry {
            path: path.to_owned(),
            lines,
            words,
            top_words: top(&counts, TOP_WORDS_PER_FILE),
        });
    }

    /// How many files were looked at, indexed or skipped.
    fn done(&self) -> usize {
        self.files.len() + self.skipped.len()
    }
}

/// The text of a file, or `None` when it is too large, not UTF-8 or
/// unreadable.
fn read_text(path: &Path) -> Option<String> {
    let small = fs::metadata(path).is_ok_and(|m| m.len() <= MAX_FILE_SIZE);
    small.then(|| fs::read_to_string(path).ok()).flatten()
}

fn read_error(dir: &Path, e: io::Error) -> ToolError {
    if e.kind() == io::ErrorKind::NotFound {
        ToolError::failed(format!("{} does not exist", dir.display()))
    } else {
        ToolError::failed(format!(
            "cannot read {}: {e} (is {ROOT} granted in the plugin manifest?)",
            dir.display()
        ))
    }
}

/// The sentence the model reads.
fn summary(dir: &Path, index: &Index, found: usize, stopped: bool) -> String {
    let done = index.done();
    let mut text = if stopped {
        format!(
            "cancelled after {done} of {found} files in {}.",
            dir.display()
        )
    } else {
        format!("Indexed {done} files in {}.", dir.display())
    };
    text.push_str(&format!(
        " {} words, {} lines",
        index.total_words, index.total_lines
    ));
    text.push_str(if stopped { " so far." } else { "." });
    if !index.skipped.is_empty() {
        text.push_str(&format!(
            " Skipped {} file(s) that are not UTF-8 text or larger than 4 MiB.",
            index.skipped.len()
        ));
    }
    if found > MAX_FILES {
        text.push_str(&format!(
            " Only the first {MAX_FILES} of {found} files were indexed."
        ));
    }
    let top = top(&index.counts, 10);
    if !top.is_empty() {
        let words: Vec<String> = top.iter().map(|(w, n)| format!("{w} ({n})")).collect();
        text.push_str(&format!(" Top words: {}.", words.join(", ")));
    }
    text
}

fn index_directory(args: Args) -> Result<ToolOutput, ToolError> {
    if args.delay_ms > MAX_DELAY_MS {
        return Err(ToolError::InvalidArguments(format!(
            "delay_ms must be at most {MAX_DELAY_MS}"
        )));
    }
    let (dir, rel) = start_dir(args.dir.as_deref())?;
    let mut files = Vec::new();
    list_files(&dir, &rel, &mut files).map_err(|e| read_error(&dir, e))?;
    let found = files.len();
    files.truncate(MAX_FILES);
    let total = files.len();

    let mut index = Index::default();
    let mut stopped = false;
    for (path, rel) in &files {
        if cancelled() {
            stopped = true;
            break;
        }
        match read_text(path) {
            Some(text) => index.add(rel, &text),
            None => index.skipped.push(rel.clone()),
        }
        let done = index.done();
        if should_report(done, total) {
            update(&format!("indexed {done} of {total} files: {rel}"));
        }
        if done < total && args.delay_ms > 0 && pause(args.delay_ms) {
            stopped = true;
            break;
        }
    }

    let text = summary(&dir, &index, found, stopped);
    let data = json!({
        "dir": dir.display().to_string(),
        "files": index.files,
        "files_found": found,
        "skipped": index.skipped,
        "total_words": index.total_words,
        "total_lines": index.total_lines,
        "top_words": top(&index.counts, TOP_WORDS),
        "cancelled": stopped,
    });
    Ok(ToolOutput::text_and_data(text, &data))
}

/// The arguments of `index_directory`, in the subset of JSON Schema that
/// OpenAI strict mode and Gemini accept: optional ones also take `null`,
/// which `toolhost_guest::args` reads as absent.
fn input_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "dir": {
                "type": ["string", "null"],
                "description": "A folder relative to /data; the whole of /data when left out."
            },
            "delay_ms": {
                "type": ["integer", "null"],
                "minimum": 0,
                "maximum": MAX_DELAY_MS,
                "description": "An artificial pause after each file, in milliseconds, so that progress is visible in demos. Default: 0."
            }
        },
        "required": []
    })
}

impl Plugin for Indexer {
    fn describe() -> Vec<ToolSpec> {
        let word_counts = json!({
            "type": "array",
            "items": {
                "type": "array",
                "prefixItems": [{ "type": "string" }, { "type": "integer" }],
                "items": false
            }
        });
        vec![ToolSpec {
            output_schema: Some(
                json!({
                    "type": "object",
                    "properties": {
                        "dir": { "type": "string" },
                        "files": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "path": { "type": "string" },
                                    "lines": { "type": "integer" },
                                    "words": { "type": "integer" },
                                    "top_words": word_counts
                                },
                                "required": ["path", "lines", "words", "top_words"]
                            }
                        },
                        "files_found": { "type": "integer" },
                        "skipped": { "type": "array", "items": { "type": "string" } },
                        "total_words": { "type": "integer" },
                        "total_lines": { "type": "integer" },
                        "top_words": word_counts,
                        "cancelled": { "type": "boolean" }
                    },
                    "required": [
                        "dir", "files", "files_found", "skipped",
                        "total_words", "total_lines", "top_words", "cancelled"
                    ]
                })
                .to_string(),
            ),
            on_duplicate: DuplicatePolicy::Reject,
            duplicate_scope: DuplicateScope::NameAndArguments,
            cancellable: true,
            ..spec(
                "index_directory",
                "Indexes the text files under /data (or a folder in it): line and word counts and the most frequent words, per file and in all. Runs in the background and reports progress; can be cancelled, and then returns what it indexed so far.",
                input_schema(),
            )
        }]
    }

    fn call(tool: String, arguments: String) -> Result<ToolOutput, ToolError> {
        match tool.as_str() {
            "index_directory" => index_directory(toolhost_guest::args(&arguments)?),
            other => Err(ToolError::failed(format!("no tool named {other}"))),
        }
    }
}

toolhost_guest::export_plugin!(Indexer);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_input_schema_is_portable() {
        let schema = input_schema();
        assert_eq!(toolhost_guest::portable(schema.clone()), schema);
    }

    #[test]
    fn null_arguments_are_left_out() {
        let args: Option<Args> = toolhost_guest::args(r#"{"dir": null, "delay_ms": null}"#).ok();
        assert!(args.is_some_and(|a| a.dir.is_none() && a.delay_ms == 0));
    }

    #[test]
    fn counts_meaningful_words_only() {
        let mut index = Index::default();
        index.add(
            "a.txt",
            "The garden's compost, and the GARDEN.\nCompost is ready: 42 bays!",
        );
        index.add("b.txt", "Garden tools");
        assert_eq!(index.total_lines, 3);
        assert_eq!(index.total_words, 13);
        assert_eq!(
            top(&index.counts, 3),
            vec![
                ("garden".to_owned(), 3),
                ("compost".to_owned(), 2),
                ("bays".to_owned(), 1),
            ]
        );
        assert_eq!(index.files[1].top_words.len(), 2);
    }

    #[test]
    fn progress_is_throttled_to_twenty_updates() {
        let reports = |total| (1..=total).filter(|&d| should_report(d, total)).count();
        assert_eq!(reports(0), 0);
        assert_eq!(reports(1), 0);
        assert_eq!(reports(5), 4);
        assert_eq!(reports(20), 19);
        assert_eq!(reports(21), 10);
        assert_eq!(reports(1000), 19);
        assert!((1..=5000).all(|t| reports(t) <= MAX_UPDATES));
    }

    #[test]
    fn dirs_may_not_climb_out() {
        assert!(start_dir(Some("../etc")).is_err());
        assert!(start_dir(Some("docs/../../etc")).is_err());
        assert!(start_dir(Some("docs..old")).is_ok());
        assert_eq!(
            start_dir(Some("/data/docs/")).ok(),
            Some((PathBuf::from("/data/docs"), "docs/".to_owned()))
        );
    }
}
