//! Zero-config hardware detection.
//!
//! [`Topology::detect`] reads what the running machine offers from sysfs and
//! procfs, which every Linux has: CPUs with their cores, packages, NUMA nodes
//! and SMT siblings; which CPUs are online, isolated, allowed to this process
//! and inside its cgroup cpuset; the cgroup CPU quota; memory and hugepages
//! per NUMA node; NICs, NVMe controllers and GPUs with their NUMA node; and
//! a probe of every backend (io_uring, the Vulkan loader, DPDK, SPDK,
//! hugepages, hwloc), each with the reason it can or cannot be used.
//!
//! Nothing here fails because a file is missing or malformed: a value that
//! cannot be read is `None` or empty, and [`Topology::notes`] says what was
//! skipped. The only error is finding no CPU at all.
//!
//! [`Topology::synthetic`] builds a machine of any shape without reading
//! anything, for tests and for exploring what a [`Plan`](crate::profile::Plan)
//! would be on hardware you do not have.
//!
//! ```
//! use dataplane::topology::Topology;
//!
//! let topo = Topology::synthetic(24, 2, 1, 2);
//! assert_eq!(topo.usable_cpus().len(), 24);
//! assert_eq!(topo.nodes.len(), 2);
//! assert_eq!(topo.gpus.len(), 2);
//! ```

mod devices;
pub mod hwloc;
mod pci;
#[allow(unsafe_code)]
mod probe;
mod sysfs;
pub(crate) use sysfs::thread_affinity as sysfs_thread_affinity;

pub use devices::{Gpu, Nic, NvmeController, NvmeNamespace};
pub use hwloc::HwlocInfo;
pub use pci::PciAddress;
pub use probe::{Probes, loop_device as loop_device_probe, netns as netns_probe};

use crate::backend::Probe;

use crate::{NumaNode, Result};
use hugepages::system::{HugepagePool, HugetlbfsMount};
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::Path;

/// A logical CPU number, as the kernel numbers them under
/// `/sys/devices/system/cpu/cpuN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct CpuId(pub u32);

/// The CPUs this process may run on: its affinity mask as it was the
/// first time anything in the framework asked (the first topology
/// detection or lcore launch). Lcores pin themselves, and the main lcore
/// pins the thread that launched it, so a thread's mask later says where
/// that thread runs, not which CPUs the process may use; DPDK's EAL
/// likewise takes the affinity at init. A `taskset` or cgroup restriction
/// in force at start is honoured.
///
/// # Errors
/// [`crate::Error::Io`] when `sched_getaffinity` fails.
pub fn process_affinity() -> crate::Result<Vec<CpuId>> {
    sysfs::affinity().map_err(|e| crate::Error::io("sched_getaffinity", e.into()))
}

/// The io_uring probe of [`Topology::detect`] on its own (the sysctl, then
/// a NOP round trip), for backends that need io_uring without the rest of
/// the machine's detection.
pub fn io_uring_probe() -> Probe {
    probe::io_uring(Path::new("/"))
}

impl core::fmt::Display for CpuId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "cpu{}", self.0)
    }
}

/// One logical CPU (a hardware thread).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cpu {
    /// The kernel's CPU number.
    pub id: CpuId,
    /// `topology/core_id`: the core number within its package, when known.
    /// Not unique across packages; use [`Cpu::core_key`] to group threads.
    pub core: Option<u32>,
    /// `topology/physical_package_id`: the socket, when known.
    pub package: Option<u32>,
    /// The NUMA node whose `cpulist` holds this CPU (node 0 when the kernel
    /// has no NUMA support).
    pub node: NumaNode,
    /// The hardware threads of the same physical core, this one included,
    /// lowest first (`topology/thread_siblings_list`).
    pub siblings: Vec<CpuId>,
    /// Listed in `/sys/devices/system/cpu/online`.
    pub online: bool,
    /// Listed in `/sys/devices/system/cpu/isolated` (`isolcpus=`) or in
    /// `nohz_full`: the kernel keeps its own work off it.
    pub isolated: bool,
    /// In this process's affinity mask (`sched_getaffinity`); `true` when
    /// the mask could not be read.
    pub allowed: bool,
    /// In this process's cgroup cpuset; `true` when there is no cpuset.
    pub in_cpuset: bool,
}

impl Cpu {
    /// Online, allowed by the affinity mask and inside the cgroup cpuset: a
    /// thread of this process can be pinned here.
    pub fn usable(&self) -> bool {
        self.online && self.allowed && self.in_cpuset
    }

    /// Names the physical core this thread belongs to: its lowest sibling.
    /// Two CPUs with the same key share a core (SMT).
    pub fn core_key(&self) -> CpuId {
        self.siblings.first().copied().unwrap_or(self.id)
    }
}

/// One NUMA node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// The node number.
    pub id: NumaNode,
    /// Its CPUs (`nodeN/cpulist`).
    pub cpus: Vec<CpuId>,
    /// `MemTotal` from `nodeN/meminfo`, in bytes.
    pub mem_total: Option<u64>,
    /// `MemFree` from `nodeN/meminfo`, in bytes.
    pub mem_free: Option<u64>,
    /// Hugepage pools reserved on this node, one per page size.
    pub hugepages: Vec<HugepagePool>,
}

/// The cgroup this process runs in, as far as CPUs are concerned.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Cgroup {
    /// 2 for the unified hierarchy, 1 for the legacy controllers, `None`
    /// when no CPU controller was found.
    pub version: Option<u8>,
    /// The cgroup's path inside its hierarchy, from `/proc/self/cgroup`.
    pub path: Option<String>,
    /// The CPUs of the cgroup cpuset (`cpuset.cpus.effective`, or
    /// `cpuset.effective_cpus` on v1); `None` when there is no cpuset limit
    /// to read.
    pub cpuset: Option<Vec<CpuId>>,
    /// The CPU bandwidth limit in CPUs (`cpu.max` "150000 100000" is 1.5),
    /// the smallest along the path to the root; `None` when unlimited.
    pub cpu_quota: Option<f64>,
}

/// Hugepages machine-wide.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Hugepages {
    /// One pool per supported page size, smallest first.
    pub pools: Vec<HugepagePool>,
    /// The kernel's default hugepage size in bytes.
    pub default_size: Option<usize>,
    /// Mounted hugetlbfs file systems.
    pub mounts: Vec<HugetlbfsMount>,
}

impl Hugepages {
    /// Free hugepage bytes over every size.
    pub fn free_bytes(&self) -> u64 {
        self.pools.iter().map(HugepagePool::free_bytes).sum()
    }
}

/// What the machine offers a data-plane application. See the module docs.
#[derive(Debug, Clone, Serialize)]
pub struct Topology {
    /// The kernel release (`/proc/sys/kernel/osrelease`).
    pub kernel: Option<String>,
    /// The CPU model name from `/proc/cpuinfo`.
    pub cpu_model: Option<String>,
    /// Every present CPU, lowest id first, offline ones included.
    pub cpus: Vec<Cpu>,
    /// This process's affinity mask, `None` when it was not read.
    pub affinity: Option<Vec<CpuId>>,
    /// The cgroup's cpuset and CPU quota.
    pub cgroup: Cgroup,
    /// NUMA nodes, lowest first; one node 0 holding every CPU on a kernel
    /// without NUMA.
    pub nodes: Vec<Node>,
    /// Hugepage pools, default size and hugetlbfs mounts.
    pub hugepages: Hugepages,
    /// Network interfaces other than `lo`.
    pub nics: Vec<Nic>,
    /// NVMe controllers and their namespaces.
    pub nvme: Vec<NvmeController>,
    /// PCI display controllers (class 0x03): what plans count as GPUs.
    pub gpus: Vec<Gpu>,
    /// Whether each backend can run here, and why.
    pub probes: Probes,
    /// Caches and PCI locality from libhwloc, when the `hwloc` feature is
    /// on and hwloc loaded; [`Probes::hwloc`] says why not otherwise.
    pub hwloc: Option<HwlocInfo>,
    /// What could not be read or looked odd, one line each.
    pub notes: Vec<String>,
}

/// CPUs, nodes and cgroup (`sysfs`), then the devices (`devices`), from the
/// tree at `root`.
fn read_tree(root: &Path) -> Result<Topology> {
    let mut topo = sysfs::read(root)?;
    let tree = sysfs::Root(root);
    topo.nics = devices::nics(tree, &mut topo.notes);
    topo.nvme = devices::nvme(tree);
    topo.gpus = devices::gpus(tree);
    Ok(topo)
}

impl Topology {
    /// Detects this machine: sysfs and procfs, this process's affinity mask
    /// and cgroup, hugepages, and a live probe of every backend (an io_uring
    /// NOP round trip, loading the Vulkan loader, hwloc when built in).
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io) naming `/sys/devices/system/cpu` when
    /// no CPU can be found at all; everything else that cannot be read is
    /// left unknown and noted in [`Topology::notes`].
    pub fn detect() -> Result<Topology> {
        let root = Path::new("/");
        let mut topo = read_tree(root)?;

        match sysfs::affinity() {
            Ok(mask) => {
                let set: BTreeSet<CpuId> = mask.iter().copied().collect();
                for cpu in &mut topo.cpus {
                    cpu.allowed = set.contains(&cpu.id);
                }
                topo.affinity = Some(mask);
            }
            Err(e) => topo.notes.push(format!(
                "sched_getaffinity failed ({e}): every CPU counted as allowed"
            )),
        }

        topo.hugepages = Hugepages {
            pools: hugepages::system::hugepage_pools(),
            default_size: hugepages::system::default_hugepage_size(),
            mounts: hugepages::system::hugetlbfs_mounts(),
        };
        let node_pools = hugepages::system::node_hugepage_pools();
        for node in &mut topo.nodes {
            node.hugepages = node_pools
                .iter()
                .filter(|p| p.node == Some(node.id))
                .cloned()
                .collect();
        }

        let (hwloc, hwloc_probe) = hwloc::detect();
        topo.hwloc = hwloc;
        topo.probes = Probes {
            io_uring: probe::io_uring(root),
            vulkan: probe::vulkan_loader(),
            dpdk: probe::dpdk(),
            spdk: probe::spdk(),
            hugepages: probe::hugepages(&topo.hugepages),
            hwloc: hwloc_probe,
            netns: probe::netns(),
            xdp: crate::xdp::probe(),
            loop_device: probe::loop_device(),
        };
        Ok(topo)
    }

    /// Reads a copy of sysfs and procfs rooted at `root` (`root/sys/...`,
    /// `root/proc/...`): CPUs, nodes, cgroup, NICs, NVMe and GPUs. The parts
    /// that only the live machine can answer are left out: the affinity mask
    /// (every CPU counts as allowed), hugepages (empty) and backend probes
    /// (each says it was not probed). For tests and offline analysis of a
    /// captured tree; [`Topology::detect`] is this with `/` plus those parts.
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io) when no CPU can be found under
    /// `root/sys/devices/system/cpu`.
    pub fn detect_at(root: &Path) -> Result<Topology> {
        read_tree(root)
    }

    /// A machine of the given shape, read from nowhere: `cpus` logical CPUs
    /// (at least 1) in cores of `smt_threads_per_core` threads (at least 1),
    /// cores spread evenly over `nodes` NUMA nodes (at least 1), and `gpus`
    /// GPUs assigned round robin to the nodes. Like Linux, thread `t` of
    /// core `c` is CPU `t * cores + c`. Everything is online, allowed and
    /// not isolated; set fields afterwards for other cases. Probes say
    /// "synthetic".
    pub fn synthetic(
        cpus: usize,
        nodes: usize,
        smt_threads_per_core: usize,
        gpus: usize,
    ) -> Topology {
        let smt = smt_threads_per_core.max(1);
        let n_nodes = nodes.max(1);
        let cores = cpus.max(1).div_ceil(smt);
        let total = cores * smt;
        let node_of_core = |c: usize| NumaNode(u32::try_from(c * n_nodes / cores).unwrap_or(0));
        let id = |n: usize| CpuId(u32::try_from(n).unwrap_or(u32::MAX));

        let mut list: Vec<Cpu> = (0..total)
            .map(|n| {
                let core = n % cores;
                Cpu {
                    id: id(n),
                    core: u32::try_from(core).ok(),
                    package: Some(node_of_core(core).0),
                    node: node_of_core(core),
                    siblings: (0..smt).map(|t| id(t * cores + core)).collect(),
                    online: true,
                    isolated: false,
                    allowed: true,
                    in_cpuset: true,
                }
            })
            .collect();
        list.sort_by_key(|c| c.id);

        let node_list = (0..n_nodes)
            .map(|n| {
                let nid = NumaNode(u32::try_from(n).unwrap_or(u32::MAX));
                Node {
                    id: nid,
                    cpus: list
                        .iter()
                        .filter(|c| c.node == nid)
                        .map(|c| c.id)
                        .collect(),
                    mem_total: None,
                    mem_free: None,
                    hugepages: Vec::new(),
                }
            })
            .collect();

        let gpu_list = (0..gpus)
            .map(|g| Gpu {
                address: format!("0000:{:02x}:00.0", 0x40 + g % 0xc0),
                vendor: 0x10de,
                device: 0x2330,
                class: "0x030200".into(),
                numa_node: Some(NumaNode(u32::try_from(g % n_nodes).unwrap_or(0))),
                driver: None,
            })
            .collect();

        let synthetic = || Probe::unavailable("synthetic topology: not probed");
        Topology {
            kernel: None,
            cpu_model: Some(format!(
                "synthetic: {total} cpus, {cores} cores, {n_nodes} nodes, {gpus} gpus"
            )),
            cpus: list,
            affinity: None,
            cgroup: Cgroup::default(),
            nodes: node_list,
            hugepages: Hugepages::default(),
            nics: Vec::new(),
            nvme: Vec::new(),
            gpus: gpu_list,
            probes: Probes::all(synthetic),
            hwloc: None,
            notes: Vec::new(),
        }
    }

    /// The CPUs a thread of this process can be pinned to: online ∩
    /// affinity mask ∩ cgroup cpuset, lowest first.
    pub fn usable_cpus(&self) -> Vec<CpuId> {
        self.cpus
            .iter()
            .filter(|c| c.usable())
            .map(|c| c.id)
            .collect()
    }

    /// The online CPUs.
    pub fn online_cpus(&self) -> Vec<CpuId> {
        self.cpus
            .iter()
            .filter(|c| c.online)
            .map(|c| c.id)
            .collect()
    }

    /// The isolated CPUs (`isolcpus=` or `nohz_full=`).
    pub fn isolated_cpus(&self) -> Vec<CpuId> {
        self.cpus
            .iter()
            .filter(|c| c.isolated)
            .map(|c| c.id)
            .collect()
    }

    /// The CPU with this id.
    pub fn cpu(&self, id: CpuId) -> Option<&Cpu> {
        self.cpus.iter().find(|c| c.id == id)
    }

    /// The NUMA node with this id.
    pub fn node(&self, id: NumaNode) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// How many physical cores hold at least one usable CPU.
    pub fn usable_cores(&self) -> usize {
        self.cpus
            .iter()
            .filter(|c| c.usable())
            .map(Cpu::core_key)
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// The cgroup CPU quota in CPUs, `None` when unlimited or unknown.
    pub fn cpu_quota(&self) -> Option<f64> {
        self.cgroup.cpu_quota
    }
}

#[cfg(test)]
mod tests;
