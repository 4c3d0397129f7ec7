//! Detection against small fake sysfs/procfs trees, and the live machine.

use super::*;
use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A throwaway directory tree, removed on drop.
struct FakeRoot(PathBuf);

impl FakeRoot {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("dp-topo-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }

    fn file(&self, rel: &str, contents: &str) -> &Self {
        let p = self.0.join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, contents).expect("write");
        self
    }

    fn dir(&self, rel: &str) -> &Self {
        fs::create_dir_all(self.0.join(rel)).expect("mkdir");
        self
    }

    /// A symlink at `rel` pointing to `target` (relative to the link's dir).
    fn link(&self, rel: &str, target: &str) -> &Self {
        let p = self.0.join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::os::unix::fs::symlink(target, p).expect("symlink");
        self
    }
}

impl Drop for FakeRoot {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Two nodes, 4 CPUs as 2 cores x 2 threads (cpu0/cpu2 and cpu1/cpu3),
/// cpu3 offline, cpu1 isolated.
fn two_node_tree() -> FakeRoot {
    let r = FakeRoot::new();
    r.file("sys/devices/system/cpu/present", "0-3\n")
        .file("sys/devices/system/cpu/online", "0-2\n")
        .file("sys/devices/system/cpu/isolated", "1\n")
        .file("sys/devices/system/cpu/nohz_full", "(null)\n")
        .file("sys/devices/system/node/online", "0-1\n")
        .file("sys/devices/system/node/node0/cpulist", "0,2\n")
        .file("sys/devices/system/node/node1/cpulist", "1,3\n")
        .file(
            "sys/devices/system/node/node0/meminfo",
            "Node 0 MemTotal:  2048 kB\nNode 0 MemFree:   1024 kB\n",
        )
        .file("sys/devices/system/node/node1/meminfo", "garbage\n")
        .file("proc/sys/kernel/osrelease", "6.1.0-test\n")
        .file("proc/cpuinfo", "processor\t: 0\nmodel name\t: Test CPU\n");
    for (cpu, core, sib) in [(0, 0, "0,2"), (1, 1, "1,3"), (2, 0, "0,2")] {
        let d = format!("sys/devices/system/cpu/cpu{cpu}/topology");
        r.file(&format!("{d}/core_id"), &format!("{core}\n"))
            .file(&format!("{d}/physical_package_id"), "0\n")
            .file(&format!("{d}/thread_siblings_list"), &format!("{sib}\n"));
    }
    r
}

#[test]
fn cpus_nodes_and_flags() {
    let r = two_node_tree();
    let t = Topology::detect_at(&r.0).expect("detect");
    assert_eq!(t.kernel.as_deref(), Some("6.1.0-test"));
    assert_eq!(t.cpu_model.as_deref(), Some("Test CPU"));
    assert_eq!(t.cpus.len(), 4);
    assert_eq!(t.online_cpus(), vec![CpuId(0), CpuId(1), CpuId(2)]);
    assert_eq!(t.isolated_cpus(), vec![CpuId(1)]);
    assert_eq!(t.usable_cpus(), vec![CpuId(0), CpuId(1), CpuId(2)]);
    assert_eq!(t.cpus[2].siblings, vec![CpuId(0), CpuId(2)]);
    assert_eq!(t.cpus[2].core_key(), CpuId(0));
    assert_eq!(t.cpus[1].node, NumaNode(1));
    // Offline: no topology directory, alone on its core.
    assert_eq!(t.cpus[3].siblings, vec![CpuId(3)]);
    assert_eq!(t.cpus[3].core, None);
    assert_eq!(t.usable_cores(), 2);
    assert_eq!(t.nodes.len(), 2);
    assert_eq!(t.nodes[0].mem_total, Some(2048 * 1024));
    assert_eq!(t.nodes[0].mem_free, Some(1024 * 1024));
    assert_eq!(t.nodes[1].mem_total, None);
    assert!(!t.probes.io_uring.available);
    assert!(t.probes.io_uring.reason.contains("not probed"));
}

#[test]
fn no_cpus_is_an_error_naming_the_path() {
    let r = FakeRoot::new();
    let err = Topology::detect_at(&r.0).expect_err("no cpus");
    assert!(err.to_string().contains("sys/devices/system/cpu"), "{err}");
}

#[test]
fn malformed_files_do_not_panic() {
    let r = FakeRoot::new();
    r.file("sys/devices/system/cpu/present", "0-1\n")
        .file("sys/devices/system/cpu/online", "zz,-,9-3\n")
        .file("sys/devices/system/cpu/isolated", "\u{0}\u{1}")
        .file(
            "sys/devices/system/cpu/cpu0/topology/core_id",
            "not a number",
        )
        .file(
            "sys/devices/system/cpu/cpu0/topology/thread_siblings_list",
            "x-y",
        )
        .file("sys/devices/system/node/online", "")
        .file("proc/self/cgroup", "::::\n0::\n")
        .file("proc/self/mounts", "cgroup2\n")
        .file("sys/class/net/eth9/mtu", "huge")
        .file("sys/class/net/eth9/speed", "-1")
        .file("sys/bus/pci/devices/0000:00:02.0/class", "0x030000")
        .file("sys/bus/pci/devices/0000:00:02.0/vendor", "0xzzzz")
        .file("sys/bus/pci/devices/0000:00:02.0/numa_node", "-1");
    let t = Topology::detect_at(&r.0).expect("detect");
    assert_eq!(t.cpus.len(), 2);
    // An unparseable online list means no CPU is known to be online.
    assert!(t.usable_cpus().is_empty());
    assert_eq!(t.cpus[0].core, None);
    assert_eq!(t.cpus[0].siblings, vec![CpuId(0)]);
    // No node list: one node 0 with every CPU.
    assert_eq!(t.nodes.len(), 1);
    assert_eq!(t.nodes[0].cpus.len(), 2);
    assert_eq!(t.nics.len(), 1);
    assert_eq!(t.nics[0].mtu, None);
    assert_eq!(t.nics[0].speed_mbps, None);
    assert!(t.nics[0].is_virtual);
    assert_eq!(t.gpus.len(), 1);
    assert_eq!(t.gpus[0].vendor, 0);
    assert_eq!(t.gpus[0].numa_node, None);
}

#[test]
fn cgroup_v2_cpuset_and_quota() {
    let r = two_node_tree();
    r.file("proc/self/cgroup", "0::/svc/app\n")
        .file(
            "proc/self/mounts",
            "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n",
        )
        .file("sys/fs/cgroup/svc/app/cpuset.cpus.effective", "0-1\n")
        .file("sys/fs/cgroup/svc/app/cpu.max", "max 100000\n")
        .file("sys/fs/cgroup/svc/cpu.max", "150000 100000\n");
    let t = Topology::detect_at(&r.0).expect("detect");
    assert_eq!(t.cgroup.version, Some(2));
    assert_eq!(t.cgroup.path.as_deref(), Some("/svc/app"));
    assert_eq!(t.cgroup.cpuset, Some(vec![CpuId(0), CpuId(1)]));
    // The parent's limit binds the child.
    assert_eq!(t.cpu_quota(), Some(1.5));
    assert_eq!(t.usable_cpus(), vec![CpuId(0), CpuId(1)]);
}

#[test]
fn cgroup_v1_controllers() {
    let r = two_node_tree();
    r.file(
        "proc/self/cgroup",
        "3:cpuset:/ct\n1:cpu,cpuacct:/ct\n0::/\n",
    )
    .file(
        "proc/self/mounts",
        "cgroup /sys/fs/cgroup/cpuset cgroup rw,cpuset 0 0\n\
             cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,cpu,cpuacct 0 0\n\
             cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n",
    )
    .dir("sys/fs/cgroup/unified")
    .file("sys/fs/cgroup/cpuset/ct/cpuset.effective_cpus", "2\n")
    .file("sys/fs/cgroup/cpu,cpuacct/ct/cpu.cfs_quota_us", "250000\n")
    .file("sys/fs/cgroup/cpu,cpuacct/ct/cpu.cfs_period_us", "100000\n")
    .file("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1\n")
    .file("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n");
    let t = Topology::detect_at(&r.0).expect("detect");
    assert_eq!(t.cgroup.version, Some(1));
    assert_eq!(t.cgroup.cpuset, Some(vec![CpuId(2)]));
    assert_eq!(t.cpu_quota(), Some(2.5));
    assert_eq!(t.usable_cpus(), vec![CpuId(2)]);
}

#[test]
fn nics_nvme_gpus() {
    let r = two_node_tree();
    // A PCI NIC, a virtio NIC whose PCI function is its parent, a bridge.
    r.dir("sys/devices/pci0000:00/0000:3b:00.0/net/ens1")
        .file("sys/devices/pci0000:00/0000:3b:00.0/numa_node", "1\n")
        .dir("sys/bus/pci/drivers/ixgbe")
        .link(
            "sys/devices/pci0000:00/0000:3b:00.0/driver",
            "../../../bus/pci/drivers/ixgbe",
        )
        .link(
            "sys/class/net/ens1",
            "../../devices/pci0000:00/0000:3b:00.0/net/ens1",
        )
        .link(
            "sys/devices/pci0000:00/0000:3b:00.0/net/ens1/device",
            "../../../0000:3b:00.0",
        )
        .file(
            "sys/devices/pci0000:00/0000:3b:00.0/net/ens1/address",
            "aa:bb:cc:dd:ee:ff\n",
        )
        .file("sys/devices/pci0000:00/0000:3b:00.0/net/ens1/mtu", "9000\n")
        .file(
            "sys/devices/pci0000:00/0000:3b:00.0/net/ens1/operstate",
            "up\n",
        )
        .file(
            "sys/devices/pci0000:00/0000:3b:00.0/net/ens1/speed",
            "25000\n",
        )
        .dir("sys/devices/pci0000:00/0000:3b:00.0/net/ens1/queues/rx-0")
        .dir("sys/devices/pci0000:00/0000:3b:00.0/net/ens1/queues/rx-1")
        .dir("sys/devices/pci0000:00/0000:3b:00.0/net/ens1/queues/tx-0");
    r.dir("sys/devices/pci0000:00/0000:00:03.0/virtio2/net/eth0")
        .file("sys/bus/pci/devices/0000:00:03.0/numa_node", "0\n")
        .link(
            "sys/class/net/eth0",
            "../../devices/pci0000:00/0000:00:03.0/virtio2/net/eth0",
        )
        .link(
            "sys/devices/pci0000:00/0000:00:03.0/virtio2/net/eth0/device",
            "../../../virtio2",
        )
        .file(
            "sys/devices/pci0000:00/0000:00:03.0/virtio2/net/eth0/operstate",
            "down\n",
        );
    r.file("sys/class/net/br0/operstate", "unknown\n")
        .file("sys/class/net/lo/operstate", "unknown\n");
    // An NVMe controller with one namespace.
    r.dir("sys/devices/pci0000:00/0000:5e:00.0")
        .file("sys/devices/pci0000:00/0000:5e:00.0/numa_node", "1\n")
        .link(
            "sys/class/nvme/nvme0",
            "../../devices/pci0000:00/0000:5e:00.0/nvme/nvme0",
        )
        .link(
            "sys/devices/pci0000:00/0000:5e:00.0/nvme/nvme0/device",
            "../../../0000:5e:00.0",
        )
        .file(
            "sys/devices/pci0000:00/0000:5e:00.0/nvme/nvme0/model",
            "Fast SSD   \n",
        )
        .file(
            "sys/devices/pci0000:00/0000:5e:00.0/nvme/nvme0/serial",
            "S123\n",
        )
        .file(
            "sys/devices/pci0000:00/0000:5e:00.0/nvme/nvme0/firmware_rev",
            "1.0\n",
        )
        .file(
            "sys/devices/pci0000:00/0000:5e:00.0/nvme/nvme0/transport",
            "pcie\n",
        )
        .file(
            "sys/devices/pci0000:00/0000:5e:00.0/nvme/nvme0/numa_node",
            "-1\n",
        )
        .file(
            "sys/devices/pci0000:00/0000:5e:00.0/nvme/nvme0/nvme0n1/size",
            "2048\n",
        )
        .file(
            "sys/devices/pci0000:00/0000:5e:00.0/nvme/nvme0/nvme0n1/queue/logical_block_size",
            "4096\n",
        );
    // A GPU and a non-GPU PCI function.
    r.file("sys/bus/pci/devices/0000:af:00.0/class", "0x030200\n")
        .file("sys/bus/pci/devices/0000:af:00.0/vendor", "0x10de\n")
        .file("sys/bus/pci/devices/0000:af:00.0/device", "0x2330\n")
        .file("sys/bus/pci/devices/0000:af:00.0/numa_node", "1\n")
        .file("sys/bus/pci/devices/0000:00:04.0/class", "0x020000\n");

    let t = Topology::detect_at(&r.0).expect("detect");
    let names: Vec<&str> = t.nics.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["br0", "ens1", "eth0"]);
    let br = &t.nics[0];
    assert!(br.is_virtual && br.pci.is_none() && br.driver.is_none());
    let ens = &t.nics[1];
    assert!(!ens.is_virtual);
    assert_eq!(ens.pci.as_deref(), Some("0000:3b:00.0"));
    assert_eq!(ens.driver.as_deref(), Some("ixgbe"));
    assert_eq!(ens.numa_node, Some(NumaNode(1)));
    assert_eq!(ens.mac.as_deref(), Some("aa:bb:cc:dd:ee:ff"));
    assert_eq!((ens.mtu, ens.speed_mbps), (Some(9000), Some(25000)));
    assert_eq!((ens.rx_queues, ens.tx_queues), (2, 1));
    assert_eq!(ens.operstate, "up");
    let eth = &t.nics[2];
    assert_eq!(eth.pci.as_deref(), Some("0000:00:03.0"));
    assert_eq!(eth.numa_node, Some(NumaNode(0)), "from the PCI parent");
    assert_eq!(eth.speed_mbps, None);

    assert_eq!(t.nvme.len(), 1);
    let c = &t.nvme[0];
    assert_eq!(c.model.as_deref(), Some("Fast SSD"));
    assert_eq!(c.pci.as_deref(), Some("0000:5e:00.0"));
    assert_eq!(
        c.numa_node,
        Some(NumaNode(1)),
        "-1 on the controller, 1 on its device"
    );
    assert_eq!(c.namespaces.len(), 1);
    assert_eq!(c.namespaces[0].dev, PathBuf::from("/dev/nvme0n1"));
    assert_eq!(c.namespaces[0].size_bytes, Some(2048 * 512));
    assert_eq!(c.namespaces[0].logical_block_size, Some(4096));

    assert_eq!(t.gpus.len(), 1);
    assert_eq!(t.gpus[0].address, "0000:af:00.0");
    assert_eq!(t.gpus[0].vendor_name(), "NVIDIA");
    assert_eq!(t.gpus[0].numa_node, Some(NumaNode(1)));
}

#[test]
fn synthetic_shapes() {
    let t = Topology::synthetic(8, 2, 2, 3);
    assert_eq!(t.cpus.len(), 8);
    assert_eq!(t.usable_cores(), 4);
    // Linux numbering: cpu1 and cpu5 are threads of core 1.
    assert_eq!(t.cpus[1].siblings, vec![CpuId(1), CpuId(5)]);
    assert_eq!(t.cpus[5].core_key(), CpuId(1));
    assert_eq!(
        t.nodes[0].cpus,
        vec![CpuId(0), CpuId(1), CpuId(4), CpuId(5)]
    );
    assert_eq!(t.gpus.len(), 3);
    assert_eq!(t.gpus[2].numa_node, Some(NumaNode(0)));
    // Degenerate shapes are clamped, not refused.
    let one = Topology::synthetic(0, 0, 0, 0);
    assert_eq!(one.usable_cpus(), vec![CpuId(0)]);
    assert_eq!(one.nodes.len(), 1);
    // More nodes than cores: the extra nodes hold no CPUs.
    let sparse = Topology::synthetic(2, 4, 1, 0);
    assert_eq!(sparse.nodes.len(), 4);
    assert_eq!(
        sparse.nodes.iter().filter(|n| !n.cpus.is_empty()).count(),
        2
    );
}

#[test]
#[cfg_attr(miri, ignore)] // reads the live sysfs
fn this_machine() {
    let t = Topology::detect().expect("detect");
    assert!(!t.usable_cpus().is_empty());
    for cpu in &t.cpus {
        assert!(
            t.node(cpu.node).is_some(),
            "{} on missing {}",
            cpu.id,
            cpu.node
        );
        assert!(cpu.siblings.contains(&cpu.id));
    }
    assert!(t.affinity.is_some());
    for (name, p) in t.probes.iter() {
        println!("{name}: {p}");
        assert!(!p.reason.is_empty());
    }
}
