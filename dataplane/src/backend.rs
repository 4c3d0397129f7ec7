//! Choosing a backend: the one mechanism the network, storage and
//! accelerator subsystems share.
//!
//! Each subsystem names its backends with a [`Kind`] (an enum listing them
//! in selection order, one spelling each, with aliases) and says, for one
//! open, how each backend probes the machine, whether the device is its
//! own, and how it opens ([`Candidates`]). [`select`] does the rest, the
//! same way everywhere:
//!
//! - [`Choice::Named`] opens with that backend or fails with the reason; it
//!   never falls back.
//! - [`Choice::Auto`] walks the backends in order. One is passed over when
//!   the device is not its own ([`Claim`], a cheap check made first, so
//!   that DPDK's EAL is not started to learn that `memory:a` is not its
//!   device), when its probe says it cannot run here, or when its open
//!   fails; each of those becomes a [`Skip`]
//!   with the reason, returned in [`Opened::skipped`] for the apps' JSON
//!   and `dp-info`. The first that opens wins.
//! - A backend whose [`Kind::capability`] `DATAPLANE_REQUIRE` names must not
//!   be passed over: that is [`Error::Required`] instead, naming the backend
//!   and the reason. The one exception is a device of a kind the backend
//!   never serves ([`Claim::Foreign`]: a RAM disk is nothing io_uring could
//!   open), which is no fallback.
//!
//! **Logging**, one policy for every subsystem: each skip is logged at
//! `info` once per process (per subsystem, backend and reason), the backend
//! chosen is logged at `info`, and a refused requirement is the error
//! returned, not a log line.
//!
//! ```
//! use dataplane::backend::{Choice, Kind};
//! use dataplane::net::BackendKind;
//!
//! // One spelling per backend, the other accepted as an alias.
//! let choice: Choice<BackendKind> = "io-uring".parse()?;
//! assert_eq!(choice, Choice::Named(BackendKind::IoUring));
//! assert_eq!(choice.to_string(), "io_uring");
//! assert_eq!("auto".parse::<Choice<BackendKind>>()?, Choice::Auto);
//! assert_eq!(BackendKind::SUBSYSTEM, "net");
//! # Ok::<(), dataplane::Error>(())
//! ```

use crate::{Error, Result};
use dataplane_require::{Capability, Requirements};
use serde::{Serialize, Serializer};
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

/// Whether something can be used here, and why (not): the result of every
/// probe of a backend or a capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Probe {
    /// Whether it can be used.
    pub available: bool,
    /// What was found, in one line: why it can, or exactly why not.
    pub reason: String,
}

impl Probe {
    /// It can be used; `reason` says what was found.
    pub fn ok(reason: impl Into<String>) -> Self {
        Self {
            available: true,
            reason: reason.into(),
        }
    }

    /// It cannot be used; `reason` says why.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self {
            available: false,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = if self.available { "yes" } else { "no" };
        write!(f, "{word}: {}", self.reason)
    }
}

/// One backend of one subsystem (`net`, `block`, `accel`) and whether it
/// can run here: what `dp-info` lists, in each subsystem's selection order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackendProbe {
    /// The subsystem: `net`, `block` or `accel`.
    pub subsystem: &'static str,
    /// The backend, as `--backend` spells it.
    pub backend: &'static str,
    /// Whether it can run, and why (not).
    pub probe: Probe,
}

/// The backends of one subsystem: an enum of them, in selection order.
pub trait Kind: Copy + Eq + fmt::Debug + Send + Sync + 'static {
    /// The subsystem, as `dp-info` and the logs name it: `net`, `block`,
    /// `accel`.
    const SUBSYSTEM: &'static str;

    /// Every backend, in selection order.
    const ALL: &'static [Self];

    /// The one spelling of this backend's name: in `--backend`, `dp-info`,
    /// the JSON reports and the docs.
    fn name(self) -> &'static str;

    /// Other spellings accepted when parsing (`io-uring` for `io_uring`).
    fn aliases(self) -> &'static [&'static str] {
        &[]
    }

    /// The `DATAPLANE_REQUIRE` capability that forbids passing this
    /// backend over, if any.
    fn capability(self) -> Option<Capability> {
        None
    }
}

/// Parses a backend name of subsystem `K`: its name or an alias, case and
/// surrounding space ignored.
///
/// # Errors
///
/// [`Error::Config`] listing the subsystem's names.
pub fn parse_kind<K: Kind>(s: &str) -> Result<K> {
    let norm = s.trim().to_ascii_lowercase();
    K::ALL
        .iter()
        .copied()
        .find(|k| k.name() == norm || k.aliases().contains(&norm.as_str()))
        .ok_or_else(|| {
            Error::Config(format!(
                "unknown {} backend {s:?}; expected auto, {}",
                K::SUBSYSTEM,
                names::<K>().join(", ")
            ))
        })
}

/// The names of subsystem `K`'s backends, in selection order.
pub fn names<K: Kind>() -> Vec<&'static str> {
    K::ALL.iter().map(|k| k.name()).collect()
}

/// What `--backend` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Choice<K> {
    /// The first backend, in selection order, that can run here and open
    /// the device.
    #[default]
    Auto,
    /// This backend or an error: never falls back.
    Named(K),
}

impl<K: Kind> fmt::Display for Choice<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Choice::Auto => f.write_str("auto"),
            Choice::Named(k) => f.write_str(k.name()),
        }
    }
}

impl<K: Kind> FromStr for Choice<K> {
    type Err = Error;

    /// `auto`, or a backend name as [`parse_kind`] reads it.
    fn from_str(s: &str) -> Result<Self> {
        if s.trim().eq_ignore_ascii_case("auto") {
            Ok(Choice::Auto)
        } else {
            parse_kind(s).map(Choice::Named)
        }
    }
}

impl<K: Kind> Serialize for Choice<K> {
    /// As `--backend` spells it: `"auto"` or the backend's name.
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<K: Kind> From<K> for Choice<K> {
    fn from(k: K) -> Self {
        Choice::Named(k)
    }
}

/// Whether a device is a backend's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The device is in the backend's syntax: try it.
    Mine,
    /// Not in the backend's syntax (`memory:a` is not a DPDK device), so it
    /// is passed over without being opened; passing over a required backend
    /// this way is still a refused fallback.
    NotMine(String),
    /// A kind of device the backend never serves (io_uring and a RAM
    /// disk): passed over, and no fallback even when the backend is
    /// required.
    Foreign(String),
}

/// A backend passed over during selection, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skip {
    /// The backend, as `--backend` spells it.
    pub backend: &'static str,
    /// Why: its probe's reason, why the device is not its own, or why it
    /// could not open the device.
    pub reason: String,
}

/// What [`select`] opened: the value, the backend that opened it, and every
/// backend passed over before it.
pub struct Opened<K, T> {
    /// The backend that opened the device.
    pub backend: K,
    /// What it opened (a subsystem's ports, device or queue).
    pub value: T,
    /// Backends tried and passed over, in selection order.
    pub skipped: Vec<Skip>,
}

impl<K: fmt::Debug, T> fmt::Debug for Opened<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened")
            .field("backend", &self.backend)
            .field("value", &std::any::type_name::<T>())
            .field("skipped", &self.skipped)
            .finish()
    }
}

/// One open's view of a subsystem's backends: how each probes, claims and
/// opens the device at hand.
pub trait Candidates {
    /// The subsystem's backends.
    type Kind: Kind;
    /// What a backend opens.
    type Value;

    /// The device, in words, for messages (`veth0`, `ram:1MiB`).
    fn device(&self) -> &str;

    /// Whether `kind` can run on this machine at all, and why (not).
    fn probe(&self, kind: Self::Kind) -> Probe;

    /// Whether the device is `kind`'s own. The default claims every device.
    fn claim(&self, kind: Self::Kind) -> Claim {
        let _ = kind;
        Claim::Mine
    }

    /// Opens the device with `kind`.
    ///
    /// # Errors
    ///
    /// Why `kind` cannot open it.
    fn open(&self, kind: Self::Kind) -> Result<Self::Value>;
}

/// Opens the device with the backend `choice` names, or the first in
/// selection order that can; see the module docs for the rules.
///
/// # Errors
///
/// - [`Error::Required`] when a backend that `required` names would be
///   passed over (the reason names the backend and why);
/// - [`Error::Config`] when the named backend cannot run here or cannot
///   open the device, or when no backend can (the message lists every
///   reason).
pub fn select<C: Candidates>(
    candidates: &C,
    choice: Choice<C::Kind>,
    required: &Requirements,
) -> Result<Opened<C::Kind, C::Value>> {
    let device = candidates.device();
    let subsystem = <C::Kind as Kind>::SUBSYSTEM;
    // Control path: every event of the selection (and of the chosen
    // backend's set-up) carries the subsystem and the device.
    let _span = tracing::info_span!("select_backend", subsystem, device).entered();
    if let Choice::Named(kind) = choice {
        let name = kind.name();
        let probe = candidates.probe(kind);
        if !probe.available {
            return Err(Error::Config(format!(
                "--backend {name}: cannot run here: {}",
                probe.reason
            )));
        }
        if let Claim::NotMine(why) | Claim::Foreign(why) = candidates.claim(kind) {
            return Err(Error::Config(format!("--backend {name}: {why}")));
        }
        let value = candidates
            .open(kind)
            .map_err(|e| Error::Config(format!("--backend {name}: cannot open {device}: {e}")))?;
        tracing::info!(subsystem, backend = name, device, "backend named");
        return Ok(Opened {
            backend: kind,
            value,
            skipped: Vec::new(),
        });
    }
    let mut skipped = Vec::new();
    for &kind in <C::Kind as Kind>::ALL {
        let name = kind.name();
        let (reason, fallback) = match candidates.claim(kind) {
            Claim::Foreign(why) => (why, false),
            Claim::NotMine(why) => (why, true),
            Claim::Mine => {
                let probe = candidates.probe(kind);
                if !probe.available {
                    (probe.reason, true)
                } else {
                    match candidates.open(kind) {
                        Ok(value) => {
                            tracing::info!(subsystem, backend = name, device, "backend chosen");
                            return Ok(Opened {
                                backend: kind,
                                value,
                                skipped,
                            });
                        }
                        Err(Error::Required { reason, .. }) => (reason, true),
                        Err(e) => (format!("cannot open {device}: {e}"), true),
                    }
                }
            }
        };
        if fallback
            && let Some(cap) = kind.capability()
            && required.requires(cap)
        {
            return Err(Error::Required {
                capability: cap.name(),
                reason: format!(
                    "{subsystem} backend {name} was passed over for {device}: {reason}"
                ),
            });
        }
        log_skip(subsystem, name, &reason);
        skipped.push(Skip {
            backend: name,
            reason,
        });
    }
    let reasons: Vec<String> = skipped
        .iter()
        .map(|s| format!("{}: {}", s.backend, s.reason))
        .collect();
    Err(Error::Config(format!(
        "no {subsystem} backend can open {device:?} ({})",
        reasons.join("; ")
    )))
}

/// Logs that `what` of `subsystem` was passed over (or fell back), at
/// `info`, once per process for each subsystem, name and reason: the one
/// log policy for skips and fallbacks.
pub fn log_skip(subsystem: &'static str, what: &'static str, reason: &str) {
    static LOGGED: Mutex<BTreeSet<(&'static str, &'static str, String)>> =
        Mutex::new(BTreeSet::new());
    let key = (subsystem, what, reason.to_owned());
    let first = match LOGGED.lock() {
        Ok(mut seen) => seen.insert(key),
        // A panic while holding the set only loses de-duplication.
        Err(poisoned) => poisoned.into_inner().insert(key),
    };
    if first {
        tracing::info!(subsystem, backend = what, "passed over: {reason}");
    }
}

/// Every backend of subsystem `K`, in selection order, with its probe.
pub fn probes<K: Kind>(probe: impl Fn(K) -> Probe) -> Vec<BackendProbe> {
    K::ALL
        .iter()
        .map(|&k| BackendProbe {
            subsystem: K::SUBSYSTEM,
            backend: k.name(),
            probe: probe(k),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Toy {
        Fast,
        Slow,
        Last,
    }

    impl Kind for Toy {
        const SUBSYSTEM: &'static str = "toy";
        const ALL: &'static [Toy] = &[Toy::Fast, Toy::Slow, Toy::Last];
        fn name(self) -> &'static str {
            match self {
                Toy::Fast => "fast_path",
                Toy::Slow => "slow",
                Toy::Last => "last",
            }
        }
        fn aliases(self) -> &'static [&'static str] {
            match self {
                Toy::Fast => &["fast-path"],
                _ => &[],
            }
        }
        fn capability(self) -> Option<Capability> {
            (self == Toy::Fast).then_some(Capability::Dpdk)
        }
    }

    /// Fast cannot run, Slow refuses the device as `slow_claim` says, Last
    /// opens anything; every open is recorded.
    struct Bed {
        slow_claim: Claim,
        opened: RefCell<Vec<Toy>>,
    }

    impl Candidates for Bed {
        type Kind = Toy;
        type Value = &'static str;
        fn device(&self) -> &str {
            "dev0"
        }
        fn probe(&self, kind: Toy) -> Probe {
            match kind {
                Toy::Fast => Probe::unavailable("not built in"),
                _ => Probe::ok("fine"),
            }
        }
        fn claim(&self, kind: Toy) -> Claim {
            match kind {
                Toy::Slow => self.slow_claim.clone(),
                _ => Claim::Mine,
            }
        }
        fn open(&self, kind: Toy) -> Result<&'static str> {
            self.opened.borrow_mut().push(kind);
            Ok(kind.name())
        }
    }

    fn bed(slow_claim: Claim) -> Bed {
        Bed {
            slow_claim,
            opened: RefCell::new(Vec::new()),
        }
    }

    #[test]
    fn names_and_aliases() {
        assert_eq!(parse_kind::<Toy>(" Fast-Path ").ok(), Some(Toy::Fast));
        assert_eq!(parse_kind::<Toy>("fast_path").ok(), Some(Toy::Fast));
        let err = parse_kind::<Toy>("quick").expect_err("unknown");
        assert!(
            err.to_string().contains("toy backend")
                && err.to_string().contains("fast_path, slow, last"),
            "{err}"
        );
        assert_eq!(Choice::Named(Toy::Fast).to_string(), "fast_path");
        assert_eq!(" AUTO ".parse::<Choice<Toy>>().ok(), Some(Choice::Auto));
    }

    #[test]
    fn auto_takes_the_first_that_opens_and_says_why_for_the_rest() {
        let b = bed(Claim::NotMine("not slow's syntax".into()));
        let opened = select(&b, Choice::Auto, &Requirements::default()).expect("last opens");
        assert_eq!(opened.backend, Toy::Last);
        assert_eq!(opened.value, "last");
        let skipped: Vec<(&str, &str)> = opened
            .skipped
            .iter()
            .map(|s| (s.backend, s.reason.as_str()))
            .collect();
        assert_eq!(
            skipped,
            [("fast_path", "not built in"), ("slow", "not slow's syntax")]
        );
        // Neither passed-over backend was opened.
        assert_eq!(*b.opened.borrow(), [Toy::Last]);
    }

    #[test]
    fn a_required_backend_is_not_passed_over() {
        let req = Requirements::of(&[Capability::Dpdk]);
        match select(&bed(Claim::Mine), Choice::Auto, &req) {
            Err(Error::Required { capability, reason }) => {
                assert_eq!(capability, "dpdk");
                assert!(
                    reason.contains("fast_path was passed over for dev0: not built in"),
                    "{reason}"
                );
            }
            other => panic!("expected Required, got {other:?}"),
        }
    }

    #[test]
    fn a_foreign_device_is_no_fallback() {
        // Slow's capability is none, so make Fast the foreign one: a
        // required backend that never serves this kind of device is
        // passed over without an error.
        struct ForeignFast;
        impl Candidates for ForeignFast {
            type Kind = Toy;
            type Value = ();
            fn device(&self) -> &str {
                "ram:1MiB"
            }
            fn probe(&self, _: Toy) -> Probe {
                Probe::ok("fine")
            }
            fn claim(&self, kind: Toy) -> Claim {
                match kind {
                    Toy::Fast => Claim::Foreign("does not open a RAM disk".into()),
                    _ => Claim::Mine,
                }
            }
            fn open(&self, _: Toy) -> Result<()> {
                Ok(())
            }
        }
        let req = Requirements::of(&[Capability::Dpdk]);
        let opened = select(&ForeignFast, Choice::Auto, &req).expect("no fallback");
        assert_eq!(opened.backend, Toy::Slow);
        assert_eq!(opened.skipped[0].reason, "does not open a RAM disk");
    }

    #[test]
    fn a_named_backend_never_falls_back() {
        let b = bed(Claim::NotMine("not slow's syntax".into()));
        let err = select(&b, Choice::Named(Toy::Slow), &Requirements::default())
            .expect_err("slow refuses the device");
        assert!(err.to_string().contains("--backend slow"), "{err}");
        let err = select(&b, Choice::Named(Toy::Fast), &Requirements::default())
            .expect_err("fast cannot run");
        assert!(err.to_string().contains("cannot run here"), "{err}");
        assert!(b.opened.borrow().is_empty());
        let opened =
            select(&b, Choice::Named(Toy::Last), &Requirements::default()).expect("last opens");
        assert!(opened.skipped.is_empty());
    }

    #[test]
    fn nothing_opens_lists_every_reason() {
        struct Nothing;
        impl Candidates for Nothing {
            type Kind = Toy;
            type Value = ();
            fn device(&self) -> &str {
                "bogus"
            }
            fn probe(&self, _: Toy) -> Probe {
                Probe::ok("fine")
            }
            fn open(&self, kind: Toy) -> Result<()> {
                Err(Error::Config(format!("{} says no", kind.name())))
            }
        }
        let err = select(&Nothing, Choice::Auto, &Requirements::default()).expect_err("none");
        let msg = err.to_string();
        for name in ["fast_path says no", "slow says no", "last says no"] {
            assert!(msg.contains(name), "{msg}");
        }
    }
}
