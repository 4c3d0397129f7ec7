//! The run-to-completion loop, the idle policies, and the orderly stop.
//!
//! # Stopping without losing anything in flight
//!
//! A stop is requested once for the whole group. Each lcore, when it sees
//! the request, switches its pollers to draining (they take no new input
//! from outside the group and flush what they hold) and takes part in a
//! termination check built on one shared counter, the *epoch*:
//!
//! 1. On entering drain mode an lcore bumps the epoch once. Everything it
//!    did before happens-before any pass that starts after the bump.
//! 2. In drain mode, an lcore reads the epoch *before* each pass. A pass
//!    that did work bumps the epoch *after* the work (so an item it pushed
//!    happens-before every pass that starts later); a pass that found
//!    nothing records the epoch it started at in the lcore's `idle_at` slot.
//! 3. The group is done when every lcore's `idle_at` equals the current
//!    epoch: each has completed a pass that found nothing and that started
//!    after the last work anywhere. An item pushed into any ring was pushed
//!    by a pass that bumped the epoch afterwards, so every consumer's
//!    recorded idle pass started after the push and would have seen it.
//!
//! That holds as long as pollers keep the contract of [`Poller::poll`]:
//! while draining, report work whenever they moved anything or still hold
//! anything privately. An lcore that panics or runs past the drain timeout
//! leaves the check (its slot reads "gone") so that the others can finish;
//! its report says so.

use super::stats::LcoreStats;
use super::{IdlePolicy, LcoreId, PollContext, Poller};
use crate::time::rdtsc;
use crossbeam_utils::CachePadded;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// `idle_at` value of an lcore that has not yet completed an idle drain pass.
const BUSY: u64 = u64::MAX;
/// `idle_at` value of an lcore that left the check (no pollers, panicked,
/// timed out, or exited).
const GONE: u64 = u64::MAX - 1;

/// The state the lcores of one group share to stop together.
#[derive(Debug)]
pub(crate) struct Coordinator {
    stop: CachePadded<AtomicBool>,
    done: CachePadded<AtomicBool>,
    epoch: CachePadded<AtomicU64>,
    idle_at: Box<[CachePadded<AtomicU64>]>,
}

impl Coordinator {
    /// A coordinator for `n` lcores; those in `absent` do not take part.
    pub(crate) fn new(n: usize, absent: impl Fn(usize) -> bool) -> Self {
        Coordinator {
            stop: CachePadded::new(AtomicBool::new(false)),
            done: CachePadded::new(AtomicBool::new(n == 0)),
            epoch: CachePadded::new(AtomicU64::new(0)),
            idle_at: (0..n)
                .map(|i| CachePadded::new(AtomicU64::new(if absent(i) { GONE } else { BUSY })))
                .collect(),
        }
    }

    /// Asks every lcore to drain and stop.
    pub(crate) fn request_stop(&self) {
        // Release: work the caller did before asking (pushes from a
        // non-lcore thread) happens-before the lcores' drain passes, which
        // load this flag with Acquire when they see it set.
        self.stop.store(true, Ordering::Release);
        if self
            .idle_at
            .iter()
            .all(|s| s.load(Ordering::Acquire) == GONE)
        {
            self.done.store(true, Ordering::Release);
        }
    }

    pub(crate) fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    pub(crate) fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Takes lcore `me` out of the check (it exits or never ran).
    pub(crate) fn leave(&self, me: usize) {
        self.idle_at[me].store(GONE, Ordering::Release);
        self.bump();
        // With one lcore fewer, the rest may already be quiescent.
        let e = self.epoch.load(Ordering::Acquire);
        if self.stop_requested() && self.quiescent(e) {
            self.done.store(true, Ordering::Release);
        }
    }

    fn bump(&self) {
        // AcqRel: Release publishes this lcore's pushes to every pass that
        // starts after it; the RMW chain keeps all bumps in one release
        // sequence.
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    fn quiescent(&self, e: u64) -> bool {
        self.epoch.load(Ordering::Acquire) == e
            && self.idle_at.iter().all(|s| {
                let v = s.load(Ordering::Acquire);
                v == e || v == GONE
            })
    }
}

/// How an lcore's loop ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Exit {
    /// Stopped after the group drained.
    Drained,
    /// Stopped at the drain timeout with work possibly still in flight.
    DrainTimedOut,
    /// A poller panicked; the lcore stopped there.
    Panicked(String),
}

/// The idle back-off ladder of [`IdlePolicy::Adaptive`].
struct Backoff {
    policy: IdlePolicy,
    idle: u32,
    sleep: Duration,
}

impl Backoff {
    fn new(policy: IdlePolicy) -> Self {
        Backoff {
            policy,
            idle: 0,
            sleep: Duration::from_micros(1),
        }
    }

    #[inline(always)]
    fn reset(&mut self) {
        self.idle = 0;
        self.sleep = Duration::from_micros(1);
    }

    /// Backs off after an idle pass; `draining` caps it at a yield so that
    /// a stop is never slowed by long sleeps.
    #[inline]
    fn idle(&mut self, draining: bool) {
        match self.policy {
            IdlePolicy::BusyPoll => core::hint::spin_loop(),
            IdlePolicy::Sleep { interval } => {
                if draining {
                    std::thread::yield_now()
                } else {
                    std::thread::sleep(interval)
                }
            }
            IdlePolicy::Adaptive {
                spin_polls,
                yield_polls,
                max_sleep,
            } => {
                self.idle = self.idle.saturating_add(1);
                if self.idle <= spin_polls {
                    core::hint::spin_loop();
                } else if self.idle <= spin_polls.saturating_add(yield_polls) || draining {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(self.sleep.min(max_sleep));
                    self.sleep = (self.sleep * 2).min(max_sleep);
                }
            }
        }
    }
}

/// One lcore's loop, from launch to exit. Runs on the lcore's thread.
pub(crate) struct Lcore<'a> {
    pub(crate) me: usize,
    pub(crate) id: LcoreId,
    pub(crate) pollers: &'a mut [Box<dyn Poller>],
    pub(crate) idle: IdlePolicy,
    pub(crate) stats: &'a LcoreStats,
    pub(crate) coord: &'a Coordinator,
    pub(crate) drain_timeout: Duration,
}

impl Lcore<'_> {
    /// Runs until the group has drained (or this lcore times out).
    pub(crate) fn run(&mut self) -> Exit {
        let mut ctx = PollContext {
            lcore: self.id,
            now: rdtsc(),
            stopping: false,
        };
        let mut backoff = Backoff::new(self.idle);

        // Normal mode. Relaxed: a plain check each pass; the Acquire load
        // in `stop_requested` below orders what follows. One TSC read per
        // busy pass: the read that ends a pass starts the next (a read
        // costs 20-40 cycles in a VM, a few percent of a 32-packet pass).
        while !self.coord.stop.load(Ordering::Relaxed) {
            let start = ctx.now;
            let work = self.poll_all(&ctx);
            ctx.now = rdtsc();
            self.stats.record_pass(work, ctx.now.wrapping_sub(start));
            if work > 0 {
                backoff.reset();
            } else {
                backoff.idle(false);
                let t = rdtsc();
                self.stats.record_idle(t.wrapping_sub(ctx.now));
                ctx.now = t;
            }
        }

        // Drain mode.
        let _ = self.coord.stop_requested();
        ctx.stopping = true;
        self.coord.bump();
        let deadline = Instant::now() + self.drain_timeout;
        let exit = loop {
            if self.coord.is_done() {
                break Exit::Drained;
            }
            let e = self.coord.epoch.load(Ordering::Acquire);
            if self.pass(&mut ctx) > 0 {
                self.coord.idle_at[self.me].store(BUSY, Ordering::Relaxed);
                self.coord.bump();
            } else {
                self.coord.idle_at[self.me].store(e, Ordering::Release);
                if self.coord.quiescent(e) {
                    self.coord.done.store(true, Ordering::Release);
                    break Exit::Drained;
                }
                backoff.idle(true);
            }
            if Instant::now() >= deadline {
                tracing::warn!(lcore = %self.id, timeout = ?self.drain_timeout, "drain timed out; work may be left in flight");
                self.coord.leave(self.me);
                break Exit::DrainTimedOut;
            }
        };
        ctx.now = rdtsc();
        for p in self.pollers.iter_mut() {
            p.stop(&ctx);
        }
        exit
    }

    /// One pass of the drain loop, timed on its own.
    #[inline(always)]
    fn pass(&mut self, ctx: &mut PollContext) -> usize {
        let start = rdtsc();
        ctx.now = start;
        let work = self.poll_all(ctx);
        self.stats.record_pass(work, rdtsc().wrapping_sub(start));
        work
    }

    /// Every poller once, in order.
    #[inline(always)]
    fn poll_all(&mut self, ctx: &PollContext) -> usize {
        let mut work = 0;
        for p in self.pollers.iter_mut() {
            work += p.poll(ctx);
        }
        work
    }
}
