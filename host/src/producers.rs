//! The language a component was written in, as far as its `producers`
//! custom sections tell (the tool-conventions' metadata that compilers and
//! component tools add: `language`, `processed-by`, `sdk`).
//!
//! Toolchains fill these in unevenly, so the answer is a best guess in
//! this order: a `language` the component itself declares (ComponentizeJS:
//! `JavaScript`); else the language of a known bindings generator or
//! componentizer named in `processed-by`; else none. A core module's own
//! `language` alone says little: every component built with the WASI
//! adapter holds a module in Rust, whatever its own language.

use wasmparser::{KnownCustom, Parser, Payload};

/// Tools named in `processed-by` that only a guest of one language uses,
/// most telling first: Rust guests also carry `wit-bindgen-c` (for their
/// `cabi_realloc`), so C comes last.
const MARKERS: &[(&str, &str)] = &[
    ("ComponentizeJS", "JavaScript"),
    ("componentize-py", "Python"),
    // componentize-py's pre-initializer: the only mark it leaves.
    ("component-init-transform", "Python"),
    ("wit-bindgen-rust", "Rust"),
    ("wit-bindgen-go", "Go"),
    ("wit-bindgen-csharp", "C#"),
    ("wit-bindgen-c", "C"),
];

/// The language `component` (a component's bytes) was written in, if its
/// `producers` sections say; `None` for a file that does not parse.
pub(crate) fn language(component: &[u8]) -> Option<String> {
    let mut depth = 0usize;
    let mut declared = None;
    let mut tools: Vec<String> = Vec::new();
    for payload in Parser::new(0).parse_all(component) {
        match payload.ok()? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::CustomSection(section) => {
                let KnownCustom::Producers(reader) = section.as_known() else {
                    continue;
                };
                for field in reader.into_iter().flatten() {
                    let values = field.values.into_iter().flatten();
                    match field.name {
                        "language" if depth == 0 && declared.is_none() => {
                            declared = values.map(|v| v.name.to_owned()).next();
                        }
                        "processed-by" => tools.extend(values.map(|v| v.name.to_owned())),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    declared.or_else(|| {
        MARKERS
            .iter()
            .find(|(tool, _)| tools.iter().any(|t| t == tool))
            .map(|(_, language)| (*language).to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The real components of each language are read in tests/dashboard.rs.
    #[test]
    fn a_file_without_producers_has_no_language() {
        assert_eq!(language(b"not wasm"), None);
        assert_eq!(language(b"\0asm\x0d\0\x01\0"), None);
    }
}
