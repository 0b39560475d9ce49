//! The on-disk cache of compiled components.
//!
//! Compiling a component takes from milliseconds (Rust) to seconds (Python,
//! JavaScript). The cache keeps the compiled artifact under a key made of the
//! file's BLAKE3 hash and the engine's fingerprint, so a second start with the
//! same plugins compiles nothing, and a changed engine never loads a stale
//! artifact.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where compiled components live, or nowhere.
#[derive(Debug, Clone)]
pub(crate) struct CompileCache {
    dir: Option<PathBuf>,
    fingerprint: String,
}

/// How a component was obtained, for logs and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CacheOutcome {
    Hit,
    Compiled,
}

impl CompileCache {
    /// A cache under `dir` (created on first write); `None` disables caching.
    pub(crate) fn new(dir: Option<PathBuf>, fingerprint: String) -> Self {
        Self { dir, fingerprint }
    }

    /// The default location: `$TOOLHOST_CACHE_DIR`, else the user's cache
    /// directory (`~/.cache/toolhost` on Linux).
    pub(crate) fn default_dir() -> Option<PathBuf> {
        std::env::var_os("TOOLHOST_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| dirs::cache_dir().map(|d| d.join("toolhost")))
    }

    /// The compiled form of `bytes`, from the cache or freshly compiled (and
    /// then stored).
    pub(crate) fn load(&self, engine: &Engine, bytes: &[u8]) -> Result<(Component, CacheOutcome)> {
        let Some(path) = self.entry(bytes) else {
            return Ok((Component::new(engine, bytes)?, CacheOutcome::Compiled));
        };
        if path.exists() {
            match deserialize(engine, &path) {
                Ok(c) => return Ok((c, CacheOutcome::Hit)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "dropping unusable cache entry");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let compiled = engine.precompile_component(bytes)?;
        if let Err(e) = store(&path, &compiled) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write compile cache");
        }
        let component =
            deserialize(engine, &path).or_else(|_| deserialize_bytes(engine, &compiled))?;
        Ok((component, CacheOutcome::Compiled))
    }

    fn entry(&self, bytes: &[u8]) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        let hash = blake3::hash(bytes).to_hex();
        Some(dir.join(format!("{}-{}.cwasm", &hash[..32], self.fingerprint)))
    }
}

/// Write atomically: a concurrent reader sees the whole file or none.
fn store(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().context("cache entry has no folder")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, data).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, path: &Path) -> Result<Component> {
    // SAFETY: the file was written by `precompile_component` of an engine
    // with the same fingerprint (it is part of the file name), into the
    // user's own cache folder; wasmtime still checks its header and version.
    Ok(unsafe { Component::deserialize_file(engine, path) }?)
}

#[allow(unsafe_code)]
fn deserialize_bytes(engine: &Engine, bytes: &[u8]) -> Result<Component> {
    // SAFETY: the bytes were produced by `precompile_component` just now.
    Ok(unsafe { Component::deserialize(engine, bytes) }?)
}
