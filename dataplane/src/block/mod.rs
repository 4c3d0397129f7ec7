//! NVMe-style queue pairs owned by lcores: SPDK NVMe, io_uring, psync and
//! RAM-disk backends behind one [`Queue`] trait.
//!
//! A [`Device`] is a namespace (an NVMe namespace, a file or block device,
//! a RAM disk) with its [`Geometry`]; each lcore asks it for its own
//! [`Queue`] and then submits and polls from its run-to-completion loop,
//! with no locks: SPDK's model, where a reactor owns its I/O qpairs.
//!
//! ```
//! use dataplane::block::{self, DeviceConfig, QueueConfig, op};
//!
//! let dev = block::open(&DeviceConfig::new("ram:1MiB"))?.value;
//! let pool = dev.geometry().buffer_pool("io", 64, 4096)?;
//! let mut q = dev.queue(&QueueConfig::new(32).buffers(&pool))?;
//!
//! let mut buf = pool.alloc_buf().expect("a free buffer");
//! buf[..4096].fill(0xab);
//! q.submit(op::Write::new(buf, 8, 8).tag(1).build()).expect("room, and a valid request");
//! q.submit(op::Flush::new().tag(2).build()).expect("room");
//! let mut done = block::Completions::new();
//! while done.len() < 2 {
//!     q.poll(&mut done);
//! }
//! for c in done.drain() {
//!     assert!(c.status.is_ok());
//!     // The buffer comes back with its completion, and returns to the pool
//!     // when dropped.
//! }
//! assert_eq!(pool.in_use(), 0);
//! # Ok::<(), dataplane::Error>(())
//! ```
//!
//! # Ownership of buffers
//!
//! An operation owns its [`DmaBuf`](hugepages::mempool::DmaBuf); the buffer
//! moves into the queue with it and is the device's until the completion
//! hands it back. No safe borrow of it exists meanwhile. A refused
//! submission ([`SubmitError`]) hands the whole operation back. A queue
//! dropped with operations in flight waits for them (and gives up their
//! buffers, leaking rather than reusing them, if the device never answers).
//!
//! # Selection
//!
//! [`open`] tries the backends in order: SPDK NVMe, io_uring, psync, RAM
//! disk. Each handles some kinds of [`Target`]; among those, the first
//! whose probe passes and whose open succeeds wins, and every skip is
//! logged with its reason and returned in [`Opened::skipped`]. A backend
//! can be named instead ([`DeviceConfig::backend`]). `DATAPLANE_REQUIRE`
//! naming `io_uring` or `spdk` makes falling past that backend an error.

mod completion;
#[allow(unsafe_code)]
mod file;
mod geometry;
mod inflight;
pub mod op;
mod psync;
mod ramdisk;
#[allow(unsafe_code)]
mod spdk;
#[allow(unsafe_code)]
mod uring;

pub use completion::{Completion, Completions, MAX_COMPLETIONS, Status, SubmitError};
pub use geometry::{Geometry, Invalid};
pub use op::{Op, OpKind};
pub use ramdisk::RAM_BLOCK_SIZE;

use crate::backend::{self, BackendProbe, Candidates, Choice, Claim, Kind, Probe};
use crate::require::Capability;
use crate::topology::PciAddress;
use crate::{Error, NumaNode, Result};
use hugepages::mempool::{MEMPOOL_MAX_ALIGN, Mempool, MempoolConfig};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// One lcore's queue pair on a device: `Send`, used from one thread at a
/// time (io_uring queues from the thread that first used them).
///
/// The contract every backend keeps: a refused operation comes back whole
/// and nothing was submitted; every submitted operation completes exactly
/// once, through [`Queue::poll`], with its buffer; `poll` never blocks.
pub trait Queue: Send {
    /// Queues one operation. It is checked against the geometry first.
    ///
    /// # Errors
    /// [`SubmitError::Full`] at the queue's depth, [`SubmitError::Invalid`]
    /// for a request the device cannot take; the operation is handed back
    /// either way.
    fn submit(&mut self, op: Op) -> Result<(), SubmitError>;

    /// Hands the kernel or device what was queued, if anything, and
    /// appends finished operations to `out`, up to its spare room; returns
    /// how many.
    fn poll(&mut self, out: &mut Completions) -> usize;

    /// As [`Queue::poll`], but when nothing has finished and operations are
    /// in flight, sleeps in the kernel until one finishes or `timeout`
    /// passes, handing over what was queued in the same call: fewer system
    /// calls and no spinning core, for the price of a wake-up, and the CPU
    /// left to the kernel threads that serve a file or loop device (fio's
    /// way, where `poll` is SPDK's). Backends with nothing to sleep in
    /// (SPDK, psync, the RAM disk) poll. `Duration::MAX` sleeps with no
    /// timer (only the kernel's own I/O timeout bounds the sleep): the
    /// cheapest wait, for a loop that always has I/O in flight.
    fn wait(&mut self, out: &mut Completions, timeout: Duration) -> usize {
        let _ = timeout;
        self.poll(out)
    }

    /// The most operations in flight at once.
    fn depth(&self) -> usize;

    /// Operations submitted and not yet handed back by `poll`.
    fn in_flight(&self) -> usize;

    /// The namespace's geometry.
    fn geometry(&self) -> &Geometry;

    /// The backend's name.
    fn backend(&self) -> &'static str;

    /// This queue's counters.
    fn stats(&self) -> QueueStats;
}

/// A queue's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    /// Operations accepted by `submit`.
    pub submitted: u64,
    /// Completions handed out by `poll`.
    pub completed: u64,
    /// Completions with an error status, and kernel errors on the queue.
    pub errors: u64,
    /// System calls made: `io_uring_enter` (io_uring), one per operation
    /// (psync); 0 on SPDK and the RAM disk.
    pub syscalls: u64,
}

/// A namespace opened by a backend, shared by the lcores that each make a
/// queue on it.
pub trait Device: Send + Sync + std::fmt::Debug {
    /// The backend's name.
    fn backend(&self) -> &'static str;

    /// The target as given.
    fn target(&self) -> &str;

    /// The namespace's geometry.
    fn geometry(&self) -> &Geometry;

    /// What was found and decided when opening: the kind of device,
    /// alignment, whether completions are polled, anything that fell back.
    fn notes(&self) -> Vec<String>;

    /// A new queue pair for the calling lcore.
    ///
    /// # Errors
    /// A refused configuration, or the backend failing to create it.
    fn queue(&self, cfg: &QueueConfig) -> Result<Box<dyn Queue>>;
}

/// How a queue is made.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// The most operations in flight, 1 to 4096.
    pub depth: usize,
    /// Pools whose buffers this queue will be given: registered once with
    /// the kernel (io_uring fixed buffers) or the driver (SPDK), so that
    /// each I/O skips the translation. Buffers from other memory still
    /// work where the backend allows it.
    pub buffers: Vec<Mempool>,
}

/// The deepest queue: 4096 (io_uring's and NVMe's usual limits are 32768
/// and 65536; beyond a few thousand, latency only grows).
pub const MAX_QUEUE_DEPTH: usize = 4096;

impl QueueConfig {
    /// A queue of `depth` with no registered buffers.
    pub fn new(depth: usize) -> Self {
        QueueConfig {
            depth,
            buffers: Vec::new(),
        }
    }

    /// Registers `pool`'s memory with the queue.
    pub fn buffers(mut self, pool: &Mempool) -> Self {
        self.buffers.push(pool.clone());
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.depth == 0 || self.depth > MAX_QUEUE_DEPTH {
            return Err(Error::Config(format!(
                "queue depth {}: must be 1 to {MAX_QUEUE_DEPTH}",
                self.depth
            )));
        }
        Ok(())
    }
}

impl Geometry {
    /// A mempool of `count` buffers of `bytes` each, aligned as this device
    /// needs, on hugepages when there are any.
    ///
    /// # Errors
    /// An alignment beyond what a mempool gives (4 KiB), or the pool's own
    /// errors.
    pub fn buffer_pool(&self, name: &str, count: usize, bytes: usize) -> Result<Mempool> {
        let align = (self.buf_align as usize).max(hugepages::mempool::MEMPOOL_DEFAULT_ALIGN);
        if align > MEMPOOL_MAX_ALIGN {
            return Err(Error::Config(format!(
                "the device needs {align}-byte aligned buffers; mempools align to at most \
                 {MEMPOOL_MAX_ALIGN}"
            )));
        }
        Ok(Mempool::new(MempoolConfig {
            align,
            cache_size: 0,
            ..MempoolConfig::new(name, count, bytes)
        })?)
    }
}

/// What a target names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A file or block device.
    Path(PathBuf),
    /// A RAM disk of this many bytes: `ram:SIZE` (`ram:64MiB`, `ram:1G`).
    Ram {
        /// Its size.
        bytes: u64,
    },
    /// An NVMe controller for SPDK: a transport ID
    /// (`trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:4420 subnqn:...`,
    /// optionally with `ns:N`) or a PCI address (`0000:03:00.0`, or
    /// `03:00.0` as DPDK accepts it).
    Nvme(String),
}

impl Target {
    /// Parses a target string.
    ///
    /// # Errors
    /// A malformed `ram:` size, or an empty target.
    pub fn parse(s: &str) -> Result<Target> {
        let t = s.trim();
        if t.is_empty() {
            return Err(Error::Config("an empty block target".into()));
        }
        if let Some(size) = t.strip_prefix("ram:") {
            return Ok(Target::Ram {
                bytes: parse_size(size)?,
            });
        }
        if t.contains("trtype:") || t.contains("trtype=") || t.parse::<PciAddress>().is_ok() {
            return Ok(Target::Nvme(t.to_owned()));
        }
        Ok(Target::Path(PathBuf::from(t)))
    }

    /// The kind, in words, for skip reasons.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Path(_) => "a file or block device",
            Target::Ram { .. } => "a RAM disk",
            Target::Nvme(_) => "an NVMe controller",
        }
    }
}

/// `64MiB`, `1G`, `4096`, `2 GiB` as bytes (K/M/G/T are powers of 1024).
pub fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| Error::Config(format!("size {s:?}: expected a number and a unit")))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => {
            return Err(Error::Config(format!(
                "size {s:?}: unknown unit {other:?} (B, KiB, MiB, GiB, TiB)"
            )));
        }
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| Error::Config(format!("size {s:?} is too large")))
}

/// Whether completions are polled (io_uring IOPOLL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PollMode {
    /// Poll when the device can (a polled read at open succeeds), else
    /// interrupts, with the reason in the device's notes.
    Auto,
    /// Never poll.
    Off,
    /// Poll, or refuse to open.
    Required,
}

/// How to open a device.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// What to open: see [`Target`].
    pub target: String,
    /// The backend: automatic (the default) or named.
    pub backend: BackendChoice,
    /// Files: create the file, or extend it, to this many bytes.
    pub create_size: Option<u64>,
    /// Files and RAM disks: the logical block size (default: the device's,
    /// or 512).
    pub block_size: Option<u32>,
    /// Files and block devices: `O_DIRECT` (default true).
    pub direct: bool,
    /// Open read-only.
    pub read_only: bool,
    /// io_uring: polled completions.
    pub iopoll: PollMode,
    /// io_uring: a kernel submission thread (SQPOLL) that sleeps after
    /// this many idle milliseconds; `None` for none (the default).
    pub sqpoll_idle_ms: Option<u32>,
    /// RAM disks and SPDK: the NUMA node for memory.
    pub numa_node: Option<NumaNode>,
}

impl DeviceConfig {
    /// `target` with the defaults: automatic backend, O_DIRECT, IOPOLL when
    /// the device has it, no SQPOLL.
    pub fn new(target: impl Into<String>) -> Self {
        DeviceConfig {
            target: target.into(),
            backend: BackendChoice::Auto,
            create_size: None,
            block_size: None,
            direct: true,
            read_only: false,
            iopoll: PollMode::Auto,
            sqpoll_idle_ms: None,
            numa_node: None,
        }
    }

    /// Uses the named backend only (or, given [`Choice::Auto`], the
    /// automatic choice).
    pub fn backend(mut self, choice: impl Into<BackendChoice>) -> Self {
        self.backend = choice.into();
        self
    }

    /// Creates or extends a file target to `bytes`.
    pub fn create_size(mut self, bytes: u64) -> Self {
        self.create_size = Some(bytes);
        self
    }

    /// Sets the logical block size (files and RAM disks).
    pub fn block_size(mut self, bytes: u32) -> Self {
        self.block_size = Some(bytes);
        self
    }
}

/// A way to open devices: one per backend, named by its [`BackendKind`].
pub(crate) trait Backend: Send + Sync + std::fmt::Debug {
    /// Whether it can run on this machine at all, and why (not).
    fn probe(&self) -> Probe;

    /// Whether it opens this kind of target at all.
    fn handles(&self, target: &Target) -> bool;

    /// Opens `cfg.target`.
    ///
    /// # Errors
    /// Why this backend cannot open this target.
    fn open(&self, cfg: &DeviceConfig) -> Result<Arc<dyn Device>>;
}

/// One storage backend, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// SPDK's NVMe driver: PCIe controllers bound to vfio-pci, NVMe-oF.
    Spdk,
    /// io_uring over an `O_DIRECT` file or block device.
    IoUring,
    /// `pread`/`pwrite`, one system call per operation.
    Psync,
    /// A RAM disk on a hugepage region.
    Ram,
}

impl Kind for BackendKind {
    const SUBSYSTEM: &'static str = "block";
    const ALL: &'static [BackendKind] = &[
        BackendKind::Spdk,
        BackendKind::IoUring,
        BackendKind::Psync,
        BackendKind::Ram,
    ];

    fn name(self) -> &'static str {
        BackendKind::name(self)
    }

    fn aliases(self) -> &'static [&'static str] {
        match self {
            BackendKind::IoUring => &["io-uring"],
            BackendKind::Ram => &["ramdisk"],
            BackendKind::Spdk | BackendKind::Psync => &[],
        }
    }

    fn capability(self) -> Option<Capability> {
        match self {
            BackendKind::Spdk => Some(Capability::Spdk),
            BackendKind::IoUring => Some(Capability::IoUring),
            BackendKind::Psync | BackendKind::Ram => None,
        }
    }
}

impl BackendKind {
    /// The name as `--backend`, `dp-info` and `DATAPLANE_REQUIRE` spell it.
    pub const fn name(self) -> &'static str {
        match self {
            BackendKind::Spdk => "spdk",
            BackendKind::IoUring => "io_uring",
            BackendKind::Psync => "psync",
            BackendKind::Ram => "ram",
        }
    }

    fn backend(self) -> &'static dyn Backend {
        match self {
            BackendKind::Spdk => &spdk::Spdk,
            BackendKind::IoUring => &uring::Uring,
            BackendKind::Psync => &psync::Psync,
            BackendKind::Ram => &ramdisk::RamDisk,
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for BackendKind {
    type Err = Error;

    /// Parses `spdk`, `io_uring`, `psync` or `ram` (`io-uring` and
    /// `ramdisk` too); case does not matter.
    fn from_str(s: &str) -> Result<Self> {
        backend::parse_kind(s)
    }
}

/// Which storage backend to open with.
pub type BackendChoice = Choice<BackendKind>;

/// An opened device, the backend that opened it, and the backends passed
/// over on the way.
pub type Opened = backend::Opened<BackendKind, Arc<dyn Device>>;

/// The storage backends as candidates for one device configuration.
struct Block<'a> {
    cfg: &'a DeviceConfig,
    target: Target,
}

impl Candidates for Block<'_> {
    type Kind = BackendKind;
    type Value = Arc<dyn Device>;

    fn device(&self) -> &str {
        &self.cfg.target
    }

    fn probe(&self, kind: BackendKind) -> Probe {
        kind.backend().probe()
    }

    fn claim(&self, kind: BackendKind) -> Claim {
        if kind.backend().handles(&self.target) {
            Claim::Mine
        } else {
            Claim::Foreign(format!("does not open {}", self.target.kind()))
        }
    }

    fn open(&self, kind: BackendKind) -> Result<Arc<dyn Device>> {
        kind.backend().open(self.cfg)
    }
}

/// Opens `cfg.target` with the named backend, or the first in order that
/// can (see the [`crate::backend`] module for the rules; a backend
/// that never opens this kind of target is passed over without counting
/// as a fallback).
///
/// # Errors
/// A malformed target; the named backend failing; no backend able to open
/// the target; or a backend named in `DATAPLANE_REQUIRE` that handles the
/// target but could not open it.
pub fn open(cfg: &DeviceConfig) -> Result<Opened> {
    let target = Target::parse(&cfg.target)?;
    let opened = backend::select(
        &Block { cfg, target },
        cfg.backend,
        crate::require::requirements(),
    )?;
    tracing::info!(
        target = %cfg.target,
        backend = opened.backend.name(),
        "block device opened: {}",
        opened.value.notes().join("; ")
    );
    Ok(opened)
}

/// Every storage backend, in selection order, with whether it can run here.
pub fn probes() -> Vec<BackendProbe> {
    backend::probes(|k: BackendKind| k.backend().probe())
}

#[cfg(test)]
mod tests;
