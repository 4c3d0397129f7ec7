//! One io_uring with the device as its fixed file: set-up, the raw
//! `io_uring_enter` with a timeout, and the registered ring descriptor.

use super::*;

/// The most submissions [`Ring::wait`] hands the kernel in one enter.
///
/// io_uring dispatches the requests of one `io_uring_enter` under one block
/// plug, so a lcore that wakes to 31 completions and resubmits all 31 at
/// once sends the device one burst, which comes back as one burst of
/// completions, which the next sleep turns into the next burst: the queue
/// depth is spent in convoys instead of a steady stream. Measured with
/// `nvme-perf --wait` at QD32 on this project's virtio disk and loop device
/// (docs/performance.md, Storage): 31 of 32 submitted per enter was typical,
/// at 0.84-0.93x fio's IOPS (fio submits each I/O in an enter of its own);
/// chunks of 1 to 8 gave 0.96-1.06x with 0.8-0.9x fio's CPU per I/O, 2 and
/// 4 the best of them (io_uring plugs only a submission of more than 2).
/// Polling reaps every pass, so its batches stay small by themselves.
pub(super) const SLEEP_SUBMIT_CHUNK: u32 = 4;

/// A ring with its bookkeeping: SQEs written since the last enter.
pub(super) struct Ring {
    pub(super) ring: IoUring,
    pub(super) unsubmitted: u32,
    /// The index of the ring's fd in this thread's registered ring table
    /// (`IORING_REGISTER_RING_FDS`), set when the ring is enabled.
    pub(super) registered_fd: Option<u32>,
    /// The thread that enabled the ring: its single issuer, and the owner
    /// of the registered ring fd.
    pub(super) owner: Option<std::thread::ThreadId>,
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
    pub(super) fn new(
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
    pub(super) fn enable(&mut self, sqpoll: bool) -> std::io::Result<()> {
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
    pub(super) fn kick(&mut self, must_poll: bool, sqpoll: bool) -> std::io::Result<bool> {
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
    /// is posted or `timeout` passes, sleeping in one `io_uring_enter` (needs
    /// `IORING_FEAT_EXT_ARG`, Linux 5.11, for the timeout). `Duration::MAX`
    /// sleeps with no timer at all, as fio does: arming one costs a timer
    /// programming per sleep, which in a VM is an exit to the hypervisor.
    ///
    /// A backlog longer than [`SLEEP_SUBMIT_CHUNK`] goes in first in
    /// chunks of that size, each in an enter that does not sleep. Returns
    /// the number of enters made.
    pub(super) fn wait(&mut self, timeout: Duration) -> std::io::Result<u64> {
        let mut enters = 1;
        while self.unsubmitted > SLEEP_SUBMIT_CHUNK {
            enters += 1;
            match self.enter(SLEEP_SUBMIT_CHUNK, IORING_ENTER_GETEVENTS) {
                Ok(0) => break,
                Ok(n) => self.unsubmitted = self.unsubmitted.saturating_sub(n),
                // Nothing was lost: what is left goes in on the next call.
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => return Ok(enters - 1),
                Err(e) => return Err(e),
            }
        }
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
                    Ok(enters)
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => Ok(enters),
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
                Ok(enters)
            }
            // The timeout passed, or a signal came, with nothing posted.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR)) => Ok(enters),
            Err(e) => Err(e),
        }
    }

    /// `io_uring_enter(fd, to_submit, 0, flags)`, through the registered
    /// ring fd when there is one.
    #[inline]
    pub(super) fn enter(&self, to_submit: u32, flags: u32) -> std::io::Result<u32> {
        self.enter_with(to_submit, 0, flags, std::ptr::null(), 0)
    }

    /// `io_uring_enter(fd, to_submit, min_complete, flags, arg, argsz)`,
    /// through the registered ring fd when there is one. `arg` is null
    /// (size 0) or an `io_uring_getevents_arg` under `IORING_ENTER_EXT_ARG`.
    #[inline]
    pub(super) fn enter_with(
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
pub(super) const IORING_ENTER_GETEVENTS: u32 = 1 << 0;
/// `IORING_ENTER_EXT_ARG`: the argument is an `io_uring_getevents_arg`
/// (Linux 5.11).
pub(super) const IORING_ENTER_EXT_ARG: u32 = 1 << 3;

/// `struct io_uring_getevents_arg` (include/uapi/linux/io_uring.h; the
/// third field was `pad` before Linux 6.12 and must be 0 there).
#[repr(C)]
pub(super) struct GeteventsArg {
    sigmask: u64,
    sigmask_sz: u32,
    min_wait_usec: u32,
    ts: u64,
}

/// `struct __kernel_timespec` (include/uapi/linux/time_types.h).
#[repr(C)]
pub(super) struct KernelTimespec {
    tv_sec: i64,
    tv_nsec: i64,
}
/// `IORING_ENTER_REGISTERED_RING`: `fd` is an index in the registered
/// ring table (Linux 5.18).
pub(super) const IORING_ENTER_REGISTERED_RING: u32 = 1 << 4;
/// `IORING_REGISTER_RING_FDS` (Linux 5.18).
pub(super) const IORING_REGISTER_RING_FDS: libc::c_uint = 20;

/// `IORING_UNREGISTER_RING_FDS` (Linux 5.18).
pub(super) const IORING_UNREGISTER_RING_FDS: libc::c_uint = 21;

/// `struct io_uring_rsrc_update` (include/uapi/linux/io_uring.h).
#[repr(C)]
pub(super) struct RsrcUpdate {
    offset: u32,
    resv: u32,
    data: u64,
}

/// Registers `fd` in the calling thread's ring table; its index, or
/// `None` when the kernel does not have the table.
pub(super) fn register_ring_fd(fd: libc::c_int) -> Option<u32> {
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
pub(super) fn unregister_ring_fd(fd: libc::c_int, index: u32) {
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
