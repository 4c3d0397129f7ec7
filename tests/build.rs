//! Tells the tests whether DPDK was found (`cfg(dpdk)`, from dpdk-sys's
//! `links = "dpdk"` metadata), so that the scenarios that call DPDK's own
//! API next to the framework's compile only where it exists.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(dpdk)");
    println!("cargo::rerun-if-env-changed=DEP_DPDK_AVAILABLE");
    if std::env::var("DEP_DPDK_AVAILABLE").is_ok_and(|v| v == "1") {
        println!("cargo::rustc-cfg=dpdk");
    }
}
