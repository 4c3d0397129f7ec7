//! What a plan's builder hands its planner: each overridden value with
//! where it came from.

use crate::lcore::IdlePolicy;
use crate::topology::CpuId;

/// An overridden value and where it came from (`burst(8)` or
/// `DATAPLANE_BURST=8`), so that a refusal names the source.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Setting<T> {
    pub(super) value: T,
    pub(super) source: String,
}

/// Every field a plan can have overridden; `None` keeps the default.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Overrides {
    pub(super) cpus: Option<Setting<Vec<CpuId>>>,
    pub(super) app_lcores: Option<Setting<usize>>,
    pub(super) io_lcores_per_node: Option<Setting<usize>>,
    pub(super) accel_lcores: Option<Setting<usize>>,
    pub(super) affinity: Option<Setting<bool>>,
    pub(super) numa_aware: Option<Setting<bool>>,
    pub(super) idle: Option<Setting<IdlePolicy>>,
    pub(super) burst: Option<Setting<usize>>,
    pub(super) queue_capacity: Option<Setting<usize>>,
    pub(super) mbufs_per_node: Option<Setting<usize>>,
    pub(super) mempool_cache: Option<Setting<usize>>,
    pub(super) hugepages: Option<Setting<bool>>,
}
