//! Hugepage memory for data-plane applications.
//!
//! A `Region` is a mapped span of hugepages (or, when none can be had, 4 KiB
//! pages with transparent-hugepage advice, and the reason says so); every
//! byte of it has an IOVA. A `Mempool` carves fixed-size objects out of
//! regions and hands them out in bulk with a per-lcore cache, rte_mempool's
//! model; an `Mbuf` is the packet buffer built on it.
#![deny(unsafe_op_in_unsafe_fn)]

mod error;
pub mod sync;
pub mod system;

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
