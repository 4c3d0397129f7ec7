//! Per-worker counters and status: written by the worker's lcore, read by
//! anyone.

use super::WorkerId;
use crossbeam_utils::CachePadded;
use serde::Serialize;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

/// Where a worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum WorkerStatus {
    /// `init` has not succeeded yet.
    Starting = 0,
    /// Handling messages.
    Running = 1,
    /// Paused: keeps its queue, answers control messages.
    Paused = 2,
    /// Its restart policy gave up; sends to it are refused.
    Failed = 3,
    /// The pool has stopped.
    Stopped = 4,
}

impl WorkerStatus {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => WorkerStatus::Starting,
            1 => WorkerStatus::Running,
            2 => WorkerStatus::Paused,
            3 => WorkerStatus::Failed,
            _ => WorkerStatus::Stopped,
        }
    }
}

/// A copy of one worker's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkerStats {
    /// The worker.
    pub worker: WorkerId,
    /// Its status.
    pub status: WorkerStatus,
    /// Messages taken from its queue.
    pub received: u64,
    /// Messages its handler accepted.
    pub handled: u64,
    /// Handler, `init` and `tick` errors.
    pub errors: u64,
    /// Handler, `init` and `tick` panics.
    pub panics: u64,
    /// Messages whose handler panicked (consumed, not handled).
    pub lost_in_panic: u64,
    /// Times its state was re-created after a failure.
    pub restarts: u64,
    /// Messages waiting for it now: in its ring and in the burst it holds.
    pub queue_depth: usize,
    /// How long ago it last handled a message; `None` if it never has.
    pub last_activity: Option<Duration>,
}

/// The shared, cache-padded counters behind [`WorkerStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    inner: CachePadded<Fields>,
    status: CachePadded<AtomicU8>,
}

#[derive(Debug, Default)]
struct Fields {
    received: AtomicU64,
    handled: AtomicU64,
    errors: AtomicU64,
    panics: AtomicU64,
    lost_in_panic: AtomicU64,
    /// Messages whose handler returned an error (a subset of `errors`).
    message_errors: AtomicU64,
    restarts: AtomicU64,
    /// TSC of the last handled message; 0 = never.
    last_activity: AtomicU64,
}

#[inline(always)]
fn bump(c: &AtomicU64, n: u64) {
    // Single writer (the worker's lcore): no locked instruction needed.
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

impl Counters {
    #[inline(always)]
    pub(crate) fn received(&self, n: u64) {
        bump(&self.inner.received, n);
    }
    #[inline(always)]
    pub(crate) fn handled(&self, n: u64, now: u64) {
        bump(&self.inner.handled, n);
        self.inner
            .last_activity
            .store(now.max(1), Ordering::Relaxed);
    }
    pub(crate) fn error(&self) {
        bump(&self.inner.errors, 1);
    }
    pub(crate) fn panic(&self, lost: u64) {
        bump(&self.inner.panics, 1);
        bump(&self.inner.lost_in_panic, lost);
    }
    pub(crate) fn restart(&self) {
        bump(&self.inner.restarts, 1);
    }

    pub(crate) fn set_status(&self, s: WorkerStatus) {
        // Release: what the worker did before (its init) is visible to a
        // thread that sees the new status.
        self.status.store(s as u8, Ordering::Release);
    }

    #[inline(always)]
    pub(crate) fn status(&self) -> WorkerStatus {
        WorkerStatus::from_u8(self.status.load(Ordering::Acquire))
    }

    /// Messages taken from the ring and not yet handled, failed or lost.
    pub(crate) fn held(&self) -> u64 {
        let f = &*self.inner;
        let done = f.handled.load(Ordering::Relaxed)
            + f.errors_on_messages()
            + f.lost_in_panic.load(Ordering::Relaxed);
        f.received.load(Ordering::Relaxed).saturating_sub(done)
    }

    pub(crate) fn snapshot(&self, worker: WorkerId, in_ring: usize) -> WorkerStats {
        let f = &*self.inner;
        let last = f.last_activity.load(Ordering::Relaxed);
        let now = crate::time::rdtsc();
        WorkerStats {
            worker,
            status: self.status(),
            received: f.received.load(Ordering::Relaxed),
            handled: f.handled.load(Ordering::Relaxed),
            errors: f.errors.load(Ordering::Relaxed),
            panics: f.panics.load(Ordering::Relaxed),
            lost_in_panic: f.lost_in_panic.load(Ordering::Relaxed),
            restarts: f.restarts.load(Ordering::Relaxed),
            queue_depth: in_ring + self.held() as usize,
            last_activity: (last != 0)
                .then(|| crate::time::tsc_to_duration(now.saturating_sub(last))),
        }
    }

    /// Messages whose handler returned an error (they were consumed).
    pub(crate) fn message_error(&self) {
        bump(&self.inner.errors, 1);
        bump(&self.inner.message_errors, 1);
    }
}

impl Fields {
    fn errors_on_messages(&self) -> u64 {
        self.message_errors.load(Ordering::Relaxed)
    }
}
