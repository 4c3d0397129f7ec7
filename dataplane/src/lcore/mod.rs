//! Lcores: threads pinned one per core, each running a run-to-completion
//! loop over the things it owns (DPDK's EAL lcores and
//! `rte_eal_mp_remote_launch`, in safe Rust).
//!
//! An [`LcoreGroup`] is built from a [`Plan`](crate::profile::Plan) (or lcore
//! by lcore), given [`Poller`]s, and launched. Each lcore thread pins itself
//! to its CPU, claims a mempool cache slot (so that `Mempool` and `Mbuf`
//! operations on it go through the per-lcore cache), then loops: one pass
//! calls every poller once; a pass that found nothing applies the idle
//! policy. The thread that launched the group is the *main lcore*: it runs
//! the main lcore's pollers, if any, when it calls [`Running::run_main`],
//! [`Running::stop`] or [`Running::join`].
//!
//! A stop is orderly: the lcores drain until nothing is in flight in any
//! ring between them (see the `run` module for the protocol and its
//! argument), then each poller's [`Poller::stop`] runs on its lcore.
//!
//! ```
//! use dataplane::lcore::{LcoreConfig, LcoreGroup, PollContext, Role};
//! use dataplane::ring;
//!
//! let (mut tx, mut rx) = ring::spsc::<u64>(1024)?;
//! let (mut sum_tx, mut sum_rx) = ring::spsc::<u64>(1)?;
//! let mut group = LcoreGroup::new();
//! let producer = group.add(LcoreConfig::new(Role::App));
//! let consumer = group.add(LcoreConfig::new(Role::App));
//! let mut next = 0u64;
//! group.poller(producer, move |ctx: &PollContext| {
//!     // A source: stops producing when the group drains.
//!     if ctx.stopping() || next == 10_000 { return 0; }
//!     match tx.push(next) { Ok(()) => { next += 1; 1 } Err(_) => 0 }
//! })?;
//! let mut sum = 0u64;
//! group.poller(consumer, move |ctx: &PollContext| {
//!     let mut n = 0;
//!     while let Some(v) = rx.pop() { sum += v; n += 1; }
//!     if ctx.stopping() && n == 0 { let _ = sum_tx.push(sum); }
//!     n
//! })?;
//! let running = group.launch()?;
//! std::thread::sleep(std::time::Duration::from_millis(50));
//! let reports = running.stop()?;
//! assert_eq!(reports.len(), 2);
//! // Whatever was produced before the stop was consumed.
//! assert!(sum_rx.pop().is_some());
//! # Ok::<(), dataplane::Error>(())
//! ```

mod affinity;
mod group;
mod run;
#[allow(unsafe_code)]
mod running;
mod stats;
#[cfg(test)]
mod tests;

use crate::topology::CpuId;
use crate::{Error, Result};
use serde::Serialize;
use std::cell::Cell;
use std::fmt;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub use affinity::current_cpu;
pub use group::{DEFAULT_DRAIN_TIMEOUT, LcoreConfig, LcoreGroup};
pub use run::Exit;
pub(crate) use running::panic_message;
pub use running::{LcoreReport, LcoreStatsView, Running, StopHandle};
pub use stats::{LcoreStats, LcoreStatsSnapshot};

use run::{Coordinator, Lcore};

/// An lcore's number within a runtime: dense, from 0, the main lcore first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct LcoreId(pub u32);

impl fmt::Display for LcoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lcore{}", self.0)
    }
}

/// What an lcore is for. The plan gives each lcore one role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The thread that built the runtime; runs control work and may poll.
    Main,
    /// Runs application workers.
    App,
    /// Owns NIC queues and NVMe queue pairs.
    Io,
    /// Owns an accelerator (GPU) compute queue.
    Accel,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Main => "main",
            Role::App => "app",
            Role::Io => "io",
            Role::Accel => "accel",
        })
    }
}

/// What an lcore does when a pass over its pollers found no work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IdlePolicy {
    /// Never back off: the lowest latency, a core at 100% always.
    BusyPoll,
    /// Spin with the pause hint for `spin_polls` idle passes, then yield the
    /// core for `yield_polls` more, then sleep, doubling from 1 µs up to
    /// `max_sleep`. Any work resets the ladder.
    Adaptive {
        /// Idle passes spent pausing before the first yield.
        spin_polls: u32,
        /// Idle passes spent yielding before the first sleep.
        yield_polls: u32,
        /// The longest sleep between idle passes.
        max_sleep: Duration,
    },
    /// Sleep `interval` after every idle pass: for a power profile.
    Sleep {
        /// How long to sleep when idle.
        interval: Duration,
    },
}

impl IdlePolicy {
    /// The adaptive policy the `production` profile uses: about 10 µs of
    /// spinning, then yields, then sleeps of at most 500 µs.
    pub const ADAPTIVE: IdlePolicy = IdlePolicy::Adaptive {
        spin_polls: 256,
        yield_polls: 64,
        max_sleep: Duration::from_micros(500),
    };
}

/// What a poller sees of its lcore during a pass.
#[derive(Debug, Clone)]
pub struct PollContext {
    lcore: LcoreId,
    now: u64,
    stopping: bool,
}

impl PollContext {
    /// The lcore running the pass.
    #[inline(always)]
    pub fn lcore(&self) -> LcoreId {
        self.lcore
    }

    /// The time stamp counter at the start of the pass (see
    /// [`crate::time`]; the read that ended the previous pass, with only
    /// the quit check between); read once per pass so pollers need not.
    #[inline(always)]
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Whether the group is draining: take no new input from outside the
    /// group, flush what you hold.
    #[inline(always)]
    pub fn stopping(&self) -> bool {
        self.stopping
    }
}

/// Something an lcore polls: rings, NIC queues, NVMe queue pairs,
/// accelerator queues, timers.
pub trait Poller: Send {
    /// One pass over what this poller owns, doing at most a burst of work
    /// per source. Returns the work done (items moved, completions reaped,
    /// timers fired); 0 means there was nothing to do.
    ///
    /// While [`PollContext::stopping`] is true the group is draining, and
    /// the stop is only safe if pollers keep this contract: take no new
    /// input from outside the group (stop reading NIC rx queues, stop
    /// generating), flush anything held privately (tx buffers, partial
    /// batches), and return more than 0 as long as anything was moved *or
    /// is still held*.
    fn poll(&mut self, ctx: &PollContext) -> usize;

    /// Runs once on the lcore after the group has drained.
    fn stop(&mut self, _ctx: &PollContext) {}
}

impl<F: FnMut(&PollContext) -> usize + Send> Poller for F {
    #[inline(always)]
    fn poll(&mut self, ctx: &PollContext) -> usize {
        self(ctx)
    }
}

std::thread_local! {
    static CURRENT: Cell<Option<LcoreId>> = const { Cell::new(None) };
}

/// The lcore the calling thread is, like `rte_lcore_id()`; `None` on a
/// thread that is not an lcore.
#[inline]
pub fn current() -> Option<LcoreId> {
    CURRENT.with(Cell::get)
}
