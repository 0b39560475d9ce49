//! The on-disk cache of compiled components, of which tool schemas
//! compiled, and of what each plugin's `describe()` answered (so that a
//! start lists the tools of unchanged plugins before they have loaded).
//!
//! Compiling a component takes from milliseconds (Rust) to seconds (Python,
//! JavaScript). The cache keeps the compiled artifact under a key made of the
//! file's BLAKE3 hash and the engine's fingerprint, so a second start with the
//! same plugins compiles nothing, and a changed engine never loads a stale
//! artifact.
//!
//! Reading and hashing a plugin is most of a warm start (the Python and
//! JavaScript examples are 12-20 MB each), so the cache also remembers each
//! plugin file's hash with the file's identity (device, inode, size,
//! modification and change times): while those are the same the file is
//! not read again, and the compiled artifact is mapped from the cache. Any
//! write to the file, in place or by a rename over it, changes its change
//! time or its inode, and the file is read and hashed again.

use anyhow::{Context, Result};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where compiled components live, or nowhere.
#[derive(Debug, Clone)]
pub(crate) struct CompileCache {
    dir: Option<PathBuf>,
    /// What schema marks are valid for: this version of toolhost, with
    /// [`SCHEMA_RULES`] (a compiled artifact is keyed by its engine's
    /// fingerprint instead).
    build: String,
}

/// The rules a tool's schema is checked by at load: change it when they
/// change (`plugin::compile_schema`'s options, `schema::problem`, or the
/// jsonschema version), so that no schema is trusted on an older verdict.
const SCHEMA_RULES: &str = "r4-jsonschema0.33";

/// Valid-schema marks kept at most: each is an empty file.
const MAX_SCHEMA_MARKS: usize = 4_096;

/// Descriptions of plugins kept at most (see
/// [`remember_description`](CompileCache::remember_description)).
const MAX_DESCRIPTIONS: usize = 4_096;

/// The largest description kept: a plugin with a larger one (the load
/// allows 1 000 tools with schemas of up to 256 KiB each) is not announced,
/// and waits for its load at each start.
const MAX_DESCRIPTION_BYTES: u64 = 4 * 1024 * 1024;

/// The format of a remembered description; part of its file's name.
const DESCRIPTION_FORMAT: &str = "d1";

/// How a component was obtained, for logs and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CacheOutcome {
    Hit,
    Compiled,
}

impl CompileCache {
    /// A cache under `dir` (created on first write); `None` disables caching.
    /// `build` names the build whose schema marks it reads and writes.
    pub(crate) fn new(dir: Option<PathBuf>, build: String) -> Self {
        Self { dir, build }
    }

    /// A cache under `dir` for this build of toolhost. It needs no engine:
    /// a start reads what it remembers of plugin files while the engine is
    /// set up.
    pub(crate) fn for_this_build(dir: Option<PathBuf>) -> Self {
        Self::new(dir, env!("CARGO_PKG_VERSION").to_owned())
    }

    /// The default location: `$TOOLHOST_CACHE_DIR`, else the user's cache
    /// directory (`~/.cache/toolhost` on Linux).
    pub(crate) fn default_dir() -> Option<PathBuf> {
        std::env::var_os("TOOLHOST_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| dirs::cache_dir().map(|d| d.join("toolhost")))
    }

    /// The compiled form of `bytes`, whose BLAKE3 hash is `hash`, from the
    /// cache or freshly compiled (and then stored), for `engine`, whose
    /// fingerprint is `fingerprint`.
    pub(crate) fn load(
        &self,
        engine: &Engine,
        fingerprint: &str,
        hash: &blake3::Hash,
        bytes: &[u8],
    ) -> Result<(Component, CacheOutcome)> {
        let Some(path) = self.entry(hash, fingerprint) else {
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

    /// The BLAKE3 hash of the plugin file at `path`, when the file is the
    /// one last remembered there (see [`remember`](Self::remember)). Never
    /// reads the plugin file.
    pub(crate) fn known_hash(&self, path: &Path, stamp: &FileStamp) -> Option<Known> {
        let text = std::fs::read_to_string(self.known(path)?).ok()?;
        let mut lines = text.lines();
        let (known_stamp, hex) = lines.next()?.rsplit_once(' ')?;
        if known_stamp != stamp.key {
            return None;
        }
        Some(Known {
            hash: blake3::Hash::from_hex(hex).ok()?,
            language: lines.next().filter(|l| !l.is_empty()).map(str::to_owned),
        })
    }

    /// The compiled form of the file whose hash is `hash`, when the cache
    /// has a usable one: mapped from the cache file, not read.
    pub(crate) fn cached(
        &self,
        engine: &Engine,
        fingerprint: &str,
        hash: &blake3::Hash,
    ) -> Option<Component> {
        let entry = self.entry(hash, fingerprint)?;
        if !entry.exists() {
            return None;
        }
        deserialize(engine, &entry)
            .inspect_err(
                |e| tracing::debug!(path = %entry.display(), error = %e, "cache entry not usable"),
            )
            .ok()
    }

    /// Remember that the plugin file at `path`, with the identity `stamp`
    /// taken before it was read, has the BLAKE3 hash `hash`; unless the
    /// file changed in the last [`SETTLED`], when it is read again next
    /// time.
    pub(crate) fn remember(&self, path: &Path, stamp: &FileStamp, known: &Known) {
        let Some(file) = self.known(path).filter(|_| stamp.settled()) else {
            return;
        };
        let line = format!(
            "{} {}\n{}\n",
            stamp.key,
            known.hash.to_hex(),
            known.language.as_deref().unwrap_or_default()
        );
        let known = file;
        if let Err(e) = store(&known, line.as_bytes()) {
            tracing::warn!(path = %known.display(), error = %e, "cannot write compile cache");
        }
    }

    /// Whether a tool's JSON Schema with this exact text was found valid
    /// before, by this build (see [`remember_valid_schema`](Self::remember_valid_schema)).
    pub(crate) fn schema_known_valid(&self, schema: &str) -> bool {
        self.valid_schema(schema).is_some_and(|path| path.exists())
    }

    /// Remember that the JSON Schema `schema` compiled: a warm start can
    /// then serve its tool before building its validator. Past
    /// [`MAX_SCHEMA_MARKS`] the marks are all removed first: a plugin
    /// decides its schemas' texts, and may change them at every load.
    pub(crate) fn remember_valid_schema(&self, schema: &str) {
        if let Some(path) = self.valid_schema(schema) {
            store_bounded(&path, b"", MAX_SCHEMA_MARKS);
        }
    }

    /// What `describe()` answered at the last load of the plugin whose
    /// content (component and manifest) hashes to `content`, as
    /// [`remember_description`](Self::remember_description) stored it.
    pub(crate) fn description(&self, content: &blake3::Hash) -> Option<String> {
        let path = self.described(content)?;
        let mut file = std::fs::File::open(path).ok()?;
        let len = file.metadata().ok()?.len();
        if len > MAX_DESCRIPTION_BYTES {
            return None;
        }
        // Read as measured, in one call and one more that finds the end: a
        // bounded read of unknown size grows its buffer from 32 bytes, a
        // call each time. A file that changed meanwhile (the cache writes
        // by renaming) is not read.
        let mut bytes = vec![0; len as usize];
        file.read_exact(&mut bytes).ok()?;
        if file.read(&mut [0]).ok()? != 0 {
            return None;
        }
        String::from_utf8(bytes).ok()
    }

    /// Remember what a plugin's `describe()` answered, so that a later
    /// start can list its tools before the plugin has loaded. Past
    /// [`MAX_DESCRIPTIONS`] the folder starts again, as for schema marks.
    pub(crate) fn remember_description(&self, content: &blake3::Hash, text: &str) {
        if text.len() as u64 > MAX_DESCRIPTION_BYTES {
            self.forget_description(content);
        } else if let Some(path) = self.described(content) {
            store_bounded(&path, text.as_bytes(), MAX_DESCRIPTIONS);
        }
    }

    /// Forget what a plugin's `describe()` answered.
    pub(crate) fn forget_description(&self, content: &blake3::Hash) {
        if let Some(path) = self.described(content) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// A description's file: named by the plugin's content hash and the
    /// format it is written in. `describe()`'s answer does not depend on
    /// the engine, so the fingerprint is not part of it.
    fn described(&self, content: &blake3::Hash) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        let hash = content.to_hex();
        let name = format!("{}-{DESCRIPTION_FORMAT}.json", &hash[..32]);
        Some(dir.join("described").join(name))
    }

    /// The mark of a valid schema: named by the hash of its text, the
    /// build (toolhost's version) and the rules it was checked by
    /// ([`SCHEMA_RULES`]).
    fn valid_schema(&self, schema: &str) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        let hash = blake3::hash(schema.as_bytes()).to_hex();
        let name = format!("{}-{}-{SCHEMA_RULES}", &hash[..32], self.build);
        Some(dir.join("schemas").join(name))
    }

    fn entry(&self, hash: &blake3::Hash, fingerprint: &str) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        let hash = hash.to_hex();
        Some(dir.join(format!("{}-{fingerprint}.cwasm", &hash[..32])))
    }

    /// Where the hash of the plugin file at `path` is remembered.
    fn known(&self, path: &Path) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        let key = blake3::hash(path.as_os_str().as_encoded_bytes()).to_hex();
        Some(dir.join("files").join(&key[..32]))
    }
}

/// What the cache remembers of a plugin file: its hash, and the language
/// its `producers` sections name, so a warm start need not read it.
#[derive(Debug, Clone)]
pub(crate) struct Known {
    pub(crate) hash: blake3::Hash,
    pub(crate) language: Option<String>,
}

/// What identifies a file's content without reading it: its device, inode,
/// size, and modification and change times (to the nanosecond). Where these
/// are not all known (not Unix), no stamp is taken and files are always
/// read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileStamp {
    key: String,
    changed: SystemTime,
}

/// How old a file's last change must be for its stamp to be remembered.
/// File times advance by the kernel's clock tick, so a file rewritten with
/// the same size within a tick of the stamp could keep its stamp; a file
/// changed this long ago cannot (Git calls such files "racily clean").
const SETTLED: Duration = Duration::from_secs(2);

impl FileStamp {
    /// The stamp of the file at `path` now, or `None` where stamps are not
    /// taken.
    pub(crate) fn of(path: &Path) -> std::io::Result<Option<Self>> {
        let meta = std::fs::metadata(path)?;
        Ok(Self::from_metadata(&meta))
    }

    #[cfg(unix)]
    pub(crate) fn from_metadata(m: &std::fs::Metadata) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let changed = u64::try_from(m.ctime())
            .ok()
            .map(|s| UNIX_EPOCH + Duration::new(s, u32::try_from(m.ctime_nsec()).unwrap_or(0)))?;
        let key = format!(
            "{}:{}:{}:{}.{}:{}.{}",
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec()
        );
        Some(Self { key, changed })
    }

    #[cfg(not(unix))]
    pub(crate) fn from_metadata(_: &std::fs::Metadata) -> Option<Self> {
        None
    }

    /// Whether the file was last changed long enough ago that any later
    /// change shows in its stamp.
    fn settled(&self) -> bool {
        SystemTime::now()
            .duration_since(self.changed)
            .is_ok_and(|age| age >= SETTLED)
    }
}

/// [`store`] into a folder of at most `max` files: a full folder is
/// emptied first. Failures are logged: the cache is an optimization.
fn store_bounded(path: &Path, data: &[u8], max: usize) {
    if let Some(dir) = path.parent()
        && let Ok(entries) = std::fs::read_dir(dir)
        && entries.count() >= max
    {
        let _ = std::fs::remove_dir_all(dir);
    }
    if let Err(e) = store(path, data) {
        tracing::warn!(path = %path.display(), error = %e, "cannot write compile cache");
    }
}

/// Write atomically: a concurrent reader sees the whole file or none.
fn store(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().context("cache entry has no folder")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Unique per write: two loads in one process may store the same entry.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_marks_are_bounded_and_name_their_rules() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = CompileCache::new(Some(dir.path().to_owned()), "f".into());
        cache.remember_valid_schema(r#"{"type":"object"}"#);
        let marks = dir.path().join("schemas");
        let names = || -> Vec<String> {
            std::fs::read_dir(&marks)
                .expect("marks")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(names().len(), 1);
        assert!(
            names()[0].ends_with(&format!("-f-{SCHEMA_RULES}")),
            "{:?}",
            names()
        );
        assert!(cache.schema_known_valid(r#"{"type":"object"}"#));

        // A plugin that names a new schema at every load fills the folder;
        // past the bound it starts again, with the newest mark only.
        for n in 1..MAX_SCHEMA_MARKS {
            std::fs::write(marks.join(format!("{n}")), b"").expect("mark");
        }
        cache.remember_valid_schema(r#"{"type":"array"}"#);
        assert_eq!(names().len(), 1, "{} marks", names().len());
        assert!(cache.schema_known_valid(r#"{"type":"array"}"#));
        assert!(!cache.schema_known_valid(r#"{"type":"object"}"#));
    }

    #[test]
    fn a_description_reads_back_whole_and_one_past_the_bound_is_not_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = CompileCache::new(Some(dir.path().to_owned()), "f".into());
        let content = blake3::hash(b"a plugin");
        assert_eq!(cache.description(&content), None);
        // Larger than the reads' first guesses, and not a multiple of them.
        let text = "d".repeat(12_345);
        cache.remember_description(&content, &text);
        assert_eq!(cache.description(&content).as_deref(), Some(text.as_str()));

        // Written there by something else: at the bound it is read, past
        // it it is not.
        let path = cache.described(&content).expect("a cache folder");
        let at_bound = "x".repeat(MAX_DESCRIPTION_BYTES as usize);
        std::fs::write(&path, &at_bound).expect("write");
        assert_eq!(cache.description(&content), Some(at_bound));
        std::fs::write(&path, "x".repeat(MAX_DESCRIPTION_BYTES as usize + 1)).expect("write");
        assert_eq!(cache.description(&content), None);
    }
}
