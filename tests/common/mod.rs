//! Shared by the integration tests: where the built plugins are, and hosts
//! set up for tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use toolhost::{Host, HostConfig};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_owned()
}

fn built(dir: &str, name: &str) -> PathBuf {
    let path = root().join("dist").join(dir).join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run tools/build-plugins first",
        path.display()
    );
    path
}

/// Run the `toolhost` binary, with the tests' compile cache: whether it
/// succeeded, its stdout and its stderr.
pub fn toolhost(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_toolhost"))
        .args(args)
        .env(
            "TOOLHOST_CACHE_DIR",
            root().join("target").join("toolhost-test-cache"),
        )
        .output()
        .expect("run toolhost");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A built example plugin, `dist/plugins/NAME.wasm`.
pub fn example(name: &str) -> PathBuf {
    built("plugins", name)
}

/// A built test plugin, `dist/test-plugins/NAME.wasm`.
pub fn test_plugin(name: &str) -> PathBuf {
    built("test-plugins", name)
}

/// Host settings for tests: a small instance pool and a compile cache
/// shared by all test runs.
pub fn config() -> HostConfig {
    let mut config = HostConfig::default();
    config.engine.instances = 64;
    config.cache_dir = Some(root().join("target").join("toolhost-test-cache"));
    config
}

/// A folder holding copies of the given plugins (and manifests given as
/// `(name, toml)`), so a test controls exactly what a host loads.
pub struct Folder {
    pub dir: tempfile::TempDir,
}

impl Folder {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Copy `wasm` in as `NAME.wasm`.
    pub fn add(&self, wasm: &Path, name: &str) -> PathBuf {
        let to = self.path().join(format!("{name}.wasm"));
        std::fs::copy(wasm, &to).expect("copy plugin");
        to
    }

    /// Copy `wasm` in as `NAME.wasm` with the manifest text `toml`.
    pub fn add_with_manifest(&self, wasm: &Path, name: &str, toml: &str) -> PathBuf {
        std::fs::write(self.path().join(format!("{name}.toml")), toml).expect("write manifest");
        self.add(wasm, name)
    }

    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let to = self.path().join(name);
        std::fs::write(&to, bytes).expect("write file");
        to
    }
}

/// A host that has loaded `folder`, and the refusals.
pub async fn host_for(folder: &Folder) -> (Host, toolhost::LoadReport) {
    let host = Host::new(config()).expect("host");
    let report = host.load_dir(folder.path()).await.expect("load");
    (host, report)
}

/// A host serving the given test plugins, each under its own name.
pub async fn host_with(test_plugins: &[&str]) -> (Host, Folder) {
    let folder = Folder::new();
    for name in test_plugins {
        folder.add(&test_plugin(name), name);
    }
    let (host, report) = host_for(&folder).await;
    assert!(report.refused.is_empty(), "refused: {:?}", report.refused);
    (host, folder)
}

/// The text of a successful call, or a panic with the error.
pub fn text(outcome: &toolhost::CallOutcome) -> String {
    match &outcome.result {
        Ok(o) => o.model_text().unwrap_or_default(),
        Err(e) => panic!("{} failed: {e:?}", outcome.tool),
    }
}

/// Wait until the call's record says it ended.
pub async fn ended(s: &toolhost::Session, call_id: &str) -> toolhost::CallRecord {
    tokio::time::timeout(std::time::Duration::from_secs(20), async {
        loop {
            if let Some(r) = s.record(call_id)
                && !r.status.is_live()
            {
                return r;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{call_id} did not end"))
}
