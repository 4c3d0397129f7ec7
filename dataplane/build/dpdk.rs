//! Tells the crate whether DPDK was found: `cfg(dpdk)` when dpdk-sys built
//! its bindings, read from dpdk-sys's `links = "dpdk"` metadata
//! (`DEP_DPDK_AVAILABLE`), so that the `net::dpdk` backend compiles only
//! where there is something to call.

pub fn main() {
    println!("cargo::rustc-check-cfg=cfg(dpdk)");
    println!("cargo::rerun-if-env-changed=DEP_DPDK_AVAILABLE");
    if std::env::var("DEP_DPDK_AVAILABLE").is_ok_and(|v| v == "1") {
        println!("cargo::rustc-cfg=dpdk");
    }
}
