//! Pinning threads to CPUs, and refusing CPUs that cannot be used before
//! any thread starts.

use crate::topology::CpuId;
use crate::{Error, Result};
use nix::sched::{CpuSet, sched_setaffinity};
use nix::unistd::Pid;

/// The CPUs lcores may be pinned to: the process's affinity as first
/// seen (see [`crate::topology::process_affinity`]).
pub(crate) fn allowed_cpus() -> Result<Vec<CpuId>> {
    crate::topology::process_affinity()
}

/// The calling thread's own mask now (to restore it after pinning).
pub(crate) fn thread_cpus() -> Result<Vec<CpuId>> {
    crate::topology::sysfs_thread_affinity().map_err(|e| Error::io("sched_getaffinity", e.into()))
}

/// Checks that `cpu` exists, is online and is in `allowed`.
pub(crate) fn check_cpu(cpu: CpuId, allowed: &[CpuId]) -> Result<()> {
    if cpu.0 as usize >= CpuSet::count() {
        return Err(Error::Cpu {
            cpu: cpu.0,
            reason: format!("beyond the {} CPUs a cpu set can name", CpuSet::count()),
        });
    }
    let dir = format!("/sys/devices/system/cpu/cpu{}", cpu.0);
    if !std::path::Path::new(&dir).exists() {
        return Err(Error::Cpu {
            cpu: cpu.0,
            reason: "no such CPU on this machine".into(),
        });
    }
    // cpu0 often has no `online` file: it cannot be taken offline.
    if let Ok(s) = std::fs::read_to_string(format!("{dir}/online"))
        && s.trim() == "0"
    {
        return Err(Error::Cpu {
            cpu: cpu.0,
            reason: "offline".into(),
        });
    }
    if !allowed.contains(&cpu) {
        let list: Vec<String> = allowed.iter().map(|c| c.0.to_string()).collect();
        return Err(Error::Cpu {
            cpu: cpu.0,
            reason: format!("not in this process's affinity mask ({})", list.join(",")),
        });
    }
    Ok(())
}

/// Pins the calling thread to `cpu`.
pub(crate) fn pin_current(cpu: CpuId) -> Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu.0 as usize).map_err(|e| Error::Cpu {
        cpu: cpu.0,
        reason: e.to_string(),
    })?;
    sched_setaffinity(Pid::from_raw(0), &set).map_err(|e| Error::Cpu {
        cpu: cpu.0,
        reason: format!("sched_setaffinity: {e}"),
    })
}

/// Restores the calling thread's mask to `cpus`.
pub(crate) fn set_current(cpus: &[CpuId]) -> Result<()> {
    let mut set = CpuSet::new();
    for c in cpus {
        set.set(c.0 as usize).map_err(|e| Error::Cpu {
            cpu: c.0,
            reason: e.to_string(),
        })?;
    }
    sched_setaffinity(Pid::from_raw(0), &set).map_err(|e| Error::io("sched_setaffinity", e.into()))
}

/// The CPU the calling thread is running on now.
pub fn current_cpu() -> Option<CpuId> {
    // `sched_getcpu` reads the vDSO; a negative return means unsupported.
    let cpu = nix::sched::sched_getcpu().ok()?;
    Some(CpuId(cpu as u32))
}
