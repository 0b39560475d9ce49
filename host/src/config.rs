//! The host's configuration file, `toolhost.toml`.
//!
//! ```toml
//! [limits]                 # defaults for plugins whose manifest sets none
//! fuel = 10_000_000_000
//! memory = "128MiB"
//! timeout = "5m"
//! max-concurrency = 16
//! cancel-grace = "1s"
//!
//! [templates]              # any of the texts in `Templates`
//! started = "Started {tool} as {call_id}."
//!
//! [profiles.read-only]     # chosen with `--profile read-only`
//! exclude = ["build_report", "audit_log"]
//!
//! [profiles.search]        # only these tools
//! tools = ["find_files", "search_text"]
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::host::HostConfig;
use crate::manifest::{limit_overrides, raw, toml_error};
use crate::templates::Templates;

/// A configuration file that cannot be used, with the file and the reason.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct ConfigError {
    pub path: PathBuf,
    pub message: String,
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
}

/// A named subset of the tools: only `tools` when given, never `exclude`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub tools: Option<Vec<String>>,
    #[serde(default)]
    pub exclude: Vec<String>,
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
    pub fn load_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let err = |message: String| ConfigError {
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
        config.templates = file.templates;
        config.profiles = file.profiles;
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
