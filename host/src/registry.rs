//! The plugins a host serves and their tools, by name: what loading a folder
//! puts into service, replaces and takes out, and where a call finds its tool.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use tokio::sync::{Semaphore, broadcast, watch};

use crate::config::HostConfig;
use crate::engine::Runtime;
use crate::error::{LoadError, LoadErrorKind};
use crate::folder::Listing;
use crate::plugin::{self, Announcement, Plugin, Tool};
use crate::records::HostEvent;
use crate::slots::Slots;
use crate::store::{MemoryStore, StoreOptions, TaskStore};

/// How the files of [`Registry::start_loading_files`] load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Loads {
    /// All at once: for a caller that waits for every load.
    AtOnce,
    /// Loads of files the cache announced (mapping, linking and
    /// `describe()`, up to 13 ms of CPU each for Python and JavaScript)
    /// take turns on all runtime threads but one, which stays free to
    /// answer clients while nothing waits for those loads to list tools;
    /// each holds its turn for at most [`TURN`], so a slow one does not
    /// hold up the rest. Files the cache does not know load at once: the
    /// tool list waits for them.
    InTurns,
}

/// The longest a load holds its turn ([`Loads::InTurns`]); loads here take
/// 1 to 15 ms.
const TURN: std::time::Duration = std::time::Duration::from_millis(50);

/// A tool as the host serves it, with the plugin that provides it.
#[derive(Debug, Clone)]
pub struct ToolEntry {
    pub plugin: Arc<Plugin>,
    pub tool: Arc<Tool>,
}

/// What loading a folder gave.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct LoadReport {
    pub loaded: Vec<Arc<Plugin>>,
    pub refused: Vec<LoadError>,
}

#[derive(Default)]
struct Served {
    /// By file path.
    plugins: BTreeMap<PathBuf, Arc<Plugin>>,
    /// Every tool of every loaded plugin, enabled or not, by name.
    tools: HashMap<String, ToolEntry>,
    /// The tools of files still loading that the compile cache described
    /// from their last load: listed until the load ends.
    announced: BTreeMap<PathBuf, Announcement>,
    /// The latest refusal of each file that is not serving that version.
    refused: BTreeMap<PathBuf, LoadError>,
    /// The running-calls cap of each file, kept across reloads so that the
    /// calls of the old and the new version count together (not across an
    /// unload, which closes them).
    slots: BTreeMap<PathBuf, (Slots, u32)>,
    /// The loads under way of each file that has one.
    loads: BTreeMap<PathBuf, FileLoads>,
}

/// The loads under way of one file, numbered in the order they began, so
/// that an earlier load never undoes a later one, whichever ends first.
#[derive(Default)]
struct FileLoads {
    /// The number of the last load begun.
    begun: u64,
    /// The number of the last load that served, or of the last begun when
    /// the file was unloaded: loads up to it end unapplied.
    served: u64,
    /// The number of the last load refused, or of the last begun when the
    /// file was unloaded: refusals up to it are not recorded.
    refused: u64,
    /// Loads begun that have not ended.
    running: u32,
}

impl FileLoads {
    /// Whether the load `number`, ending `loaded` or refused, applies. A
    /// new version serves unless a later one served; a refusal is recorded
    /// unless a later version served or was refused. So both end orders of
    /// a good version and a later broken one leave the good one serving
    /// and the refusal recorded.
    fn applies(&self, number: u64, loaded: bool) -> bool {
        number > self.served && (loaded || number > self.refused)
    }
}

impl Served {
    fn remove(&mut self, path: &Path) -> bool {
        let Some(old) = self.plugins.remove(path) else {
            return false;
        };
        self.tools.retain(|_, e| !Arc::ptr_eq(&e.plugin, &old));
        true
    }

    /// One load of `path` ended; `applied`, when it did, with its number
    /// and whether it served. When it was the file's last load under way,
    /// the file's announcement goes, and is given back: nothing is left to
    /// serve what it lists.
    fn end_load(&mut self, path: &Path, applied: Option<(u64, bool)>) -> Option<Announcement> {
        let loads = self.loads.get_mut(path)?;
        match applied {
            Some((number, true)) => loads.served = number,
            Some((number, false)) => loads.refused = loads.refused.max(number),
            None => {}
        }
        loads.running -= 1;
        if loads.running > 0 {
            return None;
        }
        self.loads.remove(path);
        self.announced.remove(path)
    }
}

/// A load of one file under way ([`Registry::begin_load`]); its end goes
/// to [`Registry::register`]. Dropped, it ends unapplied, and changes
/// nothing for the file's other loads; when none is left, the file's
/// announcement goes ([`Served::end_load`]), as it would at the load's end,
/// and a call of one of its tools stops waiting.
pub(crate) struct FileLoad {
    registry: Arc<Registry>,
    path: PathBuf,
    /// Until it ends.
    number: Option<u64>,
}

impl Drop for FileLoad {
    fn drop(&mut self) {
        if self.number.take().is_none() {
            return;
        }
        let announced = self.registry.served_mut().end_load(&self.path, None);
        if announced.is_some_and(|a| !a.tools.is_empty()) {
            self.registry.changed.send_modify(|g| *g += 1);
        }
    }
}

/// A start's load of one file ([`Registry::start_loading_files`]).
struct StartLoad {
    load: FileLoad,
    counted: Counted,
}

/// A start's load of one file, counted in `pending` and, until it is
/// listed, in `unlisted`. Dropped, it is no longer counted, however the
/// start's tasks ended: a panic leaves no count behind that a start's
/// listing or a call would wait on for ever. (When the last load ends so,
/// the validators are not built ahead: each is built at its tool's first
/// call instead.)
struct Counted {
    registry: Arc<Registry>,
    listed: bool,
}

impl Counted {
    fn new(registry: &Arc<Registry>) -> Counted {
        registry.pending.send_modify(|n| *n += 1);
        registry.unlisted.send_modify(|n| *n += 1);
        Counted {
            registry: registry.clone(),
            listed: false,
        }
    }

    /// The file's tools are listed: announced, or its load ended.
    fn listed(&mut self) {
        if !std::mem::replace(&mut self.listed, true) {
            self.registry.one_listed();
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.listed();
        self.registry.pending.send_modify(|n| *n -= 1);
    }
}

/// The runtime, the host's settings and what is served.
pub(crate) struct Registry {
    pub(crate) runtime: Arc<Runtime>,
    pub(crate) config: HostConfig,
    /// Where every call's record goes (B31).
    pub(crate) store: Arc<dyn TaskStore>,
    served: RwLock<Served>,
    /// Number of plugin files still loading.
    pending: watch::Sender<usize>,
    /// Of those, the ones whose tools are not listed yet: a file is listed
    /// once it is announced or its load ends.
    unlisted: watch::Sender<usize>,
    /// The count of `changed` when `unlisted` last reached zero.
    listed_at: std::sync::atomic::AtomicU64,
    /// Bumped on every change of the tool list.
    changed: watch::Sender<u64>,
    /// Bumped each time validators left to build after loads are built.
    prepared: watch::Sender<u64>,
    /// Every session's call events, made on the first subscription: a host
    /// nobody watches pays for no events.
    pub(crate) events: OnceLock<broadcast::Sender<HostEvent>>,
    /// What each folder held when it was last listed to load it, by its
    /// canonical path, until a watch of it catches up
    /// ([`take_listing`](Self::take_listing)): one per folder the host
    /// loaded.
    listings: Mutex<BTreeMap<PathBuf, Listing>>,
}

impl Registry {
    pub(crate) fn new(config: HostConfig) -> anyhow::Result<Self> {
        let runtime = Runtime::new(&config.engine, config.cache_dir.clone())?;
        Ok(Self::with_runtime(config, runtime))
    }

    /// A registry over engines set up, or being set up, from `config`'s
    /// engine settings and cache folder.
    pub(crate) fn with_runtime(config: HostConfig, runtime: Runtime) -> Self {
        let runtime = Arc::new(runtime);
        let store = config.store.clone().unwrap_or_else(|| {
            Arc::new(MemoryStore::new(StoreOptions {
                retention: config.records,
                ..StoreOptions::default()
            }))
        });
        Self {
            runtime,
            store,
            config,
            served: RwLock::default(),
            pending: watch::Sender::new(0),
            unlisted: watch::Sender::new(0),
            listed_at: std::sync::atomic::AtomicU64::new(0),
            changed: watch::Sender::new(0),
            prepared: watch::Sender::new(0),
            events: OnceLock::new(),
            listings: Mutex::default(),
        }
    }

    fn served(&self) -> std::sync::RwLockReadGuard<'_, Served> {
        self.served.read().unwrap_or_else(|p| p.into_inner())
    }

    fn served_mut(&self) -> std::sync::RwLockWriteGuard<'_, Served> {
        self.served.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The `*.wasm` files of `dir`, sorted, listed to load them: what the
    /// folder held is remembered until a watch of it catches up.
    pub(crate) fn list(&self, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
        let unreadable = |e: std::io::Error| {
            anyhow::anyhow!("cannot read the plugin folder {}: {e}", dir.display())
        };
        let dir = dir.canonicalize().map_err(unreadable)?;
        let listing = Listing::of(&dir).map_err(unreadable)?;
        let files = listing.plugins();
        (self.listings.lock().unwrap_or_else(|e| e.into_inner())).insert(dir, listing);
        Ok(files)
    }

    /// What `dir` (canonical) held when it was last listed, if it was
    /// since a watch of it last caught up.
    pub(crate) fn take_listing(&self, dir: &Path) -> Option<Listing> {
        (self.listings.lock().unwrap_or_else(|e| e.into_inner())).remove(dir)
    }

    /// Start loading one plugin file in the background.
    #[cfg(test)]
    pub(crate) fn start_loading_file(self: &Arc<Self>, path: PathBuf) {
        self.start_loading_files(vec![path], Loads::InTurns);
    }

    /// Start loading plugin files in the background. First the tools the
    /// compile cache knows of each are announced (listed until its load
    /// ends), all on one blocking thread before any load begins, and for
    /// a host still opening before its engine's set-up and its store's
    /// opening begin (see [`crate::startup`]): these would take the cores
    /// from it, and a start lists its tools once every file is announced
    /// or loaded. Then the files load, as `loads`
    /// says; a call to a plugin not yet loaded waits for its load.
    pub(crate) fn start_loading_files(self: &Arc<Self>, paths: Vec<PathBuf>, loads: Loads) {
        // Begun now, so that an unload from here on voids them.
        let mut begun: Vec<StartLoad> = paths.iter().map(|p| self.start_load(p)).collect();
        let registry = self.clone();
        tokio::spawn(async move {
            let cache = registry.runtime.cache().clone();
            let announcing = paths.clone();
            let announcements = tokio::task::spawn_blocking(move || {
                (announcing.iter())
                    .map(|p| plugin::announcement(&cache, p))
                    .collect::<Vec<_>>()
            });
            let announcements = announcements.await.unwrap_or_default();
            for (start, announcement) in begun.iter_mut().zip(announcements) {
                if let Some(a) = announcement
                    && registry.announce(&start.load, a)
                {
                    start.counted.listed();
                }
            }
            // What the listing waited for is done: the engine's set-up and
            // the task store's opening may take the cores now.
            registry.runtime.begin_set_up();
            let workers = tokio::runtime::Handle::current().metrics().num_workers();
            let turns = Arc::new(Semaphore::new(workers.saturating_sub(1).max(1)));
            for StartLoad { load, counted } in begun {
                let registry = registry.clone();
                let listed = counted.listed;
                let turns = (loads == Loads::InTurns && listed).then(|| turns.clone());
                tokio::spawn(async move {
                    // A refusal is logged and kept in the report.
                    let load = registry.load_begun(load);
                    tokio::pin!(load);
                    // A turn is for loading, not for waiting for the
                    // engine, which every load does first.
                    let turn = match turns {
                        Some(turns) => {
                            let _ = registry.runtime.ready(crate::limits::Metering::Fuel).await;
                            turns.acquire_owned().await.ok()
                        }
                        None => None,
                    };
                    let done =
                        turn.is_some() && tokio::time::timeout(TURN, &mut load).await.is_ok();
                    // The turn is over; the load, if it goes on, goes on
                    // beside the next.
                    drop(turn);
                    if !done {
                        let _ = load.await;
                    }
                    drop(counted);
                    registry.prepare_when_loaded();
                });
            }
        });
    }

    /// A start's load of `path`, counted, then begun.
    fn start_load(self: &Arc<Self>, path: &Path) -> StartLoad {
        let counted = Counted::new(self);
        StartLoad {
            load: self.begin_load(path),
            counted,
        }
    }

    /// Once no plugin is loading, build on a blocking thread the validators
    /// the loads left to build ([`Tool::prepare`]). The first of a process
    /// builds jsonschema's meta-schema, about 15 ms of CPU: during a start
    /// it would take a core from the loads `tools/list` waits for.
    fn prepare_when_loaded(&self) {
        if self.loading() {
            return;
        }
        let tools: Vec<(String, Arc<Tool>)> = (self.served().plugins.values())
            .flat_map(|p| {
                let unprepared = p.tools.iter().filter(|t| !t.prepared());
                unprepared.map(|t| (p.name().to_owned(), t.clone()))
            })
            .collect();
        if tools.is_empty() {
            return;
        }
        let prepared = self.prepared.clone();
        tokio::task::spawn_blocking(move || {
            for (plugin, tool) in &tools {
                if let Err(e) = tool.prepare() {
                    tracing::warn!(%plugin, tool = %tool.name, error = ?e, "a tool's schema cannot be used: its calls will fail");
                }
            }
            prepared.send_modify(|n| *n += 1);
        });
    }

    /// Wait until every plugin that started loading is loaded or refused.
    pub(crate) async fn ready(&self) -> LoadReport {
        let mut rx = self.pending.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
        self.report()
    }

    pub(crate) fn loading(&self) -> bool {
        *self.pending.borrow() > 0
    }

    /// One more file is listed; with the last, remember the count of
    /// changes the listing made (see [`listed`](Self::listed)).
    fn one_listed(&self) {
        let changes = *self.changed.borrow();
        self.unlisted.send_modify(|n| {
            *n -= 1;
            if *n == 0 {
                self.listed_at
                    .store(changes, std::sync::atomic::Ordering::Relaxed);
            }
        });
    }

    /// Wait until every plugin that started loading is listed: announced,
    /// loaded or refused. The count of [`tools_changed`](Self::tools_changed)
    /// at that moment: a change past it came after the listing (a load
    /// that described other tools than it announced), and is news.
    pub(crate) async fn listed(&self) -> u64 {
        let mut rx = self.unlisted.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
        self.listed_at.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether plugins that started loading are still to be listed.
    pub(crate) fn listing(&self) -> bool {
        *self.unlisted.borrow() > 0
    }

    /// Load one plugin file and put it into service, unless a later load
    /// of it or its unload decides first ([`LoadErrorKind::Superseded`]:
    /// see [`FileLoads::applies`]).
    pub(crate) async fn load_file(self: &Arc<Self>, path: &Path) -> Result<Arc<Plugin>, LoadError> {
        self.load_begun(self.begin_load(path)).await
    }

    /// A load of `path` that begins now.
    pub(crate) fn begin_load(self: &Arc<Self>, path: &Path) -> FileLoad {
        let mut served = self.served_mut();
        let loads = served.loads.entry(path.to_owned()).or_default();
        loads.begun += 1;
        loads.running += 1;
        let number = Some(loads.begun);
        drop(served);
        FileLoad {
            registry: self.clone(),
            path: path.to_owned(),
            number,
        }
    }

    /// Go on with a load begun.
    async fn load_begun(&self, load: FileLoad) -> Result<Arc<Plugin>, LoadError> {
        let result = plugin::load(&self.runtime, &self.config, &load.path).await;
        let registered = self.register(load, result);
        self.prepare_when_loaded();
        registered
    }

    /// List the tools a loading file's last load described, until `load`
    /// ends (a call of one waits for `pending` to change: see
    /// [`tool`](Self::tool)). Not when the file serves already (its version
    /// lists), nor when another file has or announced a tool of the same
    /// name (the load decides which serves), nor when `load` can no longer
    /// serve (a later load served or the file was unloaded), which lists
    /// nothing at once. Whether the file's tools are listed.
    fn announce(&self, load: &FileLoad, announcement: Announcement) -> bool {
        let path = load.path.as_path();
        let mut served = self.served_mut();
        if served.plugins.contains_key(path) {
            return true;
        }
        let can_serve = |l: &FileLoads| load.number.is_some_and(|n| l.applies(n, true));
        if !served.loads.get(path).is_some_and(can_serve) {
            return true;
        }
        let taken = |name: &str| {
            served.tools.contains_key(name)
                || (served.announced.iter())
                    .any(|(p, a)| p != path && a.tools.iter().any(|t| t.name == name))
        };
        if announcement.tools.iter().any(|t| taken(&t.name)) {
            return false;
        }
        tracing::debug!(plugin = %announcement.plugin, tools = announcement.tools.len(), "plugin announced from its last load");
        let listing = !announcement.tools.is_empty();
        served.announced.insert(path.to_owned(), announcement);
        drop(served);
        if listing {
            self.changed.send_modify(|g| *g += 1);
        }
        true
    }

    /// Whether `path` and its manifest hold what the serving plugin of
    /// that file was loaded from. Then a refusal recorded for the file is of
    /// a version that is gone, and is forgotten.
    pub(crate) fn is_current(&self, path: &Path) -> bool {
        let Some(serving) = self.served().plugins.get(path).map(|p| p.content) else {
            return false;
        };
        let manifest = plugin::manifest_path_for(path);
        let current = plugin::file_hash(&self.runtime, path).is_ok_and(|wasm| {
            plugin::content_hash(&wasm, manifest.exists().then_some(manifest.as_path())) == serving
        });
        if current {
            self.served_mut().refused.remove(path);
        }
        current
    }

    /// Load a plugin file without serving it.
    pub(crate) async fn check(&self, path: &Path) -> Result<Plugin, LoadError> {
        plugin::load(&self.runtime, &self.config, path).await
    }

    /// Put a loaded plugin into service, or record why it was refused. A
    /// plugin replacing an earlier version of the same file takes over its
    /// tools; when the new version is refused the old one goes on serving.
    /// A change of the listed tools bumps
    /// [`tools_changed`](Self::tools_changed); a new version with the same
    /// tools does not, nor a load that serves the tools it announced. A
    /// load that a later one overtook ([`FileLoads::applies`]), or that
    /// the file's unload came during, changes nothing but the file's
    /// announcement, which goes.
    fn register(
        &self,
        mut load: FileLoad,
        result: Result<Plugin, LoadError>,
    ) -> Result<Arc<Plugin>, LoadError> {
        let number = load.number.take().expect("a load ends once");
        let path = load.path.as_path();
        let mut served = self.served_mut();
        let (applies, latest) = served.loads.get(path).map_or((false, false), |l| {
            (l.applies(number, result.is_ok()), number > l.refused)
        });
        let announced = served.announced.remove(path);
        let registered = if applies {
            let registered = self.serve(&mut served, path, result, announced.as_ref(), latest);
            served.end_load(path, Some((number, registered.is_ok())));
            registered
        } else {
            served.end_load(path, None);
            tracing::debug!(file = %path.display(), "a later load of the file, or its unload, came first; this load is not applied");
            Err(LoadError::new(path, LoadErrorKind::Superseded))
        };
        drop(served);
        // The announced tools are no longer listed.
        if registered.is_err() && announced.is_some_and(|a| !a.tools.is_empty()) {
            self.changed.send_modify(|g| *g += 1);
        }
        registered
    }

    /// [`register`](Self::register) under the lock. Only a load that is
    /// `latest`, begun after the file's recorded refusal, replaces or
    /// forgets it.
    fn serve(
        &self,
        served: &mut Served,
        path: &Path,
        result: Result<Plugin, LoadError>,
        announced: Option<&Announcement>,
        latest: bool,
    ) -> Result<Arc<Plugin>, LoadError> {
        let serving = served.plugins.contains_key(path);
        let refuse = |served: &mut Served, e: LoadError| {
            if matches!(e.kind, LoadErrorKind::Stopped) {
                tracing::debug!(file = %path.display(), "load stopped: the host is stopping");
            } else if serving {
                tracing::error!(file = %path.display(), reason = %e.kind, "new version refused; the loaded version goes on serving");
            } else {
                tracing::error!(file = %path.display(), reason = %e.kind, "plugin refused");
            }
            // An earlier load's name clash does not replace a later
            // version's refusal.
            if latest {
                served.refused.insert(path.to_owned(), e.clone());
            }
            Err(e)
        };
        let mut plugin = match result {
            Ok(p) => p,
            Err(e) => return refuse(served, e),
        };
        // A name another file serves, or announced (it served the name
        // at its last load), is taken.
        for tool in &plugin.tools {
            let serving = (served.tools.get(&tool.name))
                .map(|other| &other.plugin.path)
                .filter(|other| *other != &plugin.path);
            let announcing = || {
                (served.announced.iter())
                    .find(|(p, a)| *p != path && a.tools.iter().any(|t| t.name == tool.name))
                    .map(|(p, _)| p)
            };
            if let Some(other) = serving.or_else(announcing) {
                let e = LoadError::new(
                    path,
                    LoadErrorKind::NameClash {
                        tool: tool.name.clone(),
                        other: other.clone(),
                    },
                );
                return refuse(served, e);
            }
        }
        let cap = plugin.limits.max_concurrency;
        let (slots, had) = served
            .slots
            .entry(path.to_owned())
            .or_insert_with(|| (plugin.running.clone(), cap));
        slots.set_cap(*had, cap);
        *had = cap;
        plugin.running = slots.clone();
        let plugin = Arc::new(plugin);
        let listed =
            (served.plugins.get(path).map(|old| &old.tools)).or(announced.map(|a| &a.tools));
        let same_tools = listed.is_some_and(|old| {
            old.len() == plugin.tools.len()
                && old.iter().zip(&plugin.tools).all(|(a, b)| a.same_as(b))
        });
        served.remove(path);
        for tool in &plugin.tools {
            served.tools.insert(
                tool.name.clone(),
                ToolEntry {
                    plugin: plugin.clone(),
                    tool: tool.clone(),
                },
            );
        }
        tracing::info!(
            plugin = %plugin.name, file = %path.display(), tools = plugin.tools.len(),
            cached = plugin.from_cache(), load_ms = plugin.load_time.as_millis() as u64,
            replaced = serving, "plugin loaded"
        );
        served.plugins.insert(path.to_owned(), plugin.clone());
        if latest {
            served.refused.remove(path);
        }
        if !same_tools {
            self.changed.send_modify(|g| *g += 1);
        }
        Ok(plugin)
    }

    /// Take the plugin of `path` out of service; loads of it under way end
    /// unapplied.
    pub(crate) fn unload(&self, path: &Path) -> bool {
        let mut served = self.served_mut();
        if let Some(loads) = served.loads.get_mut(path) {
            (loads.served, loads.refused) = (loads.begun, loads.begun);
        }
        served.refused.remove(path);
        let removed = served.remove(path) | served.announced.remove(path).is_some();
        // Calls waiting for a slot of the file end unrun; a file that comes
        // back gets slots of its own.
        if let Some((slots, _)) = served.slots.remove(path) {
            slots.close();
        }
        drop(served);
        if removed {
            tracing::info!(file = %path.display(), "plugin unloaded");
            self.changed.send_modify(|g| *g += 1);
        }
        removed
    }

    pub(crate) fn tools_changed(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub(crate) fn report(&self) -> LoadReport {
        let served = self.served();
        LoadReport {
            loaded: served.plugins.values().cloned().collect(),
            refused: served.refused.values().cloned().collect(),
        }
    }

    /// The served tools, sorted by name.
    pub(crate) fn tools(&self) -> Vec<ToolEntry> {
        let served = self.served();
        let mut tools: Vec<ToolEntry> = served
            .tools
            .values()
            .filter(|e| self.serves(&e.tool))
            .cloned()
            .collect();
        tools.sort_by(|a, b| a.tool.name.cmp(&b.tool.name));
        tools
    }

    /// The tools a session lists, with their plugins' names: the served
    /// ones and those announced by files still loading, enabled and in the
    /// profile, sorted by name.
    pub(crate) fn listed_tools(&self) -> Vec<(Arc<str>, Arc<Tool>)> {
        let served = self.served();
        let serving = (served.tools.values()).map(|e| (e.plugin.name.clone(), &e.tool));
        let announced =
            (served.announced.values()).flat_map(|a| a.tools.iter().map(|t| (a.plugin.clone(), t)));
        let mut tools: Vec<(Arc<str>, Arc<Tool>)> = serving
            .chain(announced)
            .filter(|(_, t)| self.serves(t))
            .map(|(p, t)| (p, t.clone()))
            .collect();
        tools.sort_by(|a, b| a.1.name.cmp(&b.1.name));
        tools
    }

    /// The served tool `name`. While plugins are still loading, waits for
    /// them before saying it does not exist; a tool that is announced
    /// waits only for the load of its file, and a name no plugin may serve
    /// (a companion tool's) waits for nothing.
    pub(crate) async fn tool(&self, name: &str) -> Option<ToolEntry> {
        if plugin::reserved(name) {
            return None;
        }
        // Served already, as nearly every call finds it: nothing to wait
        // for, and no subscription or scan of the announcements to pay.
        if let Some(t) = self.find(name) {
            return Some(t);
        }
        let mut loads = self.pending.subscribe();
        let mut list = self.changed.subscribe();
        loop {
            loads.mark_unchanged();
            list.mark_unchanged();
            // Before the lookup: an announcement gone by then was replaced
            // by what its load served, or refused.
            let announced = self.announced(name).is_some();
            if let Some(t) = self.find(name) {
                return Some(t);
            }
            if !announced {
                if self.loading() {
                    self.ready().await;
                }
                return self.find(name);
            }
            // Every counted load ends by changing `pending`, and an
            // announcement that goes changes the list, whichever comes
            // first.
            tokio::select! {
                ended = loads.changed() => if ended.is_err() {
                    return None;
                },
                _ = list.changed() => {}
            }
        }
    }

    /// Whether the tool `name`, served or announced by a file still
    /// loading, is cancellable; `None` while no such tool is known.
    pub(crate) fn cancellable(&self, name: &str) -> Option<bool> {
        match self.find(name) {
            Some(entry) => Some(entry.tool.cancellable),
            None => self.announced(name).map(|t| t.cancellable),
        }
    }

    /// The tool `name` as a file still loading announced it.
    fn announced(&self, name: &str) -> Option<Arc<Tool>> {
        let served = self.served();
        let mut tools = served.announced.values().flat_map(|a| a.tools.iter());
        tools.find(|t| t.name == name).cloned()
    }

    /// The served tool `name`, without waiting for loads.
    pub(crate) fn find(&self, name: &str) -> Option<ToolEntry> {
        self.served()
            .tools
            .get(name)
            .filter(|e| self.serves(&e.tool))
            .cloned()
    }

    /// Enabled, and in the profile when there is one.
    fn serves(&self, tool: &Tool) -> bool {
        tool.enabled
            && self
                .config
                .profile
                .as_ref()
                .is_none_or(|p| p.allows(&tool.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::copy_test_plugin;
    use serde_json::Value;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn validators_the_loads_left_are_built_once_nothing_is_loading() {
        let folder = tempfile::tempdir().expect("temp dir");
        let behave = copy_test_plugin("behave", folder.path());
        let slow = copy_test_plugin("describe-loop", folder.path());
        let cache = tempfile::tempdir().expect("temp dir");
        let mut config = HostConfig::default();
        config.engine.instances = 64;
        config.cache_dir = Some(cache.path().to_owned());
        // describe-loop's describe() runs until its 2 s are up.
        config.describe_timeout = std::time::Duration::from_secs(2);
        config.describe_fuel = u64::MAX;
        // The first load compiles behave and marks its schemas valid.
        let cold = Arc::new(Registry::new(config.clone()).expect("registry"));
        cold.start_loading_file(behave.clone());
        assert!(cold.ready().await.refused.is_empty());

        // Beside a plugin whose describe() runs for its 2 s, the warm
        // behave serves at once, its validators left to build.
        let warm = Arc::new(Registry::new(config).expect("registry"));
        let mut prepared = warm.prepared.subscribe();
        let mut changed = warm.tools_changed();
        warm.start_loading_file(slow);
        warm.start_loading_file(behave);
        let wait = std::time::Duration::from_secs(20);
        let served = tokio::time::timeout(wait, changed.wait_for(|n| *n > 0));
        served.await.expect("behave loads").expect("registry");
        let tools: Vec<Arc<Tool>> = (warm.served().plugins.values())
            .flat_map(|p| p.tools.clone())
            .collect();
        assert!(!tools.is_empty());
        assert!(warm.loading(), "describe-loop is still loading");
        assert!(
            tools.iter().all(|t| !t.prepared()),
            "no validator is built while a plugin loads"
        );

        let built = tokio::time::timeout(wait, prepared.wait_for(|n| *n > 0));
        built
            .await
            .expect("built once loading ends")
            .expect("registry");
        assert!(!warm.loading());
        assert!(tools.iter().all(|t| t.prepared()));
    }

    /// A registry over `cache` whose pool of 32 instances is all held, so
    /// that a load waits in `describe()` until the permits are dropped.
    async fn held_registry(cache: &Path) -> (Arc<Registry>, Vec<crate::engine::InstancePermit>) {
        let registry = Arc::new(Registry::new(warm_config(cache)).expect("registry"));
        let held = hold(&registry).await;
        (registry, held)
    }

    /// Every instance of `registry`'s pool.
    async fn hold(registry: &Registry) -> Vec<crate::engine::InstancePermit> {
        let mut held = Vec::new();
        for _ in 0..32 {
            let permit = registry.runtime.instance(crate::limits::Metering::Fuel);
            held.push(permit.await.expect("instance"));
        }
        held
    }

    fn warm_config(cache: &Path) -> HostConfig {
        let mut config = HostConfig::default();
        config.engine.instances = 32;
        config.cache_dir = Some(cache.to_owned());
        config.describe_timeout = std::time::Duration::from_secs(120);
        config
    }

    /// What `future` gives when polled once: `None` when it waits.
    async fn polled_once<F: Future + Unpin>(future: &mut F) -> Option<F::Output> {
        tokio::select! {
            biased;
            out = future => Some(out),
            () = std::future::ready(()) => None,
        }
    }

    fn names(tools: &[(Arc<str>, Arc<Tool>)]) -> Vec<String> {
        tools.iter().map(|(_, t)| t.name.clone()).collect()
    }

    /// A first load of behave, which leaves its description in `cache`.
    /// The built file, not a copy: the cache remembers a file's hash only
    /// once the file is a few seconds old, and a start announces only
    /// files whose hash it need not read.
    async fn described(cache: &Path) -> (PathBuf, Vec<String>) {
        let behave = crate::testing::root().join("dist/test-plugins/behave.wasm");
        let (report, tools) = loaded_once(cache, &behave).await;
        assert!(report.refused.is_empty());
        (behave, tools)
    }

    /// A first load of `file` over `cache`: what it gave, and the tools.
    async fn loaded_once(cache: &Path, file: &Path) -> (LoadReport, Vec<String>) {
        let cold = Arc::new(Registry::new(warm_config(cache)).expect("registry"));
        cold.start_loading_file(file.to_owned());
        (cold.ready().await, names(&cold.listed_tools()))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_start_lists_the_tools_the_last_load_described_before_the_load_ends() {
        let cache = tempfile::tempdir().expect("temp dir");
        let (behave, tools) = described(cache.path()).await;

        // describe() waits for an instance, and the pool is all held.
        let (warm, held) = held_registry(cache.path()).await;
        let changed = warm.tools_changed();
        warm.start_loading_file(behave);
        let wait = std::time::Duration::from_secs(20);
        tokio::time::timeout(wait, warm.listed())
            .await
            .expect("listed before the load ends");
        assert_eq!(names(&warm.listed_tools()), tools);
        assert!(warm.loading() && warm.tools().is_empty(), "still loading");
        let announced = *changed.borrow();
        assert_eq!(announced, 1, "announcing changed the list");

        // A call of an announced tool waits for the load, then finds it.
        let mut lookup = std::pin::pin!(warm.tool("ok"));
        let first = polled_once(&mut lookup).await;
        assert!(first.is_none(), "the lookup waits: {first:?}");
        drop(held);
        let found = tokio::time::timeout(wait, lookup).await.expect("load ends");
        assert_eq!(
            found.map(|e| e.plugin.name().to_owned()).as_deref(),
            Some("behave")
        );
        assert!(warm.ready().await.refused.is_empty());
        assert_eq!(names(&warm.listed_tools()), tools);
        assert_eq!(
            *changed.borrow(),
            announced,
            "serving what it announced changes nothing"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_start_lists_without_waiting_for_a_plugin_its_last_load_refused() {
        let cache = tempfile::tempdir().expect("temp dir");
        let trap = crate::testing::root().join("dist/test-plugins/describe-trap.wasm");
        assert_eq!(loaded_once(cache.path(), &trap).await.0.refused.len(), 1);

        let (warm, held) = held_registry(cache.path()).await;
        let changed = warm.tools_changed();
        warm.start_loading_file(trap);
        let wait = std::time::Duration::from_secs(20);
        tokio::time::timeout(wait, warm.listed())
            .await
            .expect("listed before the load ends");
        assert!(warm.loading() && warm.listed_tools().is_empty());
        drop(held);
        assert_eq!(warm.ready().await.refused.len(), 1, "refused again");
        assert_eq!(*changed.borrow(), 0, "nothing was listed, nothing changed");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_name_an_announced_plugin_lists_is_taken_while_it_loads() {
        let cache = tempfile::tempdir().expect("temp dir");
        let compute = crate::testing::root().join("dist/plugins/rust-compute.wasm");
        let clash = crate::testing::root().join("dist/test-plugins/clash.wasm");
        let (report, _) = loaded_once(cache.path(), &compute).await;
        assert!(report.refused.is_empty());

        // `clash` provides `word_count` too; it loads while rust-compute,
        // which served the name at its last load, is announced.
        let warm = Arc::new(Registry::new(warm_config(cache.path())).expect("registry"));
        let clashing = warm.check(&clash).await.expect("clash loads on its own");
        let held = hold(&warm).await;
        warm.start_loading_file(compute.clone());
        warm.listed().await;
        let load = warm.begin_load(&clash);
        let refused = warm.register(load, Ok(clashing)).expect_err("refused");
        assert!(
            matches!(&refused.kind, LoadErrorKind::NameClash { tool, other } if tool == "word_count" && other == &compute),
            "{refused:?}"
        );
        let names = names(&warm.listed_tools());
        assert_eq!(
            names.iter().filter(|n| *n == "word_count").count(),
            1,
            "{names:?}"
        );
        drop(held);
        assert_eq!(warm.ready().await.loaded.len(), 1);
    }

    /// A file rewritten while it loads is loaded again (the folder's watch
    /// does so). Whichever of the two loads ends first, the later version
    /// serves in the end; when it is refused, the earlier serves and the
    /// refusal is recorded.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_earlier_load_of_a_file_never_undoes_a_later_one() {
        let cache = tempfile::tempdir().expect("temp dir");
        let folder = tempfile::tempdir().expect("temp dir");
        let file = folder.path().join("plugin.wasm");
        let holding = |name: &str| {
            let built = crate::testing::root().join(format!("dist/test-plugins/{name}.wasm"));
            std::fs::copy(built, &file).expect("copy");
        };
        let sorted_names = |tools: &[Arc<Tool>]| {
            let mut names: Vec<String> = tools.iter().map(|t| t.name.clone()).collect();
            names.sort();
            names
        };
        let serving = |r: &Registry| -> Vec<String> {
            r.tools().iter().map(|e| e.tool.name.clone()).collect()
        };
        for (later_version, earlier_ends_first) in [
            ("clash", true),
            ("clash", false),
            ("describe-trap", true),
            ("describe-trap", false),
        ] {
            let case = format!("{later_version}, earlier ends first: {earlier_ends_first}");
            let registry = Arc::new(Registry::new(warm_config(cache.path())).expect("registry"));
            // What each load read: behave, then the later version.
            holding("behave");
            let earlier = registry.check(&file).await;
            let behave_tools = sorted_names(&earlier.as_ref().expect("behave loads").tools);
            holding(later_version);
            let later = registry.check(&file).await;
            let later_tools = later.as_ref().ok().map(|p| sorted_names(&p.tools));

            let (first, second) = (registry.begin_load(&file), registry.begin_load(&file));
            let earlier_ended = if earlier_ends_first {
                let ended = registry.register(first, earlier);
                let _ = registry.register(second, later);
                ended
            } else {
                let _ = registry.register(second, later);
                registry.register(first, earlier)
            };
            match &later_tools {
                Some(tools) => {
                    assert_eq!(&serving(&registry), tools, "{case}");
                    assert!(registry.report().refused.is_empty(), "{case}");
                    assert_eq!(
                        matches!(&earlier_ended, Err(e) if matches!(e.kind, LoadErrorKind::Superseded)),
                        !earlier_ends_first,
                        "{case}: {earlier_ended:?}"
                    );
                }
                None => {
                    assert_eq!(serving(&registry), behave_tools, "{case}");
                    assert_eq!(registry.report().refused.len(), 1, "{case}");
                    assert!(earlier_ended.is_ok(), "{case}");
                }
            }

            // A load whose future is dropped ends too; nothing is kept of a
            // file with no load under way.
            drop(registry.begin_load(&file));
            assert!(registry.served().loads.is_empty(), "{case}");
        }
    }

    /// A load dropped before it ends takes its file's announcement with it
    /// once no other load of the file is under way: nothing would serve
    /// the tools listed, and a call of one would wait for ever.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_load_takes_its_announcement_when_it_was_the_last() {
        let cache = tempfile::tempdir().expect("temp dir");
        let (behave, tools) = described(cache.path()).await;
        let warm = Arc::new(Registry::new(warm_config(cache.path())).expect("registry"));
        let changed = warm.tools_changed();
        let (first, second) = (warm.begin_load(&behave), warm.begin_load(&behave));
        let announcement = plugin::announcement(warm.runtime.cache(), &behave);
        assert!(warm.announce(&second, announcement.expect("in the cache")));
        assert_eq!(names(&warm.listed_tools()), tools);
        let announced = *changed.borrow();

        drop(first);
        assert_eq!(names(&warm.listed_tools()), tools, "the other load goes on");
        drop(second);
        assert!(warm.listed_tools().is_empty(), "nothing left to serve them");
        assert_eq!(*changed.borrow(), announced + 1, "the list changed");
        let wait = std::time::Duration::from_secs(20);
        let found = tokio::time::timeout(wait, warm.tool("ok"));
        assert!(found.await.expect("no wait").is_none());
    }

    /// A start's load of a file dropped before the load ends (its task
    /// panicked) leaves nothing to wait on: the file no longer counts as
    /// loading or unlisted, its announcement is gone, and a call of one of
    /// its tools that was waiting for the load is told there is no such
    /// tool.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_start_load_dropped_before_it_ends_leaves_nothing_to_wait_on() {
        let cache = tempfile::tempdir().expect("temp dir");
        let (behave, tools) = described(cache.path()).await;
        let warm = Arc::new(Registry::new(warm_config(cache.path())).expect("registry"));
        let mut start = warm.start_load(&behave);
        let announcement = plugin::announcement(warm.runtime.cache(), &behave);
        assert!(warm.announce(&start.load, announcement.expect("in the cache")));
        start.counted.listed();
        assert_eq!(names(&warm.listed_tools()), tools);
        assert!(warm.loading() && !warm.listing());

        let mut lookup = std::pin::pin!(warm.tool("ok"));
        let first = polled_once(&mut lookup).await;
        assert!(first.is_none(), "the lookup waits for the load: {first:?}");
        drop(start);
        let wait = std::time::Duration::from_secs(20);
        let found = tokio::time::timeout(wait, lookup).await;
        assert!(found.expect("the lookup waits no more").is_none());
        assert!(!warm.loading() && !warm.listing(), "nothing counted");
        assert!(warm.listed_tools().is_empty(), "nothing left to serve them");
    }

    /// An unload as a start begins voids the start's load of the file: its
    /// tools are not announced after it, nor served, and a call of one
    /// does not wait.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_file_unloaded_as_a_start_begins_is_neither_announced_nor_served() {
        let cache = tempfile::tempdir().expect("temp dir");
        let (behave, _) = described(cache.path()).await;
        let (warm, held) = held_registry(cache.path()).await;
        warm.start_loading_file(behave.clone());
        warm.unload(&behave);
        let wait = std::time::Duration::from_secs(20);
        tokio::time::timeout(wait, warm.listed())
            .await
            .expect("listed");
        assert!(
            warm.listed_tools().is_empty(),
            "{:?}",
            names(&warm.listed_tools())
        );
        drop(held);
        let report = tokio::time::timeout(wait, warm.ready())
            .await
            .expect("ends");
        assert!(report.loaded.is_empty() && report.refused.is_empty());
        let found = tokio::time::timeout(wait, warm.tool("ok")).await;
        assert!(matches!(found, Ok(None)), "{found:?}");
    }

    /// An earlier load refused for a name clash, ending after a later
    /// version was refused, leaves the later refusal recorded.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_earlier_name_clash_does_not_replace_a_later_refusal() {
        let cache = tempfile::tempdir().expect("temp dir");
        let folder = tempfile::tempdir().expect("temp dir");
        let registry = Arc::new(Registry::new(warm_config(cache.path())).expect("registry"));
        // `clash` provides `word_count`, which rust-compute serves.
        let compute = crate::testing::root().join("dist/plugins/rust-compute.wasm");
        registry
            .load_file(&compute)
            .await
            .expect("rust-compute serves");
        let file = folder.path().join("plugin.wasm");
        let holding = |name: &str| {
            let built = crate::testing::root().join(format!("dist/test-plugins/{name}.wasm"));
            std::fs::copy(built, &file).expect("copy");
        };
        holding("clash");
        let clashing = registry.check(&file).await.expect("clash loads on its own");
        holding("describe-trap");
        let trapping = registry
            .check(&file)
            .await
            .expect_err("describe-trap is refused");

        let (first, second) = (registry.begin_load(&file), registry.begin_load(&file));
        let _ = registry.register(second, Err(trapping));
        let clashed = registry.register(first, Ok(clashing)).expect_err("a clash");
        assert!(
            matches!(clashed.kind, LoadErrorKind::NameClash { .. }),
            "{clashed:?}"
        );
        let refused = registry.report().refused;
        assert!(
            matches!(&refused[..], [e] if matches!(e.kind, LoadErrorKind::DescribeTrapped(_))),
            "{refused:?}"
        );
    }

    /// A load that the file's unload came during serves nothing; one begun
    /// after serves.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_load_under_way_when_its_file_is_unloaded_is_not_applied() {
        let cache = tempfile::tempdir().expect("temp dir");
        let folder = tempfile::tempdir().expect("temp dir");
        let file = copy_test_plugin("behave", folder.path());
        let registry = Arc::new(Registry::new(warm_config(cache.path())).expect("registry"));
        let mut load = std::pin::pin!(registry.load_file(&file));
        let first = tokio::select! {
            biased;
            loaded = &mut load => Some(loaded),
            () = std::future::ready(()) => None,
        };
        assert!(first.is_none(), "the load is under way: {first:?}");
        assert!(!registry.unload(&file), "nothing serves yet");
        let overtaken = load.await;
        assert!(
            matches!(&overtaken, Err(e) if matches!(e.kind, LoadErrorKind::Superseded)),
            "{overtaken:?}"
        );
        assert!(registry.tools().is_empty() && registry.report().refused.is_empty());
        // A load begun after the unload serves.
        registry.load_file(&file).await.expect("serves");
        assert!(!registry.tools().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_load_that_describes_other_tools_than_it_announced_changes_the_list() {
        let cache = tempfile::tempdir().expect("temp dir");
        let (behave, tools) = described(cache.path()).await;
        // The remembered description gains a tool the plugin does not have.
        let described = std::fs::read_dir(cache.path().join("described"))
            .expect("descriptions")
            .map(|e| e.expect("entry").path())
            .find(|p| p.extension().is_some_and(|x| x == "json"))
            .expect("behave's description");
        let mut specs: Vec<Value> =
            serde_json::from_str(&std::fs::read_to_string(&described).expect("read"))
                .expect("json");
        let mut ghost = specs[0].clone();
        ghost["name"] = "ghost".into();
        specs.push(ghost);
        std::fs::write(&described, serde_json::to_string(&specs).expect("json")).expect("write");

        let (warm, held) = held_registry(cache.path()).await;
        let mut changed = warm.tools_changed();
        warm.start_loading_file(behave);
        let wait = std::time::Duration::from_secs(20);
        tokio::time::timeout(wait, warm.listed())
            .await
            .expect("listed before the load ends");
        assert!(names(&warm.listed_tools()).contains(&"ghost".to_owned()));
        changed.mark_unchanged();
        drop(held);
        assert!(warm.ready().await.refused.is_empty());
        assert!(changed.has_changed().expect("registry"), "the list changed");
        assert_eq!(names(&warm.listed_tools()), tools);
        // The load remembered what it described.
        let text = std::fs::read_to_string(&described).expect("read");
        assert!(!text.contains("ghost"), "{text}");
    }
}
