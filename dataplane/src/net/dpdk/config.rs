//! How the EAL is started: [`EalConfig`] and the argument list it becomes.

use crate::profile::Plan;
use crate::topology::CpuId;
use std::sync::atomic::{AtomicU32, Ordering};

/// Extra EAL arguments, appended last (so they override the framework's):
/// split on whitespace, no quoting.
pub const EAL_ARGS_ENV: &str = "DATAPLANE_EAL_ARGS";

/// Memory DPDK may take without hugepages (`-m`, MiB) unless configured:
/// room for eight queues' pools of 8192 mbufs (about 19 MiB each) plus
/// EAL's own heap.
pub const NO_HUGE_DEFAULT_MB: u32 = 256;

/// The fewest free 2 MiB hugepages for which [`Memory::Auto`] picks
/// hugepages (128 MiB: one port's pools and EAL's heap).
pub const AUTO_MIN_FREE_HUGEPAGES: u64 = 64;

/// Where DPDK's memory comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Memory {
    /// Hugepages when at least [`AUTO_MIN_FREE_HUGEPAGES`] 2 MiB pages (or
    /// the same amount in larger pages) are free, else 4 KiB pages
    /// (`--no-huge`), with the fallback logged, or refused when
    /// `DATAPLANE_REQUIRE` names `hugepages`.
    Auto,
    /// Hugepages, allocated as needed (`--in-memory`: no hugetlbfs mount
    /// and no files needed); `mb` preallocates (`-m`).
    Hugepages {
        /// Memory to preallocate, MiB; `None` grows on demand.
        mb: Option<u32>,
    },
    /// Anonymous 4 KiB pages (`--no-huge -m mb`): no hugepages needed,
    /// IOVA as VA, slower TLB behaviour; enough for vdevs and tests.
    NoHuge {
        /// The whole of DPDK's memory, MiB.
        mb: u32,
    },
}

/// Which PCI devices EAL probes at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PciScan {
    /// Every device bound to a DPDK-capable driver (vfio-pci, uio), EAL's
    /// default.
    All,
    /// Only these (`-a 0000:03:00.0`, one per address; devargs allowed).
    Allow(Vec<String>),
    /// None (`--no-pci`): vdevs only.
    None,
}

/// The EAL's start-up configuration. Build one from the plan
/// ([`EalConfig::from_plan`]) or by hand, change what you need, and give
/// it to [`configure`](super::configure) before the first port opens.
///
/// ```
/// use dataplane::net::dpdk::{EalConfig, Memory, PciScan};
///
/// let cfg = EalConfig::new()
///     .memory(Memory::NoHuge { mb: 128 })
///     .pci(PciScan::None)
///     .vdev("net_ring0")
///     .log_level("lib.eal:error");
/// let args = cfg.args();
/// assert!(args.windows(2).any(|w| w == ["--vdev", "net_ring0"]));
/// assert!(args.iter().any(|a| a == "--no-huge"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EalConfig {
    /// The CPU of EAL's main lcore (lcore 0). `None`: the first CPU the
    /// process may use. The thread that initialises the EAL gets its
    /// affinity back afterwards; the CPU matters for EAL's control threads,
    /// which avoid it.
    pub main_cpu: Option<CpuId>,
    /// A raw `--lcores` value replacing the one-lcore map, for programs
    /// that launch work on EAL's own lcore threads.
    pub lcores: Option<String>,
    /// Where memory comes from.
    pub memory: Memory,
    /// `--file-prefix`; `None`: unique per process and per
    /// initialisation, so that processes (tests) never share DPDK runtime
    /// state.
    pub file_prefix: Option<String>,
    /// Which PCI devices to probe.
    pub pci: PciScan,
    /// Virtual devices to create at start-up (`--vdev`), e.g.
    /// `net_null0`, `net_ring0`, `net_tap0,iface=dp0`. Ports may also name
    /// a vdev that is not listed here: it is created when opened.
    pub vdevs: Vec<String>,
    /// `--log-level` values (e.g. `lib.eal:error`, `7`).
    pub log_levels: Vec<String>,
    /// Whether the telemetry socket runs (`--no-telemetry` otherwise).
    pub telemetry: bool,
    /// More arguments, after the ones above.
    pub args: Vec<String>,
    /// Whether [`EAL_ARGS_ENV`] is read and appended (the default).
    pub env_args: bool,
}

impl Default for EalConfig {
    fn default() -> Self {
        EalConfig::new()
    }
}

impl EalConfig {
    /// The defaults: main lcore on the first usable CPU, memory
    /// [`Memory::Auto`], a unique file prefix, every PCI device, no vdevs,
    /// EAL's log level at `notice` for the library and `warning` for
    /// drivers, no telemetry, and [`EAL_ARGS_ENV`] appended.
    pub fn new() -> Self {
        EalConfig {
            main_cpu: None,
            lcores: None,
            memory: Memory::Auto,
            file_prefix: None,
            pci: PciScan::All,
            vdevs: Vec::new(),
            log_levels: vec!["lib.*:notice".into(), "pmd.*:warning".into()],
            telemetry: false,
            args: Vec::new(),
            env_args: true,
        }
    }

    /// The defaults, with the main lcore's CPU and the memory from `plan`
    /// (its `hugepages` decision: hugepages when the plan has them, else
    /// [`Memory::NoHuge`] with [`NO_HUGE_DEFAULT_MB`]).
    pub fn from_plan(plan: &Plan) -> Self {
        let mut cfg = EalConfig::new();
        // In a Kubernetes pod given SR-IOV VFs, probe those and no others.
        let vfs = device_plugin_devices();
        if !vfs.is_empty() {
            tracing::info!(devices = ?vfs, "PCI allow-list from the device plugin's PCIDEVICE_* variables");
            cfg.pci = PciScan::Allow(vfs);
        }
        cfg.main_cpu = plan.main().map(|l| l.cpu);
        cfg.memory = if plan.hugepages {
            Memory::Hugepages { mb: None }
        } else {
            Memory::NoHuge {
                mb: NO_HUGE_DEFAULT_MB,
            }
        };
        cfg
    }

    /// Sets the main lcore's CPU.
    pub fn main_cpu(mut self, cpu: CpuId) -> Self {
        self.main_cpu = Some(cpu);
        self
    }

    /// Sets where memory comes from.
    pub fn memory(mut self, memory: Memory) -> Self {
        self.memory = memory;
        self
    }

    /// Sets which PCI devices are probed.
    pub fn pci(mut self, pci: PciScan) -> Self {
        self.pci = pci;
        self
    }

    /// Adds a virtual device (`--vdev`).
    pub fn vdev(mut self, vdev: impl Into<String>) -> Self {
        self.vdevs.push(vdev.into());
        self
    }

    /// Sets the file prefix.
    pub fn file_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.file_prefix = Some(prefix.into());
        self
    }

    /// Replaces the log levels with one `--log-level` value.
    pub fn log_level(mut self, level: impl Into<String>) -> Self {
        self.log_levels = vec![level.into()];
        self
    }

    /// Adds an argument at the end (before [`EAL_ARGS_ENV`]'s).
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Whether [`EAL_ARGS_ENV`] is appended.
    pub fn env_args(mut self, on: bool) -> Self {
        self.env_args = on;
        self
    }

    /// The argument list `rte_eal_init` gets, program name first, with
    /// [`Memory::Auto`] and the file prefix resolved as they would be now.
    /// [`EAL_ARGS_ENV`] is included when [`EalConfig::env_args`] is on.
    pub fn args(&self) -> Vec<String> {
        self.resolve().args
    }

    /// The arguments and the decisions behind them.
    pub(crate) fn resolve(&self) -> Resolved {
        let mut args = vec!["dataplane".to_owned()];
        let main_cpu = self.main_cpu.unwrap_or_else(first_usable_cpu);
        match &self.lcores {
            Some(map) => args.extend(["--lcores".into(), map.clone()]),
            None => args.extend(["--lcores".into(), format!("0@{}", main_cpu.0)]),
        }
        let prefix = self.file_prefix.clone().unwrap_or_else(unique_prefix);
        args.extend(["--file-prefix".into(), prefix]);
        let mut fallback = false;
        let memory_note = match self.memory {
            Memory::Hugepages { mb } => {
                if let Some(mb) = mb {
                    args.extend(["-m".into(), mb.to_string()]);
                }
                "hugepages, as configured".to_owned()
            }
            Memory::NoHuge { mb } => {
                args.extend(["--no-huge".into(), "-m".into(), mb.to_string()]);
                "4 KiB pages (--no-huge), as configured".to_owned()
            }
            Memory::Auto => {
                let (free, why) = free_hugepage_bytes();
                if free >= AUTO_MIN_FREE_HUGEPAGES * (2 << 20) {
                    format!("hugepages: {why}")
                } else {
                    fallback = true;
                    args.extend([
                        "--no-huge".into(),
                        "-m".into(),
                        NO_HUGE_DEFAULT_MB.to_string(),
                    ]);
                    format!(
                        "4 KiB pages (--no-huge): {why}, fewer than {AUTO_MIN_FREE_HUGEPAGES} x 2 MiB"
                    )
                }
            }
        };
        // No shared files, no multi-process channel: nothing outlives the
        // process, and non-EAL threads may register as lcores (EAL refuses
        // them once multi-process is in use). `--in-memory` says both for
        // hugepages; with --no-huge (which implies EAL's legacy memory
        // mode, incompatible with --in-memory) `--no-shconf` does.
        if args.iter().any(|a| a == "--no-huge") {
            args.push("--no-shconf".into());
        } else {
            args.push("--in-memory".into());
        }
        match &self.pci {
            PciScan::All => {}
            PciScan::Allow(list) => {
                for dev in list {
                    args.extend(["-a".into(), dev.clone()]);
                }
            }
            PciScan::None => args.push("--no-pci".into()),
        }
        for vdev in &self.vdevs {
            args.extend(["--vdev".into(), vdev.clone()]);
        }
        for level in &self.log_levels {
            args.push(format!("--log-level={level}"));
        }
        if !self.telemetry {
            args.push("--no-telemetry".into());
        }
        args.extend(self.args.iter().cloned());
        if self.env_args
            && let Ok(extra) = std::env::var(EAL_ARGS_ENV)
        {
            args.extend(extra.split_whitespace().map(String::from));
        }
        Resolved {
            args,
            memory_note,
            fallback,
        }
    }
}

/// An [`EalConfig`] turned into arguments.
#[derive(Debug, Clone)]
// Without DPDK only the arguments are shown (EalConfig::args).
#[cfg_attr(not(dpdk), allow(dead_code))]
pub(crate) struct Resolved {
    /// `rte_eal_init`'s arguments, program name first.
    pub(crate) args: Vec<String>,
    /// Why the memory is what it is.
    pub(crate) memory_note: String,
    /// Whether [`Memory::Auto`] fell back to 4 KiB pages.
    pub(crate) fallback: bool,
}

fn first_usable_cpu() -> CpuId {
    crate::topology::process_affinity()
        .ok()
        .and_then(|cpus| cpus.first().copied())
        .unwrap_or(CpuId(0))
}

/// `dp<pid>_<n>`: unique per process and per call.
fn unique_prefix() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Relaxed: only uniqueness matters.
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("dp{}_{n}", std::process::id())
}

/// Free hugepage bytes of every size, and a line saying what was found.
fn free_hugepage_bytes() -> (u64, String) {
    let pools = hugepages::system::hugepage_pools();
    if pools.is_empty() {
        return (0, "the kernel offers no hugepages".into());
    }
    let free: u64 = pools.iter().map(|p| p.free_bytes()).sum();
    let list: Vec<String> = pools
        .iter()
        .map(|p| format!("{} of {} x {} KiB free", p.free, p.total, p.page_size >> 10))
        .collect();
    (free, list.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(args: &[String], flag: &str) -> Option<String> {
        args.windows(2).find(|w| w[0] == flag).map(|w| w[1].clone())
    }

    #[test]
    fn arguments() {
        let cfg = EalConfig::new()
            .main_cpu(CpuId(1))
            .memory(Memory::NoHuge { mb: 64 })
            .pci(PciScan::Allow(vec!["0000:03:00.0".into()]))
            .vdev("net_null0")
            .file_prefix("t1")
            .env_args(false)
            .arg("--huge-unlink");
        let args = cfg.args();
        assert_eq!(args[0], "dataplane");
        assert_eq!(pair(&args, "--lcores").as_deref(), Some("0@1"));
        assert_eq!(pair(&args, "-m").as_deref(), Some("64"));
        assert_eq!(pair(&args, "-a").as_deref(), Some("0000:03:00.0"));
        assert_eq!(pair(&args, "--vdev").as_deref(), Some("net_null0"));
        assert_eq!(pair(&args, "--file-prefix").as_deref(), Some("t1"));
        assert!(args.contains(&"--no-shconf".to_owned()));
        assert!(args.contains(&"--no-huge".to_owned()));
        assert!(args.contains(&"--no-telemetry".to_owned()));
        assert_eq!(args.last().map(String::as_str), Some("--huge-unlink"));
    }

    #[test]
    fn prefixes_are_unique() {
        let a = EalConfig::new().env_args(false).args();
        let b = EalConfig::new().env_args(false).args();
        assert_ne!(pair(&a, "--file-prefix"), pair(&b, "--file-prefix"));
    }

    #[test]
    fn explicit_hugepages_and_no_pci() {
        let cfg = EalConfig::new()
            .memory(Memory::Hugepages { mb: Some(256) })
            .pci(PciScan::None)
            .env_args(false);
        let r = cfg.resolve();
        assert!(!r.fallback);
        assert!(!r.args.contains(&"--no-huge".to_owned()));
        assert!(r.args.contains(&"--no-pci".to_owned()));
        assert!(r.args.contains(&"--in-memory".to_owned()));
        assert_eq!(pair(&r.args, "-m").as_deref(), Some("256"));
    }
}

/// The PCI addresses a Kubernetes device plugin gave this pod: every
/// `PCIDEVICE_*` environment variable (the SR-IOV network device plugin
/// sets one per resource, e.g. `PCIDEVICE_INTEL_COM_SRIOV_VFIO=0000:18:02.1,0000:18:02.2`),
/// split at commas, each checked to be a PCI address (others are logged
/// and left out), in order, without repeats.
pub fn device_plugin_devices() -> Vec<String> {
    devices_from_vars(std::env::vars())
}

/// [`device_plugin_devices`] over the variables given.
fn devices_from_vars(vars: impl Iterator<Item = (String, String)>) -> Vec<String> {
    let mut vars: Vec<(String, String)> =
        vars.filter(|(k, _)| k.starts_with("PCIDEVICE_")).collect();
    vars.sort();
    let mut out: Vec<String> = Vec::new();
    for (k, v) in vars {
        for a in v.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            match a.parse::<crate::topology::PciAddress>() {
                Ok(_) if !out.iter().any(|o| o == a) => out.push(a.to_string()),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(variable = %k, value = a, "not a PCI address, left out: {e}")
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod device_plugin_tests {
    #[test]
    fn pcidevice_variables_become_the_allow_list() {
        let vars = [
            (
                "PCIDEVICE_INTEL_COM_SRIOV_B",
                "0000:18:02.2,not-pci,0000:3b:00.0",
            ),
            ("HOME", "/root"),
            ("PCIDEVICE_INTEL_COM_SRIOV_A", "0000:18:02.1, 0000:18:02.2"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        assert_eq!(
            super::devices_from_vars(vars.into_iter()),
            ["0000:18:02.1", "0000:18:02.2", "0000:3b:00.0"]
        );
    }
}
