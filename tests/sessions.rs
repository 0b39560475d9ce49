//! Background calls through the session API, one test per behaviour:
//! B2–B4, B6, B9–B16, B20–B31 (B31's records are kept in memory only).
//!
//! Tests where calls race (duplicates, cancellation, many calls) run on a
//! multi-thread runtime, so that they race in parallel; tests wait on events
//! and records, never on a sleep.

use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use serde_json::json;
use toolhost::{
    AnswerKind, CANCEL_TASK_TOOL, CONFIRM_ARGUMENT, CallRecord, CallStatus, EventKind, Host,
    RUNNING_TASKS_TOOL, Session, SessionOptions, TASK_STATUS_TOOL, Templates,
};

async fn behave_host(manifest: Option<&str>) -> (Host, Folder) {
    let folder = Folder::new();
    match manifest {
        Some(m) => folder.add_with_manifest(&test_plugin("behave"), "behave", m),
        None => folder.add(&test_plugin("behave"), "behave"),
    };
    let (host, report) = host_for(&folder).await;
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    (host, folder)
}

async fn session(manifest: Option<&str>) -> (Session, Folder) {
    let (host, folder) = behave_host(manifest).await;
    (host.open_session(SessionOptions::default()), folder)
}

/// A session of `behave` that may have `max_live` calls running or waiting.
async fn bounded_session(max_live: usize) -> (Session, Folder) {
    let (host, folder) = behave_host(None).await;
    let mut options = SessionOptions::default();
    options.max_live = max_live;
    (host.open_session(options), folder)
}

/// Close `s`, which ends within the test's wait: no call holds it up.
async fn closes(s: &Session) {
    tokio::time::timeout(WAIT, s.close())
        .await
        .expect("close ends");
}

/// Wait until the call has the status `status` in the running list.
async fn live(s: &Session, call_id: &str, status: CallStatus) {
    let mut events = s.subscribe();
    tokio::time::timeout(WAIT, async {
        // Checked after subscribing, and again after each of the call's
        // events: a status change comes with an event.
        while !s
            .running()
            .iter()
            .any(|r| r.call_id == call_id && r.status == status)
        {
            event(&mut events, call_id, |e| e.call_id == call_id).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{call_id} never became {status:?}"))
}

#[tokio::test]
async fn b2_the_first_update_answers_at_once_and_the_tool_goes_on() {
    let (s, _f) = session(None).await;
    let a = s
        .call("c1", "progress", r#"{"n": 3, "sleep_ms": 100}"#)
        .await;
    assert_eq!(a.kind, AnswerKind::Released);
    assert_eq!(a.call_id, "c1");
    assert!(a.output.contains("step 1 of 3"), "{}", a.output);
    assert!(a.output.contains("c1"), "B30: names the call: {}", a.output);
    assert!(!a.is_error);
    assert_eq!(s.record("c1").expect("record").status, CallStatus::Running);
    let r = ended(&s, "c1").await;
    assert_eq!(r.status, CallStatus::Done);
}

#[tokio::test]
async fn b3_later_updates_become_numbered_pairs_with_the_same_name_and_arguments() {
    let (s, _f) = session(None).await;
    let args = r#"{"n": 3, "sleep_ms": 20}"#;
    s.call("c1", "progress", args).await;
    ended(&s, "c1").await;
    let reply = s.next_reply().await.expect("reply");
    let ids: Vec<&str> = reply.items.iter().map(|i| i.call_id.as_str()).collect();
    assert_eq!(ids, ["c1_update_1", "c1_update_2", "c1_final"]);
    for item in &reply.items {
        assert_eq!(item.tool, "progress");
        assert_eq!(item.arguments, json!({"n": 3, "sleep_ms": 20}));
        assert_eq!(item.origin, "c1");
    }
    assert!(
        reply.items[0].output.contains("step 2 of 3"),
        "{}",
        reply.items[0].output
    );
    assert!(reply.items[1].output.contains("step 3 of 3"));
    reply.ack();
}

#[tokio::test]
async fn b4_a_released_call_result_becomes_the_final_pair() {
    let (s, _f) = session(None).await;
    s.call("c1", "progress", r#"{"n": 1, "sleep_ms": 0}"#).await;
    ended(&s, "c1").await;
    let reply = s.next_reply().await.expect("reply");
    assert_eq!(reply.items.len(), 1);
    assert_eq!(reply.items[0].call_id, "c1_final");
    assert!(
        reply.items[0].output.contains("done after 1 steps"),
        "{}",
        reply.items[0].output
    );
    assert!(!reply.items[0].is_error);
}

#[tokio::test]
async fn b4_a_result_with_neither_text_nor_data_adds_nothing() {
    let (s, _f) = session(None).await;
    let a = s.call("c1", "update_then_nothing", "{}").await;
    assert_eq!(a.kind, AnswerKind::Released);
    // A call's last item is queued before its record ends.
    ended(&s, "c1").await;
    assert!(!s.has_pending());
    assert!(s.try_reply().is_none());
}

#[tokio::test]
async fn b6_an_error_after_the_first_update_is_the_final_pair_marked_as_error() {
    let (s, _f) = session(None).await;
    let a = s.call("c1", "update_then_fail", "{}").await;
    assert_eq!(a.kind, AnswerKind::Released);
    assert!(a.output.contains("about to fail"));
    ended(&s, "c1").await;
    let reply = s.next_reply().await.expect("reply");
    assert_eq!(reply.items.len(), 1);
    let item = &reply.items[0];
    assert_eq!(item.call_id, "c1_final");
    assert!(item.is_error);
    assert!(
        item.output.contains("it failed after an update"),
        "{}",
        item.output
    );
    assert_eq!(s.record("c1").expect("record").status, CallStatus::Error);
}

#[tokio::test]
async fn b9_fire_and_forget_answers_at_once_and_stays_out_of_the_conversation() {
    let (s, _f) = session(None).await;
    let a = s.call("c1", "fire", r#"{"ms": 100, "update": true}"#).await;
    assert_eq!(a.kind, AnswerKind::Started);
    assert!(
        a.output.contains("c1") && a.output.contains("fire"),
        "{}",
        a.output
    );
    let r = ended(&s, "c1").await;
    assert_eq!(r.status, CallStatus::Done);
    assert_eq!(r.updates.len(), 1, "updates go to the record");
    assert_eq!(
        r.result.and_then(|o| o.text.clone()).as_deref(),
        Some("fired")
    );
    assert!(!s.has_pending(), "nothing enters the conversation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b10_allow_runs_both() {
    // `wait_cancel` (allow) runs until cancelled: both are running at once.
    let (s, _f) = session(None).await;
    let first = spawn_call(&s, "c1", "wait_cancel", "{}");
    live(&s, "c1", CallStatus::Running).await;
    let second = spawn_call(&s, "c2", "wait_cancel", "{}");
    live(&s, "c2", CallStatus::Running).await;
    assert!(
        s.record("c1").expect("c1").status.is_live(),
        "c1 runs on beside c2"
    );
    for id in ["c1", "c2"] {
        s.cancel(id).expect("cancel");
    }
    for call in [first, second] {
        assert_eq!(call.await.expect("join").kind, AnswerKind::Cancelled);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b11_reject_does_not_start_the_duplicate_and_names_the_running_call() {
    let (s, _f) = session(None).await;
    let first = spawn_call(&s, "c1", "reject_me", r#"{"ms": 300}"#);
    live(&s, "c1", CallStatus::Running).await;
    let a = s.call("c2", "reject_me", r#"{"ms": 1}"#).await;
    assert_eq!(a.kind, AnswerKind::Duplicate);
    assert!(!a.is_error, "a duplicate notice is not an error");
    assert!(
        a.output.contains("c1") && a.output.contains(CANCEL_TASK_TOOL),
        "{}",
        a.output
    );
    assert!(s.record("c2").is_none(), "the duplicate was not started");
    assert_eq!(first.await.expect("join").output, "done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b12_confirm_holds_a_duplicate_until_the_model_confirms() {
    let (s, _f) = session(None).await;
    let tool = s
        .tools()
        .into_iter()
        .find(|t| t.name == "confirm_me")
        .expect("confirm_me");
    assert_eq!(
        tool.input_schema["properties"][CONFIRM_ARGUMENT]["type"],
        "boolean"
    );
    assert_eq!(
        tool.input_schema["properties"][CONFIRM_ARGUMENT]["default"],
        false
    );

    let first = spawn_call(&s, "c1", "confirm_me", r#"{"ms": 300}"#);
    live(&s, "c1", CallStatus::Running).await;
    let a = s.call("c2", "confirm_me", r#"{"ms": 1}"#).await;
    assert_eq!(a.kind, AnswerKind::Duplicate);
    assert!(
        a.output.contains("c1") && a.output.contains(CONFIRM_ARGUMENT),
        "{}",
        a.output
    );
    let a = s
        .call(
            "c3",
            "confirm_me",
            r#"{"ms": 1, "confirm_duplicate": false}"#,
        )
        .await;
    assert_eq!(a.kind, AnswerKind::Duplicate);
    let a = s
        .call(
            "c4",
            "confirm_me",
            r#"{"ms": 1, "confirm_duplicate": true}"#,
        )
        .await;
    assert_eq!(a.kind, AnswerKind::Result);
    assert_eq!(a.output, "done");
    assert_eq!(
        *s.record("c4").expect("record").arguments,
        json!({"ms": 1}),
        "removed before the plugin"
    );
    first.await.expect("join");
}

#[tokio::test]
async fn b12_the_confirm_argument_is_removed_before_validation() {
    // `typed` forbids unknown properties; with confirm it still accepts the flag.
    let (s, _f) = session(Some("[tools.typed]\non-duplicate = \"confirm\"\n")).await;
    let a = s
        .call(
            "c1",
            "typed",
            r#"{"name": "x", "count": 1, "confirm_duplicate": true}"#,
        )
        .await;
    assert!(!a.is_error, "{}", a.output);
    assert!(a.output.contains("name=x"), "{}", a.output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b13_replace_cancels_the_running_duplicate_and_waits_for_its_end_before_starting() {
    let (s, _f) = session(Some("[limits]\ncancel-grace = \"10s\"\n")).await;
    let mut events = s.subscribe();
    let first = spawn_call(&s, "c1", "replace_me", "{}");
    event(&mut events, "c1 started", |e| started(e, "c1")).await;
    let second = spawn_call(&s, "c2", "replace_me", "{}");
    // c1 sees cancelled() and takes 200 ms to clean up: c2 starts only
    // once it has ended.
    let e = event(&mut events, "c1 ended or c2 started", |e| {
        ended_event(e, "c1") || started(e, "c2")
    })
    .await;
    match e.kind {
        EventKind::Ended { status, result, .. } => {
            assert_eq!(status, CallStatus::Cancelled);
            assert_eq!(
                result.and_then(|o| o.text.clone()).as_deref(),
                Some("cleaned up"),
                "it saw cancelled()"
            );
        }
        _ => panic!("c2 started before c1 ended: {e:?}"),
    }
    event(&mut events, "c2 started", |e| started(e, "c2")).await;
    assert_eq!(first.await.expect("join").kind, AnswerKind::Cancelled);
    assert_eq!(s.record("c2").expect("c2").status, CallStatus::Running);
    s.cancel("c2").expect("cancel");
    assert_eq!(second.await.expect("join").kind, AnswerKind::Cancelled);
}

#[tokio::test]
async fn b13_replace_on_a_tool_that_is_not_cancellable_is_refused() {
    let folder = Folder::new();
    folder.add_with_manifest(
        &test_plugin("behave"),
        "behave",
        "[tools.sleep]\non-duplicate = \"replace\"\n",
    );
    let (_host, report) = host_for(&folder).await;
    assert_eq!(report.refused.len(), 1);
    assert!(
        report.refused[0].reason().contains("replace")
            && report.refused[0].reason().contains("cancellable")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b14_queue_waits_for_the_running_duplicate_and_is_listed_as_queued() {
    let (s, _f) = session(None).await;
    let first = spawn_call(&s, "c1", "queue_me", r#"{"ms": 300}"#);
    live(&s, "c1", CallStatus::Running).await;
    let a = s.call("c2", "queue_me", r#"{"ms": 1}"#).await;
    assert_eq!(a.kind, AnswerKind::Queued);
    assert!(
        a.output.contains("c1") && a.output.contains("c2"),
        "{}",
        a.output
    );
    let queued = s.running();
    assert!(
        queued
            .iter()
            .any(|r| r.call_id == "c2" && r.status == CallStatus::Queued),
        "{queued:?}"
    );
    let r1 = ended(&s, "c1").await;
    let r2 = ended(&s, "c2").await;
    assert!(r2.started_at >= r1.ended_at, "c2 ran after c1 ended");
    first.await.expect("join");
    let reply = s.next_reply().await.expect("reply");
    assert_eq!(reply.items.len(), 1);
    assert_eq!(reply.items[0].call_id, "c2_final");
}

/// A queued call cancelled while it waits ends at once, without waiting
/// for its duplicate, and never enters its plugin, though a sandbox is
/// free (B14, B21): unlike a running call, it has nothing to clean up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b14_a_call_cancelled_while_queued_ends_without_running() {
    let (s, _f) = session(Some("[tools.wait_cancel]\non-duplicate = \"queue\"\n")).await;
    let first = spawn_call(&s, "c1", "wait_cancel", "{}");
    live(&s, "c1", CallStatus::Running).await;
    let a = s.call("c2", "wait_cancel", "{}").await;
    assert_eq!(a.kind, AnswerKind::Queued, "{}", a.output);
    s.cancel("c2").expect("cancel");
    let r2 = ended(&s, "c2").await;
    assert_eq!(r2.status, CallStatus::Cancelled);
    assert_eq!(r2.result, None, "it never ran (it would have cleaned up)");
    assert_eq!(r2.started_at, None, "it never left the queue");
    assert_eq!(s.record("c1").expect("c1").status, CallStatus::Running);
    s.cancel("c1").expect("cancel");
    first.await.expect("join");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b15_name_and_arguments_compares_canonical_json_with_defaults() {
    let (s, _f) = session(None).await;
    let first = spawn_call(&s, "c1", "reject_same", r#"{"ms": 300}"#);
    live(&s, "c1", CallStatus::Running).await;
    // Equal once defaults are filled in and 300 == 300.0.
    let a = s
        .call("c2", "reject_same", r#"{"key": "a", "ms": 300.0}"#)
        .await;
    assert_eq!(a.kind, AnswerKind::Duplicate, "{}", a.output);
    // Different arguments are not duplicates.
    let a = s
        .call("c3", "reject_same", r#"{"ms": 300, "key": "b"}"#)
        .await;
    assert_eq!(a.kind, AnswerKind::Result, "{}", a.output);
    first.await.expect("join");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b16_concurrent_calls_cannot_both_pass_reject() {
    const ROUNDS: usize = 20;
    const CALLS: usize = 8;
    let (s, _f) = session(None).await;
    for round in 0..ROUNDS {
        // The calls of a round are released together, to race for the
        // duplicate check on both worker threads.
        let barrier = Arc::new(tokio::sync::Barrier::new(CALLS));
        let calls: Vec<_> = (0..CALLS)
            .map(|i| {
                let (s, barrier) = (s.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    s.call(&format!("r{round}c{i}"), "reject_me", r#"{"ms": 250}"#)
                        .await
                })
            })
            .collect();
        let mut started = 0;
        let mut rejected = 0;
        // Every call has answered, so the one started has ended before the
        // next round.
        for c in calls {
            match c.await.expect("join").kind {
                AnswerKind::Result => started += 1,
                AnswerKind::Duplicate => rejected += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!((started, rejected), (1, CALLS - 1), "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b20_only_cancellable_tools_can_be_cancelled() {
    let (s, _f) = session(None).await;
    let first = spawn_call(&s, "c1", "sleep", r#"{"ms": 200}"#);
    live(&s, "c1", CallStatus::Running).await;
    let e = s.cancel("c1").expect_err("not cancellable");
    assert!(e.to_string().contains("not cancellable"), "{e}");
    let a = s.call("x", CANCEL_TASK_TOOL, r#"{"call_id": "c1"}"#).await;
    assert!(
        a.is_error && a.output.contains("not cancellable"),
        "{}",
        a.output
    );
    assert_eq!(
        first.await.expect("join").output,
        "slept",
        "it ran to the end"
    );
    assert!(s.cancel("nope").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b21_cancel_sets_the_flag_the_tool_reads() {
    let (s, _f) = session(None).await;
    let call = spawn_call(&s, "c1", "wait_cancel", "{}");
    live(&s, "c1", CallStatus::Running).await;
    s.cancel("c1").expect("cancel");
    let a = call.await.expect("join");
    assert_eq!(a.kind, AnswerKind::Cancelled);
    let r = s.record("c1").expect("record");
    assert_eq!(r.status, CallStatus::Cancelled);
    assert_eq!(
        r.result.and_then(|o| o.text.clone()).as_deref(),
        Some("cleaned up")
    );
}

/// Cancel a loop that never calls the host, under the plugin limits
/// `limits`: its answer says cancelled, and so does its record (returned).
async fn spin_cancelled_after_grace(limits: &str) -> CallRecord {
    let (s, _f) = session(Some(limits)).await;
    let call = spawn_call(&s, "c1", "spin_cancellable", "{}");
    live(&s, "c1", CallStatus::Running).await;
    s.cancel("c1").expect("cancel");
    let a = tokio::time::timeout(WAIT, call)
        .await
        .expect("stopped")
        .expect("join");
    assert_eq!(a.kind, AnswerKind::Cancelled);
    let r = s.record("c1").expect("record");
    assert_eq!(r.status, CallStatus::Cancelled);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b21_a_loop_that_never_calls_the_host_is_stopped_after_the_grace_period() {
    let r = spin_cancelled_after_grace("[limits]\ncancel-grace = \"100ms\"\n").await;
    assert!(r.fuel_used > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b21_an_epoch_metered_loop_is_stopped_after_the_grace_period() {
    let r =
        spin_cancelled_after_grace("[limits]\nmetering = \"epoch\"\ncancel-grace = \"100ms\"\n")
            .await;
    assert_eq!(r.fuel_used, 0, "epoch metering counts no fuel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b21_a_call_blocked_in_a_host_sleep_is_stopped() {
    let (s, _f) = session(Some(
        "[limits]\ncancel-grace = \"0s\"\n[tools.sleep]\nenabled = true\n",
    ))
    .await;
    // `progress` sleeps in WASI between updates.
    let a = s
        .call("c1", "progress", r#"{"n": 2, "sleep_ms": 60000}"#)
        .await;
    assert_eq!(a.kind, AnswerKind::Released);
    s.cancel("c1").expect("cancel");
    let r = ended(&s, "c1").await;
    assert_eq!(r.status, CallStatus::Cancelled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b22_cancelled_before_the_first_update_answers_cancelled() {
    let (s, _f) = session(None).await;
    let call = spawn_call(&s, "c1", "wait_cancel", "{}");
    live(&s, "c1", CallStatus::Running).await;
    s.call("x", CANCEL_TASK_TOOL, r#"{"call_id": "c1"}"#).await;
    let a = call.await.expect("join");
    assert_eq!(a.kind, AnswerKind::Cancelled);
    assert!(a.output.contains("cancelled"), "{}", a.output);
    assert!(!a.output.contains("cleaned up"));
}

/// A call cancelled before its first update answers "cancelled" even if
/// its tool sends an update as it cleans up: that update does not release
/// it (B22).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b22_an_update_sent_after_the_cancel_does_not_answer_the_call() {
    let (s, _f) = session(None).await;
    let mut events = s.subscribe();
    let call = spawn_call(&s, "c1", "wait_cancel_then_update", "{}");
    live(&s, "c1", CallStatus::Running).await;
    s.cancel("c1").expect("cancel");
    let a = call.await.expect("join");
    assert_eq!(a.kind, AnswerKind::Cancelled, "{a:?}");
    assert!(!a.output.contains("cleaning up"), "{}", a.output);
    // The update was sent, and recorded.
    event(&mut events, "c1's update", |e| {
        e.call_id == "c1"
            && matches!(&e.kind, EventKind::Updated { message, .. } if message == "cleaning up")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b22_cancelled_after_release_gets_a_final_pair_saying_so() {
    let (s, _f) = session(Some("[limits]\ncancel-grace = \"0s\"\n")).await;
    let a = s
        .call("c1", "progress", r#"{"n": 5, "sleep_ms": 60000}"#)
        .await;
    assert_eq!(a.kind, AnswerKind::Released);
    s.cancel("c1").expect("cancel");
    ended(&s, "c1").await;
    let reply = s.next_reply().await.expect("reply");
    let last = reply.items.last().expect("an item");
    assert_eq!(last.call_id, "c1_final");
    assert!(last.output.contains("cancelled"), "{}", last.output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b24_closing_cancels_waits_then_stops_and_delivers_nothing() {
    let folder = Folder::new();
    folder.add_with_manifest(
        &test_plugin("behave"),
        "behave",
        "[limits]\ncancel-grace = \"50ms\"\n",
    );
    // `spin` runs until the close stops it, whatever the machine's speed
    // (the default budget lasts about 0.2 s here).
    folder.add_with_manifest(
        &test_plugin("spin"),
        "spin",
        "[limits]\nfuel = 1_000_000_000_000_000\ntimeout = \"1h\"\n",
    );
    let (host, _) = host_for(&folder).await;
    let mut options = SessionOptions::default();
    options.close_timeout = Duration::from_millis(300);
    let s = host.open_session(options);
    s.call("c1", "progress", r#"{"n": 3, "sleep_ms": 60000}"#)
        .await;
    let spin = spawn_call(&s, "c2", "spin", "{}");
    let cancellable = spawn_call(&s, "c3", "wait_cancel", "{}");
    live(&s, "c2", CallStatus::Running).await;
    live(&s, "c3", CallStatus::Running).await;
    closes(&s).await;
    assert!(s.running().is_empty(), "nothing runs on");
    assert_eq!(s.record("c1").expect("c1").status, CallStatus::Cancelled);
    assert_eq!(
        s.record("c2").expect("c2").status,
        CallStatus::Cancelled,
        "stopped by force"
    );
    assert_eq!(s.record("c3").expect("c3").status, CallStatus::Cancelled);
    spin.await.expect("join");
    cancellable.await.expect("join");
    assert!(
        s.next_reply().await.is_none(),
        "nothing is delivered after close"
    );
    let a = s.call("c4", "ok", "{}").await;
    assert!(a.is_error, "a closed session starts nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b24_dropping_the_last_handle_stops_its_calls() {
    // One slot: while the dropped session's call ran, nothing else could.
    let (host, _f) = behave_host(Some("[limits]\nmax-concurrency = 1\n")).await;
    let s = host.open_session(SessionOptions::default());
    let a = s
        .call("c1", "progress", r#"{"n": 2, "sleep_ms": 60000}"#)
        .await;
    assert_eq!(a.kind, AnswerKind::Released);
    drop(s);
    let other = host.open_session(SessionOptions::default());
    let a = tokio::time::timeout(WAIT, other.call("c1", "ok", "{}"))
        .await
        .expect("the dropped session's call no longer holds the slot");
    assert_eq!(a.output, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_goes_on_when_its_caller_stops_waiting() {
    // Session::call runs the call in the caller's task until it answers;
    // the caller giving up hands the rest to the runtime. `wait_cancel`
    // answers only once cancelled.
    let (s, _f) = session(None).await;
    let mut events = s.subscribe();
    tokio::select! {
        a = s.call("c1", "wait_cancel", "{}") => panic!("answered before it was cancelled: {a:?}"),
        _ = event(&mut events, "c1 started", |e| started(e, "c1")) => {}
    }
    assert!(s.record("c1").expect("record").status.is_live());
    s.cancel("c1").expect("cancel");
    let r = ended(&s, "c1").await;
    assert_eq!(r.status, CallStatus::Cancelled, "{:?}", r.error);
    assert_eq!(
        r.result.and_then(|o| o.text.clone()).as_deref(),
        Some("cleaned up"),
        "the plugin ran on and saw the cancel"
    );
}

#[tokio::test]
async fn b25_companion_tools_list_status_and_cancel() {
    let (s, _f) = session(None).await;
    let names: Vec<String> = s.tools().into_iter().map(|t| t.name).collect();
    for companion in [RUNNING_TASKS_TOOL, TASK_STATUS_TOOL, CANCEL_TASK_TOOL] {
        assert!(names.contains(&companion.to_owned()), "{names:?}");
    }
    s.call("c1", "progress", r#"{"n": 3, "sleep_ms": 60000}"#)
        .await;
    let a = s.call("x1", RUNNING_TASKS_TOOL, "{}").await;
    let task = &a.data.expect("data")["tasks"][0];
    assert_eq!(task["call_id"], "c1");
    assert_eq!(task["tool"], "progress");
    assert_eq!(task["arguments"], json!({"n": 3, "sleep_ms": 60000}));
    assert_eq!(task["status"], "running");
    assert_eq!(task["last_update"], "step 1 of 3");
    assert!(task["started_at"].is_string() && task["elapsed_seconds"].is_number());

    let a = s.call("x2", TASK_STATUS_TOOL, r#"{"call_id": "c1"}"#).await;
    let status = a.data.expect("data");
    assert_eq!(status["status"], "running");
    assert_eq!(status["updates"][0]["message"], "step 1 of 3");

    let a = s.call("x3", CANCEL_TASK_TOOL, r#"{"call_id": "c1"}"#).await;
    assert!(!a.is_error, "{}", a.output);
    ended(&s, "c1").await;
    let a = s.call("x4", TASK_STATUS_TOOL, r#"{"call_id": "c1"}"#).await;
    assert_eq!(a.data.expect("data")["status"], "cancelled");
    let a = s
        .call("x5", TASK_STATUS_TOOL, r#"{"call_id": "nope"}"#)
        .await;
    assert!(a.is_error);
}

#[tokio::test]
async fn b26_results_finishing_together_are_one_reply_request() {
    let (s, _f) = session(None).await;
    for id in ["a", "b", "c"] {
        let a = s.call(id, "progress", r#"{"n": 2, "sleep_ms": 30}"#).await;
        assert_eq!(a.kind, AnswerKind::Released);
    }
    for id in ["a", "b", "c"] {
        ended(&s, id).await;
    }
    let reply = s.next_reply().await.expect("reply");
    assert_eq!(reply.items.len(), 6, "{:?}", reply.items);
    assert!(!reply.maybe_told);
    assert_eq!(
        reply.instructions,
        Templates::default().reply.replace("{count}", "6")
    );
    reply.ack();
    assert!(s.try_reply().is_none(), "nothing more");
}

#[tokio::test]
async fn b27_if_the_agent_spoke_since_the_items_arrived_the_instructions_say_so() {
    let (s, _f) = session(None).await;
    s.call("c1", "progress", r#"{"n": 2, "sleep_ms": 0}"#).await;
    ended(&s, "c1").await;
    s.agent_spoke();
    let reply = s.next_reply().await.expect("reply");
    assert!(reply.maybe_told);
    assert!(
        reply.instructions.contains("empty reply"),
        "{}",
        reply.instructions
    );
}

#[tokio::test]
async fn b28_a_reply_that_is_not_acknowledged_is_offered_again() {
    let (s, _f) = session(None).await;
    s.call("c1", "progress", r#"{"n": 2, "sleep_ms": 0}"#).await;
    ended(&s, "c1").await;
    let first = s.next_reply().await.expect("reply");
    let items = first.items.clone();
    assert!(s.try_reply().is_none(), "one reply at a time");
    drop(first); // interrupted
    let again = s.next_reply().await.expect("offered again");
    assert_eq!(again.items, items);
    again.ack();
    assert!(s.try_reply().is_none());
}

#[tokio::test]
async fn b29_every_call_emits_started_updated_and_exactly_one_ended_in_order() {
    let (s, _f) = session(None).await;
    let mut events = s.subscribe();
    s.call("c1", "progress", r#"{"n": 3, "sleep_ms": 5}"#).await;
    s.call("c2", "fail", "{}").await;
    let mut seen = Vec::new();
    tokio::time::timeout(WAIT, async {
        let mut ends = 0;
        while ends < 2 {
            let e = events.recv().await.expect("event");
            if matches!(e.kind, EventKind::Ended { .. }) {
                ends += 1;
            }
            seen.push(e);
        }
    })
    .await
    .expect("events");
    let c1: Vec<&toolhost::CallEvent> = seen.iter().filter(|e| e.call_id == "c1").collect();
    assert!(matches!(c1[0].kind, EventKind::Started));
    for (i, e) in c1[1..4].iter().enumerate() {
        assert!(
            matches!(&e.kind, EventKind::Updated { n, .. } if *n == i + 1),
            "{e:?}"
        );
    }
    assert!(matches!(
        c1[4].kind,
        EventKind::Ended {
            status: CallStatus::Done,
            ..
        }
    ));
    assert_eq!(c1.len(), 5);
    assert!(c1.windows(2).all(|w| w[0].at <= w[1].at));
    assert!(
        c1.iter()
            .all(|e| e.session_id == s.id() && e.tool == "progress")
    );
    let c2: Vec<&toolhost::CallEvent> = seen.iter().filter(|e| e.call_id == "c2").collect();
    assert_eq!(c2.len(), 2);
    assert!(matches!(
        c2[1].kind,
        EventKind::Ended {
            status: CallStatus::Error,
            ..
        }
    ));
}

#[tokio::test]
async fn b30_the_embedder_replaces_templates() {
    let (host, _f) = behave_host(None).await;
    let mut templates = Templates::default();
    templates.update = "UPDATE {call_id}: {message}".into();
    templates.reject = "BUSY {running}".into();
    let mut options = SessionOptions::default();
    options.templates = Some(Arc::new(templates));
    let s = host.open_session(options);
    let a = s
        .call("c1", "progress", r#"{"n": 2, "sleep_ms": 200}"#)
        .await;
    assert_eq!(a.output, "UPDATE c1: step 1 of 2");
    let first = spawn_call(&s, "r1", "reject_me", r#"{"ms": 300}"#);
    live(&s, "r1", CallStatus::Running).await;
    let a = s.call("r2", "reject_me", r#"{"ms": 1}"#).await;
    assert_eq!(a.output, "BUSY `r1`");
    first.await.expect("join");
}

#[tokio::test]
async fn b30_the_host_configuration_file_replaces_templates() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("toolhost.toml");
    std::fs::write(&file, "[templates]\nstarted = \"GO {tool} {call_id}\"\n").expect("write");
    let mut config = toolhost::HostConfig::load_file(&file).expect("config");
    config.engine = crate::common::config().engine;
    config.cache_dir = crate::common::config().cache_dir;
    let host = Host::new(config).expect("host");
    host.load_file(test_plugin("behave")).await.expect("load");
    let s = host.open_session(SessionOptions::default());
    let a = s.call("c1", "fire", r#"{"ms": 1}"#).await;
    assert_eq!(a.output, "GO fire c1");

    std::fs::write(&file, "[templates]\nstarted = \"GO {nope}\"\n").expect("write");
    let e = toolhost::HostConfig::load_file(&file).expect_err("unknown field");
    assert!(
        e.to_string().contains("toolhost.toml") && e.to_string().contains("{nope}"),
        "{e}"
    );
}

/// B31 through `Host::opening`: the engine is set up while the store
/// opens, and the host then keeps every call's record in that store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b31_a_host_opening_its_store_keeps_its_calls_records_there() {
    use toolhost::store::{Filter, SqliteStore, StoreOptions, TaskStore};
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("tasks.db");
    let opening = {
        let path = path.clone();
        async move {
            let store = SqliteStore::open(&path, StoreOptions::default()).expect("store");
            Arc::new(store) as Arc<dyn TaskStore>
        }
    };
    let host = Host::opening(config(), opening);
    assert_eq!(host.instances().borrow().size, 64, "the config's pool");
    host.load_file(test_plugin("behave")).await.expect("load");
    let s = host.open_session(SessionOptions::default());
    let a = s.call("c1", "ok", "{}").await;
    let task_id = a.task_id.expect("a task id");
    host.store().flush().await.expect("flush");

    let reader = SqliteStore::open(&path, StoreOptions::default()).expect("reopen");
    let record = reader.get(&task_id).await.expect("read").expect("kept");
    assert_eq!(record.call.call_id, "c1");
    assert_eq!(record.call.status, CallStatus::Done);
    let listed = reader.list(&Filter::default()).await.expect("list");
    assert_eq!(listed.len(), 1);
}

/// B31 with a store slow to open: the host serves before its store is
/// open, and the records of calls made meanwhile reach the store once it
/// opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b31_calls_made_while_the_store_opens_are_kept_once_it_opens() {
    use toolhost::store::{SqliteStore, StoreOptions, TaskStore};
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("tasks.db");
    let (open, gate) = tokio::sync::oneshot::channel::<()>();
    let opening = {
        let path = path.clone();
        async move {
            let _ = gate.await;
            let store = SqliteStore::open(&path, StoreOptions::default()).expect("store");
            Arc::new(store) as Arc<dyn TaskStore>
        }
    };
    let host = Host::opening(config(), opening);
    tokio::time::timeout(Duration::from_secs(60), host.set_up())
        .await
        .expect("the host is set up before its store opens")
        .expect("the engine");
    assert!(!host.store().health().lasting, "{}", host.store().health());
    host.load_file(test_plugin("behave")).await.expect("load");
    let s = host.open_session(SessionOptions::default());
    let a = s.call("c1", "ok", "{}").await;
    let task_id = a.task_id.expect("a task id");

    open.send(()).expect("gate");
    host.store().flush().await.expect("flush");
    assert!(host.store().health().lasting, "{}", host.store().health());
    let reader = SqliteStore::open(&path, StoreOptions::default()).expect("reopen");
    let record = reader.get(&task_id).await.expect("read").expect("kept");
    assert_eq!(record.call.call_id, "c1");
    assert_eq!(record.call.status, CallStatus::Done);
}

/// A host made by `Host::opening` serves while its engine is set up; an
/// engine that cannot be set up (here its largest memory is past what a
/// memory slot reserves) is said by `set_up`, and every load is refused
/// with why rather than waiting for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_whose_engine_cannot_be_set_up_says_why_and_refuses_its_loads() {
    use toolhost::store::{MemoryStore, StoreOptions, TaskStore};
    let mut unreservable = config();
    unreservable.engine.max_memory = 1 << 44;
    let store = async { Arc::new(MemoryStore::new(StoreOptions::default())) as Arc<dyn TaskStore> };
    let host = Host::opening(unreservable, store);

    // One load begun beside the set-up (it waits for the engine), one
    // after the set-up has failed.
    let (waiting, set_up) = tokio::join!(host.load_file(test_plugin("behave")), host.set_up());
    let e = format!("{:#}", set_up.expect_err("no engine"));
    assert!(e.starts_with("setting up the engine: "), "{e}");
    let cause = &e["setting up the engine: ".len()..];
    let failed = tokio::time::timeout(Duration::from_secs(5), host.set_up_failed()).await;
    assert_eq!(format!("{:#}", failed.expect("said")), e);
    let after = host.load_file(test_plugin("behave")).await;
    for refused in [waiting, after] {
        let why = refused.expect_err("refused").to_string();
        assert!(
            why.contains("behave.wasm: the engine could not be set up: ") && why.ends_with(cause),
            "{why}"
        );
    }
}

/// A host made by `Host::opening` begins its set-up (the engine's, and
/// the task store's opening) once its start's tools are listed, not beside
/// the announcements a client's first `tools/list` waits for (#13), or
/// when something needs it: here the store's opening says what the host
/// listed when it began, and `set_up` begins it on a host with no start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_opening_begins_its_set_up_once_its_start_is_listed_or_when_needed() {
    use std::sync::OnceLock;
    use tokio::sync::oneshot;
    use toolhost::store::{MemoryStore, StoreOptions, TaskStore};
    let opening = || {
        let host: Arc<OnceLock<Host>> = Arc::default();
        let (said, listed) = oneshot::channel::<Vec<String>>();
        let store = {
            let host = host.clone();
            async move {
                let listed = (host.get())
                    .map(|h| h.open_session(SessionOptions::default()).tools())
                    .unwrap_or_default();
                let _ = said.send(listed.into_iter().map(|t| t.name).collect());
                Arc::new(MemoryStore::new(StoreOptions::default())) as Arc<dyn TaskStore>
            }
        };
        let opened = Host::opening(config(), store);
        let _ = host.set(opened.clone());
        (opened, listed)
    };
    let begun = |listed: oneshot::Receiver<Vec<String>>| async move {
        (tokio::time::timeout(Duration::from_secs(60), listed).await)
            .expect("the set-up begins")
            .expect("said")
    };

    // The compile cache knows the plugin at this path once it has loaded
    // there: its tools are then announced before it loads. (A link to the
    // built file, whose times are old enough for the cache to remember
    // it: a copy made now would be read again.)
    let folder = Folder::new();
    let link = folder.path().join("rust-compute.wasm");
    std::os::unix::fs::symlink(example("rust-compute"), &link).expect("link");
    let warm = Host::new(config()).expect("host");
    warm.load_dir(folder.path()).await.expect("load");
    drop(warm);
    let (host, listed) = opening();
    host.start_loading(folder.path()).expect("start");
    let listed = begun(listed).await;
    assert!(listed.iter().any(|t| t == "word_count"), "{listed:?}");
    let report = host.ready().await;
    assert_eq!((report.loaded.len(), report.refused.len()), (1, 0));

    let (host, listed) = opening();
    tokio::time::timeout(Duration::from_secs(60), host.set_up())
        .await
        .expect("set up")
        .expect("the engine");
    assert_eq!(begun(listed).await, Vec::<String>::new());
}

/// B31 in part: the session keeps each call's record in memory while it
/// lives. Records that outlast the session (the journal, issue 12) are not
/// built yet and not tested here.
#[tokio::test]
async fn b31_every_call_has_a_record_in_memory() {
    let (s, _f) = session(None).await;
    s.call("c1", "progress", r#"{"n": 2, "sleep_ms": 5}"#).await;
    let r = ended(&s, "c1").await;
    assert_eq!(r.call_id, "c1");
    assert_eq!(r.session_id, s.id());
    assert_eq!(r.tool, "progress");
    assert_eq!(*r.arguments, json!({"n": 2, "sleep_ms": 5}));
    assert_eq!(r.status, CallStatus::Done);
    assert_eq!(r.updates.len(), 2);
    assert!(r.updates[0].at <= r.updates[1].at);
    assert_eq!(
        r.result.as_ref().and_then(|o| o.text.as_deref()),
        Some("done after 2 steps")
    );
    assert!(r.fuel_used > 0);
    assert!(r.started_at.is_some() && r.ended_at >= r.started_at);
    let json = serde_json::to_value(&r).expect("serializes");
    assert_eq!(json["status"], "done");
    assert!(json["started_at"].as_str().expect("time").ends_with('Z'));

    s.call("c2", "fail", "{}").await;
    let r = s.record("c2").expect("record");
    assert_eq!(r.status, CallStatus::Error);
    assert!(r.error.expect("error").contains("it failed on purpose"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_sessions_and_many_calls_at_once() {
    let (host, _f) = behave_host(Some("[limits]\nmax-concurrency = 48\n")).await;
    let sessions: Vec<Session> = (0..8)
        .map(|_| host.open_session(SessionOptions::default()))
        .collect();
    let mut calls = Vec::new();
    for s in &sessions {
        for i in 0..6 {
            calls.push(spawn_call(
                s,
                &format!("c{i}"),
                "progress",
                r#"{"n": 2, "sleep_ms": 20}"#,
            ));
        }
    }
    for c in calls {
        assert_eq!(c.await.expect("join").kind, AnswerKind::Released);
    }
    for s in &sessions {
        for i in 0..6 {
            assert_eq!(ended(s, &format!("c{i}")).await.status, CallStatus::Done);
        }
        let reply = s.next_reply().await.expect("reply");
        assert_eq!(
            reply.items.len(),
            12,
            "each session gets only its own items"
        );
        assert!(reply.items.iter().all(|i| i.call_id.starts_with('c')));
        reply.ack();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_stopped_while_it_waits_for_a_slot_never_runs() {
    // One slot, held by c1; c2 waits for it when the session closes with
    // no time to spare: c2 is stopped by force while it waits, and must
    // not run once c1 frees the slot (issue 11, a cancellation hole).
    let (host, _f) = behave_host(Some("[limits]\nmax-concurrency = 1\n")).await;
    let mut options = SessionOptions::default();
    options.close_timeout = Duration::ZERO;
    let s = host.open_session(options);
    let a = s
        .call("c1", "progress", r#"{"n": 2, "sleep_ms": 60000}"#)
        .await;
    assert_eq!(a.kind, AnswerKind::Released);
    let mut in_line = host.tool("ok").await.expect("tool").plugin.slots_in_line();
    let c2 = spawn_call(&s, "c2", "ok", "{}");
    let waits = tokio::time::timeout(WAIT, in_line.wait_for(|n| *n == 1));
    waits
        .await
        .expect("c2 waits for the slot")
        .expect("the slots");
    assert!(s.record("c2").expect("c2").status.is_live(), "c2 waits");
    closes(&s).await;
    c2.await.expect("join");
    let r = s.record("c2").expect("c2");
    assert_eq!(r.status, CallStatus::Cancelled, "{r:?}");
    assert_eq!(r.result, None, "it never ran");
    assert_eq!(r.fuel_used, 0, "it never ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugins_slots_go_round_the_sessions_waiting_for_them() {
    // One slot, held by a1. Session a queues three more calls, then
    // session b queues one: b's call must get the slot second, right
    // after a2, not behind all of a's (issue 11: one client never starves
    // the others).
    let manifest = "[limits]\nmax-concurrency = 1\ncancel-grace = \"0s\"\n";
    let (host, _f) = behave_host(Some(manifest)).await;
    let mut in_line = host
        .tool("progress")
        .await
        .expect("tool")
        .plugin
        .slots_in_line();
    let a = host.open_session(SessionOptions::default());
    let b = host.open_session(SessionOptions::default());
    // `progress` answers at its first update, once it holds the slot, and
    // then holds it until it is cancelled.
    const HOLD: &str = r#"{"n": 2, "sleep_ms": 60000}"#;
    assert_eq!(
        a.call("a1", "progress", HOLD).await.kind,
        AnswerKind::Released
    );
    let (entered, mut order) = tokio::sync::mpsc::unbounded_channel();
    for (s, id) in [(&a, "a2"), (&a, "a3"), (&a, "a4"), (&b, "b1")] {
        let mut events = s.subscribe();
        let before = *in_line.borrow_and_update();
        let call = spawn_call(s, id, "progress", HOLD);
        event(&mut events, id, |e| started(e, id)).await;
        if id == "a2" || id == "b1" {
            // In the plugin's line, which a3 and a4 do not join before a2
            // has the slot: they wait for their session's turn.
            let joined = in_line.wait_for(|n| *n == before + 1);
            let joined = tokio::time::timeout(WAIT, joined).await;
            joined.expect("in line").expect("the slots");
        }
        let entered = entered.clone();
        tokio::spawn(async move {
            let kind = call.await.expect("join").kind;
            entered.send((id, kind)).ok();
        });
    }
    a.cancel("a1").expect("cancel");
    let mut ran = Vec::new();
    while ran.len() < 4 {
        let (id, kind) = tokio::time::timeout(WAIT, order.recv())
            .await
            .unwrap_or_else(|_| panic!("no call got the slot after {ran:?}"))
            .expect("a call");
        assert_eq!(kind, AnswerKind::Released, "{id}");
        ran.push(id);
        let s = if id.starts_with('a') { &a } else { &b };
        s.cancel(id).expect("cancel");
    }
    assert_eq!(ran[..2], ["a2", "b1"], "b1 took its turn: {ran:?}");
}

/// Unloading a plugin lets its running call finish, and ends the calls
/// still waiting for one of its slots without running them: the operator
/// took the tool out of service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unloaded_plugins_calls_waiting_for_a_slot_end_unrun() {
    let manifest = "[limits]\nmax-concurrency = 1\ncancel-grace = \"0s\"\n";
    let (host, _f) = behave_host(Some(manifest)).await;
    let plugin = host.tool("progress").await.expect("tool").plugin;
    let mut in_line = plugin.slots_in_line();
    let s = host.open_session(SessionOptions::default());
    // Holds the slot: answers at its first update, then sleeps.
    let hold = r#"{"n": 2, "sleep_ms": 60000}"#;
    let a1 = s.call("a1", "progress", hold).await;
    assert_eq!(a1.kind, AnswerKind::Released, "{}", a1.output);
    let a2 = spawn_call(&s, "a2", "progress", r#"{"n": 1, "sleep_ms": 0}"#);
    let joined = tokio::time::timeout(WAIT, in_line.wait_for(|n| *n == 1));
    joined.await.expect("a2 in line").expect("the slots");

    assert!(host.unload(plugin.path()));
    let a2 = tokio::time::timeout(WAIT, a2)
        .await
        .expect("a2 ends at the unload")
        .expect("join");
    assert!(a2.is_error, "{a2:?}");
    assert!(a2.output.contains("could not be run"), "{}", a2.output);
    let r = ended(&s, "a2").await;
    assert_eq!(r.status, CallStatus::Error);
    assert!(r.updates.is_empty(), "a2 never ran: {r:?}");
    assert_eq!(r.fuel_used, 0, "a2 never ran");
    // a1 goes on, on the version it started with, until it is stopped.
    let running: Vec<_> = s.running().into_iter().map(|r| r.call_id).collect();
    assert_eq!(running, ["a1"]);
    s.cancel("a1").expect("cancel");
    assert_eq!(ended(&s, "a1").await.status, CallStatus::Cancelled);
}

/// A call whose runtime shuts down under it (the host is stopping) leaves
/// the session's live calls: it is not listed as running, and `close` does
/// not wait for it. Its record says `interrupted`; the task store keeps it
/// as running, to be found `interrupted` when a host opens it again (B31).
#[test]
fn a_call_whose_runtime_shuts_down_is_interrupted_and_leaves_the_live_calls() {
    let first = tokio::runtime::Runtime::new().expect("a runtime");
    let (host, _f) = first.block_on(behave_host(None));
    let s = host.open_session(SessionOptions::default());
    let task_id = first.block_on(async {
        let mut events = s.subscribe();
        let a = s
            .call("c1", "fire", r#"{"ms": 600000, "update": true}"#)
            .await;
        assert_eq!(a.kind, AnswerKind::Started, "{}", a.output);
        // In the plugin, sleeping after its update.
        let updated = |e: &toolhost::CallEvent| matches!(e.kind, EventKind::Updated { .. });
        event(&mut events, "c1", updated).await;
        a.task_id.expect("a task id")
    });
    drop(first);

    assert!(s.running().is_empty(), "{:?}", s.running());
    let r = s.record("c1").expect("c1's record");
    assert_eq!(r.status, CallStatus::Interrupted, "{r:?}");
    assert_eq!(r.updates.len(), 1, "{r:?}");
    let second = tokio::runtime::Runtime::new().expect("a runtime");
    second.block_on(async {
        let kept = host.store().get(&task_id).await.expect("read");
        let kept = kept.expect("kept");
        assert_eq!(kept.call.status, CallStatus::Running, "for the next host");
        closes(&s).await;
    });
}

/// The task store an embedder gives the host: a memory store that notes
/// the durability each call's end is written with, and panics when it is
/// told of a call's `start`, `update` or `end` (the `&str`; any other
/// never).
#[derive(Debug)]
struct PanicsAt(
    &'static str,
    toolhost::store::MemoryStore,
    std::sync::Mutex<Vec<toolhost::store::Durability>>,
);

mod panics_at {
    use super::PanicsAt;
    use futures::future::BoxFuture;
    use std::time::SystemTime;
    use toolhost::UpdateRecord;
    use toolhost::store::{
        CallEnd, CallSummary, Durability, Filter, Health, Retention, StoreError, TaskRecord,
        TaskStore, Ticket,
    };

    impl PanicsAt {
        fn at(&self, what: &str) {
            if self.0 == what {
                panic!("the store fails at {what}");
            }
        }
    }

    impl TaskStore for PanicsAt {
        fn start(&self, record: TaskRecord, durability: Durability) -> Ticket {
            self.at("start");
            self.1.start(record, durability)
        }
        fn running(&self, task_id: &str, at: SystemTime) {
            self.1.running(task_id, at)
        }
        fn update(&self, task_id: &str, update: UpdateRecord, fuel_used: u64) {
            self.at("update");
            self.1.update(task_id, update, fuel_used)
        }
        fn end(&self, task_id: &str, end: CallEnd, durability: Durability) -> Ticket {
            self.at("end");
            self.2.lock().expect("ends").push(durability);
            self.1.end(task_id, end, durability)
        }
        fn flush(&self) -> Ticket {
            self.1.flush()
        }
        fn settle(&self) -> Ticket {
            self.1.settle()
        }
        fn get<'a>(
            &'a self,
            task_id: &'a str,
        ) -> BoxFuture<'a, Result<Option<TaskRecord>, StoreError>> {
            self.1.get(task_id)
        }
        fn list<'a>(
            &'a self,
            filter: &'a Filter,
        ) -> BoxFuture<'a, Result<Vec<TaskRecord>, StoreError>> {
            self.1.list(filter)
        }
        fn summaries(
            &self,
            since: SystemTime,
            limit: usize,
        ) -> BoxFuture<'_, Result<Vec<CallSummary>, StoreError>> {
            self.1.summaries(since, limit)
        }
        fn mark_orphans(&self, found_at: SystemTime) -> BoxFuture<'_, Result<u64, StoreError>> {
            self.1.mark_orphans(found_at)
        }
        fn prune(
            &self,
            retention: Retention,
            now: SystemTime,
        ) -> BoxFuture<'_, Result<u64, StoreError>> {
            self.1.prune(retention, now)
        }
        fn health(&self) -> Health {
            self.1.health()
        }
    }
}

/// A session of `behave` on a host whose embedder's task store panics at
/// `what`, which may have one call running or waiting.
async fn session_panicking_at(what: &'static str) -> (Host, Session) {
    use toolhost::store::{MemoryStore, StoreOptions, TaskStore};
    let store = async move {
        let memory = MemoryStore::new(StoreOptions::default());
        Arc::new(PanicsAt(what, memory, Default::default())) as Arc<dyn TaskStore>
    };
    let host = Host::opening(config(), store);
    host.load_file(test_plugin("behave")).await.expect("load");
    let mut options = SessionOptions::default();
    options.max_live = 1;
    let s = host.open_session(options);
    (host, s)
}

/// B31: a call that went on in the background has its end written durably,
/// as its start was, so that a host killed just after it ended does not
/// leave it `running`; a call answered with its end has that end in its
/// answer, and its record is written lazily.
#[tokio::test]
async fn b31_a_background_calls_end_is_written_durably_an_inline_calls_lazily() {
    use toolhost::store::{Durability, MemoryStore, StoreOptions};
    let store = Arc::new(PanicsAt(
        "never",
        MemoryStore::new(StoreOptions::default()),
        Default::default(),
    ));
    let given = store.clone();
    let host = Host::opening(config(), async move {
        given as Arc<dyn toolhost::store::TaskStore>
    });
    host.load_file(test_plugin("behave")).await.expect("load");
    let s = host.open_session(SessionOptions::default());
    let a = s.call("inline", "data", r#"{"n": 2}"#).await;
    assert_eq!(a.kind, AnswerKind::Result, "{a:?}");
    let a = s.call("background", "update_then_data", "{}").await;
    assert_eq!(a.kind, AnswerKind::Released, "{a:?}");
    while s.record("background").is_some_and(|r| r.status.is_live()) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        *store.2.lock().expect("ends"),
        [Durability::Lazy, Durability::Durable]
    );
    closes(&s).await;
}

/// The session has no live call left, serves the next one (its one place
/// is free), and closes at once.
async fn serves_on(s: &Session) {
    assert!(s.running().is_empty(), "{:?}", s.running());
    let a = s.call("next", "fail", "{}").await;
    assert!(a.output.contains("it failed on purpose"), "{a:?}");
    closes(s).await;
}

/// A call whose task panics (here in the embedder's task store, at an
/// update) ends as failed, recorded and emitted like any other error, and
/// leaves the session's live calls; the session goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_task_panics_ends_as_failed_and_leaves_the_live_calls() {
    let (_host, s) = session_panicking_at("update").await;
    let mut events = s.subscribe();
    let a = s.call("c1", "fire", r#"{"ms": 0, "update": true}"#).await;
    assert_eq!(a.kind, AnswerKind::Started, "{}", a.output);
    let end = event(&mut events, "c1", |e| ended_event(e, "c1")).await;
    assert!(
        matches!(
            end.kind,
            EventKind::Ended {
                status: CallStatus::Error,
                ..
            }
        ),
        "{end:?}"
    );
    assert_eq!(ended(&s, "c1").await.status, CallStatus::Error);
    assert!(s.running().is_empty(), "{:?}", s.running());
    // A call run by its caller until it answers panics in the caller,
    // and ends the same way.
    let caller = spawn_call(&s, "c2", "progress", r#"{"n": 1, "sleep_ms": 0}"#);
    assert!(caller.await.is_err(), "the caller panicked");
    assert_eq!(ended(&s, "c2").await.status, CallStatus::Error);
    serves_on(&s).await;
}

/// A `tools/call` over MCP whose call panics in the host (here in the
/// embedder's task store, at the call's start, which the handler runs) is
/// answered with an error naming the tool instead of never, and the
/// connection goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_call_that_panics_in_the_host_is_answered_with_an_error() {
    let (host, _s) = session_panicking_at("start").await;
    let mut mcp = crate::common::http::InProcess::serve(&host).await;
    mcp.open().await;
    let answer = mcp.call(2, "fail").await;
    assert!(
        answer.contains(r#""error""#) && answer.contains("the host failed while running fail"),
        "{answer}"
    );
    let answer = mcp.call(3, "toolhost_running_tasks").await;
    assert!(
        answer.contains(r#""result""#),
        "the connection goes on serving: {answer}"
    );
    mcp.stop().await;
}

/// A task store that panics as it is told of a call's start (the panic
/// reaches the caller) or end (caught) leaves no live call behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_panicking_at_a_calls_start_or_end_leaves_no_live_call() {
    let (_host, s) = session_panicking_at("start").await;
    let caller = spawn_call(&s, "c1", "ok", "{}");
    assert!(caller.await.is_err(), "the caller panicked");
    assert_eq!(ended(&s, "c1").await.status, CallStatus::Error);
    assert!(s.running().is_empty(), "{:?}", s.running());
    closes(&s).await;

    let (_host, s) = session_panicking_at("end").await;
    let a = s.call("c1", "ok", "{}").await;
    assert_eq!(a.output, "ok", "{a:?}");
    assert_eq!(ended(&s, "c1").await.status, CallStatus::Done);
    serves_on(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_refuses_calls_past_its_live_bound_and_keeps_serving() {
    // Calls answered at once and then run on (fire-and-forget, queued
    // duplicates, released ones) would otherwise pile up without end.
    let (s, _f) = bounded_session(2).await;
    let first = spawn_call(&s, "c1", "replace_me", "{}");
    live(&s, "c1", CallStatus::Running).await;
    let fire = s.call("c2", "fire", r#"{"ms": 60000}"#).await;
    assert_eq!(fire.kind, AnswerKind::Started, "{fire:?}");

    let refused = s.call("c3", "ok", "{}").await;
    assert!(refused.is_error, "{refused:?}");
    assert!(
        refused
            .output
            .contains("already has 2 tool calls running or queued")
            && refused.output.contains(CANCEL_TASK_TOOL),
        "{}",
        refused.output
    );
    assert!(s.record("c3").is_none(), "it was not started");
    // The companion tools still answer, so the model can make room.
    let listed = s.call("l", RUNNING_TASKS_TOOL, "{}").await;
    assert!(
        !listed.is_error && listed.output.contains("c1"),
        "{listed:?}"
    );
    // A replacing call takes the place of the call it cancels (B13).
    let second = spawn_call(&s, "c4", "replace_me", "{}");
    let replaced = tokio::time::timeout(WAIT, first)
        .await
        .expect("c1 is replaced");
    assert_eq!(replaced.expect("join").kind, AnswerKind::Cancelled);
    live(&s, "c4", CallStatus::Running).await;

    s.cancel("c4").expect("cancel");
    assert_eq!(second.await.expect("join").kind, AnswerKind::Cancelled);
    let again = s.call("c5", "ok", "{}").await;
    assert!(!again.is_error, "{again:?}");
    assert_eq!(again.output, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b11_a_full_session_still_answers_a_duplicate_with_its_notice() {
    let (s, _f) = bounded_session(1).await;
    let _first = spawn_call(&s, "c1", "reject_me", r#"{"ms": 60000}"#);
    live(&s, "c1", CallStatus::Running).await;
    let a = s.call("c2", "reject_me", r#"{"ms": 1}"#).await;
    assert_eq!(a.kind, AnswerKind::Duplicate, "{a:?}");
    assert!(!a.is_error, "B11: a notice, not an error: {a:?}");
    assert!(a.output.contains("c1"), "{}", a.output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_keeps_finished_records_within_its_byte_budget() {
    let (host, _f) = behave_host(None).await;
    let mut options = SessionOptions::default();
    options.keep_bytes = 256 << 10;
    let s = host.open_session(options);
    // Each call's arguments weigh about 100 KiB.
    let args = json!({ "pad": "x".repeat(100 << 10) }).to_string();
    let mut task_ids = Vec::new();
    for i in 1..=4 {
        let id = format!("c{i}");
        let a = s.call(&id, "ok", &args).await;
        assert!(!a.is_error, "{a:?}");
        task_ids.push(a.task_id.expect("a task id"));
        s.ended(&id).await.expect("ended");
    }
    assert!(s.record("c1").is_none(), "the oldest is dropped");
    assert!(s.record("c4").is_some(), "the newest is kept");
    let stored = host.store().get(&task_ids[0]).await.expect("the store");
    assert!(stored.is_some(), "the task store keeps them all");
    // One record past the budget alone is still kept: the newest always is.
    let big = json!({ "pad": "x".repeat(300 << 10) }).to_string();
    s.call("c5", "ok", &big).await;
    s.ended("c5").await.expect("ended");
    assert!(s.record("c5").is_some());
    assert!(s.record("c4").is_none());
    // The newest is the one that ended last, not the one started last: a
    // long call started first keeps its record when it ends.
    let pad = json!({ "pad": "x".repeat(200 << 10) }).to_string();
    let long = spawn_call(&s, "c6", "wait_cancel", &pad);
    live(&s, "c6", CallStatus::Running).await;
    s.call("c7", "ok", &args).await;
    s.ended("c7").await.expect("ended");
    s.cancel("c6").expect("cancel");
    assert_eq!(long.await.expect("join").kind, AnswerKind::Cancelled);
    s.ended("c6").await.expect("ended");
    assert!(s.record("c6").is_some(), "the call that just ended is kept");
    assert!(s.record("c7").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_keeps_the_newest_updates_of_a_call() {
    let (s, _f) = session(None).await;
    s.call("c1", "progress", r#"{"n": 2500, "sleep_ms": 0}"#)
        .await;
    let r = s.ended("c1").await.expect("ended");
    let kept = r.updates.len();
    assert!((1000..=2000).contains(&kept), "{kept} updates kept");
    let last = r.updates.last().expect("updates");
    assert_eq!(last.message, "step 2500 of 2500");
}
