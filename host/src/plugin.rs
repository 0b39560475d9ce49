//! The plugin loader: a `.wasm` file and its manifest become a [`Plugin`]
//! whose tools are checked and ready to call.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use wasmtime::component::Component;

use crate::bindings::{Delivery, DuplicatePolicy, DuplicateScope, PluginPre, ToolSpec};
use crate::config::HostConfig;
use crate::engine::{
    CacheOutcome, CompileCache, Cooperative, FileStamp, Known, Runtime, Sandboxes, run_slice,
};
use crate::error::{CallError, LoadError, LoadErrorKind, TOOL_INTERFACE};
use crate::ids::CallIdentity;
use crate::limits::Limits;
use crate::manifest::Manifest;
use crate::sandbox::{CallControl, CallState, Grants};
use crate::slots::Slots;

/// A loaded plugin: its compiled component ready to instantiate, its
/// grants, limits and tools.
pub struct Plugin {
    pub(crate) name: Arc<str>,
    pub(crate) path: PathBuf,
    pub(crate) manifest_path: Option<PathBuf>,
    pub(crate) manifest: Manifest,
    pub(crate) limits: Limits,
    pub(crate) grants: Grants,
    pub(crate) pre: PluginPre<CallState>,
    pub(crate) tools: Vec<Arc<Tool>>,
    pub(crate) imports: Vec<String>,
    pub(crate) running: Slots,
    /// The hash of the component and its manifest, to tell a changed file
    /// from an unchanged one.
    pub(crate) content: blake3::Hash,
    /// How the component was obtained and how long loading took.
    pub(crate) cache: CacheOutcome,
    pub(crate) load_time: Duration,
    /// What the component's `producers` sections say it was written in.
    pub(crate) language: Option<String>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// One tool of a plugin, as the model sees it, with its argument validator.
#[derive(Debug)]
pub struct Tool {
    pub name: String,
    pub description: String,
    pub input_schema: Value,
    pub output_schema: Option<Value>,
    pub on_duplicate: DuplicatePolicy,
    pub duplicate_scope: DuplicateScope,
    pub cancellable: bool,
    pub delivery: Delivery,
    pub enabled: bool,
    validator: OnceLock<Result<jsonschema::Validator, String>>,
    output_validator: OnceLock<Result<jsonschema::Validator, String>>,
    /// Set once [`Tool::prepare_off_runtime`] has built the validators.
    built_off_runtime: tokio::sync::OnceCell<()>,
}

impl Tool {
    /// The validator of the tool's arguments (B7). Built when the plugin
    /// loads, unless the compile cache knows the schema to be valid: then
    /// on a thread of its own once no plugin is loading
    /// ([`Tool::prepare`]), or here, by the first call that needs it. The
    /// first validator of a process builds jsonschema's meta-schema, about
    /// 15 ms, which a warm start need not wait for.
    pub(crate) fn validator(&self) -> Result<&jsonschema::Validator, CallError> {
        built(&self.validator, &self.input_schema)
    }

    /// The validator of the data the tool returns, if it declares an output
    /// schema; built as [`Tool::validator`] is.
    pub(crate) fn output_validator(&self) -> Option<Result<&jsonschema::Validator, CallError>> {
        let schema = self.output_schema.as_ref()?;
        Some(built(&self.output_validator, schema))
    }

    /// Whether its validators are built.
    pub(crate) fn prepared(&self) -> bool {
        self.validator.get().is_some()
            && (self.output_schema.is_none() || self.output_validator.get().is_some())
    }

    /// Build the validators the load left to build, both even when the
    /// first cannot be built; the first error, if one cannot.
    pub(crate) fn prepare(&self) -> Result<(), CallError> {
        let input = self.validator().map(|_| ());
        let output = self.output_validator().transpose().map(|_| ());
        input.and(output)
    }

    /// [`Tool::prepare`] on a blocking thread, once however many calls ask
    /// at the same time: the others wait for that one build rather than
    /// each hold a thread of the blocking pool waiting on the same cells.
    /// A schema that cannot be built fails every call with the same error.
    /// A build that panics is not remembered: each waiting call tries
    /// again in turn, and fails the same way.
    ///
    /// # Cancel safety
    /// Cancel safe. A dropped call that was building hands the build to
    /// the next caller (its blocking thread goes on, and the next one waits
    /// on the same cells).
    pub(crate) async fn prepare_off_runtime(self: &Arc<Self>) -> Result<(), CallError> {
        let tool = self.clone();
        let build = || async move {
            tokio::task::spawn_blocking(move || drop(tool.prepare()))
                .await
                .map_err(|e| CallError::Unavailable {
                    detail: format!("building the tool's validators panicked: {e}"),
                })
        };
        self.built_off_runtime.get_or_try_init(build).await?;
        // Built: this only reads the cells.
        self.prepare()
    }

    /// Whether the model would see no difference between the two.
    pub(crate) fn same_as(&self, other: &Tool) -> bool {
        self.name == other.name
            && self.description == other.description
            && self.input_schema == other.input_schema
            && self.output_schema == other.output_schema
            && self.on_duplicate == other.on_duplicate
            && self.duplicate_scope == other.duplicate_scope
            && self.cancellable == other.cancellable
            && self.delivery == other.delivery
            && self.enabled == other.enabled
    }
}

impl Plugin {
    /// The file name without `.wasm`.
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn manifest_path(&self) -> Option<&Path> {
        self.manifest_path.as_deref()
    }
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    pub fn tools(&self) -> &[Arc<Tool>] {
        &self.tools
    }
    /// The interfaces the component imports.
    pub fn imports(&self) -> &[String] {
        &self.imports
    }
    /// Whether the compiled component came from the cache.
    pub fn from_cache(&self) -> bool {
        self.cache == CacheOutcome::Hit
    }
    pub fn load_time(&self) -> Duration {
        self.load_time
    }
    /// The language the component was written in, when its `producers`
    /// sections tell (a best guess: toolchains fill them in unevenly).
    pub fn language(&self) -> Option<&str> {
        self.language.as_deref()
    }
    /// How many calls wait in line for a slot under the plugin's
    /// `max-concurrency`: one per session at most, since a session's other
    /// calls wait for its turn. Shared by the versions of one file.
    pub fn slots_in_line(&self) -> tokio::sync::watch::Receiver<usize> {
        self.running.in_line()
    }
}

/// The most tools one plugin may provide.
pub(crate) const MAX_TOOLS: usize = 1000;

/// The longest description a tool may have, in bytes: every client's
/// `tools/list` carries it, and models read it on every turn.
pub(crate) const MAX_DESCRIPTION_BYTES: usize = 8 * 1024;

/// Tool names starting with this, in any case, are the host's own (the
/// companion tools, and any it adds later): a plugin's `TOOLHOST_cancel_task`
/// would read to a model as the host's.
pub(crate) const RESERVED_PREFIX: &str = "toolhost_";

/// Whether `name` starts with [`RESERVED_PREFIX`], in any case: no plugin
/// may serve it.
pub(crate) fn reserved(name: &str) -> bool {
    let prefix = name.get(..RESERVED_PREFIX.len());
    prefix.is_some_and(|p| p.eq_ignore_ascii_case(RESERVED_PREFIX))
}

/// The manifest that belongs to `wasm`: `NAME.toml` beside `NAME.wasm`.
pub(crate) fn manifest_path_for(wasm: &Path) -> PathBuf {
    wasm.with_extension("toml")
}

/// The tools a plugin file's last load described, from the compile cache:
/// what a start lists while the file loads (see [`announcement`]). No
/// tools when that load was refused.
pub(crate) struct Announcement {
    pub(crate) plugin: Arc<str>,
    pub(crate) tools: Vec<Arc<Tool>>,
}

/// The tools that `describe()` answered at the last load of the plugin file
/// at `path`, when the cache remembers the file unchanged (so it is not
/// read) and has that answer for it and its manifest as they are now; no
/// tools when that load was refused for what the plugin is or did.
/// Blocking, and cheap: a few small files are read. Mapping a large
/// component and instantiating it to describe it take milliseconds, so a
/// start lists these while the loads go on; `describe()` is still called
/// at each load, and its answer is the one that serves.
pub(crate) fn announcement(cache: &CompileCache, path: &Path) -> Option<Announcement> {
    let plugin: Arc<str> = path.file_stem()?.to_str()?.into();
    let manifest_path = manifest_path_for(path);
    let manifest_path = manifest_path.exists().then_some(manifest_path);
    let manifest = match &manifest_path {
        Some(m) => Manifest::load(m).ok()?,
        None => Manifest::default(),
    };
    let known = cache.known_hash(path, &FileStamp::of(path).ok()??)?;
    let content = content_hash(&known.hash, manifest_path.as_deref());
    let specs = parse_description(&cache.description(&content)?)?;
    // Only schemas known valid: an announcement compiles none.
    let known = |s: &ToolSpec| {
        cache.schema_known_valid(&s.input_schema)
            && (s.output_schema.as_ref()).is_none_or(|o| cache.schema_known_valid(o))
    };
    if !specs.iter().all(known) {
        return None;
    }
    let tools = if specs.is_empty() {
        Vec::new()
    } else {
        check_tools(specs, &manifest, cache).ok()?
    };
    Some(Announcement { plugin, tools })
}

/// Load one plugin file: check it, compile it (or take it from the cache),
/// run its `describe()` under the describe budget, and check its tools.
/// What `describe()` answered is remembered for [`announcement`].
pub(crate) async fn load(
    runtime: &Arc<Runtime>,
    config: &HostConfig,
    path: &Path,
) -> Result<Plugin, LoadError> {
    let started = Instant::now();
    let fail = |kind: LoadErrorKind| LoadError::new(path, kind);
    let name: Arc<str> = path
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| fail(LoadErrorKind::BadFileName))?
        .into();

    let manifest_path = manifest_path_for(path);
    let (manifest, manifest_path) = if manifest_path.exists() {
        let m = Manifest::load(&manifest_path).map_err(|e| fail(LoadErrorKind::BadManifest(e)))?;
        (m, Some(manifest_path))
    } else {
        (Manifest::default(), None)
    };
    // A plugin that could rewrite its own file or manifest could grant
    // itself anything at the next reload.
    let own = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    let own_manifest = manifest_path
        .as_ref()
        .map(|m| m.canonicalize().unwrap_or_else(|_| m.clone()));
    if let Some(dir) = manifest.permissions.dirs.iter().find(|d| {
        d.write
            && (own.starts_with(&d.host)
                || own_manifest
                    .as_ref()
                    .is_some_and(|m| m.starts_with(&d.host)))
    }) {
        return Err(fail(LoadErrorKind::WritableSelf {
            dir: dir.host.clone(),
        }));
    }
    let limits = config.limits.with(&manifest.limits);
    if limits.memory > runtime.config().max_memory {
        return Err(fail(LoadErrorKind::MemoryOverMax {
            asked: limits.memory,
            allowed: runtime.config().max_memory,
        }));
    }

    // No plugin may hold the whole instance pool: the others always keep
    // a sixteenth of it (at least 16 instances).
    let pool = runtime.config().instances;
    let allowed = pool.saturating_sub((pool / 16).max(16));
    if limits.max_concurrency > allowed {
        return Err(fail(LoadErrorKind::ConcurrencyOverMax {
            asked: limits.max_concurrency,
            allowed,
        }));
    }

    // The file's hash (remembered while the file is unchanged), and what
    // its last load described.
    let cache = runtime.cache().clone();
    let (file, manifest_file) = (path.to_owned(), manifest_path.clone());
    let (identified, content, remembered) = tokio::task::spawn_blocking(move || {
        let identified = identify(&cache, &file)?;
        let content = content_hash(&identified.known.hash, manifest_file.as_deref());
        let remembered = cache.description(&content);
        Ok::<_, LoadErrorKind>((identified, content, remembered))
    })
    .await
    .map_err(|e| fail(joined(e, "identifying")))?
    .map_err(fail)?;
    // The plugin's engine by its metering: the fuel engine may still be
    // being set up, and the epoch engine is built when the first plugin
    // asks for it.
    let sandboxes = (runtime.ready(limits.metering).await).map_err(|e| {
        fail(LoadErrorKind::Host(format!(
            "the engine could not be set up: {e:#}"
        )))
    })?;
    let loaded = async {
        let compiling = runtime.clone();
        let metering = limits.metering;
        let file = path.to_owned();
        let (component, known, cache_outcome) = tokio::task::spawn_blocking(move || {
            let sandboxes = (compiling.sandboxes(metering))
                .map_err(|e| LoadErrorKind::Host(format!("{e:#}")))?;
            compile_file(sandboxes, &file, identified)
        })
        .await
        .map_err(|e| joined(e, "compiling"))??;
        let compiled = started.elapsed();

        let engine = sandboxes.engine();
        let ty = component.component_type();
        let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_owned()).collect();
        if !exports.iter().any(|e| e == TOOL_INTERFACE) {
            return Err(LoadErrorKind::MissingExport {
                exports: if exports.is_empty() {
                    "nothing".to_owned()
                } else {
                    exports.join(", ")
                },
            });
        }
        let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_owned()).collect();
        let instance_pre = sandboxes
            .instantiate_pre(&component)
            .map_err(|e| LoadErrorKind::UnknownImport(first_line(&e)))?;
        let pre =
            PluginPre::new(instance_pre).map_err(|e| LoadErrorKind::WrongExport(first_line(&e)))?;

        let linked = started.elapsed();
        let grants = Grants::resolve(&name, &manifest.permissions);
        let specs = describe(runtime, config, &name, &pre, &grants, &limits).await?;
        tracing::debug!(
            plugin = %name,
            ?compiled,
            ?linked,
            described = ?started.elapsed(),
            "plugin load: compiled or mapped, linked, described"
        );
        let text = description_text(&specs);
        // Validators of schemas the cache knows are built once nothing is
        // loading ([`Registry`](crate::registry::Registry)), or by a call.
        let tools = check_tools(specs, &manifest, runtime.cache())?;
        Ok((
            pre,
            grants,
            imports,
            tools,
            known.language,
            cache_outcome,
            text,
        ))
    };
    let (pre, grants, imports, tools, language, cache_outcome, text) = match loaded.await {
        Ok(loaded) => loaded,
        Err(e) => {
            remember_refusal(runtime.cache(), &content, remembered.as_deref(), &e);
            return Err(fail(e));
        }
    };
    if remembered.as_deref() != Some(text.as_str()) {
        runtime.cache().remember_description(&content, &text);
    }

    Ok(Plugin {
        running: Slots::new(limits.max_concurrency),
        name,
        path: path.to_owned(),
        manifest_path,
        manifest,
        limits,
        grants,
        pre,
        tools,
        imports,
        content,
        cache: cache_outcome,
        load_time: started.elapsed(),
        language,
    })
}

/// Why a load's blocking step did not return: the host stopped (the
/// runtime cancels blocking tasks not yet begun when it shuts down), or
/// the step panicked.
fn joined(e: tokio::task::JoinError, step: &str) -> LoadErrorKind {
    if e.is_cancelled() {
        LoadErrorKind::Stopped
    } else {
        LoadErrorKind::Host(format!("{step} panicked: {e}"))
    }
}

/// A plugin file known by its hash, with its bytes when they had to be
/// read to hash them.
struct Identified {
    /// Taken before the read, so that a write during it changes the stamp.
    stamp: Option<FileStamp>,
    known: Known,
    bytes: Option<Vec<u8>>,
}

/// The hash of the plugin file at `path`: remembered by the cache while the
/// file is unchanged (then the file is not read), else read and hashed.
/// Blocking.
fn identify(cache: &CompileCache, path: &Path) -> Result<Identified, LoadErrorKind> {
    let stamp = FileStamp::of(path).map_err(unreadable)?;
    if let Some(known) = stamp.as_ref().and_then(|s| cache.known_hash(path, s)) {
        return Ok(Identified {
            stamp,
            known,
            bytes: None,
        });
    }
    let (known, bytes) = read_plugin(path)?;
    Ok(Identified {
        stamp,
        known,
        bytes: Some(bytes),
    })
}

fn read_plugin(path: &Path) -> Result<(Known, Vec<u8>), LoadErrorKind> {
    let bytes = std::fs::read(path).map_err(unreadable)?;
    check_header(&bytes)?;
    let known = Known {
        hash: blake3::hash(&bytes),
        language: crate::producers::language(&bytes),
    };
    Ok((known, bytes))
}

fn unreadable(e: std::io::Error) -> LoadErrorKind {
    LoadErrorKind::Unreadable(e.to_string())
}

/// The compiled component of an identified plugin file, its hash, and
/// whether the component came from the cache. Blocking.
///
/// A file the cache remembers unchanged is not read at all: its component
/// is mapped from the cache, which makes most of a warm start.
fn compile_file(
    runtime: &Sandboxes,
    path: &Path,
    identified: Identified,
) -> Result<(Component, Known, CacheOutcome), LoadErrorKind> {
    let cache = runtime.cache();
    let Identified {
        stamp,
        known,
        bytes,
    } = identified;
    let (known, bytes) = match bytes {
        Some(bytes) => (known, bytes),
        None => {
            if let Some(component) = runtime.cached(&known.hash) {
                return Ok((component, known, CacheOutcome::Hit));
            }
            read_plugin(path)?
        }
    };
    let (component, outcome) = runtime
        .compile(&known.hash, &bytes)
        .map_err(|e| LoadErrorKind::NotAComponent(first_line(&e)))?;
    if let Some(stamp) = &stamp {
        cache.remember(path, stamp, &known);
    }
    Ok((component, known, outcome))
}

/// The description remembered of a plugin whose load was refused.
const REFUSED: &str = "[]";

/// What a refused load leaves for the next start's [`announcement`]:
/// - refused for what the component is or what `describe()` answered
///   (the same at every load of it): an empty description, so that a
///   start lists nothing of it and does not wait for its load;
/// - refused under the host's settings or version (the describe budget,
///   the imports it links), which the description's key does not hold:
///   nothing, so that the next start waits for the load;
/// - stopped by the host (its shutdown, a busy pool, an unreadable file):
///   the description stays.
fn remember_refusal(
    cache: &CompileCache,
    content: &blake3::Hash,
    remembered: Option<&str>,
    e: &LoadErrorKind,
) {
    use LoadErrorKind as K;
    match e {
        K::NotAComponent(_)
        | K::MissingExport { .. }
        | K::WrongExport(_)
        | K::DescribeTrapped(_)
        | K::NoTools
        | K::TooManyTools { .. }
        | K::BadToolName(_)
        | K::ReservedToolName(_)
        | K::ToolTwice(_)
        | K::InvalidTool { .. }
        | K::UnknownToolOverride(_)
            if remembered != Some(REFUSED) =>
        {
            cache.remember_description(content, REFUSED);
        }
        K::DescribeTimedOut(_) | K::DescribeOutOfFuel(_) | K::UnknownImport(_)
            if remembered.is_some() =>
        {
            cache.forget_description(content);
        }
        _ => {}
    }
}

/// One tool of `describe()`'s answer as the compile cache keeps it.
#[derive(serde::Serialize, serde::Deserialize)]
struct Described {
    name: String,
    description: String,
    input_schema: String,
    output_schema: Option<String>,
    on_duplicate: String,
    duplicate_scope: String,
    cancellable: bool,
    delivery: String,
}

/// `describe()`'s answer as JSON text, to remember.
fn description_text(specs: &[ToolSpec]) -> String {
    let described: Vec<Described> = specs
        .iter()
        .map(|s| Described {
            name: s.name.clone(),
            description: s.description.clone(),
            input_schema: s.input_schema.clone(),
            output_schema: s.output_schema.clone(),
            on_duplicate: s.on_duplicate.as_str().to_owned(),
            duplicate_scope: s.duplicate_scope.as_str().to_owned(),
            cancellable: s.cancellable,
            delivery: s.delivery.as_str().to_owned(),
        })
        .collect();
    serde_json::to_string(&described).unwrap_or_default()
}

/// A remembered answer of `describe()`; `None` for a text that is not one.
fn parse_description(text: &str) -> Option<Vec<ToolSpec>> {
    let described: Vec<Described> = serde_json::from_str(text).ok()?;
    described
        .into_iter()
        .map(|d| {
            Some(ToolSpec {
                on_duplicate: DuplicatePolicy::parse(&d.on_duplicate)?,
                duplicate_scope: DuplicateScope::parse(&d.duplicate_scope)?,
                delivery: Delivery::parse(&d.delivery)?,
                name: d.name,
                description: d.description,
                input_schema: d.input_schema,
                output_schema: d.output_schema,
                cancellable: d.cancellable,
            })
        })
        .collect()
}

/// The BLAKE3 hash of the plugin file at `path` as it is now: remembered
/// by the compile cache while the file is unchanged, else read and hashed.
pub(crate) fn file_hash(runtime: &Runtime, path: &Path) -> std::io::Result<blake3::Hash> {
    let stamp = FileStamp::of(path)?;
    if let Some(known) = stamp
        .as_ref()
        .and_then(|s| runtime.cache().known_hash(path, s))
    {
        return Ok(known.hash);
    }
    Ok(blake3::hash(&std::fs::read(path)?))
}

/// The hash of a component's file hash and of its manifest (when it has
/// one): what a plugin is made of.
pub(crate) fn content_hash(wasm: &blake3::Hash, manifest: Option<&Path>) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update(wasm.as_bytes());
    if let Some(text) = manifest.and_then(|m| std::fs::read(m).ok()) {
        h.update(&text);
    }
    h.finalize()
}

/// A core module or a random file gets a message that says what it is.
fn check_header(bytes: &[u8]) -> Result<(), LoadErrorKind> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(LoadErrorKind::NotWasm);
    }
    // Bytes 4..8: version and layer. Core modules are layer 0; components 1.
    match (bytes[6], bytes[7]) {
        (0, 0) => Err(LoadErrorKind::CoreModule),
        (1, 0) => Ok(()),
        _ => Err(LoadErrorKind::UnknownLayer),
    }
}

fn first_line(e: &impl std::fmt::Display) -> String {
    let s = format!("{e:#}");
    s.lines().next().unwrap_or_default().to_owned()
}

/// Run `describe()` in a fresh sandbox under the host's describe budget.
async fn describe(
    runtime: &Runtime,
    config: &HostConfig,
    plugin: &Arc<str>,
    pre: &PluginPre<CallState>,
    grants: &Grants,
    limits: &Limits,
) -> Result<Vec<ToolSpec>, LoadErrorKind> {
    let identity = CallIdentity {
        plugin: plugin.clone(),
        tool: "describe".into(),
        ..Default::default()
    };
    let state = CallState::new(
        grants,
        identity,
        limits,
        Arc::new(CallControl::default()),
        None,
    );
    let fuel = config.describe_fuel;
    let timeout = config.describe_timeout;
    // Waiting for an instance counts in the time `describe()` has.
    let deadline = tokio::time::Instant::now() + timeout;
    let _instance = tokio::time::timeout_at(deadline, runtime.instance(limits.metering))
        .await
        .map_err(|_| LoadErrorKind::PoolBusy(timeout))?
        .map_err(|e| LoadErrorKind::Host(format!("{e:#}")))?;
    let mut store = runtime
        .store(limits.metering, state, fuel)
        .map_err(|e| LoadErrorKind::Host(e.to_string()))?;
    let run = async {
        let plugin = pre.instantiate_async(&mut store).await?;
        plugin
            .toolhost_plugin_tool()
            .call_describe(&mut store)
            .await
    };
    let run = std::pin::pin!(run);
    match tokio::time::timeout_at(
        deadline,
        Cooperative::new(run, run_slice(limits.metering), || false),
    )
    .await
    {
        Err(_) => Err(LoadErrorKind::DescribeTimedOut(timeout)),
        Ok(Err(e)) if is_out_of_fuel(&e) => Err(LoadErrorKind::DescribeOutOfFuel(fuel)),
        Ok(Err(e)) => {
            tracing::debug!(%plugin, error = ?e, "describe() failed");
            Err(LoadErrorKind::DescribeTrapped(trap_message(&e)))
        }
        Ok(Ok(specs)) => Ok(specs),
    }
}

/// What went wrong in the guest, in one line: the trap's description when
/// there is one (the backtrace goes to the debug log).
pub(crate) fn trap_message(e: &wasmtime::Error) -> String {
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => format!("trap: {trap}"),
        None => first_line(e),
    }
}

pub(crate) fn is_out_of_fuel(e: &wasmtime::Error) -> bool {
    e.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::OutOfFuel)
}

/// 1-64 characters of `[a-zA-Z0-9_-]`.
pub(crate) fn valid_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The tools `describe()` returned, checked against the bounds and the
/// manifest's overrides, with their schemas compiled.
///
/// A schema `schemas` has seen valid is not compiled now: see
/// [`Tool::validator`]. One compiled now is remembered there.
pub(crate) fn check_tools(
    specs: Vec<ToolSpec>,
    manifest: &Manifest,
    schemas: &CompileCache,
) -> Result<Vec<Arc<Tool>>, LoadErrorKind> {
    if specs.is_empty() {
        return Err(LoadErrorKind::NoTools);
    }
    if specs.len() > MAX_TOOLS {
        return Err(LoadErrorKind::TooManyTools {
            count: specs.len(),
            max: MAX_TOOLS,
        });
    }
    let mut tools: Vec<Arc<Tool>> = Vec::with_capacity(specs.len());
    let mut names = std::collections::HashSet::with_capacity(specs.len());
    for spec in specs {
        let name = spec.name;
        if !valid_tool_name(&name) {
            return Err(LoadErrorKind::BadToolName(name));
        }
        if reserved(&name) {
            return Err(LoadErrorKind::ReservedToolName(name));
        }
        if !names.insert(name.clone()) {
            return Err(LoadErrorKind::ToolTwice(name));
        }
        if spec.description.len() > MAX_DESCRIPTION_BYTES {
            return Err(LoadErrorKind::InvalidTool {
                problem: format!(
                    "its description is {} bytes, more than the {} a description may have",
                    spec.description.len(),
                    MAX_DESCRIPTION_BYTES
                ),
                tool: name,
            });
        }
        let invalid = |problem: String| LoadErrorKind::InvalidTool {
            tool: name.clone(),
            problem,
        };
        let input_schema =
            parse_schema(&spec.input_schema).map_err(|e| invalid(format!("input schema: {e}")))?;
        let validator = validator_cell(&input_schema, &spec.input_schema, schemas)
            .map_err(|e| invalid(format!("input schema: {e}")))?;
        if input_schema.get("type").and_then(Value::as_str) != Some("object") {
            return Err(invalid(
                "input schema must describe an object (\"type\": \"object\")".into(),
            ));
        }
        let (output_schema, output_validator) = match &spec.output_schema {
            None => (None, OnceLock::new()),
            Some(s) => {
                let schema = parse_schema(s).map_err(|e| invalid(format!("output schema: {e}")))?;
                let v = validator_cell(&schema, s, schemas)
                    .map_err(|e| invalid(format!("output schema: {e}")))?;
                (Some(schema), v)
            }
        };
        let over = manifest.tools.get(&name).cloned().unwrap_or_default();
        let on_duplicate = over.on_duplicate.unwrap_or(spec.on_duplicate);
        if on_duplicate == DuplicatePolicy::Replace && !spec.cancellable {
            return Err(invalid(
                "on-duplicate \"replace\" needs a cancellable tool".into(),
            ));
        }
        tools.push(Arc::new(Tool {
            name,
            description: spec.description,
            input_schema,
            output_schema,
            on_duplicate,
            duplicate_scope: over.duplicate_scope.unwrap_or(spec.duplicate_scope),
            cancellable: spec.cancellable,
            delivery: spec.delivery,
            enabled: over.enabled.unwrap_or(true),
            validator,
            output_validator,
            built_off_runtime: tokio::sync::OnceCell::new(),
        }));
    }
    for name in manifest.tools.keys() {
        if !tools.iter().any(|t| &t.name == name) {
            return Err(LoadErrorKind::UnknownToolOverride(name.clone()));
        }
    }
    Ok(tools)
}

/// The validator in `cell`, built from `schema` if it is not yet. A schema
/// the cache called valid that fails to build (a changed or forged cache
/// entry) fails the calls that need it, with the reason.
fn built<'a>(
    cell: &'a OnceLock<Result<jsonschema::Validator, String>>,
    schema: &Value,
) -> Result<&'a jsonschema::Validator, CallError> {
    cell.get_or_init(|| compile_schema(schema))
        .as_ref()
        .map_err(|e| CallError::Unavailable {
            detail: format!("the tool's schema cannot be used: {e}"),
        })
}

/// The validator cell of `schema` (whose text is `text`): empty when
/// `schemas` has seen the text valid, else built now, and the text then
/// remembered valid.
fn validator_cell(
    schema: &Value,
    text: &str,
    schemas: &CompileCache,
) -> Result<OnceLock<Result<jsonschema::Validator, String>>, String> {
    let cell = OnceLock::new();
    if !schemas.schema_known_valid(text) {
        let _ = cell.set(Ok(compile_schema(schema)?));
        schemas.remember_valid_schema(text);
    }
    Ok(cell)
}

fn parse_schema(text: &str) -> Result<Value, String> {
    if text.len() > crate::schema::MAX_SCHEMA_BYTES {
        return Err(format!(
            "{} bytes, more than the {} a schema may have",
            text.len(),
            crate::schema::MAX_SCHEMA_BYTES
        ));
    }
    serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))
}

/// The most memory a schema's pattern may compile to: its matching takes
/// time in proportion to it and to the text.
const MAX_PATTERN_PROGRAM: usize = 1 << 20;

/// The `regex` format: a pattern this host could run. jsonschema's own
/// check rewrites the text once for each `\d`, `\w` or `\s` in it, which
/// takes seconds on a client's string of a few kilobytes.
fn is_regex(text: &str) -> bool {
    regex_syntax::Parser::new().parse(text).is_ok()
}

fn compile_schema(schema: &Value) -> Result<jsonschema::Validator, String> {
    if !schema.is_object() {
        return Err("not a JSON Schema object".into());
    }
    if let Some(problem) = crate::schema::problem(schema) {
        return Err(problem);
    }
    // Patterns run on the linear-time `regex` engine: a backtracking one
    // lets a pattern take seconds on a client's string (and jsonschema
    // 0.33 panics when it gives up under `unevaluatedProperties`).
    // Lookarounds and backreferences are refused with the schema.
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .with_pattern_options(jsonschema::PatternOptions::regex().size_limit(MAX_PATTERN_PROGRAM))
        .with_format("regex", is_regex)
        .build(schema)
        .map_err(|e| match &e.kind {
            jsonschema::error::ValidationErrorKind::Format { format } if format == "regex" => {
                format!(
                    "not a valid JSON Schema: {e} (patterns run on a linear-time engine, \
                     without lookarounds or backreferences)"
                )
            }
            _ => format!("not a valid JSON Schema: {e}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn a_pattern_matches_in_linear_time_and_lookarounds_are_refused() {
        let schema = serde_json::json!({
            "type": "object",
            "patternProperties": { "^(a+)+$": { "type": "integer" } },
            "properties": { "code": { "type": "string", "pattern": "^[A-Z]{3}\\d+$" } }
        });
        let validator = compile_schema(&schema).expect("compiles");
        let long = serde_json::json!({ format!("{}b", "a".repeat(10_000)): "x" });
        assert!(validator.is_valid(&long), "no match, in linear time");
        assert!(!validator.is_valid(&serde_json::json!({ "aaa": "x" })));
        assert!(validator.is_valid(&serde_json::json!({ "code": "ABC12" })));
        let lookahead = serde_json::json!({ "type": "string", "pattern": "^(?=a)" });
        let refused = compile_schema(&lookahead).expect_err("refused");
        assert!(
            refused.contains("(?=a)") && refused.contains("lookarounds"),
            "{refused}"
        );
    }

    #[test]
    fn the_regex_format_is_checked_in_linear_time() {
        let schema = serde_json::json!({ "type": "string", "format": "regex" });
        let validator = compile_schema(&schema).expect("compiles");
        // 8 000 `\d`s took jsonschema's own check 36 s.
        assert!(validator.is_valid(&serde_json::json!("\\d".repeat(8_000))));
        assert!(validator.is_valid(&serde_json::json!("^[a-z]+\\s*$")));
        assert!(!validator.is_valid(&serde_json::json!("(unclosed")));
        // One this host could not run is not a regex here.
        assert!(!validator.is_valid(&serde_json::json!("(?=a)")));
    }

    #[test]
    fn tool_names() {
        assert!(valid_tool_name("search_files"));
        assert!(valid_tool_name("a-b_C9"));
        assert!(valid_tool_name(&"x".repeat(64)));
        assert!(!valid_tool_name(""));
        assert!(!valid_tool_name(&"x".repeat(65)));
        assert!(!valid_tool_name("has space"));
        assert!(!valid_tool_name("dot.ted"));
        assert!(!valid_tool_name("ünï"));
    }

    #[tokio::test]
    async fn a_step_the_host_stopped_is_not_a_failure_of_the_plugin() {
        let stopped = tokio::spawn(std::future::pending::<()>());
        stopped.abort();
        let e = stopped.await.expect_err("aborted");
        assert!(matches!(joined(e, "compiling"), LoadErrorKind::Stopped));
        let panicked = tokio::spawn(async { panic!("boom") });
        let e = panicked.await.expect_err("panicked");
        let kind = joined(e, "compiling");
        assert!(
            matches!(&kind, LoadErrorKind::Host(m) if m.starts_with("compiling panicked")),
            "{kind:?}"
        );
    }

    #[test]
    fn a_description_reads_back_as_it_was_written() {
        let specs = vec![
            spec(r#"{"type":"object"}"#, None),
            ToolSpec {
                on_duplicate: DuplicatePolicy::Queue,
                duplicate_scope: DuplicateScope::NameAndArguments,
                delivery: Delivery::FireAndForget,
                cancellable: true,
                ..spec(r#"{"type":"object"}"#, Some(r#"{"type":"string"}"#))
            },
        ];
        let text = description_text(&specs);
        let back = parse_description(&text).expect("a description");
        assert_eq!(description_text(&back), text);
        assert!(back[1].cancellable && back[1].delivery == Delivery::FireAndForget);
        assert!(parse_description(&text.replace("queue", "sometimes")).is_none());
        assert!(parse_description("not json").is_none());
    }

    #[test]
    fn headers() {
        assert!(matches!(
            check_header(b"\0asm\x01\0\0\0"),
            Err(LoadErrorKind::CoreModule)
        ));
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
        assert!(matches!(
            check_header(b"hello world"),
            Err(LoadErrorKind::NotWasm)
        ));
    }

    #[test]
    fn schemas() {
        assert!(compile_schema(&serde_json::json!({"type": "object"})).is_ok());
        assert!(compile_schema(&serde_json::json!({"type": 12})).is_err());
        assert!(compile_schema(&serde_json::json!([1])).is_err());
    }

    fn spec(input_schema: &str, output_schema: Option<&str>) -> ToolSpec {
        ToolSpec {
            name: "count".to_owned(),
            description: "counts".to_owned(),
            input_schema: input_schema.to_owned(),
            output_schema: output_schema.map(str::to_owned),
            on_duplicate: DuplicatePolicy::Allow,
            duplicate_scope: DuplicateScope::NameAndArguments,
            cancellable: true,
            delivery: Delivery::Conversational,
        }
    }

    #[test]
    fn the_hosts_tool_names_are_reserved_and_descriptions_are_bounded() {
        let cache = CompileCache::new(None, "test".into());
        let object = r#"{"type": "object"}"#;
        for name in [
            crate::CANCEL_TASK_TOOL,
            crate::RUNNING_TASKS_TOOL,
            "toolhost_later",
            "Toolhost_cancel_task",
            "TOOLHOST_later",
        ] {
            let tool = ToolSpec {
                name: name.to_owned(),
                ..spec(object, None)
            };
            let refused = check_tools(vec![tool], &Manifest::default(), &cache);
            assert!(
                matches!(&refused, Err(LoadErrorKind::ReservedToolName(n)) if n == name),
                "{refused:?}"
            );
        }
        let long = |n| ToolSpec {
            description: "d".repeat(n),
            ..spec(object, None)
        };
        let at_most = check_tools(
            vec![long(MAX_DESCRIPTION_BYTES)],
            &Manifest::default(),
            &cache,
        );
        assert!(at_most.is_ok(), "{at_most:?}");
        let refused = check_tools(
            vec![long(MAX_DESCRIPTION_BYTES + 1)],
            &Manifest::default(),
            &cache,
        );
        assert!(
            matches!(&refused, Err(LoadErrorKind::InvalidTool { tool, problem })
                if tool == "count" && problem.contains("more than the 8192")),
            "{refused:?}"
        );
    }

    #[test]
    fn a_schema_the_cache_has_seen_valid_is_compiled_when_first_needed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = CompileCache::new(Some(dir.path().to_owned()), "test".into());
        let input = r#"{"type": "object", "properties": {"n": {"type": "integer"}}}"#;
        let output = r#"{"type": "object", "required": ["total"]}"#;
        let check = || {
            check_tools(
                vec![spec(input, Some(output))],
                &Manifest::default(),
                &cache,
            )
            .expect("valid")
            .remove(0)
        };

        let first = check();
        assert!(first.prepared(), "an unknown schema is compiled at load");
        let warm = check();
        assert!(!warm.prepared(), "a known one waits");
        let args = warm.validator().expect("builds");
        assert!(args.is_valid(&serde_json::json!({"n": 1})));
        assert!(!args.is_valid(&serde_json::json!({"n": "one"})));
        let out = warm.output_validator().expect("declared").expect("builds");
        assert!(!out.is_valid(&serde_json::json!({})));
        assert!(warm.prepared());

        // Another build's marks are not this one's.
        let other = CompileCache::new(Some(dir.path().to_owned()), "other".into());
        let cold = check_tools(vec![spec(input, None)], &Manifest::default(), &other);
        assert!(cold.expect("valid")[0].prepared());
    }

    /// `prepare_off_runtime` of `tool` by `calls` calls at once, and how
    /// many threads that started: on a runtime on this thread, every
    /// thread it starts is a blocking one.
    fn prepared_together(tool: &Arc<Tool>, calls: usize) -> (Vec<Result<(), CallError>>, usize) {
        let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = started.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .on_thread_start(move || {
                counted.fetch_add(1, Ordering::SeqCst);
            })
            .build()
            .expect("runtime");
        let built = futures::future::join_all((0..calls).map(|_| tool.prepare_off_runtime()));
        let results = runtime.block_on(built);
        (results, started.load(Ordering::SeqCst))
    }

    #[test]
    fn calls_that_need_the_same_validators_at_once_build_them_on_one_thread() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = CompileCache::new(Some(dir.path().to_owned()), "test".into());
        let input = r#"{"type": "object", "properties": {"n": {"type": "integer"}}}"#;
        let check = || {
            let tools = check_tools(vec![spec(input, Some(input))], &Manifest::default(), &cache);
            tools.expect("valid").remove(0)
        };
        check();
        let warm = check();
        assert!(!warm.prepared(), "the cache knows the schema");

        let (results, threads) = prepared_together(&warm, 16);
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert!(warm.prepared());
        assert_eq!(threads, 1, "blocking threads started for 16 calls");
    }

    #[test]
    fn an_invalid_schema_is_refused_at_load_and_a_forged_mark_fails_only_calls() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = CompileCache::new(Some(dir.path().to_owned()), "test".into());
        let bad = r#"{"type": "object", "properties": {"n": {"type": 12}}}"#;
        let refused = check_tools(vec![spec(bad, None)], &Manifest::default(), &cache);
        assert!(
            matches!(&refused, Err(LoadErrorKind::InvalidTool { problem, .. }) if problem.contains("not a valid JSON Schema")),
            "{refused:?}"
        );
        assert!(
            !cache.schema_known_valid(bad),
            "a refused schema is not marked"
        );

        cache.remember_valid_schema(bad);
        let tool = check_tools(vec![spec(bad, None)], &Manifest::default(), &cache)
            .expect("taken on the mark's word")
            .remove(0);
        let e = tool.validator().expect_err("cannot build");
        assert!(matches!(e, CallError::Unavailable { .. }), "{e:?}");
        let detail = e.detail().unwrap_or_default();
        assert!(
            detail.contains("the tool's schema cannot be used"),
            "{detail}"
        );

        // Calls that build it together off the runtime each fail the same way.
        let tool = check_tools(vec![spec(bad, None)], &Manifest::default(), &cache)
            .expect("taken on the mark's word")
            .remove(0);
        let (results, threads) = prepared_together(&tool, 4);
        for r in results {
            let e = r.expect_err("cannot build");
            assert_eq!(e.detail(), Some(detail), "{e:?}");
        }
        assert_eq!(threads, 1);
    }
}
