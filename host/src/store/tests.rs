//! The task store's behaviour, run on both stores, then what only the
//! SQLite store does (files, crashes, failures) and its benchmark.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::*;
use crate::startup::SetUpGate;

/// Test times: whole seconds plus a few nanoseconds, to see that they
/// read back exactly.
fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_750_000_000 + secs) + Duration::from_nanos(123_457)
}

fn options() -> StoreOptions {
    StoreOptions {
        max_updates: 5,
        prune_every: None,
        ..StoreOptions::default()
    }
}

fn record(
    task_id: &str,
    session: &str,
    tool: &str,
    status: CallStatus,
    created: u64,
) -> TaskRecord {
    TaskRecord::new(
        task_id.to_owned(),
        CallRecord {
            call_id: format!("call-{task_id}"),
            session_id: session.to_owned(),
            tool: tool.to_owned(),
            arguments: json!({"text": "one two", "n": 3, "ratio": 0.1, "list": [1, "two", null]})
                .into(),
            status,
            updates: Vec::new(),
            result: None,
            error: None,
            fuel_used: 0,
            created_at: at(created),
            started_at: (status == CallStatus::Running).then(|| at(created)),
            ended_at: None,
        },
    )
}

fn done(ended: u64) -> CallEnd {
    CallEnd {
        status: CallStatus::Done,
        result: Some(Arc::new(Output {
            text: Some(format!("ended at {ended}")),
            data: Some(json!({"ended": ended, "ok": true})),
        })),
        error: None,
        fuel_used: 10_000 + ended,
        ended_at: at(ended),
    }
}

/// `record` as `end` leaves it.
fn ended(mut record: TaskRecord, end: &CallEnd) -> TaskRecord {
    record.call.status = end.status;
    record.call.result = end.result.clone();
    record.call.error = end.error.clone();
    record.call.fuel_used = end.fuel_used;
    record.call.ended_at = Some(end.ended_at);
    record
}

fn everything() -> Filter {
    Filter {
        limit: 100_000,
        ..Filter::default()
    }
}

async fn all(store: &dyn TaskStore) -> Vec<TaskRecord> {
    store.flush().await.expect("flush");
    store.list(&everything()).await.expect("list")
}

// The behaviour both stores share.

async fn round_trip(store: &dyn TaskStore) {
    let start = record("t1", "s1", "word_count", CallStatus::Queued, 0);
    store
        .start(start.clone(), Durability::Durable)
        .await
        .expect("durable start");
    store.running("t1", at(1));
    let updates: Vec<UpdateRecord> = (0..3)
        .map(|i| UpdateRecord {
            at: at(2 + i),
            message: format!("step {i} ✓"),
        })
        .collect();
    for (i, update) in updates.iter().enumerate() {
        store.update("t1", update.clone(), 100 * (i as u64 + 1));
    }
    // A live call's fuel is the fuel as of its latest update; settled
    // writes are readable.
    store.settle().await.expect("settle");
    let live = store.get("t1").await.expect("get").expect("recorded");
    assert_eq!(live.call.fuel_used, 300);
    assert_eq!(live.call.updates.len(), 3);
    let end = done(9);
    store
        .end("t1", end.clone(), Durability::Lazy)
        .await
        .expect("queued");

    let failing = record("t2", "s1", "word_count", CallStatus::Running, 3);
    let _ = store.start(failing.clone(), Durability::Lazy);
    let failed = CallEnd {
        status: CallStatus::Error,
        result: None,
        error: Some("tool error: no words".into()),
        fuel_used: 7,
        ended_at: at(4),
    };
    let _ = store.end("t2", failed.clone(), Durability::Lazy);
    store.flush().await.expect("flush");

    let mut expected = ended(start, &end);
    expected.call.status = CallStatus::Done;
    expected.call.started_at = Some(at(1));
    expected.call.updates = updates;
    assert_eq!(store.get("t1").await.expect("get"), Some(expected.clone()));
    assert_eq!(
        store.get("t2").await.expect("get"),
        Some(ended(failing, &failed))
    );
    assert_eq!(store.get("t3").await.expect("get"), None);

    // A call ends once; a task id is recorded once.
    let again = store.end("t1", done(20), Durability::Durable).await;
    assert!(
        matches!(&again, Err(StoreError::Refused { task_id, .. }) if task_id == "t1"),
        "{again:?}"
    );
    let twice = store
        .start(
            record("t1", "s2", "other", CallStatus::Running, 30),
            Durability::Durable,
        )
        .await;
    assert!(
        matches!(twice, Err(StoreError::Refused { .. })),
        "{twice:?}"
    );
    assert_eq!(store.get("t1").await.expect("get"), Some(expected));
    assert_eq!(store.health().problem, None);
}

/// A whole call between two commits (the SQLite writer folds it into one
/// insert) reads back as the same writes made one by one; a second end
/// and a late `running` change nothing.
async fn a_call_between_two_commits(store: &dyn TaskStore) {
    let start = record("w", "s", "word_count", CallStatus::Queued, 0);
    let _ = store.start(start.clone(), Durability::Lazy);
    store.running("w", at(1));
    let updates: Vec<UpdateRecord> = (0..2)
        .map(|i| UpdateRecord {
            at: at(2 + i),
            message: format!("step {i}"),
        })
        .collect();
    for update in &updates {
        store.update("w", update.clone(), 100);
    }
    let end = done(5);
    let _ = store.end("w", end.clone(), Durability::Lazy);
    let _ = store.end("w", done(6), Durability::Lazy);
    store.running("w", at(7));
    store.flush().await.expect("flush");

    let mut expected = ended(start, &end);
    expected.call.started_at = Some(at(1));
    expected.call.updates = updates;
    assert_eq!(store.get("w").await.expect("get"), Some(expected));
    assert_eq!(store.health().problem, None);
}

async fn listing(store: &dyn TaskStore) {
    let records = [
        record("a", "s1", "fetch", CallStatus::Running, 1),
        record("b", "s1", "count", CallStatus::Running, 2),
        record("c", "s2", "fetch", CallStatus::Queued, 3),
        record("d", "s2", "count", CallStatus::Running, 4),
        record("e", "s1", "fetch", CallStatus::Running, 5),
    ];
    for r in &records {
        let _ = store.start(r.clone(), Durability::Lazy);
    }
    let _ = store.end("b", done(6), Durability::Lazy);
    store.flush().await.expect("flush");

    let ids = |filter: Filter| async move {
        let found = store.list(&filter).await.expect("list");
        found.into_iter().map(|r| r.task_id).collect::<Vec<_>>()
    };
    assert_eq!(ids(Filter::default()).await, ["e", "d", "c", "b", "a"]);
    let by_tool = Filter {
        tool: Some("fetch".into()),
        ..Filter::default()
    };
    assert_eq!(ids(by_tool).await, ["e", "c", "a"]);
    let by_session = Filter {
        session_id: Some("s2".into()),
        ..Filter::default()
    };
    assert_eq!(ids(by_session).await, ["d", "c"]);
    let by_status = Filter {
        status: Some(CallStatus::Running),
        ..Filter::default()
    };
    assert_eq!(ids(by_status).await, ["e", "d", "a"]);
    let done_in_s1 = Filter {
        status: Some(CallStatus::Done),
        session_id: Some("s1".into()),
        ..Filter::default()
    };
    assert_eq!(ids(done_in_s1).await, ["b"]);
    let two = Filter {
        limit: 2,
        ..Filter::default()
    };
    assert_eq!(ids(two).await, ["e", "d"]);
    // Created at or after `since`, before `until`.
    let from_2_to_4 = Filter {
        since: Some(at(2)),
        until: Some(at(4)),
        ..Filter::default()
    };
    assert_eq!(ids(from_2_to_4).await, ["c", "b"]);
    let fetch_since_3 = Filter {
        tool: Some("fetch".into()),
        since: Some(at(3)),
        ..Filter::default()
    };
    assert_eq!(ids(fetch_since_3).await, ["e", "c"]);
}

async fn summaries_since(store: &dyn TaskStore) {
    for (id, tool, created) in [("a", "fetch", 1), ("b", "count", 2), ("c", "fetch", 3)] {
        let _ = store.start(
            record(id, "s", tool, CallStatus::Running, created),
            Durability::Lazy,
        );
    }
    let _ = store.end("b", done(5), Durability::Lazy);
    store.settle().await.expect("settle");

    let got = store.summaries(at(2), 100).await.expect("summaries");
    assert_eq!(
        got,
        [
            CallSummary {
                tool: "fetch".into(),
                status: CallStatus::Running,
                fuel_used: 0,
                created_at: at(3),
                started_at: Some(at(3)),
                ended_at: None,
            },
            CallSummary {
                tool: "count".into(),
                status: CallStatus::Done,
                fuel_used: 10_005,
                created_at: at(2),
                started_at: Some(at(2)),
                ended_at: Some(at(5)),
            },
        ]
    );
    // Bounded: the newest first.
    let one = store.summaries(at(0), 1).await.expect("summaries");
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].created_at, at(3));
}

async fn updates_past_the_bound_are_counted(store: &dyn TaskStore) {
    // `options()` keeps 5 updates per call.
    let _ = store.start(
        record("t", "s", "long", CallStatus::Running, 0),
        Durability::Lazy,
    );
    for i in 1..=12 {
        store.update(
            "t",
            UpdateRecord {
                at: at(i),
                message: format!("update {i}"),
            },
            i,
        );
    }
    store.flush().await.expect("flush");
    let got = store.get("t").await.expect("get").expect("recorded");
    let messages: Vec<&str> = got
        .call
        .updates
        .iter()
        .map(|u| u.message.as_str())
        .collect();
    assert_eq!(
        messages,
        [
            "update 8",
            "update 9",
            "update 10",
            "update 11",
            "update 12"
        ]
    );
    assert_eq!(got.call.updates[0].at, at(8));
    assert_eq!(got.updates_dropped, 7);

    // A record that arrives with more updates than the bound is folded too.
    let mut long = record("u", "s", "long", CallStatus::Running, 0);
    long.call.updates = (1..=8)
        .map(|i| UpdateRecord {
            at: at(i),
            message: format!("early {i}"),
        })
        .collect();
    let _ = store.start(long, Durability::Lazy);
    store.flush().await.expect("flush");
    let got = store.get("u").await.expect("get").expect("recorded");
    assert_eq!(got.call.updates.len(), 5);
    assert_eq!(got.call.updates[0].message, "early 4");
    assert_eq!(got.updates_dropped, 3);

    // A listing in brief counts them all, and agrees with the full one.
    let filter = Filter::default();
    let brief = store.list_brief(&filter).await.expect("list in brief");
    let full = store.list(&filter).await.expect("list");
    let counts: Vec<(&str, u64)> = brief
        .iter()
        .map(|l| (l.task_id.as_str(), l.updates))
        .collect();
    assert_eq!(counts, [("u", 8), ("t", 12)]);
    assert_eq!(brief, full.iter().map(Listed::of).collect::<Vec<_>>());
}

/// Three live calls and one finished, recorded by `store`.
async fn some_live_calls(store: &dyn TaskStore) -> (Vec<TaskRecord>, TaskRecord) {
    let live = vec![
        record("r1", "s", "t", CallStatus::Running, 1),
        record("r2", "s", "t", CallStatus::Running, 2),
        record("q1", "s", "t", CallStatus::Queued, 3),
    ];
    for r in &live {
        let _ = store.start(r.clone(), Durability::Lazy);
    }
    let finished = record("f1", "s", "t", CallStatus::Running, 4);
    let _ = store.start(finished.clone(), Durability::Lazy);
    let _ = store.end("f1", done(5), Durability::Lazy);
    store.flush().await.expect("flush");
    (live, ended(finished, &done(5)))
}

#[tokio::test]
async fn the_calls_of_a_host_that_is_gone_become_interrupted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tasks.db");
    let first = SqliteStore::open(&path, options()).expect("open");
    let (live, finished) = some_live_calls(&first).await;
    // Its own calls are not orphans while it runs.
    assert_eq!(first.mark_orphans(at(40)).await, Ok(0));
    drop(first);

    let store = SqliteStore::open(&path, options()).expect("reopen");
    let found = at(50);
    assert_eq!(store.mark_orphans(found).await, Ok(3));
    let mut expected: Vec<TaskRecord> = live
        .into_iter()
        .map(|mut r| {
            r.call.status = CallStatus::Interrupted;
            r.interrupted_at = Some(found);
            r
        })
        .collect();
    expected.push(finished);
    expected.reverse();
    assert_eq!(all(&store).await, expected);
    assert_eq!(store.mark_orphans(at(60)).await, Ok(0));
}

#[tokio::test]
async fn a_host_leaves_the_calls_of_another_running_host_alone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tasks.db");
    let running = SqliteStore::open(&path, options()).expect("open");
    let (live, _) = some_live_calls(&running).await;

    // A second host on the same file (two `toolhost serve` of one user).
    let second = SqliteStore::open(&path, options()).expect("open a second time");
    assert_eq!(second.mark_orphans(at(50)).await, Ok(0));
    for r in &live {
        let got = second.get(&r.task_id).await.expect("get").expect("kept");
        assert!(got.call.status.is_live(), "{got:?}");
    }
    // Once the first is gone, its calls are orphans.
    drop(running);
    assert_eq!(second.mark_orphans(at(60)).await, Ok(3));
}

#[test]
fn opening_a_store_removes_the_lock_files_killed_hosts_left() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tasks.db");
    let hosts = dir.path().join("tasks.db-hosts");
    let lock_files = || -> std::collections::BTreeSet<String> {
        std::fs::read_dir(&hosts)
            .expect("hosts folder")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect()
    };
    let running = SqliteStore::open(&path, options()).expect("open");
    let mine = lock_files();
    // Three hosts killed a while ago: their files are there, locked by
    // nobody. One host is starting: its file is new, not locked yet.
    let a_while_ago = SystemTime::now() - Duration::from_secs(120);
    for n in 0..3 {
        let file = std::fs::File::create(hosts.join(format!("killed-{n}.lock"))).expect("create");
        file.set_modified(a_while_ago).expect("set mtime");
    }
    std::fs::File::create(hosts.join("starting.lock")).expect("create");
    // The live host's file is as old, and locked.
    for name in &mine {
        std::fs::File::options()
            .write(true)
            .open(hosts.join(name))
            .expect("open")
            .set_modified(a_while_ago)
            .expect("set mtime");
    }

    let second = SqliteStore::open(&path, options()).expect("open a second time");
    let left = lock_files();
    assert!(left.iter().all(|n| !n.starts_with("killed-")), "{left:?}");
    assert!(left.contains("starting.lock"), "{left:?}");
    assert!(mine.is_subset(&left), "the live host's file went: {left:?}");
    assert_eq!(left.len(), mine.len() + 2, "{left:?}");
    drop((running, second));
}

#[tokio::test]
async fn a_memory_store_has_no_orphans() {
    let store = MemoryStore::new(options());
    let (live, _) = some_live_calls(&store).await;
    assert_eq!(store.mark_orphans(at(50)).await, Ok(0));
    for r in &live {
        let got = store.get(&r.task_id).await.expect("get").expect("kept");
        assert!(got.call.status.is_live(), "{got:?}");
    }
}

async fn retention_prunes_what_it_should(store: &dyn TaskStore) {
    // Ten finished records, the i-th finished at 100 + i; one live record
    // older than all of them.
    let _ = store.start(
        record("live", "s", "t", CallStatus::Running, 0),
        Durability::Lazy,
    );
    for i in 0..10 {
        let id = format!("f{i}");
        let _ = store.start(
            record(&id, "s", "t", CallStatus::Running, 1),
            Durability::Lazy,
        );
        let _ = store.end(&id, done(100 + i), Durability::Lazy);
    }
    store.flush().await.expect("flush");
    let ids = |records: Vec<TaskRecord>| {
        let mut ids: Vec<String> = records.into_iter().map(|r| r.task_id).collect();
        ids.sort();
        ids
    };

    // Nothing is old enough, nor too many.
    let generous = Retention {
        keep: Duration::from_secs(1_000),
        max: 10,
    };
    assert_eq!(store.prune(generous, at(110)).await, Ok(0));
    assert_eq!(all(store).await.len(), 11);

    // By age: at 110, keeping 6 s removes those that finished before 104.
    let six_seconds = Retention {
        keep: Duration::from_secs(6),
        max: 100,
    };
    assert_eq!(store.prune(six_seconds, at(110)).await, Ok(4));
    assert_eq!(
        ids(all(store).await),
        ["f4", "f5", "f6", "f7", "f8", "f9", "live"]
    );

    // By count: the two that finished last stay, and the live one.
    let two = Retention {
        keep: Duration::from_secs(1_000),
        max: 2,
    };
    assert_eq!(store.prune(two, at(110)).await, Ok(4));
    assert_eq!(ids(all(store).await), ["f8", "f9", "live"]);
    assert_eq!(
        store.get("f9").await.expect("get"),
        Some(ended(
            record("f9", "s", "t", CallStatus::Running, 1),
            &done(109)
        ))
    );
}

/// One test per behaviour for each store.
macro_rules! on_both_stores {
    ($($behaviour:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $behaviour() {
                    let store = super::MemoryStore::new(super::options());
                    super::$behaviour(&store).await;
                }
            )*
        }

        mod sqlite {
            $(
                #[tokio::test]
                async fn $behaviour() {
                    let dir = tempfile::tempdir().expect("temp dir");
                    let path = dir.path().join("tasks.db");
                    let store = super::SqliteStore::open(&path, super::options()).expect("open");
                    super::$behaviour(&store).await;
                    // And all of it is still there after a clean reopen.
                    let before = super::all(&store).await;
                    drop(store);
                    let store = super::SqliteStore::open(&path, super::options()).expect("reopen");
                    assert_eq!(super::all(&store).await, before);
                }
            )*
        }
    };
}

on_both_stores!(
    round_trip,
    a_call_between_two_commits,
    listing,
    summaries_since,
    updates_past_the_bound_are_counted,
    retention_prunes_what_it_should,
);

#[test]
fn task_ids_sort_as_they_are_made_and_share_no_random_bits() {
    let earlier = new_task_id();
    // Ids until the clock's millisecond turns (the first 48 bits).
    let mut ids: Vec<String> = Vec::new();
    while ids.last().is_none_or(|id| id[..13] == earlier[..13]) {
        ids.push(new_task_id());
    }
    ids.retain(|id| id[..13] != earlier[..13]);
    ids.extend((0..1_000).map(|_| new_task_id()));
    let random = |id: &str| -> u128 {
        let uuid = uuid::Uuid::parse_str(id).expect("a UUID");
        assert_eq!(uuid.get_version_num(), 7, "{id}");
        // The 74 random bits: all but the time, version and variant.
        uuid.as_u128() & 0x0fff_3fff_ffff_ffff_ffff
    };
    for id in &ids {
        assert!(earlier < *id, "{earlier} sorts before {id}, made later");
    }
    // No counter: ids made in the same millisecond do not follow from
    // one another (B31: no client can guess another's task id).
    let mut seen = std::collections::HashSet::new();
    for pair in ids.windows(2) {
        let (a, b) = (random(&pair[0]), random(&pair[1]));
        assert!(a.abs_diff(b) > 1 << 20, "{} then {}", pair[0], pair[1]);
        assert!(seen.insert(a), "{} repeats random bits", pair[0]);
    }
}

#[test]
fn retention_reads_from_toml_with_defaults() {
    #[derive(serde::Deserialize)]
    struct File {
        records: Retention,
    }
    let parse = |text: &str| toml::from_str::<File>(text).map(|f| f.records);
    assert_eq!(
        parse("[records]\nkeep = \"7d\"\nmax = 500\n").expect("parses"),
        Retention {
            keep: Duration::from_secs(7 * 24 * 3600),
            max: 500
        }
    );
    assert_eq!(
        parse("[records]\nmax = 9\n").expect("parses"),
        Retention {
            max: 9,
            ..Retention::default()
        }
    );
    assert_eq!(
        Retention::default().keep,
        Duration::from_secs(30 * 24 * 3600)
    );
    let bad = parse("[records]\nkeep = \"a week\"\n").expect_err("not a duration");
    assert!(
        bad.to_string().contains("`a week` is not a duration"),
        "{bad}"
    );
    assert!(parse("[records]\nkept = \"7d\"\n").is_err());
}

// What only the SQLite store does.

/// The child process of `records_survive_a_kill`: the variable names the
/// file it writes to.
const CRASH_DB: &str = "TOOLHOST_STORE_TEST_CRASH_DB";

/// What the child writes before it is killed: 100 calls running, 30 ended.
fn before_the_kill() -> (Vec<TaskRecord>, Vec<(String, CallEnd)>) {
    let running = (0..130)
        .map(|i| record(&format!("task-{i:03}"), "s", "t", CallStatus::Running, i))
        .collect();
    let ends = (100..130)
        .map(|i| (format!("task-{i:03}"), done(1_000 + i)))
        .collect();
    (running, ends)
}

#[tokio::test]
#[ignore = "the child process of records_survive_a_kill"]
async fn crash_child() {
    use std::io::{Read, Write};
    let Some(path) = std::env::var_os(CRASH_DB) else {
        return;
    };
    let store = SqliteStore::open(Path::new(&path), options()).expect("open");
    let (records, ends) = before_the_kill();
    for r in records {
        store
            .start(r, Durability::Durable)
            .await
            .expect("durable start");
    }
    for (id, end) in ends {
        let _ = store.end(&id, end, Durability::Lazy);
    }
    store.flush().await.expect("flush");
    println!("READY");
    std::io::stdout().flush().expect("stdout");
    // Wait to be killed; a parent that went away closes stdin.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    std::process::exit(1);
}

#[tokio::test]
async fn records_survive_a_kill() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tasks.db");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "store::tests::crash_child",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(CRASH_DB, &path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("child");
    let stdout = child.stdout.take().expect("stdout");
    let ready = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line == "READY");
    assert!(ready, "the child did not get ready");
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("wait");
    assert!(!status.success(), "killed: {status:?}");
    // Killed with the file open: its write-ahead log was never folded in.
    let wal = path.with_extension("db-wal");
    assert!(std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0));

    let store = SqliteStore::open(&path, options()).expect("reopen");
    let found = SystemTime::now();
    assert_eq!(store.mark_orphans(found).await, Ok(100));
    let (records, ends) = before_the_kill();
    let mut expected: Vec<TaskRecord> = records
        .into_iter()
        .map(|mut r| {
            match ends.iter().find(|(id, _)| *id == r.task_id) {
                Some((_, end)) => r = ended(r, end),
                None => {
                    r.call.status = CallStatus::Interrupted;
                    r.interrupted_at = Some(found);
                }
            }
            r
        })
        .collect();
    expected.reverse();
    assert_eq!(all(&store).await, expected);
}

#[tokio::test]
async fn a_durable_write_is_visible_to_another_connection() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tasks.db");
    let store = SqliteStore::open(&path, options()).expect("open");
    let other = rusqlite::Connection::open(&path).expect("second connection");
    let status = |id: &str| {
        other
            .query_row("SELECT status FROM tasks WHERE task_id = ?1", [id], |row| {
                row.get::<_, String>(0)
            })
            .ok()
    };
    store
        .start(
            record("bg", "s", "t", CallStatus::Queued, 0),
            Durability::Durable,
        )
        .await
        .expect("durable start");
    assert_eq!(status("bg").as_deref(), Some("queued"));
    store
        .end("bg", done(3), Durability::Durable)
        .await
        .expect("durable end");
    assert_eq!(status("bg").as_deref(), Some("done"));
}

/// Lazy writes wait in the writer's gathering window; dropping the store
/// commits them rather than losing them.
#[tokio::test]
async fn lazy_writes_queued_when_the_store_drops_are_committed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tasks.db");
    let store = SqliteStore::open(&path, options()).expect("open");
    let n = 50;
    for i in 0..n {
        let id = format!("lazy-{i}");
        let _ = store.start(
            record(&id, "s", "t", CallStatus::Queued, i),
            Durability::Lazy,
        );
        let _ = store.end(&id, done(i + 1), Durability::Lazy);
    }
    drop(store);
    let store = SqliteStore::open(&path, options()).expect("reopen");
    let records = all(&store).await;
    assert_eq!(records.len(), n as usize);
    assert!(
        records.iter().all(|r| r.call.status == CallStatus::Done),
        "{records:?}"
    );
}

#[test]
fn a_corrupt_file_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tasks.db");
    std::fs::write(&path, "these are not the pages of a database\n".repeat(200)).expect("write");
    let e = SqliteStore::open(&path, options()).expect_err("corrupt");
    let message = e.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("not a database"), "{message}");
}

#[test]
fn another_programs_database_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tasks.db");
    rusqlite::Connection::open(&path)
        .and_then(|c| c.execute_batch("CREATE TABLE invoices (id INTEGER PRIMARY KEY);"))
        .expect("another database");
    let e = SqliteStore::open(&path, options()).expect_err("not ours");
    let message = e.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("not a toolhost task store"), "{message}");
}

#[test]
fn a_folder_that_cannot_be_written_is_refused_by_name() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");

    // The folder's place is taken by a file.
    let blocker = dir.path().join("state");
    std::fs::write(&blocker, "a file").expect("write");
    let path = blocker.join("tasks.db");
    let e = SqliteStore::open(&path, options()).expect_err("no folder");
    let message = e.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("cannot create the folder"), "{message}");

    // A read-only folder; root writes anyway, so only other users see it.
    let read_only = dir.path().join("read-only");
    std::fs::create_dir(&read_only).expect("mkdir");
    std::fs::set_permissions(&read_only, std::fs::Permissions::from_mode(0o555)).expect("chmod");
    if std::fs::write(read_only.join("probe"), "").is_ok() {
        eprintln!(
            "skipped the read-only folder: this user writes there anyway (root); \
             tests/records.rs runs toolhost as nobody for it"
        );
        return;
    }
    let path = read_only.join("tasks.db");
    let e = SqliteStore::open(&path, options()).expect_err("read-only");
    let message = e.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("cannot be written"), "{message}");
}

#[tokio::test]
async fn a_full_disk_is_reported_and_writes_go_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tasks.db");
    // Room for a few small records, not for a big one: SQLite's own "full".
    let full = StoreOptions {
        max_pages: Some(24),
        ..options()
    };
    let store = SqliteStore::open(&path, full).expect("open");
    let mut big = record("big", "s", "t", CallStatus::Running, 0);
    big.call.arguments = json!({ "text": "x".repeat(200_000) }).into();
    let e = store
        .start(big, Durability::Durable)
        .await
        .expect_err("too big");
    assert!(
        matches!(&e, StoreError::Failed { reason, .. } if reason.contains("full")),
        "{e}"
    );
    let health = store.health();
    assert!(health.problem.is_some(), "{health}");
    assert_eq!(health.lost_writes, 1);
    assert!(health.to_string().contains("not being kept"), "{health}");

    // Writes are still taken, and kept again once there is room.
    store
        .start(
            record("small", "s", "t", CallStatus::Running, 1),
            Durability::Durable,
        )
        .await
        .expect("room for a small one");
    assert_eq!(store.health().problem, None);
    assert!(store.get("small").await.expect("get").is_some());
    assert_eq!(store.get("big").await.expect("get"), None);
}

/// What the process logs at `WARN` and above, from every thread: a
/// subscriber for the whole test process, set by the first test that asks.
fn warnings() -> Arc<std::sync::Mutex<Vec<u8>>> {
    static LOGGED: std::sync::OnceLock<Arc<std::sync::Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    struct Appender(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Appender {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("log").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let logged = LOGGED.get_or_init(|| {
        let logged = Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = logged.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || Appender(writer.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        logged
    });
    logged.clone()
}

/// A store at `path` on a disk of 24 pages, whose batch with the start of
/// `task_id` (too big for it) failed.
async fn store_that_lost(path: &std::path::Path, task_id: &str) -> SqliteStore {
    let full = StoreOptions {
        max_pages: Some(24),
        ..options()
    };
    let store = SqliteStore::open(path, full).expect("open");
    let mut big = record(task_id, "s", "t", CallStatus::Running, 0);
    big.call.arguments = json!({ "text": "x".repeat(200_000) }).into();
    let e = store
        .start(big, Durability::Durable)
        .await
        .expect_err("too big");
    assert!(matches!(&e, StoreError::Failed { .. }), "{e}");
    store
}

/// End `task_id`, which has no live record, in `store`: refused; whether
/// that was warned of.
async fn refused_warning(store: &SqliteStore, task_id: &str) -> bool {
    let refused = store.end(task_id, done(1), Durability::Durable).await;
    assert!(
        matches!(refused, Err(StoreError::Refused { .. })),
        "{refused:?}"
    );
    warned_of(task_id)
}

/// Whether the process has logged a warning that mentions `id` since
/// [`warnings`] was first called.
fn warned_of(id: &str) -> bool {
    let logged = warnings();
    let logged = logged.lock().expect("log");
    String::from_utf8_lossy(&logged).contains(id)
}

#[tokio::test]
async fn an_end_whose_start_was_lost_is_not_warned_of_and_does_not_clear_the_problem() {
    warnings();
    let unique = new_task_id();
    let dir = tempfile::tempdir().expect("temp dir");

    // A store that lost nothing warns of an end with no live record.
    let healthy = SqliteStore::open(&dir.path().join("healthy.db"), options()).expect("open");
    let stray = format!("stray-{unique}");
    assert!(
        refused_warning(&healthy, &stray).await,
        "a stray end is warned of"
    );

    // One whose disk was full has said so once: the end of the start it
    // lost is not one more line.
    let lost = format!("lost-{unique}");
    let store = store_that_lost(&dir.path().join("full.db"), &lost).await;
    assert!(
        !refused_warning(&store, &lost).await,
        "the lost start's end is not warned of"
    );
    // Committing that end wrote nothing: it does not show the disk has room.
    assert!(store.health().problem.is_some(), "{}", store.health());
}

#[tokio::test]
async fn a_batch_that_cannot_begin_answers_its_callers_with_the_failure() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tasks.db");
    let store = SqliteStore::open(&path, options()).expect("open");
    // Another connection holds the write lock past the writer's wait for
    // it (5 s): the batch's transaction cannot begin.
    let blocker = rusqlite::Connection::open(&path).expect("second connection");
    blocker.execute_batch("BEGIN IMMEDIATE").expect("lock");
    let r = record("t1", "s1", "t", CallStatus::Running, 1);
    let refused = store.start(r, Durability::Durable).await;
    assert!(
        matches!(&refused, Err(StoreError::Failed { .. })),
        "the caller is told why, not that the store closed: {refused:?}"
    );
    blocker.execute_batch("COMMIT").expect("unlock");
    assert!(store.health().problem.is_some(), "{}", store.health());
}

#[tokio::test]
async fn the_end_of_a_start_dropped_from_a_full_queue_is_not_warned_of() {
    warnings();
    let unique = new_task_id();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tasks.db");
    let small = StoreOptions {
        queue: 2,
        ..options()
    };
    let store = SqliteStore::open(&path, small).expect("open");
    // Another connection holds the write lock: the writer stalls on its
    // first batch, and the queue fills.
    let blocker = rusqlite::Connection::open(&path).expect("second connection");
    blocker.execute_batch("BEGIN IMMEDIATE").expect("lock");
    // More than the store remembers: it forgets the oldest, not the newest.
    let mut dropped = None;
    for i in 0..crate::store::MAX_LOST_STARTS as u64 + 100 {
        let id = format!("dropped-{unique}-{i}");
        let r = record(&id, "s", "t", CallStatus::Running, i);
        if let Err(StoreError::Full(_)) = store.start(r, Durability::Lazy).await {
            dropped = Some(id);
        }
    }
    let dropped = dropped.expect("a start dropped");
    blocker.execute_batch("COMMIT").expect("unlock");
    while let Err(StoreError::Full(_)) = store.flush().await {
        tokio::task::yield_now().await;
    }

    assert!(
        !refused_warning(&store, &dropped).await,
        "the dropped start's end is not warned of"
    );
    // Only the ends of the starts it dropped: a stray end is warned of.
    let stray = format!("stray-{unique}");
    assert!(
        refused_warning(&store, &stray).await,
        "a stray end is warned of"
    );
}

#[tokio::test]
async fn the_end_of_a_start_lost_in_a_failed_batch_is_not_warned_of_once_commits_succeed() {
    warnings();
    let unique = new_task_id();
    let dir = tempfile::tempdir().expect("temp dir");
    // A start too big for the disk fails its batch, and the store says so.
    let lost = format!("lost-{unique}");
    let store = store_that_lost(&dir.path().join("tasks.db"), &lost).await;
    // A small call commits: the store keeps records again (B31).
    let kept = format!("kept-{unique}");
    let small = record(&kept, "s", "t", CallStatus::Running, 1);
    store.start(small, Durability::Durable).await.expect("kept");
    assert!(store.health().problem.is_none(), "{}", store.health());

    // The lost call ends after that: its end finds no record, which the
    // failure's one line already accounts for.
    assert!(
        !refused_warning(&store, &lost).await,
        "the end of the start lost in the failed batch is not warned of"
    );
    // Once only: the id is forgotten with its end, and a stray end warns.
    assert!(
        refused_warning(&store, &lost).await,
        "a second end of the lost start is warned of"
    );
    let stray = format!("stray-{unique}");
    assert!(
        refused_warning(&store, &stray).await,
        "a stray end is warned of"
    );
}

#[test]
fn a_store_that_cannot_open_falls_back_to_memory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tasks.db");
    std::fs::write(&path, "not a database".repeat(500)).expect("write");
    let store = open_or_memory(&path, options());
    let health = store.health();
    assert_eq!(health.store, "memory");
    let problem = health.problem.expect("says why");
    assert!(problem.contains(&path.display().to_string()), "{problem}");
    assert!(problem.contains("memory only"), "{problem}");
}

/// `cargo test -p toolhost --lib store::tests::bench -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: prints figures"]
async fn bench() {
    use std::sync::Arc;
    use std::time::Instant;
    const N: u64 = 100_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tasks.db");
    let options = StoreOptions {
        queue: 2 * N as usize + 16,
        prune_every: None,
        ..StoreOptions::default()
    };

    let store = Arc::new(SqliteStore::open(&path, options.clone()).expect("open"));
    // Records are made before the clock starts: what is timed is the store.
    let calls: Vec<(TaskRecord, CallEnd)> = (0..N)
        .map(|i| {
            let r = record(&format!("done-{i}"), "s", "t", CallStatus::Running, i);
            (r, done(i))
        })
        .collect();
    let begin = Instant::now();
    for (r, end) in calls {
        let id = r.task_id.clone();
        let _ = store.start(r, Durability::Lazy);
        let _ = store.end(&id, end, Durability::Lazy);
    }
    let queued = begin.elapsed();
    store.flush().await.expect("flush");
    let committed = begin.elapsed();
    println!(
        "{N} start+end pairs (lazy): queued in {queued:.2?} ({:.2?} per pair for the caller), \
         all committed in {committed:.2?} ({:.0} pairs/s)",
        queued / N as u32,
        N as f64 / committed.as_secs_f64()
    );

    let running: Vec<TaskRecord> = (0..N)
        .map(|i| record(&format!("bg-{i}"), "s", "t", CallStatus::Running, N + i))
        .collect();
    let begin = Instant::now();
    for r in running {
        let _ = store.start(r, Durability::Lazy);
    }
    store.flush().await.expect("flush");
    println!(
        "{N} running records (lazy) committed in {:.2?}",
        begin.elapsed()
    );

    let durable = 200;
    let begin = Instant::now();
    for i in 0..durable {
        let r = record(
            &format!("durable-{i}"),
            "s",
            "t",
            CallStatus::Running,
            3 * N,
        );
        store.start(r, Durability::Durable).await.expect("durable");
    }
    println!(
        "{durable} durable starts one after another: {:.2?} each (a synced commit each)",
        begin.elapsed() / durable
    );

    let concurrent = 10_000;
    let begin = Instant::now();
    let tasks: Vec<_> = (0..concurrent)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let r = record(
                    &format!("concurrent-{i}"),
                    "s",
                    "t",
                    CallStatus::Running,
                    4 * N,
                );
                store.start(r, Durability::Durable).await
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task").expect("durable");
    }
    println!(
        "{concurrent} concurrent durable starts: all committed in {:.2?}",
        begin.elapsed()
    );
    let health = store.health();
    assert_eq!(health.lost_writes, 0, "{health}");
    drop(store);

    let begin = Instant::now();
    let store = SqliteStore::open(&path, options).expect("reopen");
    let opened = begin.elapsed();
    let interrupted = store
        .mark_orphans(SystemTime::now())
        .await
        .expect("orphans");
    println!(
        "recovery: open {opened:.2?}, {interrupted} records marked interrupted in {:.2?} total",
        begin.elapsed()
    );
    let begin = Instant::now();
    let reads = 1_000;
    for i in 0..reads {
        let id = format!("done-{}", i * 97);
        assert!(store.get(&id).await.expect("get").is_some());
    }
    let per_get = begin.elapsed() / reads;
    let begin = Instant::now();
    for _ in 0..100 {
        assert_eq!(
            store.list(&Filter::default()).await.expect("list").len(),
            50
        );
    }
    println!(
        "reads: get by task id {per_get:.2?}, a listing of 50 {:.2?}",
        begin.elapsed() / 100
    );
    drop(store);
    let size: u64 = ["tasks.db", "tasks.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.path().join(f)).ok())
        .map(|m| m.len())
        .sum();
    println!(
        "database: {} for {} records",
        crate::error::format_bytes(size),
        2 * N + u64::from(durable) + concurrent
    );
}

#[tokio::test]
async fn the_writer_prunes_by_itself_when_it_opens() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tasks.db");
    let store = SqliteStore::open(&path, options()).expect("open");
    let _ = store.start(
        record("live", "s", "t", CallStatus::Running, 0),
        Durability::Lazy,
    );
    for i in 0..5 {
        let id = format!("f{i}");
        let _ = store.start(
            record(&id, "s", "t", CallStatus::Running, 1),
            Durability::Lazy,
        );
        let _ = store.end(&id, done(100 + i), Durability::Lazy);
    }
    drop(store);

    // Keep two finished records, pruning every hour: the first prune comes
    // before the first write is taken.
    let pruning = StoreOptions {
        retention: Retention {
            keep: Duration::from_secs(1_000 * 365 * 24 * 3600),
            max: 2,
        },
        prune_every: Some(Duration::from_secs(3600)),
        ..options()
    };
    let store = SqliteStore::open(&path, pruning).expect("reopen");
    let mut ids: Vec<String> = all(&store).await.into_iter().map(|r| r.task_id).collect();
    ids.sort();
    assert_eq!(ids, ["f3", "f4", "live"]);
}

#[tokio::test]
async fn the_memory_store_keeps_a_bounded_number_of_finished_records() {
    let store = MemoryStore::new(StoreOptions {
        memory_records: 3,
        ..options()
    });
    for i in 0..6 {
        let id = format!("f{i}");
        let _ = store.start(
            record(&id, "s", "t", CallStatus::Running, i),
            Durability::Lazy,
        );
        let _ = store.end(&id, done(100 + i), Durability::Lazy);
    }
    let _ = store.start(
        record("live", "s", "t", CallStatus::Running, 0),
        Durability::Lazy,
    );
    let ids: Vec<String> = all(&store).await.into_iter().map(|r| r.task_id).collect();
    assert_eq!(ids, ["f5", "f4", "f3", "live"]);
}

#[tokio::test]
async fn a_full_queue_drops_writes_counts_them_and_never_waits() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tasks.db");
    let store = SqliteStore::open(
        &path,
        StoreOptions {
            queue: 2,
            ..options()
        },
    )
    .expect("open");
    // Another connection holds the write lock: the writer stalls on its
    // first batch, and the queue fills.
    let blocker = rusqlite::Connection::open(&path).expect("second connection");
    blocker.execute_batch("BEGIN IMMEDIATE").expect("lock");
    let sent = 1_000;
    let mut dropped = 0;
    for i in 0..sent {
        let r = record(&format!("t{i}"), "s", "t", CallStatus::Running, i);
        match store.start(r, Durability::Lazy).await {
            Ok(()) => {}
            Err(StoreError::Full(2)) => dropped += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(dropped > 0);
    assert_eq!(store.health().lost_writes, dropped);
    blocker.execute_batch("COMMIT").expect("unlock");

    // The writer catches up once the lock is gone; until then a flush is
    // refused like any write.
    loop {
        match store.flush().await {
            Err(StoreError::Full(_)) => tokio::task::yield_now().await,
            flushed => break flushed.expect("flush"),
        }
    }
    let kept = all(&store).await.len() as u64;
    assert_eq!(kept + dropped, sent);
    assert_eq!(store.health().problem, None);
}

/// `record` with arguments of about `kib` KiB.
fn heavy(task_id: &str, kib: usize) -> TaskRecord {
    let mut r = record(task_id, "s", "t", CallStatus::Running, 1);
    r.call.arguments = json!({ "text": "x".repeat(kib << 10) }).into();
    r
}

/// `done(ended)` with a result of about `kib` KiB.
fn heavy_end(ended: u64, kib: usize) -> CallEnd {
    CallEnd {
        result: Some(Arc::new(Output {
            text: Some("y".repeat(kib << 10)),
            data: None,
        })),
        ..done(ended)
    }
}

#[tokio::test]
async fn a_queue_full_by_its_bytes_drops_heavy_writes_and_keeps_a_calls_end() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tasks.db");
    let store = SqliteStore::open(
        &path,
        StoreOptions {
            queue_bytes: 64 << 10,
            ..options()
        },
    )
    .expect("open");
    // The writer stalls on its first batch, which holds its bytes until
    // it commits.
    let blocker = rusqlite::Connection::open(&path).expect("second connection");
    blocker.execute_batch("BEGIN IMMEDIATE").expect("lock");

    // Alone in the queue, a write is taken whatever it weighs.
    store
        .start(heavy("a", 40), Durability::Lazy)
        .await
        .expect("the first is taken");
    let second = store.start(heavy("b", 40), Durability::Lazy).await;
    assert!(
        matches!(second, Err(StoreError::FullBytes(65_536))),
        "{second:?}"
    );
    let named = second.expect_err("full").to_string();
    assert!(named.contains("65536 bytes"), "{named}");
    // What weighs little still fits.
    store
        .start(heavy("c", 1), Durability::Lazy)
        .await
        .expect("a light write fits");
    // A call's end that does not fit is kept without its result.
    store
        .end("a", heavy_end(5, 40), Durability::Lazy)
        .await
        .expect("the end is kept");
    assert_eq!(store.health().lost_writes, 2, "b, and a's result");
    blocker.execute_batch("COMMIT").expect("unlock");

    store.flush().await.expect("a flush holds no bytes");
    let a = store.get("a").await.expect("get").expect("a kept");
    assert_eq!(a.call.status, CallStatus::Done);
    assert_eq!(a.call.result, None);
    let error = a.call.error.expect("says why");
    assert!(error.contains("result was not kept"), "{error}");
    assert_eq!(store.get("b").await.expect("get"), None);
    assert!(store.get("c").await.expect("get").is_some());

    // Committed, the bytes are free again: a heavy end fits.
    store
        .end("c", heavy_end(6, 40), Durability::Durable)
        .await
        .expect("durable end");
    let c = store.get("c").await.expect("get").expect("c kept");
    assert_eq!(c.call.result, heavy_end(6, 40).result);
    assert_eq!(store.health().problem, None);
}

#[tokio::test]
async fn a_memory_store_keeps_finished_records_within_its_bytes() {
    let store = MemoryStore::new(StoreOptions {
        memory_bytes: 100 << 10,
        ..options()
    });
    // A live record is kept whatever it weighs: the host bounds live calls.
    let _ = store.start(heavy("live", 200), Durability::Lazy);
    for i in 0..10 {
        let id = format!("t{i}");
        let _ = store.start(heavy(&id, 30), Durability::Lazy);
        store
            .end(&id, heavy_end(10 + i, 1), Durability::Lazy)
            .await
            .expect("end");
    }
    let kept: Vec<String> = all(&store).await.into_iter().map(|r| r.task_id).collect();
    assert!(kept.contains(&"live".to_owned()), "{kept:?}");
    // 31 KiB a record: three fit in 100 KiB, the newest ones.
    assert_eq!(kept.len(), 1 + 3, "{kept:?}");
    for id in ["t7", "t8", "t9"] {
        assert!(kept.contains(&id.to_owned()), "{kept:?}");
    }

    // The newest is kept whatever it weighs; it alone.
    store
        .end("live", heavy_end(30, 1), Durability::Lazy)
        .await
        .expect("end");
    let kept: Vec<String> = all(&store).await.into_iter().map(|r| r.task_id).collect();
    assert_eq!(kept, ["live"]);
}

#[tokio::test]
async fn writes_past_the_queues_bytes_while_the_store_opens_are_dropped() {
    let dir = tempfile::tempdir().expect("dir");
    let bounded = StoreOptions {
        queue_bytes: 64 << 10,
        ..options()
    };
    let (open, store) = opening_later(&dir.path().join("tasks.db"), bounded);
    let _ = store.start(heavy("a", 40), Durability::Lazy);
    let second = store.start(heavy("b", 40), Durability::Durable).await;
    assert!(
        matches!(second, Err(StoreError::FullBytes(65_536))),
        "{second:?}"
    );
    let _ = store.start(heavy("c", 1), Durability::Lazy);
    assert_eq!(store.health().lost_writes, 1);

    open.send(()).expect("gate");
    let _ = store.get("a").await; // once it is open
    store.flush().await.expect("flush");
    assert!(store.get("a").await.expect("get").is_some());
    assert!(store.get("b").await.expect("get").is_none());
    assert!(store.get("c").await.expect("get").is_some());
}

#[tokio::test]
async fn a_store_of_schema_1_is_upgraded_and_its_live_calls_are_orphans() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tasks.db");
    let store = SqliteStore::open(&path, options()).expect("open");
    let _ = some_live_calls(&store).await;
    drop(store);
    // What a store of schema 1 looked like: no host_id.
    let conn = rusqlite::Connection::open(&path).expect("open by hand");
    conn.execute_batch("ALTER TABLE tasks DROP COLUMN host_id; PRAGMA user_version = 1;")
        .expect("back to schema 1");
    drop(conn);

    let store = SqliteStore::open(&path, options()).expect("upgrade");
    assert_eq!(store.mark_orphans(at(50)).await, Ok(3));
    let _ = store.start(
        record("new", "s", "t", CallStatus::Running, 60),
        Durability::Lazy,
    );
    store.flush().await.expect("flush");
    assert_eq!(store.mark_orphans(at(70)).await, Ok(0));
}

/// A store whose disk is held back: every flush and durable write waits
/// until the test calls [`Held::release`], so a test sees what waits for
/// the disk and what does not. Records go to a [`MemoryStore`].
#[derive(Debug)]
struct Held {
    inner: MemoryStore,
    /// The task ids started so far.
    started: std::sync::Mutex<Vec<String>>,
    held: std::sync::Mutex<Vec<HeldTicket>>,
    /// How many tickets are held, to wait on.
    count: tokio::sync::watch::Sender<usize>,
}

/// A ticket held back by [`Held`].
#[derive(Debug)]
struct HeldTicket {
    /// The task ids started before it.
    covers: Vec<String>,
    /// The inner store's ticket.
    inner: Ticket,
    /// Resolves the ticket the caller has.
    answer: oneshot::Sender<Result<(), StoreError>>,
}

impl Held {
    fn new() -> Self {
        Held {
            inner: MemoryStore::new(options()),
            started: Default::default(),
            held: Default::default(),
            count: tokio::sync::watch::Sender::new(0),
        }
    }

    fn hold(&self, ticket: Ticket) -> Ticket {
        let (answer, held) = Ticket::waiting();
        let covers = self.started.lock().expect("lock").clone();
        let mut list = self.held.lock().expect("lock");
        list.push(HeldTicket {
            covers,
            inner: ticket,
            answer,
        });
        self.count.send_replace(list.len());
        held
    }

    /// Once a ticket is held.
    async fn waiting(&self) {
        let mut count = self.count.subscribe();
        let _ = count.wait_for(|n| *n > 0).await;
    }

    /// Let the held tickets resolve; what each covered: the task ids
    /// started before it.
    async fn release(&self) -> Vec<Vec<String>> {
        let held = std::mem::take(&mut *self.held.lock().expect("lock"));
        self.count.send_replace(0);
        let mut covered = Vec::new();
        for h in held {
            let _ = h.answer.send(h.inner.await);
            covered.push(h.covers);
        }
        covered
    }
}

impl TaskStore for Held {
    fn start(&self, record: TaskRecord, durability: Durability) -> Ticket {
        self.started
            .lock()
            .expect("lock")
            .push(record.task_id.clone());
        let ticket = self.inner.start(record, durability);
        match durability {
            Durability::Lazy => ticket,
            Durability::Durable => self.hold(ticket),
        }
    }

    fn running(&self, task_id: &str, at: SystemTime) {
        self.inner.running(task_id, at)
    }

    fn update(&self, task_id: &str, update: UpdateRecord, fuel_used: u64) {
        self.inner.update(task_id, update, fuel_used)
    }

    fn end(&self, task_id: &str, end: CallEnd, durability: Durability) -> Ticket {
        let ticket = self.inner.end(task_id, end, durability);
        match durability {
            Durability::Lazy => ticket,
            Durability::Durable => self.hold(ticket),
        }
    }

    fn flush(&self) -> Ticket {
        self.hold(self.inner.flush())
    }

    fn settle(&self) -> Ticket {
        self.inner.settle()
    }

    fn get<'a>(
        &'a self,
        task_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<TaskRecord>, StoreError>> {
        self.inner.get(task_id)
    }

    fn list<'a>(
        &'a self,
        filter: &'a Filter,
    ) -> BoxFuture<'a, Result<Vec<TaskRecord>, StoreError>> {
        self.inner.list(filter)
    }

    fn summaries(
        &self,
        since: SystemTime,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<CallSummary>, StoreError>> {
        self.inner.summaries(since, limit)
    }

    fn mark_orphans(&self, found_at: SystemTime) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.inner.mark_orphans(found_at)
    }

    fn prune(
        &self,
        retention: Retention,
        now: SystemTime,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.inner.prune(retention, now)
    }

    fn health(&self) -> Health {
        self.inner.health()
    }
}

/// A host keeping its records in `store`, serving the behaviour test
/// plugin (built by `tools/build-plugins`).
async fn host_over(store: std::sync::Arc<Held>) -> (crate::Host, tempfile::TempDir) {
    let folder = tempfile::tempdir().expect("temp dir");
    crate::testing::copy_test_plugin("behave", folder.path());
    let mut config = crate::HostConfig::default();
    config.engine.instances = 64;
    config.cache_dir = Some(crate::testing::root().join("target/toolhost-test-cache"));
    config.store = Some(store);
    let host = crate::Host::new(config).expect("host");
    let report = host.load_dir(folder.path()).await.expect("load");
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    (host, folder)
}

/// The answer of `call` once the store's disk is let go, after checking
/// that it did not come before: a held flush or durable write, with the
/// answer not out, then the answer; and that what was held covered the
/// call's record.
async fn answered_after_the_disk(
    store: &Held,
    mut call: tokio::task::JoinHandle<crate::Answer>,
) -> crate::Answer {
    const WAIT: Duration = Duration::from_secs(30);
    tokio::time::timeout(WAIT, async {
        tokio::select! {
            biased;
            answer = &mut call => panic!(
                "the answer reached the caller before its record was on disk: {answer:?}"
            ),
            () = store.waiting() => {}
        }
    })
    .await
    .expect("neither an answer nor a write to disk");
    // The disk is held: the answer cannot be out.
    assert!(!call.is_finished(), "answered while the disk was held");
    let covered = store.release().await;
    let answer = tokio::time::timeout(WAIT, call)
        .await
        .expect("an answer once the disk is let go")
        .expect("join");
    let task_id = answer.task_id.clone().expect("a task id");
    assert!(
        covered.iter().any(|ids| ids.contains(&task_id)),
        "what was held covered the call's record: {covered:?}"
    );
    answer
}

/// B31: an answer that says a call goes on in the background (released by
/// its first update, queued behind a duplicate, or started fire and
/// forget) reaches the caller only
/// once the call's record is on disk; an answer at the call's end does not
/// wait for the disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b31_an_answer_that_a_call_goes_on_waits_until_its_record_is_durable() {
    use crate::{AnswerKind, EventKind};
    let store = std::sync::Arc::new(Held::new());
    let (host, _folder) = host_over(store.clone()).await;
    let session = host.open_session(Default::default());
    let spawn = |call_id: &'static str, tool: &'static str, arguments: &'static str| {
        let session = session.clone();
        tokio::spawn(async move { session.call(call_id, tool, arguments).await })
    };

    // Inline: answered with its result, no disk waited for.
    let answer = session.call("c0", "ok", "{}").await;
    assert_eq!(answer.kind, AnswerKind::Result, "{}", answer.output);
    assert_eq!(
        *store.count.borrow(),
        0,
        "an inline answer waited for the disk"
    );

    // Released by its first update.
    let call = spawn("c1", "progress", r#"{"n": 2, "sleep_ms": 600000}"#);
    let answer = answered_after_the_disk(&store, call).await;
    assert_eq!(answer.kind, AnswerKind::Released, "{}", answer.output);

    // Queued behind a running duplicate.
    let mut events = session.subscribe();
    let _running = spawn("c2", "queue_me", r#"{"ms": 600000}"#);
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(e) = events.recv().await {
            if e.call_id == "c2" && matches!(e.kind, EventKind::Started) {
                return;
            }
        }
        panic!("the event stream ended");
    })
    .await
    .expect("c2 started");
    let call = spawn("c3", "queue_me", r#"{"ms": 1}"#);
    let answer = answered_after_the_disk(&store, call).await;
    assert_eq!(answer.kind, AnswerKind::Queued, "{}", answer.output);

    // Started: fire and forget.
    let call = spawn("c4", "fire", r#"{"ms": 600000}"#);
    let answer = answered_after_the_disk(&store, call).await;
    assert_eq!(answer.kind, AnswerKind::Started, "{}", answer.output);
}

/// A store whose opening waits for the returned sender, then opens SQLite
/// at `path`.
fn opening_later(path: &Path, options: StoreOptions) -> (oneshot::Sender<()>, Arc<OpeningStore>) {
    let (open, gate) = oneshot::channel::<()>();
    let path = path.to_owned();
    let store = OpeningStore::spawn(
        async move {
            let _ = gate.await;
            Arc::new(SqliteStore::open(&path, StoreOptions::default()).expect("open"))
                as Arc<dyn TaskStore>
        },
        options,
        SetUpGate::opened(),
    );
    (open, store)
}

#[tokio::test]
async fn writes_made_while_the_store_opens_reach_it_in_order() {
    use futures::FutureExt;
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("tasks.db");
    let (open, store) = opening_later(&path, options());

    let t1 = record("t1", "s1", "fire", CallStatus::Running, 1);
    let started = store.start(t1.clone(), Durability::Durable);
    let update = UpdateRecord {
        at: at(2),
        message: "half".into(),
    };
    store.update("t1", update.clone(), 5);
    let ended = store.end("t1", done(3), Durability::Durable);
    let t2 = record("t2", "s1", "fire", CallStatus::Running, 4);
    let _ = store.start(t2.clone(), Durability::Lazy);
    assert_eq!(store.health().store, "opening");
    // The gate is shut: no write can have reached a store, and a read
    // waits for it.
    let mut started = started.into_future();
    assert!((&mut started).now_or_never().is_none());
    assert!(store.get("t1").now_or_never().is_none());

    open.send(()).expect("gate");
    started.await.expect("start kept");
    ended.await.expect("end kept");
    let mut want = ended_as(t1, &done(3), update);
    want.call.fuel_used = done(3).fuel_used;
    let got = store.get("t1").await.expect("get").expect("t1 kept");
    assert_eq!(got, want, "start, update and end applied in order");
    assert_eq!(store.health().store, "sqlite");
    store.flush().await.expect("flush");

    let reader = SqliteStore::open(&path, options()).expect("reopen");
    assert_eq!(reader.get("t2").await.expect("get"), Some(t2));
}

/// `record` with `update`, then as `end` leaves it.
fn ended_as(mut record: TaskRecord, end: &CallEnd, update: UpdateRecord) -> TaskRecord {
    record.call.updates.push(update);
    ended(record, end)
}

#[tokio::test]
async fn writes_past_the_queue_while_the_store_opens_are_dropped_and_counted() {
    let dir = tempfile::tempdir().expect("dir");
    let bounded = StoreOptions {
        queue: 2,
        ..options()
    };
    let (open, store) = opening_later(&dir.path().join("tasks.db"), bounded);
    for id in ["t1", "t2"] {
        let _ = store.start(
            record(id, "s1", "fire", CallStatus::Running, 1),
            Durability::Lazy,
        );
    }
    let third = store
        .start(
            record("t3", "s1", "fire", CallStatus::Running, 1),
            Durability::Durable,
        )
        .await;
    assert!(matches!(third, Err(StoreError::Full(2))), "{third:?}");
    assert_eq!(store.health().lost_writes, 1);

    // A flush is queued too, so it is refused as well.
    assert!(matches!(store.flush().await, Err(StoreError::Full(2))));

    open.send(()).expect("gate");
    let _ = store.get("t1").await; // once it is open
    store.flush().await.expect("flush");
    assert!(store.get("t2").await.expect("get").is_some());
    assert!(store.get("t3").await.expect("get").is_none());
    assert_eq!(store.health().lost_writes, 1, "still counted once open");
}

#[tokio::test]
async fn the_ends_of_starts_dropped_while_the_store_opens_are_not_warned_of() {
    warnings();
    let unique = new_task_id();
    let dir = tempfile::tempdir().expect("dir");
    // Room for a few writes, but not for a large one.
    let bounded = StoreOptions {
        queue: 8,
        queue_bytes: 16 * 1024,
        ..options()
    };
    let (open, store) = opening_later(&dir.path().join("tasks.db"), bounded);
    let kept = format!("kept-{unique}");
    let _ = store.start(
        record(&kept, "s1", "t", CallStatus::Running, 1),
        Durability::Lazy,
    );
    // Two starts too large for what the queue may hold are dropped (which
    // is logged once); their ends are small enough to be queued.
    let [early, late] = [0, 1].map(|i| format!("dropped-{i}-{unique}"));
    for id in [&early, &late] {
        let mut big = record(id, "s1", "t", CallStatus::Running, 1);
        big.call.arguments = json!({ "text": "x".repeat(32 * 1024) }).into();
        let dropped = store.start(big, Durability::Durable).await;
        assert!(
            matches!(dropped, Err(StoreError::FullBytes(_))),
            "{dropped:?}"
        );
    }
    // One ends while the store is still opening: refused at once, not
    // queued for the store to warn of once it opens.
    let refused = store.end(&early, done(2), Durability::Lazy).await;
    assert!(
        matches!(refused, Err(StoreError::Refused { .. })),
        "{refused:?}"
    );

    open.send(()).expect("gate");
    let _ = store.get(&kept).await; // once it is open
    store.flush().await.expect("flush");
    store
        .end(&kept, done(2), Durability::Durable)
        .await
        .expect("kept");
    // The other ends once it is open: refused too, not sent on to the
    // store to be warned of.
    let refused = store.end(&late, done(3), Durability::Durable).await;
    assert!(
        matches!(refused, Err(StoreError::Refused { .. })),
        "{refused:?}"
    );
    assert!(
        !warned_of(&early) && !warned_of(&late),
        "dropped starts' ends are not warned of"
    );
    let record = store.get(&kept).await.expect("get").expect("kept");
    assert_eq!(record.call.status, CallStatus::Done);
    assert_eq!(store.health().lost_writes, 2, "the two starts");

    // Once: a second end of a dropped start goes on to the store, which
    // warns of it as of any stray end.
    let again = store.end(&late, done(4), Durability::Durable).await;
    assert!(
        matches!(again, Err(StoreError::Refused { .. })),
        "{again:?}"
    );
    assert!(warned_of(&late), "a second end is warned of");
}

fn no_disk() -> Arc<dyn TaskStore> {
    panic!("no disk")
}

#[tokio::test]
async fn an_opening_that_panics_leaves_a_memory_store_that_says_so() {
    let store = OpeningStore::spawn(async { no_disk() }, options(), SetUpGate::opened());
    let t1 = record("t1", "s1", "fire", CallStatus::Running, 1);
    store
        .start(t1.clone(), Durability::Durable)
        .await
        .expect("kept in memory");
    let health = store.health();
    assert_eq!(health.store, "memory");
    assert!(
        health
            .problem
            .as_deref()
            .is_some_and(|p| p.contains("failed")),
        "{health:?}"
    );
    assert_eq!(store.get("t1").await.expect("get"), Some(t1));
}

/// The store begins to open when the host lets it (its start is announced)
/// or when it is first used, whichever comes first; before that its
/// opening has not begun, and a flush does not begin it; a host dropped
/// first abandons it (see `crate::startup`). On a paused clock: a wait
/// gives every task its turn.
#[tokio::test(start_paused = true)]
async fn an_opening_store_begins_to_open_when_let_or_first_used() {
    use tokio::sync::oneshot::error::TryRecvError;
    let opening = |gate: SetUpGate| {
        let (begins, begun) = oneshot::channel::<()>();
        let store = OpeningStore::spawn(
            async move {
                let _ = begins.send(());
                Arc::new(MemoryStore::new(options())) as Arc<dyn TaskStore>
            },
            options(),
            gate,
        );
        (store, begun)
    };
    // The opening sends first thing: nothing sent (the opening waits, or
    // was dropped unpolled) is an opening not begun.
    let not_yet = |begun: &mut oneshot::Receiver<()>, what: &str| {
        let sent = begun.try_recv();
        assert!(
            matches!(sent, Err(TryRecvError::Empty | TryRecvError::Closed)),
            "begun before {what}"
        );
    };
    let begins = |begun: oneshot::Receiver<()>| async move {
        let begun = tokio::time::timeout(Duration::from_secs(5), begun).await;
        begun.is_ok_and(|sent| sent.is_ok())
    };
    let a_while = || tokio::time::sleep(Duration::from_secs(1));

    // Let by the host; a flush before that is answered without it.
    let gate = SetUpGate::default();
    let (store, mut begun) = opening(gate.clone());
    store.flush().await.expect("nothing to flush");
    a_while().await;
    not_yet(&mut begun, "it was let");
    assert_eq!(store.health().store, "opening");
    gate.open();
    assert!(begins(begun).await, "the gate begins the opening");
    store.flush().await.expect("flush");
    assert_eq!(store.health().store, "memory");

    // A read.
    let (store, mut begun) = opening(SetUpGate::default());
    a_while().await;
    not_yet(&mut begun, "it was used");
    let read = tokio::time::timeout(Duration::from_secs(5), store.get("t1")).await;
    assert_eq!(read.expect("a read opens the store").expect("get"), None);
    assert!(begins(begun).await, "a read begins the opening");

    // A lazy write, which nobody waits for.
    let (store, begun) = opening(SetUpGate::default());
    let t1 = record("t1", "s1", "fire", CallStatus::Running, 1);
    store
        .start(t1.clone(), Durability::Lazy)
        .await
        .expect("queued");
    assert!(begins(begun).await, "a write begins the opening");
    assert_eq!(store.get("t1").await.expect("get"), Some(t1));

    // Its host dropped before anything used it: its opening never begins,
    // and whoever still holds it reads an empty store that says why.
    let gate = SetUpGate::default();
    let (store, mut begun) = opening(gate.clone());
    drop(gate.abandon_on_drop());
    a_while().await;
    assert_eq!(store.get("t1").await.expect("get"), None);
    not_yet(&mut begun, "anything used it");
    let health = store.health();
    assert!(
        (health.problem.as_deref()).is_some_and(|p| p.contains("dropped before")),
        "{health:?}"
    );
}

/// What was written while the store opened reaches it even when its last
/// holder lets go of it before it is open: a durable write's ticket still
/// resolves once the store has the write.
#[tokio::test]
async fn writes_made_while_the_store_opens_reach_it_when_its_holder_lets_go() {
    let memory = Arc::new(MemoryStore::new(options()));
    let (open, gate) = oneshot::channel::<()>();
    let store = {
        let memory = memory.clone();
        OpeningStore::spawn(
            async move {
                let _ = gate.await;
                memory as Arc<dyn TaskStore>
            },
            options(),
            SetUpGate::opened(),
        )
    };
    let t1 = record("t1", "s1", "fire", CallStatus::Running, 1);
    let ticket = store.start(t1.clone(), Durability::Durable);
    drop(store);
    open.send(()).expect("opening");
    let kept = tokio::time::timeout(Duration::from_secs(5), ticket).await;
    kept.expect("answered").expect("kept");
    assert_eq!(memory.get("t1").await.expect("get"), Some(t1));
}
