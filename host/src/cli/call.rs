//! `toolhost call`: one call as a person wants to see it. A spinner with the
//! latest update while the tool runs, each update on its own line, then the
//! result. Ctrl-C cancels (the plugin's grace period, then a forced stop);
//! a second Ctrl-C stops at once.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::broadcast::error::RecvError;
use toolhost::{Answer, AnswerKind, CallStatus, EventKind, Host, SessionOptions};

const CALL_ID: &str = "call_1";

/// Exit code of a call stopped by Ctrl-C, as shells expect.
const INTERRUPTED: u8 = 130;

pub async fn call(host: &Host, tool: &str, arguments: &str, json: bool) -> Result<ExitCode> {
    // One listener for the whole call, made before it starts: a Ctrl-C
    // between two turns of the loop below is kept for the next, where a
    // listener made at each turn would miss it.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("listening for Ctrl-C (SIGINT)")?;
    let mut options = SessionOptions::default();
    options.close_timeout = Duration::ZERO;
    let session = host.open_session(options);
    let mut events = session.subscribe();
    let answer = tokio::spawn({
        let session = session.clone();
        let (tool, arguments) = (tool.to_owned(), arguments.to_owned());
        async move { session.call(CALL_ID, &tool, &arguments).await }
    });
    tokio::pin!(answer);
    let view = View::new(tool, json);
    let mut interrupts = 0;
    let mut answered = false;
    let code = loop {
        tokio::select! {
            a = &mut answer, if !answered => {
                answered = true;
                let a = a?;
                if json {
                    println!("{}", serde_json::json!({ "event": "answer", "answer": a }));
                }
                // A call that never started (unknown tool, invalid arguments,
                // a duplicate notice) has no events: its answer is all there is.
                if session.record(CALL_ID).is_none() {
                    view.refused(&a);
                    break exit_code(&a);
                }
                if a.kind == AnswerKind::Queued {
                    view.note(&a.output);
                }
            }
            e = events.recv() => match e {
                Ok(e) if e.call_id == CALL_ID => {
                    if matches!(e.kind, EventKind::Ended { .. }) && !answered {
                        // The answer was sent before this event: show it first.
                        answered = true;
                        let a = answer.as_mut().await?;
                        if json {
                            println!("{}", serde_json::json!({ "event": "answer", "answer": a }));
                        }
                    }
                    if json {
                        println!("{}", serde_json::to_string(&e)?);
                    }
                    match e.kind {
                        EventKind::Updated { message, .. } => view.update(&message),
                        EventKind::Ended { status, result, error, .. } => {
                            break view.ended(status, result, error);
                        }
                        EventKind::Queued | EventKind::Started => {}
                    }
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break ExitCode::FAILURE,
            },
            _ = interrupt.recv() => {
                interrupts += 1;
                if interrupts > 1 {
                    view.note("stopped");
                    break ExitCode::from(INTERRUPTED);
                }
                match session.cancel(CALL_ID) {
                    Ok(()) => view.note("cancelling… (Ctrl-C again to stop at once)"),
                    Err(e) => view.note(&format!("{e}; Ctrl-C again to stop it")),
                }
            }
        }
    };
    view.finish();
    session.close().await;
    Ok(code)
}

fn exit_code(a: &Answer) -> ExitCode {
    match a.kind {
        AnswerKind::Cancelled => ExitCode::from(INTERRUPTED),
        _ if a.is_error => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    }
}

/// The terminal side: a spinner on stderr when it is a terminal, plain
/// lines otherwise; results on stdout.
struct View {
    bar: ProgressBar,
    json: bool,
}

impl View {
    fn new(tool: &str, json: bool) -> Self {
        let bar = if json {
            ProgressBar::hidden()
        } else {
            ProgressBar::new_spinner()
        };
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix} {elapsed} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(tool.to_owned());
        bar.set_message("running");
        bar.enable_steady_tick(Duration::from_millis(100));
        Self { bar, json }
    }

    fn line(&self, text: &str) {
        if self.json {
            return;
        }
        if self.bar.is_hidden() {
            eprintln!("{text}");
        } else {
            self.bar.println(text);
        }
    }

    fn note(&self, text: &str) {
        self.line(&format!("· {text}"));
    }

    fn update(&self, message: &str) {
        self.line(&format!("→ {message}"));
        self.bar
            .set_message(message.lines().next().unwrap_or_default().to_owned());
    }

    /// The answer of a call that never started.
    fn refused(&self, a: &Answer) {
        self.bar.finish_and_clear();
        if self.json {
            return;
        }
        if a.is_error {
            eprintln!("{}", a.output);
        } else {
            println!("{}", a.output);
        }
    }

    fn ended(
        &self,
        status: CallStatus,
        result: Option<std::sync::Arc<toolhost::Output>>,
        error: Option<String>,
    ) -> ExitCode {
        self.bar.finish_and_clear();
        if self.json {
            return match status {
                CallStatus::Done => ExitCode::SUCCESS,
                CallStatus::Cancelled => ExitCode::from(INTERRUPTED),
                _ => ExitCode::FAILURE,
            };
        }
        match status {
            CallStatus::Done => {
                if let Some(text) = result.and_then(|o| o.model_text()) {
                    println!("{text}");
                }
                ExitCode::SUCCESS
            }
            CallStatus::Cancelled => {
                eprintln!("cancelled");
                ExitCode::from(INTERRUPTED)
            }
            _ => {
                eprintln!("{}", error.unwrap_or_else(|| "the call failed".into()));
                ExitCode::FAILURE
            }
        }
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
