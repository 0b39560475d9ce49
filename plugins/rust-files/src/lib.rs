//! Example plugin: find files by name and search their text, inside the
//! read-only folder that the manifest grants as `/data`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use toolhost_guest::{Plugin, ToolError, ToolOutput, ToolSpec, spec};

/// Where the manifest mounts the granted folder.
const ROOT: &str = "/data";
/// At most this many files or matching lines in one answer.
const MAX_RESULTS: usize = 100;
/// Files larger than this are not searched.
const MAX_FILE_SIZE: u64 = 4 << 20;
/// Longer matching lines are cut to this many characters.
const MAX_LINE_CHARS: usize = 300;

struct Files;

#[derive(Deserialize)]
struct FindArgs {
    pattern: String,
    dir: Option<String>,
}

#[derive(Deserialize)]
struct SearchArgs {
    query: String,
    #[serde(default)]
    case_sensitive: bool,
    dir: Option<String>,
}

#[derive(Serialize)]
struct Match {
    path: String,
    line_number: usize,
    line: String,
}

/// The folder to look in: `dir` under the root, which must not climb out.
fn start_dir(dir: Option<&str>) -> Result<(PathBuf, String), ToolError> {
    toolhost_guest::dir_under(ROOT, dir)
}

/// Whether `name` matches `pattern`, where `*` is any run of characters and
/// `?` is one character.
fn glob_match(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    let (mut p, mut n) = (0, 0);
    // After a `*`: where in the pattern to resume, and where in the name it
    // would next start matching from.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p + 1, n));
                p += 1;
            }
            Some(&c) if c == '?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((after, from)) => {
                    p = after;
                    n = from + 1;
                    star = Some((after, from + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// Every file under `dir`, as paths relative to the root, sorted; visits
/// until `visit` returns false.
fn walk(dir: &Path, rel: &str, visit: &mut dyn FnMut(&Path, &str) -> bool) -> io::Result<bool> {
    let mut entries = fs::read_dir(dir)?.collect::<io::Result<Vec<_>>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let rel = format!("{rel}{name}");
        let kind = entry.file_type()?;
        let go_on = if kind.is_dir() {
            // An unreadable folder is skipped, not fatal.
            walk(&path, &format!("{rel}/"), visit).unwrap_or(true)
        } else if kind.is_file() {
            visit(&path, &rel)
        } else {
            true
        };
        if !go_on {
            return Ok(false);
        }
    }
    Ok(true)
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

fn find_files(args: FindArgs) -> Result<ToolOutput, ToolError> {
    if args.pattern.contains('/') {
        return Err(ToolError::InvalidArguments(
            "pattern matches file names only; give the folder as dir".into(),
        ));
    }
    let (dir, rel) = start_dir(args.dir.as_deref())?;
    let mut files = Vec::new();
    let mut truncated = false;
    walk(&dir, &rel, &mut |path, rel| {
        let name = path.file_name().map(|n| n.to_string_lossy());
        if name.is_some_and(|n| glob_match(&args.pattern, &n)) {
            if files.len() == MAX_RESULTS {
                truncated = true;
                return false;
            }
            files.push(rel.to_owned());
        }
        true
    })
    .map_err(|e| read_error(&dir, e))?;

    let text = if files.is_empty() {
        format!("No file in {} matches {}.", dir.display(), args.pattern)
    } else {
        let more = if truncated { "\n(more not shown)" } else { "" };
        format!(
            "{} file(s) match {}:\n{}{more}",
            files.len(),
            args.pattern,
            files.join("\n")
        )
    };
    Ok(ToolOutput::text_and_data(
        text,
        &json!({ "files": files, "truncated": truncated }),
    ))
}

fn search_text(args: SearchArgs) -> Result<ToolOutput, ToolError> {
    if args.query.is_empty() {
        return Err(ToolError::InvalidArguments(
            "query must not be empty".into(),
        ));
    }
    let (dir, rel) = start_dir(args.dir.as_deref())?;
    let query = if args.case_sensitive {
        args.query.clone()
    } else {
        args.query.to_lowercase()
    };
    let mut matches = Vec::new();
    let mut truncated = false;
    walk(&dir, &rel, &mut |path, rel| {
        let small = fs::metadata(path).is_ok_and(|m| m.len() <= MAX_FILE_SIZE);
        // Binary and unreadable files are skipped.
        let Some(content) = small.then(|| fs::read_to_string(path).ok()).flatten() else {
            return true;
        };
        for (i, line) in content.lines().enumerate() {
            let hit = if args.case_sensitive {
                line.contains(&query)
            } else {
                line.to_lowercase().contains(&query)
            };
            if hit {
                if matches.len() == MAX_RESULTS {
                    truncated = true;
                    return false;
                }
                matches.push(Match {
                    path: rel.to_owned(),
                    line_number: i + 1,
                    line: line.chars().take(MAX_LINE_CHARS).collect(),
                });
            }
        }
        true
    })
    .map_err(|e| read_error(&dir, e))?;

    let text = if matches.is_empty() {
        format!("No line in {} contains {:?}.", dir.display(), args.query)
    } else {
        let lines: Vec<String> = matches
            .iter()
            .map(|m| format!("{}:{}: {}", m.path, m.line_number, m.line))
            .collect();
        let more = if truncated { "\n(more not shown)" } else { "" };
        format!("{}{more}", lines.join("\n"))
    };
    Ok(ToolOutput::text_and_data(
        text,
        &json!({ "matches": matches, "truncated": truncated }),
    ))
}

/// The optional `dir` argument of both tools. It also takes `null`, which
/// `toolhost_guest::args` reads as absent, since clients in OpenAI strict
/// mode send `null` for an argument the model leaves out.
fn dir_schema() -> Value {
    json!({
        "type": ["string", "null"],
        "description": "A folder relative to /data; the whole of /data when left out."
    })
}

/// The arguments of `find_files`, in the subset of JSON Schema that OpenAI
/// strict mode and Gemini accept.
fn find_files_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "pattern": { "type": "string", "description": "For example *.md or notes-202?.txt" },
            "dir": dir_schema()
        },
        "required": ["pattern"]
    })
}

/// The arguments of `search_text`, in the same subset: no `minLength` (the
/// tool refuses an empty query itself) and no `default`.
fn search_text_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "query": { "type": "string", "description": "The text to find; not empty." },
            "case_sensitive": {
                "type": ["boolean", "null"],
                "description": "Match case exactly. Default: false."
            },
            "dir": dir_schema()
        },
        "required": ["query"]
    })
}

impl Plugin for Files {
    fn describe() -> Vec<ToolSpec> {
        vec![
            spec(
                "find_files",
                "Finds files in /data whose name matches a pattern (`*` is any run of characters, `?` one character). Returns up to 100 paths relative to /data.",
                find_files_schema(),
            ),
            spec(
                "search_text",
                "Finds the lines of the text files in /data that contain a string. Returns up to 100 matches with their path and line number.",
                search_text_schema(),
            ),
        ]
    }

    fn call(tool: String, arguments: String) -> Result<ToolOutput, ToolError> {
        match tool.as_str() {
            "find_files" => find_files(toolhost_guest::args(&arguments)?),
            "search_text" => search_text(toolhost_guest::args(&arguments)?),
            other => Err(ToolError::failed(format!("no tool named {other}"))),
        }
    }
}

toolhost_guest::export_plugin!(Files);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_input_schemas_are_portable() {
        for schema in [find_files_schema(), search_text_schema()] {
            assert_eq!(toolhost_guest::portable(schema.clone()), schema);
        }
    }

    #[test]
    fn globs_match_file_names() {
        assert!(glob_match("*.md", "readme.md"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a?c", "abc"));
        assert!(glob_match("*a*b*", "xxaxxbxx"));
        assert!(glob_match("notes-202?.txt", "notes-2024.txt"));
        assert!(!glob_match("*.md", "readme.txt"));
        assert!(!glob_match("a?c", "ac"));
        assert!(!glob_match("abc", "abcd"));
    }

    #[test]
    fn dirs_may_not_climb_out() {
        assert!(start_dir(Some("../etc")).is_err());
        assert!(start_dir(Some("a/../../b")).is_err());
        assert!(start_dir(Some("a..b")).is_ok());
        assert_eq!(
            start_dir(Some("/data")).ok(),
            Some((PathBuf::from("/data"), String::new()))
        );
        assert_eq!(
            start_dir(Some("/data/notes")).ok(),
            Some((PathBuf::from("/data/notes"), "notes/".to_owned()))
        );
        assert_eq!(
            start_dir(Some("/notes/")).ok(),
            Some((PathBuf::from("/data/notes"), "notes/".to_owned()))
        );
    }
}
