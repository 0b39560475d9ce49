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
//! ```

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
        Ok(config)
    }
}
