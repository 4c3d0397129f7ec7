//! The network backends in selection order, their names and their
//! device-claim rules; the selection itself is [`backend::select`].
//!
//! [`open`] with [`BackendChoice::Auto`] tries DPDK, AF_XDP, AF_PACKET,
//! io_uring and memory ports in that order. A backend is skipped when its probe says it
//! cannot run here, when the device is not in its syntax
//! ([`BackendKind::claims`]: `memory:a` is not a DPDK device, and DPDK's
//! EAL is not started to find that out), or when it cannot open this
//! device (an interface that does not exist, an EAL that fails); each skip
//! is logged and returned in [`Opened::skipped`](backend::Opened) for the
//! apps' JSON and `dp-info`. When `DATAPLANE_REQUIRE` names `dpdk` (or
//! `io_uring`), skipping that backend is an error instead. A named backend
//! ([`BackendChoice::Named`]) never falls back.

use super::{Backend, Port, PortConfig, af_packet, af_xdp, dpdk, memory, uring};
use crate::Result;
use crate::backend::{self, Candidates, Choice, Claim, Kind, Probe};
use crate::require::{Capability, Requirements};
use crate::topology::PciAddress;
use serde::Serialize;

/// One network backend, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// DPDK ethdev: PCI devices bound to vfio-pci, and vdevs.
    Dpdk,
    /// AF_XDP sockets: an XDP program redirects frames into mbufs.
    AfXdp,
    /// AF_PACKET sockets with memory-mapped rings.
    AfPacket,
    /// io_uring UDP and TCP sockets.
    IoUring,
    /// In-memory port pairs over SPSC rings.
    Memory,
}

impl Kind for BackendKind {
    const SUBSYSTEM: &'static str = "net";
    const ALL: &'static [BackendKind] = &[
        BackendKind::Dpdk,
        BackendKind::AfXdp,
        BackendKind::AfPacket,
        BackendKind::IoUring,
        BackendKind::Memory,
    ];

    fn name(self) -> &'static str {
        BackendKind::name(self)
    }

    fn aliases(self) -> &'static [&'static str] {
        match self {
            BackendKind::AfXdp => &["af-xdp", "xdp"],
            BackendKind::AfPacket => &["af-packet"],
            BackendKind::IoUring => &["io-uring"],
            BackendKind::Dpdk | BackendKind::Memory => &[],
        }
    }

    fn capability(self) -> Option<Capability> {
        match self {
            BackendKind::Dpdk => Some(Capability::Dpdk),
            BackendKind::AfXdp => Some(Capability::Xdp),
            BackendKind::IoUring => Some(Capability::IoUring),
            BackendKind::AfPacket | BackendKind::Memory => None,
        }
    }
}

impl BackendKind {
    /// Every backend, in selection order.
    pub const ALL: [BackendKind; 5] = [
        BackendKind::Dpdk,
        BackendKind::AfXdp,
        BackendKind::AfPacket,
        BackendKind::IoUring,
        BackendKind::Memory,
    ];

    /// The name as `--backend`, `dp-info` and `DATAPLANE_REQUIRE` spell it.
    pub const fn name(self) -> &'static str {
        match self {
            BackendKind::Dpdk => "dpdk",
            BackendKind::AfXdp => "af_xdp",
            BackendKind::AfPacket => "af_packet",
            BackendKind::IoUring => "io_uring",
            BackendKind::Memory => "memory",
        }
    }

    /// The backend itself.
    pub fn backend(self) -> &'static dyn Backend {
        match self {
            BackendKind::Dpdk => &dpdk::Dpdk,
            BackendKind::AfXdp => &af_xdp::AfXdp,
            BackendKind::AfPacket => &af_packet::AfPacket,
            BackendKind::IoUring => &uring::IoUring,
            BackendKind::Memory => &memory::Memory,
        }
    }

    /// Whether `device` is in this backend's syntax; if not, why. A cheap
    /// check made before the probe's verdict is acted on, so that, for
    /// example, DPDK's EAL is not started to be told that `memory:a` is
    /// not one of its devices.
    ///
    /// | backend | device |
    /// | --- | --- |
    /// | dpdk | a PCI address (`0000:03:00.0`, `03:00.0`) or a vdev (`net_*`, `eth_*`, arguments after a comma) |
    /// | af_xdp, af_packet | an interface name: 1 to 15 bytes, no `/`, `:`, `,` or white space |
    /// | io_uring | `udp:...` or `tcp:...` |
    /// | memory | `memory:NAME` |
    ///
    /// # Errors
    ///
    /// Why the device is not this backend's.
    pub fn claims(self, device: &str) -> std::result::Result<(), String> {
        let ok = match self {
            BackendKind::Dpdk => {
                let name = device.split(',').next().unwrap_or_default();
                name.parse::<PciAddress>().is_ok()
                    || name.starts_with("net_")
                    || name.starts_with("eth_")
            }
            BackendKind::AfXdp | BackendKind::AfPacket => {
                (1..16).contains(&device.len())
                    && !device
                        .chars()
                        .any(|c| c == '/' || c == ':' || c == ',' || c.is_whitespace())
            }
            BackendKind::IoUring => {
                device.starts_with(uring::UDP_PREFIX) || device.starts_with(uring::TCP_PREFIX)
            }
            BackendKind::Memory => device.starts_with(memory::DEVICE_PREFIX),
        };
        if ok {
            return Ok(());
        }
        Err(match self {
            BackendKind::Dpdk => {
                format!("{device:?} is neither a PCI address nor a DPDK vdev (net_*)")
            }
            BackendKind::AfXdp | BackendKind::AfPacket => {
                format!("{device:?} is not an interface name")
            }
            BackendKind::IoUring => {
                format!("{device:?} is not an io_uring socket (udp:ADDR:PORT or tcp:ADDR:PORT)")
            }
            BackendKind::Memory => format!("{device:?} is not a memory port (memory:NAME)"),
        })
    }

    /// The `DATAPLANE_REQUIRE` capability that forbids falling back from
    /// this backend, if any.
    pub fn capability(self) -> Option<Capability> {
        Kind::capability(self)
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for BackendKind {
    type Err = crate::Error;

    /// Parses `dpdk`, `af_xdp`, `af_packet`, `io_uring` or `memory`
    /// (`af-xdp`, `xdp`, `af-packet` and `io-uring` too); case does not
    /// matter.
    fn from_str(s: &str) -> Result<Self> {
        backend::parse_kind(s)
    }
}

/// What `--backend` asks for.
pub type BackendChoice = Choice<BackendKind>;

/// The outcome of [`open`]: one port per queue, the backend that opened
/// them, and every backend skipped before it.
pub type Opened = backend::Opened<BackendKind, Vec<Box<dyn Port>>>;

/// The network backends as candidates for one port configuration.
struct Net<'a>(&'a PortConfig);

impl Candidates for Net<'_> {
    type Kind = BackendKind;
    type Value = Vec<Box<dyn Port>>;

    fn device(&self) -> &str {
        &self.0.device
    }

    fn probe(&self, kind: BackendKind) -> Probe {
        kind.backend().probe()
    }

    fn claim(&self, kind: BackendKind) -> Claim {
        match kind.claims(&self.0.device) {
            Ok(()) => Claim::Mine,
            Err(why) => Claim::NotMine(why),
        }
    }

    fn open(&self, kind: BackendKind) -> Result<Self::Value> {
        kind.backend().open(self.0)
    }
}

/// Opens `cfg.device` with the backend `choice` names, or the first that
/// can; see the module docs for the rules. `DATAPLANE_REQUIRE` is read from
/// the environment.
///
/// ```
/// use dataplane::net::{self, BackendChoice, BackendKind, PortConfig};
/// use dataplane::require::Requirements;
///
/// let mut cfg = PortConfig::new("memory:doc-example");
/// cfg.mbufs = 256;
/// cfg.mbuf_cache = 0;
/// // `open` with nothing required: under DATAPLANE_REQUIRE=dpdk, `open`
/// // refuses to pass DPDK over.
/// let opened = net::open_with(&cfg, BackendChoice::Auto, &Requirements::parse(""))?;
/// assert_eq!(opened.backend, BackendKind::Memory);
/// // DPDK, AF_XDP, AF_PACKET and io_uring were passed over, each with a
/// // reason.
/// assert_eq!(opened.skipped.len(), 4);
/// # Ok::<(), dataplane::Error>(())
/// ```
///
/// # Errors
///
/// - [`Error::Required`](crate::Error::Required) when a backend that
///   `DATAPLANE_REQUIRE` names would be skipped;
/// - [`Error::Config`](crate::Error::Config) when the named backend cannot
///   open the device, or when no backend can (the message lists every
///   reason).
pub fn open(cfg: &PortConfig, choice: BackendChoice) -> Result<Opened> {
    open_with(cfg, choice, crate::require::requirements())
}

/// [`open`] under the given requirements instead of the environment's.
///
/// # Errors
///
/// As [`open`].
pub fn open_with(
    cfg: &PortConfig,
    choice: BackendChoice,
    required: &Requirements,
) -> Result<Opened> {
    backend::select(&Net(cfg), choice, required)
}

/// Every network backend, in selection order, with whether it can run here.
pub fn probes() -> Vec<backend::BackendProbe> {
    backend::probes(|k: BackendKind| k.backend().probe())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(device: &str) -> PortConfig {
        let mut cfg = PortConfig::new(device);
        cfg.mbufs = 128;
        cfg.mbuf_cache = 0;
        cfg
    }

    #[test]
    fn names_round_trip() {
        for k in BackendKind::ALL {
            assert_eq!(k.name().parse::<BackendKind>().ok(), Some(k));
            assert_eq!(
                k.name().parse::<BackendChoice>().ok(),
                Some(BackendChoice::Named(k))
            );
        }
        assert_eq!(
            "AF_PACKET".parse::<BackendKind>().ok(),
            Some(BackendKind::AfPacket)
        );
        assert_eq!(
            " Auto ".parse::<BackendChoice>().ok(),
            Some(BackendChoice::Auto)
        );
        assert_eq!(
            "io-uring".parse::<BackendKind>().ok(),
            Some(BackendKind::IoUring)
        );
        assert_eq!("xdp".parse::<BackendKind>().ok(), Some(BackendKind::AfXdp));
        let err = "xsk".parse::<BackendChoice>().expect_err("unknown");
        assert!(err.to_string().contains("af_packet"), "{err}");
        assert_eq!(
            BackendChoice::Named(BackendKind::IoUring).to_string(),
            "io_uring"
        );
    }

    #[test]
    fn auto_falls_back_to_memory_with_every_reason() {
        let opened = open_with(
            &small("memory:select-auto"),
            BackendChoice::Auto,
            &Requirements::default(),
        )
        .expect("memory opens");
        assert_eq!(opened.backend, BackendKind::Memory);
        let names: Vec<&str> = opened.skipped.iter().map(|s| s.backend).collect();
        assert_eq!(names, ["dpdk", "af_xdp", "af_packet", "io_uring"]);
        assert!(opened.skipped.iter().all(|s| !s.reason.is_empty()));
        assert_eq!(opened.value.len(), 1);
    }

    #[test]
    fn a_required_backend_refuses_the_fallback() {
        let req = Requirements::parse("dpdk");
        match open_with(&small("memory:select-req"), BackendChoice::Auto, &req) {
            Err(crate::Error::Required { capability, reason }) => {
                assert_eq!(capability, "dpdk");
                assert!(reason.contains("passed over"), "{reason}");
            }
            other => panic!("expected Required, got {other:?}"),
        }
    }

    #[test]
    fn a_named_backend_never_falls_back() {
        let err = open_with(
            &small("no-such-interface-x"),
            BackendChoice::Named(BackendKind::Memory),
            &Requirements::default(),
        )
        .expect_err("memory does not open interface names");
        assert!(err.to_string().contains("--backend memory"), "{err}");
        let err = open_with(
            &small("memory:select-named"),
            BackendChoice::Named(BackendKind::AfPacket),
            &Requirements::default(),
        )
        .expect_err("no such interface");
        assert!(err.to_string().contains("af_packet"), "{err}");
    }

    #[test]
    fn devices_are_claimed_by_syntax() {
        let claims = |k: BackendKind, d: &str| k.claims(d).is_ok();
        for d in [
            "0000:03:00.0",
            "af:00.1",
            "net_ring0",
            "net_tap0,iface=dp0",
            "eth_null0",
        ] {
            assert!(claims(BackendKind::Dpdk, d), "{d}");
        }
        for d in [
            "veth0",
            "memory:a",
            "udp:1.2.3.4:5",
            "0000:03:00",
            "zz:00.0",
        ] {
            assert!(!claims(BackendKind::Dpdk, d), "{d}");
        }
        assert!(claims(BackendKind::AfPacket, "veth0"));
        assert!(claims(BackendKind::AfXdp, "veth0"));
        assert!(!claims(BackendKind::AfXdp, "memory:a"));
        assert!(claims(BackendKind::AfPacket, "eth0.100"));
        for d in [
            "memory:a",
            "udp:1.2.3.4:5",
            "",
            "a-name-too-long-for-linux",
            "a b",
        ] {
            assert!(!claims(BackendKind::AfPacket, d), "{d}");
        }
        assert!(claims(BackendKind::IoUring, "udp:10.0.0.1:9"));
        assert!(claims(BackendKind::Memory, "memory:x"));
        let why = BackendKind::Dpdk
            .claims("memory:x")
            .expect_err("not DPDK's");
        assert!(why.contains("PCI address"), "{why}");
    }

    #[test]
    fn nothing_opens_a_bogus_device() {
        let err = open_with(
            &small("bogus device"),
            BackendChoice::Auto,
            &Requirements::default(),
        )
        .expect_err("nothing opens it");
        let msg = err.to_string();
        for name in ["dpdk", "af_xdp", "af_packet", "io_uring", "memory"] {
            assert!(msg.contains(name), "{msg}");
        }
    }
}
