//! A component of the `wasi:cli` world: the host must refuse it as a plugin.

fn main() {
    println!("hi");
}
