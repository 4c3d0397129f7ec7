//! The `DATAPLANE_REQUIRE` contract: where a capability must not fall back.
//!
//! Every backend probes the machine and falls back when it cannot run (no
//! hugepages → 4 KiB pages, no DPDK → AF_PACKET or io_uring, no GPU → CPU).
//! That is right on a laptop and wrong in CI or production, where a missing
//! capability should stop the program instead of quietly running slower.
//! `DATAPLANE_REQUIRE` is a comma list of capabilities that must not fall
//! back:
//!
//! ```text
//! DATAPLANE_REQUIRE=hugepages,io_uring,hwloc cargo test
//! ```
//!
//! | name        | the probe                                              |
//! | ----------- | ------------------------------------------------------ |
//! | `hugepages` | free hugepages of some size                            |
//! | `hwloc`     | the `hwloc` feature built in and libhwloc loaded        |
//! | `io_uring`  | an io_uring NOP round trip                             |
//! | `dpdk`      | DPDK compiled in                                       |
//! | `spdk`      | SPDK compiled in                                       |
//! | `vulkan`    | the Vulkan loader loads                                |
//!
//! [`check`] turns a probe into a decision: available → `Ok`; unavailable
//! and required → [`Error::Required`]; unavailable and not required → `Ok`,
//! with the fallback logged once per capability at `warn` level. Names are
//! matched without regard to case and surrounding spaces; an unknown name is
//! logged as an error and makes [`check_env`] fail, so a typo in CI cannot
//! silently turn a requirement off.
#![deny(unsafe_code)]

use crate::{Error, Result};
use serde::Serialize;
use std::str::FromStr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

pub use crate::topology::Probe;

/// The environment variable holding the comma list of required capabilities.
pub const ENV: &str = "DATAPLANE_REQUIRE";

/// Something a backend needs from the machine or the build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// Free hugepages.
    Hugepages,
    /// libhwloc through the `hwloc` feature.
    Hwloc,
    /// A working io_uring.
    IoUring,
    /// DPDK compiled in.
    Dpdk,
    /// SPDK compiled in.
    Spdk,
    /// The Vulkan loader.
    Vulkan,
}

impl Capability {
    /// Every capability, in the order of the table in the module docs.
    pub const ALL: [Capability; 6] = [
        Capability::Hugepages,
        Capability::Hwloc,
        Capability::IoUring,
        Capability::Dpdk,
        Capability::Spdk,
        Capability::Vulkan,
    ];

    /// The name as `DATAPLANE_REQUIRE` spells it.
    pub const fn name(self) -> &'static str {
        match self {
            Capability::Hugepages => "hugepages",
            Capability::Hwloc => "hwloc",
            Capability::IoUring => "io_uring",
            Capability::Dpdk => "dpdk",
            Capability::Spdk => "spdk",
            Capability::Vulkan => "vulkan",
        }
    }

    /// The probe for this capability in a detected topology.
    pub fn probe(self, topo: &crate::topology::Topology) -> &Probe {
        let p = &topo.probes;
        match self {
            Capability::Hugepages => &p.hugepages,
            Capability::Hwloc => &p.hwloc,
            Capability::IoUring => &p.io_uring,
            Capability::Dpdk => &p.dpdk,
            Capability::Spdk => &p.spdk,
            Capability::Vulkan => &p.vulkan,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl core::fmt::Display for Capability {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Capability {
    type Err = Error;

    /// Parses a name from the table in the module docs; `io-uring` is
    /// accepted for `io_uring`.
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase().replace('-', "_");
        Capability::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| {
                Error::Config(format!(
                    "unknown capability {s:?}; expected one of {}",
                    names()
                ))
            })
    }
}

fn names() -> String {
    Capability::ALL.map(Capability::name).join(", ")
}

/// A parsed `DATAPLANE_REQUIRE`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Requirements {
    /// The capabilities that must not fall back.
    pub required: Vec<Capability>,
    /// Names that are not capabilities.
    pub unknown: Vec<String>,
}

impl Requirements {
    /// Parses a comma list; empty items are skipped, unknown names kept in
    /// [`Requirements::unknown`].
    pub fn parse(list: &str) -> Self {
        let mut out = Requirements::default();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item.parse::<Capability>() {
                Ok(c) if !out.required.contains(&c) => out.required.push(c),
                Ok(_) => {}
                Err(_) => out.unknown.push(item.to_owned()),
            }
        }
        out
    }

    /// Whether `cap` is required.
    pub fn requires(&self, cap: Capability) -> bool {
        self.required.contains(&cap)
    }

    /// `Ok` unless some name was not a capability.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the unknown names and the known ones.
    pub fn validate(&self) -> Result<()> {
        if self.unknown.is_empty() {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "{ENV} names unknown capabilities {:?}; expected a comma list of {}",
                self.unknown,
                names()
            )))
        }
    }

    /// Decides what an unavailable `probe` of `cap` means; see [`check`].
    /// Logs nothing: [`check`] adds the once-per-capability warning.
    ///
    /// # Errors
    ///
    /// [`Error::Required`] when the probe says unavailable and `cap` is
    /// required.
    pub fn check(&self, cap: Capability, probe: &Probe) -> Result<()> {
        if probe.available || !self.requires(cap) {
            return Ok(());
        }
        Err(Error::Required {
            capability: cap.name(),
            reason: probe.reason.clone(),
        })
    }
}

/// `DATAPLANE_REQUIRE` of this process, read and parsed once; unknown names
/// are logged as an error the first time.
pub fn requirements() -> &'static Requirements {
    static PARSED: OnceLock<Requirements> = OnceLock::new();
    PARSED.get_or_init(|| {
        let r = Requirements::parse(&std::env::var(ENV).unwrap_or_default());
        if let Err(e) = r.validate() {
            tracing::error!("{e}");
        }
        r
    })
}

/// Whether `DATAPLANE_REQUIRE` names `cap`.
pub fn required(cap: Capability) -> bool {
    requirements().requires(cap)
}

/// Checks that `DATAPLANE_REQUIRE` names only known capabilities. Call it
/// once at start-up (the runtime builder does) so that a typo is an error.
///
/// # Errors
///
/// [`Error::Config`] naming the unknown names.
pub fn check_env() -> Result<()> {
    requirements().validate()
}

/// Turns the probe of `cap` into a decision: `Ok` when available; when not,
/// [`Error::Required`] if `DATAPLANE_REQUIRE` names `cap`, else `Ok` with
/// the fallback and its reason logged (once per capability per process).
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
    requirements().check(cap, probe)?;
    if !probe.available {
        static WARNED: [AtomicBool; Capability::ALL.len()] = [const { AtomicBool::new(false) }; 6];
        // Relaxed: the flag only de-duplicates a log line; nothing is
        // published through it.
        if !WARNED[cap.index()].swap(true, Ordering::Relaxed) {
            tracing::warn!(capability = cap.name(), "falling back: {}", probe.reason);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in Capability::ALL {
            assert_eq!(c.name().parse::<Capability>().ok(), Some(c));
            assert_eq!(c.to_string(), c.name());
        }
        assert_eq!(
            " IO-URING ".parse::<Capability>().ok(),
            Some(Capability::IoUring)
        );
        let err = "gpu".parse::<Capability>().expect_err("unknown");
        assert!(err.to_string().contains("hugepages, hwloc"), "{err}");
    }

    #[test]
    fn parsing_the_list() {
        let r = Requirements::parse(" hugepages, ,hwloc,hugepages,bogus ");
        assert_eq!(r.required, vec![Capability::Hugepages, Capability::Hwloc]);
        assert_eq!(r.unknown, vec!["bogus".to_owned()]);
        let err = r.validate().expect_err("unknown name");
        assert!(err.to_string().contains("bogus") && err.to_string().contains(ENV));
        assert_eq!(Requirements::parse(""), Requirements::default());
        assert!(Requirements::parse("").validate().is_ok());
    }

    #[test]
    fn decisions() {
        let r = Requirements::parse("dpdk");
        let up = Probe::ok("fine");
        let down = Probe::unavailable("not compiled in");
        assert!(r.check(Capability::Dpdk, &up).is_ok());
        assert!(r.check(Capability::Spdk, &down).is_ok());
        match r.check(Capability::Dpdk, &down) {
            Err(Error::Required { capability, reason }) => {
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
            assert!(!c.probe(&t).available);
        }
    }
}
