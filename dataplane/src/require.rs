//! The `DATAPLANE_REQUIRE` contract: where a capability must not fall back.
//!
//! The capabilities, the parser and the test helper live in the
//! `dataplane-require` crate (re-exported here), so that every crate of the
//! workspace reads the list the same way; this module adds what needs the
//! framework: the [`Error::Required`] a refusal becomes, the log line a
//! fallback leaves, and each capability's probe on a detected
//! [`Topology`](crate::topology::Topology).
//!
//! [`check`] turns a probe into a decision: available → `Ok`; unavailable
//! and required → [`Error::Required`]; unavailable and not required → `Ok`,
//! with the fallback logged once (see [`backend`](crate::backend)'s log
//! policy). An unknown name makes [`check_env`] fail, so a typo in CI cannot
//! silently turn a requirement off.

use crate::{Error, Result};

pub use crate::backend::Probe;
pub use dataplane_require::{
    Capability, ENV, Refused, Requirements, UnknownCapability, UnknownNames, available_or_skip,
    names,
};

impl From<Refused> for Error {
    fn from(r: Refused) -> Self {
        Error::Required {
            capability: r.capability,
            reason: r.reason,
        }
    }
}

/// `DATAPLANE_REQUIRE` of this process, read and parsed once; unknown names
/// are logged as an error the first time.
pub fn requirements() -> &'static Requirements {
    static LOGGED: std::sync::Once = std::sync::Once::new();
    let r = dataplane_require::requirements();
    LOGGED.call_once(|| {
        if let Err(e) = r.validate() {
            tracing::error!("{e}");
        }
    });
    r
}

/// Whether `DATAPLANE_REQUIRE` names `cap`.
pub fn required(cap: Capability) -> bool {
    requirements().requires(cap)
}

/// Checks that `DATAPLANE_REQUIRE` names only known capabilities. Call it
/// once at start-up (the apps do) so that a typo is an error.
///
/// # Errors
///
/// [`Error::Config`] naming the unknown names.
pub fn check_env() -> Result<()> {
    requirements()
        .validate()
        .map_err(|e| Error::Config(e.to_string()))
}

/// Turns the probe of `cap` into a decision: `Ok` when available; when not,
/// [`Error::Required`] if `DATAPLANE_REQUIRE` names `cap`, else `Ok` with
/// the fallback and its reason logged once per process.
///
/// ```
/// use dataplane::require::{Capability, Probe, check};
///
/// let probe = Probe::unavailable("no free hugepages");
/// // Unless DATAPLANE_REQUIRE names hugepages, this falls back.
/// if !dataplane::require::required(Capability::Hugepages) {
///     assert!(check(Capability::Hugepages, &probe).is_ok());
/// }
/// ```
///
/// # Errors
///
/// [`Error::Required`] with the capability and the probe's reason.
pub fn check(cap: Capability, probe: &Probe) -> Result<()> {
    requirements().check(cap, probe.available, &probe.reason)?;
    if !probe.available {
        crate::backend::log_skip("capability", cap.name(), &probe.reason);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_the_required_error() {
        let r = Requirements::parse("dpdk");
        let e: Error = r
            .check(Capability::Dpdk, false, "not compiled in")
            .expect_err("required")
            .into();
        match e {
            Error::Required { capability, reason } => {
                assert_eq!(capability, "dpdk");
                assert_eq!(reason, "not compiled in");
            }
            other => panic!("expected Required, got {other:?}"),
        }
    }

    #[test]
    fn probes_of_a_topology() {
        let t = crate::topology::Topology::synthetic(2, 1, 1, 0);
        for c in Capability::ALL {
            assert!(!t.probes.of(c).available, "{c}");
        }
    }
}
