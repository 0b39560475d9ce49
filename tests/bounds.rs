//! Everything a plugin sends the host is bounded (issue 11): each limit is
//! hit by a real plugin, ends the call (or the load) with an error naming
//! it (B23), and a good call beside it still answers.

mod common;

use std::time::Duration;

use common::*;
use toolhost::{AnswerKind, CallError, CallStatus, Host, Limit, SessionOptions};

const WAIT: Duration = Duration::from_secs(20);

async fn behave_with(manifest: &str) -> (Host, Folder) {
    let folder = Folder::new();
    folder.add_with_manifest(&test_plugin("behave"), "behave", manifest);
    let (host, report) = host_for(&folder).await;
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    (host, folder)
}

#[tokio::test]
async fn a_schema_whose_refs_form_a_cycle_is_refused_at_load() {
    let folder = Folder::new();
    folder.add(&test_plugin("ref-cycle"), "ref-cycle");
    folder.add(&example("rust-compute"), "rust-compute");
    let (host, report) = host_for(&folder).await;
    let reason = refusal(&report, "ref-cycle.wasm");
    assert!(
        reason.contains("tool `ref_cycle`") && reason.contains("cycle"),
        "{reason}"
    );
    assert!(
        host.call("word_count", r#"{"text": "a b"}"#)
            .await
            .result
            .is_ok()
    );
}

#[tokio::test]
async fn b23_too_many_updates_end_the_call_naming_the_limit() {
    let (host, _f) = behave_with("[limits]\nupdates = 2\n").await;
    let o = host.call("progress", r#"{"n": 5, "sleep_ms": 0}"#).await;
    assert!(
        matches!(o.result, Err(CallError::Limit(Limit::Updates(2)))),
        "{:?}",
        o.result
    );
    assert!(
        o.model_text().contains("limit of 2 updates"),
        "{}",
        o.model_text()
    );
    let ok = host.call("progress", r#"{"n": 2, "sleep_ms": 0}"#).await;
    assert!(
        ok.result.is_ok(),
        "two updates are within it: {:?}",
        ok.result
    );
}

#[tokio::test]
async fn b23_an_update_over_its_size_limit_ends_the_call() {
    let (host, _f) = behave_with("[limits]\nupdate-size = 4\n").await;
    let o = host.call("progress", r#"{"n": 1, "sleep_ms": 0}"#).await;
    assert!(
        matches!(o.result, Err(CallError::Limit(Limit::UpdateSize(4)))),
        "{:?}",
        o.result
    );
    assert_eq!(text(&host.call("ok", "{}").await), "ok");
}

#[tokio::test]
async fn b23_a_result_over_its_size_limit_ends_the_call() {
    let (host, _f) = behave_with("[limits]\nresult-size = 4\n").await;
    let o = host.call("progress", r#"{"n": 0, "sleep_ms": 0}"#).await;
    assert!(
        matches!(o.result, Err(CallError::Limit(Limit::ResultSize(4)))),
        "{:?}",
        o.result
    );
    assert_eq!(text(&host.call("ok", "{}").await), "ok", "2 bytes pass");
}

#[tokio::test]
async fn a_grant_to_write_the_plugins_own_folder_is_refused() {
    let folder = Folder::new();
    folder.add_with_manifest(
        &test_plugin("behave"),
        "behave",
        "[permissions]\ndirs = [{ host = \".\", guest = \"/self\", write = true }]\n",
    );
    folder.add(&example("rust-compute"), "rust-compute");
    let (host, report) = host_for(&folder).await;
    let reason = refusal(&report, "behave.wasm");
    assert!(reason.contains("own file or manifest"), "{reason}");
    assert!(!host.tools().is_empty(), "the others load");
}

#[tokio::test]
async fn max_concurrency_that_would_take_the_whole_instance_pool_is_refused() {
    // The tests' pool has 64 instances; the others keep 16 of them.
    let folder = Folder::new();
    folder.add_with_manifest(
        &test_plugin("behave"),
        "behave",
        "[limits]\nmax-concurrency = 49\n",
    );
    let (_host, report) = host_for(&folder).await;
    let reason = refusal(&report, "behave.wasm");
    assert!(
        reason.contains("max-concurrency of 49") && reason.contains("(48"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_concurrency_cap_holds_across_a_reload() {
    let (host, folder) = behave_with("[limits]\nmax-concurrency = 2\n").await;
    let s = host.open_session(SessionOptions::default());
    let long = r#"{"n": 100, "sleep_ms": 60000}"#;
    for id in ["c1", "c2"] {
        let a = s.call(id, "progress", long).await;
        assert_eq!(a.kind, AnswerKind::Released, "{id} runs");
    }
    // A new version of the plugin: its calls and the old one's share the cap.
    host.load_file(folder.path().join("behave.wasm"))
        .await
        .expect("reload");
    let third = tokio::spawn({
        let s = s.clone();
        async move { s.call("c3", "progress", long).await }
    });
    // Nothing may start while two run: a quiet window, then a freed slot.
    let mut third = third;
    let waited = tokio::time::timeout(Duration::from_secs(1), &mut third).await;
    assert!(
        waited.is_err(),
        "a third call ran beside two under a cap of 2"
    );
    s.cancel("c1").expect("cancel c1");
    let a = tokio::time::timeout(WAIT, third)
        .await
        .expect("c3 starts once c1 ended")
        .expect("join");
    assert_eq!(a.kind, AnswerKind::Released);
    s.close().await;
    assert_eq!(
        s.record("c3").expect("record").status,
        CallStatus::Cancelled
    );
}

/// A host with a pool of 32 instances serving `folder` plus behave and
/// spin, 16 calls of each holding the whole pool, in a session whose
/// closing stops the spinning ones (not cancellable) at once.
async fn a_full_pool(
    folder: &Folder,
) -> (
    Host,
    toolhost::Session,
    Vec<tokio::task::JoinHandle<toolhost::Answer>>,
) {
    let sixteen = "[limits]\nmax-concurrency = 16\ncancel-grace = \"0s\"\n";
    folder.add_with_manifest(&test_plugin("behave"), "behave", sixteen);
    // `spin` runs until the session stops it, whatever the machine's speed.
    let spin = format!("{sixteen}fuel = 1_000_000_000_000_000\ntimeout = \"1h\"\n");
    folder.add_with_manifest(&test_plugin("spin"), "spin", &spin);
    let mut config = config();
    config.engine.instances = 32;
    let host = Host::new(config).expect("host");
    let report = host.load_dir(folder.path()).await.expect("load");
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    let mut pool = host.instances();

    let mut options = SessionOptions::default();
    options.close_timeout = Duration::ZERO;
    let s = host.open_session(options);
    let spinning: Vec<_> = (0..16)
        .map(|i| spawn_call(&s, &format!("spin{i}"), "spin", "{}"))
        .collect();
    for i in 0..16 {
        let long = r#"{"n": 100, "sleep_ms": 60000}"#;
        let a = s.call(&format!("sleep{i}"), "progress", long).await;
        assert_eq!(a.kind, AnswerKind::Released, "sleep{i} runs");
    }
    let full = tokio::time::timeout(WAIT, pool.wait_for(|u| u.held == 32));
    assert_eq!(full.await.expect("32 held").expect("pool").size, 32);
    (host, s, spinning)
}

/// The instance pool is shared by every plugin: when the calls of two
/// plugins fill it, a third plugin's call waits for an instance to be freed
/// instead of failing ("maximum concurrent instance limit").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_the_instance_pool_waits_for_a_free_instance() {
    let folder = Folder::new();
    folder.add(&example("rust-compute"), "rust-compute");
    let (host, s, spinning) = a_full_pool(&folder).await;
    let mut pool = host.instances();

    let counted = tokio::spawn({
        let host = host.clone();
        async move { host.call("word_count", r#"{"text": "a b c"}"#).await }
    });
    let waits = tokio::time::timeout(WAIT, pool.wait_for(|u| u.waiting == 1));
    waits.await.expect("the call waits").expect("pool");
    assert!(!counted.is_finished(), "{:?}", counted.await);
    s.cancel("sleep0").expect("cancel sleep0");
    let counted = tokio::time::timeout(WAIT, counted)
        .await
        .expect("the call runs once an instance is free")
        .expect("join");
    assert!(
        text(&counted).starts_with("3 words"),
        "{:?}",
        counted.result
    );
    s.close().await;
    for call in spinning {
        call.await.expect("join");
    }
    let empty = tokio::time::timeout(WAIT, pool.wait_for(|u| u.held == 0 && u.waiting == 0));
    empty.await.expect("all given back").expect("pool");
}

/// B21: a call that waits for an instance of the pool has not entered its
/// plugin, so its cancel stops it at once, not after its grace period (an
/// hour here, so the test fails if it waits for it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b21_a_cancel_stops_a_call_waiting_for_a_pool_instance_at_once() {
    let folder = Folder::new();
    let work = tempfile::tempdir().expect("temp dir");
    let cleanup = format!(
        "[permissions]\ndirs = [{{ host = {:?}, guest = \"/work\", write = true }}]\n\
         [limits]\ncancel-grace = \"1h\"\n",
        work.path().display().to_string()
    );
    folder.add_with_manifest(&example("rust-cleanup"), "rust-cleanup", &cleanup);
    let (host, s, spinning) = a_full_pool(&folder).await;
    let mut pool = host.instances();

    let report = spawn_call(&s, "report", "build_report", r#"{"sections": 1}"#);
    let waits = tokio::time::timeout(WAIT, pool.wait_for(|u| u.waiting == 1));
    waits.await.expect("the call waits").expect("pool");
    s.cancel("report").expect("build_report is cancellable");
    let answer = tokio::time::timeout(WAIT, report)
        .await
        .expect("stopped before its grace period ends")
        .expect("join");
    assert_eq!(answer.kind, AnswerKind::Cancelled, "{answer:?}");
    let record = ended(&s, "report").await;
    assert_eq!(record.status, CallStatus::Cancelled);
    assert_eq!(record.fuel_used, 0, "the plugin was never entered");
    let none = tokio::time::timeout(WAIT, pool.wait_for(|u| u.waiting == 0));
    none.await.expect("no call waits").expect("pool");

    s.close().await;
    for call in spinning {
        call.await.expect("join");
    }
}

/// The lookup tool of `net-connect` under a manifest granting `network`.
async fn lookups_under(network: &[&str]) -> (Host, Folder) {
    let folder = Folder::new();
    let grants: Vec<String> = network.iter().map(|g| format!("{g:?}")).collect();
    folder.add_with_manifest(
        &test_plugin("net-connect"),
        "net-connect",
        &format!("[permissions]\nnetwork = [{}]\n", grants.join(", ")),
    );
    folder.add(&example("rust-compute"), "rust-compute");
    let (host, report) = host_for(&folder).await;
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    (host, folder)
}

fn tool_failure(o: &toolhost::CallOutcome) -> String {
    match &o.result {
        Err(CallError::ToolFailed(m)) => m.clone(),
        other => panic!("expected a tool failure, got {other:?}"),
    }
}

/// What a plugin's resolver says when the host refuses a lookup
/// (`access-denied`); a real lookup of an unknown name says something else.
fn refused_lookup(message: &str) -> bool {
    message.contains("ermission denied") || message.contains("ccess denied")
}

#[tokio::test]
async fn only_granted_names_can_be_looked_up() {
    let (host, _f) = lookups_under(&["localhost:9", "127.0.0.1:9"]).await;
    let o = host.call("lookup", r#"{"name": "localhost"}"#).await;
    let addrs = text(&o);
    assert!(
        addrs.contains("127.0.0.1") || addrs.contains("::1"),
        "{addrs}"
    );
    // A name of the plugin's choosing could carry data out: the resolver is
    // never asked.
    for name in [
        "exfil.invalid",
        "secret.localhost",
        "localhost.exfil.invalid",
    ] {
        let o = host
            .call("lookup", &format!(r#"{{"name": "{name}"}}"#))
            .await;
        let message = tool_failure(&o);
        assert!(refused_lookup(&message), "{name}: {message}");
    }
    assert!(
        host.call("word_count", r#"{"text": "a b"}"#)
            .await
            .result
            .is_ok()
    );
}

#[tokio::test]
async fn a_grant_by_ip_allows_no_lookup() {
    let (host, _f) = lookups_under(&["127.0.0.1:9"]).await;
    for name in ["localhost", "exfil.invalid"] {
        let o = host
            .call("lookup", &format!(r#"{{"name": "{name}"}}"#))
            .await;
        let message = tool_failure(&o);
        assert!(refused_lookup(&message), "{name}: {message}");
    }
}

#[tokio::test]
async fn an_http_request_with_user_information_is_denied() {
    // `secret@host` would have the host's resolver look up `secret@host`.
    let folder = Folder::new();
    folder.add_with_manifest(
        &example("rust-fetch"),
        "rust-fetch",
        "[permissions]\nnetwork = [\"127.0.0.1:9\"]\n",
    );
    let (host, report) = host_for(&folder).await;
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    let o = host
        .call("http_get", r#"{"url": "http://secret@127.0.0.1:9/"}"#)
        .await;
    let message = tool_failure(&o);
    assert!(message.contains("denied"), "{message}");
    // The same address without it is let through (and finds nobody there).
    let o = host
        .call("http_get", r#"{"url": "http://127.0.0.1:9/"}"#)
        .await;
    let message = tool_failure(&o);
    assert!(!message.contains("denied"), "{message}");
}

/// This process's resident memory, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib * 1024
}

/// How much more than the 128 MiB the host may hold for a call outside its
/// memory (4 096 resources of at most 32 KiB of fields), with room for the
/// other tests of this binary running beside.
const HELD_OUTSIDE_MEMORY: u64 = 256 << 20;

#[tokio::test]
async fn b23_a_call_holding_too_many_resources_ends_naming_the_limit() {
    let (host, _f) = host_with(&["hoard"]).await;
    let before = rss();
    // Without the cap: a million maps of 16 KiB, 16 GB of host memory.
    let o = host
        .call("fields", r#"{"count": 1000000, "value_bytes": 16384}"#)
        .await;
    let after = rss();
    assert!(
        matches!(o.result, Err(CallError::Limit(Limit::Resources(4096)))),
        "{:?}",
        o.result
    );
    assert!(
        o.model_text().contains("limit of 4096 resources"),
        "{}",
        o.model_text()
    );
    eprintln!("RSS before {before} B, after {after} B");
    assert!(
        after < before + HELD_OUTSIDE_MEMORY,
        "RSS grew from {before} to {after} bytes"
    );
    assert_eq!(text(&host.call("ok", "{}").await), "ok");
    let fine = host
        .call("fields", r#"{"count": 100, "value_bytes": 1024}"#)
        .await;
    assert_eq!(text(&fine), "held 100");
}

#[tokio::test]
async fn b23_http_header_fields_over_their_limit_end_the_call_naming_it() {
    let (host, _f) = host_with(&["hoard"]).await;
    let before = rss();
    let o = host.call("header", r#"{"kib": 100000}"#).await;
    let after = rss();
    assert!(
        matches!(o.result, Err(CallError::Limit(Limit::HttpFields(32768)))),
        "{:?}",
        o.result
    );
    assert!(
        o.model_text().contains("HTTP header size limit of 32 KiB"),
        "{}",
        o.model_text()
    );
    eprintln!("RSS before {before} B, after {after} B");
    assert!(
        after < before + HELD_OUTSIDE_MEMORY,
        "RSS grew from {before} to {after} bytes"
    );
    assert_eq!(text(&host.call("ok", "{}").await), "ok");
    assert_eq!(
        text(&host.call("header", r#"{"kib": 16}"#).await),
        "appended 16 KiB"
    );
}
