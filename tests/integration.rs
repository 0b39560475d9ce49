//! The integration tests, one module per area, in one binary: each test
//! binary links all of wasmtime (about 80 MB), so one binary instead of
//! fifteen saves a gigabyte of disk and most of the link time on two cores.
//! `cargo test --test integration calls::` runs one area.
//!
//! `tests/bounds.rs` stays a binary of its own: its checks read the test
//! process's resident memory, which tests running beside would disturb.

mod common;

mod calls;
mod cli;
mod clients;
mod dashboard;
mod isolation;
mod languages;
mod loading;
mod mcp;
mod new;
mod portable;
mod records;
mod sandbox;
mod serve;
mod sessions;
mod soak;
