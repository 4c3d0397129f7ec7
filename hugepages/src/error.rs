//! The control-path error of the `hugepages` crate.
//!
//! The hot path (mempool get/put, mbuf mutators) does not use this type: it
//! returns [`PoolExhausted`](crate::mempool::PoolExhausted) or
//! [`MbufError`](crate::mbuf::MbufError), which are `Copy` and carry no heap
//! data.

use crate::NumaNode;
use crate::region::PageSize;

/// Everything that can go wrong setting up memory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value was refused; the message says which and why.
    #[error("invalid memory configuration: {0}")]
    Config(String),

    /// A system call failed; `context` says what was being done.
    #[error("{context}: {source}")]
    Os {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// Hugepages were required (fallback disallowed) but none could be had.
    #[error("no {page_size} hugepages: {reason}")]
    HugepagesUnavailable {
        /// The page size that was asked for.
        page_size: PageSize,
        /// Why: none reserved, not enough free, no permission, no pool of
        /// that size, a hugetlbfs mount that does not work.
        reason: String,
    },

    /// Memory could not be bound to the requested NUMA node.
    #[error("cannot bind memory to NUMA {node}: {reason}")]
    Numa {
        /// The node that was asked for.
        node: NumaNode,
        /// Why.
        reason: String,
    },

    /// Physical-address IOVAs were explicitly requested but cannot be given.
    #[error("IOVA mode PA unavailable: {reason}")]
    IovaUnavailable {
        /// Why (4 KiB pages, pagemap hidden without CAP_SYS_ADMIN, ...).
        reason: String,
    },

    /// Every lcore cache slot of the process is taken.
    #[error("all {max} lcore cache slots are claimed")]
    SlotsExhausted {
        /// The number of slots the process has.
        max: usize,
    },

    /// The calling thread already holds an lcore cache slot.
    #[error("this thread already holds lcore cache slot {slot}")]
    SlotAlreadyClaimed {
        /// The slot the thread holds.
        slot: usize,
    },

    /// `register_foreign_ops` was called a second time with different ops.
    #[error("foreign mbuf ops are already registered")]
    ForeignOpsAlreadyRegistered,
}

impl Error {
    /// An [`Error::Os`] from `errno` with a description of what was being done.
    pub(crate) fn os(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Os {
            context: context.into(),
            source,
        }
    }
}
