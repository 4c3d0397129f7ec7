//! Helpers for the unit tests: the `DATAPLANE_REQUIRE` contract.
//!
//! `DATAPLANE_REQUIRE` is a comma list of capabilities (`hugepages`, ...),
//! parsed by the `dataplane-require` crate as everywhere else. A test that
//! cannot get a capability prints `skip: <reason>` and returns, unless the
//! capability is listed there: then the skip is a failure.

use crate::region::{Region, RegionBuilder};
pub(crate) use dataplane_require::{Capability, available_or_skip, required};

/// Prints `skip: <reason>`, or fails the test when `DATAPLANE_REQUIRE`
/// names `capability`: the workspace's one rule, from `dataplane-require`.
pub(crate) fn skip(capability: Capability, reason: &str) {
    available_or_skip(capability, false, reason);
}

/// Builds a hugepage-backed region with fallback disallowed, or skips (see
/// [`skip`]) and returns `None`.
pub(crate) fn hugepage_region(builder: RegionBuilder) -> Option<Region> {
    match builder.allow_fallback(false).build() {
        Ok(r) => {
            assert!(
                r.is_hugepage_backed(),
                "fallback disallowed but got {:?}",
                r.backing()
            );
            Some(r)
        }
        Err(e) => {
            skip(Capability::Hugepages, &e.to_string());
            None
        }
    }
}
