//! Lcores: threads pinned one per core, each running a run-to-completion
//! loop over the things it owns.

use serde::Serialize;
use std::time::Duration;

/// An lcore's number within a runtime: dense, from 0, the main lcore first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct LcoreId(pub u32);

impl core::fmt::Display for LcoreId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
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
