//! [`MbufPool`]: a mempool of mbufs, as `rte_pktmbuf_pool_create` makes.

use super::*;

/// The configuration of an [`MbufPool`] (`rte_pktmbuf_pool_create`'s
/// arguments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MbufPoolConfig {
    /// The pool's name.
    pub name: String,
    /// Number of mbufs (default [`MBUF_POOL_DEFAULT_COUNT`]).
    pub count: usize,
    /// Per-lcore cache (default [`MEMPOOL_CACHE_SIZE`]).
    pub cache_size: usize,
    /// Bytes of buffer per mbuf, headroom included, at most 65535 (default
    /// [`MBUF_DEFAULT_BUF_SIZE`]).
    pub data_room: usize,
    /// Bytes of private area per mbuf, a multiple of [`MBUF_PRIV_ALIGN`]
    /// (default 0).
    pub priv_size: usize,
    /// The NUMA node (default: none).
    pub numa_node: Option<NumaNode>,
    /// The page size to ask for (default 2 MiB).
    pub page_size: PageSize,
    /// Whether 4 KiB pages will do (default true).
    pub allow_fallback: bool,
}

impl Default for MbufPoolConfig {
    fn default() -> Self {
        Self {
            name: "mbuf_pool".into(),
            count: MBUF_POOL_DEFAULT_COUNT,
            cache_size: MEMPOOL_CACHE_SIZE,
            data_room: MBUF_DEFAULT_BUF_SIZE,
            priv_size: 0,
            numa_node: None,
            page_size: PageSize::Size2M,
            allow_fallback: true,
        }
    }
}

/// A pool of packet buffers: a [`Mempool`] of `[header 128 B][private
/// area][data room]` objects, each header initialised once at creation
/// (`rte_pktmbuf_pool_create`). Clones share the pool.
#[derive(Clone)]
pub struct MbufPool {
    pub(crate) pool: Mempool,
}

impl fmt::Debug for MbufPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MbufPool")
            .field("pool", &self.pool)
            .field("data_room", &self.data_room())
            .field("priv_size", &self.priv_size())
            .finish()
    }
}

impl MbufPool {
    /// Creates the pool and initialises every header.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a data room over 65535 bytes or a private size
    /// that is not a multiple of 8 (or over 65528); the errors of
    /// [`Mempool::new`].
    pub fn new(config: MbufPoolConfig) -> Result<MbufPool, Error> {
        let bad = |why: String| Err(Error::Config(format!("mbuf pool {:?}: {why}", config.name)));
        let Ok(data_room) = u16::try_from(config.data_room) else {
            return bad(format!(
                "data_room {} exceeds 65535 (buf_len is 16 bits)",
                config.data_room
            ));
        };
        let priv_size = match u16::try_from(config.priv_size) {
            Ok(p) if config.priv_size.is_multiple_of(MBUF_PRIV_ALIGN) => p,
            _ => {
                return bad(format!(
                    "priv_size {} must be a multiple of {MBUF_PRIV_ALIGN} below 65536",
                    config.priv_size
                ));
            }
        };
        let buf_off = MBUF_HEADER_SIZE + config.priv_size;
        let mempool = Mempool::with_info(
            &MempoolConfig {
                name: config.name.clone(),
                count: config.count,
                elt_size: buf_off + config.data_room,
                // Headers are cache-line aligned (rte_mbuf is __rte_cache_aligned).
                align: 64,
                cache_size: config.cache_size,
                numa_node: config.numa_node,
                page_size: config.page_size,
                allow_fallback: config.allow_fallback,
                ..MempoolConfig::default()
            },
            Some(MbufPoolInfo {
                priv_size,
                data_room,
            }),
        )?;
        let core = mempool.core_ptr().as_ptr().cast::<c_void>();
        for obj in mempool.objects() {
            // Objects are IOVA-contiguous, so the buffer's IOVA is the
            // object's plus the offset.
            let obj_iova = mempool.iova_of(obj).map_or(obj.addr() as u64, |i| i.0);
            let header = MbufHeader {
                buf_addr: obj.wrapping_add(buf_off),
                buf_iova: obj_iova + buf_off as u64,
                data_off: data_room.min(PKTMBUF_HEADROOM as u16),
                buf_len: data_room,
                pool: core,
                priv_size: NATIVE_PRIV_SIZE_TAG,
                ..MbufHeader::default()
            };
            // SAFETY: `obj` is a 64-byte aligned object of at least 128
            // bytes in the new pool, which nobody else can reach yet.
            unsafe { obj.cast::<MbufHeader>().write(header) };
        }
        Ok(MbufPool { pool: mempool })
    }

    fn info(&self) -> MbufPoolInfo {
        // Always Some for a pool built by MbufPool::new.
        self.pool.core().mbuf.unwrap_or(MbufPoolInfo {
            priv_size: 0,
            data_room: 0,
        })
    }

    /// Takes one mbuf, reset: empty, headroom [`PKTMBUF_HEADROOM`]
    /// (`rte_pktmbuf_alloc`).
    pub fn alloc(&self) -> Option<Mbuf> {
        let obj = self.pool.get()?;
        let mut m = Mbuf { hdr: obj.cast() };
        m.reset();
        Some(m)
    }

    /// Takes `n` mbufs, all or nothing, with one bulk get, resets each and
    /// adds them to `out` (`rte_pktmbuf_alloc_bulk`). Bursts up to 512 use
    /// no heap memory.
    ///
    /// # Errors
    ///
    /// [`PoolExhausted`] when fewer than `n` are free; `out` is unchanged.
    pub fn alloc_bulk(&self, n: usize, out: &mut impl Extend<Mbuf>) -> Result<(), PoolExhausted> {
        // Uninitialised: only the `n` entries used are written, not 4 KiB
        // per call.
        let mut stack = [const { MaybeUninit::<*mut u8>::uninit() }; ALLOC_BULK_STACK];
        let mut heap = Vec::new();
        let objs: &mut [*mut u8] = if n <= ALLOC_BULK_STACK {
            let part = &mut stack[..n];
            for o in part.iter_mut() {
                o.write(ptr::null_mut());
            }
            let part: *mut [MaybeUninit<*mut u8>] = part;
            // SAFETY: every element of `part` was just initialised, and
            // MaybeUninit<T> has the layout of T.
            unsafe { &mut *(part as *mut [*mut u8]) }
        } else {
            heap.resize(n, ptr::null_mut());
            &mut heap
        };
        self.pool.get_bulk(objs)?;
        out.extend(objs.iter().filter_map(|&p| {
            let mut m = Mbuf {
                hdr: NonNull::new(p)?.cast(),
            };
            m.reset();
            Some(m)
        }));
        Ok(())
    }

    /// Mbufs in the pool, free or not.
    pub fn capacity(&self) -> usize {
        self.pool.capacity()
    }

    /// Free mbufs (see [`Mempool::available`]).
    pub fn available(&self) -> usize {
        self.pool.available()
    }

    /// Mbufs handed out and not yet freed.
    pub fn in_use(&self) -> usize {
        self.pool.in_use()
    }

    /// Moves the calling thread's cached mbufs to the shared store.
    pub fn flush_cache(&self) {
        self.pool.flush_cache();
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        self.pool.name()
    }

    /// Bytes of buffer per mbuf.
    pub fn data_room(&self) -> usize {
        self.info().data_room.into()
    }

    /// Bytes of private area per mbuf.
    pub fn priv_size(&self) -> usize {
        self.info().priv_size.into()
    }

    /// The regions the mbufs are carved from.
    pub fn regions(&self) -> &[Region] {
        self.pool.regions()
    }

    /// The mbuf whose object (header, private area or buffer) holds the
    /// byte at `ptr`: its index, from 0 to `capacity()`, and its header.
    /// `None` outside every mbuf of this pool. How a backend maps an
    /// address the kernel or a device hands back (AF_XDP's rx and
    /// completion rings) to the mbuf it lent.
    pub fn mbuf_containing(&self, ptr: *const u8) -> Option<(usize, NonNull<MbufHeader>)> {
        self.pool
            .object_containing(ptr)
            .map(|(i, obj)| (i, obj.cast()))
    }
}
