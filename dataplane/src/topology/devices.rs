//! NICs, NVMe controllers and GPUs, read from sysfs with their NUMA node.

use super::PciAddress;
use super::sysfs::{Root, read_num, read_trimmed};
use crate::NumaNode;
use serde::Serialize;
use std::fs;
use std::path::{Path, PathBuf};

/// A network interface (`/sys/class/net/NAME`), `lo` excepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Nic {
    /// The interface name.
    pub name: String,
    /// The kernel driver bound to its device (`device/driver`), e.g.
    /// `ixgbe`, `virtio_net`, `vfio-pci`.
    pub driver: Option<String>,
    /// The PCI address (`0000:3b:00.0`) of the device or of its nearest PCI
    /// ancestor (a virtio NIC sits on a PCI function).
    pub pci: Option<String>,
    /// The device's NUMA node; `None` when the kernel says -1 (unknown) or
    /// the device has none.
    pub numa_node: Option<NumaNode>,
    /// The hardware address.
    pub mac: Option<String>,
    /// The MTU in bytes.
    pub mtu: Option<u32>,
    /// `up`, `down`, `unknown`, ... as the kernel reports it.
    pub operstate: String,
    /// Link speed in Mb/s, when the link is up and the driver reports it.
    pub speed_mbps: Option<u32>,
    /// Receive queues the kernel driver exposes (`queues/rx-*`).
    pub rx_queues: usize,
    /// Transmit queues the kernel driver exposes (`queues/tx-*`).
    pub tx_queues: usize,
    /// No `device` link: a bridge, veth, tun, bond, ...
    pub is_virtual: bool,
}

/// An NVMe controller (`/sys/class/nvme/nvmeN`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NvmeController {
    /// `nvme0`, ...
    pub name: String,
    /// The model string.
    pub model: Option<String>,
    /// The serial number.
    pub serial: Option<String>,
    /// The firmware revision.
    pub firmware: Option<String>,
    /// `pcie`, `tcp`, `rdma`, `fc`, `loop`.
    pub transport: Option<String>,
    /// The PCI address for a PCIe controller.
    pub pci: Option<String>,
    /// The controller's NUMA node, `None` when unknown.
    pub numa_node: Option<NumaNode>,
    /// Its namespaces, as block devices.
    pub namespaces: Vec<NvmeNamespace>,
}

/// One NVMe namespace's block device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NvmeNamespace {
    /// `nvme0n1`, ...
    pub name: String,
    /// The device node, `/dev/nvme0n1`.
    pub dev: PathBuf,
    /// Capacity in bytes (`size` is in 512-byte sectors whatever the block
    /// size).
    pub size_bytes: Option<u64>,
    /// The logical block size in bytes.
    pub logical_block_size: Option<u32>,
}

/// A PCI display controller (class 0x03xxxx).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gpu {
    /// The PCI address.
    pub address: String,
    /// The PCI vendor id (0x10de NVIDIA, 0x1002 AMD, 0x8086 Intel).
    pub vendor: u16,
    /// The PCI device id.
    pub device: u16,
    /// The PCI class, as the kernel prints it (`0x030000` VGA, `0x030200` 3D).
    pub class: String,
    /// The device's NUMA node, `None` when unknown.
    pub numa_node: Option<NumaNode>,
    /// The kernel driver bound to it.
    pub driver: Option<String>,
}

impl Gpu {
    /// The vendor's name for the common GPU vendors.
    pub fn vendor_name(&self) -> &'static str {
        match self.vendor {
            0x10de => "NVIDIA",
            0x1002 | 0x1022 => "AMD",
            0x8086 => "Intel",
            0x1af4 => "virtio",
            0x1234 | 0x1b36 => "QEMU",
            0x15ad => "VMware",
            0x1414 => "Microsoft",
            0x1a03 => "ASPEED",
            0x102b => "Matrox",
            _ => "unknown vendor",
        }
    }
}

/// The basename of where a symlink points.
fn link_name(path: &Path) -> Option<String> {
    let target = fs::read_link(path).ok()?;
    Some(target.file_name()?.to_str()?.to_owned())
}

/// `numa_node` holds -1 when the platform does not say.
fn numa_node(path: &Path) -> Option<NumaNode> {
    let n: i64 = read_num(path)?;
    u32::try_from(n).ok().map(NumaNode)
}

/// The PCI address of a device directory: its own name when it is a PCI
/// function, else the nearest PCI function among its ancestors.
fn pci_of(device: &Path) -> Option<String> {
    let real = fs::canonicalize(device).ok()?;
    real.components()
        .rev()
        .filter_map(|c| c.as_os_str().to_str())
        .find(|c| PciAddress::from_sysfs(c).is_some())
        .map(str::to_owned)
}

/// Every interface in `/sys/class/net` except `lo`, by name.
pub(super) fn nics(root: Root<'_>, notes: &mut Vec<String>) -> Vec<Nic> {
    let class = root.path("sys/class/net");
    let Ok(entries) = fs::read_dir(&class) else {
        notes.push(format!("{} unreadable: no NICs listed", class.display()));
        return Vec::new();
    };
    let mut out: Vec<Nic> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().to_str()?.to_owned();
            if name == "lo" {
                return None;
            }
            Some(nic(root, &e.path(), name))
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn nic(root: Root<'_>, dir: &Path, name: String) -> Nic {
    let device = dir.join("device");
    let is_virtual = fs::symlink_metadata(&device).is_err();
    let pci = if is_virtual { None } else { pci_of(&device) };
    let numa = numa_node(&device.join("numa_node")).or_else(|| {
        let addr = pci.as_ref()?;
        numa_node(&root.path(&format!("sys/bus/pci/devices/{addr}/numa_node")))
    });
    let count_queues = |prefix: &str| {
        fs::read_dir(dir.join("queues"))
            .map(|it| {
                it.filter_map(Result::ok)
                    .filter(|e| {
                        e.file_name()
                            .to_str()
                            .is_some_and(|n| n.starts_with(prefix))
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    Nic {
        driver: link_name(&device.join("driver")),
        pci,
        numa_node: numa,
        mac: read_trimmed(&dir.join("address")).filter(|s| !s.is_empty()),
        mtu: read_num(&dir.join("mtu")),
        operstate: read_trimmed(&dir.join("operstate")).unwrap_or_else(|| "unknown".into()),
        // Reading `speed` on a down link fails with EINVAL; -1 means unknown.
        speed_mbps: read_num::<i64>(&dir.join("speed"))
            .and_then(|s| u32::try_from(s).ok())
            .filter(|&s| s > 0),
        rx_queues: count_queues("rx-"),
        tx_queues: count_queues("tx-"),
        is_virtual,
        name,
    }
}

/// `nvme0n1` or, with native multipath, `nvme0c1n1`.
fn is_namespace_name(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("nvme") else {
        return false;
    };
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    let Some((ctrl, ns)) = rest.split_once('n') else {
        return false;
    };
    let ctrl_ok = match ctrl.split_once('c') {
        Some((a, b)) => digits(a) && digits(b),
        None => digits(ctrl),
    };
    ctrl_ok && digits(ns)
}

/// Every controller in `/sys/class/nvme`, by name.
pub(super) fn nvme(root: Root<'_>) -> Vec<NvmeController> {
    let Ok(entries) = fs::read_dir(root.path("sys/class/nvme")) else {
        return Vec::new();
    };
    let mut out: Vec<NvmeController> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().to_str()?.to_owned();
            let dir = e.path();
            let device = dir.join("device");
            let transport = read_trimmed(&dir.join("transport"));
            let pci = match transport.as_deref() {
                Some("pcie") | None => pci_of(&device),
                Some(_) => None,
            };
            let mut namespaces: Vec<NvmeNamespace> = fs::read_dir(&dir)
                .map(|it| {
                    it.filter_map(Result::ok)
                        .filter_map(|ns| {
                            let ns_name = ns.file_name().to_str()?.to_owned();
                            if !is_namespace_name(&ns_name) {
                                return None;
                            }
                            let p = ns.path();
                            Some(NvmeNamespace {
                                dev: PathBuf::from("/dev").join(&ns_name),
                                size_bytes: read_num::<u64>(&p.join("size"))
                                    .and_then(|s| s.checked_mul(512)),
                                logical_block_size: read_num(&p.join("queue/logical_block_size")),
                                name: ns_name,
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            namespaces.sort_by(|a, b| a.name.cmp(&b.name));
            Some(NvmeController {
                model: read_trimmed(&dir.join("model")),
                serial: read_trimmed(&dir.join("serial")),
                firmware: read_trimmed(&dir.join("firmware_rev")),
                numa_node: numa_node(&dir.join("numa_node"))
                    .or_else(|| numa_node(&device.join("numa_node"))),
                transport,
                pci,
                namespaces,
                name,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Every PCI function of class 0x03 (display controller), by address.
pub(super) fn gpus(root: Root<'_>) -> Vec<Gpu> {
    let Ok(entries) = fs::read_dir(root.path("sys/bus/pci/devices")) else {
        return Vec::new();
    };
    let hex16 = |p: &Path| -> Option<u16> {
        let s = read_trimmed(p)?;
        u16::from_str_radix(s.trim_start_matches("0x"), 16).ok()
    };
    let mut out: Vec<Gpu> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            let address = e.file_name().to_str()?.to_owned();
            let dir = e.path();
            let class = read_trimmed(&dir.join("class"))?;
            if !class.starts_with("0x03") {
                return None;
            }
            Some(Gpu {
                vendor: hex16(&dir.join("vendor")).unwrap_or(0),
                device: hex16(&dir.join("device")).unwrap_or(0),
                numa_node: numa_node(&dir.join("numa_node")),
                driver: link_name(&dir.join("driver")),
                class,
                address,
            })
        })
        .collect();
    out.sort_by(|a, b| a.address.cmp(&b.address));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(PciAddress::from_sysfs("0000:3b:00.0").is_some());
        assert!(PciAddress::from_sysfs("0000:AF:1f.7").is_some());
        assert!(PciAddress::from_sysfs("virtio2").is_none());
        assert!(PciAddress::from_sysfs("pci0000:00").is_none());
        assert!(PciAddress::from_sysfs("0000:3b:00.00").is_none());
        assert!(is_namespace_name("nvme0n1"));
        assert!(is_namespace_name("nvme12c3n4"));
        assert!(!is_namespace_name("nvme0"));
        assert!(!is_namespace_name("nvme0n"));
        assert!(!is_namespace_name("ng0n1"));
        assert!(!is_namespace_name("nvme0n1p1"));
    }
}
