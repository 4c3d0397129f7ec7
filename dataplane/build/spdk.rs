//! Tells the crate whether SPDK was found: `cfg(spdk)` when spdk-sys built
//! its bindings, read from spdk-sys's `links = "spdk"` metadata
//! (`DEP_SPDK_AVAILABLE`), so that the `block` SPDK backend's driver
//! compiles only where there is something to call.

pub fn main() {
    println!("cargo::rustc-check-cfg=cfg(spdk)");
    println!("cargo::rerun-if-env-changed=DEP_SPDK_AVAILABLE");
    if std::env::var("DEP_SPDK_AVAILABLE").is_ok_and(|v| v == "1") {
        println!("cargo::rustc-cfg=spdk");
    }
}
