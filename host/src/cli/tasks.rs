//! `toolhost tasks`: the history of calls from the task store (B31), and
//! the store that `serve` and `call` keep their records in.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use toolhost::store::{
    Filter, MemoryStore, Retention, SqliteStore, StoreOptions, TaskRecord, TaskStore,
    open_or_memory,
};
use toolhost::{CallStatus, Output};

#[derive(Subcommand)]
pub enum TasksCommand {
    /// Show one call: its arguments, every update, its result or error.
    Show {
        /// The task id (`toolhost tasks` lists them).
        id: String,
        /// Print the record as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Which calls `toolhost tasks` lists.
#[derive(Args)]
pub struct TasksFilter {
    /// Print JSON: one array of records.
    #[arg(long)]
    json: bool,
    /// Only calls with this status: queued, running, done, error,
    /// cancelled or interrupted.
    #[arg(long)]
    status: Option<CallStatus>,
    /// Only calls of this tool.
    #[arg(long)]
    tool: Option<String>,
    /// Only calls of this session.
    #[arg(long)]
    session: Option<String>,
    /// At most this many calls.
    #[arg(long, default_value_t = toolhost::store::DEFAULT_LIST_LIMIT)]
    limit: usize,
}

/// The store of a host that runs calls: the SQLite file at `path`, or
/// memory when there is none (`--no-state`) or it cannot be opened (said
/// in the log; the host serves either way). Calls a stopped host left
/// running or queued are marked interrupted (B31). The file is opened on a
/// blocking thread: a new one is synced several times.
pub async fn open_store(path: Option<PathBuf>, retention: Retention) -> Arc<dyn TaskStore> {
    let options = StoreOptions {
        retention,
        ..StoreOptions::default()
    };
    let Some(path) = path else {
        return Arc::new(MemoryStore::new(options));
    };
    // A panic here reaches `Host::opening`, which serves from memory and
    // says why.
    let file = path.clone();
    let store = tokio::task::spawn_blocking(move || open_or_memory(&file, options))
        .await
        .expect("opening the task store panicked");
    match store.mark_orphans(SystemTime::now()).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            path = %path.display(),
            "{n} calls were running or queued when the host stopped; marked interrupted"
        ),
        Err(e) => tracing::error!(error = %e, "cannot mark the calls of a stopped host"),
    }
    tracing::info!("{}", store.health());
    store
}

/// `toolhost tasks [show ID]`.
pub async fn tasks(
    path: Option<&Path>,
    show: Option<&TasksCommand>,
    filter: &TasksFilter,
) -> Result<ExitCode> {
    let path = path.context(
        "no task store to read: --no-state keeps none, and this system has no data folder \
         (give one with --state PATH)",
    )?;
    if !path.exists() {
        eprintln!("no calls recorded yet ({} does not exist)", path.display());
        return Ok(match show {
            Some(_) => ExitCode::FAILURE,
            None => ExitCode::SUCCESS,
        });
    }
    // A reader: it never prunes, so it changes nothing a running host keeps.
    let store = SqliteStore::open(
        path,
        StoreOptions {
            prune_every: None,
            ..StoreOptions::default()
        },
    )?;
    match show {
        Some(TasksCommand::Show { id, json }) => {
            let Some(record) = store.get(id).await? else {
                eprintln!("error: no call with task id `{id}` in {}", path.display());
                return Ok(ExitCode::FAILURE);
            };
            if *json {
                println!("{}", serde_json::to_string_pretty(&record)?);
            } else {
                print_record(&record);
            }
        }
        None => {
            let records = store
                .list(&Filter {
                    status: filter.status,
                    tool: filter.tool.clone(),
                    session_id: filter.session.clone(),
                    limit: filter.limit,
                    ..Filter::default()
                })
                .await?;
            if filter.json {
                println!("{}", serde_json::to_string_pretty(&records)?);
            } else {
                print_table(&records);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(records: &[TaskRecord]) {
    if records.is_empty() {
        eprintln!("no calls");
        return;
    }
    let width = |f: fn(&TaskRecord) -> usize, title: &str| {
        records.iter().map(f).max().unwrap_or(0).max(title.len())
    };
    let tool_w = width(|r| r.call.tool.len(), "TOOL");
    let session_w = width(|r| r.call.session_id.len(), "SESSION");
    println!(
        "{:36}  {:11}  {:tool_w$}  {:session_w$}  {:20}  {:>9}  {:>14}  LAST UPDATE",
        "TASK", "STATUS", "TOOL", "SESSION", "STARTED", "ELAPSED", "FUEL"
    );
    for r in records {
        let c = &r.call;
        println!(
            "{:36}  {:11}  {:tool_w$}  {:session_w$}  {:20}  {:>9}  {:>14}  {}",
            r.task_id,
            c.status.as_str(),
            c.tool,
            c.session_id,
            humantime::format_rfc3339_seconds(c.started_at.unwrap_or(c.created_at)).to_string(),
            elapsed(r).map(seconds).unwrap_or_default(),
            c.fuel_used,
            c.updates
                .last()
                .map(|u| one_line(&u.message, 60))
                .unwrap_or_default(),
        );
    }
}

fn print_record(r: &TaskRecord) {
    let c = &r.call;
    println!("task      {}", r.task_id);
    println!("call      {} in session {}", c.call_id, c.session_id);
    println!("tool      {}", c.tool);
    println!("arguments {}", c.arguments);
    println!("status    {}", c.status.as_str());
    println!(
        "created   {}",
        humantime::format_rfc3339_millis(c.created_at)
    );
    if let Some(t) = c.started_at {
        println!("started   {}", humantime::format_rfc3339_millis(t));
    }
    if let Some(t) = c.ended_at {
        println!("ended     {}", humantime::format_rfc3339_millis(t));
    }
    if let Some(t) = r.interrupted_at {
        println!(
            "interrupted: the host stopped while it ran (found {})",
            humantime::format_rfc3339_millis(t)
        );
    }
    if let Some(d) = elapsed(r) {
        println!("elapsed   {}", seconds(d));
    }
    println!("fuel      {}", c.fuel_used);
    println!("updates   {}", c.updates.len() as u64 + r.updates_dropped);
    if r.updates_dropped > 0 {
        println!("  ({} older updates not kept)", r.updates_dropped);
    }
    for u in &c.updates {
        println!(
            "  {}  {}",
            humantime::format_rfc3339_millis(u.at),
            one_line(&u.message, 200)
        );
    }
    if let Some(Output { text, data }) = c.result.as_deref() {
        if let Some(text) = text {
            println!("result    {text}");
        }
        if let Some(data) = data {
            println!("data      {data}");
        }
    }
    if let Some(e) = &c.error {
        println!("error     {e}");
    }
}

/// How long the call ran: to its end, to now while it runs.
fn elapsed(r: &TaskRecord) -> Option<Duration> {
    let c = &r.call;
    let from = c.started_at?;
    let to = match c.status {
        CallStatus::Queued | CallStatus::Running => SystemTime::now(),
        _ => c.ended_at.or(r.interrupted_at)?,
    };
    to.duration_since(from).ok()
}

fn seconds(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

fn one_line(s: &str, max: usize) -> String {
    let line = s.lines().next().unwrap_or_default();
    match line.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_owned(),
    }
}
