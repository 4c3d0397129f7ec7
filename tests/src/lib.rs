//! Helpers shared by the end-to-end tests in `tests/tests/`, and the
//! README's code run as a doctest (below), so the first code a user copies
//! is known to compile and run.

use dataplane::require::{self, Capability};

/// Decides what a test does when `capability` is unavailable here: under
/// `DATAPLANE_REQUIRE` naming it, the test fails with the reason; otherwise
/// it prints `skip: <reason>` and the caller returns.
///
/// Returns `true` when the test should go on (the capability is available).
///
/// # Panics
/// When the capability is required and unavailable: that is the test
/// failing, on purpose.
pub fn available_or_skip(capability: Capability, available: bool, reason: &str) -> bool {
    if available {
        return true;
    }
    if require::required(capability) {
        panic!(
            "{} is required (DATAPLANE_REQUIRE) but unavailable: {reason}",
            capability.name()
        );
    }
    println!("skip: {} unavailable: {reason}", capability.name());
    false
}

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

#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
