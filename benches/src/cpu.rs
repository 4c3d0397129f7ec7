//! The machine side of a measurement: pinning a thread to a cpu, reading
//! the time-stamp counter, converting its ticks to nanoseconds, a spin
//! barrier that starts two pinned threads within a few hundred cycles of
//! each other, and a record of what else ran meanwhile ([`Noise`]).

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

/// What else ran on the machine while a comparison ran: CPU time of other
/// processes and time the hypervisor stole from this VM, each as a share
/// of all cpus over the wall time. Either one above a few percent means
/// the figures of that comparison are noisier than usual (the ratios
/// still pair contenders that ran under the same conditions).
#[derive(Debug, Clone, Copy)]
pub struct Noise {
    wall: Instant,
    busy: u64,
    steal: u64,
    own: u64,
}

/// The outcome of [`Noise::finish`], in percent of all cpus.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoiseReport {
    /// Busy time of processes other than this one and its children.
    pub others_pct: f64,
    /// Time the hypervisor ran something else on our vCPUs.
    pub steal_pct: f64,
}

impl std::fmt::Display for NoiseReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "other processes {:.0}% of the cpus, hypervisor steal {:.0}%",
            self.others_pct, self.steal_pct
        )
    }
}

impl Noise {
    /// Starts counting.
    pub fn start() -> Noise {
        let (busy, steal) = system_ticks();
        Noise {
            wall: Instant::now(),
            busy,
            steal,
            own: own_ticks(),
        }
    }

    /// What happened since `start`; zeros where /proc is unreadable.
    pub fn finish(&self) -> NoiseReport {
        let (busy, steal) = system_ticks();
        let own = own_ticks();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let capacity = self.wall.elapsed().as_secs_f64() * hz * cpus;
        let pct = |ticks: u64| 100.0 * ticks as f64 / capacity.max(1.0);
        let others = busy
            .saturating_sub(self.busy)
            .saturating_sub(own.saturating_sub(self.own));
        NoiseReport {
            others_pct: pct(others),
            steal_pct: pct(steal.saturating_sub(self.steal)),
        }
    }
}

/// Busy and steal ticks of all cpus, from the `cpu` line of /proc/stat.
fn system_ticks() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal ...
    (at(0) + at(1) + at(2) + at(5) + at(6), at(7))
}

/// This process's user + system ticks, its reaped children's included
/// (the DPDK programs), from /proc/self/stat.
fn own_ticks() -> u64 {
    let text = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The command name is in parentheses and may hold spaces: skip past it.
    let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
    // After the name: state is field 3; utime..cstime are fields 14..17.
    rest.split_whitespace()
        .skip(11)
        .take(4)
        .map(|x| x.parse::<u64>().unwrap_or(0))
        .sum()
}
