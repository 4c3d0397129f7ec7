//! End to end: detection on this machine, a plan for every profile on it,
//! the `dp-info` report, and the `DATAPLANE_REQUIRE` contract.
//!
//! Hardware-dependent checks print `skip: <reason>` when the capability is
//! missing, unless `DATAPLANE_REQUIRE` names it: then a skip is a failure.

use dataplane::lcore::Role;
use dataplane::profile::{Plan, Profile};
use dataplane::require::{self, Capability, available_or_skip};
use dataplane::topology::{CpuId, Topology};
use std::collections::BTreeSet;

fn detect() -> Topology {
    match Topology::detect() {
        Ok(t) => t,
        Err(e) => panic!("Topology::detect failed on this machine: {e}"),
    }
}

#[test]
fn detection_is_consistent() {
    let t = detect();
    let usable = t.usable_cpus();
    assert!(!usable.is_empty(), "no usable CPU: {:#?}", t.cpus);
    assert!(!t.nodes.is_empty());
    let node_ids: BTreeSet<_> = t.nodes.iter().map(|n| n.id).collect();
    for cpu in &t.cpus {
        assert!(
            node_ids.contains(&cpu.node),
            "{} on unknown {}",
            cpu.id,
            cpu.node
        );
        assert!(
            cpu.siblings.contains(&cpu.id),
            "{} not among its own siblings",
            cpu.id
        );
    }
    // Every CPU a node lists is a present CPU, listed once.
    let present: BTreeSet<CpuId> = t.cpus.iter().map(|c| c.id).collect();
    let mut listed = BTreeSet::new();
    for n in &t.nodes {
        for c in &n.cpus {
            assert!(present.contains(c), "{} lists absent {c}", n.id);
            assert!(listed.insert(*c), "{c} on two nodes");
        }
    }
    // Usable means online, in the affinity mask and in the cpuset.
    let online: BTreeSet<CpuId> = t.online_cpus().into_iter().collect();
    for c in &usable {
        assert!(online.contains(c));
        if let Some(mask) = &t.affinity {
            assert!(mask.contains(c), "{c} usable but outside the affinity mask");
        }
        if let Some(set) = &t.cgroup.cpuset {
            assert!(set.contains(c), "{c} usable but outside the cpuset");
        }
    }
    if let Some(q) = t.cpu_quota() {
        assert!(q > 0.0, "quota {q}");
    }
    for (name, p) in t.probes.iter() {
        assert!(!p.reason.is_empty(), "{name} probe has no reason");
    }
    for nic in &t.nics {
        assert_ne!(nic.name, "lo");
        if nic.is_virtual {
            assert!(nic.pci.is_none() && nic.driver.is_none(), "{nic:?}");
        }
    }
}

#[test]
fn every_profile_plans_this_machine() {
    let t = detect();
    let usable: BTreeSet<CpuId> = t.usable_cpus().into_iter().collect();
    for profile in Profile::ALL {
        let plan = match Plan::for_profile(&t, profile) {
            Ok(p) => p,
            Err(e) => panic!("{profile}: {e}"),
        };
        assert_eq!(plan.profile, profile);
        assert_eq!(
            plan.lcores.first().map(|l| l.role),
            Some(Role::Main),
            "{profile}"
        );
        assert!(plan.app_lcores().count() >= 1, "{profile}");
        for (i, l) in plan.lcores.iter().enumerate() {
            assert_eq!(l.id.0 as usize, i, "{profile}: dense ids");
            assert!(
                usable.contains(&l.cpu),
                "{profile}: {} on unusable {}",
                l.id,
                l.cpu
            );
            assert_eq!(t.cpu(l.cpu).map(|c| c.node), Some(l.node));
        }
        if !plan.shared_cores {
            assert_eq!(
                plan.cores_used(),
                plan.lcores.len(),
                "{profile}: CPUs shared"
            );
        }
        assert!(plan.queue_capacity.is_power_of_two());
        assert!(plan.burst >= 1 && plan.burst <= plan.queue_capacity);
        assert!(plan.mbufs_per_node >= 8192 && plan.mempool_cache <= 512);
        assert_eq!(plan.hugepages, t.probes.hugepages.available);
    }
}

#[test]
fn dp_info_report_parses_as_json() {
    let report = match dataplane_apps::info::report(&[]) {
        Ok(r) => r,
        Err(e) => panic!("dp-info report: {e}"),
    };
    let text = serde_json::to_string(&report).expect("report serialises");
    let v: serde_json::Value = serde_json::from_str(&text).expect("report parses back");
    assert!(
        v["topology"]["cpus"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    );
    assert!(v["usable_cpus"].as_array().is_some_and(|a| !a.is_empty()));
    let plans = v["plans"].as_array().expect("plans");
    assert_eq!(plans.len(), Profile::ALL.len());
    for p in plans {
        // A malformed DATAPLANE_* in the environment shows up as an error.
        if p["plan"].is_null() {
            assert!(
                p["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("DATAPLANE_")),
                "{p}"
            );
            continue;
        }
        assert_eq!(p["plan"]["lcores"][0]["role"], "main");
    }
    for name in ["io_uring", "vulkan", "dpdk", "spdk", "hugepages", "hwloc"] {
        let probe = &v["topology"]["probes"][name];
        assert!(probe["available"].is_boolean(), "{name}: {probe}");
        assert!(
            probe["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{name}"
        );
    }
    let human = dataplane_apps::info::render_text(&report);
    for section in ["Machine", "NUMA nodes", "Backends", "Plan: production"] {
        assert!(human.contains(section), "no {section} in:\n{human}");
    }
}

#[test]
fn required_capabilities_are_available() {
    // A typo in DATAPLANE_REQUIRE must not quietly turn a requirement off.
    if let Err(e) = require::check_env() {
        panic!("{e}");
    }
    let t = detect();
    for (cap, probe) in t.probes.iter() {
        let verdict = require::check(cap, probe);
        if require::required(cap) {
            if let Err(e) = verdict {
                panic!("{e}");
            }
        } else {
            assert!(verdict.is_ok(), "{cap}: not required, so it falls back");
        }
        available_or_skip(cap, probe.available, &probe.reason);
    }
}

#[test]
fn hwloc_agrees_with_sysfs() {
    let t = detect();
    let Some(info) = &t.hwloc else {
        available_or_skip(Capability::Hwloc, false, &t.probes.hwloc.reason);
        return;
    };
    // hwloc shows what the cgroup allows, not this process's affinity mask.
    let visible = t.cpus.iter().filter(|c| c.online && c.in_cpuset).count();
    assert_eq!(
        info.pus, visible,
        "hwloc PUs vs sysfs online CPUs in the cpuset"
    );
    assert_eq!(info.numa_nodes, t.nodes.len(), "hwloc NUMA nodes vs sysfs");
    assert!(info.cores >= 1 && info.cores <= info.pus);
    let physical: BTreeSet<CpuId> = t
        .cpus
        .iter()
        .filter(|c| c.online && c.in_cpuset)
        .map(|c| c.core_key())
        .collect();
    assert_eq!(
        info.cores,
        physical.len(),
        "hwloc cores vs sysfs SMT siblings"
    );
}
