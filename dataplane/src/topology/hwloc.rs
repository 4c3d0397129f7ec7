//! Richer topology from libhwloc: cache sizes per core, which cores share an
//! L3, and the NUMA node of PCI devices.
//!
//! The data types are always here so that reports keep one shape; loading
//! needs the `hwloc` feature, which links the system's libhwloc (2.8 or
//! newer) through `hwlocality`. Without it, [`detect`] says so.

use super::{CpuId, Probe};
use crate::NumaNode;
use serde::Serialize;

/// What hwloc adds to the sysfs view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HwlocInfo {
    /// Processing units (hardware threads) hwloc sees.
    pub pus: usize,
    /// Physical cores.
    pub cores: usize,
    /// Packages (sockets).
    pub packages: usize,
    /// NUMA nodes.
    pub numa_nodes: usize,
    /// Cache sizes of each core.
    pub core_caches: Vec<CoreCaches>,
    /// The CPUs under each L3 cache, one list per L3, in hwloc's order; the
    /// index is [`CoreCaches::l3_domain`].
    pub l3_domains: Vec<Vec<CpuId>>,
    /// The PCI devices with their NUMA node.
    pub pci_devices: Vec<PciLocality>,
}

/// The data caches above one physical core.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CoreCaches {
    /// hwloc's logical index of the core.
    pub core: usize,
    /// The core's hardware threads.
    pub cpus: Vec<CpuId>,
    /// L1 data cache size in bytes.
    pub l1d_bytes: Option<u64>,
    /// L2 cache size in bytes.
    pub l2_bytes: Option<u64>,
    /// L3 cache size in bytes.
    pub l3_bytes: Option<u64>,
    /// Which entry of [`HwlocInfo::l3_domains`] this core's L3 is.
    pub l3_domain: Option<usize>,
}

/// A PCI device and the NUMA node it is attached to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PciLocality {
    /// `dddd:bb:dd.f`.
    pub address: String,
    /// The PCI class (0x0200 Ethernet, 0x0108 NVMe, 0x03xx display).
    pub class_id: u16,
    /// The PCI vendor id.
    pub vendor_id: u16,
    /// The PCI device id.
    pub device_id: u16,
    /// The single NUMA node of its closest CPU-side ancestor, `None` when
    /// hwloc does not know or it spans several.
    pub numa_node: Option<NumaNode>,
}

/// Loads hwloc's view of this machine; the probe says what happened.
#[cfg(not(feature = "hwloc"))]
pub fn detect() -> (Option<HwlocInfo>, Probe) {
    (
        None,
        Probe::unavailable("built without the `hwloc` feature (cargo --features dataplane/hwloc)"),
    )
}

/// Loads hwloc's view of this machine; the probe says what happened.
#[cfg(feature = "hwloc")]
pub fn detect() -> (Option<HwlocInfo>, Probe) {
    match load() {
        Ok(info) => {
            let reason = format!(
                "libhwloc: {} PUs, {} cores, {} package(s), {} NUMA node(s), {} L3 domain(s), {} PCI devices",
                info.pus,
                info.cores,
                info.packages,
                info.numa_nodes,
                info.l3_domains.len(),
                info.pci_devices.len()
            );
            (Some(info), Probe::ok(reason))
        }
        Err(why) => (None, Probe::unavailable(format!("libhwloc failed: {why}"))),
    }
}

#[cfg(feature = "hwloc")]
fn load() -> Result<HwlocInfo, String> {
    use hwlocality::Topology;
    use hwlocality::object::TopologyObject;
    use hwlocality::object::attributes::ObjectAttributes;
    use hwlocality::object::types::ObjectType;
    use hwlocality::topology::builder::TypeFilter;

    // I/O objects are filtered out by default; PCI locality needs them.
    let topo = Topology::builder()
        .with_io_type_filter(TypeFilter::KeepImportant)
        .map_err(|e| e.to_string())?
        .build()
        .map_err(|e| e.to_string())?;

    let cpus_of = |o: &TopologyObject| -> Vec<CpuId> {
        o.cpuset()
            .map(|set| {
                set.iter_set()
                    .filter_map(|i| u32::try_from(usize::from(i)).ok().map(CpuId))
                    .collect()
            })
            .unwrap_or_default()
    };
    let cache_size = |o: &TopologyObject| -> Option<u64> {
        match o.attributes()? {
            ObjectAttributes::Cache(c) => c.size().map(|s| s.get()),
            _ => None,
        }
    };

    let l3s: Vec<&TopologyObject> = topo.objects_with_type(ObjectType::L3Cache).collect();
    let l3_domains: Vec<Vec<CpuId>> = l3s.iter().map(|o| cpus_of(o)).collect();

    let core_caches = topo
        .objects_with_type(ObjectType::Core)
        .map(|core| {
            let find = |ty: ObjectType| core.ancestors().find(|a| a.object_type() == ty);
            let l3 = find(ObjectType::L3Cache);
            CoreCaches {
                core: core.logical_index(),
                cpus: cpus_of(core),
                l1d_bytes: find(ObjectType::L1Cache).and_then(cache_size),
                l2_bytes: find(ObjectType::L2Cache).and_then(cache_size),
                l3_bytes: l3.and_then(cache_size),
                l3_domain: l3.and_then(|l3| {
                    l3s.iter()
                        .position(|o| o.global_persistent_index() == l3.global_persistent_index())
                }),
            }
        })
        .collect();

    let pci_devices = topo
        .pci_devices()
        .filter_map(|dev| {
            let Some(ObjectAttributes::PCIDevice(pci)) = dev.attributes() else {
                return None;
            };
            let numa_node = dev.first_non_io_ancestor().and_then(|a| {
                let set = a.nodeset()?;
                if set.weight() != Some(1) {
                    return None;
                }
                let n = usize::from(set.first_set()?);
                u32::try_from(n).ok().map(NumaNode)
            });
            Some(PciLocality {
                address: format!(
                    "{:04x}:{:02x}:{:02x}.{:x}",
                    pci.domain(),
                    pci.bus_id(),
                    pci.bus_device(),
                    pci.function()
                ),
                class_id: pci.class_id(),
                vendor_id: pci.vendor_id(),
                device_id: pci.device_id(),
                numa_node,
            })
        })
        .collect();

    Ok(HwlocInfo {
        pus: topo.objects_with_type(ObjectType::PU).count(),
        cores: topo.objects_with_type(ObjectType::Core).count(),
        packages: topo.objects_with_type(ObjectType::Package).count(),
        numa_nodes: topo.objects_with_type(ObjectType::NUMANode).count(),
        core_caches,
        l3_domains,
        pci_devices,
    })
}

#[cfg(all(test, feature = "hwloc"))]
mod tests {
    #[test]
    #[cfg_attr(miri, ignore)] // calls into libhwloc
    fn agrees_with_sysfs() {
        let (info, probe) = super::detect();
        let Some(info) = info else {
            // The feature is on, so libhwloc is linked: loading must work.
            panic!("hwloc built in but failed: {}", probe.reason);
        };
        let topo = match crate::topology::Topology::detect_at(std::path::Path::new("/")) {
            Ok(t) => t,
            Err(e) => panic!("sysfs: {e}"),
        };
        // hwloc shows what the cgroup allows, not the process's affinity.
        let visible = topo.cpus.iter().filter(|c| c.online && c.in_cpuset).count();
        assert_eq!(info.pus, visible, "{}", probe.reason);
        assert_eq!(info.numa_nodes, topo.nodes.len(), "{}", probe.reason);
        assert!(info.cores >= 1 && info.cores <= info.pus);
        for c in &info.core_caches {
            assert!(!c.cpus.is_empty());
        }
    }
}
