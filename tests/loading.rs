//! Loading a plugin folder: what is refused and why, the compile cache, and
//! the good plugins that keep serving beside bad ones.

use std::time::Duration;

use crate::common::*;
use toolhost::Host;

#[tokio::test]
async fn the_zoo_is_refused_with_one_clear_line_each_and_the_rest_loads() {
    let folder = Folder::new();
    folder.add(&example("rust-compute"), "rust-compute");
    for bad in [
        "describe-loop",
        "describe-trap",
        "bad-schema",
        "not-object",
        "bad-name",
        "other-world",
    ] {
        folder.add(&test_plugin(bad), bad);
    }
    // A core module (the smallest valid one), a random file, an empty file.
    folder.write("core.wasm", b"\0asm\x01\0\0\0");
    folder.write("garbage.wasm", b"this is not wasm at all");
    folder.write("empty.wasm", b"");
    // A manifest with an unknown key and one with a missing directory.
    folder.add_with_manifest(&test_plugin("behave"), "typo", "[limits]\nfule = 10\n");
    folder.add_with_manifest(
        &test_plugin("behave"),
        "nodir",
        "[permissions]\ndirs = [{ host = \"./no/such/dir\", guest = \"/data\" }]\n",
    );

    let mut cfg = config();
    cfg.describe_timeout = Duration::from_millis(500);
    cfg.describe_fuel = u64::MAX / 2;
    let host = Host::new(cfg).expect("host");
    let report = host.load_dir(folder.path()).await.expect("load");

    assert!(
        refusal(&report, "describe-loop.wasm").contains("describe() did not return within 500ms")
    );
    let trap = refusal(&report, "describe-trap.wasm");
    assert!(trap.contains("describe() failed: trap:"), "{trap}");
    assert!(refusal(&report, "bad-schema.wasm").contains("input schema: not a valid JSON Schema"));
    assert!(refusal(&report, "not-object.wasm").contains("must describe an object"));
    assert!(refusal(&report, "bad-name.wasm").contains("invalid tool name \"has space\""));
    assert!(
        refusal(&report, "other-world.wasm").contains("does not export toolhost:plugin/tool@0.1.0")
    );
    assert!(refusal(&report, "core.wasm").contains("core WebAssembly module, not a component"));
    assert!(refusal(&report, "garbage.wasm").contains("not a WebAssembly file"));
    assert!(refusal(&report, "empty.wasm").contains("not a WebAssembly file"));
    let typo = refusal(&report, "typo.wasm");
    assert!(
        typo.contains("typo.toml") && typo.contains("fule"),
        "{typo}"
    );
    let nodir = refusal(&report, "nodir.wasm");
    assert!(
        nodir.contains("nodir.toml") && nodir.contains("permissions.dirs[0].host"),
        "{nodir}"
    );
    for e in &report.refused {
        assert!(!e.to_string().contains('\n'), "one line: {e}");
    }
    assert_eq!(report.refused.len(), 11, "{:?}", report.refused);

    // The good plugin serves.
    assert_eq!(report.loaded.len(), 1);
    let o = host
        .call("word_count", r#"{"text": "one two three"}"#)
        .await;
    assert!(text(&o).contains('3'), "{}", text(&o));
}

#[tokio::test]
async fn a_tool_name_clash_names_both_files_and_one_keeps_serving() {
    let folder = Folder::new();
    folder.add(&example("rust-compute"), "rust-compute");
    folder.add(&test_plugin("clash"), "clash");
    let (host, report) = host_for(&folder).await;
    assert_eq!(report.refused.len(), 1, "{:?}", report.refused);
    let e = report.refused[0].to_string();
    assert!(
        e.contains("clash.wasm") && e.contains("rust-compute.wasm"),
        "{e}"
    );
    assert!(e.contains("`word_count`"), "{e}");
    assert!(
        host.call("word_count", r#"{"text": "a b"}"#)
            .await
            .result
            .is_ok()
    );
}

#[tokio::test]
async fn a_second_start_compiles_nothing() {
    let cache = tempfile::tempdir().expect("cache dir");
    let folder = Folder::new();
    folder.add(&test_plugin("behave"), "behave");
    folder.add(&example("rust-compute"), "rust-compute");
    let start = || async {
        let mut cfg = config();
        cfg.cache_dir = Some(cache.path().to_owned());
        let host = Host::new(cfg).expect("host");
        host.load_dir(folder.path()).await.expect("load")
    };
    let cold = start().await;
    assert_eq!(cold.loaded.len(), 2);
    assert!(cold.loaded.iter().all(|p| !p.from_cache()));
    let warm = start().await;
    assert_eq!(warm.loaded.len(), 2);
    assert!(
        warm.loaded.iter().all(|p| p.from_cache()),
        "every plugin came from the cache"
    );

    // A changed file is compiled again, not served from a stale entry.
    let changed = Folder::new();
    changed.add(&example("rust-files"), "behave");
    let mut cfg = config();
    cfg.cache_dir = Some(cache.path().to_owned());
    let host = Host::new(cfg).expect("host");
    let report = host.load_dir(changed.path()).await.expect("load");
    assert!(!report.loaded[0].from_cache());

    // The cache remembers each file unchanged without reading it; a file
    // rewritten in place is read again: compiled when its bytes differ,
    // from the cache when they are the same.
    let in_place = |from: &std::path::Path| {
        let bytes = std::fs::read(from).expect("read plugin");
        std::fs::write(folder.path().join("behave.wasm"), bytes).expect("rewrite plugin");
    };
    in_place(&example("rust-files"));
    let rewritten = start().await;
    let behave = |r: &toolhost::LoadReport| {
        r.loaded
            .iter()
            .find(|p| p.name() == "behave")
            .cloned()
            .expect("behave.wasm loaded")
    };
    let plugin = behave(&rewritten);
    assert!(
        plugin.tools().iter().any(|t| t.name == "find_files"),
        "the new content serves: {:?}",
        plugin.tools().iter().map(|t| &t.name).collect::<Vec<_>>()
    );
    in_place(&test_plugin("behave"));
    let same_again = start().await;
    let plugin = behave(&same_again);
    assert!(plugin.from_cache(), "the old content is still in the cache");
    assert!(plugin.tools().iter().any(|t| t.name == "progress"));
}

#[tokio::test]
async fn a_schema_marked_valid_in_the_cache_that_is_not_fails_its_calls_before_the_plugin_runs() {
    // A warm start trusts the compile cache's marks of valid schemas and
    // builds validators after the load (B7). A mark that lies (a cache
    // changed by hand, or by a build that judged schemas otherwise) must
    // fail the tool's calls before the plugin runs, not run them unchecked.
    let cache = tempfile::tempdir().expect("cache dir");
    let host_with = |folder: &Folder| {
        let mut cfg = config();
        cfg.cache_dir = Some(cache.path().to_owned());
        let host = Host::new(cfg).expect("host");
        let dir = folder.path().to_owned();
        async move {
            let report = host.load_dir(&dir).await.expect("load");
            (host, report)
        }
    };
    // A valid plugin leaves its marks, which name this build's fingerprint.
    let valid = Folder::new();
    valid.add(&test_plugin("behave"), "behave");
    let _ = host_with(&valid).await;
    let marks = cache.path().join("schemas");
    let mark = std::fs::read_dir(&marks)
        .expect("schema marks")
        .next()
        .expect("one mark")
        .expect("entry")
        .file_name();
    let fingerprint = mark
        .to_string_lossy()
        .split_once('-')
        .expect("hash-fingerprint")
        .1
        .to_owned();

    let bad = Folder::new();
    bad.add(&test_plugin("bad-schema"), "bad-schema");
    let (_, report) = host_with(&bad).await;
    assert!(report.loaded.is_empty(), "refused without a mark");

    // The schema as the plugin sends it (serde_json sorts the keys).
    let text = r#"{"properties":{"n":{"type":12}},"type":"object"}"#;
    let hash = blake3::hash(text.as_bytes()).to_hex();
    std::fs::write(marks.join(format!("{}-{fingerprint}", &hash[..32])), b"").expect("forge");
    let (host, report) = host_with(&bad).await;
    assert_eq!(
        report.loaded.len(),
        1,
        "taken on the mark's word: {report:?}"
    );
    let session = host.open_session(toolhost::SessionOptions::default());
    let answer = session.call("c1", "bad_schema", "{}").await;
    assert!(answer.is_error, "{answer:?}");
    assert!(
        answer.output.contains("could not be run"),
        "the model reads the usual host failure (B5): {answer:?}"
    );
    assert_ne!(answer.output, "bad_schema", "the plugin ran");
}

/// A host, and a folder of `behave` and `describe-loop`, whose describe()
/// runs for as long as the test does.
fn behave_beside_a_describe_that_never_ends() -> (Host, Folder) {
    let folder = Folder::new();
    folder.add(&test_plugin("behave"), "behave");
    folder.add(&test_plugin("describe-loop"), "describe-loop");
    let mut cfg = config();
    cfg.describe_timeout = Duration::from_secs(3600);
    cfg.describe_fuel = u64::MAX / 2;
    (Host::new(cfg).expect("host"), folder)
}

#[tokio::test]
async fn fast_plugins_serve_while_slow_ones_load() {
    let (host, folder) = behave_beside_a_describe_that_never_ends();
    let mut changed = host.tools_changed();
    host.start_loading(folder.path()).expect("start");
    tokio::time::timeout(WAIT, async {
        while !has_tool(&host, "ok") {
            changed.changed().await.expect("the host lives");
        }
    })
    .await
    .expect("behave is loaded");
    assert_eq!(text(&host.call("ok", "{}").await), "ok");
    let report = host.report();
    assert!(
        report.refused.is_empty() && report.loaded.len() == 1,
        "describe-loop is still loading: {report:?}"
    );
}

#[tokio::test]
async fn manifest_tool_overrides_apply_and_unknown_tools_are_refused() {
    let folder = Folder::new();
    folder.add_with_manifest(
        &test_plugin("behave"),
        "behave",
        "[tools.ok]\nenabled = false\n[tools.sleep]\non-duplicate = \"queue\"\n",
    );
    folder.add_with_manifest(
        &test_plugin("behave"),
        "ghost",
        "[tools.nope]\nenabled = false\n",
    );
    let (host, report) = host_for(&folder).await;
    assert!(refusal(&report, "ghost.wasm").contains("[tools.nope]"));
    let names: Vec<String> = host.tools().iter().map(|t| t.tool.name.clone()).collect();
    assert!(!names.contains(&"ok".to_owned()));
    let sleep = host
        .tools()
        .into_iter()
        .find(|t| t.tool.name == "sleep")
        .expect("sleep");
    assert_eq!(sleep.tool.on_duplicate, toolhost::DuplicatePolicy::Queue);
    assert!(matches!(
        host.call("ok", "{}").await.result,
        Err(toolhost::CallError::UnknownTool { .. })
    ));
}

#[tokio::test]
async fn a_describe_that_spins_is_stopped_by_its_fuel_budget() {
    let folder = Folder::new();
    folder.add(&test_plugin("describe-loop"), "describe-loop");
    let mut cfg = config();
    cfg.describe_fuel = 10_000_000;
    cfg.describe_timeout = Duration::from_secs(600);
    let host = Host::new(cfg).expect("host");
    let report = host.load_dir(folder.path()).await.expect("load");
    let reason = refusal(&report, "describe-loop.wasm");
    assert!(
        reason.contains("describe() used more than its 10000000 units of fuel"),
        "{reason}"
    );
}

#[tokio::test]
async fn an_unknown_metering_is_a_manifest_error_naming_the_key() {
    let folder = Folder::new();
    folder.add_with_manifest(
        &test_plugin("behave"),
        "behave",
        "[limits]\nmetering = \"cycles\"\n",
    );
    let (_host, report) = host_for(&folder).await;
    let reason = refusal(&report, "behave.wasm");
    assert!(
        reason.contains("behave.toml")
            && reason.contains("limits.metering: \"cycles\" is not a metering mode")
            && reason.contains("\"epoch\""),
        "{reason}"
    );
}

#[tokio::test]
async fn a_describe_that_spins_in_an_epoch_plugin_is_stopped_by_its_timeout() {
    let folder = Folder::new();
    folder.add_with_manifest(
        &test_plugin("describe-loop"),
        "describe-loop",
        "[limits]\nmetering = \"epoch\"\n",
    );
    let mut cfg = config();
    // No fuel budget stops an epoch-metered describe(): only its time.
    cfg.describe_fuel = 10_000_000;
    cfg.describe_timeout = Duration::from_millis(300);
    let host = Host::new(cfg).expect("host");
    let report = host.load_dir(folder.path()).await.expect("load");
    let reason = refusal(&report, "describe-loop.wasm");
    assert!(
        reason.contains("describe() did not return within 300ms"),
        "{reason}"
    );
}

#[tokio::test]
async fn each_metering_keeps_its_own_compile_cache_entries() {
    let cache = tempfile::tempdir().expect("cache dir");
    let start = |manifest: &'static str| {
        let cache = cache.path().to_owned();
        async move {
            let folder = Folder::new();
            folder.add_with_manifest(&test_plugin("behave"), "behave", manifest);
            let mut cfg = config();
            cfg.cache_dir = Some(cache);
            let host = Host::new(cfg).expect("host");
            let report = host.load_dir(folder.path()).await.expect("load");
            assert!(report.refused.is_empty(), "{:?}", report.refused);
            let o = host.call("spin_once", r#"{"iterations": 1000}"#).await;
            (report.loaded[0].from_cache(), o.fuel_used, text(&o))
        }
    };
    let (cached, fuel, fuel_answer) = start("").await;
    assert!(!cached && fuel > 0);
    // The same file metered by epoch is compiled for its own engine, not
    // taken from the fuel engine's entry.
    let epoch = "[limits]\nmetering = \"epoch\"\n";
    let (cached, fuel, epoch_answer) = start(epoch).await;
    assert!(!cached, "the epoch engine compiled its own");
    assert_eq!(fuel, 0, "an epoch-metered call counts no fuel");
    assert_eq!(epoch_answer, fuel_answer);
    let (cached, _, _) = start(epoch).await;
    assert!(cached, "and cached it under its own key");
    let (cached, fuel, _) = start("").await;
    assert!(
        cached && fuel > 0,
        "the fuel engine's entry is still its own"
    );
}

/// Poll `f` until it holds: a refusal changes no tool list, so there is no
/// event to wait on.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    tokio::time::timeout(WAIT, async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

fn has_tool(host: &Host, name: &str) -> bool {
    host.tools().iter().any(|t| t.tool.name == name)
}

/// A folder watched before its host opens (as `toolhost serve` does, to
/// set the watch up beside the engine): what changed before the host
/// followed the watch is applied once it does.
#[tokio::test]
async fn changes_made_before_a_host_follows_its_folder_are_applied() {
    let folder = Folder::new();
    let changes = toolhost::FolderChanges::watch(folder.path()).expect("watch");
    let (host, _) = host_for(&folder).await;
    folder.add(&test_plugin("behave"), "late");
    assert!(!has_tool(&host, "ok"), "nothing follows the folder yet");
    let _watch = host.follow_folder(changes);
    until("behave's tools", || has_tool(&host, "ok")).await;
}

/// A folder listed before its watch is set up (as `toolhost serve` does,
/// so that its tools are announced without waiting for the watch): what
/// was removed, replaced or added in between is applied once the host
/// follows the watch.
#[tokio::test]
async fn changes_between_a_folders_listing_and_its_watch_are_applied() {
    let folder = Folder::new();
    let gone = folder.add(&test_plugin("behave"), "gone");
    folder.add(&test_plugin("spin"), "swapped");
    let (host, _) = host_for(&folder).await;
    assert!(has_tool(&host, "ok") && has_tool(&host, "spin"));
    std::fs::remove_file(gone).expect("remove");
    folder.add(&example("rust-compute"), "swapped");
    folder.add(&example("rust-files"), "added");

    // Set up after the changes, the watch itself saw none of them.
    let _watch = host.watch_folder(folder.path()).expect("watch");
    until("the folder as it is now", || {
        has_tool(&host, "word_count")
            && has_tool(&host, "find_files")
            && !has_tool(&host, "ok")
            && !has_tool(&host, "spin")
    })
    .await;
}

#[tokio::test]
async fn the_live_folder_follows_added_replaced_broken_and_removed_plugins() {
    let folder = Folder::new();
    let (host, _) = host_for(&folder).await;
    let _watch = host.watch_folder(folder.path()).expect("watch");
    let mut changed = host.tools_changed();

    // Added.
    folder.add(&test_plugin("behave"), "live");
    until("behave's tools", || has_tool(&host, "ok")).await;
    assert!(changed.has_changed().expect("open"), "tools_changed moved");
    changed.mark_unchanged();

    // A call running on the old version finishes on it while the file is
    // replaced: `wait_cancel` runs until cancelled, after the replacement.
    let s = host.open_session(toolhost::SessionOptions::default());
    let mut events = s.subscribe();
    let running = spawn_call(&s, "c1", "wait_cancel", "{}");
    event(&mut events, "c1 started", |e| started(e, "c1")).await;
    folder.add(&example("rust-compute"), "live");
    until("the replacement", || {
        has_tool(&host, "word_count") && !has_tool(&host, "ok")
    })
    .await;
    s.cancel("c1").expect("cancel");
    assert_eq!(
        running.await.expect("join").kind,
        toolhost::AnswerKind::Cancelled
    );
    let r = ended(&s, "c1").await;
    assert_eq!(
        r.result.and_then(|o| o.text.clone()).as_deref(),
        Some("cleaned up"),
        "the old version ran on: {:?}",
        r.error
    );

    // A broken new version is refused and the serving one goes on.
    folder.write("live.wasm", b"\0asm\x01\0\0\0");
    until("the refusal", || !host.report().refused.is_empty()).await;
    assert!(
        has_tool(&host, "word_count"),
        "the loaded version still serves"
    );
    assert!(
        host.call("word_count", r#"{"text": "a b"}"#)
            .await
            .result
            .is_ok()
    );

    // A manifest change reloads the plugin.
    folder.add(&example("rust-compute"), "live");
    until("the good version again", || {
        host.report().refused.is_empty()
    })
    .await;
    std::fs::write(
        folder.path().join("live.toml"),
        "[tools.sha256]\nenabled = false\n",
    )
    .expect("manifest");
    until("the manifest to apply", || !has_tool(&host, "sha256")).await;
    assert!(has_tool(&host, "word_count"));

    // Removed.
    std::fs::remove_file(folder.path().join("live.wasm")).expect("remove");
    until("the removal", || host.tools().is_empty()).await;
}

/// A companion tool called over MCP answers while a plugin is still
/// loading: it does not wait for the loads (nor does the model).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn companion_tools_answer_over_mcp_while_a_slow_plugin_loads() {
    let (host, folder) = behave_beside_a_describe_that_never_ends();
    host.start_loading(folder.path()).expect("start");
    // A legacy session: its calls look their tool up for its output schema.
    let mut mcp = crate::common::http::InProcess::serve(&host).await;
    mcp.open().await;
    // Answered within the tests' wait, while describe-loop never ends.
    let answer = mcp.call(2, "toolhost_running_tasks").await;
    assert!(answer.contains("\"result\""), "{answer}");
    let report = host.report();
    assert!(
        report.refused.is_empty() && report.loaded.len() <= 1,
        "describe-loop is still loading: {report:?}"
    );
    mcp.stop().await;
}
