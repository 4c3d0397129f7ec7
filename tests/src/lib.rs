//! Helpers shared by the end-to-end tests in `tests/tests/`.
#![deny(unsafe_code)]

use dataplane::require::{self, Capability};

/// Decides what a test does when a capability is unavailable here: the one
/// rule every test follows (see [`dataplane::require`]).
pub use dataplane::require::available_or_skip;

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
