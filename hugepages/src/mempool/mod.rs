//! A [`Mempool`]: fixed-size objects carved out of [`Region`]s, handed out
//! in bulk through a per-lcore cache, `rte_mempool`'s model.
//!
//! ```
//! use hugepages::mempool::{Mempool, MempoolConfig};
//!
//! let pool = Mempool::new(MempoolConfig {
//!     name: "dma".into(),
//!     count: 1024,
//!     elt_size: 4096,
//!     align: 4096,
//!     cache_size: 32,
//!     ..MempoolConfig::default()
//! })?;
//! // The safe way: an owning buffer that goes back to the pool on drop.
//! let mut buf = pool.alloc_buf().expect("a free buffer");
//! buf[..5].copy_from_slice(b"hello");
//! let _device_address = buf.iova();
//! assert_eq!(pool.in_use(), 1);
//! drop(buf);
//!
//! // The DPDK way: raw objects in bulk, all or nothing.
//! let mut objs = [std::ptr::null_mut(); 8];
//! pool.get_bulk(&mut objs).expect("8 free objects");
//! // SAFETY: the objects came from this pool and are no longer used.
//! unsafe { pool.put_bulk(&objs) };
//! assert_eq!(pool.available(), pool.capacity());
//! # Ok::<(), hugepages::Error>(())
//! ```
//!
//! # The store and the caches
//!
//! The shared store is a bounded multi-producer multi-consumer ring of
//! object pointers in the style of `rte_ring` (which is also
//! `rte_mempool`'s default store): producer and consumer each have a head
//! and a tail on their own cache line; a get or put CASes its side's head
//! forward by `n` to reserve `n` positions, all or nothing, copies, waits
//! for its side's tail to reach its head and stores the tail past its run.
//! The capacity is the smallest power of two that holds every object, so
//! a put never finds it full, and a get that finds fewer than `n` objects
//! fails at once having taken nothing. Uncontended, a bulk operation is one
//! CAS and one tail store. The algorithm, each ordering, and what a thread
//! preempted inside an operation costs the others are written out in
//! `src/mempool/ring.rs`. Objects come out in the order they went in, as
//! from `rte_mempool`'s ring: the least recently freed first.
//!
//! The ring holds the objects' pointers, as `rte_mempool`'s does: a get
//! copies them out unchanged. A put first checks that each pointer is an
//! object of the pool. For the common layout, one region of objects packed
//! end to end with a power-of-two stride, that is one branch-free pass over
//! the burst (offset below the span, no bits below the stride); otherwise a
//! put finds each pointer's region and divides by the stride with a
//! multiply (`src/mempool/divisor.rs`). (The ring held `u32` indices
//! before: half the memory, but a conversion on every get and put, 1.14x
//! the cycles of a get and put of 32 without a cache.)
//!
//! In front of the store, each pool has [`MAX_LCORE_SLOTS`] caches, one per
//! [`slot`]: the thread holding slot *k* alone touches cache *k* (its
//! object array through an `UnsafeCell`, its `len` with plain loads and
//! Release stores that others read only for statistics). Put and get
//! follow DPDK 22.11 (`rte_mempool_do_generic_put`/`_get`), described at
//! [`Mempool::put_bulk`] and [`Mempool::get_bulk`]. A thread without a slot
//! uses the store directly.
//!
//! The store's count, in [`Mempool::available`], is `prod.tail - cons.head`:
//! the objects that puts have published and no get has reserved. It is
//! read `cons.head` first, then `prod.tail`, both with Acquire, which makes
//! it never negative (ring.rs, "Orderings"); a get in flight has already
//! left it, a put in flight has not yet joined it.
//!
//! # Dropping the pool
//!
//! When the last [`Mempool`] handle goes, the pool is freed if every object
//! is back ([`Mempool::in_use`] is 0). Otherwise it logs a warning and
//! leaks the pool, memory and bookkeeping alike: an [`Mbuf`](crate::mbuf::Mbuf)
//! or a raw object still out holds a pointer into it and will be put back
//! later, and that must stay memory-safe.
//!
//! Deciding "every object is back" while other threads may still be inside
//! `put` (an `Mbuf` dropped without a pool handle) needs two rules. (No get
//! can be in flight: a get needs a handle, and the handles' `Arc` orders
//! every get before the drop, so the drop reads `cons.head` exactly.)
//!
//! 1. The last access a put makes to the pool is the Release write that
//!    makes its objects count as available: a cache's `len` store, or the
//!    store's `prod.tail` store when a put goes to the store or flushes its
//!    cache there (the cache `len` is lowered *before* the flushed objects
//!    reach the store, so the count can run short for a moment, never
//!    long). A put to the store that is split into several reservations
//!    (one holding a pointer not of the pool, 64 objects at a time)
//!    publishes its last run last, and until then its objects are not all
//!    counted.
//! 2. The drop reads the store's count first (`prod.tail` with Acquire),
//!    then every cache's `len`, all with Acquire. A flush lowers its cache's
//!    `len` before it raises `prod.tail`, so reading in the opposite order
//!    cannot count the flushed objects twice.
//!
//! The `prod.tail` stores of the puts form a chain: each put waits, with
//! an Acquire load, for the previous put's tail store before it makes its
//! own (ring.rs). So a drop whose Acquire load reads a `prod.tail` value
//! synchronises with every put whose run ends at or before it, not only
//! with the last one.
//!
//! So a drop that counts every object has synchronised with the last write
//! of every put, and every put's accesses happen before the free. (Like
//! `Arc`'s own drop, a put's `&self` may outlive its last access to the
//! memory by the return; see rust-lang/rust#55005.)

mod core;
mod divisor;
mod dmabuf;
mod ring;

pub(crate) use core::{MbufPoolInfo, PoolCore};
pub use dmabuf::DmaBuf;

use core::CoreOwner;
use divisor::Divisor;
use ring::Ring;

use crate::Error;
use crate::NumaNode;
use crate::region::{Iova, IovaMode, PageSize, Region};
use crate::slot::{self, MAX_LCORE_SLOTS};
use crate::sync::{Arc, AtomicU32, Ordering, UnsafeCell};
use crossbeam_utils::CachePadded;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::ptr::{self, NonNull};

/// The most objects a pool holds: object indices are `u32`.
const MAX_OBJECTS: usize = u32::MAX as usize;

/// The largest per-lcore cache (`RTE_MEMPOOL_CACHE_MAX_SIZE`, DPDK
/// lib/mempool/rte_mempool.h).
pub const MEMPOOL_CACHE_MAX_SIZE: usize = 512;

/// The default object alignment: one x86-64 cache line, so that objects
/// never share a line (and DMA never touches a neighbour's line).
pub const MEMPOOL_DEFAULT_ALIGN: usize = 64;

/// The largest object alignment: the base page size, the alignment every
/// region (even a 4 KiB fallback) guarantees for its start.
pub const MEMPOOL_MAX_ALIGN: usize = 4096;

/// The cache flush threshold for a cache size: 1.5 times it
/// (`RTE_MEMPOOL_CACHE_FLUSHTHRESH_MULTIPLIER`, DPDK 22.11).
pub const fn cache_flush_threshold(cache_size: usize) -> usize {
    cache_size * 3 / 2
}

/// The configuration of a [`Mempool`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MempoolConfig {
    /// The pool's name, for logs and statistics.
    pub name: String,
    /// Number of objects, 1 to `u32::MAX`.
    pub count: usize,
    /// Usable bytes per object, at least 1.
    pub elt_size: usize,
    /// Alignment of each object: a power of two from 8 to
    /// [`MEMPOOL_MAX_ALIGN`] (default [`MEMPOOL_DEFAULT_ALIGN`]).
    pub align: usize,
    /// Objects per lcore cache, 0 (no cache) to [`MEMPOOL_CACHE_MAX_SIZE`];
    /// 1.5 times it may not exceed `count` (as `rte_mempool_create` requires).
    pub cache_size: usize,
    /// The NUMA node the objects must be on (default: none).
    pub numa_node: Option<NumaNode>,
    /// The page size to ask for (default 2 MiB).
    pub page_size: PageSize,
    /// Whether 4 KiB pages will do when no hugepages can be had (default true).
    pub allow_fallback: bool,
    /// A hugetlbfs mount to take the pages from instead of anonymous memory.
    pub hugetlbfs: Option<PathBuf>,
    /// The IOVA mode to require, or `None` to take what the regions get.
    pub iova_mode: Option<IovaMode>,
    /// The most bytes one region may span (default: one region for the whole
    /// pool). Smaller regions are easier for the kernel to find on a
    /// fragmented node.
    pub max_region_len: Option<usize>,
}

impl Default for MempoolConfig {
    fn default() -> Self {
        Self {
            name: "mempool".into(),
            count: 0,
            elt_size: 0,
            align: MEMPOOL_DEFAULT_ALIGN,
            cache_size: 0,
            numa_node: None,
            page_size: PageSize::Size2M,
            allow_fallback: true,
            hugetlbfs: None,
            iova_mode: None,
            max_region_len: None,
        }
    }
}

impl MempoolConfig {
    /// `count` objects of `elt_size` bytes, with the defaults for the rest
    /// (no cache).
    pub fn new(name: impl Into<String>, count: usize, elt_size: usize) -> Self {
        Self {
            name: name.into(),
            count,
            elt_size,
            ..Self::default()
        }
    }
}

/// Not enough free objects for a bulk get; nothing was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PoolExhausted;

impl fmt::Display for PoolExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("mempool exhausted")
    }
}

impl std::error::Error for PoolExhausted {}

/// A pool of fixed-size, DMA-able objects. A cheap handle: clones share
/// the pool; `Send` and `Sync`.
pub struct Mempool {
    pub(super) core: NonNull<PoolCore>,
    pub(super) owner: Arc<CoreOwner>,
}

// SAFETY: PoolCore is Send and Sync, and `owner` keeps it alive.
unsafe impl Send for Mempool {}
// SAFETY: as above.
unsafe impl Sync for Mempool {}

impl Clone for Mempool {
    fn clone(&self) -> Self {
        Self {
            core: self.core,
            owner: self.owner.clone(),
        }
    }
}

impl fmt::Debug for Mempool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let core = self.core();
        f.debug_struct("Mempool")
            .field("name", &core.name)
            .field("capacity", &core.count)
            .field("available", &core.available())
            .field("elt_size", &core.elt_size)
            .field("stride", &core.stride)
            .field("cache_size", &core.cache_size)
            .field("regions", &core.regions)
            .finish()
    }
}

impl Mempool {
    /// Maps the regions and builds the pool, every object free.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a refused configuration (zero count or size,
    /// more than `u32::MAX` objects, a bad alignment, a cache too large for
    /// the pool); the errors of [`RegionBuilder::build`](crate::region::RegionBuilder::build)
    /// for the memory.
    pub fn new(config: MempoolConfig) -> Result<Mempool, Error> {
        Self::with_info(&config, None)
    }

    pub(crate) fn with_info(
        config: &MempoolConfig,
        mbuf: Option<MbufPoolInfo>,
    ) -> Result<Mempool, Error> {
        let core = PoolCore::new(config, mbuf)?;
        let core = NonNull::from(Box::leak(Box::new(core)));
        Ok(Mempool {
            core,
            owner: Arc::new(CoreOwner { core }),
        })
    }

    #[inline]
    pub(crate) fn core(&self) -> &PoolCore {
        // SAFETY: `owner` keeps the core alive as long as this handle.
        unsafe { self.core.as_ref() }
    }

    /// The core's address, which native mbufs store as their pool.
    pub(crate) fn core_ptr(&self) -> NonNull<PoolCore> {
        self.core
    }

    /// Every object, by index.
    pub(crate) fn objects(&self) -> impl Iterator<Item = *mut u8> + '_ {
        self.core().objs.iter().copied()
    }

    /// Takes `out.len()` objects, all or nothing.
    ///
    /// With a slot ([`slot::claim`]) and a cache: a request of `cache_size`
    /// or more goes to the shared store; otherwise, when the cache holds
    /// fewer than requested, it is refilled from the store with
    /// `cache_size + n - len` objects in one bulk pop (when that fails, the
    /// store is asked for the `n` alone), and `n` are handed out from the
    /// top of the cache, most recently freed first.
    ///
    /// # Errors
    ///
    /// [`PoolExhausted`] when fewer than `out.len()` objects are free;
    /// nothing was taken and `out` is unchanged.
    #[inline]
    pub fn get_bulk(&self, out: &mut [*mut u8]) -> Result<(), PoolExhausted> {
        self.core().get_bulk(out)
    }

    /// Takes one object.
    #[inline]
    pub fn get(&self) -> Option<NonNull<u8>> {
        let mut one = [ptr::null_mut()];
        self.get_bulk(&mut one).ok()?;
        NonNull::new(one[0])
    }

    /// Returns objects to the pool.
    ///
    /// With a slot and a cache: a burst larger than `cache_size` goes to the
    /// shared store; otherwise it is added to the cache, and when the cache
    /// reaches its flush threshold (1.5 x `cache_size`) everything above
    /// `cache_size` goes to the store in one bulk push (DPDK 22.11).
    ///
    /// # Safety
    ///
    /// Each pointer was handed out by this pool (by `get`, `get_bulk`, or
    /// as an mbuf or buffer of it), is returned once, and is no longer used
    /// by anyone (including a device doing DMA). Every byte of each object
    /// is initialised (any value): buffers of the pool are read as `[u8]`.
    /// Debug builds check that each pointer is the start of an object of
    /// this pool.
    #[inline]
    pub unsafe fn put_bulk(&self, objs: &[*mut u8]) {
        // SAFETY: the caller upholds put_bulk's contract, which is the core's.
        unsafe { self.core().put_bulk(objs) }
    }

    /// Returns one object.
    ///
    /// # Safety
    ///
    /// As [`Mempool::put_bulk`].
    #[inline]
    pub unsafe fn put(&self, obj: NonNull<u8>) {
        // SAFETY: the caller upholds put's contract, which is put_bulk's.
        unsafe { self.put_bulk(&[obj.as_ptr()]) }
    }

    /// Moves the calling thread's cached objects (if it holds a slot) to
    /// the shared store, where every thread can get them.
    pub fn flush_cache(&self) {
        self.core().flush_cache();
    }

    /// Objects in the pool, free or not.
    pub fn capacity(&self) -> usize {
        self.core().count as usize
    }

    /// Free objects: in the shared store and in every cache. Exact when no
    /// get or put is in flight; momentarily low or high otherwise.
    pub fn available(&self) -> usize {
        self.core().available()
    }

    /// Objects handed out and not yet returned: `capacity() - available()`.
    pub fn in_use(&self) -> usize {
        self.capacity() - self.available()
    }

    /// Usable bytes per object.
    pub fn elt_size(&self) -> usize {
        self.core().elt_size
    }

    /// Distance between consecutive objects (the size rounded up to the
    /// alignment).
    pub fn stride(&self) -> usize {
        self.core().stride
    }

    /// Objects per lcore cache (0: no cache).
    pub fn cache_size(&self) -> usize {
        self.core().cache_size as usize
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.core().name
    }

    /// The regions the objects are carved from.
    pub fn regions(&self) -> &[Region] {
        &self.core().regions
    }

    /// The IOVA of a byte inside the pool (an object's first byte gives the
    /// object's IOVA), or `None` outside it. Every object is IOVA-contiguous.
    pub fn iova_of(&self, ptr: *const u8) -> Option<Iova> {
        self.core().iova_of(ptr)
    }

    /// Whether `ptr` is the start of an object of this pool.
    pub fn is_object(&self, ptr: *const u8) -> bool {
        self.core().index_of(ptr).is_some()
    }

    /// The object holding the byte at `ptr` (its first byte or any of its
    /// `elt_size`): its index, from 0 to `capacity()`, and its start.
    /// `None` when no object of this pool holds it. How a driver maps an
    /// address a device hands back to the object it lent.
    pub fn object_containing(&self, ptr: *const u8) -> Option<(usize, NonNull<u8>)> {
        let core = self.core();
        let i = core.index_containing(ptr)?;
        Some((i as usize, NonNull::new(*core.objs.get(i as usize)?)?))
    }

    /// Takes one object as an owning [`DmaBuf`], returned on drop.
    pub fn alloc_buf(&self) -> Option<DmaBuf> {
        let ptr = self.get()?;
        Some(DmaBuf {
            pool: self.clone(),
            ptr,
        })
    }
}

#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(all(test, not(loom)))]
mod tests;
