//! The host: a plugin folder loaded into one engine, the tools it serves,
//! and the sessions that call them.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context;
use tokio::sync::{broadcast, watch};

use crate::call::CallOutcome;
use crate::config::HostConfig;
use crate::engine::Runtime;
use crate::error::LoadError;
use crate::folder::{FolderChanges, FolderWatch};
use crate::plugin::Plugin;
use crate::records::HostEvent;
use crate::registry::{LoadReport, Loads, Registry, ToolEntry};
use crate::session::{CancelError, Session, SessionOptions, WeakSession};
use crate::startup::SetUpGate;
use crate::store::{OpeningStore, StoreOptions, TaskStore};

/// A toolhost: an engine, the plugins loaded into it, their tools, and the
/// sessions that call them.
///
/// Cheap to clone; clones share everything.
///
/// ```no_run
/// # async fn demo() -> anyhow::Result<()> {
/// let host = toolhost::Host::new(toolhost::HostConfig::default())?;
/// let report = host.load_dir("dist/plugins").await?;
/// for refused in &report.refused {
///     eprintln!("refused {refused}");
/// }
/// let outcome = host.call("word_count", r#"{"text": "one two"}"#).await;
/// println!("{}", outcome.model_text());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Host {
    registry: Arc<Registry>,
    /// The sessions opened here, for a cancel by task id from outside any
    /// of them; the gone ones are dropped as new ones open.
    sessions: Arc<Mutex<Vec<WeakSession>>>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").finish_non_exhaustive()
    }
}

impl Host {
    /// A host with no plugins yet.
    pub fn new(config: HostConfig) -> anyhow::Result<Self> {
        Ok(Self::serving(Registry::new(config)?))
    }

    fn serving(registry: Registry) -> Self {
        Self {
            registry: Arc::new(registry),
            sessions: Arc::default(),
        }
    }

    /// A host that serves while it is still being set up: its engine is
    /// set up on a blocking thread (a few milliseconds, mostly reserving
    /// the instance pool) and `store` runs on a task of its own, and the
    /// host is returned at once. Both begin once the tools the compile
    /// cache remembers of unchanged plugins are listed
    /// ([`start_loading`](Self::start_loading)), which a client's
    /// `tools/list` waits for and they would slow on a small machine, or
    /// as soon as something needs them: a load, [`set_up`](Self::set_up),
    /// a call's record, a read of the store. Loads wait for the engine, and
    /// an engine that cannot be set up refuses every load with why
    /// ([`set_up`](Self::set_up) says it once).
    /// Until the store is open, the records calls write wait for it in
    /// order (at most [`StoreOptions::queue`](crate::store::StoreOptions::queue)
    /// writes; past that they are dropped and counted in its health), and
    /// reads wait for it. Opening a new SQLite store syncs its file several
    /// times, which no client's first requests need to wait for. `store`
    /// replaces any [`HostConfig::store`]. Must be called within a tokio
    /// runtime.
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// use std::path::Path;
    /// use toolhost::store::{StoreOptions, open_or_memory};
    ///
    /// // SQLite blocks: open it on a blocking thread. A store that cannot
    /// // be opened leaves one in memory whose health says why.
    /// let store = async {
    ///     let path = Path::new("tasks.db");
    ///     let opening = tokio::task::spawn_blocking(move || open_or_memory(path, StoreOptions::default()));
    ///     opening.await.expect("opening the store panicked")
    /// };
    /// let host = toolhost::Host::opening(toolhost::HostConfig::default(), store);
    /// host.set_up().await?;
    /// # Ok(()) }
    /// ```
    pub fn opening(
        mut config: HostConfig,
        store: impl Future<Output = Arc<dyn TaskStore>> + Send + 'static,
    ) -> Self {
        let set_up = SetUpGate::default();
        let runtime = Runtime::building(&config.engine, config.cache_dir.clone(), set_up.clone());
        let options = StoreOptions {
            retention: config.records,
            ..StoreOptions::default()
        };
        config.store = Some(OpeningStore::spawn(store, options, set_up));
        Self::serving(Registry::with_runtime(config, runtime))
    }

    /// Wait until the host's engine is set up, or say why it cannot be (a
    /// host made by [`opening`](Self::opening) sets it up in the
    /// background, and begins now if it has not; one made by
    /// [`new`](Self::new) has it already).
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn set_up(&self) -> anyhow::Result<()> {
        let runtime = &self.registry.runtime;
        (runtime.ready(crate::limits::Metering::Fuel).await)
            .map(|_| ())
            .context("setting up the engine")
    }

    /// Why the host's engine cannot be set up, once its set-up has begun
    /// and failed; never if it succeeds. Unlike [`set_up`](Self::set_up),
    /// waiting for it does not begin the set-up of a host made by
    /// [`opening`](Self::opening): a command watches it beside what it
    /// does, to end with why.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn set_up_failed(&self) -> anyhow::Error {
        (self.registry.runtime.set_up_failed().await).context("setting up the engine")
    }

    pub fn config(&self) -> &HostConfig {
        &self.registry.config
    }

    /// Start loading every `*.wasm` in `dir` in the background and return at
    /// once. Each plugin serves as soon as it is ready; [`ready`](Self::ready)
    /// waits for all of them. Plugins the compile cache already lists take
    /// turns to load on all runtime threads but one, which stays free for
    /// the host's clients meanwhile.
    pub fn start_loading(&self, dir: impl AsRef<Path>) -> anyhow::Result<()> {
        let files = self.registry.list(dir.as_ref())?;
        self.registry.start_loading_files(files, Loads::InTurns);
        Ok(())
    }

    /// Wait until every plugin that started loading is loaded or refused.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn ready(&self) -> LoadReport {
        self.registry.ready().await
    }

    /// Whether plugins that started loading are still loading.
    pub fn loading(&self) -> bool {
        self.registry.loading()
    }

    /// Wait until the tools of every plugin that started loading are
    /// listed ([`Session::tools`]): the plugin is loaded or refused, or
    /// the compile cache had its tools from an earlier load of the same
    /// component and manifest. Those are listed while it loads, and a call
    /// of one waits for the load; if the load then describes other tools,
    /// [`tools_changed`](Self::tools_changed) says so.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn listed(&self) {
        self.registry.listed().await;
    }

    /// [`listed`](Self::listed), and the count of
    /// [`tools_changed`](Self::tools_changed) when the last plugin was
    /// listed: a count past it is a change after the listing.
    pub(crate) async fn listed_at(&self) -> u64 {
        self.registry.listed().await
    }

    /// Whether plugins that started loading are still to be listed (see
    /// [`listed`](Self::listed)).
    pub fn listing(&self) -> bool {
        self.registry.listing()
    }

    /// Load every `*.wasm` in `dir` and wait for all of them.
    pub async fn load_dir(&self, dir: impl AsRef<Path>) -> anyhow::Result<LoadReport> {
        // The caller waits for every load: they take every core at once.
        let files = self.registry.list(dir.as_ref())?;
        self.registry.start_loading_files(files, Loads::AtOnce);
        Ok(self.ready().await)
    }

    /// Load one plugin file and wait for it. A new version of a file that
    /// serves replaces it; when the new version is refused the old one goes
    /// on serving. Of loads of a file under way at once (the folder's watch
    /// reloads a file that changes), an earlier one never undoes a later
    /// one: it ends with
    /// [`LoadErrorKind::Superseded`](crate::LoadErrorKind::Superseded)
    /// when a later version served first, or when it is refused after a
    /// later version was refused, as does a load under way when the file
    /// is [`unload`](Self::unload)ed.
    ///
    /// # Cancel safety
    /// Dropping the future ends the load unapplied, and changes nothing for
    /// the file's other loads.
    pub async fn load_file(&self, path: impl AsRef<Path>) -> Result<Arc<Plugin>, LoadError> {
        self.registry.load_file(path.as_ref()).await
    }

    /// Check a plugin file without serving it: what it provides and asks
    /// for, or why it is refused.
    pub async fn check(&self, path: impl AsRef<Path>) -> Result<Plugin, LoadError> {
        self.registry.check(path.as_ref()).await
    }

    /// Take the plugin of `path` out of service. Calls already running on
    /// it finish on the version they started with; calls still waiting for
    /// one of its `max-concurrency` slots end without running, as the tool
    /// being unavailable; loads of the file under way are not applied.
    pub fn unload(&self, path: &Path) -> bool {
        self.registry.unload(path)
    }

    /// Keep the tools in step with `dir`: load what appears or changes,
    /// unload what disappears, until the returned watch is dropped. Load the
    /// folder first (for instance with [`start_loading`](Self::start_loading));
    /// this first applies what changed since that listing, then follows
    /// changes.
    pub fn watch_folder(&self, dir: impl AsRef<Path>) -> anyhow::Result<FolderWatch> {
        Ok(self.follow_folder(FolderChanges::watch(dir)?))
    }

    /// [`watch_folder`](Self::watch_folder) with a watch set up beforehand,
    /// for instance while the host was opening and the folder was listed:
    /// what changed since the listing (the watch may have been set up
    /// after it) and the changes the watch kept are applied first.
    pub fn follow_folder(&self, changes: FolderChanges) -> FolderWatch {
        crate::folder::follow(self.registry.clone(), changes)
    }

    /// A counter that goes up whenever the tool list changes (a plugin
    /// loaded, replaced or unloaded).
    pub fn tools_changed(&self) -> watch::Receiver<u64> {
        self.registry.tools_changed()
    }

    /// What is loaded and what was refused so far.
    pub fn report(&self) -> LoadReport {
        self.registry.report()
    }

    /// The served tools (enabled, and in the profile), sorted by name.
    pub fn tools(&self) -> Vec<ToolEntry> {
        self.registry.tools()
    }

    /// The served tool `name`. While plugins are still loading, waits for
    /// them before saying it does not exist; a name no plugin may serve
    /// (`toolhost_…`, the companion tools') is `None` at once.
    pub async fn tool(&self, name: &str) -> Option<ToolEntry> {
        self.registry.tool(name).await
    }

    /// Where the records of calls are kept (B31): the configured
    /// [`HostConfig::store`], or a memory store.
    pub fn store(&self) -> &Arc<dyn TaskStore> {
        &self.registry.store
    }

    /// The events of every call of every session from now on (B29), each
    /// with its task id: what a dashboard shows live. A subscriber that
    /// falls more than 4096 events behind loses the oldest
    /// ([`broadcast::error::RecvError::Lagged`]).
    pub fn subscribe(&self) -> broadcast::Receiver<HostEvent> {
        self.registry
            .events
            .get_or_init(|| broadcast::channel(4096).0)
            .subscribe()
    }

    /// How much of the instance pool is in use, as it changes: every call
    /// and `describe()` holds an instance while it runs, and past the pool's
    /// size ([`EngineConfig::instances`](crate::EngineConfig)) they wait for
    /// one. Plugins with `metering = "epoch"` have a pool of their own, not
    /// counted here.
    pub fn instances(&self) -> watch::Receiver<crate::InstanceUse> {
        self.registry.runtime.instance_use()
    }

    /// Cancel a running or queued call of any session, found by its task
    /// id (B20–B22): as [`Session::cancel`] in the session that runs it.
    pub fn cancel_task(&self, task_id: &str) -> Result<(), CancelError> {
        let sessions: Vec<Session> = (self.sessions().iter())
            .filter_map(WeakSession::upgrade)
            .collect();
        sessions
            .iter()
            .find_map(|s| s.cancel_task(task_id))
            .unwrap_or_else(|| Err(CancelError::NotFound(task_id.to_owned())))
    }

    fn sessions(&self) -> MutexGuard<'_, Vec<WeakSession>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Open a session: one conversation's calls (see [`Session`]).
    pub fn open_session(&self, options: SessionOptions) -> Session {
        let session = Session::open(self.registry.clone(), options);
        let mut sessions = self.sessions();
        sessions.retain(|s| !s.is_gone());
        sessions.push(session.downgrade());
        session
    }

    /// Call a tool once and wait for its end (B1, B5, B7, B8, B23): a
    /// session of one call, whose updates go nowhere.
    pub async fn call(&self, tool: &str, arguments: &str) -> CallOutcome {
        let options = SessionOptions {
            delivery: false,
            ..Default::default()
        };
        self.open_session(options)
            .call_to_end(&crate::ids::call_id(), tool, arguments)
            .await
    }
}
