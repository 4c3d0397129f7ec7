//! Accelerator compute queues owned by lcores: Vulkan through `ash` (a real
//! GPU, or lavapipe on the CPU), with the CPU running the same kernels as
//! the fallback.
//!
//! An accelerator lcore owns a [`Queue`] the way an I/O lcore owns a NIC
//! queue: it takes a batch of items (packets, blocks) from its inbound
//! ring, [`submit`](Queue::submit)s one or more [`Kernel`]s over them, and
//! [`poll`](Queue::poll)s for completions in its run-to-completion loop.
//! Neither call blocks; several submissions are in flight at once; the
//! Vulkan backend learns of completions from a timeline semaphore (or one
//! fence per submission where the device has no timeline semaphores).
//!
//! ```
//! use dataplane::accel::{Buffers, Completion, Kernel, Queue, QueueConfig};
//!
//! // Vulkan when a device is there, else the CPU (the reason is logged,
//! // and a failure when DATAPLANE_REQUIRE names vulkan).
//! let mut queue = Queue::<Vec<Vec<u8>>>::open(QueueConfig::default())?;
//! let items = vec![b"123456789".to_vec(), vec![0u8; 32]];
//! let workgroups = dataplane::accel::workgroups_for(items.len());
//! queue
//!     .submit(Kernel::Crc32c, Buffers::new(items), workgroups, 7)
//!     .map_err(|r| r.reason)
//!     .expect("an empty queue takes a submission");
//! let mut done: Vec<Completion<Vec<Vec<u8>>>> = Vec::new();
//! while queue.poll(&mut done) == 0 {}
//! assert_eq!(done[0].tag, 7);
//! assert_eq!(done[0].buffers.results, [0xe306_9283, 0x8a91_36aa]);
//! println!("ran on {} ({:?})", queue.info().device, done[0].path);
//! # Ok::<(), dataplane::Error>(())
//! ```
//!
//! **Buffers.** A submission's items stay where they are when they lie in
//! memory registered with the queue ([`Queue::register`]: a mbuf pool, a
//! mempool, a hugepage region) and the device supports
//! `VK_EXT_external_memory_host`: the region is imported as a Vulkan
//! storage buffer once, and the kernel reads the very bytes the NIC or NVMe
//! path filled ([`BufferPath::Imported`]). Otherwise the queue copies the
//! items into host-visible device memory before the dispatch, and back after
//! it for a kernel that writes ([`BufferPath::Staged`]). Every completion
//! says which path it took; [`QueueStats`] counts the bytes each way.
//!
//! **Kernels** are written once in WGSL (`dataplane/shaders/`), compiled to
//! SPIR-V when the crate builds (naga, in `build/shaders.rs`), and written
//! again in Rust ([`kernel`]): the CPU backend runs those, and the tests
//! hold every device result to them.
//!
//! **Lifetime.** Dropping a queue waits for the device to go idle, hands
//! every in-flight payload back to its owner's drop (mbufs return to their
//! pools), then destroys every Vulkan object in reverse order of creation,
//! and only then releases the registered memory.
// Unsafe code lives in the backends (`vulkan`, `cpu`) and in the `Payload`
// implementations, each of which allows it for itself.
#![deny(unsafe_code)]

mod cpu;
pub mod kernel;
mod layout;
mod payload;
mod shaders;
mod vulkan;

pub use kernel::{
    DEFAULT_PATTERNS, Kernel, Kernels, MAX_KERNELS, MAX_PATTERN_LEN, MAX_PATTERNS,
    MICROSOFT_RSS_KEY, NOT_IPV4, Params,
};
pub use payload::Payload;
#[doc(hidden)]
pub use vulkan::BareLoop;
pub use vulkan::{
    DebugMessages, DeviceInfo, DeviceType, Discovery, HeapInfo, QueueFamilyInfo, debug_messages,
    discover,
};

use crate::backend::{self, BackendProbe, Candidates, Choice, Kind, Probe};
use crate::require::{self, Capability, Requirements};
use crate::{Error, Result};
use hugepages::mbuf::MbufPool;
use hugepages::mempool::Mempool;
use hugepages::region::Region;
use serde::Serialize;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

/// Invocations per workgroup of every kernel; one item per invocation.
pub const WORKGROUP_SIZE: u32 = layout::WORKGROUP_SIZE;

/// The workgroups that cover `items` items.
pub const fn workgroups_for(items: usize) -> u32 {
    items.div_ceil(WORKGROUP_SIZE as usize) as u32
}

/// The environment variable naming the Vulkan loader to open instead of
/// the system's `libvulkan.so.1` (a path or a library name).
pub const LOADER_ENV: &str = "DATAPLANE_VULKAN_LOADER";

// ------------------------------------------------------------- errors

/// A Vulkan call that failed, or the loss of the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// The device was lost (`VK_ERROR_DEVICE_LOST`): a hang, a reset, a
    /// removed GPU. The queue completes everything in flight with this
    /// error and refuses new work.
    #[error("accelerator device lost ({call} returned VK_ERROR_DEVICE_LOST)")]
    Lost {
        /// The call that reported it.
        call: &'static str,
    },
    /// Another failure.
    #[error("{call} failed: {}", vulkan::result_name(*code))]
    Vulkan {
        /// The Vulkan function.
        call: &'static str,
        /// Its `VkResult`.
        code: i32,
    },
}

/// Why a submission was refused; the buffers come back in [`Rejected`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// As many submissions as the queue's depth are in flight: poll first.
    #[error("the queue is full ({0} submissions in flight)")]
    Full(usize),
    /// More items than the queue was opened for.
    #[error("{items} items; the queue takes at most {max} per submission")]
    TooManyItems {
        /// Items given.
        items: usize,
        /// [`QueueConfig::max_items`].
        max: usize,
    },
    /// The items need more staging space than a submission has.
    #[error("{bytes} bytes to stage; a submission has {max}")]
    TooLarge {
        /// Bytes needed (each item rounded up to 4).
        bytes: usize,
        /// [`QueueConfig::staging_bytes`].
        max: usize,
    },
    /// The workgroups do not cover the items, or exceed the device's limit.
    #[error("{workgroups} workgroups for {items} items (need {needed} to {max})")]
    Workgroups {
        /// Given.
        workgroups: u32,
        /// Items.
        items: usize,
        /// The least that covers the items.
        needed: u32,
        /// The device's `maxComputeWorkGroupCount[0]`.
        max: u32,
    },
    /// The device failed or was lost.
    #[error(transparent)]
    Device(#[from] DeviceError),
}

/// A refused submission: why, and the buffers handed back untouched.
#[derive(Debug)]
pub struct Rejected<P> {
    /// Why.
    pub reason: SubmitError,
    /// The buffers, as they were given.
    pub buffers: Buffers<P>,
}

// ------------------------------------------------------------- buffers

/// What a submission owns while in flight: the items, and the vector the
/// results are written to (its capacity is reused: give back the one a
/// completion returned and the hot path allocates nothing).
#[derive(Debug)]
pub struct Buffers<P> {
    /// The items.
    pub items: P,
    /// On completion: one word per item per kernel, kernel-major
    /// (`results[k * items + i]`). Cleared on submission.
    pub results: Vec<u32>,
}

impl<P> Buffers<P> {
    /// `items` with an empty result vector.
    pub fn new(items: P) -> Self {
        Buffers {
            items,
            results: Vec::new(),
        }
    }

    /// `items` with `results` (whose capacity is reused).
    pub fn with_results(items: P, results: Vec<u32>) -> Self {
        Buffers { items, results }
    }
}

/// How a submission's items reached the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BufferPath {
    /// Read in place from registered memory imported with
    /// `VK_EXT_external_memory_host`: no copy.
    Imported,
    /// Copied into host-visible device memory (and back, for a kernel that
    /// writes).
    Staged,
    /// Read in place by the CPU backend.
    Host,
}

/// A finished submission.
#[derive(Debug)]
pub struct Completion<P> {
    /// The tag it was submitted with.
    pub tag: u64,
    /// The kernels it ran.
    pub kernels: Kernels,
    /// The buffers, with the results.
    pub buffers: Buffers<P>,
    /// How the items reached the kernels.
    pub path: BufferPath,
    /// `Err` when the device failed or was lost before the submission
    /// completed; the results are then empty and the items may be partly
    /// written (by [`Kernel::Ipv4Update`]).
    pub status: std::result::Result<(), DeviceError>,
}

/// Memory to register with a queue so that items in it are read in place.
/// The queue keeps the handle, so the memory outlives its import.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum HostMemory {
    /// Every region of a packet-buffer pool.
    MbufPool(MbufPool),
    /// Every region of a mempool (blocks for the storage path).
    Mempool(Mempool),
    /// One region.
    Region(Arc<Region>),
}

impl From<MbufPool> for HostMemory {
    fn from(p: MbufPool) -> Self {
        HostMemory::MbufPool(p)
    }
}
impl From<Mempool> for HostMemory {
    fn from(p: Mempool) -> Self {
        HostMemory::Mempool(p)
    }
}
impl From<Arc<Region>> for HostMemory {
    fn from(r: Arc<Region>) -> Self {
        HostMemory::Region(r)
    }
}

impl HostMemory {
    fn regions(&self) -> Vec<&Region> {
        match self {
            HostMemory::MbufPool(p) => p.regions().iter().collect(),
            HostMemory::Mempool(p) => p.regions().iter().collect(),
            HostMemory::Region(r) => vec![r.as_ref()],
        }
    }

    fn name(&self) -> String {
        match self {
            HostMemory::MbufPool(p) => format!("mbuf pool {:?}", p.name()),
            HostMemory::Mempool(p) => format!("mempool {:?}", p.name()),
            HostMemory::Region(r) => format!("region of {} bytes", r.len()),
        }
    }
}

/// What registering memory achieved, per region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Registration {
    /// The memory, in words.
    pub memory: String,
    /// Bytes of the region.
    pub bytes: usize,
    /// Whether the region is hugepage-backed.
    pub hugepages: bool,
    /// The path items in it will take.
    pub path: BufferPath,
    /// Why.
    pub reason: String,
}

// ------------------------------------------------------------- config

/// Which backend a queue runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// Vulkan (a GPU, or lavapipe).
    Vulkan,
    /// The CPU kernels on the calling lcore.
    Cpu,
}

impl Kind for BackendKind {
    const SUBSYSTEM: &'static str = "accel";
    const ALL: &'static [BackendKind] = &[BackendKind::Vulkan, BackendKind::Cpu];

    fn name(self) -> &'static str {
        BackendKind::name(self)
    }

    fn capability(self) -> Option<Capability> {
        match self {
            BackendKind::Vulkan => Some(Capability::Vulkan),
            BackendKind::Cpu => None,
        }
    }
}

impl BackendKind {
    /// The name, as `--backend`, `dp-info` and `DATAPLANE_REQUIRE` spell it.
    pub const fn name(self) -> &'static str {
        match self {
            BackendKind::Vulkan => "vulkan",
            BackendKind::Cpu => "cpu",
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

    /// Parses `vulkan` or `cpu`; case does not matter.
    fn from_str(s: &str) -> Result<Self> {
        backend::parse_kind(s)
    }
}

/// Which backend to open: [`Choice::Auto`] is Vulkan when a device can be
/// opened, else the CPU with the reason logged, unless Vulkan is required
/// (`DATAPLANE_REQUIRE=vulkan`, the `require-vulkan` feature, or
/// [`QueueConfig::require_vulkan`]).
pub type BackendChoice = Choice<BackendKind>;

/// Which Vulkan device.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DeviceSelector {
    /// The first discrete GPU, else integrated, virtual, then CPU devices
    /// (lavapipe).
    #[default]
    Auto,
    /// The device at this index in [`Discovery::devices`].
    Index(usize),
    /// The device at this PCI address (`0000:af:00.0`, as
    /// [`Gpu::address`](crate::topology::Gpu::address) spells it), for
    /// devices with `VK_EXT_pci_bus_info`.
    Pci(String),
}

/// How the Vulkan backend learns that a submission completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// A timeline semaphore where the device has them, else fences.
    #[default]
    Auto,
    /// One timeline semaphore, one counter read per poll.
    Timeline,
    /// One fence per submission slot, the oldest polled.
    Fence,
}

/// How to open a [`Queue`].
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// The backend.
    pub backend: BackendChoice,
    /// The Vulkan device.
    pub device: DeviceSelector,
    /// Which queue of the device's compute family (modulo their count):
    /// accelerator lcore `k` of a device takes queue `k`.
    pub queue_index: u32,
    /// Submissions in flight at once.
    pub depth: usize,
    /// The most items per submission.
    pub max_items: usize,
    /// Bytes of staging memory per submission (items that are not read in
    /// place are copied there, each rounded up to 4 bytes).
    pub staging_bytes: usize,
    /// The Toeplitz key and signatures.
    pub params: Params,
    /// Completion tracking.
    pub sync: SyncMode,
    /// The Vulkan loader to open; `None` reads [`LOADER_ENV`], then uses
    /// `libvulkan.so.1`.
    pub loader: Option<PathBuf>,
    /// Refuse to fall back to the CPU under [`BackendChoice::Auto`]; `None`
    /// takes it from the `require-vulkan` feature and `DATAPLANE_REQUIRE`.
    pub require_vulkan: Option<bool>,
}

impl Default for QueueConfig {
    /// Auto backend and device, depth 8, 256 items and 1 MiB of staging
    /// per submission, the default parameters.
    fn default() -> Self {
        QueueConfig {
            backend: BackendChoice::Auto,
            device: DeviceSelector::Auto,
            queue_index: 0,
            depth: 8,
            max_items: 256,
            staging_bytes: 1 << 20,
            params: Params::default(),
            sync: SyncMode::Auto,
            loader: None,
            require_vulkan: None,
        }
    }
}

impl QueueConfig {
    /// The default configuration on `backend`.
    pub fn new(backend: BackendChoice) -> Self {
        QueueConfig {
            backend,
            ..QueueConfig::default()
        }
    }

    fn vulkan_required(&self) -> bool {
        self.require_vulkan
            .unwrap_or(cfg!(feature = "require-vulkan") || require::required(Capability::Vulkan))
    }

    fn check(&self) -> Result<()> {
        let bad = |why: String| Err(Error::Config(format!("accelerator queue: {why}")));
        if self.depth == 0 || self.depth > 1024 {
            return bad(format!("depth {} must be 1 to 1024", self.depth));
        }
        if self.max_items == 0 || self.max_items > 1 << 20 {
            return bad(format!("max_items {} must be 1 to 2^20", self.max_items));
        }
        if self.staging_bytes == 0 || self.staging_bytes > 1 << 30 {
            return bad(format!(
                "staging_bytes {} must be 1 to 2^30",
                self.staging_bytes
            ));
        }
        Ok(())
    }
}

// ------------------------------------------------------------- queue

/// What a queue runs on, for logs and `dp-info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueInfo {
    /// The backend.
    pub backend: BackendKind,
    /// The device's name (the CPU's model for the CPU backend).
    pub device: String,
    /// Why the CPU runs the kernels under [`BackendChoice::Auto`], if it does.
    pub fallback: Option<String>,
    /// Completion tracking: `timeline`, `fence` or `inline` (CPU).
    pub sync: &'static str,
    /// Whether registered memory can be imported (zero copy), and why (not).
    pub import: Probe,
    /// Submissions in flight at once.
    pub depth: usize,
    /// The most items per submission.
    pub max_items: usize,
    /// Staging bytes per submission.
    pub staging_bytes: usize,
}

/// A queue's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    /// Submissions accepted.
    pub submitted: u64,
    /// Completions handed back (failed ones included).
    pub completed: u64,
    /// Completions that carried a device error.
    pub failed: u64,
    /// Submissions read in place from imported memory.
    pub imported: u64,
    /// Submissions staged.
    pub staged: u64,
    /// Item bytes read in place (not copied) by imported submissions.
    pub bytes_in_place: u64,
    /// Item bytes copied into staging memory.
    pub bytes_staged_in: u64,
    /// Item bytes copied back out of staging memory.
    pub bytes_staged_out: u64,
}

enum Backend<P: Payload> {
    Vulkan(Box<vulkan::VulkanQueue<P>>),
    Cpu(cpu::CpuQueue<P>),
}

/// A compute queue owned by one lcore: `Send`, not `Sync` (every operation
/// takes `&mut self`). See the [module docs](self).
pub struct Queue<P: Payload> {
    backend: Backend<P>,
    info: QueueInfo,
}

impl<P: Payload> fmt::Debug for Queue<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("info", &self.info)
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl<P: Payload> Queue<P> {
    /// Opens a queue on the configured backend.
    ///
    /// # Errors
    ///
    /// - [`Error::Config`]: a refused configuration.
    /// - [`Error::Required`]: Vulkan was asked for (or required under
    ///   `Auto`) and cannot be opened; the reason says why.
    /// - [`Error::Accel`]: a Vulkan call failed while setting up an
    ///   explicitly requested Vulkan queue.
    pub fn open(config: QueueConfig) -> Result<Queue<P>> {
        config.check()?;
        let required = if config.vulkan_required() {
            Requirements::of(&[Capability::Vulkan])
        } else {
            Requirements::default()
        };
        let opened = backend::select(
            &Accel::<P> {
                config: &config,
                payload: std::marker::PhantomData,
            },
            config.backend,
            &required,
        )?;
        let mut queue = opened.value;
        if let Some(skip) = opened.skipped.into_iter().next() {
            queue.info.fallback = Some(skip.reason);
        }
        Ok(queue)
    }

    fn cpu(config: &QueueConfig, fallback: Option<String>) -> Queue<P> {
        let q = cpu::CpuQueue::new(config);
        let info = QueueInfo {
            backend: BackendKind::Cpu,
            device: cpu::cpu_name(),
            fallback,
            sync: "inline",
            import: Probe::ok("the CPU reads items in place"),
            depth: config.depth,
            max_items: config.max_items,
            staging_bytes: 0,
        };
        Queue {
            backend: Backend::Cpu(q),
            info,
        }
    }

    fn vulkan(config: &QueueConfig) -> Result<Queue<P>> {
        let q = vulkan::VulkanQueue::open(config)?;
        let info = q.info().clone();
        Ok(Queue {
            backend: Backend::Vulkan(Box::new(q)),
            info,
        })
    }

    /// What the queue runs on.
    pub fn info(&self) -> &QueueInfo {
        &self.info
    }

    /// Its counters.
    pub fn stats(&self) -> QueueStats {
        match &self.backend {
            Backend::Vulkan(q) => q.stats(),
            Backend::Cpu(q) => q.stats(),
        }
    }

    /// Submissions in flight: poll until 0 to drain (the lcore's stop
    /// contract: return non-zero work while this is not 0).
    pub fn in_flight(&self) -> usize {
        match &self.backend {
            Backend::Vulkan(q) => q.in_flight(),
            Backend::Cpu(q) => q.in_flight(),
        }
    }

    /// Makes items in `memory` readable in place: each region is imported
    /// as a Vulkan storage buffer when the device supports
    /// `VK_EXT_external_memory_host` and the region meets its alignment;
    /// otherwise items there are staged. The queue keeps `memory` alive
    /// until it is dropped. Returns what happened to each region.
    ///
    /// # Errors
    ///
    /// [`Error::Accel`] when a Vulkan call fails other than by refusing the
    /// import (a refused import is reported as [`BufferPath::Staged`] with
    /// the reason).
    pub fn register(&mut self, memory: impl Into<HostMemory>) -> Result<Vec<Registration>> {
        let memory = memory.into();
        match &mut self.backend {
            Backend::Vulkan(q) => q.register(memory),
            Backend::Cpu(_) => Ok(memory
                .regions()
                .iter()
                .map(|r| Registration {
                    memory: memory.name(),
                    bytes: r.len(),
                    hugepages: r.is_hugepage_backed(),
                    path: BufferPath::Host,
                    reason: "the CPU backend reads items in place".into(),
                })
                .collect()),
        }
    }

    /// Queues `kernels` (one [`Kernel`] or several [`Kernels`], run in
    /// order) over `buffers.items`, with `workgroups` workgroups of
    /// [`WORKGROUP_SIZE`] (see [`workgroups_for`]). Never blocks: the
    /// completion comes from [`Queue::poll`] with `tag`.
    ///
    /// # Errors
    ///
    /// The buffers come back untouched in [`Rejected`] with the reason: the
    /// queue is full, too many items or bytes, workgroups that do not cover
    /// the items, or a failed or lost device.
    pub fn submit(
        &mut self,
        kernels: impl Into<Kernels>,
        buffers: Buffers<P>,
        workgroups: u32,
        tag: u64,
    ) -> std::result::Result<(), Rejected<P>> {
        let kernels = kernels.into();
        match &mut self.backend {
            Backend::Vulkan(q) => q.submit(kernels, buffers, workgroups, tag),
            Backend::Cpu(q) => q.submit(kernels, buffers, workgroups, tag),
        }
    }

    /// Appends the submissions that completed since the last call, oldest
    /// first, to `out`; returns how many. Never blocks (one semaphore
    /// counter read, or one fence status, when nothing is done).
    pub fn poll(&mut self, out: &mut Vec<Completion<P>>) -> usize {
        match &mut self.backend {
            Backend::Vulkan(q) => q.poll(out),
            Backend::Cpu(q) => q.poll(out),
        }
    }
}

/// The accelerator backends as candidates for one queue configuration.
struct Accel<'a, P> {
    config: &'a QueueConfig,
    payload: std::marker::PhantomData<fn() -> P>,
}

impl<P: Payload> Candidates for Accel<'_, P> {
    type Kind = BackendKind;
    type Value = Queue<P>;

    fn device(&self) -> &str {
        "a compute queue"
    }

    /// Vulkan's real probe is the open itself (a loader, an instance, a
    /// device with a compute queue); the CPU always runs.
    fn probe(&self, kind: BackendKind) -> Probe {
        match kind {
            BackendKind::Vulkan => Probe::ok("tried by opening a queue"),
            BackendKind::Cpu => Probe::ok("the CPU of the calling lcore"),
        }
    }

    fn open(&self, kind: BackendKind) -> Result<Queue<P>> {
        match kind {
            BackendKind::Vulkan => Queue::vulkan(self.config),
            BackendKind::Cpu => Ok(Queue::cpu(self.config, None)),
        }
    }
}

/// Checks a submission against the queue's limits: the same rules for
/// every backend.
pub(crate) fn check_submission(
    items: usize,
    workgroups: u32,
    max_items: usize,
    max_workgroups: u32,
) -> std::result::Result<(), SubmitError> {
    if items > max_items {
        return Err(SubmitError::TooManyItems {
            items,
            max: max_items,
        });
    }
    let needed = workgroups_for(items);
    if workgroups < needed || workgroups > max_workgroups {
        return Err(SubmitError::Workgroups {
            workgroups,
            items,
            needed,
            max: max_workgroups,
        });
    }
    Ok(())
}

// ------------------------------------------------------------- probes

/// Whether a Vulkan device with a compute queue can be opened here, and
/// what was found.
pub fn probe() -> Probe {
    vulkan::probe(&discover())
}

/// Every accelerator backend, in selection order, with whether it can run
/// here.
pub fn probes() -> Vec<BackendProbe> {
    vec![
        BackendProbe {
            subsystem: "accel",
            backend: BackendKind::Vulkan.name(),
            probe: probe(),
        },
        BackendProbe {
            subsystem: "accel",
            backend: BackendKind::Cpu.name(),
            probe: Probe::ok(format!(
                "every kernel on the CPU of the calling lcore ({})",
                cpu::crc_impl()
            )),
        },
    ]
}

#[cfg(test)]
mod tests;
