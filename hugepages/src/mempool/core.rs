//! The pool itself: objects carved from regions, the shared ring store,
//! and the per-lcore caches with rte_mempool's put and get rules.

use super::*;

/// Objects a put that holds a pointer not of the pool hands the store per
/// reservation (a stack buffer of 512 bytes).
const STORE_PUT_CHUNK: usize = 64;

/// The layout of a pool that is one region of objects packed end to end
/// with a power-of-two stride (in PA mode too when the stride divides the
/// page): a pointer is an object when its offset is below the objects' span
/// and has no bits below the stride, so a put checks a burst with no
/// search and no division.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Packed {
    /// The first object.
    base: *mut u8,
    /// `count * stride`: offsets below it are inside the objects.
    span: usize,
    /// `stride - 1`: an object's offset has none of these bits.
    mask: usize,
}

impl Packed {
    /// Whether every pointer is the start of an object, in one pass with
    /// no branch per pointer (so it vectorises with SSE2, which has no
    /// unsigned 64-bit compare): `off < span` iff `off - span` wraps to a
    /// value with the top bit set (both being below 2^63, which the second
    /// check ensures for the offsets and allocation limits ensure for
    /// `span`), so the AND of those keeps the top bit only if every offset
    /// is in range; the OR of the offsets has none of the `mask` bits only
    /// if every offset is a multiple of the stride.
    #[inline]
    fn all_objects(&self, objs: &[*mut u8]) -> bool {
        let base = self.base.addr();
        let (mut below, mut bits) = (usize::MAX, 0usize);
        for &p in objs {
            let off = p.addr().wrapping_sub(base);
            below &= off.wrapping_sub(self.span);
            bits |= off;
        }
        let top = 1 << (usize::BITS - 1);
        below & top != 0 && bits & (top | self.mask) == 0
    }
}

/// Where the objects of one region lie.
#[derive(Debug)]
pub(crate) struct Chunk {
    /// Address of the region's first byte.
    pub(crate) base: usize,
    /// Bytes of the region.
    pub(crate) len: usize,
    /// Index of the first object in the region.
    pub(crate) first: u32,
    /// Objects in the region.
    pub(crate) count: u32,
    /// Objects per page when objects may not straddle pages (PA mode) and
    /// the stride does not divide the page, else 0 (objects are packed end
    /// to end, which is the same layout when the stride divides the page).
    pub(crate) per_page: u32,
    /// log2 of the page size, used when `per_page != 0`.
    pub(crate) page_shift: u32,
    /// The region, in `PoolCore::regions`.
    pub(crate) region: usize,
}

/// One lcore cache. `len` is written only by the slot's owner; `objs` is
/// touched only by it.
pub(crate) struct LcoreCache {
    pub(crate) len: AtomicU32,
    /// The start of this slot's `cache_cap` entries in the pool's cache
    /// memory. The cell marks the entries as owned by the slot holder (and
    /// lets loom check that no two threads touch them at once).
    pub(crate) objs: UnsafeCell<*mut *mut u8>,
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
    pub(crate) name: String,
    pub(crate) elt_size: usize,
    pub(crate) stride: usize,
    /// Division by `stride`, for [`PoolCore::index_of`].
    pub(crate) stride_div: Divisor,
    /// The fast layout, when the pool has it.
    pub(crate) packed: Option<Packed>,
    pub(crate) count: u32,
    pub(crate) cache_size: u32,
    pub(crate) cache_cap: usize,
    pub(crate) store: Ring<*mut u8>,
    /// `MAX_LCORE_SLOTS` caches, or none when `cache_size == 0`.
    pub(crate) caches: Box<[CachePadded<LcoreCache>]>,
    /// The object arrays of all caches in one zeroed allocation (so untouched
    /// slots cost no physical memory: a large calloc is fresh mmap'd pages).
    pub(crate) cache_mem: Option<NonNull<[*mut u8]>>,
    /// Object index to address.
    pub(crate) objs: Box<[*mut u8]>,
    /// One per region, sorted by address.
    pub(crate) chunks: Box<[Chunk]>,
    pub(crate) regions: Box<[Region]>,
    pub(crate) mbuf: Option<MbufPoolInfo>,
}

// SAFETY: the raw pointers are addresses in the pool's own regions and
// cache memory, which the core owns and frees only in its destructor.
unsafe impl Send for PoolCore {}
// Shared use goes through the store (its Sync argument is in ring.rs), the
// cache lens (atomics) and the cache arrays; `Packed::base` is only read and
// offset, never written through here; everything else is immutable.
// SAFETY: each cache array is touched only by the thread holding its slot, and slot ownership is unique (crate::slot).
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
    pub(crate) fn new(
        config: &MempoolConfig,
        mbuf: Option<MbufPoolInfo>,
    ) -> Result<PoolCore, Error> {
        let stride = validate(config)?;
        // `validate` bounds these: count <= u32::MAX, cache_size <= 512.
        let count = config.count as u32;
        let (regions, chunks, objs) = carve(config, stride, count)?;

        let packed = match &*chunks {
            [only] if only.per_page == 0 && stride.is_power_of_two() => Some(Packed {
                base: regions[only.region].as_ptr(),
                span: only.count as usize * stride,
                mask: stride - 1,
            }),
            _ => None,
        };
        let Some(store) = Ring::filled(objs.len(), |i| objs[i], ptr::null_mut()) else {
            return Err(Error::Config(format!(
                "mempool {:?}: {count} objects need a ring larger than this target's address \
                 space",
                config.name
            )));
        };

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
            stride_div: Divisor::new(stride),
            packed,
            count,
            cache_size: cache_size as u32,
            cache_cap,
            store,
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
    pub(crate) fn cache(&self) -> Option<&LcoreCache> {
        if self.caches.is_empty() {
            return None;
        }
        let slot = slot::current()?;
        self.caches.get(slot.index()).map(|c| &**c)
    }

    /// The index of the object starting at `p`, or `None` when `p` is not
    /// the start of an object of this pool.
    #[inline]
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
        let slot = if chunk.per_page == 0 {
            self.stride_div.exact(off)?
        } else {
            let page = off >> chunk.page_shift;
            let in_page = off & ((1 << chunk.page_shift) - 1);
            page * chunk.per_page as usize + self.stride_div.exact(in_page)?
        };
        if slot >= chunk.count as usize {
            return None;
        }
        Some(chunk.first + slot as u32)
    }

    /// The index of the object holding the byte at `p` (its first byte or
    /// any of its `elt_size`), or `None` when no object holds it.
    pub(crate) fn index_containing(&self, p: *const u8) -> Option<u32> {
        let chunk = self.chunk_of(p)?;
        let off = p.addr() - chunk.base;
        let (slot, in_obj) = if chunk.per_page == 0 {
            (off / self.stride, off % self.stride)
        } else {
            let page = off >> chunk.page_shift;
            let in_page = off & ((1 << chunk.page_shift) - 1);
            let (k, rest) = (in_page / self.stride, in_page % self.stride);
            if k >= chunk.per_page as usize {
                return None;
            }
            (page * chunk.per_page as usize + k, rest)
        };
        if in_obj >= self.elt_size || slot >= chunk.count as usize {
            return None;
        }
        Some(chunk.first + slot as u32)
    }

    pub(crate) fn chunk_of(&self, p: *const u8) -> Option<&Chunk> {
        let addr = p.addr();
        self.chunks
            .iter()
            .find(|c| addr.wrapping_sub(c.base) < c.len)
    }

    pub(crate) fn iova_of(&self, p: *const u8) -> Option<Iova> {
        self.regions[self.chunk_of(p)?.region].iova(p)
    }

    pub(crate) fn store_get(&self, out: &mut [*mut u8]) -> Result<(), PoolExhausted> {
        if self.store_take(out) {
            Ok(())
        } else {
            Err(PoolExhausted)
        }
    }

    /// Fills `out` from the store, all or nothing.
    #[inline]
    fn store_take(&self, out: &mut [*mut u8]) -> bool {
        self.store.get_bulk(out.len(), |i, p| out[i] = p)
    }

    /// Puts `objs` in the store; its final `prod.tail` store is the last
    /// access to the pool (module docs).
    #[inline]
    pub(crate) fn store_put(&self, objs: &[*mut u8]) {
        if let Some(packed) = self.packed
            && packed.all_objects(objs)
        {
            self.store.put_bulk(objs.iter().copied());
            return;
        }
        self.store_put_searched(objs);
    }

    /// [`PoolCore::store_put`] in the general layout (each pointer looked
    /// up among the regions), or with a pointer that is not an object of
    /// this pool, which breaks put's contract (debug builds assert on
    /// entry): dropping it here keeps the store consistent in release
    /// builds. Out of line, so that the packed path above needs no stack
    /// buffer.
    #[inline(never)]
    fn store_put_searched(&self, objs: &[*mut u8]) {
        if objs.iter().all(|&p| self.index_of(p).is_some()) {
            self.store.put_bulk(objs.iter().copied());
            return;
        }
        // The objects among them go to the ring STORE_PUT_CHUNK at a time.
        let mut buf = [ptr::null_mut(); STORE_PUT_CHUNK];
        for part in objs.chunks(STORE_PUT_CHUNK) {
            let mut n = 0;
            let objects = part.iter().filter(|&&p| self.index_of(p).is_some());
            for (slot, &p) in buf.iter_mut().zip(objects) {
                *slot = p;
                n += 1;
            }
            self.store.put_bulk(buf[..n].iter().copied());
        }
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
                if !self.store_take(&mut objs[len..len + req]) {
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

    pub(crate) fn flush_cache(&self) {
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

    pub(crate) fn available(&self) -> usize {
        // The store first, then the caches (module docs, rule 2).
        let mut n = self.store.len();
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
pub(crate) fn validate(c: &MempoolConfig) -> Result<usize, Error> {
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
pub(crate) fn region_len_for(objs: usize, stride: usize, page: PageSize) -> usize {
    if page.is_huge() && stride <= page.bytes() {
        let per_page = page.bytes() / stride;
        objs.div_ceil(per_page) * page.bytes()
    } else {
        objs * stride
    }
}

/// Maps the regions and lays the objects out in them.
#[allow(clippy::type_complexity)]
pub(crate) fn carve(
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
            // A stride that divides the page leaves no gap at page ends:
            // the packed layout, whose index arithmetic is cheaper.
            per_page: if per_page != 0 && page.bytes() % stride != 0 {
                per_page as u32
            } else {
                0
            },
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
pub(crate) struct CoreOwner {
    pub(crate) core: NonNull<PoolCore>,
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
