//! Build script of the `dataplane` crate: each concern in its own file.

#[path = "build/dpdk.rs"]
mod dpdk;
#[path = "build/shaders.rs"]
mod shaders;
#[path = "build/spdk.rs"]
mod spdk;

fn main() {
    dpdk::main();
    shaders::main();
    spdk::main();
}
