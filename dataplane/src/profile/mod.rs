//! Profiles and plans: from a [`Topology`] to the lcores a runtime starts,
//! where each is pinned, how it idles, and how big its rings and pools are.
//!
//! A [`Profile`] names a trade-off; [`Plan::for_profile`] applies the rules
//! below to a topology; [`Plan::builder`] lets any field be overridden, in
//! code or from the environment. A plan is always produced on a machine
//! with at least one usable CPU; an override that cannot be honoured is
//! refused with [`Error::Config`],
//! [`Error::Cpu`] or
//! [`Error::TooManyLcores`], never ignored.
//!
//! ```
//! use dataplane::profile::{Plan, Profile};
//! use dataplane::lcore::Role;
//! use dataplane::topology::Topology;
//!
//! // 24 cores on 2 NUMA nodes with 2 GPUs, no SMT.
//! let topo = Topology::synthetic(24, 2, 1, 2);
//! let plan = Plan::for_profile(&topo, Profile::Production)?;
//! assert_eq!(plan.main().map(|l| l.role), Some(Role::Main));
//! assert_eq!(plan.io_lcores().count(), 4); // 2 per node
//! assert_eq!(plan.accel_lcores().count(), 2); // 1 per GPU
//! assert_eq!(plan.app_lcores().count(), 16); // the rest, less one for the OS
//!
//! let small = Plan::builder(&topo, Profile::Production).app_lcores(4).burst(16).build()?;
//! assert_eq!(small.app_lcores().count(), 4);
//! # Ok::<(), dataplane::Error>(())
//! ```
//!
//! # Profiles
//!
//! | profile       | hardware threads       | idle                        | burst | ring capacity | housekeeping core | app lcores |
//! | ------------- | ---------------------- | --------------------------- | ----- | ------------- | ----------------- | ---------- |
//! | `production`  | one per physical core  | adaptive ([`IdlePolicy::ADAPTIVE`]) | 32 | 4096  | yes, at >= 8 cores | the rest   |
//! | `low_latency` | one per physical core  | busy poll                   | 8     | 1024          | yes, at >= 8 cores | the rest   |
//! | `performance` | all                    | busy poll                   | 64    | 16384         | no                | the rest   |
//! | `power`       | one per physical core  | sleep 1 ms when idle        | 32    | 4096          | yes, at >= 8 cores | half the rest |
//!
//! Burst 32 is DPDK's `MAX_PKT_BURST` (examples/l2fwd); 8 trades throughput
//! for the latency of a small batch, 64 the other way.
//!
//! # Planning rules
//!
//! These are the defaults; every one can be overridden.
//!
//! 1. **CPUs**: only usable CPUs (online ∩ affinity mask ∩ cgroup cpuset).
//!    Except under `performance`, one hardware thread per physical core is
//!    used and its SMT siblings are left idle, so that two polling loops do
//!    not share a core's pipeline. "Cores" below counts these slots. An
//!    explicit CPU list (`cpus`, `DATAPLANE_CPUS`) is used exactly as given:
//!    every CPU in it must be usable, siblings are not dropped and no
//!    housekeeping core is kept back.
//! 2. **Isolation**: lcores go on isolated CPUs (`isolcpus=`, `nohz_full=`)
//!    first; the main lcore stays on a housekeeping (non-isolated) CPU.
//! 3. **Housekeeping**: with at least 8 cores, one housekeeping core (the
//!    lowest) is left to the OS for interrupts and daemons, except under
//!    `performance`.
//! 4. **Main lcore**: one, id 0, on the lowest remaining housekeeping core.
//! 5. **I/O lcores**: 2 per NUMA node with 16 cores or more, 1 per node
//!    with 4 or more, else none, in which case application lcores poll their own NIC
//!    queues and NVMe queue pairs (the plan's notes say so). Each node gets
//!    the same number, placed on that node.
//! 6. **Accelerator lcores**: one per GPU, on the GPU's NUMA node when the
//!    kernel knows it, else on the node with the most free cores.
//! 7. **Application lcores**: all remaining cores (`power`: half of them),
//!    at least 1, spread evenly over the nodes.
//! 8. **Too few cores**: when main + I/O + accelerator + 1 application
//!    lcore do not fit, default accelerator lcores are dropped first (the
//!    application lcores dispatch to the GPU themselves), then default I/O
//!    lcores; counts that were set explicitly are kept and, if they cannot
//!    fit, refused with `TooManyLcores`. If even main + 1 application lcore
//!    do not fit (one core), they share it: [`Plan::shared_cores`] is set
//!    and a note says so. With affinity off, threads are not pinned, so any
//!    count is accepted and lcores share cores as needed.
//! 9. **CPU quota**: when the cgroup's `cpu.max` is below the number of
//!    lcores and the idle policy is busy poll, the plan shrinks to
//!    `floor(quota)` cores (at least 1) by rule 8, with a note. Explicit
//!    counts over the quota are kept, with a note that they will be
//!    throttled.
//! 10. **Pools**, sized as DPDK l2fwd's `NB_MBUF`: `mbufs_per_node = max(L *
//!     (1024 rx descriptors + 1024 tx descriptors + burst + mempool_cache),
//!     8192)` where L is the largest number of lcores on one node (all
//!     lcores when not NUMA-aware); `mempool_cache = 256`, at most 512
//!     (`RTE_MEMPOOL_CACHE_MAX_SIZE`) and at most `mbufs_per_node / 1.5`
//!     (`rte_mempool_create`'s rule).
//! 11. **NUMA awareness** is on when usable CPUs span more than one node;
//!     **hugepages** are on when the hugepage probe found free pages;
//!     **affinity** (pinning) is on.
//!
//! # Environment
//!
//! [`PlanBuilder::from_env`] applies these variables. An empty value counts
//! as unset; a malformed one is refused with `Error::Config` naming the
//! variable, its value and what is expected.
//!
//! | variable | value | overrides |
//! | --- | --- | --- |
//! | `DATAPLANE_PROFILE` | `production`, `low_latency` (or `low-latency`), `performance`, `power` | the profile, and with it every default |
//! | `DATAPLANE_CPUS` | a CPU list such as `2-5,8` | the CPUs to place lcores on (rule 1) |
//! | `DATAPLANE_APP_LCORES` | integer >= 1 | application lcores |
//! | `DATAPLANE_IO_LCORES_PER_NODE` | integer >= 0 | I/O lcores per NUMA node |
//! | `DATAPLANE_ACCEL_LCORES` | integer >= 0 | accelerator lcores |
//! | `DATAPLANE_AFFINITY` | `on`/`off`, `1`/`0`, `true`/`false`, `yes`/`no` | pinning lcores to their CPU |
//! | `DATAPLANE_NUMA` | as above | NUMA-aware placement and per-node pools |
//! | `DATAPLANE_IDLE` | `busy`, `adaptive`, `sleep:<µs>` | the idle policy |
//! | `DATAPLANE_BURST` | integer >= 1, at most the ring capacity | burst size |
//! | `DATAPLANE_QUEUE_CAPACITY` | power of two >= 2 | ring capacity |
//! | `DATAPLANE_MBUFS` | integer >= 1 | mbufs per NUMA node |
//! | `DATAPLANE_MEMPOOL_CACHE` | integer 0..=512 | per-lcore mempool cache |
//! | `DATAPLANE_HUGEPAGES` | as `DATAPLANE_AFFINITY` | whether pools use hugepages |
//!
//! Builder calls and `from_env` apply in the order written, so
//! `.from_env().burst(8)` forces 8 whatever the environment says, and
//! `.burst(8).from_env()` lets the environment win.

mod builder;
mod overrides;
mod planner;

pub use builder::{PlanBuilder, parse_cpu_list};

use crate::lcore::{IdlePolicy, LcoreConfig, LcoreGroup, LcoreId, Role};
use crate::topology::{CpuId, Topology};
use crate::{Error, NumaNode, Result};
use serde::Serialize;
use std::collections::BTreeSet;
use std::str::FromStr;

/// A named trade-off between latency, throughput and power.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// The default: every core used once, adaptive idling, DPDK's burst.
    Production,
    /// Lowest latency: busy polling, small bursts and rings, SMT siblings
    /// left idle.
    LowLatency,
    /// Highest throughput: every hardware thread, busy polling, big bursts.
    Performance,
    /// Least power: half the application lcores, sleeping when idle.
    Power,
}

impl Profile {
    /// Every profile, in the order `dp-info` shows them.
    pub const ALL: [Profile; 4] = [
        Profile::Production,
        Profile::LowLatency,
        Profile::Performance,
        Profile::Power,
    ];

    /// The name as `DATAPLANE_PROFILE` spells it.
    pub const fn name(self) -> &'static str {
        match self {
            Profile::Production => "production",
            Profile::LowLatency => "low_latency",
            Profile::Performance => "performance",
            Profile::Power => "power",
        }
    }

    /// The idle policy the profile uses unless overridden.
    pub const fn idle(self) -> IdlePolicy {
        match self {
            Profile::Production => IdlePolicy::ADAPTIVE,
            Profile::LowLatency | Profile::Performance => IdlePolicy::BusyPoll,
            Profile::Power => IdlePolicy::Sleep {
                interval: std::time::Duration::from_millis(1),
            },
        }
    }

    /// The burst size the profile uses unless overridden.
    pub const fn burst(self) -> usize {
        match self {
            Profile::LowLatency => 8,
            // DPDK examples/l2fwd MAX_PKT_BURST.
            Profile::Production | Profile::Power => 32,
            Profile::Performance => 64,
        }
    }

    /// The ring capacity the profile uses unless overridden.
    pub const fn queue_capacity(self) -> usize {
        match self {
            Profile::LowLatency => 1024,
            Profile::Production | Profile::Power => 4096,
            Profile::Performance => 16384,
        }
    }

    /// Whether the profile puts lcores on every hardware thread, SMT
    /// siblings included.
    pub const fn all_threads(self) -> bool {
        matches!(self, Profile::Performance)
    }

    /// Whether the profile leaves a housekeeping core to the OS on machines
    /// with at least 8 cores.
    pub const fn keeps_housekeeping_core(self) -> bool {
        !matches!(self, Profile::Performance)
    }
}

impl core::fmt::Display for Profile {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = Error;

    /// Parses a profile name; `low-latency` is accepted for `low_latency`,
    /// and case does not matter.
    fn from_str(s: &str) -> Result<Self> {
        let norm = s.trim().to_ascii_lowercase().replace('-', "_");
        Profile::ALL
            .into_iter()
            .find(|p| p.name() == norm)
            .ok_or_else(|| {
                Error::Config(format!(
                    "unknown profile {s:?}; expected production, low_latency, performance or power"
                ))
            })
    }
}

/// One lcore of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LcorePlan {
    /// Dense from 0; the main lcore is 0.
    pub id: LcoreId,
    /// What it runs.
    pub role: Role,
    /// The CPU it is pinned to (a hint only when the plan's affinity is off).
    pub cpu: CpuId,
    /// The CPU's NUMA node: where its memory and pools come from.
    pub node: NumaNode,
}

/// What a runtime starts: lcores with their roles and CPUs, and the sizes
/// and policies they run with. Build one with [`Plan::for_profile`] or
/// [`Plan::builder`]; see the module docs for the rules.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// The profile the defaults came from.
    pub profile: Profile,
    /// Every lcore, the main lcore first (id 0), then I/O, accelerator and
    /// application lcores.
    pub lcores: Vec<LcorePlan>,
    /// Whether lcores are pinned to their CPU.
    pub affinity: bool,
    /// Whether placement and pools follow NUMA nodes.
    pub numa_aware: bool,
    /// What an lcore does when a poll found nothing.
    pub idle: IdlePolicy,
    /// The most items an lcore moves per `*_burst` call.
    pub burst: usize,
    /// The capacity of each ring between lcores, a power of two.
    pub queue_capacity: usize,
    /// Mbufs in each NUMA node's packet pool.
    pub mbufs_per_node: usize,
    /// Objects in each lcore's mempool cache.
    pub mempool_cache: usize,
    /// Whether pools are backed by hugepages.
    pub hugepages: bool,
    /// Whether some lcores share a CPU (too few cores, or affinity off and
    /// more lcores than CPUs).
    pub shared_cores: bool,
    /// Why the plan is what it is, where it departs from the plain rules.
    pub notes: Vec<String>,
}

impl Plan {
    /// One lcore per lcore of the plan, pinned when the plan has affinity
    /// on, with the plan's idle policy; lcore ids follow the plan's. Add
    /// pollers to it, then launch it.
    pub fn lcore_group(&self) -> LcoreGroup {
        let mut g = LcoreGroup::new().allow_shared_cpus(self.shared_cores || !self.affinity);
        for l in &self.lcores {
            let mut c = LcoreConfig::new(l.role).idle(self.idle);
            if self.affinity {
                c = c.cpu(l.cpu);
            }
            g.add(c);
        }
        g
    }

    /// The plan of `profile` on `topo`, without overrides.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when `topo` has no usable CPU.
    pub fn for_profile(topo: &Topology, profile: Profile) -> Result<Plan> {
        Plan::builder(topo, profile).build()
    }

    /// A builder starting from `profile`'s defaults on `topo`.
    pub fn builder(topo: &Topology, profile: Profile) -> PlanBuilder<'_> {
        PlanBuilder::new(topo, profile)
    }

    /// The main lcore; `None` only if `lcores` was emptied by hand.
    pub fn main(&self) -> Option<&LcorePlan> {
        self.lcores.iter().find(|l| l.role == Role::Main)
    }

    /// The lcores of one role, in id order.
    pub fn lcores_with(&self, role: Role) -> impl Iterator<Item = &LcorePlan> {
        self.lcores.iter().filter(move |l| l.role == role)
    }

    /// The application lcores.
    pub fn app_lcores(&self) -> impl Iterator<Item = &LcorePlan> {
        self.lcores_with(Role::App)
    }

    /// The I/O lcores.
    pub fn io_lcores(&self) -> impl Iterator<Item = &LcorePlan> {
        self.lcores_with(Role::Io)
    }

    /// The accelerator lcores.
    pub fn accel_lcores(&self) -> impl Iterator<Item = &LcorePlan> {
        self.lcores_with(Role::Accel)
    }

    /// How many distinct CPUs the lcores are on.
    pub fn cores_used(&self) -> usize {
        self.lcores
            .iter()
            .map(|l| l.cpu)
            .collect::<BTreeSet<_>>()
            .len()
    }
}

#[cfg(test)]
mod tests;
