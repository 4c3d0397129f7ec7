//! The packet buffer: [`Mbuf`], from an [`MbufPool`].
//!
//! ```
//! use hugepages::mbuf::{MbufPool, MbufPoolConfig};
//!
//! let pool = MbufPool::new(MbufPoolConfig {
//!     name: "rx".into(),
//!     count: 512,
//!     cache_size: 32,
//!     ..MbufPoolConfig::default()
//! })?;
//! let mut m = pool.alloc().expect("a free mbuf");
//! m.append(4)?.copy_from_slice(b"data");
//! m.prepend(2)?.copy_from_slice(b"hd");
//! assert_eq!(m.data(), b"hddata");
//! m.adj(2)?;                        // strip the 2-byte header again
//! assert_eq!(m.data(), b"data");
//! assert!(m.append(1 << 15).is_err()); // past the buffer: an error, no panic
//! drop(m);                          // back to the pool
//! assert_eq!(pool.in_use(), 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # One header for two backends
//!
//! [`MbufHeader`] is, field for field, DPDK 22.11's `struct rte_mbuf`
//! (lib/mbuf/rte_mbuf_core.h, built with `RTE_IOVA_AS_PA`, the default).
//! The DPDK backend hands out real `rte_mbuf`s behind the same [`Mbuf`]
//! API, without a copy, so every accessor here reads the offsets DPDK's
//! drivers write; const assertions pin each offset.
//!
//! A native mbuf (from an [`MbufPool`]) and a DPDK one are told apart by
//! `priv_size`: native pools store [`NATIVE_PRIV_SIZE_TAG`], an odd value,
//! which `rte_pktmbuf_pool_create` can never produce (it refuses a private
//! size that is not a multiple of `RTE_MBUF_PRIV_ALIGN`, 8). The native
//! pool keeps the real private size itself. A foreign mbuf is freed through
//! the hook registered with [`register_foreign_ops`].
//!
//! # Single segment
//!
//! Native mbufs have one segment (`nb_segs == 1`, `next` null, `pkt_len ==
//! data_len`). The accessors of a foreign multi-segment mbuf see its first
//! segment; its free hook frees the chain.

use crate::mempool::{MbufPoolInfo, Mempool, MempoolConfig, PoolCore, PoolExhausted};
use crate::region::{Iova, PageSize, Region};
use crate::{Error, NumaNode};
use core::ffi::c_void;
use core::mem::{ManuallyDrop, MaybeUninit, offset_of};
use std::fmt;
use std::ptr::{self, NonNull};
use std::sync::OnceLock;

/// Bytes of the mbuf header (`sizeof(struct rte_mbuf)`: two cache lines).
pub const MBUF_HEADER_SIZE: usize = 128;

/// Headroom a fresh mbuf leaves before its data (`RTE_PKTMBUF_HEADROOM`,
/// DPDK's default build config).
pub const PKTMBUF_HEADROOM: usize = 128;

/// Default data room: 2 KiB of packet plus the headroom
/// (`RTE_MBUF_DEFAULT_BUF_SIZE`, rte_mbuf_core.h).
pub const MBUF_DEFAULT_BUF_SIZE: usize = 2048 + PKTMBUF_HEADROOM;

/// Alignment the private area size must have (`RTE_MBUF_PRIV_ALIGN`).
pub const MBUF_PRIV_ALIGN: usize = 8;

/// `priv_size` of every native mbuf: odd, so never a DPDK mbuf's (module docs).
pub const NATIVE_PRIV_SIZE_TAG: u16 = 0xFFFF;

/// Default per-lcore cache of an mbuf pool (`MEMPOOL_CACHE_SIZE` in DPDK's
/// examples/l2fwd/main.c).
pub const MEMPOOL_CACHE_SIZE: usize = 256;

/// Default number of mbufs (the minimum DPDK's l2fwd creates, 8192U).
pub const MBUF_POOL_DEFAULT_COUNT: usize = 8192;

/// "No port" (`RTE_MBUF_PORT_INVALID`).
pub const MBUF_PORT_INVALID: u16 = u16::MAX;

/// The one offload flag that survives a reset: the buffer is external
/// (`RTE_MBUF_F_EXTERNAL`, bit 61, rte_mbuf_core.h).
pub const MBUF_F_EXTERNAL: u64 = 1 << 61;

/// Frees pending in `free_bulk` before a flush (`RTE_PKTMBUF_FREE_PENDING_SZ`,
/// lib/mbuf/rte_mbuf.c).
const FREE_PENDING: usize = 64;

/// `alloc_bulk` requests up to this size use a stack array (the largest
/// burst a cache serves); larger ones allocate a temporary vector.
const ALLOC_BULK_STACK: usize = 512;

/// The mbuf header: the layout of DPDK 22.11's `struct rte_mbuf`, field for
/// field (module docs say why). Reached read-only through
/// [`Mbuf::header`]; [`Mbuf`]'s methods keep its invariants.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct MbufHeader {
    /// Virtual address of the buffer (after the private area).
    pub buf_addr: *mut u8,
    /// IOVA of the buffer.
    pub buf_iova: u64,
    /// Offset of the data in the buffer: the headroom.
    pub data_off: u16,
    /// Reference count (1: native mbufs are not shared).
    pub refcnt: u16,
    /// Segments in the packet (1 for native mbufs).
    pub nb_segs: u16,
    /// Input port.
    pub port: u16,
    /// Offload flags (`RTE_MBUF_F_*`).
    pub ol_flags: u64,
    /// Packet type (`RTE_PTYPE_*`).
    pub packet_type: u32,
    /// Bytes in all segments.
    pub pkt_len: u32,
    /// Bytes of data in this segment.
    pub data_len: u16,
    /// VLAN TCI, when `RTE_MBUF_F_RX_VLAN` is set.
    pub vlan_tci: u16,
    /// The hash union: `hash[0]` is the RSS hash (`hash.rss`), `hash[1]` the
    /// high word of the FDIR and scheduler views.
    pub hash: [u32; 2],
    /// Outer VLAN TCI.
    pub vlan_tci_outer: u16,
    /// Bytes of the buffer (headroom, data and tailroom).
    pub buf_len: u16,
    /// The pool: a `struct rte_mempool *` for DPDK mbufs, the native pool
    /// for native ones.
    pub pool: *mut c_void,
    /// The next segment (second cache line from here).
    pub next: *mut MbufHeader,
    /// The TX offload bit fields (l2_len, l3_len, l4_len, tso_segsz, ...).
    pub tx_offload: u64,
    /// Shared info of an external buffer.
    pub shinfo: *mut c_void,
    /// Bytes of private area after the header ([`NATIVE_PRIV_SIZE_TAG`] for
    /// native mbufs).
    pub priv_size: u16,
    /// IEEE 1588 timesync flags.
    pub timesync: u16,
    /// Dynamic fields (`rte_mbuf_dynfield_register`).
    pub dynfield1: [u32; 9],
}

// The layout of rte_mbuf in DPDK 22.11 (rte_mbuf_core.h, RTE_IOVA_AS_PA).
const _: () = {
    assert!(size_of::<MbufHeader>() == MBUF_HEADER_SIZE);
    assert!(align_of::<MbufHeader>() == 64);
    assert!(offset_of!(MbufHeader, buf_addr) == 0);
    assert!(offset_of!(MbufHeader, buf_iova) == 8);
    assert!(offset_of!(MbufHeader, data_off) == 16);
    assert!(offset_of!(MbufHeader, refcnt) == 18);
    assert!(offset_of!(MbufHeader, nb_segs) == 20);
    assert!(offset_of!(MbufHeader, port) == 22);
    assert!(offset_of!(MbufHeader, ol_flags) == 24);
    assert!(offset_of!(MbufHeader, packet_type) == 32);
    assert!(offset_of!(MbufHeader, pkt_len) == 36);
    assert!(offset_of!(MbufHeader, data_len) == 40);
    assert!(offset_of!(MbufHeader, vlan_tci) == 42);
    assert!(offset_of!(MbufHeader, hash) == 44);
    assert!(offset_of!(MbufHeader, vlan_tci_outer) == 52);
    assert!(offset_of!(MbufHeader, buf_len) == 54);
    assert!(offset_of!(MbufHeader, pool) == 56);
    assert!(offset_of!(MbufHeader, next) == 64);
    assert!(offset_of!(MbufHeader, tx_offload) == 72);
    assert!(offset_of!(MbufHeader, shinfo) == 80);
    assert!(offset_of!(MbufHeader, priv_size) == 88);
    assert!(offset_of!(MbufHeader, timesync) == 90);
    assert!(offset_of!(MbufHeader, dynfield1) == 92);
};

/// How foreign (DPDK) mbufs are freed: the DPDK backend registers
/// `rte_pktmbuf_free` and `rte_pktmbuf_free_bulk` behind these.
#[derive(Debug)]
pub struct ForeignMbufOps {
    /// Frees one mbuf (and its segment chain).
    ///
    /// The registrant's contract: callable from any thread, with an mbuf
    /// that the caller owns and never touches again.
    pub free: unsafe fn(NonNull<MbufHeader>),
    /// Frees a burst of mbufs, as `free` each.
    pub free_bulk: unsafe fn(&[NonNull<MbufHeader>]),
}

static FOREIGN_OPS: OnceLock<&'static ForeignMbufOps> = OnceLock::new();

/// Registers how foreign mbufs are freed; once per process (the DPDK
/// backend does it when it starts). Registering the same ops again is a
/// no-op.
///
/// # Errors
///
/// [`Error::ForeignOpsAlreadyRegistered`] when other ops are registered.
pub fn register_foreign_ops(ops: &'static ForeignMbufOps) -> Result<(), Error> {
    let current = FOREIGN_OPS.get_or_init(|| ops);
    if ptr::eq(*current, ops) {
        Ok(())
    } else {
        Err(Error::ForeignOpsAlreadyRegistered)
    }
}

/// A refused mbuf length change; nothing was changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MbufError {
    /// `prepend` asked for more than the headroom.
    NoHeadroom {
        /// Bytes asked for.
        requested: usize,
        /// Headroom there is.
        available: usize,
    },
    /// `append` asked for more than the tailroom.
    NoTailroom {
        /// Bytes asked for.
        requested: usize,
        /// Tailroom there is.
        available: usize,
    },
    /// `adj` or `trim` asked to remove more than the data length.
    TooShort {
        /// Bytes asked for.
        requested: usize,
        /// The data length.
        len: usize,
    },
    /// `set_len` asked for more than fits after the headroom.
    ExceedsBuffer {
        /// Length asked for.
        requested: usize,
        /// The most that fits.
        max: usize,
    },
}

impl fmt::Display for MbufError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MbufError::NoHeadroom {
                requested,
                available,
            } => write!(
                f,
                "prepend of {requested} bytes with {available} of headroom"
            ),
            MbufError::NoTailroom {
                requested,
                available,
            } => write!(
                f,
                "append of {requested} bytes with {available} of tailroom"
            ),
            MbufError::TooShort { requested, len } => {
                write!(f, "removing {requested} bytes from {len}")
            }
            MbufError::ExceedsBuffer { requested, max } => {
                write!(
                    f,
                    "length {requested} exceeds the {max} bytes after the headroom"
                )
            }
        }
    }
}

impl std::error::Error for MbufError {}

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
    pool: Mempool,
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
                refcnt: 1,
                nb_segs: 1,
                port: MBUF_PORT_INVALID,
                ol_flags: 0,
                packet_type: 0,
                pkt_len: 0,
                data_len: 0,
                vlan_tci: 0,
                hash: [0; 2],
                vlan_tci_outer: 0,
                buf_len: data_room,
                pool: core,
                next: ptr::null_mut(),
                tx_offload: 0,
                shinfo: ptr::null_mut(),
                priv_size: NATIVE_PRIV_SIZE_TAG,
                timesync: 0,
                dynfield1: [0; 9],
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
}

/// A packet buffer, owned: one pointer to its header. Dropping it returns
/// it to its pool (through the lcore cache when the thread holds a slot).
/// `Send` (a buffer moves between lcores through rings), not `Clone`.
///
/// Transparent over its header pointer: an array of `Mbuf`s is an array of
/// `struct rte_mbuf *`, so the DPDK backend's drivers read and write a
/// burst in place.
#[repr(transparent)]
pub struct Mbuf {
    hdr: NonNull<MbufHeader>,
}

// SAFETY: an Mbuf owns its buffer exclusively; freeing it is thread-safe
// (native pools are; foreign ops are required to be).
unsafe impl Send for Mbuf {}
// SAFETY: `&Mbuf` only reads the header and the data.
unsafe impl Sync for Mbuf {}

impl fmt::Debug for Mbuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mbuf")
            .field("hdr", &self.hdr)
            .field("native", &self.is_native())
            .field("len", &self.len())
            .field("headroom", &self.headroom())
            .field("tailroom", &self.tailroom())
            .field("port", &self.port())
            .finish()
    }
}

impl Mbuf {
    /// Takes ownership of an mbuf given by a backend.
    ///
    /// # Safety
    ///
    /// `hdr` points to an initialised mbuf that the caller owns and hands
    /// over: `buf_addr` is valid for `buf_len` initialised bytes,
    /// `data_off + data_len <= buf_len`, and either it is native
    /// (`priv_size` is [`NATIVE_PRIV_SIZE_TAG`], from an [`Mbuf::into_raw`]
    /// of a pool that exists) or it is a foreign mbuf that the ops given to
    /// [`register_foreign_ops`] can free (and they are registered before it
    /// is dropped).
    pub unsafe fn from_raw(hdr: NonNull<MbufHeader>) -> Mbuf {
        Mbuf { hdr }
    }

    /// Gives up ownership without freeing: the caller now owns the mbuf
    /// (and frees it by [`Mbuf::from_raw`] and drop, or a backend's own way).
    pub fn into_raw(self) -> NonNull<MbufHeader> {
        ManuallyDrop::new(self).hdr
    }

    /// The header's address.
    pub fn as_ptr(&self) -> NonNull<MbufHeader> {
        self.hdr
    }

    /// The header, read-only.
    pub fn header(&self) -> &MbufHeader {
        // SAFETY: an Mbuf owns a valid, initialised header (from_raw's
        // contract, or a native pool's initialisation).
        unsafe { self.hdr.as_ref() }
    }

    fn header_mut(&mut self) -> &mut MbufHeader {
        // SAFETY: as in `header`, and `&mut self` makes it exclusive.
        unsafe { self.hdr.as_mut() }
    }

    /// Whether the mbuf comes from a native [`MbufPool`] (not DPDK).
    pub fn is_native(&self) -> bool {
        self.header().priv_size == NATIVE_PRIV_SIZE_TAG
    }

    /// The native pool, for a native mbuf.
    fn native_pool(&self) -> Option<&PoolCore> {
        if !self.is_native() {
            return None;
        }
        let core = self.header().pool.cast::<PoolCore>().cast_const();
        // SAFETY: a native header's `pool` is its PoolCore, which is never
        // freed while one of its objects is out (mempool, "Dropping the pool").
        Some(unsafe { &*core })
    }

    /// The packet data: `len()` bytes after the headroom.
    pub fn data(&self) -> &[u8] {
        let h = self.header();
        let start = h.buf_addr.wrapping_add(h.data_off.into());
        // SAFETY: data_off + data_len <= buf_len within the initialised
        // buffer (the type's invariant, kept by every mutator), owned by us.
        unsafe { std::slice::from_raw_parts(start, h.data_len.into()) }
    }

    /// The packet data, writable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        let h = self.header();
        let (start, len) = (h.buf_addr.wrapping_add(h.data_off.into()), h.data_len);
        // SAFETY: as in `data`, and `&mut self` makes it exclusive.
        unsafe { std::slice::from_raw_parts_mut(start, len.into()) }
    }

    /// Bytes of data (`data_len`).
    pub fn len(&self) -> usize {
        self.header().data_len.into()
    }

    /// Whether there is no data.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes in the packet (`pkt_len`; equal to `len()` for one segment).
    pub fn pkt_len(&self) -> usize {
        self.header().pkt_len as usize
    }

    /// Free bytes before the data.
    pub fn headroom(&self) -> usize {
        self.header().data_off.into()
    }

    /// Free bytes after the data.
    pub fn tailroom(&self) -> usize {
        let h = self.header();
        usize::from(h.buf_len) - usize::from(h.data_off) - usize::from(h.data_len)
    }

    /// Bytes of buffer: headroom, data and tailroom.
    pub fn buf_len(&self) -> usize {
        self.header().buf_len.into()
    }

    /// The IOVA of the first data byte.
    pub fn data_iova(&self) -> Iova {
        let h = self.header();
        Iova(h.buf_iova + u64::from(h.data_off))
    }

    /// The input port.
    pub fn port(&self) -> u16 {
        self.header().port
    }

    /// Sets the input port.
    pub fn set_port(&mut self, port: u16) {
        self.header_mut().port = port;
    }

    /// The RSS hash (`hash.rss`).
    pub fn rss_hash(&self) -> u32 {
        self.header().hash[0]
    }

    /// Sets the RSS hash.
    pub fn set_rss_hash(&mut self, hash: u32) {
        self.header_mut().hash[0] = hash;
    }

    /// The offload flags.
    pub fn ol_flags(&self) -> u64 {
        self.header().ol_flags
    }

    /// Sets the offload flags.
    pub fn set_ol_flags(&mut self, flags: u64) {
        self.header_mut().ol_flags = flags;
    }

    /// The packet type.
    pub fn packet_type(&self) -> u32 {
        self.header().packet_type
    }

    /// Sets the packet type.
    pub fn set_packet_type(&mut self, ptype: u32) {
        self.header_mut().packet_type = ptype;
    }

    /// The VLAN TCI.
    pub fn vlan_tci(&self) -> u16 {
        self.header().vlan_tci
    }

    /// Sets the VLAN TCI.
    pub fn set_vlan_tci(&mut self, tci: u16) {
        self.header_mut().vlan_tci = tci;
    }

    /// Resets the mbuf to empty with the default headroom, as
    /// `rte_pktmbuf_reset` does (the RSS hash and private area are kept).
    pub fn reset(&mut self) {
        let h = self.header_mut();
        h.next = ptr::null_mut();
        h.pkt_len = 0;
        h.tx_offload = 0;
        h.vlan_tci = 0;
        h.vlan_tci_outer = 0;
        h.nb_segs = 1;
        h.port = MBUF_PORT_INVALID;
        h.ol_flags &= MBUF_F_EXTERNAL;
        h.packet_type = 0;
        h.data_off = h.buf_len.min(PKTMBUF_HEADROOM as u16);
        h.data_len = 0;
    }

    /// The private area between the header and the buffer.
    pub fn priv_area(&self) -> &[u8] {
        let len = self.priv_len();
        let start = self
            .hdr
            .as_ptr()
            .cast::<u8>()
            .wrapping_add(MBUF_HEADER_SIZE);
        // SAFETY: the private area follows the header in the same object,
        // initialised (native: zeroed region; foreign: from_raw's
        // contract), and owned with the mbuf.
        unsafe { std::slice::from_raw_parts(start, len) }
    }

    /// The private area, writable.
    pub fn priv_area_mut(&mut self) -> &mut [u8] {
        let len = self.priv_len();
        let start = self
            .hdr
            .as_ptr()
            .cast::<u8>()
            .wrapping_add(MBUF_HEADER_SIZE);
        // SAFETY: as in `priv_area`, and `&mut self` makes it exclusive.
        unsafe { std::slice::from_raw_parts_mut(start, len) }
    }

    fn priv_len(&self) -> usize {
        match self.native_pool() {
            Some(core) => core.mbuf.map_or(0, |i| i.priv_size.into()),
            None => self.header().priv_size.into(),
        }
    }

    /// Extends the data by `n` bytes at the front, into the headroom, and
    /// returns them (`rte_pktmbuf_prepend`).
    ///
    /// # Errors
    ///
    /// [`MbufError::NoHeadroom`] when `n` exceeds the headroom.
    pub fn prepend(&mut self, n: usize) -> Result<&mut [u8], MbufError> {
        let headroom = self.headroom();
        if n > headroom {
            return Err(MbufError::NoHeadroom {
                requested: n,
                available: headroom,
            });
        }
        // n <= data_off < 2^16, and data_len + n <= buf_len < 2^16.
        let n16 = n as u16;
        let h = self.header_mut();
        h.data_off -= n16;
        h.data_len += n16;
        h.pkt_len = h.pkt_len.wrapping_add(n16.into());
        Ok(&mut self.data_mut()[..n])
    }

    /// Extends the data by `n` bytes at the end, into the tailroom, and
    /// returns them (`rte_pktmbuf_append`).
    ///
    /// # Errors
    ///
    /// [`MbufError::NoTailroom`] when `n` exceeds the tailroom.
    pub fn append(&mut self, n: usize) -> Result<&mut [u8], MbufError> {
        let tailroom = self.tailroom();
        if n > tailroom {
            return Err(MbufError::NoTailroom {
                requested: n,
                available: tailroom,
            });
        }
        let n16 = n as u16;
        let h = self.header_mut();
        h.data_len += n16;
        h.pkt_len = h.pkt_len.wrapping_add(n16.into());
        let len = self.len();
        Ok(&mut self.data_mut()[len - n..])
    }

    /// Removes `n` bytes from the front of the data (`rte_pktmbuf_adj`).
    ///
    /// # Errors
    ///
    /// [`MbufError::TooShort`] when `n` exceeds the data length.
    pub fn adj(&mut self, n: usize) -> Result<(), MbufError> {
        let len = self.len();
        if n > len {
            return Err(MbufError::TooShort { requested: n, len });
        }
        let n16 = n as u16;
        let h = self.header_mut();
        h.data_off += n16;
        h.data_len -= n16;
        h.pkt_len = h.pkt_len.wrapping_sub(n16.into());
        Ok(())
    }

    /// Removes `n` bytes from the end of the data (`rte_pktmbuf_trim`).
    ///
    /// # Errors
    ///
    /// [`MbufError::TooShort`] when `n` exceeds the data length.
    pub fn trim(&mut self, n: usize) -> Result<(), MbufError> {
        let len = self.len();
        if n > len {
            return Err(MbufError::TooShort { requested: n, len });
        }
        let n16 = n as u16;
        let h = self.header_mut();
        h.data_len -= n16;
        h.pkt_len = h.pkt_len.wrapping_sub(n16.into());
        Ok(())
    }

    /// Sets the data length (and the packet length) to `len`, keeping the
    /// headroom: for a buffer a device or `read` filled in place.
    ///
    /// # Errors
    ///
    /// [`MbufError::ExceedsBuffer`] when `len` does not fit after the headroom.
    pub fn set_len(&mut self, len: usize) -> Result<(), MbufError> {
        let max = self.buf_len() - self.headroom();
        if len > max {
            return Err(MbufError::ExceedsBuffer {
                requested: len,
                max,
            });
        }
        let h = self.header_mut();
        h.data_len = len as u16;
        h.pkt_len = len as u32;
        Ok(())
    }

    /// Frees mbufs in bulk, as `rte_pktmbuf_free_bulk`: consecutive mbufs
    /// of the same native pool go back with one put, consecutive foreign
    /// ones with one `free_bulk` call.
    pub fn free_bulk(mbufs: impl IntoIterator<Item = Mbuf>) {
        let mut batch = Batch {
            hdrs: [NonNull::dangling(); FREE_PENDING],
            n: 0,
            pool: None,
        };
        for m in mbufs {
            let pool = m.native_pool().map(ptr::from_ref);
            if batch.n == FREE_PENDING || (batch.n > 0 && batch.pool != Some(pool)) {
                batch.flush();
            }
            batch.pool = Some(pool);
            batch.hdrs[batch.n] = m.into_raw();
            batch.n += 1;
        }
        batch.flush();
    }
}

/// Pending frees of `Mbuf::free_bulk`, all from one pool (`Some(Some(core))`)
/// or all foreign (`Some(None)`).
struct Batch {
    hdrs: [NonNull<MbufHeader>; FREE_PENDING],
    n: usize,
    pool: Option<Option<*const PoolCore>>,
}

impl Batch {
    fn flush(&mut self) {
        let n = std::mem::replace(&mut self.n, 0);
        if n == 0 {
            return;
        }
        let hdrs = &self.hdrs[..n];
        match self.pool {
            Some(Some(core)) => {
                // SAFETY: `core` is the live pool of these native mbufs
                // (never freed while they are out).
                let core = unsafe { &*core };
                let objs = ptr::from_ref(hdrs) as *const [*mut u8];
                // SAFETY: NonNull<MbufHeader> is a transparent non-null
                // `*const MbufHeader`, laid out as any thin pointer.
                let objs = unsafe { &*objs };
                // SAFETY: each pointer is an mbuf of this pool (a header is
                // its object's start), owned by the batch (taken with
                // into_raw) and returned once.
                unsafe { core.put_bulk(objs) };
            }
            _ => free_foreign(hdrs),
        }
    }
}

/// Frees foreign mbufs through the registered ops. Without ops, a foreign
/// mbuf exists through a broken `from_raw` contract: debug builds stop
/// here; release builds leak the mbufs rather than guess.
fn free_foreign(hdrs: &[NonNull<MbufHeader>]) {
    match FOREIGN_OPS.get() {
        Some(ops) => {
            // SAFETY: from_raw's contract: these are foreign mbufs the
            // registered ops can free, owned by us and not used again.
            unsafe { (ops.free_bulk)(hdrs) }
        }
        None => {
            debug_assert!(
                false,
                "a foreign mbuf was dropped but no ForeignMbufOps are registered"
            );
            tracing::error!(
                count = hdrs.len(),
                "foreign mbufs dropped with no ForeignMbufOps registered: leaked"
            );
        }
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        match self.native_pool() {
            Some(core) => {
                let obj = self.hdr.as_ptr().cast::<u8>();
                // SAFETY: a native mbuf's header is the start of an object of
                // `core`, owned by this Mbuf and returned once, here.
                unsafe { core.put_bulk(&[obj]) }
            }
            None => match FOREIGN_OPS.get() {
                Some(ops) => {
                    // SAFETY: from_raw's contract: a foreign mbuf the ops can
                    // free, owned by us and not used again.
                    unsafe { (ops.free)(self.hdr) }
                }
                None => free_foreign(&[self.hdr]),
            },
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
