//! A build check for the repository's test plugins: every folder in
//! `tests/plugins/` and `tests/plugins-lang/` must be named, as the string
//! literal `"NAME"`, by a test in `tests/*.rs`. A test plugin without a test
//! fails the build, naming the plugin.
//!
//! It reads a few dozen small files and is skipped when the tests are absent
//! (a packaged crate).

use std::fs;
use std::path::{Path, PathBuf};

fn main() {
    let Some(manifest_dir) = std::env::var_os("CARGO_MANIFEST_DIR") else {
        return;
    };
    let tests = Path::new(&manifest_dir).join("..").join("tests");
    if !tests.join("plugins").is_dir() {
        return;
    }
    let plugin_dirs = ["plugins", "plugins-lang"];
    for dir in plugin_dirs {
        println!("cargo::rerun-if-changed={}", tests.join(dir).display());
    }
    let sources = rust_files(&tests);
    let mut text = String::new();
    for file in &sources {
        println!("cargo::rerun-if-changed={}", file.display());
        text.push_str(&fs::read_to_string(file).unwrap_or_default());
    }

    let mut untested = Vec::new();
    for dir in plugin_dirs {
        for plugin in folders(&tests.join(dir)) {
            if !text.contains(&format!("\"{plugin}\"")) {
                untested.push(format!("tests/{dir}/{plugin}"));
            }
        }
    }
    if !untested.is_empty() {
        println!(
            "cargo::error=test plugins without a test (no tests/*.rs names them as \"NAME\"): {}",
            untested.join(", ")
        );
    }
}

/// The `.rs` files directly in `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = entries(dir)
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.sort();
    files
}

/// The names of the folders directly in `dir`.
fn folders(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = entries(dir)
        .filter(|p| p.is_dir())
        .filter_map(|p| Some(p.file_name()?.to_str()?.to_owned()))
        .collect();
    names.sort();
    names
}

fn entries(dir: &Path) -> impl Iterator<Item = PathBuf> {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
}
