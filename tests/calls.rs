//! The call path of tools that return without updates: B1, B5, B7, B8, B23,
//! and the fuel every call reports.

use crate::common::*;
use serde_json::json;
use toolhost::{CallError, EventKind, Limit};

#[tokio::test]
async fn b1_result_is_the_output_under_the_call_id() {
    let (host, _f) = host_with(&["behave"]).await;
    let o = host.call("ok", "{}").await;
    assert_eq!(text(&o), "ok");
    assert!(o.call_id.starts_with("call_"));
    assert!(o.fuel_used > 0, "fuel is reported");

    let o = host.call("data", r#"{"n": 21}"#).await;
    let out = o.result.expect("data");
    assert_eq!(out.data, Some(json!({"n": 21, "double": 42})));
    assert_eq!(out.text, None);
    assert_eq!(out.model_text().as_deref(), Some(r#"{"double":42,"n":21}"#));

    let out = host.call("nothing", "{}").await.result.expect("nothing");
    assert_eq!(out.model_text(), None);
}

/// Data is checked against the tool's output schema, and arguments
/// against its input schema, small or large (large ones are checked off
/// the runtime's threads).
#[tokio::test]
async fn b1_data_that_breaks_the_output_schema_fails_the_call_at_any_size() {
    let (host, _f) = host_with(&["behave"]).await;
    for size in [10, 200 << 10] {
        let fits = json!({ "n": 1, "pad": "x".repeat(size) }).to_string();
        let out = host.call("data", &fits).await.result.expect("data");
        let pad = out.data.as_ref().and_then(|d| d["pad"].as_str());
        assert_eq!(pad.map(str::len), Some(size));

        let breaks = json!({ "n": 1, "pad": format!("{}y", "x".repeat(size)) }).to_string();
        let o = host.call("data", &breaks).await;
        assert!(
            matches!(&o.result, Err(CallError::Crashed { detail })
                if detail.contains("does not match its output schema")),
            "{size} bytes: {:?}",
            o.result.map(|_| ())
        );

        let wrong = json!({ "n": "one", "pad": "x".repeat(size) }).to_string();
        let o = host.call("data", &wrong).await;
        assert!(
            matches!(&o.result, Err(CallError::InvalidArguments { .. })),
            "{size} bytes: {:?}",
            o.result.map(|_| ())
        );
    }
}

#[tokio::test]
async fn b1_call_ids_are_distinct() {
    let (host, _f) = host_with(&["behave"]).await;
    let a = host.call("ok", "{}").await;
    let b = host.call("ok", "{}").await;
    assert_ne!(a.call_id, b.call_id);
}

#[tokio::test]
async fn b5_tool_errors_reach_the_model_as_written() {
    let (host, _f) = host_with(&["behave"]).await;
    let o = host.call("fail", "{}").await;
    assert!(matches!(&o.result, Err(CallError::ToolFailed(m)) if m == "it failed on purpose"));
    assert!(o.model_text().contains("it failed on purpose"));

    let o = host.call("bad_args", "{}").await;
    assert!(matches!(&o.result, Err(CallError::ToolInvalidArguments(m)) if m == "n must be even"));
}

#[tokio::test]
async fn b5_a_panic_reaches_the_model_as_a_short_generic_message() {
    let (host, _f) = host_with(&["panic", "behave"]).await;
    let o = host.call("panic", "{}").await;
    let Err(CallError::Crashed { detail }) = &o.result else {
        panic!("expected a crash, got {:?}", o.result)
    };
    assert!(!detail.is_empty(), "the detail is kept for the log");
    let msg = o.model_text();
    assert!(msg.contains("crashed"), "{msg}");
    assert!(!msg.contains("wasm"), "no trap detail for the model: {msg}");
    assert!(
        !msg.contains("panic"),
        "no panic detail for the model: {msg}"
    );
    // The host goes on serving.
    assert_eq!(text(&host.call("ok", "{}").await), "ok");
}

#[tokio::test]
async fn b5_unbounded_recursion_is_a_crash_not_a_host_failure() {
    let (host, _f) = host_with(&["recurse", "behave"]).await;
    let o = host.call("recurse", "{}").await;
    assert!(
        matches!(o.result, Err(CallError::Crashed { .. })),
        "{:?}",
        o.result
    );
    assert_eq!(text(&host.call("ok", "{}").await), "ok");
}

#[tokio::test]
async fn b7_arguments_are_validated_before_the_plugin_runs() {
    let (host, _f) = host_with(&["behave"]).await;
    let ok = host.call("typed", r#"{"name": "a", "count": 2}"#).await;
    assert!(ok.result.is_ok(), "{:?}", ok.result);

    let cases = [
        (r#"{"count": 2}"#, "name"),
        (r#"{"name": "a", "count": "two"}"#, "count"),
        (r#"{"name": "a", "count": 2, "flag": 3}"#, "flag"),
        (r#"{"name": "a", "count": 2"#, "not valid JSON"),
        (r#"[1, 2]"#, "JSON object"),
    ];
    for (args, field) in cases {
        let o = host.call("typed", args).await;
        let Err(CallError::InvalidArguments { tool, message }) = &o.result else {
            panic!("{args}: expected invalid arguments, got {:?}", o.result)
        };
        assert_eq!(tool, "typed");
        assert!(
            message.contains(field),
            "{args}: {message:?} should name {field}"
        );
        let model = o.model_text();
        assert!(model.contains("typed") && model.contains(field), "{model}");
        assert_eq!(o.fuel_used, 0, "{args}: the plugin was not entered");
    }
}

#[tokio::test]
async fn b8_unknown_tool_answers_an_error_listing_nothing() {
    let (host, _f) = host_with(&["behave"]).await;
    let o = host.call("no_such_tool", "{}").await;
    assert!(matches!(&o.result, Err(CallError::UnknownTool { name }) if name == "no_such_tool"));
    let msg = o.model_text();
    assert!(msg.contains("no_such_tool"));
    for other in ["typed", "sleep", "progress", "behave"] {
        assert!(!msg.contains(other), "lists nothing: {msg}");
    }
}

#[tokio::test]
async fn b23_fuel_budget_ends_the_call_with_the_limit_and_its_value() {
    let folder = Folder::new();
    folder.add_with_manifest(
        &test_plugin("spin"),
        "spin",
        "[limits]\nfuel = 50_000_000\n",
    );
    folder.add(&test_plugin("behave"), "behave");
    let (host, report) = host_for(&folder).await;
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    let o = host.call("spin", "{}").await;
    assert!(
        matches!(o.result, Err(CallError::Limit(Limit::Fuel(50_000_000)))),
        "{:?}",
        o.result
    );
    let msg = o.model_text();
    assert!(msg.contains("fuel") && msg.contains("50000000"), "{msg}");
    assert!(o.fuel_used >= 50_000_000);
}

#[tokio::test]
async fn b23_memory_limit_ends_the_call_with_the_limit_and_its_value() {
    let folder = Folder::new();
    folder.add_with_manifest(
        &test_plugin("membomb"),
        "membomb",
        "[limits]\nmemory = \"32MiB\"\n",
    );
    let (host, report) = host_for(&folder).await;
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    let o = host.call("membomb", "{}").await;
    assert!(
        matches!(o.result, Err(CallError::Limit(Limit::Memory(m))) if m == 32 << 20),
        "{:?}",
        o.result
    );
    assert!(
        o.model_text().contains("memory limit of 32 MiB"),
        "{}",
        o.model_text()
    );
}

#[tokio::test]
async fn b23_timeout_ends_the_call_with_the_limit_and_its_value() {
    let folder = Folder::new();
    folder.add_with_manifest(
        &test_plugin("behave"),
        "behave",
        "[limits]\ntimeout = \"200ms\"\n",
    );
    let (host, _) = host_for(&folder).await;
    let o = host.call("sleep", r#"{"ms": 10000}"#).await;
    assert!(
        matches!(o.result, Err(CallError::Limit(Limit::Timeout(d))) if d.as_millis() == 200),
        "{:?}",
        o.result
    );
    assert!(o.model_text().contains("200ms"), "{}", o.model_text());
}

#[tokio::test]
async fn b23_timeout_stops_a_loop_that_never_calls_the_host() {
    let folder = Folder::new();
    // A fuel budget the loop cannot burn in 300 ms: the default one (10^10
    // units) lasts about a second on one machine and 0.3 s on a quicker.
    folder.add_with_manifest(
        &test_plugin("spin"),
        "spin",
        "[limits]\ntimeout = \"300ms\"\nfuel = 1_000_000_000_000\n",
    );
    let (host, _) = host_for(&folder).await;
    let o = host.call("spin", "{}").await;
    assert!(
        matches!(o.result, Err(CallError::Limit(Limit::Timeout(_)))),
        "{:?}",
        o.result
    );
}

#[tokio::test]
async fn b23_timeout_stops_a_loop_whose_work_is_in_host_calls() {
    // Each turn hands the host 16 MiB to log and burns little fuel: fuel
    // alone would yield the call once in many seconds, and nothing else
    // on this runtime's one thread, its timeout included, would run.
    let folder = Folder::new();
    folder.add_with_manifest(
        &test_plugin("behave"),
        "behave",
        "[limits]\ntimeout = \"300ms\"\n",
    );
    let (host, _) = host_for(&folder).await;
    let started = std::time::Instant::now();
    let o = host.call("log_forever", "{}").await;
    assert!(
        matches!(o.result, Err(CallError::Limit(Limit::Timeout(d))) if d.as_millis() == 300),
        "{:?}",
        o.result
    );
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(5),
        "stopped after {took:?}"
    );
}

#[tokio::test]
async fn b23_an_epoch_metered_loop_is_stopped_by_its_timeout_not_by_fuel() {
    let folder = Folder::new();
    // A fuel budget an epoch-metered call never counts against.
    folder.add_with_manifest(
        &test_plugin("spin"),
        "spin",
        "[limits]\nmetering = \"epoch\"\nfuel = 1000\ntimeout = \"300ms\"\n",
    );
    let (host, report) = host_for(&folder).await;
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    let o = host.call("spin", "{}").await;
    assert!(
        matches!(o.result, Err(CallError::Limit(Limit::Timeout(d))) if d.as_millis() == 300),
        "{:?}",
        o.result
    );
    assert_eq!(o.fuel_used, 0);
}

#[tokio::test]
async fn an_epoch_metered_plugin_answers_as_the_fuel_metered_one() {
    let manifest = std::fs::read_to_string(example("rust-compute").with_extension("toml"))
        .expect("rust-compute.toml");
    let folder = Folder::new();
    folder.add_with_manifest(
        &example("rust-compute"),
        "rust-compute",
        &manifest.replace("[limits]", "[limits]\nmetering = \"epoch\""),
    );
    let (epoch, report) = host_for(&folder).await;
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    assert_eq!(
        report.loaded[0].limits().metering,
        toolhost::Metering::Epoch
    );
    let fuel_folder = Folder::new();
    fuel_folder.add(&example("rust-compute"), "rust-compute");
    let (fuel, _) = host_for(&fuel_folder).await;
    for (tool, args) in [
        ("count_primes", r#"{"limit": 1000000}"#),
        ("sha256", r#"{"text": "the quick brown fox"}"#),
        ("word_count", r#"{"text": "one two three"}"#),
    ] {
        let (e, f) = (epoch.call(tool, args).await, fuel.call(tool, args).await);
        assert_eq!(text(&e), text(&f), "{tool}");
        assert_eq!(e.fuel_used, 0, "{tool}: no fuel counted");
        assert!(f.fuel_used > 0);
    }
    assert!(text(&epoch.call("count_primes", r#"{"limit": 1000000}"#).await).contains("78498"));
}

#[tokio::test]
async fn fuel_used_grows_with_the_work_done() {
    let (host, _f) = host_with(&["behave"]).await;
    let small = host.call("spin_once", r#"{"iterations": 1000}"#).await;
    let large = host.call("spin_once", r#"{"iterations": 1000000}"#).await;
    assert!(small.result.is_ok() && large.result.is_ok());
    assert!(
        large.fuel_used > small.fuel_used + 900_000,
        "{} vs {}",
        large.fuel_used,
        small.fuel_used
    );
}

#[tokio::test]
async fn call_info_names_the_call() {
    let (host, _f) = host_with(&["behave"]).await;
    let o = host.call("info", "{}").await;
    let data = o.result.clone().expect("info").data.expect("data");
    assert_eq!(data["call_id"], json!(o.call_id));
    assert_eq!(data["tool"], json!("info"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_gets_a_fresh_instance_also_when_calls_run_at_once() {
    // `count_calls` counts the calls its instance has served: a fresh
    // instance per call answers 1 every time.
    let (host, _f) = host_with(&["behave"]).await;
    for _ in 0..3 {
        let o = host.call("count_calls", r#"{"ms": 0}"#).await;
        assert_eq!(text(&o), "1", "one after another");
    }
    let calls = (0..16).map(|_| {
        let host = host.clone();
        tokio::spawn(async move { host.call("count_calls", r#"{"ms": 50}"#).await })
    });
    for call in futures::future::join_all(calls).await {
        assert_eq!(text(&call.expect("join")), "1", "at once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_each_get_their_own_arguments_and_result() {
    let (host, _f) = host_with(&["behave"]).await;
    let calls = (0..32).map(|n| {
        let host = host.clone();
        tokio::spawn(async move { host.call("data", &format!(r#"{{"n": {n}}}"#)).await })
    });
    let outcomes = futures::future::join_all(calls).await;
    for (n, o) in outcomes.into_iter().enumerate() {
        let o = o.expect("join");
        let data = o.result.as_ref().expect("ok").data.clone().expect("data");
        assert_eq!(data["double"], json!(2 * n));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrency_makes_calls_wait_their_turn() {
    const SLOTS: usize = 2;
    let folder = Folder::new();
    folder.add_with_manifest(
        &test_plugin("behave"),
        "behave",
        &format!("[limits]\nmax-concurrency = {SLOTS}\n"),
    );
    let (host, _) = host_for(&folder).await;
    let s = host.open_session(toolhost::SessionOptions::default());
    let mut events = s.subscribe();
    // Each call sends "step 1", sleeps, "step 2", sleeps, "step 3" and
    // returns: between its first two updates it certainly holds a slot
    // (the slot is freed only after the last update and the return).
    let calls: Vec<_> = (0..6)
        .map(|i| {
            spawn_call(
                &s,
                &format!("c{i}"),
                "progress",
                r#"{"n": 3, "sleep_ms": 100}"#,
            )
        })
        .collect();
    let (mut inside, mut done) = (0usize, 0);
    while done < calls.len() {
        let e = event(&mut events, "an update", |e| {
            matches!(e.kind, EventKind::Updated { n: 1 | 2, .. })
        })
        .await;
        match e.kind {
            EventKind::Updated { n: 1, .. } => inside += 1,
            _ => {
                inside -= 1;
                done += 1;
            }
        }
        assert!(inside <= SLOTS, "{inside} calls ran at once: {e:?}");
    }
    for call in calls {
        assert_eq!(
            call.await.expect("join").kind,
            toolhost::AnswerKind::Released
        );
    }
    for i in 0..6 {
        ended(&s, &format!("c{i}")).await;
    }
}

#[tokio::test]
async fn integral_floats_reach_the_plugin_as_integers() {
    // JSON Schema calls 2.0 an integer; the plugin's decoder gets 2.
    let (host, _f) = host_with(&["behave"]).await;
    let o = host.call("data", r#"{"n": 21.0}"#).await;
    assert_eq!(
        o.result.expect("ok").data,
        Some(json!({"n": 21, "double": 42}))
    );
}
