//! The live plugin folder: adding, replacing or removing a `.wasm` file or
//! its manifest takes effect while the host runs.
//!
//! Changes are collected until the folder has been quiet for
//! [`SETTLE`], so a file being copied in is loaded once, whole. A new
//! version that is refused leaves the serving version in place; calls that
//! already run finish on the version they started with.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use notify::{RecursiveMode, Watcher};
use tokio::sync::Notify;

use crate::engine::FileStamp;
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
/// Made before the host, its set-up (which waits for notify's own thread)
/// runs beside the folder's first listing and the announcements of its
/// tools rather than before them. What changed between that listing and
/// the watch is found when the host follows it: the listing remembered
/// each file's stamp.
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

/// What a plugin folder held when a host listed it to load it: the stamp
/// of each plugin file and manifest. A watch set up after that listing
/// catches up with it when the host follows the watch: a file added,
/// removed or with another stamp by then changed in between, and is
/// applied as the watch's changes are. (A rewrite that keeps a file's
/// inode, size and times, within one tick of the clock, in the
/// milliseconds between the listing and the watch, goes unseen, as it
/// would by the compile cache's stamps.)
#[derive(Debug, Default)]
pub(crate) struct Listing(BTreeMap<PathBuf, Option<FileStamp>>);

impl Listing {
    /// The plugin files and manifests of `dir` now. Blocking.
    pub(crate) fn of(dir: &Path) -> std::io::Result<Self> {
        let mut files = BTreeMap::new();
        for entry in std::fs::read_dir(dir)? {
            let Ok(entry) = entry else { continue };
            let path = entry.path();
            if plugin_file(&path).is_none() {
                continue;
            }
            // Followed through links, as loading reads them; a folder
            // named `x.wasm` is no plugin.
            match std::fs::metadata(&path) {
                Ok(meta) if meta.is_file() => {
                    files.insert(path, FileStamp::from_metadata(&meta));
                }
                _ => {}
            }
        }
        Ok(Self(files))
    }

    /// The `*.wasm` files, sorted.
    pub(crate) fn plugins(&self) -> Vec<PathBuf> {
        (self.0.keys())
            .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
            .cloned()
            .collect()
    }

    /// The plugin files whose file or manifest differ in `now`: added,
    /// removed, or with another stamp (or none to compare, where stamps
    /// are not taken).
    fn changed_in(&self, now: &Listing) -> BTreeSet<PathBuf> {
        let paths = self.0.keys().chain(now.0.keys());
        (paths.filter(|p| match (self.0.get(*p), now.0.get(*p)) {
            (Some(Some(before)), Some(Some(after))) => before != after,
            _ => true,
        }))
        .filter_map(|p| plugin_file(p))
        .collect()
    }
}

/// Follow `changes` for the registry: load what appears or changes, unload
/// what disappears; first what changed since the registry listed the
/// folder, if it did.
pub(crate) fn follow(registry: Arc<Registry>, changes: FolderChanges) -> FolderWatch {
    let listed = registry.take_listing(&changes.dir);
    let changed = changes.changed.clone();
    let dir = changes.dir.clone();
    let task = tokio::spawn(async move {
        if let Some(listed) = listed {
            catch_up(&listed, dir, &changed).await;
        }
        apply(registry, changed).await;
    });
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

/// Mark what changed in `dir` since `listed` as the watch would have: the
/// listing came before the watch was set up. A folder that cannot be read
/// now has lost every file.
async fn catch_up(listed: &Listing, dir: PathBuf, changed: &Changed) {
    let now = tokio::task::spawn_blocking(move || Listing::of(&dir).unwrap_or_default()).await;
    for file in listed.changed_in(&now.unwrap_or_default()) {
        tracing::debug!(file = %file.display(), "changed before the folder was watched");
        changed.add(file);
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

    /// What a listing tells a watch set up after it: every plugin file
    /// added, removed or rewritten since (its manifest's changes counted as
    /// its own), and nothing else.
    #[test]
    fn a_listing_names_the_plugins_changed_since() {
        let dir = tempfile::tempdir().expect("dir");
        let dir = dir.path().canonicalize().expect("canonical");
        let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).expect("write");
        write("same.wasm", "same");
        write("gone.wasm", "gone");
        write("rewritten.wasm", "before");
        write("manifest.wasm", "manifest");
        write("notes.txt", "not a plugin");
        std::fs::create_dir(dir.join("folder.wasm")).expect("mkdir");
        let listed = Listing::of(&dir).expect("list");
        assert_eq!(
            listed.plugins(),
            ["gone", "manifest", "rewritten", "same"].map(|n| dir.join(format!("{n}.wasm"))),
            "the plugin files, sorted; no folder or other file"
        );

        std::fs::remove_file(dir.join("gone.wasm")).expect("remove");
        write("rewritten.wasm", "after, longer");
        write("manifest.toml", "");
        write("added.wasm", "added");
        write("notes.txt", "still not a plugin");
        let now = Listing::of(&dir).expect("list");
        assert_eq!(
            listed.changed_in(&now),
            BTreeSet::from(
                ["added", "gone", "manifest", "rewritten"].map(|n| dir.join(format!("{n}.wasm")))
            ),
        );
        assert!(now.changed_in(&now).is_empty(), "a listing against itself");
    }
}
