//! Helpers shared by the end-to-end tests in `tests/tests/`.
#![deny(unsafe_code)]

use dataplane::require;

/// Decides what a test does when a capability is unavailable here: the one
/// rule every test follows (see [`dataplane::require`]).
pub use dataplane::require::available_or_skip;

use dataplane::net::netns::{self, Netns, unique_name, veth_pair};
use dataplane::net::{self, BackendChoice, PortConfig};
use dataplane::require::{Capability, Requirements};

/// Checks `DATAPLANE_REQUIRE=dpdk` on an automatic open of a device DPDK
/// cannot drive: when DPDK is required, `open` (run on whatever thread the
/// device needs) must refuse with [`dataplane::Error::Required`] naming
/// dpdk rather than fall back. Does nothing when DPDK is not required.
///
/// # Panics
/// When DPDK is required and `open` fell back or failed otherwise.
pub fn assert_dpdk_required_refuses<T: std::fmt::Debug>(
    open: impl FnOnce() -> dataplane::Result<T>,
) {
    if !require::required(Capability::Dpdk) {
        return;
    }
    let refused = open();
    assert!(
        matches!(&refused, Err(dataplane::Error::Required { capability, .. }) if *capability == "dpdk"),
        "DATAPLANE_REQUIRE=dpdk, yet: {refused:?}"
    );
}

/// Two network namespaces joined by a veth pair, `veth0` in each; both go
/// away (with the pair) when this drops.
#[derive(Debug)]
pub struct VethBed {
    /// One end.
    pub a: Netns,
    /// The other.
    pub b: Netns,
}

/// Makes a [`VethBed`], or skips through the `netns` capability (a
/// failure when `DATAPLANE_REQUIRE` names it).
///
/// # Panics
/// When the namespaces or the pair cannot be made though the probe said
/// they could.
pub fn veth_bed() -> Option<VethBed> {
    let p = netns::probe();
    if !available_or_skip(Capability::Netns, p.available, &p.reason) {
        return None;
    }
    let a = Netns::create(&unique_name("dpa")).expect("namespace a");
    let b = Netns::create(&unique_name("dpb")).expect("namespace b");
    veth_pair(&a, "veth0", &b, "veth0").expect("veth pair");
    Some(VethBed { a, b })
}

/// Opens `cfg` with the automatic choice inside `ns`, twice: once as the
/// environment's `DATAPLANE_REQUIRE` says (which must refuse when it names
/// dpdk, see [`assert_dpdk_required_refuses`]), then with nothing
/// required, which is returned.
///
/// # Panics
/// When the refusal is wrong, or the open fails.
pub fn auto_open_in(ns: &Netns, cfg: PortConfig) -> net::Opened {
    let c = cfg.clone();
    assert_dpdk_required_refuses(|| {
        ns.run(move || net::open(&c, BackendChoice::Auto).map(|o| o.backend))
            .expect("thread")
    });
    ns.run(move || net::open_with(&cfg, BackendChoice::Auto, &Requirements::parse("")))
        .expect("thread")
        .expect("opened")
}

/// The arguments that run only the ignored test `name` of a test binary,
/// on one thread, with its output shown: how a test starts the child half
/// of itself in a process of its own (DPDK's EAL, a process to kill, an
/// environment to change).
pub fn child_test_args(name: &str) -> [&str; 5] {
    [
        name,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]
}

/// This test binary, to run a child test in (see [`child_test_args`]).
///
/// # Panics
/// When the running binary's path cannot be read.
pub fn this_test_binary() -> std::path::PathBuf {
    std::env::current_exe().expect("the test binary's path")
}
