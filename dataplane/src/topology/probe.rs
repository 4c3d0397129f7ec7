//! Capability probes: can this backend run here, and why (not).
//!
//! Each probe does the real thing on a small scale rather than guessing from
//! versions: io_uring gets a NOP round trip, the Vulkan loader gets loaded.
// Two small unsafe blocks, each with its SAFETY line: pushing a NOP onto a
// submission queue and loading a shared library. The rest of `topology`
// denies unsafe code.

use super::Hugepages;
use super::sysfs::Root;
use crate::backend::Probe;
use crate::require::Capability;
use serde::Serialize;

/// Every backend probe of a [`Topology`](super::Topology).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Probes {
    /// io_uring: the fallback for NICs (sockets) and NVMe (O_DIRECT files).
    pub io_uring: Probe,
    /// The Vulkan loader (`libvulkan.so.1`), for the accelerator backend.
    pub vulkan: Probe,
    /// DPDK compiled into this build.
    pub dpdk: Probe,
    /// SPDK compiled into this build.
    pub spdk: Probe,
    /// Free hugepages of any size.
    pub hugepages: Probe,
    /// libhwloc (the `hwloc` feature).
    pub hwloc: Probe,
    /// Network namespaces and veth pairs, for the socket backends' tests.
    pub netns: Probe,
    /// AF_XDP sockets and XSKMAP maps, for the AF_XDP backend.
    pub xdp: Probe,
    /// Loop block devices, for the storage tests.
    pub loop_device: Probe,
}

impl Probes {
    /// Every probe with the capability it answers for, in
    /// `DATAPLANE_REQUIRE`'s order.
    pub fn iter(&self) -> impl Iterator<Item = (Capability, &Probe)> {
        Capability::ALL.into_iter().map(|c| (c, self.of(c)))
    }

    /// The probe of `cap`.
    pub fn of(&self, cap: Capability) -> &Probe {
        match cap {
            Capability::Hugepages => &self.hugepages,
            Capability::Hwloc => &self.hwloc,
            Capability::IoUring => &self.io_uring,
            Capability::Dpdk => &self.dpdk,
            Capability::Spdk => &self.spdk,
            Capability::Vulkan => &self.vulkan,
            Capability::Netns => &self.netns,
            Capability::Xdp => &self.xdp,
            Capability::LoopDevice => &self.loop_device,
        }
    }

    /// Every probe answering `what` (not probed, synthetic).
    pub(super) fn all(what: impl Fn() -> Probe) -> Self {
        Probes {
            io_uring: what(),
            vulkan: what(),
            dpdk: what(),
            spdk: what(),
            hugepages: what(),
            hwloc: what(),
            netns: what(),
            xdp: what(),
            loop_device: what(),
        }
    }
}

/// Whether this process runs as root: the owner of `/proc/self` is its
/// effective uid.
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Whether `program arg` runs and exits 0; if not, why.
fn runs(program: &str, arg: &str) -> Result<(), String> {
    match std::process::Command::new(program).arg(arg).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!("`{program} {arg}` failed: {}", o.status)),
        Err(e) => Err(format!("`{program}` is not runnable: {e}")),
    }
}

/// Network namespaces and veth pairs: root (CAP_SYS_ADMIN and
/// CAP_NET_ADMIN) and iproute2's `ip`.
pub fn netns() -> Probe {
    if let Err(why) = runs("ip", "-V") {
        return Probe::unavailable(format!("iproute2: {why}"));
    }
    if !is_root() {
        return Probe::unavailable(
            "network namespaces and veth pairs need root (CAP_SYS_ADMIN and CAP_NET_ADMIN)",
        );
    }
    Probe::ok("root, with iproute2's ip")
}

/// Loop block devices: root, `/dev/loop-control` and util-linux's
/// `losetup`.
pub fn loop_device() -> Probe {
    if let Err(why) = runs("losetup", "--version") {
        return Probe::unavailable(format!("util-linux: {why}"));
    }
    if !std::path::Path::new("/dev/loop-control").exists() {
        return Probe::unavailable("no /dev/loop-control (the loop driver is not loaded)");
    }
    if !is_root() {
        return Probe::unavailable("attaching a loop device needs root");
    }
    Probe::ok("root, with /dev/loop-control and losetup")
}

/// io_uring: the sysctl first, then a two-entry ring, one NOP submitted and
/// its completion reaped.
pub(super) fn io_uring(root: &std::path::Path) -> Probe {
    let root = Root(root);
    let kernel = root
        .read("proc/sys/kernel/osrelease")
        .unwrap_or_else(|| "unknown".into());
    // 0: allowed; 1: only for members of kernel.io_uring_group or
    // CAP_SYS_ADMIN; 2: disabled for everyone (Linux 6.6+).
    let disabled = root.read("proc/sys/kernel/io_uring_disabled");
    if disabled.as_deref() == Some("2") {
        return Probe::unavailable(format!(
            "disabled by sysctl kernel.io_uring_disabled = 2 (kernel {kernel})"
        ));
    }
    let restricted = disabled.as_deref() == Some("1");
    let mut ring = match io_uring::IoUring::new(2) {
        Ok(ring) => ring,
        Err(e) => {
            let why = match e.raw_os_error() {
                Some(libc::ENOSYS) => "the kernel has no io_uring (ENOSYS)".to_owned(),
                Some(libc::EPERM) if restricted => {
                    "kernel.io_uring_disabled = 1 and this process is not in kernel.io_uring_group (EPERM)"
                        .to_owned()
                }
                Some(libc::EPERM) => "blocked by a seccomp filter or LSM (EPERM)".to_owned(),
                Some(libc::ENOMEM) => "cannot lock ring memory (ENOMEM: RLIMIT_MEMLOCK)".to_owned(),
                _ => format!("io_uring_setup failed: {e}"),
            };
            return Probe::unavailable(format!("{why} (kernel {kernel})"));
        }
    };
    const TAG: u64 = 0x6470_6e6f_7000; // arbitrary; checked on the way back
    let nop = io_uring::opcode::Nop::new().build().user_data(TAG);
    // SAFETY: a NOP names no buffer or file, so nothing has to outlive it.
    let pushed = unsafe { ring.submission().push(&nop) };
    if pushed.is_err() {
        return Probe::unavailable(format!(
            "a fresh ring's submission queue was full (kernel {kernel})"
        ));
    }
    if let Err(e) = ring.submit_and_wait(1) {
        return Probe::unavailable(format!("io_uring_enter failed: {e} (kernel {kernel})"));
    }
    let cqe = ring.completion().next();
    match cqe {
        Some(c) if c.user_data() == TAG && c.result() >= 0 => {
            Probe::ok(format!("io_uring NOP round trip ok (kernel {kernel})"))
        }
        Some(c) => Probe::unavailable(format!(
            "NOP completed with result {} (kernel {kernel})",
            c.result()
        )),
        None => Probe::unavailable(format!("NOP submitted but no completion (kernel {kernel})")),
    }
}

/// The Vulkan loader, loaded once per process and kept; devices are
/// enumerated by the accelerator backend.
///
/// Kept loaded rather than closed after the probe: unloading the loader
/// while another thread loads it (two topology probes at once) races in the
/// loader's own teardown, which destroys a mutex the other thread is
/// taking; ThreadSanitizer caught it. The accelerator backend loads the
/// same library anyway.
pub(super) fn vulkan_loader() -> Probe {
    static PROBE: std::sync::OnceLock<Probe> = std::sync::OnceLock::new();
    PROBE
        .get_or_init(|| {
            const LOADER: &str = "libvulkan.so.1";
            // SAFETY: loading runs the library's initialisers; this is the
            // system's Vulkan loader, the same library the accelerator
            // backend loads, and its initialisers only set up its own state.
            match unsafe { libloading::Library::new(LOADER) } {
                Ok(lib) => {
                    std::mem::forget(lib);
                    Probe::ok(format!(
                        "{LOADER} loads (device enumeration comes with the accelerator backend)"
                    ))
                }
                Err(e) => Probe::unavailable(format!("{LOADER} not loadable: {e}")),
            }
        })
        .clone()
}

/// DPDK as compiled into this build.
pub(super) fn dpdk() -> Probe {
    compiled(
        "DPDK",
        dpdk_sys::AVAILABLE,
        dpdk_sys::VERSION,
        dpdk_sys::REASON,
    )
}

/// SPDK as compiled into this build.
pub(super) fn spdk() -> Probe {
    compiled(
        "SPDK",
        spdk_sys::AVAILABLE,
        spdk_sys::VERSION,
        spdk_sys::REASON,
    )
}

fn compiled(name: &str, available: bool, version: &str, reason: &str) -> Probe {
    if available {
        Probe::ok(format!("{name} {version} compiled in: {reason}"))
    } else {
        Probe::unavailable(format!("{name} not compiled in: {reason}"))
    }
}

/// Free hugepages of any size.
pub(super) fn hugepages(h: &Hugepages) -> Probe {
    if h.pools.is_empty() {
        return Probe::unavailable(
            "the kernel offers no hugepage sizes (/sys/kernel/mm/hugepages empty)",
        );
    }
    let pools: Vec<String> = h
        .pools
        .iter()
        .map(|p| format!("{} free of {} x {}", p.free, p.total, size(p.page_size)))
        .collect();
    let mounts = match h.mounts.len() {
        0 => "no hugetlbfs mounted".to_owned(),
        n => format!("{n} hugetlbfs mount(s)"),
    };
    let summary = format!("{}; {mounts}", pools.join(", "));
    if h.free_bytes() > 0 {
        Probe::ok(summary)
    } else {
        Probe::unavailable(format!(
            "no free hugepages ({summary}); reserve some with scripts/setup-hugepages.sh"
        ))
    }
}

/// "2 MiB", "1 GiB", "64 KiB".
pub(crate) fn size(bytes: usize) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = bytes;
    let mut unit = 0;
    while v >= 1024 && v.is_multiple_of(1024) && unit + 1 < UNITS.len() {
        v /= 1024;
        unit += 1;
    }
    format!("{v} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use hugepages::system::HugepagePool;

    #[test]
    fn sizes() {
        assert_eq!(size(2 << 20), "2 MiB");
        assert_eq!(size(1 << 30), "1 GiB");
        assert_eq!(size(1000), "1000 B");
    }

    #[test]
    fn hugepage_probe() {
        let none = Hugepages::default();
        assert!(!hugepages(&none).available);
        let mut h = Hugepages::default();
        h.pools.push(HugepagePool {
            page_size: 2 << 20,
            node: None,
            total: 8,
            free: 0,
        });
        let p = hugepages(&h);
        assert!(!p.available);
        assert!(p.reason.contains("0 free of 8 x 2 MiB"), "{}", p.reason);
        h.pools[0].free = 3;
        assert!(hugepages(&h).available);
    }

    #[test]
    #[cfg_attr(miri, ignore)] // makes system calls
    fn live_probes_give_reasons() {
        let p = io_uring(std::path::Path::new("/"));
        println!("io_uring: {p}");
        assert!(!p.reason.is_empty());
        let v = vulkan_loader();
        println!("vulkan: {v}");
        assert!(v.reason.contains("libvulkan.so.1"));
        assert_eq!(dpdk().available, dpdk_sys::AVAILABLE);
        assert_eq!(spdk().available, spdk_sys::AVAILABLE);
    }
}
