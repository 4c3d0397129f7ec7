//! Helpers for the unit tests: the `DATAPLANE_REQUIRE` contract.
//!
//! `DATAPLANE_REQUIRE` is a comma list of capabilities (`hugepages`, ...).
//! A test that cannot get a capability prints `skip: <reason>` and returns,
//! unless the capability is listed there: then the skip is a failure.

use crate::region::{Region, RegionBuilder};

/// Whether `DATAPLANE_REQUIRE` lists `capability`.
pub(crate) fn required(capability: &str) -> bool {
    std::env::var("DATAPLANE_REQUIRE").is_ok_and(|v| v.split(',').any(|c| c.trim() == capability))
}

/// Prints `skip: <reason>`, or fails the test when `capability` is required.
pub(crate) fn skip(capability: &str, reason: &str) {
    assert!(
        !required(capability),
        "{capability} is required (DATAPLANE_REQUIRE) but unavailable: {reason}"
    );
    println!("skip: {reason}");
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
            skip("hugepages", &e.to_string());
            None
        }
    }
}
