//! Plugins written in Python, JavaScript and C, loaded and called through
//! the host. Each language's helper library keeps the contract (the
//! `<language>-behave` test plugins, which answer alike, so one test checks
//! all three), and each language's example does its real work, reports
//! progress and answers bad input with a tool error.
//!
//! `tools/build-plugins` builds them all; a language whose toolchain it
//! could not install fails here with the plugin it is missing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use crate::common::*;
use serde_json::{Value, json};
use toolhost::{AnswerKind, CallError, CallStatus, Host, Session, SessionOptions};

/// Each language and its test plugin in `tests/plugins-lang/`.
const LANGUAGES: [(&str, &str); 3] = [
    ("python", "python-behave"),
    ("js", "js-behave"),
    ("c", "c-behave"),
];
const WAIT: Duration = Duration::from_secs(30);

/// Compiles each plugin once per test process before handing out its path.
/// A Python or JavaScript component takes seconds to compile: tests that
/// start together then load it from the shared cache instead of compiling
/// it side by side on two cores.
fn compiled(path: PathBuf) -> PathBuf {
    static DONE: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
    let mut done = DONE.lock().unwrap_or_else(|p| p.into_inner());
    if !done.contains(&path) {
        let file = path.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let host = Host::new(config()).expect("host");
                if let Err(e) = host.check(&file).await {
                    panic!("{} does not load: {}", file.display(), e.reason());
                }
            });
        })
        .join()
        .expect("compile");
        done.insert(path.clone());
    }
    path
}

/// A host serving the files, each with the manifest beside it.
async fn host_of(files: &[PathBuf]) -> Host {
    let host = Host::new(config()).expect("host");
    for file in files {
        if let Err(e) = host.load_file(compiled(file.clone())).await {
            panic!("{} refused: {}", file.display(), e.reason());
        }
    }
    host
}

/// A host serving the test plugin `plugin`.
async fn behave(plugin: &str) -> Host {
    host_of(&[test_plugin(plugin)]).await
}

fn session(host: &Host) -> Session {
    host.open_session(SessionOptions::default())
}

/// The later items of a released call: its updates and final result.
async fn later_items(s: &Session, call_id: &str) -> Vec<toolhost::Item> {
    ended(s, call_id).await;
    let reply = tokio::time::timeout(WAIT, s.next_reply())
        .await
        .expect("a reply in time")
        .expect("a reply");
    let items = reply.items.clone();
    reply.ack();
    items
}

fn data(outcome: &toolhost::CallOutcome) -> Value {
    match &outcome.result {
        Ok(o) => o.data.clone().unwrap_or(Value::Null),
        Err(e) => panic!("{} failed: {e:?}", outcome.tool),
    }
}

// --- The helper library of each language ---------------------------------

#[tokio::test]
async fn every_language_returns_text_and_data() {
    for (language, plugin) in LANGUAGES {
        let host = behave(plugin).await;
        let o = host
            .call("word_count", r#"{"text": "one two\nthree  four\n"}"#)
            .await;
        assert_eq!(text(&o), "4 words, 2 lines, 20 characters", "{language}");
        assert_eq!(
            data(&o),
            json!({"words": 4, "lines": 2, "chars": 20}),
            "{language}"
        );
    }
}

/// A pool too large for 4 GiB of address space per memory (the 10 000
/// concurrent calls of the benchmark) reserves less per memory, and the
/// compiled code checks bounds: every language still loads and runs,
/// Python and JavaScript with their several memories and large tables.
#[tokio::test]
async fn every_language_runs_in_a_pool_past_full_memory_reservations() {
    let mut cfg = config();
    cfg.engine.instances = 5_000;
    cfg.engine.max_memory = 256 << 20;
    let host = Host::new(cfg).expect("a pool of 5 000 instances");
    for (language, plugin) in LANGUAGES {
        if let Err(e) = host.load_file(test_plugin(plugin)).await {
            panic!("{language} refused: {}", e.reason());
        }
        let o = host
            .call("word_count", r#"{"text": "one two\nthree  four\n"}"#)
            .await;
        assert_eq!(
            data(&o),
            json!({"words": 4, "lines": 2, "chars": 20}),
            "{language}"
        );
        host.unload(&test_plugin(plugin));
    }
}

#[tokio::test]
async fn every_language_turns_its_errors_into_tool_errors() {
    for (language, plugin) in LANGUAGES {
        let host = behave(plugin).await;
        let o = host.call("fail", "{}").await;
        assert!(
            matches!(&o.result, Err(CallError::ToolFailed(m)) if m == "it failed on purpose"),
            "{language}: {:?}",
            o.result
        );
        let o = host.call("bad_args", r#"{"n": 3}"#).await;
        assert!(
            matches!(&o.result, Err(CallError::ToolInvalidArguments(m)) if m == "n must be even"),
            "{language}: {:?}",
            o.result
        );
        assert_eq!(
            text(&host.call("bad_args", r#"{"n": 4}"#).await),
            "4 is even",
            "{language}"
        );
    }
}

#[tokio::test]
async fn every_language_crashes_on_an_error_it_does_not_answer() {
    for (language, plugin) in LANGUAGES {
        let host = behave(plugin).await;
        let o = host.call("crash", "{}").await;
        assert!(
            matches!(o.result, Err(CallError::Crashed { .. })),
            "{language}: {:?}",
            o.result
        );
        assert!(o.model_text().contains("crashed"), "{language}");
        // A fresh instance serves the next call.
        assert_eq!(
            text(&host.call("bad_args", r#"{"n": 2}"#).await),
            "2 is even",
            "{language}"
        );
    }
}

#[tokio::test]
async fn every_language_reports_progress_through_a_session() {
    for (language, plugin) in LANGUAGES {
        let host = behave(plugin).await;
        let s = session(&host);
        let a = s.call("p", "progress", r#"{"n": 3, "sleep_ms": 20}"#).await;
        assert_eq!(a.kind, AnswerKind::Released, "{language}: {}", a.output);
        assert!(a.output.contains("step 1 of 3"), "{language}: {}", a.output);
        let items = later_items(&s, "p").await;
        let ids: Vec<&str> = items.iter().map(|i| i.call_id.as_str()).collect();
        assert_eq!(ids, ["p_update_1", "p_update_2", "p_final"], "{language}");
        assert!(items[0].output.contains("step 2 of 3"), "{language}");
        assert!(
            items[2].output.contains("done after 3 steps"),
            "{language}: {}",
            items[2].output
        );
    }
}

#[tokio::test]
async fn every_language_sees_cancellation() {
    for (language, plugin) in LANGUAGES {
        let host = behave(plugin).await;
        let s = session(&host);
        let a = s.call("w", "wait_cancel", "{}").await;
        assert_eq!(a.kind, AnswerKind::Released, "{language}: {}", a.output);
        s.cancel("w").expect("cancellable");
        let r = ended(&s, "w").await;
        assert_eq!(r.status, CallStatus::Cancelled, "{language}");
        assert_eq!(
            r.result.and_then(|o| o.text.clone()).as_deref(),
            Some("stopped on cancel"),
            "{language}: the tool returned by itself, within the grace period"
        );
    }
}

#[tokio::test]
async fn every_language_knows_its_call() {
    for (language, plugin) in LANGUAGES {
        let host = behave(plugin).await;
        let s = session(&host);
        let a = s.call("c42", "info", "{}").await;
        assert_eq!(a.kind, AnswerKind::Result, "{language}: {}", a.output);
        let info = a.data.expect("data");
        assert_eq!(info["call_id"], "c42", "{language}");
        assert_eq!(info["tool"], "info", "{language}");
        assert!(
            info["session_id"].as_str().is_some_and(|id| !id.is_empty()),
            "{language}: {info}"
        );
    }
}

// --- python-csv ----------------------------------------------------------

fn sample(plugin: &str, file: &str) -> PathBuf {
    root()
        .join("plugins")
        .join(plugin)
        .join("sample")
        .join(file)
}

/// The rows of a sample CSV file (no quoted fields in the samples).
fn csv_rows(path: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .expect("sample")
        .lines()
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect()
}

#[tokio::test]
async fn python_csv_summarises_every_file_reporting_progress() {
    let host = host_of(&[example("python-csv")]).await;
    let s = session(&host);
    let a = s.call("c1", "csv_summary", "{}").await;
    assert_eq!(a.kind, AnswerKind::Released, "{}", a.output);
    assert!(
        a.output.contains("summarised 1 of 3 files: inventory.csv"),
        "{}",
        a.output
    );
    let items = later_items(&s, "c1").await;
    let ids: Vec<&str> = items.iter().map(|i| i.call_id.as_str()).collect();
    assert_eq!(ids, ["c1_update_1", "c1_final"]);
    assert!(items[0].output.contains("2 of 3 files: sales.csv"));

    let summary = s.record("c1").and_then(|r| r.result).expect("result");
    let summary = summary.data.clone().expect("data");
    let weather = &summary["files"][2];
    assert_eq!(weather["file"], "weather.csv");
    let rows = csv_rows(&sample("python-csv", "weather.csv"));
    assert_eq!(weather["rows"], rows.len() - 1);
    let temps: Vec<f64> = rows[1..]
        .iter()
        .map(|r| r[2].parse().expect("number"))
        .collect();
    let max = temps.iter().copied().fold(f64::MIN, f64::max);
    assert_eq!(weather["columns"]["temp_c"]["max"], max);
    assert_eq!(weather["columns"]["city"]["distinct"], 3);
    let missing = rows[1..].iter().filter(|r| r[3].is_empty()).count();
    assert!(missing > 0);
    assert_eq!(weather["columns"]["rain_mm"]["missing"], missing);
}

#[tokio::test]
async fn python_csv_groups_a_column_by_another() {
    let host = host_of(&[example("python-csv")]).await;
    let o = host
        .call(
            "csv_group",
            r#"{"file": "sales.csv", "by": "region", "column": "units"}"#,
        )
        .await;
    let mut expected: BTreeMap<String, f64> = BTreeMap::new();
    for row in &csv_rows(&sample("python-csv", "sales.csv"))[1..] {
        *expected.entry(row[1].clone()).or_default() += row[3].parse::<f64>().expect("units");
    }
    let groups = &data(&o)["groups"];
    assert_eq!(groups.as_object().map(|g| g.len()), Some(expected.len()));
    for (region, units) in expected {
        assert_eq!(groups[&region], units, "{region}");
    }
    assert!(text(&o).starts_with("sum of units by region in sales.csv:"));
}

#[tokio::test]
async fn python_csv_answers_bad_input_with_tool_errors() {
    let host = host_of(&[example("python-csv")]).await;
    let o = host
        .call(
            "csv_group",
            r#"{"file": "sales.csv", "by": "colour", "column": "units"}"#,
        )
        .await;
    let Err(CallError::ToolInvalidArguments(m)) = &o.result else {
        panic!("{:?}", o.result)
    };
    assert!(
        m.contains("no column 'colour'") && m.contains("region"),
        "{m}"
    );

    let o = host.call("csv_summary", r#"{"file": "nope.csv"}"#).await;
    assert!(
        matches!(&o.result, Err(CallError::ToolFailed(m)) if m.contains("nope.csv does not exist")),
        "{:?}",
        o.result
    );
    let o = host
        .call("csv_summary", r#"{"file": "../../etc/passwd"}"#)
        .await;
    assert!(
        matches!(&o.result, Err(CallError::ToolInvalidArguments(_))),
        "{:?}",
        o.result
    );
}

// --- js-markdown ---------------------------------------------------------

const GUIDE: &str = "# Guide\n\nRead [the install steps](#install), not [this](#nowhere).\n\n\
    ## Install\n\n```sh\n# a comment, not a heading\n```\n\nRun it\n------\n\n\
    See [the site](https://example.org) and ![a logo](logo.png).\n";

#[tokio::test]
async fn js_markdown_outlines_a_document() {
    let host = host_of(&[example("js-markdown")]).await;
    let o = host
        .call(
            "markdown_outline",
            &json!({ "markdown": GUIDE }).to_string(),
        )
        .await;
    let d = data(&o);
    let headings: Vec<(u64, &str, &str)> = d["headings"]
        .as_array()
        .expect("headings")
        .iter()
        .map(|h| {
            (
                h["level"].as_u64().unwrap_or(0),
                h["title"].as_str().unwrap_or(""),
                h["anchor"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        headings,
        [
            (1, "Guide", "guide"),
            (2, "Install", "install"),
            (2, "Run it", "run-it")
        ]
    );
    assert_eq!(d["stats"]["links"], 3);
    assert_eq!(d["stats"]["images"], 1);
    assert_eq!(d["stats"]["code_blocks"], 1);
    assert_eq!(d["broken_links"].as_array().map(Vec::len), Some(1));
    assert_eq!(d["broken_links"][0]["target"], "#nowhere");
    let t = text(&o);
    assert!(t.contains("- Guide\n  - Install\n  - Run it"), "{t}");
}

#[tokio::test]
async fn js_markdown_checks_links_between_documents_reporting_progress() {
    let host = host_of(&[example("js-markdown")]).await;
    let s = session(&host);
    let documents = json!({ "documents": [
        { "name": "README.md", "markdown": "# Intro\nSee [install](docs/guide.md#install), [faq](docs/faq.md) and [old](docs/old.md)." },
        { "name": "docs/guide.md", "markdown": GUIDE },
        { "name": "docs/faq.md", "markdown": "# FAQ\nBack to [the intro](../README.md#intro) or [setup](guide.md#setup)." },
    ]});
    let a = s
        .call("m1", "markdown_report", &documents.to_string())
        .await;
    assert_eq!(a.kind, AnswerKind::Released, "{}", a.output);
    assert!(a.output.contains("outlined 1 of 3 documents: README.md"));
    let items = later_items(&s, "m1").await;
    let ids: Vec<&str> = items.iter().map(|i| i.call_id.as_str()).collect();
    assert_eq!(ids, ["m1_update_1", "m1_final"]);
    let fin = &items[1];
    assert!(fin.output.contains("3 broken links"), "{}", fin.output);
    let d = fin.data.as_ref().expect("data");
    let broken: Vec<(&str, &str)> = d["documents"]
        .as_array()
        .expect("documents")
        .iter()
        .flat_map(|doc| {
            let name = doc["name"].as_str().unwrap_or("");
            doc["broken_links"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |l| (name, l["target"].as_str().unwrap_or("")))
        })
        .collect();
    assert_eq!(
        broken,
        [
            ("README.md", "docs/old.md"),
            ("docs/guide.md", "#nowhere"),
            ("docs/faq.md", "guide.md#setup")
        ]
    );
}

#[tokio::test]
async fn js_markdown_answers_bad_input_with_tool_errors() {
    let host = host_of(&[example("js-markdown")]).await;
    let o = host
        .call("markdown_outline", r#"{"markdown": "  \n"}"#)
        .await;
    assert!(
        matches!(&o.result, Err(CallError::ToolInvalidArguments(m)) if m == "markdown is empty"),
        "{:?}",
        o.result
    );
    let twice = json!({ "documents": [
        { "name": "a.md", "markdown": "# A" },
        { "name": "a.md", "markdown": "# B" },
    ]});
    let o = host.call("markdown_report", &twice.to_string()).await;
    assert!(
        matches!(&o.result, Err(CallError::ToolInvalidArguments(m)) if m.contains("two documents are named a.md")),
        "{:?}",
        o.result
    );
}

// --- c-checksum ----------------------------------------------------------

#[tokio::test]
async fn c_checksum_hashes_every_file_reporting_progress() {
    // rust-compute's sha256 tool checks the C digests of the text files.
    let host = host_of(&[example("c-checksum"), example("rust-compute")]).await;
    let s = session(&host);
    let a = s.call("h1", "sha256_files", "{}").await;
    assert_eq!(a.kind, AnswerKind::Released, "{}", a.output);
    assert!(
        a.output.contains("hashed 1 of 5 files: data/pixel.png"),
        "{}",
        a.output
    );
    let items = later_items(&s, "h1").await;
    let ids: Vec<&str> = items.iter().map(|i| i.call_id.as_str()).collect();
    assert_eq!(
        ids,
        ["h1_update_1", "h1_update_2", "h1_update_3", "h1_final"]
    );

    let fin = items.last().expect("final");
    let files = fin.data.as_ref().expect("data")["files"]
        .as_array()
        .expect("files")
        .clone();
    let paths: Vec<&str> = files.iter().filter_map(|f| f["path"].as_str()).collect();
    assert_eq!(
        paths,
        [
            "data/pixel.png",
            "docs/changelog.md",
            "docs/readme.md",
            "empty.txt",
            "hello.txt"
        ]
    );
    for f in &files {
        let path = f["path"].as_str().unwrap_or_default();
        let bytes = std::fs::read(sample("c-checksum", path)).expect("sample");
        assert_eq!(f["bytes"], bytes.len(), "{path}");
        let expected = match String::from_utf8(bytes) {
            Ok(text) => {
                let args = json!({ "text": text }).to_string();
                crate::common::text(&host.call("sha256", &args).await)
            }
            Err(_) => "4ff6ab670a58c14270e034e2090d9a432caa263a14e0a25785386b0c12f880b5".into(),
        };
        assert_eq!(f["sha256"], expected.as_str(), "{path}");
        assert!(
            fin.output.contains(&format!("{expected}  {path}")),
            "sha256sum's format: {}",
            fin.output
        );
    }
}

#[tokio::test]
async fn c_checksum_converts_base64_both_ways() {
    let host = host_of(&[example("c-checksum")]).await;
    let o = host
        .call("base64_encode", r#"{"text": "héllo wörld ✓"}"#)
        .await;
    assert_eq!(text(&o), "aMOpbGxvIHfDtnJsZCDinJM=");
    let o = host
        .call(
            "base64_decode",
            r#"{"base64": "aMOpbGxv\nIHfDtnJsZCDinJM="}"#,
        )
        .await;
    assert_eq!(text(&o), "héllo wörld ✓");
    let o = host.call("base64_encode", r#"{"text": ""}"#).await;
    assert_eq!(o.result.expect("ok").text.as_deref(), Some(""));
}

#[tokio::test]
async fn c_checksum_answers_bad_input_with_tool_errors() {
    let host = host_of(&[example("c-checksum")]).await;
    for (tool, args, expected) in [
        ("base64_decode", r#"{"base64": "ab$d"}"#, "unexpected '$'"),
        (
            "base64_decode",
            r#"{"base64": "abc"}"#,
            "not a multiple of 4",
        ),
        ("base64_decode", r#"{"base64": "//8="}"#, "not UTF-8"),
        (
            "sha256_files",
            r#"{"dir": "docs/../../etc"}"#,
            "must stay inside",
        ),
    ] {
        let o = host.call(tool, args).await;
        assert!(
            matches!(&o.result, Err(CallError::ToolInvalidArguments(m)) if m.contains(expected)),
            "{tool} {args}: {:?}",
            o.result
        );
    }
    let o = host.call("sha256_files", r#"{"dir": "nope"}"#).await;
    assert!(
        matches!(&o.result, Err(CallError::ToolFailed(m)) if m == "/data/nope does not exist"),
        "{:?}",
        o.result
    );
}
