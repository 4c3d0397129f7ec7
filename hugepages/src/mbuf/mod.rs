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

mod buffer;
mod pool;

pub use buffer::Mbuf;
pub use pool::{MbufPool, MbufPoolConfig};

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

/// Checksum offload flags, with DPDK 22.11's values (rte_mbuf_core.h), for
/// ports that verify checksums on receive and compute them on transmit.
pub mod offload {
    /// What the NIC found of the IPv4 header checksum (two bits).
    pub const RX_IP_CKSUM_MASK: u64 = (1 << 4) | (1 << 7);
    /// The IPv4 header checksum is wrong.
    pub const RX_IP_CKSUM_BAD: u64 = 1 << 4;
    /// The IPv4 header checksum is right.
    pub const RX_IP_CKSUM_GOOD: u64 = 1 << 7;
    /// The IPv4 header's field is not its checksum, but the header was
    /// verified (both bits).
    pub const RX_IP_CKSUM_NONE: u64 = RX_IP_CKSUM_MASK;
    /// What the NIC found of the TCP or UDP checksum (two bits).
    pub const RX_L4_CKSUM_MASK: u64 = (1 << 3) | (1 << 8);
    /// The TCP or UDP checksum is wrong.
    pub const RX_L4_CKSUM_BAD: u64 = 1 << 3;
    /// The TCP or UDP checksum is right.
    pub const RX_L4_CKSUM_GOOD: u64 = 1 << 8;
    /// The TCP or UDP field is not the checksum (a virtual device left it
    /// out), but the data was verified (both bits).
    pub const RX_L4_CKSUM_NONE: u64 = RX_L4_CKSUM_MASK;
    /// Compute the TCP checksum (the field holds the pseudo-header sum).
    pub const TX_TCP_CKSUM: u64 = 1 << 52;
    /// Compute the UDP checksum (the field holds the pseudo-header sum).
    pub const TX_UDP_CKSUM: u64 = 3 << 52;
    /// Compute the IPv4 header checksum (the field holds 0).
    pub const TX_IP_CKSUM: u64 = 1 << 54;
    /// The packet is IPv4.
    pub const TX_IPV4: u64 = 1 << 55;
}

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

impl Default for MbufHeader {
    /// A detached header as `rte_pktmbuf_reset` leaves one: one reference,
    /// one segment, no port, no buffer, no pool, everything else zero.
    fn default() -> Self {
        MbufHeader {
            buf_addr: ptr::null_mut(),
            buf_iova: 0,
            data_off: 0,
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
            buf_len: 0,
            pool: ptr::null_mut(),
            next: ptr::null_mut(),
            tx_offload: 0,
            shinfo: ptr::null_mut(),
            priv_size: 0,
            timesync: 0,
            dynfield1: [0; 9],
        }
    }
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

#[cfg(all(test, not(loom)))]
mod tests;
