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
//! | name          | what it stands for                                        |
//! | ------------- | --------------------------------------------------------- |
//! | `hugepages`   | free hugepages of some size                               |
//! | `hwloc`       | the `hwloc` feature built in and libhwloc loaded          |
//! | `io_uring`    | an io_uring NOP round trip                                |
//! | `dpdk`        | DPDK compiled in                                          |
//! | `spdk`        | SPDK compiled in                                          |
//! | `vulkan`      | a Vulkan device through the loader                        |
//! | `netns`       | network namespaces and veth pairs (root and iproute2)     |
//! | `xdp`         | AF_XDP sockets and BPF maps for them (root, Linux 5.9)    |
//! | `loop_device` | loop block devices (root and util-linux's `losetup`)      |
//!
//! This crate is the one parser of that list, shared by every crate of the
//! workspace (the `hugepages` crate's tests as much as `dataplane`'s
//! backends), so a name means the same everywhere. Names are matched
//! without regard to case or surrounding space, `-` may stand for `_`, and
//! an unknown name is kept in [`Requirements::unknown`] so that a typo in
//! CI is reported instead of silently turning a requirement off.
//!
//! Tests decide whether to run through [`available_or_skip`]: with the
//! capability they run; without it they print `skip: <capability>: <reason>`
//! and return, unless `DATAPLANE_REQUIRE` names it, and then they fail.
#![deny(unsafe_code)]

use serde::Serialize;
use std::fmt;
use std::io::Write;
use std::str::FromStr;
use std::sync::OnceLock;

/// The environment variable holding the comma list of required capabilities.
pub const ENV: &str = "DATAPLANE_REQUIRE";

/// Something a backend or a test needs from the machine or the build.
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
    /// A Vulkan device.
    Vulkan,
    /// Network namespaces and veth pairs.
    Netns,
    /// AF_XDP sockets and the BPF maps and programs they need.
    Xdp,
    /// Loop block devices.
    LoopDevice,
}

impl Capability {
    /// Every capability, in the order of the table in the crate docs.
    pub const ALL: [Capability; 9] = [
        Capability::Hugepages,
        Capability::Hwloc,
        Capability::IoUring,
        Capability::Dpdk,
        Capability::Spdk,
        Capability::Vulkan,
        Capability::Netns,
        Capability::Xdp,
        Capability::LoopDevice,
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
            Capability::Netns => "netns",
            Capability::Xdp => "xdp",
            Capability::LoopDevice => "loop_device",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not a capability.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown capability {name:?}; expected one of {}", names())]
pub struct UnknownCapability {
    /// The name as given.
    pub name: String,
}

impl FromStr for Capability {
    type Err = UnknownCapability;

    /// Parses a name from the table in the crate docs; case does not matter
    /// and `-` may stand for `_` (`io-uring` is `io_uring`).
    fn from_str(s: &str) -> Result<Self, UnknownCapability> {
        let norm = s.trim().to_ascii_lowercase().replace('-', "_");
        Capability::ALL
            .into_iter()
            .find(|c| c.name() == norm)
            .ok_or_else(|| UnknownCapability { name: s.to_owned() })
    }
}

/// The names of every capability, comma-separated.
pub fn names() -> String {
    Capability::ALL.map(Capability::name).join(", ")
}

/// A required capability that is unavailable: the program (or test) must
/// stop rather than fall back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{capability} is required ({ENV}) but unavailable: {reason}")]
pub struct Refused {
    /// The capability, as `DATAPLANE_REQUIRE` spells it.
    pub capability: &'static str,
    /// Why it is unavailable.
    pub reason: String,
}

/// Names in `DATAPLANE_REQUIRE` that are not capabilities.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{ENV} names unknown capabilities {unknown:?}; expected a comma list of {}",
    names()
)]
pub struct UnknownNames {
    /// The names as given.
    pub unknown: Vec<String>,
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

    /// Requirements naming exactly `caps`.
    pub fn of(caps: &[Capability]) -> Self {
        let mut out = Requirements::default();
        for &c in caps {
            if !out.required.contains(&c) {
                out.required.push(c);
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
    /// [`UnknownNames`] naming the unknown names and the known ones.
    pub fn validate(&self) -> Result<(), UnknownNames> {
        if self.unknown.is_empty() {
            Ok(())
        } else {
            Err(UnknownNames {
                unknown: self.unknown.clone(),
            })
        }
    }

    /// What an unavailable `cap` means here: `Ok` when it is available or
    /// not required, else the refusal.
    ///
    /// # Errors
    ///
    /// [`Refused`] when `cap` is unavailable and required.
    pub fn check(&self, cap: Capability, available: bool, reason: &str) -> Result<(), Refused> {
        if available || !self.requires(cap) {
            return Ok(());
        }
        Err(Refused {
            capability: cap.name(),
            reason: reason.to_owned(),
        })
    }
}

/// `DATAPLANE_REQUIRE` of this process, read and parsed once.
pub fn requirements() -> &'static Requirements {
    static PARSED: OnceLock<Requirements> = OnceLock::new();
    PARSED.get_or_init(|| Requirements::parse(&std::env::var(ENV).unwrap_or_default()))
}

/// Whether `DATAPLANE_REQUIRE` names `cap`.
pub fn required(cap: Capability) -> bool {
    requirements().requires(cap)
}

/// What a test does when it may lack `capability`: `true` (go on) when it
/// is available; otherwise prints `skip: <capability>: <reason>` and returns
/// `false`, unless `DATAPLANE_REQUIRE` names the capability.
///
/// ```
/// use dataplane_require::{Capability, available_or_skip};
///
/// let root = std::fs::metadata("/proc/self").is_ok();
/// if !available_or_skip(Capability::Netns, root, "no procfs") {
///     return;
/// }
/// ```
///
/// # Panics
///
/// When the capability is unavailable and required (the test failing, on
/// purpose), and when `DATAPLANE_REQUIRE` names an unknown capability (a
/// typo must not quietly turn a requirement off).
pub fn available_or_skip(capability: Capability, available: bool, reason: &str) -> bool {
    let req = requirements();
    if let Err(e) = req.validate() {
        panic!("{e}");
    }
    if let Err(refused) = req.check(capability, available, reason) {
        panic!("{refused}");
    }
    if !available {
        // Straight to the process's stderr, past the test harness's
        // capture, so that every skip shows in a CI log.
        let _ = writeln!(std::io::stderr(), "skip: {capability}: {reason}");
    }
    available
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
        assert_eq!(
            "loop-device".parse::<Capability>().ok(),
            Some(Capability::LoopDevice)
        );
        let err = "gpu".parse::<Capability>().expect_err("unknown");
        assert!(err.to_string().contains("hugepages, hwloc"), "{err}");
    }

    #[test]
    fn parsing_the_list() {
        let r = Requirements::parse(" hugepages, ,Hwloc,hugepages,bogus ");
        assert_eq!(r.required, vec![Capability::Hugepages, Capability::Hwloc]);
        assert_eq!(r.unknown, vec!["bogus".to_owned()]);
        let err = r.validate().expect_err("unknown name");
        assert!(err.to_string().contains("bogus") && err.to_string().contains(ENV));
        assert_eq!(Requirements::parse(""), Requirements::default());
        assert!(Requirements::parse("").validate().is_ok());
        assert_eq!(
            Requirements::of(&[Capability::Dpdk, Capability::Dpdk]),
            Requirements::parse("dpdk")
        );
    }

    #[test]
    fn decisions() {
        let r = Requirements::parse("dpdk");
        assert!(r.check(Capability::Dpdk, true, "fine").is_ok());
        assert!(r.check(Capability::Spdk, false, "not compiled in").is_ok());
        let refused = r
            .check(Capability::Dpdk, false, "not compiled in")
            .expect_err("required");
        assert_eq!(refused.capability, "dpdk");
        assert_eq!(refused.reason, "not compiled in");
        assert!(refused.to_string().contains(ENV), "{refused}");
    }
}
