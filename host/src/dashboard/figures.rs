//! Figures at a glance: per tool over the last hour, calls per minute, the
//! error rate, and the median and 99th percentile of duration and fuel.
//!
//! Counted from the task store's summaries ([`TaskStore::summaries`]: the
//! calls created in the last hour, bounded by [`MAX_CALLS`]) when a page is
//! read, and drawn as small inline SVG charts beside their numbers: no
//! script, and each chart has a label that says what it shows.
//!
//! [`TaskStore::summaries`]: crate::store::TaskStore::summaries

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use maud::{Markup, PreEscaped, html};

use crate::records::CallStatus;
use crate::store::CallSummary;

/// The span the figures cover.
pub(super) const SPAN: Duration = Duration::from_secs(60 * 60);
/// Calls counted at most, the newest first: bounds a page read however busy
/// the hour was.
pub(super) const MAX_CALLS: usize = 50_000;
const MINUTES: usize = 60;

/// One tool's figures over the span.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ToolFigures {
    pub(super) tool: String,
    /// Calls created in each minute, the oldest first.
    pub(super) per_minute: [u32; MINUTES],
    pub(super) calls: usize,
    /// Calls that ended (done, error, cancelled, interrupted).
    pub(super) finished: usize,
    pub(super) errors: usize,
    /// Of the finished calls that ran.
    pub(super) duration: Option<Percentiles<Duration>>,
    pub(super) fuel: Option<Percentiles<u64>>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Percentiles<T> {
    pub(super) p50: T,
    pub(super) p99: T,
}

impl ToolFigures {
    /// Errors per finished call, when any finished.
    pub(super) fn error_rate(&self) -> Option<f64> {
        (self.finished > 0).then(|| self.errors as f64 / self.finished as f64)
    }
}

/// The `p`th percentile of `sorted` by nearest rank (p50 of 4 values is the
/// second, p99 of fewer than 100 the largest).
fn percentile<T: Copy>(sorted: &[T], p: usize) -> Option<T> {
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

fn percentiles<T: Copy + Ord>(mut values: Vec<T>) -> Option<Percentiles<T>> {
    values.sort_unstable();
    Some(Percentiles {
        p50: percentile(&values, 50)?,
        p99: percentile(&values, 99)?,
    })
}

/// Each tool's figures from the calls created in the span ending at `now`,
/// the busiest tool first.
pub(super) fn count(calls: &[CallSummary], now: SystemTime) -> Vec<ToolFigures> {
    struct Acc {
        per_minute: [u32; MINUTES],
        calls: usize,
        finished: usize,
        errors: usize,
        durations: Vec<Duration>,
        fuel: Vec<u64>,
    }
    let from = now.checked_sub(SPAN).unwrap_or(SystemTime::UNIX_EPOCH);
    let mut tools: BTreeMap<&str, Acc> = BTreeMap::new();
    for c in calls.iter().filter(|c| c.created_at >= from) {
        let acc = tools.entry(c.tool.as_str()).or_insert_with(|| Acc {
            per_minute: [0; MINUTES],
            calls: 0,
            finished: 0,
            errors: 0,
            durations: Vec::new(),
            fuel: Vec::new(),
        });
        let minute = c
            .created_at
            .duration_since(from)
            .unwrap_or_default()
            .as_secs()
            / 60;
        acc.per_minute[(minute as usize).min(MINUTES - 1)] += 1;
        acc.calls += 1;
        if c.status.is_live() {
            continue;
        }
        acc.finished += 1;
        acc.errors += usize::from(c.status == CallStatus::Error);
        if let (Some(start), Some(end)) = (c.started_at, c.ended_at) {
            acc.durations
                .push(end.duration_since(start).unwrap_or_default());
            acc.fuel.push(c.fuel_used);
        }
    }
    let mut figures: Vec<ToolFigures> = tools
        .into_iter()
        .map(|(tool, acc)| ToolFigures {
            tool: tool.to_owned(),
            per_minute: acc.per_minute,
            calls: acc.calls,
            finished: acc.finished,
            errors: acc.errors,
            duration: percentiles(acc.durations),
            fuel: percentiles(acc.fuel),
        })
        .collect();
    figures.sort_by_key(|f| std::cmp::Reverse(f.calls));
    figures
}

/// A duration short enough for a table cell, to three figures.
pub(super) fn short_duration(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    match us {
        _ if us < 1e3 => format!("{us:.0} µs"),
        _ if us < 1e6 => {
            let ms = format!("{:.3}", us / 1e3);
            format!("{} ms", ms.trim_end_matches('0').trim_end_matches('.'))
        }
        _ if us < 60e6 => format!("{:.2} s", us / 1e6),
        _ => humantime::format_duration(Duration::from_secs(d.as_secs())).to_string(),
    }
}

/// A count with a unit prefix: 12 345 678 is `12.3 M`.
pub(super) fn short_count(n: u64) -> String {
    let n = n as f64;
    match n {
        _ if n < 1e4 => format!("{n}"),
        _ if n < 1e6 => format!("{:.1} k", n / 1e3),
        _ if n < 1e9 => format!("{:.1} M", n / 1e6),
        _ => format!("{:.1} G", n / 1e9),
    }
}

const WIDTH: u32 = 120;
const HEIGHT: u32 = 24;

/// Calls per minute as 60 bars, the oldest left; each bar's title says its
/// minute and count.
fn per_minute_chart(f: &ToolFigures, from: SystemTime) -> Markup {
    let peak = f.per_minute.iter().copied().max().unwrap_or(0).max(1);
    let busiest = f.per_minute.iter().copied().max().unwrap_or(0);
    let label = format!(
        "{} calls in the last hour, at most {busiest} in one minute",
        f.calls
    );
    let bar = WIDTH / MINUTES as u32;
    let mut bars = String::new();
    for (i, &n) in f.per_minute.iter().enumerate() {
        if n == 0 {
            continue;
        }
        let h = (n * HEIGHT).div_ceil(peak).max(1);
        let at = from + Duration::from_secs(60 * i as u64);
        let minute = humantime::format_rfc3339_seconds(at).to_string();
        let minute = minute.get(11..16).unwrap_or_default().to_owned();
        let _ = write!(
            bars,
            r#"<rect x="{}" y="{}" width="{bar}" height="{h}"><title>{minute}: {n}</title></rect>"#,
            i as u32 * bar,
            HEIGHT - h,
        );
    }
    html! {
        svg.chart.per-minute role="img" aria-label=(label) width=(WIDTH) height=(HEIGHT)
            viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } {
            line.axis x1="0" y1=(HEIGHT) x2=(WIDTH) y2=(HEIGHT) {}
            (PreEscaped(bars))
        }
    }
}

/// Two bars, the median and the 99th percentile, on a scale shared by every
/// tool's row (`max`).
fn pair_chart(p50: f64, p99: f64, max: f64, label: &str) -> Markup {
    let w = |v: f64| {
        if max <= 0.0 || v <= 0.0 {
            0.0
        } else {
            (v / max * f64::from(WIDTH)).max(1.0)
        }
    };
    html! {
        svg.chart.pair role="img" aria-label=(label) width=(WIDTH) height="16" viewBox={ "0 0 " (WIDTH) " 16" } {
            rect.p99 x="0" y="1" width=(format!("{:.1}", w(p99))) height="14" {}
            rect.p50 x="0" y="4" width=(format!("{:.1}", w(p50))) height="8" {}
        }
    }
}

fn rate_chart(rate: f64, label: &str) -> Markup {
    html! {
        svg.chart.rate role="img" aria-label=(label) width="60" height="16" viewBox="0 0 60 16" {
            rect.whole x="0" y="3" width="60" height="10" {}
            rect.errors x="0" y="3" width=(format!("{:.1}", rate * 60.0)) height="10" {}
        }
    }
}

/// The figures section of a page: a table with a row per tool, its numbers
/// in text and as charts. `counted` is how many calls were read; it is
/// [`MAX_CALLS`] when the hour held more.
pub(super) fn section(figures: &[ToolFigures], counted: usize, now: SystemTime) -> Markup {
    let from = now.checked_sub(SPAN).unwrap_or(SystemTime::UNIX_EPOCH);
    let max_duration = (figures.iter())
        .filter_map(|f| f.duration.map(|d| d.p99.as_secs_f64()))
        .fold(0.0, f64::max);
    let max_fuel = (figures.iter())
        .filter_map(|f| f.fuel.map(|d| d.p99 as f64))
        .fold(0.0, f64::max);
    html! {
        section #figures aria-labelledby="figures-title" {
            h2 #figures-title { "The last hour" }
            @if figures.is_empty() {
                p.muted { "No call in the last hour." }
            } @else {
                p.muted {
                    "Calls created since " (super::pages::rfc3339(from).get(11..16).unwrap_or_default())
                    " UTC, from the task store, as of this page's loading"
                    @if counted >= MAX_CALLS { "; only the newest " (MAX_CALLS) " are counted" }
                    ". Duration and fuel are of the calls that ended: median (dark) and 99th percentile."
                }
                table #figures-table {
                    thead { tr {
                        th scope="col" { "Tool" }
                        th scope="col" { "Calls per minute" }
                        th.num scope="col" { "Calls" }
                        th scope="col" { "Error rate" }
                        th scope="col" { "Duration p50 / p99" }
                        th scope="col" { "Fuel p50 / p99" }
                    } }
                    tbody {
                        @for f in figures {
                            tr data-tool=(f.tool) {
                                th scope="row" { a href={ "/history?tool=" (f.tool) "&since=1h" } { (f.tool) } }
                                td { (per_minute_chart(f, from)) }
                                td.num data-calls=(f.calls) { (f.calls) }
                                @match f.error_rate() {
                                    Some(rate) => {
                                        @let text = format!("{:.1} % ({} of {})", rate * 100.0, f.errors, f.finished);
                                        td data-errors=(f.errors) data-finished=(f.finished) {
                                            (rate_chart(rate, &format!("error rate {text}"))) " " (text)
                                        }
                                    }
                                    None => { td.muted data-errors="0" data-finished="0" { "none ended" } }
                                }
                                @match f.duration {
                                    Some(d) => {
                                        @let text = format!("{} / {}", short_duration(d.p50), short_duration(d.p99));
                                        td data-p50-us=(d.p50.as_micros()) data-p99-us=(d.p99.as_micros()) {
                                            (pair_chart(d.p50.as_secs_f64(), d.p99.as_secs_f64(), max_duration, &format!("duration p50 / p99: {text}")))
                                            " " (text)
                                        }
                                    }
                                    None => { td.muted { "–" } }
                                }
                                @match f.fuel {
                                    Some(fuel) => {
                                        @let text = format!("{} / {}", short_count(fuel.p50), short_count(fuel.p99));
                                        td data-p50=(fuel.p50) data-p99=(fuel.p99) {
                                            (pair_chart(fuel.p50 as f64, fuel.p99 as f64, max_fuel, &format!("fuel p50 / p99: {text}")))
                                            " " (text)
                                        }
                                    }
                                    None => { td.muted { "–" } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(tool: &str, status: CallStatus, created: u64, ran_ms: u64, fuel: u64) -> CallSummary {
        let created_at = SystemTime::UNIX_EPOCH + Duration::from_secs(created);
        let live = status.is_live();
        CallSummary {
            tool: tool.into(),
            status,
            fuel_used: fuel,
            created_at,
            started_at: Some(created_at),
            ended_at: (!live).then(|| created_at + Duration::from_millis(ran_ms)),
        }
    }

    #[test]
    fn percentiles_are_by_nearest_rank() {
        assert_eq!(percentile(&[1, 2, 3, 4], 50), Some(2));
        assert_eq!(percentile(&[1, 2, 3, 4], 99), Some(4));
        assert_eq!(percentile(&[7], 50), Some(7));
        assert_eq!(percentile::<u32>(&[], 50), None);
        let hundred: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&hundred, 99), Some(99));
        assert_eq!(percentile(&hundred, 50), Some(50));
    }

    #[test]
    fn figures_count_calls_per_tool_and_minute() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
        let start = 10_000 - 3600;
        let calls = [
            call("a", CallStatus::Done, start + 5, 10, 100),
            call("a", CallStatus::Error, start + 50, 30, 300),
            call("a", CallStatus::Done, start + 61, 20, 200),
            call("a", CallStatus::Running, start + 3599, 0, 50),
            call("b", CallStatus::Cancelled, start + 120, 40, 7),
            // Before the hour: not counted.
            call("b", CallStatus::Error, start - 1, 40, 7),
        ];
        let figures = count(&calls, now);
        assert_eq!(figures.len(), 2);
        let a = &figures[0];
        assert_eq!(a.tool, "a");
        assert_eq!(a.calls, 4);
        assert_eq!(
            (a.per_minute[0], a.per_minute[1], a.per_minute[59]),
            (2, 1, 1)
        );
        assert_eq!(a.per_minute.iter().sum::<u32>(), 4);
        assert_eq!((a.finished, a.errors), (3, 1));
        assert_eq!(a.error_rate(), Some(1.0 / 3.0));
        assert_eq!(
            a.duration,
            Some(Percentiles {
                p50: Duration::from_millis(20),
                p99: Duration::from_millis(30)
            })
        );
        assert_eq!(a.fuel, Some(Percentiles { p50: 200, p99: 300 }));
        let b = &figures[1];
        assert_eq!((b.calls, b.finished, b.errors), (1, 1, 0));
        assert_eq!(b.error_rate(), Some(0.0));
    }

    #[test]
    fn short_numbers_read_at_a_glance() {
        assert_eq!(short_duration(Duration::from_micros(56)), "56 µs");
        assert_eq!(short_duration(Duration::from_micros(1_500)), "1.5 ms");
        assert_eq!(short_duration(Duration::from_millis(2_340)), "2.34 s");
        assert_eq!(short_duration(Duration::from_secs(125)), "2m 5s");
        assert_eq!(short_count(9_999), "9999");
        assert_eq!(short_count(12_345_678), "12.3 M");
    }
}
