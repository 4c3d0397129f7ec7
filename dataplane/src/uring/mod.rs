//! What the io_uring users of the framework (`net::uring`'s sockets and
//! `block::uring`'s files) set up the same way: the ring with the best
//! task-run mode the kernel has, the check that the kernel knows the
//! opcodes a backend needs, and mempool regions described as fixed
//! buffers.
//!
//! Registering memory with a ring stays with each backend: what keeps the
//! memory mapped while it is registered is the backend's to say.

#[allow(unsafe_code)]
pub(crate) mod buf_ring;

use io_uring::IoUring;
use std::io;

/// How completions are posted: the setup flags a ring gets, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TaskRun {
    /// SINGLE_ISSUER | DEFER_TASKRUN | TASKRUN_FLAG (Linux 6.1): the kernel
    /// runs completion work only when the issuer enters; the ring must be
    /// used from one thread (create it disabled and enable it there).
    Defer,
    /// COOP_TASKRUN | TASKRUN_FLAG (Linux 5.19): no interrupt to post a
    /// completion, a flag that work is pending.
    Coop,
    /// Neither: completions interrupt the lcore to be posted.
    Plain,
}

impl TaskRun {
    /// The mode, in words, for notes and probes.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            TaskRun::Defer => "deferred task work (DEFER_TASKRUN)",
            TaskRun::Coop => "cooperative task work (COOP_TASKRUN)",
            TaskRun::Plain => "task work by interrupt (no COOP/DEFER_TASKRUN)",
        }
    }
}

/// How to build a ring.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RingSetup<'a> {
    /// Submission entries.
    pub(crate) entries: u32,
    /// Completion entries (0: the kernel's default, twice `entries`).
    pub(crate) cq_entries: u32,
    /// The task-run modes to try, best first.
    pub(crate) modes: &'a [TaskRun],
    /// Created disabled (`IORING_SETUP_R_DISABLED`), enabled by its user.
    pub(crate) disabled: bool,
    /// Polled completions (`IORING_SETUP_IOPOLL`).
    pub(crate) iopoll: bool,
    /// A kernel submission thread idling after this many milliseconds.
    pub(crate) sqpoll: Option<u32>,
}

/// Builds a ring with the first of `setup.modes` the kernel takes.
///
/// # Errors
///
/// The last mode's error when the kernel takes none of them.
pub(crate) fn build_ring(setup: &RingSetup<'_>) -> io::Result<(IoUring, TaskRun)> {
    let mut last = None;
    for &mode in setup.modes {
        let mut b = IoUring::builder();
        b.setup_clamp();
        if setup.cq_entries > 0 {
            b.setup_cqsize(setup.cq_entries);
        }
        if setup.disabled {
            b.setup_r_disabled();
        }
        if setup.iopoll {
            b.setup_iopoll();
        }
        if let Some(idle) = setup.sqpoll {
            b.setup_sqpoll(idle);
        }
        match mode {
            TaskRun::Defer => {
                b.setup_single_issuer()
                    .setup_defer_taskrun()
                    .setup_taskrun_flag();
            }
            TaskRun::Coop => {
                b.setup_coop_taskrun().setup_taskrun_flag();
            }
            TaskRun::Plain => {}
        }
        match b.build(setup.entries) {
            Ok(ring) => return Ok((ring, mode)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EINVAL)))
}

/// The names of the opcodes of `needed` that `ring`'s kernel does not
/// support.
///
/// # Errors
///
/// `IORING_REGISTER_PROBE` failing.
pub(crate) fn missing_opcodes(
    ring: &IoUring,
    needed: &[(u8, &'static str)],
) -> io::Result<Vec<&'static str>> {
    let mut probe = io_uring::Probe::new();
    ring.submitter().register_probe(&mut probe)?;
    Ok(needed
        .iter()
        .filter(|(code, _)| !probe.is_supported(*code))
        .map(|(_, name)| *name)
        .collect())
}

/// One iovec per region of `regions` no larger than `max_len` (the kernel
/// registers at most 1 GiB as one fixed buffer): what
/// `IORING_REGISTER_BUFFERS` takes.
pub(crate) fn fixed_buffers<'r>(
    regions: impl IntoIterator<Item = &'r hugepages::region::Region>,
    max_len: usize,
) -> Vec<libc::iovec> {
    regions
        .into_iter()
        .filter(|r| r.len() <= max_len)
        .map(|r| libc::iovec {
            iov_base: r.as_ptr().cast(),
            iov_len: r.len(),
        })
        .collect()
}

/// The largest buffer the kernel registers as one fixed buffer (1 GiB,
/// io_uring/rsrc.c); a larger region is left unregistered.
pub(crate) const MAX_FIXED_BUFFER: usize = 1 << 30;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::require::Capability;

    #[test]
    #[cfg_attr(miri, ignore)] // needs the kernel
    fn a_ring_builds_with_some_mode_and_knows_nop() {
        let setup = RingSetup {
            entries: 4,
            cq_entries: 0,
            modes: &[TaskRun::Defer, TaskRun::Coop, TaskRun::Plain],
            disabled: false,
            iopoll: false,
            sqpoll: None,
        };
        let (ring, mode) = match build_ring(&setup) {
            Ok(r) => r,
            Err(e) => {
                let why = format!("io_uring_setup: {e}");
                crate::require::available_or_skip(Capability::IoUring, false, &why);
                return;
            }
        };
        assert!(!mode.describe().is_empty());
        let missing = missing_opcodes(&ring, &[(io_uring::opcode::Nop::CODE, "NOP")])
            .expect("the probe registers");
        assert!(missing.is_empty(), "{missing:?}");
    }
}
