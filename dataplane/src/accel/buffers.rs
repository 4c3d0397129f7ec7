//! What a submission carries: its items, the memory they may be read
//! from in place, and how each completion says which path it took.

use super::*;

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
    pub(crate) fn regions(&self) -> Vec<&Region> {
        match self {
            HostMemory::MbufPool(p) => p.regions().iter().collect(),
            HostMemory::Mempool(p) => p.regions().iter().collect(),
            HostMemory::Region(r) => vec![r.as_ref()],
        }
    }

    pub(crate) fn name(&self) -> String {
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
