//! The plugin loader: a `.wasm` file and its manifest become a [`Plugin`]
//! whose tools are checked and ready to call.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use wasmtime::Store;

use crate::bindings::{Delivery, DuplicatePolicy, DuplicateScope, PluginPre, ToolSpec};
use crate::cache::CacheOutcome;
use crate::error::{LoadError, format_bytes};
use crate::host::HostShared;
use crate::limits::Limits;
use crate::manifest::Manifest;
use crate::sandbox::{CallControl, CallIdentity, CallState, Grants};

/// The interface every plugin exports.
pub const TOOL_INTERFACE: &str = "toolhost:plugin/tool@0.1.0";

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
    pub(crate) running: Arc<tokio::sync::Semaphore>,
    /// How the component was obtained and how long loading took.
    pub(crate) cache: CacheOutcome,
    pub(crate) load_time: Duration,
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
    pub(crate) validator: jsonschema::Validator,
    pub(crate) output_validator: Option<jsonschema::Validator>,
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
}

/// The manifest that belongs to `wasm`: `NAME.toml` beside `NAME.wasm`.
pub fn manifest_path_for(wasm: &Path) -> PathBuf {
    wasm.with_extension("toml")
}

/// Load one plugin file: check it, compile it (or take it from the cache),
/// run its `describe()` under the describe budget, and check its tools.
pub(crate) async fn load(shared: &HostShared, path: &Path) -> Result<Plugin, LoadError> {
    let started = Instant::now();
    let fail = |reason: String| LoadError::new(path, reason);
    let name: Arc<str> = path
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| fail("the file name is not valid UTF-8".into()))?
        .into();

    let manifest_path = manifest_path_for(path);
    let (manifest, manifest_path) = if manifest_path.exists() {
        let m = Manifest::load(&manifest_path)
            .map_err(|e| LoadError::new(path, format!("bad manifest {e}")))?;
        (m, Some(manifest_path))
    } else {
        (Manifest::default(), None)
    };
    let limits = shared.config.limits.with(&manifest.limits);
    if limits.memory > shared.config.engine.max_memory {
        return Err(fail(format!(
            "limits.memory of {} is more than the host allows ({})",
            format_bytes(limits.memory),
            format_bytes(shared.config.engine.max_memory)
        )));
    }

    let bytes = tokio::fs::read(path)
        .await
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    check_header(&bytes).map_err(fail)?;

    let engine = shared.engine.clone();
    let cache = shared.cache.clone();
    let (component, cache_outcome) =
        tokio::task::spawn_blocking(move || cache.load(&engine, &bytes))
            .await
            .map_err(|e| fail(format!("compiling panicked: {e}")))?
            .map_err(|e| fail(format!("not a valid component: {}", first_line(&e))))?;

    let ty = component.component_type();
    let exports: Vec<String> = ty
        .exports(&shared.engine)
        .map(|(n, _)| n.to_owned())
        .collect();
    if !exports.iter().any(|e| e == TOOL_INTERFACE) {
        return Err(fail(format!(
            "does not export {TOOL_INTERFACE} (it exports: {}); build it against wit/plugin.wit",
            if exports.is_empty() {
                "nothing".to_owned()
            } else {
                exports.join(", ")
            }
        )));
    }
    let imports: Vec<String> = ty
        .imports(&shared.engine)
        .map(|(n, _)| n.to_owned())
        .collect();
    let instance_pre = shared.linker.instantiate_pre(&component).map_err(|e| {
        fail(format!(
            "imports something the host does not provide: {}",
            first_line(&e)
        ))
    })?;
    let pre = PluginPre::new(instance_pre).map_err(|e| {
        fail(format!(
            "its {TOOL_INTERFACE} export does not match wit/plugin.wit: {}",
            first_line(&e)
        ))
    })?;

    let grants = Grants::resolve(&name, &manifest.permissions);
    let specs = describe(shared, &name, &pre, &grants, &limits)
        .await
        .map_err(fail)?;
    let tools = check_tools(specs, &manifest).map_err(fail)?;

    Ok(Plugin {
        running: Arc::new(tokio::sync::Semaphore::new(limits.max_concurrency as usize)),
        name,
        path: path.to_owned(),
        manifest_path,
        manifest,
        limits,
        grants,
        pre,
        tools,
        imports,
        cache: cache_outcome,
        load_time: started.elapsed(),
    })
}

/// A core module or a random file gets a message that says what it is.
fn check_header(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err("not a WebAssembly file".into());
    }
    // Bytes 4..8: version and layer. Core modules are layer 0; components 1.
    match (bytes[6], bytes[7]) {
        (0, 0) => Err("a core WebAssembly module, not a component; \
                       build for wasm32-wasip2 or run it through `wasm-tools component new`"
            .into()),
        (1, 0) => Ok(()),
        _ => Err("an unknown WebAssembly layer".into()),
    }
}

fn first_line(e: &impl std::fmt::Display) -> String {
    let s = format!("{e:#}");
    s.lines().next().unwrap_or_default().to_owned()
}

/// Run `describe()` in a fresh sandbox under the host's describe budget.
async fn describe(
    shared: &HostShared,
    plugin: &Arc<str>,
    pre: &PluginPre<CallState>,
    grants: &Grants,
    limits: &Limits,
) -> Result<Vec<ToolSpec>, String> {
    let identity = CallIdentity {
        plugin: plugin.clone(),
        tool: "describe".into(),
        ..Default::default()
    };
    let state = CallState::new(
        grants,
        identity,
        limits.memory,
        Arc::new(CallControl::default()),
        None,
    );
    let mut store = Store::new(&shared.engine, state);
    store.limiter(|s| s.limiter());
    let fuel = shared.config.describe_fuel;
    crate::engine::meter(&mut store, fuel, &shared.config.engine).map_err(|e| e.to_string())?;
    let timeout = shared.config.describe_timeout;
    let run = async {
        let plugin = pre.instantiate_async(&mut store).await?;
        plugin
            .toolhost_plugin_tool()
            .call_describe(&mut store)
            .await
    };
    match tokio::time::timeout(timeout, run).await {
        Err(_) => Err(format!(
            "describe() did not return within {}",
            humantime::format_duration(timeout)
        )),
        Ok(Err(e)) if is_out_of_fuel(&e) => Err(format!(
            "describe() used more than its {fuel} units of fuel"
        )),
        Ok(Err(e)) => {
            tracing::debug!(%plugin, error = ?e, "describe() failed");
            Err(format!("describe() failed: {}", trap_message(&e)))
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
pub fn valid_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn check_tools(specs: Vec<ToolSpec>, manifest: &Manifest) -> Result<Vec<Arc<Tool>>, String> {
    if specs.is_empty() {
        return Err("describe() returned no tools".into());
    }
    let mut tools: Vec<Arc<Tool>> = Vec::with_capacity(specs.len());
    for spec in specs {
        let name = spec.name;
        if !valid_tool_name(&name) {
            return Err(format!(
                "invalid tool name {name:?}: use 1-64 characters of a-z, A-Z, 0-9, _ and -"
            ));
        }
        if tools.iter().any(|t| t.name == name) {
            return Err(format!("describe() lists the tool `{name}` twice"));
        }
        let input_schema = parse_schema(&spec.input_schema)
            .map_err(|e| format!("tool `{name}`: input schema: {e}"))?;
        let validator = compile_schema(&input_schema)
            .map_err(|e| format!("tool `{name}`: input schema: {e}"))?;
        if input_schema.get("type").and_then(Value::as_str) != Some("object") {
            return Err(format!(
                "tool `{name}`: input schema must describe an object (\"type\": \"object\")"
            ));
        }
        let (output_schema, output_validator) = match spec.output_schema {
            None => (None, None),
            Some(s) => {
                let schema =
                    parse_schema(&s).map_err(|e| format!("tool `{name}`: output schema: {e}"))?;
                let v = compile_schema(&schema)
                    .map_err(|e| format!("tool `{name}`: output schema: {e}"))?;
                (Some(schema), Some(v))
            }
        };
        let over = manifest.tools.get(&name).cloned().unwrap_or_default();
        let on_duplicate = over.on_duplicate.unwrap_or(spec.on_duplicate);
        if on_duplicate == DuplicatePolicy::Replace && !spec.cancellable {
            return Err(format!(
                "tool `{name}`: on-duplicate \"replace\" needs a cancellable tool"
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
        }));
    }
    for name in manifest.tools.keys() {
        if !tools.iter().any(|t| &t.name == name) {
            return Err(format!(
                "manifest [tools.{name}]: the plugin has no tool named `{name}`"
            ));
        }
    }
    Ok(tools)
}

fn parse_schema(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))
}

fn compile_schema(schema: &Value) -> Result<jsonschema::Validator, String> {
    if !schema.is_object() {
        return Err("not a JSON Schema object".into());
    }
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(schema)
        .map_err(|e| format!("not a valid JSON Schema: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn headers() {
        assert!(
            check_header(b"\0asm\x01\0\0\0")
                .expect_err("refused")
                .contains("core WebAssembly module")
        );
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
        assert!(
            check_header(b"hello world")
                .expect_err("refused")
                .contains("not a WebAssembly file")
        );
    }

    #[test]
    fn schemas() {
        assert!(compile_schema(&serde_json::json!({"type": "object"})).is_ok());
        assert!(compile_schema(&serde_json::json!({"type": 12})).is_err());
        assert!(compile_schema(&serde_json::json!([1])).is_err());
    }
}
