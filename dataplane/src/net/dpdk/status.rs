//! What the backend reports about itself: the EAL's state, its pools, and
//! what a shutdown did. Plain data, the same with or without DPDK.

use crate::net::{PortId, QueueId};
use std::sync::Arc;

/// What the running EAL was started with.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EalInfo {
    /// The arguments `rte_eal_init` was given, program name first.
    pub args: Vec<String>,
    /// Whether DPDK's memory is on hugepages (`rte_eal_has_hugepages`).
    pub hugepages: bool,
    /// Why the memory is what it is.
    pub memory: String,
    /// The IOVA mode EAL chose: `"PA"` or `"VA"`.
    pub iova: &'static str,
    /// DPDK's version string (`rte_version()`).
    pub version: String,
    /// How libdpdk is linked (`"shared"` or `"static"`).
    pub link: &'static str,
}

/// Where the EAL stands.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EalState {
    /// Not started yet; it starts at the first port open.
    NotInitialised,
    /// Running.
    Ready(Arc<EalInfo>),
    /// `rte_eal_init` failed, for this reason; DPDK cannot retry in this
    /// process.
    Failed(String),
    /// Torn down by [`shutdown`](super::shutdown).
    ShutDown,
    /// DPDK is not compiled in, for this reason.
    Unavailable(String),
}

/// Where a pool stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PoolState {
    /// Its port is open (for a shared pool: one of its ports).
    InUse,
    /// Its port (every port, when shared) is closed but some of its mbufs
    /// are still out.
    Draining,
    /// Freed, with every mbuf back.
    Freed,
}

/// One pool of the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStatus {
    /// The pool's DPDK name.
    pub name: String,
    /// The port it was made for (for a shared pool, the port that made it).
    pub port: PortId,
    /// The queue it was made for (for a shared pool, the queue that made it).
    pub queue: QueueId,
    /// Whether ports share it (`PortConfig::shared_pool`).
    pub shared: bool,
    /// Mbufs in the pool.
    pub size: u32,
    /// Mbufs free (`rte_mempool_avail_count`, per-lcore caches included);
    /// for a freed pool, the count just before `rte_mempool_free`.
    pub available: u32,
    /// Where it stands.
    pub state: PoolState,
}

/// What [`shutdown`](super::shutdown) did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Pools freed by this shutdown (their mbufs came back after their
    /// port closed).
    pub pools_freed: usize,
    /// Pools left allocated because mbufs of theirs are still out: their
    /// names and how many. Their memory is not returned (freeing it would
    /// let those mbufs be freed into unmapped memory); `rte_eal_cleanup`
    /// still runs.
    pub pools_leaked: Vec<(String, u32)>,
    /// Whether `rte_eal_cleanup` ran now (false when the EAL never
    /// started or was shut down before).
    pub eal_cleaned_up: bool,
}
