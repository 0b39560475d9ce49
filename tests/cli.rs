//! The `toolhost` command as a user runs it.

mod common;

use std::process::Command;

use common::*;

fn toolhost(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_toolhost"))
        .args(args)
        .env(
            "TOOLHOST_CACHE_DIR",
            root().join("target").join("toolhost-test-cache"),
        )
        .output()
        .expect("run toolhost");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

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
fn call_json_reports_fuel() {
    let (ok, out, err) = toolhost(&[
        "call",
        "--json",
        "--plugins",
        &examples(),
        "word_count",
        r#"{"text": "x"}"#,
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(v["ok"], true);
    assert!(v["fuel_used"].as_u64().expect("fuel") > 0);
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
