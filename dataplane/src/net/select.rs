//! Choosing a backend for a device: the ordered registry, `--backend`, and
//! the fallback rules.
//!
//! [`open`] with [`BackendChoice::Auto`] tries DPDK, AF_PACKET, io_uring and
//! memory ports in that order. A backend is skipped when its probe says it
//! cannot run here, when the device is not in its syntax
//! ([`BackendKind::claims`]: `memory:a` is not a DPDK device, and DPDK's
//! EAL is not started to find that out), or when it cannot open this
//! device (an interface that does not exist, an EAL that fails); each skip
//! is logged once per process at `warn` with its reason, and returned in
//! [`Opened::skipped`] for the apps' JSON and `dp-info`. When
//! `DATAPLANE_REQUIRE` names `dpdk` (or `io_uring`), skipping that backend is
//! an error instead. A named backend ([`BackendChoice::Named`]) never falls
//! back.
#![deny(unsafe_code)]

use super::{Backend, Port, PortConfig, af_packet, dpdk, memory, uring};
use crate::require::{Capability, Requirements};
use crate::{Error, Result};
use serde::Serialize;
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

/// One network backend, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// DPDK ethdev: PCI devices bound to vfio-pci, and vdevs.
    Dpdk,
    /// AF_PACKET sockets with memory-mapped rings.
    AfPacket,
    /// io_uring UDP sockets.
    IoUring,
    /// In-memory port pairs over SPSC rings.
    Memory,
}

impl BackendKind {
    /// Every backend, in selection order.
    pub const ALL: [BackendKind; 4] = [
        BackendKind::Dpdk,
        BackendKind::AfPacket,
        BackendKind::IoUring,
        BackendKind::Memory,
    ];

    /// The name as `--backend` spells it.
    pub const fn name(self) -> &'static str {
        match self {
            BackendKind::Dpdk => "dpdk",
            BackendKind::AfPacket => "af-packet",
            BackendKind::IoUring => "io-uring",
            BackendKind::Memory => "memory",
        }
    }

    /// The backend itself.
    pub fn backend(self) -> &'static dyn Backend {
        match self {
            BackendKind::Dpdk => &dpdk::Dpdk,
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
    /// | af-packet | an interface name: 1 to 15 bytes, no `/`, `:`, `,` or white space |
    /// | io-uring | `udp:...` |
    /// | memory | `memory:NAME` |
    ///
    /// # Errors
    ///
    /// Why the device is not this backend's.
    pub fn claims(self, device: &str) -> std::result::Result<(), String> {
        let ok = match self {
            BackendKind::Dpdk => {
                let name = device.split(',').next().unwrap_or_default();
                is_pci_address(name) || name.starts_with("net_") || name.starts_with("eth_")
            }
            BackendKind::AfPacket => {
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
            BackendKind::AfPacket => format!("{device:?} is not an interface name"),
            BackendKind::IoUring => format!("{device:?} is not an io_uring socket (udp:ADDR:PORT)"),
            BackendKind::Memory => format!("{device:?} is not a memory port (memory:NAME)"),
        })
    }

    /// The `DATAPLANE_REQUIRE` capability that forbids falling back from
    /// this backend, if any.
    pub const fn capability(self) -> Option<Capability> {
        match self {
            BackendKind::Dpdk => Some(Capability::Dpdk),
            BackendKind::IoUring => Some(Capability::IoUring),
            BackendKind::AfPacket | BackendKind::Memory => None,
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = Error;

    /// Parses `dpdk`, `af-packet`, `io-uring` or `memory`; case does not
    /// matter and `_` may stand for `-`.
    fn from_str(s: &str) -> Result<Self> {
        let norm = s.trim().to_ascii_lowercase().replace('_', "-");
        BackendKind::ALL
            .into_iter()
            .find(|k| k.name() == norm)
            .ok_or_else(|| {
                Error::Config(format!(
                    "unknown network backend {s:?}; expected auto, dpdk, af-packet, io-uring or memory"
                ))
            })
    }
}

/// `DDDD:BB:DD.F` or `BB:DD.F`, in hex.
fn is_pci_address(s: &str) -> bool {
    let hex = |p: &str, n: usize| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit());
    let parts: Vec<&str> = s.split(':').collect();
    let (bus, devfn) = match parts.as_slice() {
        [domain, bus, devfn] if hex(domain, 4) => (*bus, *devfn),
        [bus, devfn] => (*bus, *devfn),
        _ => return false,
    };
    match devfn.split_once('.') {
        Some((dev, func)) => hex(bus, 2) && hex(dev, 2) && hex(func, 1),
        None => false,
    }
}

/// What `--backend` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendChoice {
    /// The first backend, in selection order, that can run here and open
    /// the device.
    #[default]
    Auto,
    /// This backend or an error: never falls back.
    Named(BackendKind),
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendChoice::Auto => f.write_str("auto"),
            BackendChoice::Named(k) => k.fmt(f),
        }
    }
}

impl FromStr for BackendChoice {
    type Err = Error;

    /// `auto`, or a backend name as [`BackendKind`] parses it.
    fn from_str(s: &str) -> Result<Self> {
        if s.trim().eq_ignore_ascii_case("auto") {
            Ok(BackendChoice::Auto)
        } else {
            s.parse().map(BackendChoice::Named)
        }
    }
}

/// A backend passed over during selection, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skip {
    /// The backend, as `--backend` spells it.
    pub backend: &'static str,
    /// Why: its probe's reason, or why it could not open the device.
    pub reason: String,
}

/// The outcome of [`open`]: the ports, the backend that opened them, and
/// every backend skipped before it.
pub struct Opened {
    /// The backend that opened the device.
    pub backend: BackendKind,
    /// One port per queue.
    pub ports: Vec<Box<dyn Port>>,
    /// Backends tried and passed over, in selection order.
    pub skipped: Vec<Skip>,
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened")
            .field("backend", &self.backend)
            .field("ports", &self.ports.len())
            .field("skipped", &self.skipped)
            .finish()
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
/// // DPDK, AF_PACKET and io_uring were passed over, each with a reason.
/// assert_eq!(opened.skipped.len(), 3);
/// # Ok::<(), dataplane::Error>(())
/// ```
///
/// # Errors
///
/// - [`Error::Required`] when a backend that `DATAPLANE_REQUIRE` names
///   would be skipped;
/// - [`Error::Config`] when the named backend cannot open the device, or
///   when no backend can (the message lists every reason).
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
    if let BackendChoice::Named(kind) = choice {
        let backend = kind.backend();
        let probe = backend.probe();
        if !probe.available {
            return Err(Error::Config(format!(
                "--backend {kind}: cannot run here: {}",
                probe.reason
            )));
        }
        let ports = backend.open(cfg).map_err(|e| {
            Error::Config(format!("--backend {kind}: cannot open {}: {e}", cfg.device))
        })?;
        return Ok(Opened {
            backend: kind,
            ports,
            skipped: Vec::new(),
        });
    }
    let mut skipped = Vec::new();
    for kind in BackendKind::ALL {
        let backend = kind.backend();
        let probe = backend.probe();
        let reason = if !probe.available {
            probe.reason
        } else if let Err(why) = kind.claims(&cfg.device) {
            why
        } else {
            match backend.open(cfg) {
                Ok(ports) => {
                    return Ok(Opened {
                        backend: kind,
                        ports,
                        skipped,
                    });
                }
                Err(e) => format!("cannot open {}: {e}", cfg.device),
            }
        };
        if let Some(cap) = kind.capability()
            && required.requires(cap)
        {
            return Err(Error::Required {
                capability: cap.name(),
                reason: format!(
                    "backend {kind} was passed over for {}: {reason}",
                    cfg.device
                ),
            });
        }
        log_skip_once(kind, &reason);
        skipped.push(Skip {
            backend: kind.name(),
            reason,
        });
    }
    let reasons: Vec<String> = skipped
        .iter()
        .map(|s| format!("{}: {}", s.backend, s.reason))
        .collect();
    Err(Error::Config(format!(
        "no network backend can open {:?} ({})",
        cfg.device,
        reasons.join("; ")
    )))
}

/// Logs a skip at `warn`, once per backend and reason per process.
fn log_skip_once(kind: BackendKind, reason: &str) {
    static LOGGED: Mutex<BTreeSet<(&'static str, String)>> = Mutex::new(BTreeSet::new());
    let first = match LOGGED.lock() {
        Ok(mut seen) => seen.insert((kind.name(), reason.to_owned())),
        // A panic while holding the set only loses de-duplication.
        Err(poisoned) => poisoned
            .into_inner()
            .insert((kind.name(), reason.to_owned())),
    };
    if first {
        tracing::warn!(backend = kind.name(), "network backend skipped: {reason}");
    }
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
        let err = "xdp".parse::<BackendChoice>().expect_err("unknown");
        assert!(err.to_string().contains("af-packet"), "{err}");
        assert_eq!(
            BackendChoice::Named(BackendKind::IoUring).to_string(),
            "io-uring"
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
        assert_eq!(names, ["dpdk", "af-packet", "io-uring"]);
        assert!(opened.skipped.iter().all(|s| !s.reason.is_empty()));
        assert_eq!(opened.ports.len(), 1);
    }

    #[test]
    fn a_required_backend_refuses_the_fallback() {
        let req = Requirements::parse("dpdk");
        match open_with(&small("memory:select-req"), BackendChoice::Auto, &req) {
            Err(Error::Required { capability, reason }) => {
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
        assert!(err.to_string().contains("af-packet"), "{err}");
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
        for name in ["dpdk", "af-packet", "io-uring", "memory"] {
            assert!(msg.contains(name), "{msg}");
        }
    }
}
