//! Hugepage memory for data-plane applications.
//!
//! - [`region`]: a [`Region`](region::Region) is a mapped span of hugepages
//!   (anonymous `MAP_HUGETLB` or a hugetlbfs file, optionally bound to a
//!   NUMA node), or, when none can be had, 4 KiB pages with
//!   transparent-hugepage advice, and the reason says so. Every byte of it
//!   has an IOVA (physical address with privilege, else virtual).
//! - [`mempool`]: a [`Mempool`](mempool::Mempool) carves fixed-size objects
//!   out of regions and hands them out in bulk through per-lcore caches in
//!   front of a shared MP/MC ring, `rte_mempool`'s model.
//! - [`slot`]: which lcore cache a thread owns.
//! - [`mbuf`]: the [`Mbuf`](mbuf::Mbuf) packet buffer, laid out like DPDK's
//!   `rte_mbuf` so that the DPDK backend can hand out real ones behind the
//!   same API.
//! - [`system`]: what the kernel offers (hugepage pools, hugetlbfs mounts).
//!
//! ```
//! use hugepages::mbuf::{MbufPool, MbufPoolConfig};
//!
//! // An lcore thread claims a cache slot; others may skip this.
//! let _slot = hugepages::slot::claim()?;
//! let pool = MbufPool::new(MbufPoolConfig { count: 1024, cache_size: 64, ..Default::default() })?;
//! let mut burst = Vec::with_capacity(32);
//! pool.alloc_bulk(32, &mut burst).expect("32 free mbufs");
//! hugepages::mbuf::Mbuf::free_bulk(burst.drain(..));
//! assert_eq!(pool.in_use(), 0);
//! # Ok::<(), hugepages::Error>(())
//! ```
// Unsafe code is denied here and allowed, with a reason, on exactly the
// modules that meet memory, the kernel or a foreign ABI: the list in
// docs/architecture.md is this crate's `#[allow(unsafe_code)]` lines.
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

mod error;
#[allow(unsafe_code)]
pub mod mbuf;
#[allow(unsafe_code)]
pub mod mempool;
#[allow(unsafe_code)]
pub mod region;
pub mod slot;
pub mod sync;
pub mod system;

#[cfg(all(test, not(loom)))]
mod test_support;

pub use error::Error;

use serde::Serialize;

/// A NUMA node number, as the kernel numbers them under
/// `/sys/devices/system/node/nodeN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
pub struct NumaNode(pub u32);

impl core::fmt::Display for NumaNode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "node{}", self.0)
    }
}
