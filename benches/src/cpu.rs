//! The machine side of a measurement: pinning a thread to a cpu, reading
//! the time-stamp counter, converting its ticks to nanoseconds, and a spin
//! barrier that starts two pinned threads within a few hundred cycles of
//! each other.

use std::io;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Pins the calling thread to `cpu` alone (`sched_setaffinity(0, ...)`).
///
/// # Errors
/// The OS error when the cpu does not exist or is outside the allowed set.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: `cpu_set_t` is a plain bit array; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu < CPU_SETSIZE`, checked above, so the bit is in the set.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid, initialised cpu_set_t of the size passed;
    // pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The cpus the process may run on now (`sched_getaffinity`).
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: as in `pin_to_cpu`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    if rc != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: every index is below CPU_SETSIZE.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Reads the time-stamp counter. Not serialising, like `rte_rdtsc`: the
/// workloads are millions of operations long, so a few cycles of
/// reordering at either end do not matter.
#[inline(always)]
pub fn rdtsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `rdtsc` is available on every x86-64 cpu and has no
        // memory effects.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // No TSC: count nanoseconds instead, so that "cycles" read as ns
        // and `tsc_per_ns()` calibrates to 1.0.
        static START: OnceLock<Instant> = OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }
}

/// TSC ticks per nanosecond (the TSC frequency in GHz), measured once per
/// process against `Instant` over three 20 ms windows; the median is kept.
pub fn tsc_per_ns() -> f64 {
    static CAL: OnceLock<f64> = OnceLock::new();
    *CAL.get_or_init(|| {
        let mut runs: Vec<f64> = (0..3)
            .map(|_| {
                let (t0, c0) = (Instant::now(), rdtsc());
                // Busy-wait rather than sleep: no frequency drop while idle
                // on machines whose TSC is not invariant.
                while t0.elapsed() < Duration::from_millis(20) {
                    std::hint::spin_loop();
                }
                let (c1, t1) = (rdtsc(), Instant::now());
                (c1 - c0) as f64 / (t1 - t0).as_nanos() as f64
            })
            .collect();
        runs.sort_by(f64::total_cmp);
        runs[1]
    })
}

/// A one-shot spin barrier for a fixed number of threads. Unlike
/// `std::sync::Barrier` nobody sleeps, so the threads leave within the
/// latency of one cache-line transfer of each other, and the timed region
/// never contains a futex wake-up.
#[derive(Debug)]
pub struct SpinBarrier {
    arrived: AtomicUsize,
    parties: usize,
}

impl SpinBarrier {
    /// A barrier for `parties` threads.
    pub const fn new(parties: usize) -> Self {
        Self {
            arrived: AtomicUsize::new(0),
            parties,
        }
    }

    /// Waits until `parties` threads have called `wait` `round + 1` times in
    /// total (rounds are numbered from 0; each thread calls once per round).
    pub fn wait(&self, round: usize) {
        // AcqRel: everything each thread did before arriving is visible to
        // every thread after leaving (the ring built before round 0, the
        // checks after it).
        self.arrived.fetch_add(1, Ordering::AcqRel);
        let target = self.parties * (round + 1);
        while self.arrived.load(Ordering::Acquire) < target {
            std::hint::spin_loop();
        }
    }
}
