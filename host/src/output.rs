//! A plugin's stdout and stderr, turned into log lines.
//!
//! Each line becomes one `tracing` event tagged with plugin, tool and call id.
//! Output is bounded per call: past [`OUTPUT_BUDGET`] bytes the rest is
//! counted and dropped, so a flood never traps the plugin and never fills the
//! host's memory.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use crate::ids::CallIdentity;

/// Bytes of one stream that are logged per call; the rest is counted only.
pub(crate) const OUTPUT_BUDGET: usize = 64 * 1024;
/// The longest log line; longer lines are cut.
pub(crate) const MAX_LINE: usize = 2048;

/// Cut a message to [`MAX_LINE`] bytes on a character boundary.
pub(crate) fn clip(s: &str) -> &str {
    if s.len() <= MAX_LINE {
        return s;
    }
    let mut end = MAX_LINE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// One of a call's output streams.
#[derive(Clone)]
pub(crate) struct LogStream(Arc<Mutex<Lines>>);

struct Lines {
    identity: CallIdentity,
    stream: &'static str,
    partial: Vec<u8>,
    logged: usize,
    dropped: usize,
}

impl LogStream {
    pub(crate) fn new(identity: CallIdentity, stream: &'static str) -> Self {
        Self(Arc::new(Mutex::new(Lines {
            identity,
            stream,
            partial: Vec::new(),
            logged: 0,
            dropped: 0,
        })))
    }

    fn write_bytes(&self, bytes: &[u8]) {
        let mut lines = self.0.lock().unwrap_or_else(|p| p.into_inner());
        lines.push(bytes);
    }
}

impl Lines {
    fn push(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let room = OUTPUT_BUDGET.saturating_sub(self.logged + self.partial.len());
            if room == 0 {
                self.dropped += bytes.len();
                return;
            }
            match bytes.iter().position(|&b| b == b'\n') {
                Some(nl) if nl < room => {
                    self.partial.extend_from_slice(&bytes[..nl]);
                    self.emit();
                    bytes = &bytes[nl + 1..];
                }
                _ => {
                    let take = bytes.len().min(room);
                    self.partial.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if self.partial.len() >= MAX_LINE {
                        self.emit();
                    }
                }
            }
        }
    }

    fn emit(&mut self) {
        let text = String::from_utf8_lossy(&self.partial);
        let id = &self.identity;
        tracing::info!(
            target: "toolhost::plugin",
            plugin = %id.plugin, tool = %id.tool, call_id = %id.call_id, stream = self.stream,
            "{}", clip(&text)
        );
        self.logged += self.partial.len();
        self.partial.clear();
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        if !self.partial.is_empty() {
            self.emit();
        }
        if self.dropped > 0 {
            let id = &self.identity;
            tracing::warn!(
                plugin = %id.plugin, tool = %id.tool, call_id = %id.call_id, stream = self.stream,
                dropped_bytes = self.dropped, budget = OUTPUT_BUDGET,
                "plugin output truncated"
            );
        }
    }
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogStream {
    async fn ready(&mut self) {}
}

impl OutputStream for LogStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl AsyncWrite for LogStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
