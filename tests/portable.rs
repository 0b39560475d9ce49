//! The example tools' schemas are portable: each converts to an OpenAI
//! strict-mode schema, draws no warning for OpenAI strict mode or Gemini,
//! and the `null` a strict-mode client sends for an optional argument is
//! read as the argument left out, in every language.

use crate::common::{Folder, config, example, host_for, root, text, toolhost};
use serde_json::Value;
use toolhost::Host;
use toolhost::portable::{openai_strict, warnings};

/// The example plugins' tools in OpenAI's format, as `toolhost schema`
/// prints them, without the host's companion tools.
fn example_tools() -> Vec<Value> {
    let plugins = root().join("dist").join("plugins");
    let plugins = plugins.to_str().expect("a UTF-8 path");
    let (ok, out, err) = toolhost(&["schema", "--format", "openai", "--plugins", plugins]);
    assert!(ok, "toolhost schema failed: {err}");
    let tools: Vec<Value> = serde_json::from_str(&out).expect("a JSON list");
    tools
        .into_iter()
        .filter(|t| {
            t["function"]["name"]
                .as_str()
                .is_some_and(|n| !n.starts_with("toolhost_"))
        })
        .collect()
}

#[test]
fn every_example_tool_converts_to_openai_strict_mode_without_warnings() {
    let tools = example_tools();
    assert!(tools.len() >= 15, "{} example tools", tools.len());
    let mut problems = Vec::new();
    for tool in &tools {
        let name = tool["function"]["name"].as_str().unwrap_or("?");
        let schema = &tool["function"]["parameters"];
        if let Err(e) = openai_strict(schema) {
            problems.push(format!("{name}: {e}"));
        }
        for w in warnings(schema) {
            problems.push(format!("{name}: {w}"));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

async fn examples() -> Host {
    let host = Host::new(config()).expect("host");
    let report = host
        .load_dir(root().join("dist").join("plugins"))
        .await
        .expect("load");
    assert!(report.refused.is_empty(), "refused: {:?}", report.refused);
    host
}

#[tokio::test]
async fn optional_arguments_sent_as_null_are_left_out_in_every_language() {
    let host = examples().await;
    // (tool, arguments with nulls, what the answer says when the nulls
    // read as absent)
    let cases = [
        // Rust: `dir` absent is the whole of /data.
        (
            "index_directory",
            r#"{"dir": null, "delay_ms": null}"#,
            "Indexed 20 files in /data.",
        ),
        // Python: `file` absent is every file, `stat` absent is `sum`.
        (
            "csv_summary",
            r#"{"file": null, "delay_ms": null}"#,
            "sales.csv",
        ),
        (
            "csv_group",
            r#"{"file": "sales.csv", "by": "region", "column": "revenue", "stat": null}"#,
            "sum of revenue by region in sales.csv",
        ),
        // JavaScript: `delay_ms` absent is 0.
        (
            "markdown_report",
            r##"{"documents": [{"name": "a.md", "markdown": "# A\n[b](b.md#top)"}, {"name": "b.md", "markdown": "# Top"}], "delay_ms": null}"##,
            "2 documents, ",
        ),
        // C: `dir` absent is the whole of /data.
        (
            "sha256_files",
            r#"{"dir": null, "delay_ms": null}"#,
            "  docs/",
        ),
    ];
    for (tool, arguments, says) in cases {
        let outcome = host.call(tool, arguments).await;
        let answer = text(&outcome);
        assert!(answer.contains(says), "{tool}: {answer}");
    }
}

#[tokio::test]
async fn audit_log_takes_its_fields_as_pairs_and_logs_them_as_an_object() {
    let folder = Folder::new();
    let log = folder.path().join("audit");
    std::fs::create_dir(&log).expect("log folder");
    folder.add_with_manifest(
        &example("rust-audit"),
        "rust-audit",
        "[permissions]\ndirs = [{ host = \"audit\", guest = \"/audit\", write = true }]\n",
    );
    let (host, report) = host_for(&folder).await;
    assert!(report.refused.is_empty(), "refused: {:?}", report.refused);

    let fields = r#"[{"key": "user", "value": "ana"}, {"key": "ip", "value": "10.0.0.1"}]"#;
    let outcome = host
        .call(
            "audit_log",
            &format!(r#"{{"event": "login", "level": null, "fields": {fields}}}"#),
        )
        .await;
    assert_eq!(text(&outcome), "logged");
    let twice =
        r#"{"event": "x", "fields": [{"key": "a", "value": "1"}, {"key": "a", "value": "2"}]}"#;
    let outcome = host.call("audit_log", twice).await;
    assert!(outcome.result.is_err(), "{}", outcome.model_text());

    let written = std::fs::read_to_string(log.join("audit.log")).expect("the log");
    let line: Value = serde_json::from_str(written.trim()).expect("one JSON line");
    assert_eq!(line["level"], "info", "{line}");
    assert_eq!(
        line["fields"],
        serde_json::json!({"ip": "10.0.0.1", "user": "ana"}),
        "{line}"
    );
}
