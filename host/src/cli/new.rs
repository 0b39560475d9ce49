//! `toolhost new`: a plugin folder to start from, in each language, that
//! builds with `tools/build-plugins` and loads as it is.
//!
//! The plugin builds against a toolhost checkout: the contract (`wit/`), the
//! Rust guest crate (`guest/`) and the other languages' helpers
//! (`plugins/{python,js,c}/`). The checkout is the nearest folder above the
//! new plugin that has them, or else the one this binary was built from.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The languages a plugin can be written in here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    Rust,
    Python,
    Js,
    C,
}

impl Language {
    /// The folder prefix `tools/build-plugins` knows the language by.
    fn prefix(self) -> &'static str {
        match self {
            Language::Rust => "rust",
            Language::Python => "python",
            Language::Js => "js",
            Language::C => "c",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Language::Rust => "Rust",
            Language::Python => "Python",
            Language::Js => "JavaScript",
            Language::C => "C",
        }
    }
}

/// The longest plugin name: a tool name has at most 64 characters.
const MAX_NAME: usize = 50;

const README: &str = include_str!("../../templates/README.md");
const MANIFEST: &str = include_str!("../../templates/manifest.toml");
const RUST_CARGO: &str = include_str!("../../templates/rust/Cargo.toml.in");
const RUST_LIB: &str = include_str!("../../templates/rust/lib.rs");
const RUST_GITIGNORE: &str = include_str!("../../templates/rust/gitignore");
const PYTHON_APP: &str = include_str!("../../templates/python/app.py");
const JS_APP: &str = include_str!("../../templates/js/app.js");
const C_TOOL: &str = include_str!("../../templates/c/tool.c");

/// What `toolhost new` made.
#[derive(Debug)]
pub struct NewPlugin {
    /// The plugin folder.
    pub folder: PathBuf,
    /// The files in it, relative to it.
    pub files: Vec<String>,
    /// The tool the template provides.
    pub tool: String,
    /// The folder as the build command takes it: relative to the checkout
    /// when inside it.
    pub build_path: String,
}

/// Creates `<parent>/<language>-<name>/` with a working plugin, a manifest
/// and a README. A name that already starts with `<language>-` is used as
/// the folder name as it is.
pub fn new_plugin(name: &str, language: Language, parent: &Path) -> Result<NewPlugin> {
    check_name(name)?;
    let prefix = format!("{}-", language.prefix());
    let base = name.strip_prefix(&prefix).unwrap_or(name);
    if base.is_empty() {
        bail!("invalid plugin name {name:?}: the part after `{prefix}` is empty");
    }
    let folder_name = format!("{prefix}{base}");
    let tool = base.replace('-', "_");

    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let parent = parent
        .canonicalize()
        .with_context(|| format!("resolving {}", parent.display()))?;
    let checkout = find_checkout(&parent)?;
    let folder = parent.join(&folder_name);
    let inside = folder.strip_prefix(&checkout).ok();
    // The build command takes the folder relative to the checkout when it
    // is inside; the manifest, copied to dist/plugins, names it from there.
    let build_path = inside.unwrap_or(folder.as_path()).display().to_string();
    let from_dist = match inside {
        Some(rel) => Path::new("../..").join(rel),
        None => folder.clone(),
    }
    .display()
    .to_string();
    let guest = pathdiff::diff_paths(checkout.join("guest"), &folder)
        .unwrap_or_else(|| checkout.join("guest"))
        .display()
        .to_string();

    let source = match language {
        Language::Rust => "src/lib.rs".to_owned(),
        Language::Python => "app.py".to_owned(),
        Language::Js => "app.js".to_owned(),
        Language::C => format!("{tool}.c"),
    };
    let vars: [(&str, String); 7] = [
        ("folder", folder_name.clone()),
        ("tool", tool.clone()),
        ("language", language.title().to_owned()),
        ("source", source.clone()),
        ("path", build_path.clone()),
        ("from_dist", from_dist),
        ("guest", guest),
    ];
    let fields: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let render = |template: &str| toolhost::Templates::fill(template, &fields);

    let mut files: Vec<(String, String)> = match language {
        Language::Rust => vec![
            ("Cargo.toml".into(), render(RUST_CARGO)),
            (source, render(RUST_LIB)),
            (".gitignore".into(), RUST_GITIGNORE.to_owned()),
        ],
        Language::Python => vec![(source, render(PYTHON_APP))],
        Language::Js => vec![(source, render(JS_APP))],
        Language::C => vec![(source, render(C_TOOL))],
    };
    if language == Language::Rust {
        // The checkout's lock file: the first build resolves the versions
        // the checkout has already built, with no registry lookup.
        if let Ok(lock) = fs::read_to_string(checkout.join("Cargo.lock")) {
            files.push(("Cargo.lock".into(), lock));
        }
    }
    files.push((format!("{folder_name}.toml"), render(MANIFEST)));
    files.push(("README.md".into(), render(README)));

    // create_dir (not _all): an existing folder is never written into.
    fs::create_dir(&folder).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::anyhow!(
                "{} already exists: pick another name, or remove it first",
                folder.display()
            )
        } else {
            anyhow::Error::new(e).context(format!("creating {}", folder.display()))
        }
    })?;
    if let Err(e) = write_files(&folder, &files) {
        let _ = fs::remove_dir_all(&folder);
        return Err(e);
    }
    Ok(NewPlugin {
        folder,
        files: files.into_iter().map(|(path, _)| path).collect(),
        tool,
        build_path,
    })
}

fn write_files(folder: &Path, files: &[(String, String)]) -> Result<()> {
    for (path, text) in files {
        let path = folder.join(path);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// A lowercase letter, then lowercase letters, digits, `-` and `_`: a
/// folder name everywhere and, with `-` as `_`, a tool name.
fn check_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !first_ok || !rest_ok || name.len() > MAX_NAME || name.ends_with('-') {
        bail!(
            "invalid plugin name {name:?}: use a lowercase letter, then lowercase letters, \
             digits, - and _ (at most {MAX_NAME}, not ending in -)"
        );
    }
    Ok(())
}

/// Whether `dir` is a toolhost checkout: the contract and the helpers.
fn is_checkout(dir: &Path) -> bool {
    [
        "wit/plugin.wit",
        "guest/Cargo.toml",
        "plugins/js/toolhost.js",
    ]
    .iter()
    .all(|p| dir.join(p).is_file())
}

/// The nearest checkout at or above `dir`, or the one this binary was built
/// from.
fn find_checkout(dir: &Path) -> Result<PathBuf> {
    if let Some(found) = dir.ancestors().find(|d| is_checkout(d)) {
        return Ok(found.to_path_buf());
    }
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if is_checkout(&built_from) {
        return Ok(built_from.canonicalize()?);
    }
    bail!(
        "no toolhost checkout above {} (none has wit/plugin.wit, guest/ and plugins/js/), \
         and the one this binary was built from ({}) is gone: a plugin builds against \
         a checkout's contract and helpers",
        dir.display(),
        built_from.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_make_a_folder_and_a_tool() {
        for ok in ["greet", "word-count", "a1_b2"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Greet",
            "1st",
            "-x",
            "x-",
            "a b",
            "a/b",
            "ü",
            &"x".repeat(51),
        ] {
            let err = check_name(bad).expect_err(bad).to_string();
            assert!(err.contains("invalid plugin name"), "{bad}: {err}");
        }
    }
}
