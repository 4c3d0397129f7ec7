//! The time stamp counter: the cheapest clock an lcore can read, once per
//! poll pass, for timers (the tx drain timer, `Worker::tick`) and for
//! busy/idle cycle accounting, as DPDK's `rte_rdtsc()` is used.
//!
//! On x86-64 this is `rdtsc` (invariant TSC on every CPU this targets; it is
//! not serialising, which is fine for timers and accounting). Elsewhere it
//! falls back to the monotonic clock in nanoseconds, so the same code runs.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Reads the time stamp counter.
#[inline(always)]
pub fn rdtsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `rdtsc` has no preconditions on x86-64.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        monotonic_ns()
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn monotonic_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Counter ticks per second, measured once against the monotonic clock
/// (about 20 ms at first call; DPDK's `rte_get_tsc_hz` calibrates likewise
/// when the kernel does not say).
pub fn tsc_hz() -> u64 {
    static HZ: OnceLock<u64> = OnceLock::new();
    *HZ.get_or_init(calibrate)
}

fn calibrate() -> u64 {
    if !cfg!(target_arch = "x86_64") {
        return 1_000_000_000;
    }
    // Three short windows; the median discards one preempted window.
    let mut samples = [0u64; 3];
    for s in &mut samples {
        let (t0, c0) = (Instant::now(), rdtsc());
        std::thread::sleep(Duration::from_millis(7));
        let (c1, dt) = (rdtsc(), t0.elapsed());
        *s = ((c1.wrapping_sub(c0)) as u128 * 1_000_000_000 / dt.as_nanos().max(1)) as u64;
    }
    samples.sort_unstable();
    samples[1].max(1)
}

/// `d` in counter ticks.
pub fn duration_to_tsc(d: Duration) -> u64 {
    (d.as_nanos().saturating_mul(tsc_hz() as u128) / 1_000_000_000).min(u64::MAX as u128) as u64
}

/// `ticks` counter ticks as a duration.
pub fn tsc_to_duration(ticks: u64) -> Duration {
    Duration::from_nanos(
        (ticks as u128 * 1_000_000_000 / tsc_hz() as u128).min(u64::MAX as u128) as u64,
    )
}

/// Nanoseconds on the counter since the clock was made: a read is
/// `rdtsc`, a multiply and a shift, where `Instant::now` is a
/// `clock_gettime` (about 20 ns through the vDSO on a TSC clocksource, a
/// system call on a guest whose clocksource is not the TSC). For timeouts
/// checked every pass, as the transport's are.
#[derive(Debug, Clone, Copy)]
pub struct TscClock {
    start: u64,
    /// Nanoseconds per tick, 32.32 fixed point.
    mult: u64,
}

impl TscClock {
    /// A clock at zero now (calibrates the counter on the first use in
    /// the process, [`tsc_hz`]).
    pub fn new() -> Self {
        TscClock {
            start: rdtsc(),
            mult: ((1_000_000_000u128 << 32) / tsc_hz() as u128).min(u64::MAX as u128) as u64,
        }
    }

    /// Nanoseconds since [`Self::new`].
    #[inline]
    pub fn now_ns(&self) -> u64 {
        let ticks = rdtsc().wrapping_sub(self.start);
        ((ticks as u128 * self.mult as u128) >> 32).min(u64::MAX as u128) as u64
    }
}

impl Default for TscClock {
    fn default() -> Self {
        Self::new()
    }
}

/// A periodic timer on the counter, checked by polling: DPDK l2fwd's
/// `drain_tsc` pattern. It never fires more than once per check, and a late
/// check does not make it fire repeatedly to catch up.
#[derive(Debug, Clone, Copy)]
pub struct TscTimer {
    period: u64,
    next: u64,
}

impl TscTimer {
    /// A timer that first expires `period` from `now`.
    pub fn new(period: Duration, now: u64) -> Self {
        let period = duration_to_tsc(period).max(1);
        TscTimer {
            period,
            next: now.wrapping_add(period),
        }
    }

    /// Whether the period has passed at `now`; if so, rearms from `now`.
    #[inline(always)]
    pub fn expired(&mut self, now: u64) -> bool {
        // Signed distance so that a wrapped counter still compares right.
        if (now.wrapping_sub(self.next) as i64) < 0 {
            return false;
        }
        self.next = now.wrapping_add(self.period);
        true
    }

    /// The period in counter ticks.
    pub fn period(&self) -> u64 {
        self.period
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tsc_clock_keeps_time_with_the_monotonic_clock() {
        let clock = TscClock::new();
        let t0 = Instant::now();
        let a = clock.now_ns();
        std::thread::sleep(Duration::from_millis(50));
        let b = clock.now_ns();
        let outer = t0.elapsed().as_nanos() as u64;
        // At least the 50 ms slept between the reads, at most what the
        // monotonic clock saw around them, with 5% for the calibration
        // (a preempted thread only widens the outer span).
        let d = b - a;
        assert!(d >= 50_000_000 / 100 * 95, "{d} ns for a 50 ms sleep");
        assert!(d <= outer / 100 * 105, "{d} ns within {outer} ns");
    }

    #[test]
    fn counter_moves_and_calibrates() {
        let a = rdtsc();
        let b = rdtsc();
        assert!(b >= a);
        let hz = tsc_hz();
        // Any real counter runs between 100 MHz and 10 GHz.
        assert!((100_000_000..10_000_000_000).contains(&hz), "{hz}");
        let d = Duration::from_micros(100);
        let back = tsc_to_duration(duration_to_tsc(d));
        assert!(back.as_nanos().abs_diff(d.as_nanos()) <= 1_000);
    }

    #[test]
    fn timer_fires_once_per_period_without_catching_up() {
        let hz = tsc_hz();
        let mut t = TscTimer::new(Duration::from_secs(1), 0);
        assert!(!t.expired(hz - 1));
        assert!(t.expired(hz));
        assert!(!t.expired(hz + 1));
        // Very late: fires once, then waits a full period from now.
        assert!(t.expired(10 * hz));
        assert!(!t.expired(10 * hz + hz / 2));
        assert!(t.expired(11 * hz));
    }
}
