//! An asymmetric store-load barrier for blocking channels: the side that
//! goes to sleep pays for it, the side that sends pays (almost) nothing.
//!
//! A thread about to park on an empty (or full) channel must not miss the
//! other side's next operation: it announces itself (a waiter count), then
//! looks at the channel once more; the other side completes its operation,
//! then looks at the waiter count. That is Dekker's pattern, which needs a
//! store-load barrier on both sides, and a full fence on every send would
//! cost more than the send itself. Linux's `membarrier(2)` moves the whole
//! cost to the waiter: `MEMBARRIER_CMD_PRIVATE_EXPEDITED` makes every
//! running thread of the process pass a full barrier before it returns, so
//! the fast side only has to keep the compiler from reordering its two
//! accesses ([`light`]). Where the kernel lacks the command (before 4.14,
//! or a seccomp profile that refuses it) both sides fall back to a
//! `SeqCst` fence, which is always correct.

#[cfg(not(any(loom, miri)))]
use std::sync::atomic::{AtomicU8, Ordering, compiler_fence, fence};

#[cfg(not(any(loom, miri)))]
const UNKNOWN: u8 = 0;
#[cfg(not(any(loom, miri)))]
const ASYMMETRIC: u8 = 1;
#[cfg(not(any(loom, miri)))]
const SYMMETRIC: u8 = 2;

#[cfg(not(any(loom, miri)))]
static MODE: AtomicU8 = AtomicU8::new(UNKNOWN);

// linux/membarrier.h
#[cfg(not(any(loom, miri)))]
const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
#[cfg(not(any(loom, miri)))]
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

/// Registers the process for expedited membarriers, once. Call before any
/// thread may take the [`light`] side (a channel's constructor does): the
/// light side reads the outcome.
#[inline]
pub(crate) fn init() {
    #[cfg(not(any(loom, miri)))]
    if MODE.load(Ordering::Acquire) == UNKNOWN {
        init_slow();
    }
}

#[cfg(not(any(loom, miri)))]
#[cold]
fn init_slow() {
    // SAFETY: membarrier takes two integers and touches no memory of ours.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
            0 as libc::c_long,
        )
    };
    let mode = if rc == 0 { ASYMMETRIC } else { SYMMETRIC };
    if mode == SYMMETRIC {
        tracing::info!(
            error = %std::io::Error::last_os_error(),
            "membarrier unavailable: channels and worker queues fence on every operation \
             that could wake a waiting thread"
        );
    }
    // Several threads may race here; they all reach the same answer.
    MODE.store(mode, Ordering::Release);
}

/// The fast side's half: orders its preceding store (the operation) before
/// its following load (the waiter count).
#[inline(always)]
pub(crate) fn light() {
    #[cfg(not(any(loom, miri)))]
    {
        if MODE.load(Ordering::Relaxed) == ASYMMETRIC {
            compiler_fence(Ordering::SeqCst);
        } else {
            fence(Ordering::SeqCst);
        }
    }
    #[cfg(any(loom, miri))]
    hugepages::sync::fence(hugepages::sync::Ordering::SeqCst);
}

/// The sleeping side's half: after it returns, every store another thread
/// made before its [`light`] is visible, or that thread's load after its
/// `light` will see the caller's stores made before this call. Returns
/// false in the one case where that is not known to hold (the kernel took
/// the registration, then refused the barrier): the caller must then not
/// sleep without a timeout.
#[inline]
pub(crate) fn heavy() -> bool {
    #[cfg(not(any(loom, miri)))]
    {
        if MODE.load(Ordering::Acquire) == ASYMMETRIC {
            // SAFETY: as in `init_slow`.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_membarrier,
                    MEMBARRIER_CMD_PRIVATE_EXPEDITED,
                    0 as libc::c_long,
                )
            };
            if rc == 0 {
                return true;
            }
            tracing::warn!(error = %std::io::Error::last_os_error(), "membarrier failed");
            fence(Ordering::SeqCst);
            return false;
        }
        fence(Ordering::SeqCst);
        true
    }
    #[cfg(any(loom, miri))]
    {
        hugepages::sync::fence(hugepages::sync::Ordering::SeqCst);
        true
    }
}

/// Whether [`heavy`] is backed by the kernel (false before [`init`], and
/// under Miri and loom).
#[cfg(test)]
pub(crate) fn asymmetric() -> bool {
    #[cfg(not(any(loom, miri)))]
    {
        MODE.load(Ordering::Relaxed) == ASYMMETRIC
    }
    #[cfg(any(loom, miri))]
    false
}

#[cfg(all(test, not(any(loom, miri))))]
mod tests {
    #[test]
    fn registers_on_linux() {
        super::init();
        assert!(super::heavy());
        super::light();
        // Every kernel this runs on (4.14+) has the command; a seccomp
        // profile may still refuse it, which is the fallback's case.
        if !super::asymmetric() {
            eprintln!("membarrier refused here: the symmetric fallback is in use");
        }
    }
}
