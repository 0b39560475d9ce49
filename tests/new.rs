//! `toolhost new` (issue 5, item 5): the plugin it makes in each language
//! builds with `tools/build-plugins` as it is, loads with its manifest, and
//! its tool answers a call: progress through a session (B2, B3), a tool
//! error for a blank text (B5) and an early return on cancel (B21).
//!
//! The plugins are made outside the checkout, in a temporary folder, and
//! built into another one: nothing here touches `plugins/` or `dist/`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::*;
use serde_json::json;
use toolhost::{AnswerKind, CallError, CallStatus, Host, SessionOptions};

const LANGUAGES: [&str; 4] = ["rust", "python", "js", "c"];

/// `toolhost new tally --lang LANGUAGE --dir DIR`, which must succeed.
fn new_plugin(language: &str, dir: &Path) {
    let (ok, stdout, stderr) = toolhost(&[
        "new",
        "tally",
        "--lang",
        language,
        "--dir",
        &dir.to_string_lossy(),
    ]);
    assert!(ok, "{language}: {stderr}");
    let folder = dir.join(format!("{language}-tally"));
    assert!(
        stdout.contains(&format!("tools/build-plugins {}", folder.display())),
        "{language}: says how to build it: {stdout}"
    );
    for file in ["README.md".to_owned(), format!("{language}-tally.toml")] {
        assert!(folder.join(&file).is_file(), "{language}: {file}");
    }
}

/// What the made plugin's tool must do, through a host serving only it.
async fn check_tally(language: &str, wasm: &Path) {
    let host = Host::new(config()).expect("host");
    let plugin = host
        .load_file(wasm)
        .await
        .unwrap_or_else(|e| panic!("{language}: {} refused: {}", wasm.display(), e.reason()));
    assert!(
        plugin.manifest_path().is_some(),
        "{language}: the manifest was built beside it"
    );
    assert_eq!(
        plugin.limits().timeout,
        Duration::from_secs(60),
        "{language}"
    );
    let s = host.open_session(SessionOptions::default());

    // Progress: the first update answers, the rest and the result follow.
    let a = s
        .call(
            "t1",
            "tally",
            r#"{"text": "one two\nthree four five\n\nsix"}"#,
        )
        .await;
    assert_eq!(a.kind, AnswerKind::Released, "{language}: {}", a.output);
    assert!(
        a.output.contains("line 1 of 4: 2 words so far"),
        "{language}: {}",
        a.output
    );
    let r = ended(&s, "t1").await;
    assert_eq!(r.status, CallStatus::Done, "{language}: {:?}", r.error);
    let updates: Vec<&str> = r.updates.iter().map(|u| u.message.as_str()).collect();
    assert_eq!(
        updates,
        [
            "line 1 of 4: 2 words so far",
            "line 2 of 4: 5 words so far",
            "line 3 of 4: 5 words so far",
            "line 4 of 4: 6 words so far",
        ],
        "{language}"
    );
    let result = r.result.expect("a result");
    assert_eq!(
        result.text.as_deref(),
        Some("6 words in 4 lines"),
        "{language}"
    );
    assert_eq!(
        result.data,
        Some(json!({"words": 6, "lines": 4})),
        "{language}"
    );

    // A blank text is refused as invalid arguments, before any progress.
    let o = host.call("tally", r#"{"text": " \n "}"#).await;
    assert!(
        matches!(&o.result, Err(CallError::ToolInvalidArguments(m)) if m == "text must not be blank"),
        "{language}: {:?}",
        o.result
    );

    // Cancelled, it returns what it has counted, within the grace period.
    let lines = vec!["a b"; 20].join("\n");
    let args = json!({"text": lines, "delay_ms": 200}).to_string();
    let a = s.call("t2", "tally", &args).await;
    assert_eq!(a.kind, AnswerKind::Released, "{language}: {}", a.output);
    s.cancel("t2").expect("cancellable");
    let r = ended(&s, "t2").await;
    assert_eq!(r.status, CallStatus::Cancelled, "{language}");
    let text = r.result.and_then(|o| o.text.clone()).unwrap_or_default();
    assert!(
        text.starts_with("cancelled after ") && text.contains(" of 20 lines"),
        "{language}: the tool returned by itself: {text:?}"
    );
}

#[tokio::test]
async fn new_plugins_build_load_and_answer_in_every_language() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("dist");
    let mut build = Command::new(root().join("tools/build-plugins"));
    build.arg("--out").arg(&out);
    for language in LANGUAGES {
        new_plugin(language, dir.path());
        build.arg(dir.path().join(format!("{language}-tally")));
    }
    let built = build.output().expect("run tools/build-plugins");
    let log = String::from_utf8_lossy(&built.stderr);
    assert!(built.status.success(), "tools/build-plugins failed:\n{log}");
    for language in LANGUAGES {
        let wasm = out.join(format!("{language}-tally.wasm"));
        assert!(
            wasm.is_file(),
            "{language}: tools/build-plugins made no {}:\n{log}",
            wasm.display(),
        );
        check_tally(language, &wasm).await;
    }
}

#[test]
fn new_refuses_a_bad_name_and_an_existing_folder_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let at = dir.path().to_string_lossy().into_owned();
    for bad in ["Tally", "9lives", "a/b", "tally-"] {
        let (ok, _, err) = toolhost(&["new", bad, "--lang", "python", "--dir", &at]);
        assert!(!ok, "{bad}");
        assert!(err.contains("invalid plugin name"), "{bad}: {err}");
    }
    let (ok, _, err) = toolhost(&["new", "tally", "--lang", "go", "--dir", &at]);
    assert!(!ok);
    assert!(err.contains("rust, python, js, c"), "{err}");
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("list").count(),
        0,
        "refused names write nothing"
    );

    // A folder that exists is never written into.
    let folder = dir.path().join("c-tally");
    std::fs::create_dir(&folder).expect("mkdir");
    std::fs::write(folder.join("mine.c"), "/* mine */").expect("write");
    let (ok, _, err) = toolhost(&["new", "tally", "--lang", "c", "--dir", &at]);
    assert!(!ok);
    assert!(err.contains("already exists"), "{err}");
    let files: Vec<_> = std::fs::read_dir(&folder)
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(files, ["mine.c"]);

    // A name given with its language prefix is not prefixed twice.
    let (ok, _, err) = toolhost(&["new", "rust-tally", "--lang", "rust", "--dir", &at]);
    assert!(ok, "{err}");
    let cargo =
        std::fs::read_to_string(dir.path().join("rust-tally/Cargo.toml")).expect("Cargo.toml");
    assert!(cargo.contains("name = \"rust-tally\""), "{cargo}");
    let lib = std::fs::read_to_string(dir.path().join("rust-tally/src/lib.rs")).expect("lib.rs");
    assert!(lib.contains("\"tally\","), "the tool is `tally`");
}
