//! Build support for C plugins, driven by `tools/build-plugins`.
//!
//! ```text
//! componentize c-bindings WIT_DIR WORLD OUT_DIR   # WORLD.h, WORLD.c, WORLD_component_type.o
//! componentize adapt CORE.wasm OUT.wasm           # core module + WASI preview 1 adapter -> component
//! ```
//!
//! Both are libraries here (`wit-bindgen-c`, `wit-component` and the adapter
//! that wasmtime ships on crates.io), so a C toolchain needs no
//! `cargo install` of the command-line tools.

use std::path::Path;

use anyhow::{Context, Result, bail};
use wasi_preview1_component_adapter_provider::{
    WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
};
use wit_bindgen_core::Files;
use wit_component::ComponentEncoder;
use wit_parser::Resolve;

const USAGE: &str = "usage:
  componentize c-bindings WIT_DIR WORLD OUT_DIR
  componentize adapt CORE.wasm OUT.wasm";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["c-bindings", wit, world, out] => c_bindings(Path::new(wit), world, Path::new(out)),
        ["adapt", core, out] => adapt(Path::new(core), Path::new(out)),
        _ => bail!("{USAGE}"),
    }
}

/// Writes the C bindings of `world` in the WIT folder `wit` into `out`.
fn c_bindings(wit: &Path, world: &str, out: &Path) -> Result<()> {
    let mut resolve = Resolve::default();
    let (package, _) = resolve
        .push_path(wit)
        .with_context(|| format!("reading the WIT in {}", wit.display()))?;
    let world = resolve.select_world(&[package], Some(world))?;
    let mut files = Files::default();
    wit_bindgen_c::Opts::default()
        .build()
        .generate(&mut resolve, world, &mut files)
        .context("generating the C bindings")?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for (name, contents) in files.iter() {
        let path = out.join(name);
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Wraps the core module `core` (built for wasm32-wasi as a reactor, with the
/// component type section the C bindings link in) into a component at `out`.
fn adapt(core: &Path, out: &Path) -> Result<()> {
    let module = std::fs::read(core).with_context(|| format!("reading {}", core.display()))?;
    let component = ComponentEncoder::default()
        .validate(true)
        .module(&module)
        .with_context(|| {
            format!(
                "{} is not a core module with a component type",
                core.display()
            )
        })?
        .adapter(
            WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
            WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        )?
        .encode()
        .with_context(|| format!("turning {} into a component", core.display()))?;
    std::fs::write(out, component).with_context(|| format!("writing {}", out.display()))
}
