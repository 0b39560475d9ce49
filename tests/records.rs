//! Lasting task records (B31) through the real `toolhost`: calls recorded
//! by `serve` outlast a SIGKILL, the next host marks the ones that were
//! running as interrupted, `toolhost tasks` reads them, a task id reads one
//! from another connection, a broken store leaves the host serving, and
//! `[records]` prunes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::common::stdio::Server;
use crate::common::{Folder, test_plugin, toolhost};

/// The behaviour plugin, with room for 100 calls at once.
fn folder() -> Folder {
    let folder = Folder::new();
    folder.add_with_manifest(
        &test_plugin("behave"),
        "behave",
        "[limits]\nmax-concurrency = 128\n",
    );
    folder
}

/// The plugin folder, and a new folder for a task store at the returned
/// path (gone with the `TempDir`).
fn fresh() -> (Folder, tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("tasks.db");
    (folder(), dir, state)
}

fn state_args(state: &Path) -> Vec<String> {
    vec!["--state".into(), state.display().to_string()]
}

fn start(folder: &Folder, state: &Path) -> Server {
    let args = state_args(state);
    Server::start(
        folder.path(),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
}

/// `toolhost tasks --json` over `state`: the records by task id.
fn records(state: &Path) -> BTreeMap<String, Value> {
    let state = state.display().to_string();
    let (ok, out, err) = toolhost(&["--state", &state, "tasks", "--json", "--limit", "1000"]);
    assert!(ok, "toolhost tasks failed: {err}");
    let list: Vec<Value> = serde_json::from_str(&out).expect("tasks --json is JSON");
    list.into_iter()
        .map(|r| (r["task_id"].as_str().expect("task_id").to_owned(), r))
        .collect()
}

/// The task id an answer carries in `_meta`.
fn task_id(answer: &Value) -> String {
    answer["result"]["_meta"][toolhost::mcp::TASK_ID_KEY]
        .as_str()
        .unwrap_or_else(|| panic!("no task id in {answer}"))
        .to_owned()
}

/// The status tool's answer for `id` (a call_id of the session, or a task id).
fn task_status(host: &mut Server, id: &str) -> Value {
    host.call("toolhost_task_status", json!({ "call_id": id }))
        .pop()
        .expect("answer")
}

fn text(answer: &Value) -> String {
    answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn status(record: &Value) -> &str {
    record["status"].as_str().unwrap_or_default()
}

#[test]
fn b31_calls_running_when_the_host_is_killed_are_interrupted_after_a_restart() {
    let (folder, _dir, state) = fresh();
    let mut host = start(&folder, &state);

    // Five calls that end, then 100 that answer with their first update
    // and go on for ten minutes.
    let mut finished = Vec::new();
    for _ in 0..5 {
        let answer = host.call("data", json!({ "n": 2 })).pop().expect("answer");
        finished.push(task_id(&answer));
    }
    let requests: Vec<Value> = (0..100)
        .map(|_| {
            host.request(
                "tools/call",
                json!({ "name": "progress", "arguments": { "n": 2, "sleep_ms": 600_000 } }),
            )
        })
        .collect();
    let mut running = Vec::new();
    for answer in host.wait_for_all(&requests) {
        assert!(text(&answer).contains("step 1 of 2"), "{answer}");
        running.push(task_id(&answer));
    }
    host.kill();

    // Recorded before the answers went out: the released calls are durable.
    let before = records(&state);
    assert_eq!(before.len(), 105);
    for id in &running {
        assert_eq!(status(&before[id]), "running", "{}", before[id]);
    }
    for id in &finished {
        assert_eq!(status(&before[id]), "done", "{}", before[id]);
        assert_eq!(before[id]["result"]["data"], json!({ "n": 2, "double": 4 }));
    }

    // The next host finds the calls of the killed one: a client that
    // kept a task id reads its call from the new host (which serves
    // while its store opens, and answers once the store is open and the
    // calls of the killed host are marked).
    let mut host = start(&folder, &state);
    let answer = task_status(&mut host, &running[0]);
    let record = &answer["result"]["structuredContent"];
    assert_eq!(status(record), "interrupted", "{answer}");
    assert_eq!(record["task_id"], running[0]);

    // The file then holds them as interrupted, and nothing else changed.
    let after = records(&state);
    assert_eq!(after.len(), 105, "nothing added or lost");
    for (id, record) in &after {
        let mut was = before[id].clone();
        let mut now = record.clone();
        if running.contains(id) {
            assert_eq!(status(record), "interrupted", "{record}");
            assert!(record["interrupted_at"].is_string(), "{record}");
            assert_eq!(record["updates"][0]["message"], "step 1 of 2");
            for field in ["status", "interrupted_at"] {
                was.as_object_mut().expect("object").remove(field);
                now.as_object_mut().expect("object").remove(field);
            }
        }
        assert_eq!(now, was, "nothing else changed");
    }

    // The call_id of the old session finds nothing here.
    let old_call_id = before[&running[0]]["call_id"].as_str().expect("call_id");
    let answer = task_status(&mut host, old_call_id);
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    let answer = host
        .call("toolhost_running_tasks", json!({}))
        .pop()
        .expect("answer");
    assert_eq!(
        answer["result"]["structuredContent"],
        json!({ "tasks": [] })
    );

    // And a person reads it with `toolhost tasks show`.
    let state_arg = state.display().to_string();
    let (ok, out, err) = toolhost(&["--state", &state_arg, "tasks", "show", &running[0]]);
    assert!(ok, "{err}");
    assert!(out.contains("status    interrupted"), "{out}");
    assert!(out.contains("step 1 of 2"), "{out}");
    let (ok, out, err) = toolhost(&["--state", &state_arg, "tasks", "--status", "done"]);
    assert!(ok, "{err}");
    assert_eq!(
        out.lines().count(),
        1 + 5,
        "a header and five calls:\n{out}"
    );

    // By tool, and by session: one call in the new host's session beside
    // the 105 of the killed host's. It goes on after its answer, so its
    // record is on disk before the answer (what a reader in another
    // process needs to see it without waiting).
    let answer = host
        .call("progress", json!({ "n": 2, "sleep_ms": 600_000 }))
        .pop()
        .expect("answer");
    let new_call = task_id(&answer);
    let ids = |filter: &[&str]| -> Vec<String> {
        let mut args = vec!["--state", &state_arg, "tasks", "--json", "--limit", "1000"];
        args.extend_from_slice(filter);
        let (ok, out, err) = toolhost(&args);
        assert!(ok, "toolhost tasks {filter:?} failed: {err}");
        let list: Vec<Value> = serde_json::from_str(&out).expect("tasks --json is JSON");
        let mut ids: Vec<String> = list
            .iter()
            .map(|r| r["task_id"].as_str().expect("task_id").to_owned())
            .collect();
        ids.sort();
        ids
    };
    let mut data_calls = finished.clone();
    data_calls.sort();
    assert_eq!(ids(&["--tool", "data"]), data_calls);
    let mut progress_calls = running.clone();
    progress_calls.push(new_call.clone());
    progress_calls.sort();
    assert_eq!(ids(&["--tool", "progress"]), progress_calls);
    let old_session = before[&running[0]]["session_id"]
        .as_str()
        .expect("session_id")
        .to_owned();
    let mut old_calls: Vec<String> = before.keys().cloned().collect();
    old_calls.sort();
    assert_eq!(ids(&["--session", &old_session]), old_calls);
    let new_session = records(&state)[&new_call]["session_id"]
        .as_str()
        .expect("session_id")
        .to_owned();
    assert_ne!(new_session, old_session);
    assert_eq!(ids(&["--session", &new_session]), vec![new_call]);
    running.sort();
    assert_eq!(
        ids(&["--session", &old_session, "--tool", "progress"]),
        running
    );
}

#[test]
fn b31_the_result_of_a_finished_call_is_read_by_its_task_id_after_a_restart() {
    let (folder, _dir, state) = fresh();
    let mut host = start(&folder, &state);
    let answer = host
        .call("update_then_data", json!({}))
        .pop()
        .expect("answer");
    let id = task_id(&answer);
    // Released by its update; it ends 50 ms later.
    let record = loop {
        let answer = task_status(&mut host, &id);
        let record = answer["result"]["structuredContent"].clone();
        if status(&record) != "running" {
            break record;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status(&record), "done");
    assert_eq!(host.terminate().code(), Some(0));

    let mut host = start(&folder, &state);
    let answer = task_status(&mut host, &id);
    let after = &answer["result"]["structuredContent"];
    assert_eq!(status(after), "done", "{answer}");
    assert_eq!(after["result"]["data"], json!({ "steps": 1 }));
    assert_eq!(after["updates"][0]["message"], "step 1 of 1");
    // A guess is not a task id.
    let answer = task_status(&mut host, "00000000-0000-4000-8000-000000000000");
    assert_eq!(answer["result"]["isError"], true, "{answer}");
}

/// B31: a call answered with its end is read by its task id at once,
/// although its record is written lazily: the status tool commits what
/// waits in the store's gathering window before it reads.
#[test]
fn b31_a_call_answered_with_its_end_is_read_by_its_task_id_at_once() {
    let (folder, _dir, state) = fresh();
    let mut host = start(&folder, &state);
    for n in 0..5 {
        let answer = host.call("data", json!({ "n": n })).pop().expect("answer");
        let id = task_id(&answer);
        let answer = task_status(&mut host, &id);
        let record = &answer["result"]["structuredContent"];
        assert_eq!(status(record), "done", "{answer}");
        assert_eq!(record["result"]["data"], json!({ "n": n, "double": 2 * n }));
    }
    assert_eq!(host.terminate().code(), Some(0));
}

#[test]
fn a_broken_store_is_reported_by_name_and_the_host_serves_from_memory() {
    let folder = folder();
    let dir = tempfile::tempdir().expect("temp dir");
    let plugins = folder.path().display().to_string();

    let corrupt = dir.path().join("corrupt.db");
    std::fs::write(&corrupt, vec![0x5a; 8192]).expect("write");
    // A folder whose place a file takes (a read-only folder is the next
    // test's: root writes there anyway).
    let blocker = dir.path().join("state");
    std::fs::write(&blocker, "a file").expect("write");
    let unwritable = blocker.join("tasks.db");

    for (state, reason) in [
        (&corrupt, "not a SQLite file"),
        (&unwritable, "cannot create the folder"),
    ] {
        let state = state.display().to_string();
        let (ok, out, err) = toolhost(&["--state", &state, "--plugins", &plugins, "call", "ok"]);
        assert!(ok, "the call is served: {err}");
        assert!(out.contains("ok"), "{out}");
        assert!(err.contains(&state), "names the file: {err}");
        assert!(err.contains(reason), "says why: {err}");
        assert!(
            err.contains("will not be kept"),
            "says what it means: {err}"
        );
    }
    // The corrupt file is left as it was, for its owner to look at.
    assert_eq!(std::fs::read(&corrupt).expect("read"), vec![0x5a; 8192]);
}

/// `setpriv` turning root into `nobody`, so that a folder's mode binds.
const AS_NOBODY: [&str; 3] = ["--reuid=65534", "--regid=65534", "--clear-groups"];

#[test]
fn a_read_only_state_folder_is_reported_by_name_and_the_host_serves_from_memory() {
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;
    let mode = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    let folder = folder();
    mode(folder.path(), 0o755);
    let dir = tempfile::tempdir().expect("temp dir");
    mode(dir.path(), 0o755);
    let read_only = dir.path().join("state");
    std::fs::create_dir(&read_only).expect("mkdir");
    mode(&read_only, 0o555);
    let state = read_only.join("tasks.db");

    // Root writes into a read-only folder anyway (and the tests may run as
    // root, as CI does): then toolhost runs as `nobody`, for whom the mode
    // binds, from a copy it can read if the build's own is out of its reach.
    let mut bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_toolhost"));
    let privileged = std::fs::write(read_only.join("probe"), "").is_ok();
    let _ = std::fs::remove_file(read_only.join("probe"));
    let run = |bin: &Path| {
        let mut command = if privileged {
            let mut c = Command::new("setpriv");
            c.args(AS_NOBODY).arg(bin);
            c
        } else {
            Command::new(bin)
        };
        command
            .env_clear()
            .env("HOME", dir.path())
            .env("PATH", "/usr/bin:/bin");
        command
    };
    if privileged {
        let reachable = Command::new("setpriv")
            .args(AS_NOBODY)
            .args(["test", "-x"])
            .arg(&bin)
            .status()
            .expect("setpriv (util-linux) runs the test as nobody");
        if !reachable.success() {
            let copy = dir.path().join("toolhost");
            std::fs::copy(&bin, &copy).expect("copy toolhost");
            mode(&copy, 0o755);
            bin = copy;
        }
    }

    // No compile cache: nobody may write the tests' one.
    let out = run(&bin)
        .arg("--state")
        .arg(&state)
        .arg("--plugins")
        .arg(folder.path())
        .args(["--no-cache", "call", "ok"])
        .output()
        .expect("run toolhost");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "the call is served: {stderr}");
    assert!(stdout.contains("ok"), "{stdout}");
    assert!(
        stderr.contains(&state.display().to_string()),
        "names the file: {stderr}"
    );
    assert!(stderr.contains("cannot be written"), "says why: {stderr}");
    assert!(
        stderr.contains("will not be kept"),
        "says what it means: {stderr}"
    );
    assert!(!state.exists(), "nothing was written");
}

#[test]
fn records_keeps_the_newest_finished_calls_up_to_its_max() {
    let (folder, dir, state) = fresh();
    let mut host = start(&folder, &state);
    let made: Vec<String> = (0..5)
        .map(|_| task_id(&host.call("ok", json!({})).pop().expect("answer")))
        .collect();
    assert_eq!(host.terminate().code(), Some(0));
    assert_eq!(records(&state).len(), 5);

    let config = dir.path().join("toolhost.toml");
    std::fs::write(&config, "[records]\nmax = 2\nkeep = \"30d\"\n").expect("write");
    let (config, state_arg) = (config.display().to_string(), state.display().to_string());
    let plugins = folder.path().display().to_string();
    // A host prunes when it opens the store, before its first call.
    let (ok, _, err) = toolhost(&[
        "--config",
        &config,
        "--state",
        &state_arg,
        "--plugins",
        &plugins,
        "call",
        "ok",
    ]);
    assert!(ok, "{err}");
    let kept = records(&state);
    assert_eq!(kept.len(), 3, "{kept:#?}");
    assert!(kept.contains_key(&made[3]) && kept.contains_key(&made[4]));
    assert!(!made[..3].iter().any(|id| kept.contains_key(id)));
}
