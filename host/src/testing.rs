//! What the crate's own tests share: the repository's folders and the
//! test plugins that `tools/build-plugins` builds.

use std::path::{Path, PathBuf};

/// The repository's root folder.
pub(crate) fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
}

/// A copy of the test plugin `name` (`dist/test-plugins/NAME.wasm`) in
/// `folder`, as `NAME.wasm`.
pub(crate) fn copy_test_plugin(name: &str, folder: &Path) -> PathBuf {
    let plugin = root().join(format!("dist/test-plugins/{name}.wasm"));
    let file = folder.join(format!("{name}.wasm"));
    std::fs::copy(&plugin, &file)
        .unwrap_or_else(|e| panic!("{}: {e} (run tools/build-plugins)", plugin.display()));
    file
}
