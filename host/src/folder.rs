//! The live plugin folder: adding, replacing or removing a `.wasm` file or
//! its manifest takes effect while the host runs.
//!
//! Changes are collected until the folder has been quiet for
//! [`SETTLE`], so a file being copied in is loaded once, whole. A new
//! version that is refused leaves the serving version in place; calls that
//! already run finish on the version they started with.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use notify::{RecursiveMode, Watcher};
use tokio::sync::Notify;

use crate::registry::Registry;

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

/// A plugin folder watched from the moment this is made; its changes wait
/// until a host follows them ([`Host::follow_folder`](crate::Host::follow_folder)).
///
/// Made before the folder is first loaded, no change after that first
/// listing is missed. Made before the host, its set-up (which waits for
/// notify's own thread) runs beside the engine's rather than after it.
pub struct FolderChanges {
    watcher: notify::RecommendedWatcher,
    changed: Arc<Changed>,
    dir: PathBuf,
}

/// The plugin files changed since they were last applied, each once
/// however many events it had: at most one entry per file the folder
/// holds.
#[derive(Debug, Default)]
struct Changed {
    files: Mutex<BTreeSet<PathBuf>>,
    more: Notify,
}

impl Changed {
    fn add(&self, file: PathBuf) {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        files.insert(file);
        self.more.notify_one();
    }

    fn take(&self) -> BTreeSet<PathBuf> {
        std::mem::take(&mut *self.files.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl std::fmt::Debug for FolderChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FolderChanges")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl FolderChanges {
    /// Watch `dir`: every change from now on is kept for the host that
    /// follows it. Blocking (briefly).
    pub fn watch(dir: impl AsRef<Path>) -> anyhow::Result<Self> {
        let dir = dir.as_ref();
        let dir = dir
            .canonicalize()
            .with_context(|| format!("watching {}", dir.display()))?;
        let changed = Arc::new(Changed::default());
        let seen = changed.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(event) = event
                    && changes_content(&event.kind)
                {
                    event
                        .paths
                        .iter()
                        .filter_map(|p| plugin_file(p))
                        .for_each(|f| seen.add(f));
                }
            })
            .context("starting the folder watcher")?;
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .with_context(|| format!("watching {}", dir.display()))?;
        Ok(FolderChanges {
            watcher,
            changed,
            dir,
        })
    }
}

/// Follow `changes` for the registry: load what appears or changes, unload
/// what disappears.
pub(crate) fn follow(registry: Arc<Registry>, changes: FolderChanges) -> FolderWatch {
    let task = tokio::spawn(apply(registry, changes.changed));
    tracing::info!(folder = %changes.dir.display(), "watching the plugin folder");
    FolderWatch {
        _watcher: changes.watcher,
        task,
    }
}

/// Whether an event can change what a file holds: created, written,
/// renamed or removed. Opening and reading a file (as loading it does) are
/// not changes, or the host would reload its own plugins in a loop.
fn changes_content(kind: &notify::EventKind) -> bool {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode, ModifyKind};
    matches!(
        kind,
        EventKind::Create(_)
            | EventKind::Remove(_)
            | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Name(_) | ModifyKind::Any)
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
    )
}

/// The plugin file a changed path belongs to.
fn plugin_file(path: &Path) -> Option<PathBuf> {
    match path.extension()?.to_str()? {
        "wasm" => Some(path.to_owned()),
        "toml" => Some(path.with_extension("wasm")),
        _ => None,
    }
}

async fn apply(registry: Arc<Registry>, changed: Arc<Changed>) {
    loop {
        changed.more.notified().await;
        // Gather until the folder is quiet.
        while tokio::time::timeout(SETTLE, changed.more.notified())
            .await
            .is_ok()
        {}
        for wasm in changed.take() {
            if registry.is_current(&wasm) {
                tracing::debug!(file = %wasm.display(), "unchanged; not reloaded");
            } else if wasm.is_file() {
                // Refusals are logged and reported by the host.
                let _ = registry.load_file(&wasm).await;
            } else {
                registry.unload(&wasm);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// However many events a folder sends before the host applies them,
    /// what waits is one entry per plugin file.
    #[tokio::test]
    async fn changes_waiting_to_be_applied_are_one_per_file() {
        let dir = tempfile::tempdir().expect("dir");
        let changes = FolderChanges::watch(dir.path()).expect("watch");
        let busy = dir.path().join("busy.wasm");
        for i in 0..500 {
            std::fs::write(&busy, format!("version {i}")).expect("write");
        }
        std::fs::write(dir.path().join("notes.txt"), "not a plugin").expect("write");
        std::fs::write(dir.path().join("last.toml"), "").expect("write");
        let last = changes.dir.join("last.wasm");
        while !changes.changed.files.lock().expect("lock").contains(&last) {
            changes.changed.more.notified().await;
        }
        let waiting = changes.changed.take();
        assert_eq!(
            waiting,
            BTreeSet::from([changes.dir.join("busy.wasm"), last]),
            "one entry per plugin file, a manifest counted as its .wasm"
        );
    }
}
