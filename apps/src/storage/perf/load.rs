//! One lcore's load: a queue kept at its depth, each completion timed
//! and (with `--verify`) checked.

use super::verify::{POISON, fill_pattern};
use super::*;

/// What one lcore measured.
#[derive(Debug)]
pub(super) struct LcoreResult {
    pub(super) ios: u64,
    pub(super) reads: u64,
    pub(super) writes: u64,
    pub(super) errors: u64,
    pub(super) hist: Histogram,
    pub(super) thread_cpu_ns: u64,
    pub(super) queue: block::QueueStats,
    pub(super) verified: u64,
    pub(super) mismatches: u64,
}

impl LcoreResult {
    pub(super) fn new() -> Self {
        LcoreResult {
            ios: 0,
            reads: 0,
            writes: 0,
            errors: 0,
            hist: Histogram::new(),
            thread_cpu_ns: 0,
            queue: block::QueueStats::default(),
            verified: 0,
            mismatches: 0,
        }
    }
}

/// What a load publishes while it runs (`--metrics`, `--telemetry`):
/// its counters and its latency histogram so far.
#[derive(Debug, Clone)]
pub(crate) struct Live {
    pub(crate) ios: u64,
    pub(crate) reads: u64,
    pub(crate) writes: u64,
    pub(crate) errors: u64,
    pub(crate) queue: block::QueueStats,
    pub(crate) hist: Histogram,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            ios: 0,
            reads: 0,
            writes: 0,
            errors: 0,
            queue: block::QueueStats::default(),
            hist: Histogram::new(),
        }
    }
}

/// The xorshift64* generator: one multiply per offset.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    #[inline]
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2^-32
    /// for any n here).
    #[inline]
    pub(super) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

/// USER_HZ: the unit of the times in /proc/*/stat, 100 on every Linux ABI.
pub(super) const USER_HZ: u64 = 100;

/// User plus system CPU time from a `/proc/.../stat` file: the same
/// accounting `getrusage` reports, at 10 ms resolution (runs last seconds).
pub(super) fn stat_cpu_ns(path: &str) -> u64 {
    let Ok(s) = std::fs::read_to_string(path) else {
        return 0;
    };
    // After the command name's closing parenthesis: state is field 3, so
    // utime (14) and stime (15) are the 12th and 13th words.
    let Some((_, rest)) = s.rsplit_once(')') else {
        return 0;
    };
    let w: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| w.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) * (1_000_000_000 / USER_HZ)
}

pub(super) fn thread_cpu_ns() -> u64 {
    stat_cpu_ns("/proc/thread-self/stat")
}

pub(super) fn process_cpu_ns() -> u64 {
    stat_cpu_ns("/proc/self/stat")
}

/// One lcore's load: its queue, its buffers, and what it measured.
pub(super) struct Load {
    pub(super) queue: Box<dyn Queue>,
    pub(super) spare: Vec<DmaBuf>,
    pub(super) stamps: Vec<u64>,
    pub(super) free_tags: Vec<u32>,
    pub(super) out: Completions,
    pub(super) rng: Rng,
    pub(super) random: bool,
    pub(super) read_pct: u64,
    pub(super) blocks_per_io: u32,
    pub(super) io_bytes: usize,
    pub(super) slots: u64,
    pub(super) base_slot: u64,
    pub(super) next_seq: u64,
    pub(super) verify: Option<Verify>,
    pub(super) wait: bool,
    /// Writes are FUA.
    pub(super) fua: bool,
    /// TSC at which measuring starts and must stop.
    pub(super) measure_from: u64,
    pub(super) measure_until: u64,
    pub(super) ns_per_tick: f64,
    pub(super) cpu_at_start: u64,
    pub(super) cpu_at_end: u64,
    pub(super) result: LcoreResult,
    pub(super) report: Arc<Mutex<Option<LcoreResult>>>,
    /// Where to publish while running, and how often (TSC ticks); `None`
    /// when nothing reads it.
    pub(super) live: Option<(Arc<Mutex<Live>>, u64)>,
    pub(super) next_publish: u64,
}

impl Load {
    /// The next slot and direction for `tag`, and the buffer prepared for
    /// it (pattern written, or poisoned for a verified read).
    #[inline]
    fn plan(&mut self, tag: u32, buf: &mut DmaBuf) -> (u64, bool) {
        if let Some(v) = self.verify.as_mut() {
            let t = tag as usize;
            if let Some((slot, _)) = v.written[t] {
                buf[..self.io_bytes].fill(POISON);
                return (slot, true);
            }
            let per_lane = self.slots / v.lanes;
            let k = if self.random {
                self.rng.below(per_lane)
            } else {
                let k = v.seq[t] % per_lane;
                v.seq[t] += 1;
                k
            };
            let slot = v.lane_base + u64::from(tag) + k * v.lanes;
            v.generation += 1;
            let seed = v.generation;
            fill_pattern(&mut buf[..self.io_bytes], slot, seed);
            v.written[t] = Some((slot, seed));
            return (slot, false);
        }
        let slot = if self.random {
            self.rng.below(self.slots)
        } else {
            let s = (self.base_slot + self.next_seq) % self.slots;
            self.next_seq += 1;
            s
        };
        let read =
            self.read_pct == 100 || (self.read_pct > 0 && self.rng.below(100) < self.read_pct);
        (slot, read)
    }

    #[inline]
    fn refill(&mut self, now: u64) -> usize {
        let mut n = 0;
        while !self.spare.is_empty() {
            let Some(tag) = self.free_tags.pop() else {
                break;
            };
            let Some(mut buf) = self.spare.pop() else {
                self.free_tags.push(tag);
                break;
            };
            let (slot, read) = self.plan(tag, &mut buf);
            let lba = slot * u64::from(self.blocks_per_io);
            let op = if read {
                op::Read::new(buf, lba, self.blocks_per_io)
                    .tag(u64::from(tag))
                    .build()
            } else {
                // Writes carry the buffer's current bytes.
                let w =
                    op::Write::new(buf, lba, self.blocks_per_io).tag(u64::from(tag) | WRITE_BIT);
                if self.fua { w.fua() } else { w }.build()
            };
            match self.queue.submit(op) {
                Ok(()) => {
                    self.stamps[tag as usize] = now;
                    n += 1;
                }
                Err(e) => {
                    self.free_tags.push(tag);
                    if let Some(v) = self.verify.as_mut()
                        && !read
                    {
                        // Not written after all.
                        v.written[tag as usize] = None;
                    }
                    self.refused(e);
                    break;
                }
            }
        }
        n
    }

    #[cold]
    fn refused(&mut self, e: block::SubmitError) {
        if let Some(why) = e.invalid() {
            // A bad request is a bug in this program's arithmetic: say it.
            tracing::error!("submission refused: {why}");
            self.result.errors += 1;
        }
        self.spare.extend(e.into_op().into_buf());
    }
}

pub(super) const WRITE_BIT: u64 = 1 << 63;

/// The longest `--wait` sleep once the run is ending, so that a device
/// that never answers cannot hold the lcore. While the load runs, the
/// queue is full and a completion always comes: the sleep has no timer
/// (`Duration::MAX`), as fio's, whose arming would cost a hypervisor exit
/// per sleep here.
pub(super) const WAIT_TIMEOUT: Duration = Duration::from_millis(1);

impl dataplane::lcore::Poller for Load {
    fn poll(&mut self, ctx: &PollContext) -> usize {
        let now = ctx.now();
        let measuring = now >= self.measure_from && now < self.measure_until;
        if measuring && self.cpu_at_start == 0 {
            self.cpu_at_start = thread_cpu_ns();
        }
        if now >= self.measure_until && self.cpu_at_end == 0 {
            self.cpu_at_end = thread_cpu_ns();
        }
        let stop = ctx.stopping() || now >= self.measure_until;
        let mut work = 0;
        if !stop {
            work += self.refill(now);
        }
        let n = if self.wait {
            let timeout = if stop { WAIT_TIMEOUT } else { Duration::MAX };
            self.queue.wait(&mut self.out, timeout)
        } else {
            self.queue.poll(&mut self.out)
        };
        if n > 0 {
            let done = rdtsc();
            let Load {
                out,
                verify,
                result,
                stamps,
                free_tags,
                spare,
                ns_per_tick,
                io_bytes,
                ..
            } = self;
            for c in out.drain() {
                let tag = (c.tag & !WRITE_BIT) as u32;
                let write = c.tag & WRITE_BIT != 0;
                let ok = c.status.is_ok();
                if measuring {
                    let ticks = done.saturating_sub(stamps[tag as usize]);
                    result.hist.record((ticks as f64 * *ns_per_tick) as u64);
                    result.ios += 1;
                    if write {
                        result.writes += 1;
                    } else {
                        result.reads += 1;
                    }
                }
                if !ok {
                    result.errors += 1;
                }
                if let Some(v) = verify.as_mut() {
                    v.complete(tag, write, ok, c.buf.as_ref(), *io_bytes);
                }
                free_tags.push(tag);
                spare.extend(c.buf);
            }
            work += n;
        }
        if let Some((live, every)) = &self.live
            && now >= self.next_publish
        {
            self.next_publish = now + every;
            // Never wait for a reader on the data path: skip a turn.
            if let Ok(mut l) = live.try_lock() {
                l.ios = self.result.ios;
                l.reads = self.result.reads;
                l.writes = self.result.writes;
                l.errors = self.result.errors;
                l.queue = self.queue.stats();
                l.hist.clone_from(&self.result.hist);
            }
        }
        // Draining: busy while anything is still in flight.
        work + self.queue.in_flight()
    }

    fn stop(&mut self, _ctx: &PollContext) {
        let end = if self.cpu_at_end == 0 {
            thread_cpu_ns()
        } else {
            self.cpu_at_end
        };
        let cpu = end.saturating_sub(self.cpu_at_start);
        let mut r = std::mem::replace(&mut self.result, LcoreResult::new());
        r.thread_cpu_ns = cpu;
        r.queue = self.queue.stats();
        if let Some(v) = &self.verify {
            r.verified = v.checked;
            r.mismatches = v.mismatches;
        }
        if let Ok(mut slot) = self.report.lock() {
            *slot = Some(r);
        }
    }
}
