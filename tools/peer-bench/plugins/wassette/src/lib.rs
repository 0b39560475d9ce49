//! The peer benchmark's tools as a plain WebAssembly component, the shape
//! wassette loads: one exported function per tool (`wit/bench.wit`).

// The canonical-ABI glue that `generate!` and `export!` expand here is
// unsafe; the code written in this crate is not.
#![allow(unsafe_code)]

use std::hint::black_box;
use std::thread::sleep;
use std::time::Duration;

wit_bindgen::generate!({ world: "bench", path: "wit" });

struct Bench;

impl Guest for Bench {
    fn echo(text: String) -> String {
        text
    }

    fn sleep(ms: u64) -> String {
        sleep(Duration::from_millis(ms));
        "slept".to_owned()
    }

    fn spin() -> String {
        let mut x = 0u64;
        loop {
            x = black_box(x.wrapping_add(1));
        }
    }
}

export!(Bench);
