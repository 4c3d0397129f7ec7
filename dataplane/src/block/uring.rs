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

/// A ring with its bookkeeping: SQEs written since the last enter.
struct Ring {
    ring: IoUring,
    unsubmitted: u32,
    /// The index of the ring's fd in this thread's registered ring table
    /// (`IORING_REGISTER_RING_FDS`), set when the ring is enabled.
    registered_fd: Option<u32>,
    /// The thread that enabled the ring: its single issuer, and the owner
    /// of the registered ring fd.
    owner: Option<std::thread::ThreadId>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("fd", &self.ring.as_raw_fd())
            .field("unsubmitted", &self.unsubmitted)
            .field("registered_fd", &self.registered_fd)
            .finish()
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // The registered table holds a reference to the ring: release it,
        // or the ring (and its pinned buffers) would live until the thread
        // exits. Only the owning thread can.
        if let Some(index) = self.registered_fd
            && self.owner == Some(std::thread::current().id())
        {
            unregister_ring_fd(self.ring.as_raw_fd(), index);
        }
    }
}

impl Ring {
    fn new(
        entries: u32,
        iopoll: bool,
        sqpoll: Option<u32>,
        file: &OpenFile,
        iovecs: &[libc::iovec],
    ) -> Result<(Ring, TaskRun, bool)> {
        let (ring, mode) = build_ring(entries, iopoll, sqpoll)
            .map_err(|e| Error::io("creating an io_uring queue", e))?;
        ring.submitter()
            .register_files(&[file.file.as_raw_fd()])
            .map_err(|e| Error::io("registering the device with the ring", e))?;
        let mut registered = false;
        if !iovecs.is_empty() {
            // SAFETY: every iovec is a whole region of a mempool that the
            // queue keeps (its `pools` field, dropped after the rings), so
            // the memory stays mapped while it is registered.
            let r = unsafe { ring.submitter().register_buffers(iovecs) };
            match r {
                Ok(()) => registered = true,
                Err(e) => tracing::warn!(
                    "io_uring: buffers not registered ({e}; RLIMIT_MEMLOCK?): reads and writes \
                     pin pages per operation"
                ),
            }
        }
        Ok((
            Ring {
                ring,
                unsubmitted: 0,
                registered_fd: None,
                owner: None,
            },
            mode,
            registered,
        ))
    }

    /// Enables the ring from the calling thread, which becomes its single
    /// issuer, and registers the ring fd in this thread's table so that
    /// enters skip the file lookup (Linux 5.18; optional).
    fn enable(&mut self, sqpoll: bool) -> std::io::Result<()> {
        self.ring.submitter().register_enable_rings()?;
        self.owner = Some(std::thread::current().id());
        if !sqpoll {
            self.registered_fd = register_ring_fd(self.ring.as_raw_fd());
        }
        Ok(())
    }

    /// Submits what is pending and runs deferred task work or polls the
    /// device when there is a reason to, in one `io_uring_enter`; returns
    /// whether it entered.
    #[inline]
    fn kick(&mut self, must_poll: bool, sqpoll: bool) -> std::io::Result<bool> {
        let (taskrun, overflow) = {
            let sq = self.ring.submission();
            (sq.taskrun(), sq.cq_overflow())
        };
        if self.unsubmitted == 0 && !taskrun && !overflow && !must_poll {
            return Ok(false);
        }
        if sqpoll {
            // The crate wakes the kernel thread when it sleeps.
            self.ring.submitter().submit()?;
            self.unsubmitted = 0;
            return Ok(true);
        }
        let mut flags = 0;
        if taskrun || overflow || must_poll {
            flags |= IORING_ENTER_GETEVENTS;
        }
        let n = self.enter(self.unsubmitted, flags)?;
        self.unsubmitted = self.unsubmitted.saturating_sub(n);
        Ok(true)
    }

    /// Submits what is pending and sleeps until at least one completion
    /// is posted or `timeout` passes, in one `io_uring_enter` (needs
    /// `IORING_FEAT_EXT_ARG`, Linux 5.11, for the timeout). `Duration::MAX`
    /// sleeps with no timer at all, as fio does: arming one costs a timer
    /// programming per sleep, which in a VM is an exit to the hypervisor.
    fn wait(&mut self, timeout: Duration) -> std::io::Result<()> {
        if timeout == Duration::MAX {
            let n = self.enter_with(
                self.unsubmitted,
                1,
                IORING_ENTER_GETEVENTS,
                std::ptr::null(),
                0,
            );
            return match n {
                Ok(n) => {
                    self.unsubmitted = self.unsubmitted.saturating_sub(n);
                    Ok(())
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => Ok(()),
                Err(e) => Err(e),
            };
        }
        let ts = KernelTimespec {
            tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(timeout.subsec_nanos()),
        };
        let arg = GeteventsArg {
            sigmask: 0,
            sigmask_sz: 0,
            min_wait_usec: 0,
            ts: (&raw const ts).addr() as u64,
        };
        match self.enter_with(
            self.unsubmitted,
            1,
            IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG,
            (&raw const arg).cast(),
            std::mem::size_of::<GeteventsArg>(),
        ) {
            Ok(n) => {
                self.unsubmitted = self.unsubmitted.saturating_sub(n);
                Ok(())
            }
            // The timeout passed, or a signal came, with nothing posted.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `io_uring_enter(fd, to_submit, 0, flags)`, through the registered
    /// ring fd when there is one.
    #[inline]
    fn enter(&self, to_submit: u32, flags: u32) -> std::io::Result<u32> {
        self.enter_with(to_submit, 0, flags, std::ptr::null(), 0)
    }

    /// `io_uring_enter(fd, to_submit, min_complete, flags, arg, argsz)`,
    /// through the registered ring fd when there is one. `arg` is null
    /// (size 0) or an `io_uring_getevents_arg` under `IORING_ENTER_EXT_ARG`.
    #[inline]
    fn enter_with(
        &self,
        to_submit: u32,
        min_complete: u32,
        flags: u32,
        arg: *const libc::c_void,
        argsz: usize,
    ) -> std::io::Result<u32> {
        let (fd, flags) = match self.registered_fd {
            Some(index) => (index as libc::c_int, flags | IORING_ENTER_REGISTERED_RING),
            None => (self.ring.as_raw_fd(), flags),
        };
        // The entries it consumes were pushed by `submit`, whose contract
        // keeps their buffers alive until their completions are reaped.
        // SAFETY: `fd` is this ring's (fd or registered index); `arg` is null
        // (size 0) or `wait`'s getevents arg and timespec, live for the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_uring_enter,
                fd,
                to_submit,
                min_complete,
                flags,
                arg,
                argsz,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(r as u32)
    }
}

/// `IORING_ENTER_GETEVENTS` (include/uapi/linux/io_uring.h).
const IORING_ENTER_GETEVENTS: u32 = 1 << 0;
/// `IORING_ENTER_EXT_ARG`: the argument is an `io_uring_getevents_arg`
/// (Linux 5.11).
const IORING_ENTER_EXT_ARG: u32 = 1 << 3;

/// `struct io_uring_getevents_arg` (include/uapi/linux/io_uring.h; the
/// third field was `pad` before Linux 6.12 and must be 0 there).
#[repr(C)]
struct GeteventsArg {
    sigmask: u64,
    sigmask_sz: u32,
    min_wait_usec: u32,
    ts: u64,
}

/// `struct __kernel_timespec` (include/uapi/linux/time_types.h).
#[repr(C)]
struct KernelTimespec {
    tv_sec: i64,
    tv_nsec: i64,
}
/// `IORING_ENTER_REGISTERED_RING`: `fd` is an index in the registered
/// ring table (Linux 5.18).
const IORING_ENTER_REGISTERED_RING: u32 = 1 << 4;
/// `IORING_REGISTER_RING_FDS` (Linux 5.18).
const IORING_REGISTER_RING_FDS: libc::c_uint = 20;

/// `IORING_UNREGISTER_RING_FDS` (Linux 5.18).
const IORING_UNREGISTER_RING_FDS: libc::c_uint = 21;

/// `struct io_uring_rsrc_update` (include/uapi/linux/io_uring.h).
#[repr(C)]
struct RsrcUpdate {
    offset: u32,
    resv: u32,
    data: u64,
}

/// Registers `fd` in the calling thread's ring table; its index, or
/// `None` when the kernel does not have the table.
fn register_ring_fd(fd: libc::c_int) -> Option<u32> {
    let mut up = RsrcUpdate {
        offset: u32::MAX,
        resv: 0,
        data: fd as u64,
    };
    // SAFETY: IORING_REGISTER_RING_FDS reads and writes `nr_args` (1)
    // `io_uring_rsrc_update`s at the pointer, which is `up`, live for the
    // call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            fd,
            IORING_REGISTER_RING_FDS,
            &raw mut up,
            1u32,
        )
    };
    (r == 1).then_some(up.offset)
}

/// Removes entry `index` from the calling thread's ring table.
fn unregister_ring_fd(fd: libc::c_int, index: u32) {
    let mut up = RsrcUpdate {
        offset: index,
        resv: 0,
        data: 0,
    };
    // SAFETY: as in `register_ring_fd`: one `io_uring_rsrc_update`, live
    // for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            fd,
            IORING_UNREGISTER_RING_FDS,
            &raw mut up,
            1u32,
        )
    };
    if r != 1 {
        tracing::debug!(
            "io_uring: unregistering ring fd {index}: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// One lcore's io_uring queue.
pub(crate) struct UringQueue {
    /// The ring for reads and writes (IOPOLL when the device has it).
    main: Ring,
    /// With IOPOLL: the interrupt-driven ring for flush, write-zeroes and
    /// deallocate.
    aux: Option<Ring>,
    geometry: Geometry,
    inflight: InFlight,
    /// Registered buffers: (start, end) address of each, by index.
    fixed: Vec<(usize, usize)>,
    iopoll: bool,
    sqpoll: bool,
    /// The kernel takes a timeout on `io_uring_enter` (`wait` can sleep).
    ext_arg: bool,
    enabled: bool,
    failed: Option<std::io::Error>,
    stats: QueueStats,
    // Dropped after the rings: the registered memory and the registered file.
    _pools: Vec<Mempool>,
    _file: Arc<OpenFile>,
}

impl std::fmt::Debug for UringQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringQueue")
            .field("depth", &self.inflight.depth())
            .field("in_flight", &self.inflight.len())
            .field("iopoll", &self.iopoll)
            .field("sqpoll", &self.sqpoll)
            .field("fixed_buffers", &self.fixed.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl UringQueue {
    fn new(dev: &UringDevice, cfg: &QueueConfig) -> Result<UringQueue> {
        let depth = cfg.depth;
        let entries = u32::try_from(depth.next_power_of_two())
            .map_err(|_| Error::Config(format!("queue depth {depth} is too large")))?;
        let iovecs = fixed_buffers(
            cfg.buffers.iter().flat_map(|p| p.regions()),
            MAX_FIXED_BUFFER,
        );
        let mut fixed: Vec<(usize, usize)> = iovecs
            .iter()
            .map(|v| (v.iov_base.addr(), v.iov_base.addr() + v.iov_len))
            .collect();
        let (main, mode, registered) =
            Ring::new(entries, dev.iopoll, dev.sqpoll, &dev.file, &iovecs)?;
        if !registered {
            fixed.clear();
        }
        let ext_arg = main.ring.params().is_feature_ext_arg();
        let aux = if dev.iopoll {
            Some(Ring::new(entries, false, None, &dev.file, &[])?.0)
        } else {
            None
        };
        tracing::debug!(
            target = %dev.target,
            depth,
            fixed_buffers = fixed.len(),
            "io_uring queue: {}",
            mode.describe()
        );
        Ok(UringQueue {
            main,
            aux,
            geometry: dev.file.geometry.clone(),
            inflight: InFlight::new(depth),
            fixed,
            iopoll: dev.iopoll,
            sqpoll: dev.sqpoll.is_some(),
            ext_arg,
            enabled: false,
            failed: None,
            stats: QueueStats::default(),
            _pools: cfg.buffers.clone(),
            _file: dev.file.clone(),
        })
    }

    /// Enables the rings on the first use, from the lcore that uses them.
    #[cold]
    fn enable(&mut self) {
        self.enabled = true;
        let sqpoll = self.sqpoll;
        let r = self
            .main
            .enable(sqpoll)
            .and_then(|()| self.aux.as_mut().map_or(Ok(()), |a| a.enable(false)));
        if let Err(e) = r {
            tracing::error!("io_uring: cannot enable the queue's ring: {e}");
            self.failed = Some(e);
        }
    }

    /// The fixed buffer holding `addr`.
    #[inline]
    fn fixed_index(&self, addr: usize) -> Option<u16> {
        self.fixed
            .iter()
            .position(|&(start, end)| addr >= start && addr < end)
            .and_then(|i| u16::try_from(i).ok())
    }

    fn entry(&self, op: &Op) -> squeue::Entry {
        let offset = self.geometry.offset(op.lba);
        let len = self.geometry.len(op.blocks);
        match op.kind {
            OpKind::Read | OpKind::Write => {
                // The check made sure of the buffer and that `len` fits.
                let ptr = op
                    .buf
                    .as_ref()
                    .map_or(std::ptr::null_mut(), |b| b.as_ptr().cast_mut());
                let len = len as u32;
                let read = op.kind == OpKind::Read;
                match (self.fixed_index(ptr.addr()), read) {
                    (Some(i), true) => opcode::ReadFixed::new(FILE, ptr, len, i)
                        .offset(offset)
                        .build(),
                    (Some(i), false) => opcode::WriteFixed::new(FILE, ptr, len, i)
                        .offset(offset)
                        .build(),
                    (None, true) => opcode::Read::new(FILE, ptr, len).offset(offset).build(),
                    (None, false) => opcode::Write::new(FILE, ptr, len).offset(offset).build(),
                }
            }
            OpKind::Flush => opcode::Fsync::new(FILE)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
            OpKind::WriteZeroes => opcode::Fallocate::new(FILE, len)
                .offset(offset)
                .mode(libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE)
                .build(),
            OpKind::Deallocate => opcode::Fallocate::new(FILE, len)
                .offset(offset)
                .mode(libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE)
                .build(),
        }
    }

    /// Reaps up to `out`'s room from one ring.
    #[inline]
    fn reap(
        ring: &mut Ring,
        inflight: &mut InFlight,
        stats: &mut QueueStats,
        out: &mut Completions,
    ) -> usize {
        let mut n = 0;
        let room = out.spare();
        if room == 0 {
            return 0;
        }
        let mut cq = ring.ring.completion();
        for cqe in cq.by_ref().take(room) {
            let Some(slot) = inflight.take(cqe.user_data()) else {
                stats.errors += 1;
                continue;
            };
            let c = slot.complete_os(cqe.result());
            if !c.status.is_ok() {
                stats.errors += 1;
            }
            // Room was checked: `take(room)` never overfills.
            let _ = out.push(c);
            n += 1;
        }
        stats.completed += n as u64;
        n
    }

    fn kick(&mut self) {
        let in_flight = self.inflight.len() > 0;
        let must_poll = self.iopoll && in_flight;
        match self.main.kick(must_poll, self.sqpoll) {
            Ok(entered) => self.stats.syscalls += u64::from(entered),
            Err(e) => self.enter_failed(e),
        }
        if let Some(aux) = self.aux.as_mut() {
            match aux.kick(false, false) {
                Ok(entered) => self.stats.syscalls += u64::from(entered),
                Err(e) => self.enter_failed(e),
            }
        }
    }

    #[cold]
    fn enter_failed(&mut self, e: std::io::Error) {
        // EAGAIN/EBUSY: the kernel is short of room for completions; the
        // next pass retries. Anything else leaves the entries unconsumed.
        if matches!(
            e.raw_os_error(),
            Some(libc::EAGAIN | libc::EBUSY | libc::EINTR)
        ) {
            return;
        }
        self.stats.errors += 1;
        if self.failed.is_none() {
            tracing::error!(
                "io_uring_enter failed: {e}; the queue's pending operations cannot complete"
            );
            self.failed = Some(e);
        }
    }
}

impl Queue for UringQueue {
    #[inline]
    fn submit(&mut self, op: Op) -> Result<(), SubmitError> {
        if let Err(why) = self.geometry.check(&op) {
            return Err(SubmitError::Invalid { op, why });
        }
        if self.inflight.is_full() {
            return Err(SubmitError::Full(op));
        }
        if !self.enabled {
            self.enable();
        }
        let entry = self.entry(&op);
        let aux = self.aux.is_some() && !op.kind.has_data();
        let bytes = if op.kind.has_data() {
            self.geometry.len(op.blocks) as u32
        } else {
            0
        };
        let (lba, blocks) = (op.lba, op.blocks);
        let id = match self.inflight.insert(Slot::from_op(op, bytes)) {
            Ok(id) => id,
            Err(slot) => return Err(SubmitError::Full(slot.into_op(lba, blocks))),
        };
        let entry = entry.user_data(u64::from(id));
        let ring = match (&mut self.aux, aux) {
            (Some(r), true) => r,
            _ => &mut self.main,
        };
        // `Drop` reaps every completion, or leaks the buffer, before the
        // in-flight table goes.
        // SAFETY: slot `id`'s buffer is the table's until the completion for
        // `id` is reaped; fixed file 0 stays open as long as the ring.
        let pushed = unsafe { ring.ring.submission().push(&entry) };
        if pushed.is_err() {
            // The SQ holds at least `depth` entries and at most `depth` are
            // in flight, so this is never hit; hand the operation back.
            return match self.inflight.take(u64::from(id)) {
                Some(slot) => Err(SubmitError::Full(slot.into_op(lba, blocks))),
                None => Ok(()),
            };
        }
        ring.unsubmitted += 1;
        self.stats.submitted += 1;
        Ok(())
    }

    #[inline]
    fn poll(&mut self, out: &mut Completions) -> usize {
        if !self.enabled {
            self.enable();
        }
        if self.inflight.len() == 0 {
            return 0;
        }
        self.kick();
        let mut n = Self::reap(&mut self.main, &mut self.inflight, &mut self.stats, out);
        if let Some(aux) = self.aux.as_mut() {
            n += Self::reap(aux, &mut self.inflight, &mut self.stats, out);
        }
        n
    }

    fn wait(&mut self, out: &mut Completions, timeout: Duration) -> usize {
        if !self.enabled {
            self.enable();
        }
        // IOPOLL and SQPOLL rings poll already; an old kernel cannot bound
        // the sleep.
        if self.inflight.len() == 0
            || self.aux.is_some()
            || self.sqpoll
            || (!self.ext_arg && timeout != Duration::MAX)
            || self.failed.is_some()
            || !self.main.ring.completion().is_empty()
        {
            return self.poll(out);
        }
        match self.main.wait(timeout) {
            Ok(()) => self.stats.syscalls += 1,
            Err(e) => self.enter_failed(e),
        }
        Self::reap(&mut self.main, &mut self.inflight, &mut self.stats, out)
    }

    fn depth(&self) -> usize {
        self.inflight.depth()
    }

    fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    fn backend(&self) -> &'static str {
        "io_uring"
    }

    fn stats(&self) -> QueueStats {
        self.stats
    }
}

impl Drop for UringQueue {
    fn drop(&mut self) {
        if self.inflight.len() == 0 || !self.enabled {
            // Nothing in flight, or a ring that was never enabled and so
            // never handed anything to the kernel.
            return;
        }
        let deadline = Instant::now() + DROP_WAIT;
        let mut out = Completions::new();
        while self.inflight.len() > 0 && self.failed.is_none() && Instant::now() < deadline {
            self.kick();
            // Wait for one completion on the ring that has work, without
            // spinning: this is the control path.
            if self.aux.is_none() {
                if let Err(e) = self.main.ring.submitter().submit_and_wait(1) {
                    self.enter_failed(e);
                }
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
            Self::reap(
                &mut self.main,
                &mut self.inflight,
                &mut self.stats,
                &mut out,
            );
            if let Some(aux) = self.aux.as_mut() {
                Self::reap(aux, &mut self.inflight, &mut self.stats, &mut out);
            }
            out.clear();
        }
        let stuck = self.inflight.len();
        if stuck > 0 {
            // The kernel may still write into these buffers: never return
            // them to their pool.
            tracing::error!(
                stuck,
                "io_uring queue dropped with operations that did not complete: leaking their buffers"
            );
            self.inflight.leak_all();
        }
    }
}
