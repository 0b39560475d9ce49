//! The `toolhost` command as a user runs it.

use std::process::Command;

use crate::common::*;

fn examples() -> String {
    example("rust-compute");
    root().join("dist").join("plugins").display().to_string()
}

#[test]
fn list_shows_tools_with_their_plugin() {
    let (ok, out, err) = toolhost(&["list", "--plugins", &examples()]);
    assert!(ok, "{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("word_count"))
        .expect(&out);
    assert!(line.contains("rust-compute"), "{line}");
    assert!(out.lines().any(|l| l.starts_with("search_text")), "{out}");
}

#[test]
fn list_json_has_schemas() {
    let (ok, out, err) = toolhost(&["list", "--json", "--plugins", &examples()]);
    assert!(ok, "{err}");
    let tools: serde_json::Value = serde_json::from_str(&out).expect("json");
    let wc = tools
        .as_array()
        .expect("array")
        .iter()
        .find(|t| t["name"] == "word_count")
        .expect("word_count");
    assert_eq!(wc["plugin"], "rust-compute");
    assert_eq!(wc["input_schema"]["type"], "object");
}

#[test]
fn call_prints_the_result_and_fails_on_error() {
    let dir = examples();
    let (ok, out, err) = toolhost(&[
        "call",
        "--plugins",
        &dir,
        "word_count",
        r#"{"text": "a b c"}"#,
    ]);
    assert!(ok, "{err}");
    assert!(out.contains('3'), "{out}");

    let (ok, _, err) = toolhost(&["call", "--plugins", &dir, "word_count", r#"{"txt": 1}"#]);
    assert!(!ok);
    assert!(err.contains("word_count") && err.contains("text"), "{err}");

    let (ok, _, err) = toolhost(&["call", "--plugins", &dir, "nope", "{}"]);
    assert!(!ok);
    assert!(err.contains("no tool named `nope`"), "{err}");
}

#[test]
fn call_json_prints_the_events_as_json_lines() {
    let (ok, out, err) = toolhost(&[
        "call",
        "--json",
        "--plugins",
        &examples(),
        "word_count",
        r#"{"text": "x"}"#,
    ]);
    assert!(ok, "{err}");
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    let call_events: Vec<&str> = kinds.iter().copied().filter(|k| *k != "answer").collect();
    assert_eq!(call_events, ["started", "ended"], "{out}");
    assert_eq!(kinds.iter().filter(|k| **k == "answer").count(), 1, "{out}");
    let end = events
        .iter()
        .find(|e| e["event"] == "ended")
        .expect("ended");
    assert_eq!(end["status"], "done");
    assert!(end["fuel_used"].as_u64().expect("fuel") > 0);
}

fn behave_folder() -> Folder {
    let folder = Folder::new();
    folder.add(&test_plugin("behave"), "behave");
    folder
}

#[test]
fn call_shows_each_update_on_its_own_line_then_the_result() {
    let folder = behave_folder();
    let dir = folder.path().display().to_string();
    let (ok, out, err) = toolhost(&[
        "call",
        "--plugins",
        &dir,
        "progress",
        r#"{"n": 3, "sleep_ms": 10}"#,
    ]);
    assert!(ok, "{err}");
    for step in ["step 1 of 3", "step 2 of 3", "step 3 of 3"] {
        assert_eq!(
            err.lines().filter(|l| l.contains(step)).count(),
            1,
            "{step}: {err}"
        );
    }
    assert_eq!(out.trim(), "done after 3 steps");
}

#[test]
fn ctrl_c_cancels_a_running_call() {
    use std::io::{BufRead, BufReader, Read};
    // `progress` shows its first update, then sleeps in the host: the
    // update on stderr says the call runs.
    let folder = behave_folder();
    let mut child = Command::new(env!("CARGO_BIN_EXE_toolhost"))
        .args([
            "call",
            "--plugins",
            &folder.path().display().to_string(),
            "progress",
            r#"{"n": 2, "sleep_ms": 600000}"#,
        ])
        .env(
            "TOOLHOST_CACHE_DIR",
            root().join("target").join("toolhost-test-cache"),
        )
        .env("TOOLHOST_STATE", crate::common::test_state())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut seen = String::new();
    while !seen.contains("step 1 of 2") {
        let n = stderr.read_line(&mut seen).expect("read stderr");
        assert!(n > 0, "toolhost ended before the first update: {seen}");
    }
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    stderr.read_to_string(&mut seen).expect("read stderr");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(130), "{seen}");
    assert!(
        seen.contains("cancelling") && seen.contains("cancelled"),
        "{seen}"
    );
}

#[test]
fn check_tells_what_a_plugin_provides_and_asks_for() {
    let file = example("rust-files");
    let (ok, out, err) = toolhost(&["check", &file.display().to_string()]);
    assert!(ok, "{err}");
    assert!(out.contains("search_text"), "{out}");
    assert!(out.contains("/data"), "grants are shown: {out}");
    assert!(out.contains("wasi:filesystem"), "imports are shown: {out}");
}

#[test]
fn check_says_why_a_plugin_is_refused() {
    let file = test_plugin("other-world");
    let (ok, out, _) = toolhost(&["check", &file.display().to_string()]);
    assert!(!ok);
    assert!(
        out.contains("refused") && out.contains("does not export toolhost:plugin/tool@0.1.0"),
        "{out}"
    );
}

#[test]
fn schema_prints_the_tools_for_each_api() {
    let dir = examples();
    let (ok, out, err) = toolhost(&["schema", "--format", "openai", "--plugins", &dir]);
    assert!(ok, "{err}");
    let tools: serde_json::Value = serde_json::from_str(&out).expect("json");
    let wc = tools
        .as_array()
        .expect("array")
        .iter()
        .find(|t| t["function"]["name"] == "word_count")
        .expect("word_count");
    assert_eq!(wc["type"], "function");
    assert_eq!(wc["function"]["parameters"]["type"], "object");
    let (ok, out, _) = toolhost(&["schema", "--format", "anthropic", "--plugins", &dir]);
    assert!(ok);
    assert!(out.contains("\"input_schema\""));
    let (ok, out, _) = toolhost(&["schema", "--plugins", &dir]);
    assert!(ok);
    let mcp: serde_json::Value = serde_json::from_str(&out).expect("json");
    let names: Vec<&str> = mcp["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        names.contains(&"toolhost_cancel_task") && names.contains(&"search_text"),
        "{names:?}"
    );
}

#[test]
fn a_profile_serves_a_subset_of_the_tools() {
    let dir = examples();
    let config = tempfile::tempdir().expect("dir");
    let file = config.path().join("toolhost.toml");
    std::fs::write(
        &file,
        "[profiles.read-only]\nexclude = [\"build_report\", \"audit_log\"]\n\n[profiles.search]\ntools = [\"search_text\", \"find_files\"]\n",
    )
    .expect("write");
    let file = file.display().to_string();
    let list = |profile: &str| {
        let (ok, out, err) = toolhost(&[
            "list",
            "--config",
            &file,
            "--profile",
            profile,
            "--plugins",
            &dir,
        ]);
        assert!(ok, "{err}");
        out.lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect::<Vec<_>>()
    };
    let read_only = list("read-only");
    assert!(
        read_only.contains(&"search_text".to_owned())
            && read_only.contains(&"word_count".to_owned())
    );
    assert!(
        !read_only.contains(&"build_report".to_owned())
            && !read_only.contains(&"audit_log".to_owned())
    );
    assert_eq!(list("search"), ["find_files", "search_text"]);

    let (ok, _, err) = toolhost(&[
        "call",
        "--config",
        &file,
        "--profile",
        "search",
        "--plugins",
        &dir,
        "word_count",
        r#"{"text": "a"}"#,
    ]);
    assert!(!ok, "a tool outside the profile cannot be called");
    assert!(err.contains("no tool named `word_count`"), "{err}");
    let (ok, _, err) = toolhost(&[
        "list",
        "--config",
        &file,
        "--profile",
        "nope",
        "--plugins",
        &dir,
    ]);
    assert!(!ok);
    assert!(
        err.contains("no profile `nope`") && err.contains("read-only"),
        "{err}"
    );
}
