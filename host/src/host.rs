//! The host: a plugin folder loaded into one engine, and the tools it serves.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use wasmtime::Engine;
use wasmtime::component::Linker;

use crate::cache::CompileCache;
use crate::call::{self, CallOutcome};
use crate::config::Profile;
use crate::engine::EngineConfig;
use crate::error::{CallError, LoadError};
use crate::limits::Limits;
use crate::plugin::{self, Plugin, Tool};
use crate::sandbox::{CallControl, CallIdentity, CallState};
use crate::templates::Templates;

/// Host-wide settings.
///
/// Defaults:
/// - `limits`: [`Limits::default`], for plugins whose manifest sets none
/// - `engine`: [`EngineConfig::default`]
/// - `cache_dir`: [`CompileCache::default_dir`]; `None` disables the cache
/// - `describe_fuel`: 2 000 000 000 units for a plugin's `describe()`
/// - `describe_timeout`: 10 seconds for a plugin's `describe()`
/// - `templates`: [`Templates::default`], the texts sessions answer with
/// - `profiles`: none; `profile`: none (every enabled tool is served)
#[derive(Debug, Clone)]
pub struct HostConfig {
    pub limits: Limits,
    pub templates: Templates,
    /// The profiles defined in the configuration file.
    pub profiles: BTreeMap<String, Profile>,
    /// The profile in use: only its tools are listed and callable.
    pub profile: Option<Profile>,
    pub engine: EngineConfig,
    pub cache_dir: Option<PathBuf>,
    pub describe_fuel: u64,
    pub describe_timeout: Duration,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            templates: Templates::default(),
            profiles: BTreeMap::new(),
            profile: None,
            engine: EngineConfig::default(),
            cache_dir: CompileCache::default_dir(),
            describe_fuel: 2_000_000_000,
            describe_timeout: Duration::from_secs(10),
        }
    }
}

/// What every plugin of a host shares.
pub(crate) struct HostShared {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<CallState>,
    pub(crate) cache: CompileCache,
    pub(crate) config: HostConfig,
}

/// A tool as the host serves it, with the plugin that provides it.
#[derive(Debug, Clone)]
pub struct ToolEntry {
    pub plugin: Arc<Plugin>,
    pub tool: Arc<Tool>,
}

impl ToolEntry {
    /// The tool as JSON: name, plugin, description, schemas and behaviour.
    pub fn to_json(&self) -> serde_json::Value {
        let t = &self.tool;
        serde_json::json!({
            "name": t.name,
            "plugin": self.plugin.name(),
            "description": t.description,
            "input_schema": t.input_schema,
            "output_schema": t.output_schema,
            "on_duplicate": t.on_duplicate.as_str(),
            "duplicate_scope": t.duplicate_scope.as_str(),
            "cancellable": t.cancellable,
            "delivery": t.delivery.as_str(),
        })
    }
}

#[derive(Default)]
struct Registry {
    /// By file path.
    plugins: BTreeMap<PathBuf, Arc<Plugin>>,
    /// Every tool of every loaded plugin, enabled or not, by name.
    tools: HashMap<String, ToolEntry>,
    /// The latest refusal of each file that is not serving that version.
    refused: BTreeMap<PathBuf, LoadError>,
}

impl Registry {
    fn remove(&mut self, path: &Path) -> bool {
        let Some(old) = self.plugins.remove(path) else {
            return false;
        };
        self.tools.retain(|_, e| !Arc::ptr_eq(&e.plugin, &old));
        true
    }
}

/// What loading a folder gave.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub loaded: Vec<Arc<Plugin>>,
    pub refused: Vec<LoadError>,
}

/// A toolhost: an engine, the plugins loaded into it, and their tools.
///
/// Cheap to clone; clones share everything.
///
/// ```no_run
/// # async fn demo() -> anyhow::Result<()> {
/// let host = toolhost::Host::new(toolhost::HostConfig::default())?;
/// let report = host.load_dir("plugins-dist").await?;
/// for refused in &report.refused {
///     eprintln!("refused {refused}");
/// }
/// let outcome = host.call("word_count", r#"{"text": "one two"}"#).await;
/// println!("{}", outcome.model_text());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Host {
    shared: Arc<HostShared>,
    registry: Arc<RwLock<Registry>>,
    /// Number of plugin files still loading.
    pending: watch::Sender<usize>,
    /// Bumped on every change of the tool list.
    changed: watch::Sender<u64>,
    next_call: Arc<AtomicU64>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").finish_non_exhaustive()
    }
}

impl Host {
    /// A host with no plugins yet.
    pub fn new(config: HostConfig) -> anyhow::Result<Self> {
        let engine = crate::engine::build(&config.engine)?;
        let linker = crate::sandbox::linker(&engine)?;
        let cache = CompileCache::new(config.cache_dir.clone(), &engine);
        Ok(Self {
            shared: Arc::new(HostShared {
                engine,
                linker,
                cache,
                config,
            }),
            registry: Arc::default(),
            pending: watch::Sender::new(0),
            changed: watch::Sender::new(0),
            next_call: Arc::new(AtomicU64::new(1)),
        })
    }

    pub fn config(&self) -> &HostConfig {
        &self.shared.config
    }

    /// Start loading every `*.wasm` in `dir` in the background and return at
    /// once. Each plugin serves as soon as it is ready; [`ready`](Self::ready)
    /// waits for all of them.
    pub fn start_loading(&self, dir: impl AsRef<Path>) -> anyhow::Result<()> {
        let dir = dir.as_ref();
        let dir = &dir
            .canonicalize()
            .map_err(|e| anyhow::anyhow!("cannot read the plugin folder {}: {e}", dir.display()))?;
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| anyhow::anyhow!("cannot read the plugin folder {}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "wasm") && p.is_file())
            .collect();
        files.sort();
        for file in files {
            self.start_loading_file(file);
        }
        Ok(())
    }

    /// Start loading one plugin file in the background.
    pub fn start_loading_file(&self, path: PathBuf) {
        self.pending.send_modify(|n| *n += 1);
        let host = self.clone();
        tokio::spawn(async move {
            let result = plugin::load(&host.shared, &path).await;
            // A refusal is logged and kept in the report.
            let _ = host.register(&path, result);
            host.pending.send_modify(|n| *n -= 1);
        });
    }

    /// Wait until every plugin that started loading is loaded or refused.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn ready(&self) -> LoadReport {
        let mut rx = self.pending.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
        self.report()
    }

    /// Load every `*.wasm` in `dir` and wait for all of them.
    pub async fn load_dir(&self, dir: impl AsRef<Path>) -> anyhow::Result<LoadReport> {
        self.start_loading(dir)?;
        Ok(self.ready().await)
    }

    /// Load one plugin file and wait for it.
    pub async fn load_file(&self, path: impl AsRef<Path>) -> Result<Arc<Plugin>, LoadError> {
        let path = path.as_ref().to_owned();
        let result = plugin::load(&self.shared, &path).await;
        self.register(&path, result)
    }

    /// Check a plugin file without serving it: what it provides and asks
    /// for, or why it is refused.
    pub async fn check(&self, path: impl AsRef<Path>) -> Result<Plugin, LoadError> {
        plugin::load(&self.shared, path.as_ref()).await
    }

    /// Put a loaded plugin into service, or record why it was refused. A
    /// plugin replacing an earlier version of the same file takes over its
    /// tools; when the new version is refused the old one goes on serving.
    fn register(
        &self,
        path: &Path,
        result: Result<Plugin, LoadError>,
    ) -> Result<Arc<Plugin>, LoadError> {
        let mut reg = self.registry.write().unwrap_or_else(|p| p.into_inner());
        let serving = reg.plugins.contains_key(path);
        let refuse = |reg: &mut Registry, e: LoadError| {
            if serving {
                tracing::error!(file = %path.display(), reason = %e.reason, "new version refused; the loaded version goes on serving");
            } else {
                tracing::error!(file = %path.display(), reason = %e.reason, "plugin refused");
            }
            reg.refused.insert(path.to_owned(), e.clone());
            Err(e)
        };
        let plugin = match result {
            Ok(p) => p,
            Err(e) => return refuse(&mut reg, e),
        };
        for tool in &plugin.tools {
            if let Some(other) = reg.tools.get(&tool.name)
                && other.plugin.path != plugin.path
            {
                let e = LoadError::new(
                    path,
                    format!(
                        "the tool name `{}` is already provided by {}",
                        tool.name,
                        other.plugin.path.display()
                    ),
                );
                return refuse(&mut reg, e);
            }
        }
        let plugin = Arc::new(plugin);
        reg.remove(path);
        for tool in &plugin.tools {
            reg.tools.insert(
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
        reg.plugins.insert(path.to_owned(), plugin.clone());
        reg.refused.remove(path);
        drop(reg);
        self.changed.send_modify(|g| *g += 1);
        Ok(plugin)
    }

    /// Take the plugin of `path` out of service. Calls already running on
    /// it finish on the version they started with.
    pub fn unload(&self, path: &Path) -> bool {
        let mut reg = self.registry.write().unwrap_or_else(|p| p.into_inner());
        reg.refused.remove(path);
        let removed = reg.remove(path);
        drop(reg);
        if removed {
            tracing::info!(file = %path.display(), "plugin unloaded");
            self.changed.send_modify(|g| *g += 1);
        }
        removed
    }

    /// A counter that goes up whenever the tool list changes (a plugin
    /// loaded, replaced or unloaded).
    pub fn tools_changed(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// What is loaded and what was refused so far.
    pub fn report(&self) -> LoadReport {
        let reg = self.registry.read().unwrap_or_else(|p| p.into_inner());
        LoadReport {
            loaded: reg.plugins.values().cloned().collect(),
            refused: reg.refused.values().cloned().collect(),
        }
    }

    /// The enabled tools, sorted by name.
    pub fn tools(&self) -> Vec<ToolEntry> {
        let reg = self.registry.read().unwrap_or_else(|p| p.into_inner());
        let mut tools: Vec<ToolEntry> = reg
            .tools
            .values()
            .filter(|e| self.serves(e))
            .cloned()
            .collect();
        tools.sort_by(|a, b| a.tool.name.cmp(&b.tool.name));
        tools
    }

    /// The enabled tool `name`. While plugins are still loading, waits for
    /// them before saying it does not exist.
    pub async fn tool(&self, name: &str) -> Option<ToolEntry> {
        if let Some(t) = self.find(name) {
            return Some(t);
        }
        if *self.pending.borrow() > 0 {
            self.ready().await;
            return self.find(name);
        }
        None
    }

    fn find(&self, name: &str) -> Option<ToolEntry> {
        let reg = self.registry.read().unwrap_or_else(|p| p.into_inner());
        reg.tools.get(name).filter(|e| self.serves(e)).cloned()
    }

    /// Enabled, and in the profile when there is one.
    fn serves(&self, e: &ToolEntry) -> bool {
        e.tool.enabled
            && self
                .shared
                .config
                .profile
                .as_ref()
                .is_none_or(|p| p.allows(&e.tool.name))
    }

    /// A new call id, unique within this host.
    pub fn new_call_id(&self) -> String {
        format!("call_{}", self.next_call.fetch_add(1, Ordering::Relaxed))
    }

    /// Call a tool and wait for its result (B1, B5, B7, B8, B23). Updates the
    /// tool sends are logged; sessions (which deliver them) build on
    /// [`run_call`](Self::run_call).
    pub async fn call(&self, tool: &str, arguments: &str) -> CallOutcome {
        let call_id = self.new_call_id();
        self.run_call(
            CallIdentity {
                tool: tool.to_owned(),
                call_id,
                ..Default::default()
            },
            arguments,
            Arc::new(CallControl::default()),
            None,
        )
        .await
    }

    /// Validate and run one call under `identity` (whose `plugin` is filled
    /// in here), controlled by `control`, sending updates to `updates`.
    pub async fn run_call(
        &self,
        identity: CallIdentity,
        arguments: &str,
        control: Arc<CallControl>,
        updates: Option<mpsc::UnboundedSender<String>>,
    ) -> CallOutcome {
        let started = Instant::now();
        let refused = |e: CallError| CallOutcome {
            call_id: identity.call_id.clone(),
            tool: identity.tool.clone(),
            result: Err(e),
            fuel_used: 0,
            elapsed: started.elapsed(),
        };
        let Some(entry) = self.tool(&identity.tool).await else {
            let name = identity.tool.clone();
            return refused(CallError::UnknownTool { name });
        };
        let arguments = match call::parse_arguments(&entry.tool, arguments)
            .and_then(|v| call::check_arguments(&entry.tool, &v).map(|()| v))
        {
            Ok(v) => v,
            Err(e) => return refused(e),
        };
        self.run_validated(&entry, identity, &arguments, control, updates)
            .await
    }

    /// Run one call with arguments already validated against the tool's
    /// schema.
    pub(crate) async fn run_validated(
        &self,
        entry: &ToolEntry,
        mut identity: CallIdentity,
        arguments: &serde_json::Value,
        control: Arc<CallControl>,
        updates: Option<mpsc::UnboundedSender<String>>,
    ) -> CallOutcome {
        let started = Instant::now();
        identity.plugin = entry.plugin.name.clone();
        let (result, fuel_used) = call::run(
            &self.shared,
            &entry.plugin,
            &entry.tool,
            arguments,
            identity.clone(),
            control,
            updates,
        )
        .await;
        let o = CallOutcome {
            call_id: identity.call_id,
            tool: identity.tool,
            result,
            fuel_used,
            elapsed: started.elapsed(),
        };
        call::log_outcome(&entry.plugin.name, &o);
        o
    }
}
