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
//! The shared store is a lock-free LIFO stack of `u32` object indices in the
//! style of DPDK's `rte_stack_lf`: a 64-bit head packing the top index with
//! a 32-bit ABA tag, a side array of `next` links, and a `len` counter that
//! a pop decrements first, as a reservation (so a bulk pop is all or
//! nothing and fails fast), and a push increments last. Uncontended, a
//! bulk operation is one CAS on the head and one update of `len`. The
//! algorithm, each ordering and the ABA argument are written out in
//! `src/stack.rs`. In front of it,
//! each pool has [`MAX_LCORE_SLOTS`] caches, one per [`slot`]: the thread
//! holding slot *k* alone touches cache *k* (its object array through an
//! `UnsafeCell`, its `len` with plain loads and Release stores that others
//! read only for statistics). Put and get follow DPDK 22.11
//! (`rte_mempool_do_generic_put`/`_get`), described at [`Mempool::put_bulk`]
//! and [`Mempool::get_bulk`]. A thread without a slot uses the store
//! directly.
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
//! `put` (an `Mbuf` dropped without a pool handle) needs two rules:
//!
//! 1. The last access a put makes to the pool is the Release write that
//!    makes its objects count as available: a cache's `len` store, or the
//!    store's `len` `fetch_add` when a put flushes its cache (the cache
//!    `len` is lowered *before* the flushed objects reach the store, so the
//!    count can run short for a moment, never long).
//! 2. The drop reads the store's `len` first, then every cache's, all with
//!    Acquire. A flush lowers its cache's `len` before it raises the
//!    store's, so reading in the opposite order cannot count the flushed
//!    objects twice.
//!
//! So a drop that counts every object has synchronised with the last write
//! of every put, and every put's accesses happen before the free. (Like
//! `Arc`'s own drop, a put's `&self` may outlive its last access to the
//! memory by the return; see rust-lang/rust#55005.)

use crate::Error;
use crate::NumaNode;
use crate::region::{Iova, IovaMode, PageSize, Region};
use crate::slot::{self, MAX_LCORE_SLOTS};
use crate::stack::{MAX_OBJECTS, Stack};
use crate::sync::{Arc, AtomicU32, Ordering, UnsafeCell};
use crossbeam_utils::CachePadded;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::ptr::{self, NonNull};

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

/// Where the objects of one region lie.
#[derive(Debug)]
struct Chunk {
    /// Address of the region's first byte.
    base: usize,
    /// Bytes of the region.
    len: usize,
    /// Index of the first object in the region.
    first: u32,
    /// Objects in the region.
    count: u32,
    /// Objects per page when objects may not straddle pages (PA mode), else
    /// 0 (objects are packed end to end).
    per_page: u32,
    /// log2 of the page size, used when `per_page != 0`.
    page_shift: u32,
    /// The region, in `PoolCore::regions`.
    region: usize,
}

/// One lcore cache. `len` is written only by the slot's owner; `objs` is
/// touched only by it.
struct LcoreCache {
    len: AtomicU32,
    /// The start of this slot's `cache_cap` entries in the pool's cache
    /// memory. The cell marks the entries as owned by the slot holder (and
    /// lets loom check that no two threads touch them at once).
    objs: UnsafeCell<*mut *mut u8>,
}

impl LcoreCache {
    /// Runs `f` on this cache's object array.
    ///
    /// # Safety
    ///
    /// The calling thread holds this cache's slot, and does not call this
    /// again inside `f`.
    unsafe fn with_objs<R>(&self, cap: usize, f: impl FnOnce(&mut [*mut u8]) -> R) -> R {
        self.objs.with_mut(|cell| {
            // SAFETY: `cell` points at this cache's own cell, which holds
            // the array pointer set at creation and never written since.
            let base = unsafe { *cell };
            // SAFETY: `base` starts `cap` initialised entries reserved for
            // this slot alone; the caller holds the slot, so no other
            // reference to them exists while `f` runs.
            let objs = unsafe { std::slice::from_raw_parts_mut(base, cap) };
            f(objs)
        })
    }
}

/// Extra per-pool data of an mbuf pool (DPDK keeps it in the mempool's
/// private area, `rte_pktmbuf_pool_private`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct MbufPoolInfo {
    /// Bytes of private area between the header and the data room.
    pub(crate) priv_size: u16,
    /// Bytes of data room (headroom included).
    pub(crate) data_room: u16,
}

/// The pool itself. Reached through a [`Mempool`] handle, and through the
/// `pool` field of native mbufs (which is why it never moves and is leaked
/// rather than freed while objects are out).
pub(crate) struct PoolCore {
    name: String,
    elt_size: usize,
    stride: usize,
    count: u32,
    cache_size: u32,
    cache_cap: usize,
    store: Stack,
    /// `MAX_LCORE_SLOTS` caches, or none when `cache_size == 0`.
    caches: Box<[CachePadded<LcoreCache>]>,
    /// The object arrays of all caches in one zeroed allocation (so untouched
    /// slots cost no physical memory: a large calloc is fresh mmap'd pages).
    cache_mem: Option<NonNull<[*mut u8]>>,
    /// Object index to address.
    objs: Box<[*mut u8]>,
    /// One per region, sorted by address.
    chunks: Box<[Chunk]>,
    regions: Box<[Region]>,
    pub(crate) mbuf: Option<MbufPoolInfo>,
}

// SAFETY: the raw pointers are addresses in the pool's own regions and
// cache memory, which the core owns and frees only in its destructor.
unsafe impl Send for PoolCore {}
// SAFETY: shared use is through atomics (store, cache lens) and the cache
// arrays, each of which only the thread holding its slot touches (slot
// ownership is unique: crate::slot); everything else is immutable.
unsafe impl Sync for PoolCore {}

impl Drop for PoolCore {
    fn drop(&mut self) {
        if let Some(mem) = self.cache_mem.take() {
            // SAFETY: `mem` came from Box::leak in `PoolCore::new` and is
            // freed here, once; no cache is in use any more (drop has &mut).
            drop(unsafe { Box::from_raw(mem.as_ptr()) });
        }
    }
}

impl PoolCore {
    fn new(config: &MempoolConfig, mbuf: Option<MbufPoolInfo>) -> Result<PoolCore, Error> {
        let stride = validate(config)?;
        // `validate` bounds these: count <= u32::MAX, cache_size <= 512.
        let count = config.count as u32;
        let (regions, chunks, objs) = carve(config, stride, count)?;

        let cache_size = config.cache_size;
        let cache_cap = cache_flush_threshold(cache_size) + cache_size;
        let (caches, cache_mem) = if cache_size == 0 {
            (Box::default(), None)
        } else {
            // vec![null; n] allocates zeroed memory (calloc): the pages of
            // slots nobody claims are never touched.
            let mem: Box<[*mut u8]> =
                vec![ptr::null_mut(); MAX_LCORE_SLOTS * cache_cap].into_boxed_slice();
            let mem = NonNull::from(Box::leak(mem));
            let base = mem.cast::<*mut u8>().as_ptr();
            let caches = (0..MAX_LCORE_SLOTS)
                .map(|k| {
                    CachePadded::new(LcoreCache {
                        len: AtomicU32::new(0),
                        objs: UnsafeCell::new(base.wrapping_add(k * cache_cap)),
                    })
                })
                .collect();
            (caches, Some(mem))
        };

        Ok(PoolCore {
            name: config.name.clone(),
            elt_size: config.elt_size,
            stride,
            count,
            cache_size: cache_size as u32,
            cache_cap,
            store: Stack::full(count),
            caches,
            cache_mem,
            objs,
            chunks,
            regions,
            mbuf,
        })
    }

    /// The calling thread's cache, if it holds a slot and the pool has caches.
    #[inline]
    fn cache(&self) -> Option<&LcoreCache> {
        if self.caches.is_empty() {
            return None;
        }
        let slot = slot::current()?;
        self.caches.get(slot.index()).map(|c| &**c)
    }

    /// The index of the object starting at `p`, or `None` when `p` is not
    /// the start of an object of this pool.
    pub(crate) fn index_of(&self, p: *const u8) -> Option<u32> {
        let addr = p.addr();
        let chunk = match &*self.chunks {
            [only] => only,
            chunks => {
                let after = chunks.partition_point(|c| c.base <= addr);
                chunks.get(after.checked_sub(1)?)?
            }
        };
        let off = addr.wrapping_sub(chunk.base);
        if off >= chunk.len {
            return None;
        }
        let (slot, rem) = if chunk.per_page == 0 {
            (off / self.stride, off % self.stride)
        } else {
            let page = off >> chunk.page_shift;
            let in_page = off & ((1 << chunk.page_shift) - 1);
            (
                page * chunk.per_page as usize + in_page / self.stride,
                in_page % self.stride,
            )
        };
        if rem != 0 || slot >= chunk.count as usize {
            return None;
        }
        Some(chunk.first + slot as u32)
    }

    fn chunk_of(&self, p: *const u8) -> Option<&Chunk> {
        let addr = p.addr();
        self.chunks
            .iter()
            .find(|c| addr.wrapping_sub(c.base) < c.len)
    }

    pub(crate) fn iova_of(&self, p: *const u8) -> Option<Iova> {
        self.regions[self.chunk_of(p)?.region].iova(p)
    }

    fn store_get(&self, out: &mut [*mut u8]) -> Result<(), PoolExhausted> {
        let objs = &self.objs;
        if self
            .store
            .pop_bulk(out.len(), |i, idx| out[i] = objs[idx as usize])
        {
            Ok(())
        } else {
            Err(PoolExhausted)
        }
    }

    /// Pushes `objs` to the store; its final `len` update is the last
    /// access to the pool (module docs).
    fn store_put(&self, objs: &[*mut u8]) {
        // A pointer that is not an object of this pool breaks put's
        // contract (debug builds assert on entry); dropping it here keeps
        // the store consistent in release builds.
        self.store
            .push_bulk(objs.iter().filter_map(|&p| self.index_of(p)));
    }

    /// See [`Mempool::get_bulk`].
    pub(crate) fn get_bulk(&self, out: &mut [*mut u8]) -> Result<(), PoolExhausted> {
        let n = out.len();
        if n == 0 {
            return Ok(());
        }
        let Some(cache) = self.cache() else {
            return self.store_get(out);
        };
        let cache_size = self.cache_size as usize;
        if n >= cache_size {
            return self.store_get(out);
        }
        let fill = |objs: &mut [*mut u8]| {
            // Relaxed: only this thread writes this len.
            let mut len = cache.len.load(Ordering::Relaxed) as usize;
            if len < n {
                // Refill to cache_size + n in one bulk pop, then hand out n:
                // the cache ends at cache_size (DPDK 22.11). The array holds
                // it: len + req = cache_size + n < 2 * cache_size <= cap.
                let req = cache_size + n - len;
                let table = &self.objs;
                let dst = &mut objs[len..len + req];
                if !self
                    .store
                    .pop_bulk(req, |i, idx| dst[i] = table[idx as usize])
                {
                    // Not enough for a refill: maybe enough for the request.
                    return self.store_get(out);
                }
                len += req;
            }
            // Hot objects first: the most recently put are on top.
            for (o, &obj) in out.iter_mut().zip(objs[len - n..len].iter().rev()) {
                *o = obj;
            }
            // Release: readers of the statistics see the cache's contents.
            cache.len.store((len - n) as u32, Ordering::Release);
            Ok(())
        };
        // SAFETY: `cache()` returned the cache of the slot this thread
        // holds, and `fill` does not re-enter the cache.
        unsafe { cache.with_objs(self.cache_cap, fill) }
    }

    /// See [`Mempool::put_bulk`].
    ///
    /// # Safety
    ///
    /// As [`Mempool::put_bulk`].
    pub(crate) unsafe fn put_bulk(&self, objs: &[*mut u8]) {
        debug_assert!(
            objs.iter().all(|&p| self.index_of(p).is_some()),
            "mempool {}: put of a pointer that is not an object of this pool",
            self.name
        );
        let n = objs.len();
        if n == 0 {
            return;
        }
        let Some(cache) = self.cache() else {
            return self.store_put(objs);
        };
        let cache_size = self.cache_size as usize;
        if n > cache_size {
            return self.store_put(objs);
        }
        let flush_at = cache_flush_threshold(cache_size);
        let add = |cached: &mut [*mut u8]| {
            // Relaxed: only this thread writes this len.
            let len = cache.len.load(Ordering::Relaxed) as usize;
            // len < flush_at at rest and n <= cache_size: fits in cap.
            let end = len + n;
            cached[len..end].copy_from_slice(objs);
            if end >= flush_at {
                // Keep cache_size, flush the rest. The len goes down first
                // (module docs, rule 1), Release for the statistics readers.
                cache.len.store(cache_size as u32, Ordering::Release);
                self.store_put(&cached[cache_size..end]);
            } else {
                // The last access to the pool (module docs, rule 1).
                cache.len.store(end as u32, Ordering::Release);
            }
        };
        // SAFETY: `cache()` returned the cache of the slot this thread
        // holds, and `add` does not re-enter the cache.
        unsafe { cache.with_objs(self.cache_cap, add) }
    }

    fn flush_cache(&self) {
        let Some(cache) = self.cache() else {
            return;
        };
        let flush = |cached: &mut [*mut u8]| {
            let len = cache.len.load(Ordering::Relaxed) as usize;
            if len > 0 {
                cache.len.store(0, Ordering::Release);
                self.store_put(&cached[..len]);
            }
        };
        // SAFETY: as in `put_bulk`.
        unsafe { cache.with_objs(self.cache_cap, flush) }
    }

    fn available(&self) -> usize {
        // The store first, then the caches (module docs, rule 2).
        let mut n = self.store.len() as usize;
        for c in self.caches.iter() {
            // Acquire: pairs with the owner's Release stores.
            n += c.len.load(Ordering::Acquire) as usize;
        }
        // Concurrent gets move objects from the store to a cache, and a
        // count taken meanwhile can see them in both: clamp.
        n.min(self.count as usize)
    }
}

/// Checks the configuration and returns the object stride.
fn validate(c: &MempoolConfig) -> Result<usize, Error> {
    let bad = |why: String| Err(Error::Config(format!("mempool {:?}: {why}", c.name)));
    if c.count == 0 {
        return bad("count must be at least 1".into());
    }
    if c.count > MAX_OBJECTS {
        return bad(format!(
            "count {} exceeds {MAX_OBJECTS} objects (object indices are 32-bit)",
            c.count
        ));
    }
    if c.elt_size == 0 {
        return bad("elt_size must be at least 1 byte".into());
    }
    if !c.align.is_power_of_two() || c.align < 8 || c.align > MEMPOOL_MAX_ALIGN {
        return bad(format!(
            "align {} must be a power of two from 8 to {MEMPOOL_MAX_ALIGN}",
            c.align
        ));
    }
    if c.cache_size > MEMPOOL_CACHE_MAX_SIZE {
        return bad(format!(
            "cache_size {} exceeds MEMPOOL_CACHE_MAX_SIZE ({MEMPOOL_CACHE_MAX_SIZE})",
            c.cache_size
        ));
    }
    if cache_flush_threshold(c.cache_size) > c.count {
        return bad(format!(
            "cache_size {} needs at least {} objects (1.5 x cache size, as rte_mempool_create), \
             count is {}",
            c.cache_size,
            cache_flush_threshold(c.cache_size),
            c.count
        ));
    }
    let Some(stride) = c.elt_size.checked_next_multiple_of(c.align) else {
        return bad(format!("elt_size {} overflows when aligned", c.elt_size));
    };
    if c.count.checked_mul(stride).is_none() {
        return bad(format!("{} objects of {stride} bytes overflow", c.count));
    }
    if c.iova_mode == Some(IovaMode::Pa) && stride > c.page_size.bytes() {
        return bad(format!(
            "{stride}-byte objects straddle {} pages, which are not IOVA-contiguous in PA mode",
            c.page_size
        ));
    }
    Ok(stride)
}

/// Bytes of a region holding `objs` objects laid out for `page` pages: per
/// page (no straddling) for hugepages, end to end for 4 KiB pages. The
/// per-page size is the larger, so a region sized so holds `objs` either
/// way, whatever IOVA mode it ends up in.
fn region_len_for(objs: usize, stride: usize, page: PageSize) -> usize {
    if page.is_huge() && stride <= page.bytes() {
        let per_page = page.bytes() / stride;
        objs.div_ceil(per_page) * page.bytes()
    } else {
        objs * stride
    }
}

/// Maps the regions and lays the objects out in them.
#[allow(clippy::type_complexity)]
fn carve(
    c: &MempoolConfig,
    stride: usize,
    count: u32,
) -> Result<(Box<[Region]>, Box<[Chunk]>, Box<[*mut u8]>), Error> {
    let total = count as usize;
    let per_region = match c.max_region_len {
        None => total,
        Some(max) => {
            let page = c.page_size.bytes();
            let n = if c.page_size.is_huge() && stride <= page {
                (max / page) * (page / stride)
            } else {
                max / stride
            };
            if n == 0 {
                return Err(Error::Config(format!(
                    "mempool {:?}: max_region_len {max} holds no {stride}-byte object",
                    c.name
                )));
            }
            n
        }
    };

    let mut regions = Vec::new();
    let mut chunks = Vec::new();
    let mut objs = Vec::with_capacity(total);
    while objs.len() < total {
        let want = per_region.min(total - objs.len());
        let region = Region::builder(region_len_for(want, stride, c.page_size))
            .page_size(c.page_size)
            .numa_node(c.numa_node)
            .hugetlbfs(c.hugetlbfs.clone())
            .allow_fallback(c.allow_fallback)
            .iova_mode(c.iova_mode)
            .build()?;
        let page = region.page_size();
        // In PA mode an object may not straddle a page boundary: the next
        // page need not be physically adjacent (rte_mempool_populate_iova
        // likewise skips to the next page).
        let per_page = if region.iova_mode() == IovaMode::Pa {
            if stride > page.bytes() {
                return Err(Error::Config(format!(
                    "mempool {:?}: {stride}-byte objects straddle {page} pages, which are not \
                     IOVA-contiguous in PA mode; use larger pages or IOVA mode VA",
                    c.name
                )));
            }
            page.bytes() / stride
        } else {
            0
        };
        let fits = if per_page == 0 {
            region.len() / stride
        } else {
            region.len() / page.bytes() * per_page
        };
        // Sized by region_len_for, which covers both layouts.
        debug_assert!(fits >= want);
        let n = want.min(fits);
        let base = region.as_ptr();
        for k in 0..n {
            let off = match k.checked_div(per_page) {
                None => k * stride,
                Some(page_no) => page_no * page.bytes() + (k % per_page) * stride,
            };
            objs.push(base.wrapping_add(off));
        }
        chunks.push(Chunk {
            base: base.addr(),
            len: region.len(),
            first: (objs.len() - n) as u32,
            count: n as u32,
            per_page: per_page as u32,
            page_shift: page.shift(),
            region: regions.len(),
        });
        regions.push(region);
    }
    chunks.sort_by_key(|c| c.base);
    Ok((
        regions.into_boxed_slice(),
        chunks.into_boxed_slice(),
        objs.into_boxed_slice(),
    ))
}

/// Frees the core when the last handle goes, or leaks it (module docs).
struct CoreOwner {
    core: NonNull<PoolCore>,
}

// SAFETY: CoreOwner only frees the core, which is Send and Sync.
unsafe impl Send for CoreOwner {}
// SAFETY: as above; `&CoreOwner` gives no access at all.
unsafe impl Sync for CoreOwner {}

impl Drop for CoreOwner {
    fn drop(&mut self) {
        let (name, outstanding) = {
            // SAFETY: the core lives until this function frees it.
            let core = unsafe { self.core.as_ref() };
            let available = core.available();
            (core.name.clone(), core.count as usize - available)
        };
        if outstanding == 0 {
            // No handle is left (this is the last Arc), every object is back
            // and every put that returned one has made its last access
            // (module docs), so nothing can reach the core again.
            // SAFETY: `core` came from Box::leak in `Mempool::with_info`.
            drop(unsafe { Box::from_raw(self.core.as_ptr()) });
        } else {
            tracing::warn!(
                pool = %name,
                outstanding,
                "mempool dropped with objects still in use: leaking its memory so that they \
                 stay valid"
            );
        }
    }
}

/// A pool of fixed-size, DMA-able objects. A cheap handle: clones share
/// the pool; `Send` and `Sync`.
pub struct Mempool {
    core: NonNull<PoolCore>,
    owner: Arc<CoreOwner>,
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

    /// Takes one object as an owning [`DmaBuf`], returned on drop.
    pub fn alloc_buf(&self) -> Option<DmaBuf> {
        let ptr = self.get()?;
        Some(DmaBuf {
            pool: self.clone(),
            ptr,
        })
    }
}

/// An object of a [`Mempool`], owned: derefs to its `elt_size` bytes, knows
/// its IOVA, and returns to the pool on drop. For the storage layer (NVMe,
/// io_uring): the buffer must outlive any I/O it is given to, which the
/// submitting API's `unsafe` contract states.
pub struct DmaBuf {
    pool: Mempool,
    ptr: NonNull<u8>,
}

// SAFETY: a DmaBuf owns its object exclusively (like a Box<[u8]>), and the
// pool handle is Send.
unsafe impl Send for DmaBuf {}
// SAFETY: `&DmaBuf` only reads the bytes, as `&Box<[u8]>` would.
unsafe impl Sync for DmaBuf {}

impl DmaBuf {
    /// The IOVA of the first byte: what a device is given.
    pub fn iova(&self) -> Iova {
        // A DmaBuf's pointer is always an object of its pool, which has an
        // IOVA; the fallback is never taken.
        self.pool
            .iova_of(self.ptr.as_ptr())
            .unwrap_or(Iova(self.ptr.as_ptr().addr() as u64))
    }

    /// The first byte.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// The first byte, for writing (by the CPU or a device).
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The pool the buffer came from.
    pub fn pool(&self) -> &Mempool {
        &self.pool
    }
}

impl Deref for DmaBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: the object is `elt_size` bytes, owned by this DmaBuf
        // alone, and initialised (regions start zeroed; put requires
        // initialised bytes).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.pool.elt_size()) }
    }
}

impl DerefMut for DmaBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.pool.elt_size()) }
    }
}

impl fmt::Debug for DmaBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmaBuf")
            .field("pool", &self.pool.name())
            .field("ptr", &self.ptr)
            .field("len", &self.pool.elt_size())
            .finish()
    }
}

impl Drop for DmaBuf {
    fn drop(&mut self) {
        // SAFETY: the object came from this pool, is returned once (the
        // DmaBuf is dropped once) and nobody uses it after the DmaBuf.
        unsafe { self.pool.put(self.ptr) }
    }
}

#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(all(test, not(loom)))]
mod tests;
