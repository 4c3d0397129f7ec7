//! Per-lcore counters: written by their lcore alone, read by anyone.

use crossbeam_utils::CachePadded;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};

/// One lcore's counters, on cache lines of their own.
///
/// Only the owning lcore writes them (a plain load-add-store, no locked
/// instruction: DPDK's per-lcore stats are plain fields for the same
/// reason); any thread may take a [`snapshot`](LcoreStats::snapshot), which
/// is consistent per counter, not across counters.
#[derive(Debug, Default)]
pub struct LcoreStats {
    inner: CachePadded<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    passes: AtomicU64,
    busy_passes: AtomicU64,
    work_items: AtomicU64,
    busy_cycles: AtomicU64,
    idle_cycles: AtomicU64,
}

/// A copy of an lcore's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LcoreStatsSnapshot {
    /// Passes over the pollers.
    pub passes: u64,
    /// Passes that found work.
    pub busy_passes: u64,
    /// Passes that found none.
    pub idle_passes: u64,
    /// Work items the pollers reported.
    pub work_items: u64,
    /// TSC cycles spent in passes that found work.
    pub busy_cycles: u64,
    /// TSC cycles spent in passes that found none, including idle back-off.
    pub idle_cycles: u64,
}

impl LcoreStatsSnapshot {
    /// Busy cycles over all cycles, 0.0 to 1.0: how loaded the lcore is,
    /// as opposed to its CPU time, which is 100% when it busy-polls.
    pub fn busy_ratio(&self) -> f64 {
        let total = self.busy_cycles + self.idle_cycles;
        if total == 0 {
            0.0
        } else {
            self.busy_cycles as f64 / total as f64
        }
    }
}

#[inline(always)]
fn bump(c: &AtomicU64, n: u64) {
    // Single writer: Relaxed load and store; readers only need each value
    // to be untorn.
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

impl LcoreStats {
    /// Records one pass. Called by the owning lcore only.
    #[inline(always)]
    pub(crate) fn record_pass(&self, work: usize, cycles: u64) {
        let c = &*self.inner;
        bump(&c.passes, 1);
        if work > 0 {
            bump(&c.busy_passes, 1);
            bump(&c.work_items, work as u64);
            bump(&c.busy_cycles, cycles);
        } else {
            bump(&c.idle_cycles, cycles);
        }
    }

    /// Adds idle back-off time. Called by the owning lcore only.
    #[inline(always)]
    pub(crate) fn record_idle(&self, cycles: u64) {
        bump(&self.inner.idle_cycles, cycles);
    }

    /// The counters now.
    pub fn snapshot(&self) -> LcoreStatsSnapshot {
        let c = &*self.inner;
        let passes = c.passes.load(Ordering::Relaxed);
        let busy_passes = c.busy_passes.load(Ordering::Relaxed);
        LcoreStatsSnapshot {
            passes,
            busy_passes,
            idle_passes: passes.saturating_sub(busy_passes),
            work_items: c.work_items.load(Ordering::Relaxed),
            busy_cycles: c.busy_cycles.load(Ordering::Relaxed),
            idle_cycles: c.idle_cycles.load(Ordering::Relaxed),
        }
    }
}
