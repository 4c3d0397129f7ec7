//! The io_uring backend: one ring per lcore over a file or block device
//! opened `O_DIRECT`.
//!
//! - **Registered buffers and files.** The mempools named in the
//!   [`QueueConfig`] are registered once (one fixed buffer per region), so
//!   reads and writes from them are `READ_FIXED`/`WRITE_FIXED` with no page
//!   pinning per I/O; the device is fixed file 0. A buffer from elsewhere
//!   still works, through plain `READ`/`WRITE`.
//! - **Batched submission.** `submit` only writes the entry into the
//!   submission ring. `poll` makes at most one `io_uring_enter` per pass,
//!   and only when there is something to submit, task work to run, or a
//!   polled device to poll; a pass that only finds completions makes none.
//! - **Completions.** With IOPOLL (when the device has poll queues and a
//!   polled read at open succeeded) the enter polls the device; flush,
//!   write-zeroes and deallocate, which IOPOLL rings refuse, go through a
//!   second, interrupt-driven ring. Otherwise completions arrive by
//!   interrupt, as task work the ring defers to our next enter
//!   (`DEFER_TASKRUN`, Linux 6.1; `COOP_TASKRUN` before that), so the lcore
//!   is never interrupted to post them.
//! - **Ownership.** The ring is created disabled and enabled by the first
//!   `submit` or `poll`, so the lcore that uses it is its single issuer
//!   even when it was created on another thread. A queue must stay on
//!   that thread afterwards.

mod queue;
mod ring;

use queue::UringQueue;

use super::completion::{Completions, SubmitError};
use super::file::{self, OpenFile};
use super::inflight::{InFlight, Slot};
use super::op::{Op, OpKind};
use super::{
    Backend, Device, DeviceConfig, Geometry, PollMode, Queue, QueueConfig, QueueStats, Target,
};
use crate::backend::Probe;
use crate::uring::{MAX_FIXED_BUFFER, RingSetup, TaskRun, fixed_buffers, missing_opcodes};
use crate::{Error, Result};
use hugepages::mempool::Mempool;
use hugepages::region::Region;
use io_uring::{IoUring, opcode, squeue, types};
use std::os::fd::AsRawFd;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The device, as the ring knows it: fixed file 0.
const FILE: types::Fixed = types::Fixed(0);

/// How long dropping a queue waits for operations still in flight before
/// giving their buffers up (leaked, never reused while the device may
/// still write them).
const DROP_WAIT: Duration = Duration::from_secs(30);

/// The io_uring backend.
#[derive(Debug)]
pub(crate) struct Uring;

/// Builds a disabled ring of `entries` (the lcore that uses it enables
/// it) with the best task-run mode the kernel has.
fn build_ring(
    entries: u32,
    iopoll: bool,
    sqpoll: Option<u32>,
) -> std::io::Result<(IoUring, TaskRun)> {
    let modes: &[TaskRun] = if sqpoll.is_some() {
        // Deferred task work needs the submitter to reap; SQPOLL submits
        // from a kernel thread.
        &[TaskRun::Plain]
    } else {
        &[TaskRun::Defer, TaskRun::Coop, TaskRun::Plain]
    };
    crate::uring::build_ring(&RingSetup {
        entries,
        cq_entries: entries * 2,
        modes,
        disabled: true,
        iopoll,
        sqpoll,
    })
}

fn probe_once() -> Probe {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    if std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").is_ok_and(|s| s.trim() == "2")
    {
        return Probe::unavailable(format!(
            "disabled by sysctl kernel.io_uring_disabled = 2 (kernel {kernel})"
        ));
    }
    let (ring, mode) = match build_ring(8, false, None) {
        Ok(r) => r,
        Err(e) => {
            let why = match e.raw_os_error() {
                Some(libc::ENOSYS) => "the kernel has no io_uring (ENOSYS)".to_owned(),
                Some(libc::EPERM) => {
                    "io_uring_setup refused (EPERM: seccomp, an LSM or kernel.io_uring_disabled)"
                        .to_owned()
                }
                _ => format!("io_uring_setup failed: {e}"),
            };
            return Probe::unavailable(format!("{why} (kernel {kernel})"));
        }
    };
    let needed = [
        (opcode::ReadFixed::CODE, "READ_FIXED"),
        (opcode::WriteFixed::CODE, "WRITE_FIXED"),
        (opcode::Read::CODE, "READ"),
        (opcode::Write::CODE, "WRITE"),
        (opcode::Fsync::CODE, "FSYNC"),
        (opcode::Fallocate::CODE, "FALLOCATE"),
    ];
    let missing = match missing_opcodes(&ring, &needed) {
        Ok(m) => m,
        Err(e) => {
            return Probe::unavailable(format!(
                "cannot list the kernel's io_uring opcodes: {e} (kernel {kernel})"
            ));
        }
    };
    if !missing.is_empty() {
        return Probe::unavailable(format!(
            "the kernel's io_uring lacks {} (kernel {kernel})",
            missing.join(", ")
        ));
    }
    Probe::ok(format!(
        "io_uring with fixed buffers and files, fsync and fallocate; {} (kernel {kernel})",
        mode.describe()
    ))
}

impl Backend for Uring {
    fn probe(&self) -> Probe {
        static PROBE: OnceLock<Probe> = OnceLock::new();
        PROBE.get_or_init(probe_once).clone()
    }

    fn handles(&self, target: &Target) -> bool {
        matches!(target, Target::Path(_))
    }

    fn open(&self, cfg: &DeviceConfig) -> Result<Arc<dyn Device>> {
        let probe = self.probe();
        if !probe.available {
            return Err(Error::Config(probe.reason));
        }
        let Target::Path(path) = Target::parse(&cfg.target)? else {
            return Err(Error::Config(format!(
                "io_uring opens paths, not {}",
                cfg.target
            )));
        };
        let f = file::open(&path, cfg)?;
        let mut notes = f.notes.clone();
        let iopoll = match cfg.iopoll {
            PollMode::Off => {
                notes.push("completions by interrupt (IOPOLL turned off)".into());
                false
            }
            PollMode::Auto | PollMode::Required => match polled_read(&f) {
                Ok(()) => {
                    notes.push("completions polled (IOPOLL: a polled read succeeded)".into());
                    true
                }
                Err(why) if cfg.iopoll == PollMode::Required => {
                    return Err(Error::Config(format!(
                        "IOPOLL required but unavailable on {}: {why}",
                        cfg.target
                    )));
                }
                Err(why) => {
                    tracing::info!(target = %cfg.target, "io_uring: no IOPOLL: {why}; completions by interrupt");
                    notes.push(format!("completions by interrupt: no IOPOLL ({why})"));
                    false
                }
            },
        };
        if let Some(idle) = cfg.sqpoll_idle_ms {
            // Refused here rather than per queue: a kernel without SQPOLL
            // for this user would refuse every queue.
            build_ring(2, iopoll, Some(idle))
                .map_err(|e| Error::io(format!("SQPOLL refused for {}", cfg.target), e))?;
            notes.push(format!("SQPOLL (kernel thread idles after {idle} ms)"));
        }
        Ok(Arc::new(UringDevice {
            target: cfg.target.clone(),
            file: Arc::new(f),
            iopoll,
            sqpoll: cfg.sqpoll_idle_ms,
            notes,
        }))
    }
}

/// One polled read of block 0 on a fresh IOPOLL ring: whether the device
/// really completes polled I/O, not only whether sysfs says so.
fn polled_read(f: &OpenFile) -> std::result::Result<(), String> {
    if !f.direct {
        return Err("polled I/O needs O_DIRECT".into());
    }
    if !f.pollable {
        return Err("the device has no poll queues (queue/io_poll is 0)".into());
    }
    let len = f.geometry.block_size as usize;
    // A page-aligned, zeroed buffer that outlives the ring below.
    let region = Region::builder(len.max(4096))
        .allow_fallback(true)
        .build()
        .map_err(|e| format!("no buffer for the probe: {e}"))?;
    let (mut ring, _) = build_ring(2, true, None).map_err(|e| format!("IOPOLL ring: {e}"))?;
    ring.submitter()
        .register_enable_rings()
        .map_err(|e| format!("enabling the probe ring: {e}"))?;
    let read = opcode::Read::new(types::Fd(f.file.as_raw_fd()), region.as_ptr(), len as u32)
        .offset(0)
        .build()
        .user_data(1);
    // The ring is dropped before both, after the wait below reaps the
    // completion (or on error, with nothing submitted).
    // SAFETY: the buffer (the region's first `len` bytes) and `f.file`
    // outlive the ring.
    let pushed = unsafe { ring.submission().push(&read) };
    pushed.map_err(|_| "the probe ring was full".to_owned())?;
    ring.submit_and_wait(1)
        .map_err(|e| format!("io_uring_enter on the probe ring: {e}"))?;
    let Some(cqe) = ring.completion().next() else {
        return Err("no completion for the polled read".into());
    };
    if cqe.result() < 0 {
        return Err(format!(
            "the polled read failed: {}",
            std::io::Error::from_raw_os_error(-cqe.result())
        ));
    }
    Ok(())
}

/// A file or block device opened for io_uring queues.
#[derive(Debug)]
pub(crate) struct UringDevice {
    target: String,
    file: Arc<OpenFile>,
    iopoll: bool,
    sqpoll: Option<u32>,
    notes: Vec<String>,
}

impl Device for UringDevice {
    fn backend(&self) -> &'static str {
        "io_uring"
    }

    fn target(&self) -> &str {
        &self.target
    }

    fn geometry(&self) -> &Geometry {
        &self.file.geometry
    }

    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }

    fn queue(&self, cfg: &QueueConfig) -> Result<Box<dyn Queue>> {
        cfg.validate()?;
        Ok(Box::new(UringQueue::new(self, cfg)?))
    }
}
