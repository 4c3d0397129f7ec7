//! The planning rules of the module docs, applied to a topology.

use super::overrides::{Overrides, Setting};
use super::{LcorePlan, Plan, Profile};
use crate::lcore::{IdlePolicy, LcoreId, Role};
use crate::topology::{Cpu, CpuId, Topology};
use crate::{Error, NumaNode, Result};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Rx descriptors per queue, DPDK examples/l2fwd `RX_DESC_DEFAULT`.
const RX_DESC_DEFAULT: usize = 1024;
/// Tx descriptors per queue, DPDK examples/l2fwd `TX_DESC_DEFAULT`.
const TX_DESC_DEFAULT: usize = 1024;
/// The smallest pool l2fwd makes (`NB_MBUF`'s floor).
const MIN_MBUFS: usize = 8192;
/// DPDK examples/l2fwd `MEMPOOL_CACHE_SIZE`.
const MEMPOOL_CACHE_DEFAULT: usize = 256;
/// DPDK `RTE_MEMPOOL_CACHE_MAX_SIZE`.
const MEMPOOL_CACHE_MAX: usize = 512;
/// Cores from which one is left to the OS (rule 3).
const HOUSEKEEPING_FROM_CORES: usize = 8;
/// The largest ring capacity accepted: rte_ring's own limit is 2^31 - 1
/// slots; 2^30 keeps the power-of-two arithmetic clear of overflow.
const MAX_QUEUE_CAPACITY: usize = 1 << 30;

/// Lcore counts and what had to give way to reach them.
#[derive(Debug)]
struct Counts {
    io_per_node: usize,
    accel: usize,
    app: usize,
    shared: bool,
    notes: Vec<String>,
}

impl Counts {
    fn total(&self, io_nodes: usize) -> usize {
        1 + self.io_per_node * io_nodes + self.accel + self.app
    }
}

pub(super) fn plan(topo: &Topology, profile: Profile, o: &Overrides) -> Result<Plan> {
    let mut notes = Vec::new();
    let affinity = o.affinity.as_ref().is_none_or(|s| s.value);
    let idle = o.idle.as_ref().map_or(profile.idle(), |s| s.value);

    // Rule 1: which CPUs.
    let slots: Vec<&Cpu> = match &o.cpus {
        Some(list) => explicit_cpus(topo, list)?,
        None => default_cpus(topo, profile, &mut notes)?,
    };
    let cores = slots.len();

    // Rules 2-4: housekeeping and the main lcore.
    let (mut isolated, mut housekeeping): (Vec<&Cpu>, Vec<&Cpu>) =
        slots.iter().partition(|c| c.isolated);
    let wants_reserve =
        o.cpus.is_none() && profile.keeps_housekeeping_core() && cores >= HOUSEKEEPING_FROM_CORES;
    if wants_reserve && housekeeping.len() >= 2 {
        let r = housekeeping.remove(0);
        notes.push(format!(
            "{} left to the OS as housekeeping core ({cores} cores >= {HOUSEKEEPING_FROM_CORES})",
            r.id
        ));
    } else if wants_reserve && housekeeping.len() == 1 {
        notes.push(format!(
            "only one housekeeping CPU ({}): the main lcore shares it with the OS",
            housekeeping[0].id
        ));
    }
    let main = if housekeeping.is_empty() {
        let m = isolated.remove(0);
        notes.push(format!(
            "no housekeeping CPU is usable: the main lcore runs on isolated {}",
            m.id
        ));
        m
    } else {
        housekeeping.remove(0)
    };
    if !isolated.is_empty() {
        notes.push(format!("{} isolated CPU(s) used first", isolated.len()));
    }
    // Isolated CPUs first, then housekeeping ones, each lowest id first.
    let rest: Vec<&Cpu> = isolated.into_iter().chain(housekeeping).collect();

    // Rule 11: NUMA awareness; without it all CPUs form one bucket.
    let slot_nodes: BTreeSet<NumaNode> = slots.iter().map(|c| c.node).collect();
    let numa_aware = o
        .numa_aware
        .as_ref()
        .map_or(slot_nodes.len() > 1, |s| s.value);
    let bucket = |c: &Cpu| if numa_aware { c.node } else { NumaNode(0) };
    let io_nodes: Vec<NumaNode> = slots
        .iter()
        .map(|c| bucket(c))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if !numa_aware && slot_nodes.len() > 1 {
        notes.push(format!(
            "NUMA awareness off over {} nodes: placement and pools ignore nodes",
            slot_nodes.len()
        ));
    }

    // Rules 5-9: counts.
    let io_default = match cores {
        16.. => 2,
        4.. => 1,
        _ => 0,
    };
    let budget = 1 + rest.len();
    let fit_in = |budget| {
        fit(
            o,
            profile,
            affinity,
            budget,
            io_default,
            io_nodes.len(),
            topo.gpus.len(),
        )
    };
    let mut counts = fit_in(budget)?;
    let mut used_budget = budget;
    if let (IdlePolicy::BusyPoll, Some(quota)) = (idle, topo.cpu_quota()) {
        let total = counts.total(io_nodes.len());
        if (total as f64) > quota {
            // floor(), at least 1; the cast cannot overflow after min().
            let cap = (quota.floor().min(budget as f64) as usize).max(1);
            match fit_in(cap) {
                Ok(c) => {
                    counts = c;
                    used_budget = cap;
                    notes.push(format!(
                        "cgroup CPU quota {quota} is below {total} busy-polling lcores: planned for {cap} core(s)"
                    ));
                }
                Err(_) => notes.push(format!(
                    "the explicit counts need {total} busy-polling lcores but the cgroup CPU quota is {quota}: they will be throttled"
                )),
            }
        }
    }
    notes.append(&mut counts.notes);
    if counts.io_per_node == 0 {
        notes.push(
            "no I/O lcores: application lcores poll their own NIC queues and NVMe queue pairs"
                .to_owned(),
        );
    }

    // Placement.
    let mut placed: Vec<(Role, &Cpu)> = vec![(Role::Main, main)];
    let mut roles: Vec<Role> = Vec::new();
    for _ in 0..counts.io_per_node * io_nodes.len() {
        roles.push(Role::Io);
    }
    roles.extend(std::iter::repeat_n(Role::Accel, counts.accel));
    roles.extend(std::iter::repeat_n(Role::App, counts.app));

    if counts.shared {
        // Round robin over the CPUs the budget allows, main's last so that
        // it is shared only when nothing else is left.
        let pool: Vec<&Cpu> = rest
            .iter()
            .take(used_budget.saturating_sub(1))
            .copied()
            .chain([main])
            .collect();
        for (i, role) in roles.into_iter().enumerate() {
            placed.push((role, pool[i % pool.len()]));
        }
        notes.push(format!(
            "{} lcores share {} CPU(s): {}",
            placed.len(),
            pool.len(),
            if affinity {
                "too few cores for one lcore each"
            } else {
                "affinity is off, so threads float"
            }
        ));
    } else {
        let mut free: BTreeMap<NumaNode, VecDeque<&Cpu>> = BTreeMap::new();
        for c in &rest {
            free.entry(bucket(c)).or_default().push_back(c);
        }
        let mut unbalanced = false;
        // I/O: round by round over the nodes, so each node gets its share.
        for _ in 0..counts.io_per_node {
            for node in &io_nodes {
                let cpu = match take_on(&mut free, *node) {
                    Some(c) => Some(c),
                    None => {
                        unbalanced = true;
                        take_most_free(&mut free)
                    }
                };
                placed.extend(cpu.map(|c| (Role::Io, c)));
            }
        }
        if unbalanced {
            notes.push(
                "some node has too few free cores for its I/O lcores: placed on other nodes"
                    .to_owned(),
            );
        }
        for i in 0..counts.accel {
            let gpu_node = numa_aware
                .then(|| topo.gpus.get(i).and_then(|g| g.numa_node))
                .flatten();
            let cpu = gpu_node
                .and_then(|n| take_on(&mut free, n))
                .or_else(|| take_most_free(&mut free));
            placed.extend(cpu.map(|c| (Role::Accel, c)));
        }
        for _ in 0..counts.app {
            placed.extend(take_most_free(&mut free).map(|c| (Role::App, c)));
        }
    }

    // Ids: main 0, then I/O by node, accelerators, applications by CPU.
    let order = |r: Role| match r {
        Role::Main => 0,
        Role::Io => 1,
        Role::Accel => 2,
        Role::App => 3,
    };
    placed.sort_by_key(|(role, cpu)| {
        let node_first = if *role == Role::Io {
            Some(cpu.node)
        } else {
            None
        };
        (order(*role), node_first, cpu.id)
    });
    // Accelerator lcores keep GPU order, not CPU order.
    let lcores: Vec<LcorePlan> = placed
        .iter()
        .enumerate()
        .map(|(i, (role, cpu))| LcorePlan {
            id: LcoreId(u32::try_from(i).unwrap_or(u32::MAX)),
            role: *role,
            cpu: cpu.id,
            node: cpu.node,
        })
        .collect();

    // Rule 10: sizes.
    let burst = o.burst.as_ref().map_or(profile.burst(), |s| s.value);
    let queue_capacity = o
        .queue_capacity
        .as_ref()
        .map_or(profile.queue_capacity(), |s| s.value);
    if let Some(s) = &o.queue_capacity
        && (s.value < 2 || !s.value.is_power_of_two() || s.value > MAX_QUEUE_CAPACITY)
    {
        return Err(refused(
            s,
            &format!("the ring capacity must be a power of two from 2 to {MAX_QUEUE_CAPACITY}"),
        ));
    }
    if let Some(s) = &o.burst
        && (s.value == 0 || s.value > queue_capacity)
    {
        return Err(refused(
            s,
            &format!("the burst must be from 1 to the ring capacity ({queue_capacity})"),
        ));
    }
    let mempool_cache = o
        .mempool_cache
        .as_ref()
        .map_or(MEMPOOL_CACHE_DEFAULT, |s| s.value);
    if let Some(s) = &o.mempool_cache
        && s.value > MEMPOOL_CACHE_MAX
    {
        return Err(refused(
            s,
            &format!(
                "the mempool cache holds at most {MEMPOOL_CACHE_MAX} (RTE_MEMPOOL_CACHE_MAX_SIZE)"
            ),
        ));
    }
    let mut per_node: BTreeMap<NumaNode, usize> = BTreeMap::new();
    for l in &lcores {
        *per_node
            .entry(if numa_aware { l.node } else { NumaNode(0) })
            .or_default() += 1;
    }
    let busiest = per_node.values().copied().max().unwrap_or(1);
    let mbufs_per_node = match &o.mbufs_per_node {
        Some(s) => {
            // rte_mempool_create: cache_size <= n / 1.5.
            if s.value == 0 || mempool_cache.saturating_mul(3) > s.value.saturating_mul(2) {
                return Err(refused(
                    s,
                    &format!(
                        "a pool needs at least 1 mbuf and 1.5 x the mempool cache ({mempool_cache})"
                    ),
                ));
            }
            s.value
        }
        None => busiest
            .saturating_mul(RX_DESC_DEFAULT + TX_DESC_DEFAULT + burst + mempool_cache)
            .max(MIN_MBUFS),
    };

    let hugepages = match &o.hugepages {
        Some(s) => {
            if s.value && !topo.probes.hugepages.available {
                notes.push(format!(
                    "hugepages asked for ({}) but the probe says: {}; pools fall back to 4 KiB pages unless DATAPLANE_REQUIRE=hugepages",
                    s.source, topo.probes.hugepages.reason
                ));
            }
            s.value
        }
        None => topo.probes.hugepages.available,
    };
    if !affinity {
        notes.push("affinity off: lcores are not pinned; their CPU is only a hint".to_owned());
    }

    Ok(Plan {
        profile,
        lcores,
        affinity,
        numa_aware,
        idle,
        burst,
        queue_capacity,
        mbufs_per_node,
        mempool_cache,
        hugepages,
        shared_cores: counts.shared,
        notes,
    })
}

fn refused<T>(s: &Setting<T>, why: &str) -> Error {
    Error::Config(format!("{} refused: {why}", s.source))
}

/// Usable CPUs, one thread per physical core unless the profile uses all.
fn default_cpus<'t>(
    topo: &'t Topology,
    profile: Profile,
    notes: &mut Vec<String>,
) -> Result<Vec<&'t Cpu>> {
    let usable: Vec<&Cpu> = topo.cpus.iter().filter(|c| c.usable()).collect();
    if usable.is_empty() {
        return Err(Error::Config(
            "no usable CPU: none is online, in the affinity mask and in the cgroup cpuset"
                .to_owned(),
        ));
    }
    if profile.all_threads() {
        return Ok(usable);
    }
    let mut seen = BTreeSet::new();
    let kept: Vec<&Cpu> = usable
        .iter()
        .filter(|c| seen.insert(c.core_key()))
        .copied()
        .collect();
    let idle_siblings = usable.len() - kept.len();
    if idle_siblings > 0 {
        notes.push(format!(
            "one lcore per physical core: {idle_siblings} SMT sibling(s) left idle"
        ));
    }
    Ok(kept)
}

/// An explicit list: every CPU must exist and be usable.
fn explicit_cpus<'t>(topo: &'t Topology, list: &Setting<Vec<CpuId>>) -> Result<Vec<&'t Cpu>> {
    let ids: BTreeSet<CpuId> = list.value.iter().copied().collect();
    if ids.is_empty() {
        return Err(refused(list, "the CPU list is empty"));
    }
    ids.into_iter()
        .map(|id| {
            let cpu_err = |why: &str| Error::Cpu {
                cpu: id.0,
                reason: format!("{why} (from {})", list.source),
            };
            let cpu = topo
                .cpu(id)
                .ok_or_else(|| cpu_err("not present on this machine"))?;
            if !cpu.online {
                Err(cpu_err("offline"))
            } else if !cpu.allowed {
                Err(cpu_err("outside this process's affinity mask"))
            } else if !cpu.in_cpuset {
                Err(cpu_err("outside the cgroup cpuset"))
            } else {
                Ok(cpu)
            }
        })
        .collect()
}

/// Counts of I/O, accelerator and application lcores for `budget` CPUs
/// (main included), by rules 5-8.
fn fit(
    o: &Overrides,
    profile: Profile,
    affinity: bool,
    budget: usize,
    io_default: usize,
    io_nodes: usize,
    gpus: usize,
) -> Result<Counts> {
    let mut notes = Vec::new();
    let mut io = o
        .io_lcores_per_node
        .as_ref()
        .map_or(io_default, |s| s.value);
    let mut accel = o.accel_lcores.as_ref().map_or(gpus, |s| s.value);
    if let Some(s) = &o.app_lcores
        && s.value == 0
    {
        return Err(refused(s, "at least 1 application lcore is needed"));
    }
    let app_min = o.app_lcores.as_ref().map_or(1, |s| s.value);
    let need = |io: usize, accel: usize| 1 + io * io_nodes + accel + app_min;

    // Rule 8: defaults give way, accelerators first, then I/O; what I/O
    // frees goes back to the accelerators.
    let (accel_default, io_before) = (accel, io);
    if o.accel_lcores.is_none() {
        while accel > 0 && need(io, accel) > budget {
            accel -= 1;
        }
    }
    if o.io_lcores_per_node.is_none() {
        while io > 0 && need(io, accel) > budget {
            io -= 1;
        }
        if o.accel_lcores.is_none() {
            while accel < accel_default && need(io, accel + 1) <= budget {
                accel += 1;
            }
        }
    }
    if io < io_before {
        notes.push(format!(
            "room for {io} I/O lcore(s) per node, not {io_before}"
        ));
    }
    if accel < accel_default {
        notes.push(format!(
            "{accel_default} GPU(s) but room for {accel} accelerator lcore(s): application lcores dispatch to the rest"
        ));
    }
    let explicit =
        o.app_lcores.is_some() || o.io_lcores_per_node.is_some() || o.accel_lcores.is_some();
    let requested = need(io, accel);
    let shared = requested > budget;
    if shared && explicit && affinity {
        return Err(Error::TooManyLcores {
            requested,
            allowed: budget,
        });
    }
    let app = match &o.app_lcores {
        Some(s) => s.value,
        None => {
            let rest = budget.saturating_sub(1 + io * io_nodes + accel).max(1);
            if profile == Profile::Power {
                notes.push(format!(
                    "power: {} of {rest} application lcore(s)",
                    rest.div_ceil(2)
                ));
                rest.div_ceil(2)
            } else {
                rest
            }
        }
    };
    Ok(Counts {
        io_per_node: io,
        accel,
        app,
        shared,
        notes,
    })
}

fn take_on<'t>(
    free: &mut BTreeMap<NumaNode, VecDeque<&'t Cpu>>,
    node: NumaNode,
) -> Option<&'t Cpu> {
    free.get_mut(&node)?.pop_front()
}

/// From the node with the most free CPUs (the lowest such node on a tie).
fn take_most_free<'t>(free: &mut BTreeMap<NumaNode, VecDeque<&'t Cpu>>) -> Option<&'t Cpu> {
    let node = free
        .iter()
        .filter(|(_, q)| !q.is_empty())
        // max_by_key keeps the last maximum; reversing makes it the lowest node.
        .rev()
        .max_by_key(|(_, q)| q.len())
        .map(|(n, _)| *n)?;
    take_on(free, node)
}
