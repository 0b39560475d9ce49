//! The host's settings: [`HostConfig`], and the configuration file
//! `toolhost.toml` that sets them.
//!
//! ```toml
//! [limits]                 # defaults for plugins whose manifest sets none
//! fuel = 10_000_000_000
//! memory = "128MiB"
//! timeout = "5m"
//! max-concurrency = 16
//! cancel-grace = "1s"
//! metering = "fuel"        # or "epoch" (no fuel budget)
//!
//! [templates]              # any of the texts in `Templates`
//! started = "Started {tool} as {call_id}."
//!
//! [profiles.read-only]     # chosen with `--profile read-only`
//! exclude = ["build_report", "audit_log"]
//!
//! [profiles.search]        # only these tools
//! tools = ["find_files", "search_text"]
//!
//! [records]                # how long finished calls' records are kept
//! keep = "30d"
//! max = 100_000
//!
//! [engine]
//! instances = 256          # instances alive at once, all plugins of an engine
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::engine::{CompileCache, EngineConfig};
use crate::error::FileError;
use crate::limits::Limits;
use crate::manifest::{limit_overrides, raw, toml_error};
use crate::store::{Retention, TaskStore};
use crate::templates::Templates;

/// Host-wide settings. Start from [`HostConfig::default`] and change what
/// you need; new settings may be added without breaking that code.
///
/// Defaults:
/// - `limits`: [`Limits::default`], for plugins whose manifest sets none
/// - `engine`: [`EngineConfig::default`]
/// - `cache_dir`: `$TOOLHOST_CACHE_DIR`, else the user's cache folder
///   (`~/.cache/toolhost`); `None` disables the compile cache
/// - `describe_fuel`: 2 000 000 000 units for a plugin's `describe()`
/// - `describe_timeout`: 10 seconds for a plugin's `describe()`
/// - `templates`: [`Templates::default`], the texts sessions answer with
/// - `profiles`: none; `profile`: none (every enabled tool is served)
/// - `store`: where call records are kept (B31); `None` keeps them in a
///   bounded [`MemoryStore`](crate::store::MemoryStore), lost at exit. The
///   `toolhost` command opens a [`SqliteStore`](crate::store::SqliteStore)
///   unless told `--no-state`.
/// - `records`: [`Retention::default`], how long finished records are kept
///   and how many (`[records]` in `toolhost.toml`)
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HostConfig {
    pub limits: Limits,
    pub templates: Arc<Templates>,
    /// The profiles defined in the configuration file.
    pub profiles: BTreeMap<String, Profile>,
    /// The profile in use: only its tools are listed and callable.
    pub profile: Option<Profile>,
    pub engine: EngineConfig,
    pub cache_dir: Option<PathBuf>,
    pub describe_fuel: u64,
    pub describe_timeout: Duration,
    pub store: Option<Arc<dyn TaskStore>>,
    pub records: Retention,
    /// The `[dashboard]` table: what `toolhost dashboard` needs to serve
    /// beyond loopback.
    pub dashboard: DashboardConfig,
}

/// The `[dashboard]` table of `toolhost.toml`.
///
/// ```toml
/// [dashboard]
/// token = "a long random string"   # default none: loopback only
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DashboardConfig {
    /// The token every request must carry when the dashboard listens on
    /// an address other than loopback.
    pub token: Option<String>,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            templates: Arc::default(),
            profiles: BTreeMap::new(),
            profile: None,
            engine: EngineConfig::default(),
            cache_dir: CompileCache::default_dir(),
            describe_fuel: 2_000_000_000,
            describe_timeout: Duration::from_secs(10),
            store: None,
            records: Retention::default(),
            dashboard: DashboardConfig::default(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    limits: raw::Limits,
    #[serde(default)]
    templates: Templates,
    #[serde(default)]
    profiles: BTreeMap<String, Profile>,
    #[serde(default)]
    records: Retention,
    #[serde(default)]
    dashboard: DashboardConfig,
    #[serde(default)]
    engine: EngineFile,
}

/// The `[engine]` table.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct EngineFile {
    instances: Option<u32>,
}

/// The instance pools `[engine] instances` may ask for: enough that a
/// plugin can run beside the sixteenth the others keep, and few enough
/// that the pool's address space fits in a process.
const INSTANCES: std::ops::RangeInclusive<u32> = 32..=20_000;

/// A named subset of the tools: only `tools` when given, never `exclude`;
/// and how its MCP calls answer (`answer`, when set: see
/// [`AnswerMode`]).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Profile {
    pub tools: Option<Vec<String>>,
    #[serde(default)]
    pub exclude: Vec<String>,
    pub answer: Option<AnswerMode>,
}

impl Profile {
    /// Whether the profile serves the tool `name`.
    pub fn allows(&self, name: &str) -> bool {
        self.tools
            .as_ref()
            .is_none_or(|t| t.iter().any(|n| n == name))
            && !self.exclude.iter().any(|n| n == name)
    }
}

impl HostConfig {
    /// The defaults with the file at `path` on top.
    pub fn load_file(path: impl AsRef<Path>) -> Result<Self, FileError> {
        let path = path.as_ref();
        let err = |message: String| FileError {
            path: path.to_owned(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let file: File = toml::from_str(&text).map_err(|e| err(toml_error(&text, &e)))?;
        file.templates
            .check()
            .map_err(|e| err(format!("templates: {e}")))?;
        let mut config = HostConfig::default();
        config.limits = config
            .limits
            .with(&limit_overrides(file.limits).map_err(err)?);
        config.templates = Arc::new(file.templates);
        config.profiles = file.profiles;
        config.records = file.records;
        config.dashboard = file.dashboard;
        if let Some(instances) = file.engine.instances {
            if !INSTANCES.contains(&instances) {
                return Err(err(format!(
                    "engine.instances is {instances}: it must be from {} to {}",
                    INSTANCES.start(),
                    INSTANCES.end()
                )));
            }
            config.engine.instances = instances;
        }
        Ok(config)
    }

    /// Serve only the tools of the profile `name`.
    pub fn use_profile(&mut self, name: &str) -> Result<(), String> {
        match self.profiles.get(name) {
            Some(p) => {
                self.profile = Some(p.clone());
                Ok(())
            }
            None => Err(format!(
                "there is no profile `{name}` in the configuration (profiles: {})",
                if self.profiles.is_empty() {
                    "none".to_owned()
                } else {
                    self.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
                }
            )),
        }
    }
}

/// How a call answers the model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerMode {
    /// The first update answers the call, and the call goes on in the
    /// background (B2).
    #[default]
    Release,
    /// The call answers when it ends, with its result; its updates go only
    /// to the events (for clients that show progress while they wait).
    Final,
}

impl std::str::FromStr for AnswerMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "release" => Ok(Self::Release),
            "final" => Ok(Self::Final),
            other => Err(format!(
                "unknown answer mode `{other}`: use release or final"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<HostConfig, FileError> {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("toolhost.toml");
        std::fs::write(&path, text).expect("write");
        HostConfig::load_file(&path)
    }

    #[test]
    fn the_engine_table_sizes_the_instance_pool_within_bounds() {
        assert_eq!(load("").expect("empty").engine.instances, 256);
        let config = load("[engine]\ninstances = 4000\n").expect("4000");
        assert_eq!(config.engine.instances, 4000);
        for bad in [31, 20_001] {
            let e = load(&format!("[engine]\ninstances = {bad}\n")).expect_err("out of range");
            let e = e.to_string();
            assert!(
                e.contains("toolhost.toml") && e.contains(&format!("engine.instances is {bad}")),
                "{e}"
            );
            assert!(e.contains("from 32 to 20000"), "{e}");
        }
        let e = load("[engine]\nthreads = 4\n").expect_err("unknown key");
        assert!(e.to_string().contains("threads"), "{e}");
    }
}
