//! The live plugin folder: adding, replacing or removing a `.wasm` file or
//! its manifest takes effect while the host runs.
//!
//! Changes are collected until the folder has been quiet for
//! [`SETTLE`], so a file being copied in is loaded once, whole. A new
//! version that is refused leaves the serving version in place; calls that
//! already run finish on the version they started with.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::host::Host;

/// How long the folder must be quiet before changes are applied.
pub const SETTLE: Duration = Duration::from_millis(250);

/// Watches a plugin folder while it lives; dropping it stops the watch.
pub struct FolderWatch {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for FolderWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FolderWatch").finish_non_exhaustive()
    }
}

impl Drop for FolderWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Host {
    /// Keep the tools in step with `dir`: load what appears or changes,
    /// unload what disappears. Load the folder first (for instance with
    /// [`start_loading`](Self::start_loading)); this only follows changes.
    pub fn watch_folder(&self, dir: impl AsRef<Path>) -> anyhow::Result<FolderWatch> {
        let dir = dir
            .as_ref()
            .canonicalize()
            .with_context(|| format!("watching {}", dir.as_ref().display()))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(event) = event {
                    for path in event.paths {
                        let _ = tx.send(path);
                    }
                }
            })
            .context("starting the folder watcher")?;
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .with_context(|| format!("watching {}", dir.display()))?;
        let task = tokio::spawn(follow(self.clone(), rx));
        tracing::info!(folder = %dir.display(), "watching the plugin folder");
        Ok(FolderWatch {
            _watcher: watcher,
            task,
        })
    }
}

/// The plugin file a changed path belongs to.
fn plugin_file(path: &Path) -> Option<PathBuf> {
    match path.extension()?.to_str()? {
        "wasm" => Some(path.to_owned()),
        "toml" => Some(path.with_extension("wasm")),
        _ => None,
    }
}

async fn follow(host: Host, mut rx: mpsc::UnboundedReceiver<PathBuf>) {
    while let Some(first) = rx.recv().await {
        let mut changed = BTreeSet::new();
        changed.extend(plugin_file(&first));
        // Gather until the folder is quiet.
        while let Ok(Some(path)) = tokio::time::timeout(SETTLE, rx.recv()).await {
            changed.extend(plugin_file(&path));
        }
        for wasm in changed {
            if wasm.is_file() {
                // Refusals are logged and reported by the host.
                let _ = host.load_file(&wasm).await;
            } else {
                host.unload(&wasm);
            }
        }
    }
}
