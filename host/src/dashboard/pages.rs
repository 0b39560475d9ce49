//! The pages: what each shows, as HTML that reads without JavaScript.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde::Deserialize;
use serde_json::Value;

use super::Shared;
use super::figures;
use super::form::{self, RAW, Typed};
use crate::error::CallError;
use crate::records::{CallStatus, TaskRecord};
use crate::session::CancelError;
use crate::store::{Filter, StoreError};

/// Which page of the navigation a page is.
#[derive(Clone, Copy, PartialEq)]
enum Nav {
    Live,
    History,
    Plugins,
    None,
}

fn page(title: &str, nav: Nav, content: Markup) -> Markup {
    let link = |href: &str, label: &str, this: Nav| {
        html! { a href=(href) aria-current=[(nav == this).then_some("page")] { (label) } }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · toolhost" }
                link rel="stylesheet" href="/assets/dashboard.css";
                script src="/assets/dashboard.js" defer {}
            }
            body {
                header {
                    strong { "toolhost" }
                    nav aria-label="pages" {
                        (link("/", "Live calls", Nav::Live))
                        (link("/history", "History", Nav::History))
                        (link("/plugins", "Plugins and tools", Nav::Plugins))
                    }
                }
                main { h1 { (title) } (content) }
            }
        }
    }
}

/// A page that says what went wrong, with its status.
fn problem(status: StatusCode, title: &str, detail: &str) -> Response {
    (
        status,
        page(title, Nav::None, html! { p role="alert" { (detail) } }),
    )
        .into_response()
}

fn store_problem(e: StoreError) -> Response {
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "The task store cannot be read",
        &e.to_string(),
    )
}

pub(super) async fn not_found() -> Response {
    problem(StatusCode::NOT_FOUND, "Not found", "There is no such page.")
}

pub(super) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

pub(super) fn epoch_ms(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()
}

fn time(t: SystemTime) -> Markup {
    let text = rfc3339(t);
    html! { time datetime=(text) { (text.replace('T', " ")) } }
}

fn duration(d: Duration) -> String {
    // Milliseconds are enough to read; humantime would print nanoseconds.
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
}

fn status_badge(s: CallStatus) -> Markup {
    html! { span class={ "status status-" (s.as_str()) } { (s.as_str()) } }
}

/// Arguments on one line, cut to a length a table cell can show.
pub(super) fn short_json(v: &Value) -> String {
    const MAX: usize = 160;
    let text = v.to_string();
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// How long a call ran, or has run so far; `None` for one that never
/// started, or that a stopped host left without an end (interrupted: when
/// it stopped is not known).
fn ran(call: &crate::records::CallRecord) -> Option<Duration> {
    let start = call.started_at?;
    let end = match call.ended_at {
        Some(end) => end,
        None if call.status.is_live() => SystemTime::now(),
        None => return None,
    };
    end.duration_since(start).ok()
}

/// Read the newest records: calls (this dashboard's too) whose writes may
/// still wait in the store's queue. Committed, not synced: a page read
/// costs no disk sync.
pub(super) async fn settled(shared: &Shared) {
    if let Err(e) = shared.host.store().settle().await {
        tracing::debug!(error = %e, "dashboard: settling the store before a read failed");
    }
}

/// The call `task_id` from the task store, or the page that says why not.
async fn stored_call(shared: &Shared, task_id: &str) -> Result<TaskRecord, Response> {
    settled(shared).await;
    match shared.host.store().get(task_id).await {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err(problem(
            StatusCode::NOT_FOUND,
            "No such call",
            "The task store has no call with this id.",
        )),
        Err(e) => Err(store_problem(e)),
    }
}

/// The running and queued calls of every session, newest first.
pub(super) async fn live_records(shared: &Shared) -> Result<Vec<TaskRecord>, StoreError> {
    settled(shared).await;
    let mut all = Vec::new();
    for status in [CallStatus::Running, CallStatus::Queued] {
        let filter = Filter {
            status: Some(status),
            limit: 1000,
            ..Filter::default()
        };
        all.extend(shared.host.store().list(&filter).await?);
    }
    all.sort_by_key(|r| std::cmp::Reverse(r.call.created_at));
    Ok(all)
}

/// Which tools may be cancelled, by name: for the live view's buttons.
fn cancellable_tools(shared: &Shared) -> Vec<String> {
    shared
        .host
        .tools()
        .into_iter()
        .filter(|e| e.tool.cancellable)
        .map(|e| e.tool.name.clone())
        .collect()
}

fn cancel_button(task_id: &str) -> Markup {
    html! {
        form method="post" action={ "/calls/" (task_id) "/cancel" } {
            button type="submit" { "Cancel" }
        }
    }
}

pub(super) async fn live(State(shared): State<Arc<Shared>>) -> Response {
    let records = match live_records(&shared).await {
        Ok(r) => r,
        Err(e) => return store_problem(e),
    };
    let now = SystemTime::now();
    let since = now.checked_sub(figures::SPAN).unwrap_or(UNIX_EPOCH);
    let calls = match shared
        .host
        .store()
        .summaries(since, figures::MAX_CALLS)
        .await
    {
        Ok(c) => c,
        Err(e) => return store_problem(e),
    };
    let counted = figures::count(&calls, now);
    let cancellable = cancellable_tools(&shared);
    let tools_json = serde_json::to_string(&cancellable).unwrap_or_else(|_| "[]".into());
    let own = shared.session.id();
    let pool = *shared.host.instances().borrow();
    page(
        "Live calls",
        Nav::Live,
        html! {
            p.muted { "Running and queued calls of every session. This page follows them as they go." }
            script #cancellable type="application/json" { (PreEscaped(tools_json.replace("</", "<\\/"))) }
            table {
                thead { tr {
                    th { "Tool" } th { "Session" } th { "Arguments" } th { "Status" }
                    th.num { "Elapsed" } th.num { "Fuel so far" } th { "Latest update" }
                    th { span.muted { "Action" } }
                } }
                tbody #live data-own-session=(own) {
                    @for r in &records {
                        @let c = &r.call;
                        tr id={ "task-" (r.task_id) } {
                            td { a href={ "/calls/" (r.task_id) } { (c.tool) } }
                            td { code { (c.session_id) } @if c.session_id == own { " (here)" } }
                            td { code { (short_json(&c.arguments)) } }
                            td { (status_badge(c.status)) }
                            td.num data-since=(epoch_ms(c.started_at.unwrap_or(c.created_at))) {
                                (ran(c).map(duration).unwrap_or_default())
                            }
                            td.num.fuel { (c.fuel_used) }
                            td.latest { (c.updates.last().map(|u| u.message.as_str()).unwrap_or("")) }
                            td { @if cancellable.contains(&c.tool) { (cancel_button(&r.task_id)) } }
                        }
                    }
                }
            }
            p #live-empty hidden[!records.is_empty()] { "No call is running." }
            p.muted { "A running call's fuel is as of its latest update." }
            p #pool {
                "Instance pool: " (pool.held) " of " (pool.size) " in use"
                @if pool.waiting > 0 { ", " strong { (pool.waiting) " waiting for one" } }
                "."
            }
            (figures::section(&counted, calls.len(), now))
        },
    )
    .into_response()
}

#[derive(Debug, Deserialize)]
pub(super) struct HistoryQuery {
    tool: Option<String>,
    status: Option<String>,
    session: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
}

/// The spans offered for `since`; any other humantime span is taken too.
const SPANS: [(&str, &str); 3] = [
    ("1h", "the last hour"),
    ("1d", "the last day"),
    ("7d", "the last week"),
];

/// A time a history filter names: a span back from `now` (`1h`, `2d`), or a
/// UTC time (`2026-11-30 12:00`, `2026-11-30`, RFC 3339).
fn filter_time(text: &str, now: SystemTime) -> Result<SystemTime, String> {
    if let Ok(span) = humantime::parse_duration(text) {
        return Ok(now.checked_sub(span).unwrap_or(UNIX_EPOCH));
    }
    // humantime wants seconds; a date or a minute alone is filled in.
    let full = match text.len() {
        10 => format!("{text} 00:00:00"),
        16 => format!("{text}:00"),
        _ => text.to_owned(),
    };
    humantime::parse_rfc3339_weak(&full).map_err(|_| {
        format!(
            "`{text}` is neither a span back from now (1h, 2d) nor a time (2026-11-30 12:00, UTC)"
        )
    })
}

fn non_empty(s: &Option<String>) -> Option<String> {
    s.as_ref()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

pub(super) async fn history(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<HistoryQuery>,
) -> Response {
    let status = match non_empty(&q.status).map(|s| s.parse::<CallStatus>()) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => return problem(StatusCode::BAD_REQUEST, "Bad filter", &e),
    };
    let limit = q
        .limit
        .unwrap_or(shared.options.history_limit)
        .clamp(1, 1000);
    let now = SystemTime::now();
    let when = |text: &Option<String>| non_empty(text).map(|t| filter_time(&t, now)).transpose();
    let (since, until) = match (when(&q.since), when(&q.until)) {
        (Ok(since), Ok(until)) => (since, until),
        (Err(e), _) | (_, Err(e)) => return problem(StatusCode::BAD_REQUEST, "Bad filter", &e),
    };
    let filter = Filter {
        status,
        tool: non_empty(&q.tool),
        session_id: non_empty(&q.session),
        since,
        until,
        limit,
    };
    settled(&shared).await;
    let records = match shared.host.store().list_brief(&filter).await {
        Ok(r) => r,
        Err(e) => return store_problem(e),
    };
    let mut tools: Vec<String> = shared
        .host
        .tools()
        .into_iter()
        .map(|e| e.tool.name.clone())
        .collect();
    if let Some(t) = &filter.tool
        && !tools.contains(t)
    {
        tools.push(t.clone());
    }
    let statuses = CallStatus::ALL;
    page(
        "History",
        Nav::History,
        html! {
            form.filters method="get" action="/history" {
                label { "Tool"
                    select name="tool" {
                        option value="" { "any" }
                        @for t in &tools { option selected[filter.tool.as_ref() == Some(t)] { (t) } }
                    }
                }
                label { "Status"
                    select name="status" {
                        option value="" { "any" }
                        @for s in statuses { option selected[filter.status == Some(s)] { (s.as_str()) } }
                    }
                }
                label { "Session"
                    input name="session" type="text" value=[filter.session_id.as_deref()];
                }
                label { "Since"
                    input name="since" type="text" list="spans" size="16" placeholder="1h or 2026-11-30 12:00"
                        value=[non_empty(&q.since)];
                }
                label { "Until"
                    input name="until" type="text" size="16" placeholder="UTC time or span ago"
                        value=[non_empty(&q.until)];
                }
                datalist #spans {
                    @for (value, label) in SPANS { option value=(value) { (label) } }
                }
                label { "At most"
                    input name="limit" type="number" min="1" max="1000" value=(limit);
                }
                button type="submit" { "Show" }
            }
            @if since.is_some() || until.is_some() {
                p.muted #time-span {
                    "Calls created"
                    @if let Some(t) = since { " from " (time(t)) }
                    @if let Some(t) = until { " before " (time(t)) }
                    " (UTC)."
                }
            }
            @if records.is_empty() {
                p { "No call matches." }
            } @else {
                table #history {
                    thead { tr {
                        th { "Created" } th { "Tool" } th { "Status" } th { "Session" }
                        th.num { "Duration" } th.num { "Fuel" } th.num { "Updates" }
                    } }
                    tbody {
                        @for r in &records {
                            @let c = &r.summary;
                            tr {
                                td { a href={ "/calls/" (r.task_id) } { (time(c.created_at)) } }
                                td { (c.tool) }
                                td { (status_badge(c.status)) }
                                td { a href={ "/history?session=" (r.session_id) } { code { (r.session_id) } } }
                                td.num { (c.ended_at.zip(c.started_at).and_then(|(end, start)| end.duration_since(start).ok()).map(duration).unwrap_or_default()) }
                                td.num { (c.fuel_used) }
                                td.num { (r.updates) }
                            }
                        }
                    }
                }
            }
        },
    )
    .into_response()
}

pub(super) async fn call(
    State(shared): State<Arc<Shared>>,
    Path(task_id): Path<String>,
) -> Response {
    let record = match stored_call(&shared, &task_id).await {
        Ok(r) => r,
        Err(page) => return page,
    };
    let c = &record.call;
    let cancellable = c.status.is_live() && cancellable_tools(&shared).contains(&c.tool);
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default();
    page(
        &format!("Call of {}", c.tool),
        Nav::None,
        html! {
            section #call data-task=(record.task_id) data-live=(c.status.is_live()) {
                dl {
                    dt { "Status" } dd #call-status { (status_badge(c.status)) }
                    @if let Some(at) = record.interrupted_at {
                        dt { "Interrupted" }
                        dd { "The host stopped while this call was " (if c.started_at.is_some() { "running" } else { "queued" }) "; found at " (time(at)) "." }
                    }
                    dt { "Tool" } dd { a href={ "/tools/" (c.tool) } { (c.tool) } }
                    dt { "Session" } dd { a href={ "/history?session=" (c.session_id) } { code { (c.session_id) } } }
                    dt { "Call id" } dd { code { (c.call_id) } }
                    dt { "Task id" } dd { code { (record.task_id) } }
                    dt { "Created" } dd { (time(c.created_at)) }
                    @if let Some(t) = c.started_at { dt { "Started" } dd { (time(t)) } }
                    @if let Some(t) = c.ended_at { dt { "Ended" } dd { (time(t)) } }
                    @if let Some(d) = ran(c) {
                        dt { "Duration" }
                        @if c.ended_at.is_some() { dd { (duration(d)) } }
                        @else { dd data-since=(epoch_ms(c.started_at.unwrap_or(c.created_at))) { (duration(d)) } }
                    }
                    dt { "Fuel" }
                    @if c.status.is_live() { dd #call-fuel { (c.fuel_used) " so far" } }
                    @else {
                        dd { (c.fuel_used) }
                        // One limit at most ends a call; the record keeps it
                        // in the error's message.
                        dt { "Limit hit" }
                        dd #limit-hit { (c.error.as_deref().and_then(CallError::limit_in).unwrap_or("none")) }
                    }
                }
                @if cancellable { (cancel_button(&record.task_id)) }
                h2 { "Arguments" }
                pre { code { (pretty(&c.arguments)) } }
                h2 { "Updates" }
                @if record.updates_dropped > 0 {
                    p.muted { (record.updates_dropped) " older updates were folded away; the newest are kept." }
                }
                ol.updates #updates start=(record.updates_dropped + 1) {
                    @for u in &c.updates {
                        li { (time(u.at)) " " (u.message) }
                    }
                }
                @if c.updates.is_empty() { p.muted #no-updates { "No update." } }
                @if let Some(error) = &c.error {
                    h2 { "Error" }
                    div.alert role="alert" { pre { (error) } }
                }
                @if let Some(result) = &c.result {
                    h2 { "Result" }
                    @if let Some(text) = &result.text { pre #result-text { (text) } }
                    @if let Some(data) = &result.data {
                        h3 { "Data" }
                        pre #result-data { code { (pretty(data)) } }
                    }
                }
            }
        },
    )
    .into_response()
}

pub(super) async fn cancel(
    State(shared): State<Arc<Shared>>,
    Path(task_id): Path<String>,
) -> Response {
    let record = match stored_call(&shared, &task_id).await {
        Ok(r) => r,
        Err(page) => return page,
    };
    match shared.host.cancel_task(&task_id) {
        Ok(()) => Redirect::to(&format!("/calls/{task_id}")).into_response(),
        Err(CancelError::NotFound(_)) => problem(
            StatusCode::CONFLICT,
            "Not cancelled",
            &format!(
                "The call is {} and not running in this host.",
                record.call.status.as_str()
            ),
        ),
        Err(e) => problem(StatusCode::CONFLICT, "Not cancelled", &e.to_string()),
    }
}

pub(super) async fn plugins(State(shared): State<Arc<Shared>>) -> Response {
    let report = shared.host.report();
    let served: Vec<String> = shared
        .host
        .tools()
        .into_iter()
        .map(|e| e.tool.name.clone())
        .collect();
    page(
        "Plugins and tools",
        Nav::Plugins,
        html! {
            @if shared.host.loading() { p.muted { "Plugins are still loading." } }
            @if !report.refused.is_empty() {
                h2 { "Refused plugins" }
                table #refused {
                    thead { tr { th { "File" } th { "Reason" } } }
                    tbody {
                        @for e in &report.refused {
                            tr { td { code { (e.path.display()) } } td { (e.reason()) } }
                        }
                    }
                }
            }
            @for p in &report.loaded {
                @let perms = &p.manifest().permissions;
                @let size = std::fs::metadata(p.path()).map(|m| m.len()).ok();
                section.plugin {
                    h2 { (p.name()) }
                    dl {
                        dt { "File" } dd { code { (p.path().display()) } }
                        dt { "Manifest" } dd { @match p.manifest_path() {
                            Some(m) => { code { (m.display()) } }
                            None => { "none: no files, no environment, no network" }
                        } }
                        dt { "Language" } dd.language { (p.language().unwrap_or("unknown")) }
                        dt { "Size" } dd { (size.map(|s| bytesize::ByteSize(s).to_string()).unwrap_or_else(|| "unknown".into())) }
                        dt { "Loaded in" } dd { (duration(p.load_time())) @if p.from_cache() { " (from the compile cache)" } }
                        dt { "Environment" } dd { @if perms.env.is_empty() { "none" } @else { (perms.env.join(", ")) } }
                        dt { "Folders" } dd {
                            @if perms.dirs.is_empty() { "none" }
                            @for d in &perms.dirs {
                                div { code { (d.host.display()) } " as " code { (d.guest) } " (" (if d.write { "read-write" } else { "read-only" }) ")" }
                            }
                        }
                        dt { "Network" } dd {
                            @if perms.network.is_empty() { "none" }
                            @else { (perms.network.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ")) }
                        }
                        dt { "Limits" } dd { (p.limits()) }
                    }
                    table.tools {
                        thead { tr {
                            th { "Tool" } th { "On duplicate" } th { "Cancellable" } th { "Delivery" } th { "Description" }
                        } }
                        tbody {
                            @for t in p.tools() {
                                tr {
                                    td {
                                        @if served.contains(&t.name) { a href={ "/tools/" (t.name) } { (t.name) } }
                                        @else { (t.name) " " span.muted { "(not served)" } }
                                    }
                                    td { (t.on_duplicate.as_str()) " by " (t.duplicate_scope.as_str()) }
                                    td { (if t.cancellable { "yes" } else { "no" }) }
                                    td { (t.delivery.as_str()) }
                                    td { (t.description.lines().next().unwrap_or_default()) }
                                }
                            }
                        }
                    }
                }
            }
            @if report.loaded.is_empty() && report.refused.is_empty() { p { "No plugin." } }
        },
    )
    .into_response()
}

pub(super) async fn tool(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    tool_page(&shared, &name, &Typed::new(), None).await
}

/// A tool's page: its description, schemas and the form to call it, with
/// `refusal` (what the model would have been told) above the form.
async fn tool_page(shared: &Shared, name: &str, typed: &Typed, refusal: Option<&str>) -> Response {
    let Some(entry) = shared.host.tool(name).await else {
        return problem(
            StatusCode::NOT_FOUND,
            "No such tool",
            &format!("No tool `{name}` is served."),
        );
    };
    let t = &entry.tool;
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default();
    let body = page(
        &format!("Tool {}", t.name),
        Nav::None,
        html! {
            p { (t.description) }
            dl {
                dt { "Plugin" } dd { (entry.plugin.name()) }
                dt { "On duplicate" } dd { (t.on_duplicate.as_str()) " by " (t.duplicate_scope.as_str()) }
                dt { "Cancellable" } dd { (if t.cancellable { "yes" } else { "no" }) }
                dt { "Delivery" } dd { (t.delivery.as_str()) }
            }
            h2 { "Try it" }
            @if let Some(message) = refusal {
                div.alert #refusal role="alert" {
                    p { "The call was refused. The model would be told:" }
                    pre { (message) }
                }
            }
            form #try method="post" action={ "/tools/" (t.name) } {
                (form::fields(&t.input_schema, typed))
                details {
                    summary { "Arguments as JSON instead" }
                    div.field {
                        label for="f-json" { "JSON object (used when not empty)" }
                        textarea #f-json name=(RAW) rows="4" { (typed.get(RAW).cloned().unwrap_or_default()) }
                    }
                }
                button type="submit" { "Call " (t.name) }
            }
            h2 { "Input schema" }
            pre { code { (pretty(&t.input_schema)) } }
            @if let Some(output) = &t.output_schema {
                h2 { "Output schema" }
                pre { code { (pretty(output)) } }
            }
        },
    );
    let status = if refusal.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    (status, body).into_response()
}

pub(super) async fn try_tool(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    Form(submitted): Form<Vec<(String, String)>>,
) -> Response {
    let typed: Typed = submitted.iter().cloned().collect();
    let Some(entry) = shared.host.tool(&name).await else {
        return tool_page(&shared, &name, &typed, None).await;
    };
    let arguments = match form::arguments(&entry.tool.input_schema, &submitted) {
        Ok(a) => a,
        Err(e) => return tool_page(&shared, &name, &typed, Some(e.as_str())).await,
    };
    let call_id = crate::ids::call_id();
    let answer = shared
        .session
        .call(&call_id, &name, &arguments.to_string())
        .await;
    match answer.task_id {
        Some(task_id) => (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, format!("/calls/{task_id}"))],
        )
            .into_response(),
        // Refused before it ran (B7) or a duplicate notice: say it as the
        // model would read it.
        None => tool_page(&shared, &name, &typed, Some(answer.output.as_str())).await,
    }
}
