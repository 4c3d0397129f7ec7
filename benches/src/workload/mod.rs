//! The workloads, each a function that does a fixed amount of work and
//! returns its [`Sample`]. The criterion benches
//! and the interleaved comparison call the same functions.

pub mod blocking;
pub mod fwd;
#[allow(unsafe_code)]
pub mod mempool;
pub mod pool;
#[allow(unsafe_code)]
pub mod ring;

use crate::cpu::{SpinBarrier, pin_to_cpu, rdtsc};
use crate::harness::Sample;
use crossbeam_utils::CachePadded;
use std::time::Instant;

/// The two cpus a cross-core workload runs on: the producer (or the
/// ping side) on the first, the consumer on the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuPair {
    /// The producer's cpu.
    pub producer: usize,
    /// The consumer's cpu.
    pub consumer: usize,
}

impl Default for CpuPair {
    /// cpu 0 and cpu 1, as `dpdk-test -l 0-1` pairs its lcores.
    fn default() -> Self {
        Self {
            producer: 0,
            consumer: 1,
        }
    }
}

impl CpuPair {
    /// From `DP_BENCH_CPUS` (`"P,C"`), else the default.
    pub fn from_env() -> Self {
        std::env::var("DP_BENCH_CPUS")
            .ok()
            .and_then(|v| {
                let (p, c) = v.split_once(',')?;
                Some(Self {
                    producer: p.trim().parse().ok()?,
                    consumer: c.trim().parse().ok()?,
                })
            })
            .unwrap_or_default()
    }
}

/// A heap allocation of a random size (64 B to 8 KiB, in cache lines), to
/// be kept alive while a workload builds and runs its queue. Each sample
/// then puts the queue's memory at another offset, so that no contender
/// is favoured or penalised by where the allocator happens to put it in
/// every sample alike (4 KiB aliasing between a position and a slot, a
/// line shared with the allocator's metadata); the median runs over
/// placements.
pub fn placement_pad() -> Vec<u8> {
    // xorshift of the TSC: cheap, and different in every sample.
    let mut x = rdtsc() | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    let lines = 1 + (x % 128) as usize;
    let mut pad = Vec::with_capacity(lines * 64);
    pad.push(0);
    pad
}

/// Items moved before the timed pass of every cross-core workload: enough
/// to fault in and warm the ring, the stacks and the branch predictors.
pub const WARMUP_ITEMS: u64 = 1 << 16;

/// `0 + 1 + ... + (n - 1)`, wrapping: what a consumer of the items
/// `0..n` must have summed.
pub fn expected_sum(n: u64) -> u64 {
    if n.is_multiple_of(2) {
        (n / 2).wrapping_mul(n.wrapping_sub(1))
    } else {
        n.wrapping_mul((n - 1) / 2)
    }
}

struct Span {
    t0: Instant,
    c0: u64,
    t1: Instant,
    c1: u64,
}

fn timed(f: impl FnOnce() -> u64) -> (Span, u64) {
    let (t0, c0) = (Instant::now(), rdtsc());
    let r = f();
    let (c1, t1) = (rdtsc(), Instant::now());
    (Span { t0, c0, t1, c1 }, r)
}

/// Runs a two-thread workload: the threads are spawned and pinned first,
/// each runs `WARMUP_ITEMS` and then `items` through its closure, and the
/// timed region of the second pass starts when both leave a spin barrier.
/// `producer(n)` and `consumer(n)` each move `n` items (`0..n`); the
/// consumer returns what it summed, which must be `expected_sum(n)` (a
/// check that nothing was lost or duplicated, and something the compiler
/// cannot throw away). Wall time is from the earlier start to the later
/// end; the per-side spans are kept for DPDK's two-core figure.
///
/// # Panics
/// When a thread cannot be pinned, a closure panics, or the sum is wrong.
pub fn cross_core<P, C>(cpus: CpuPair, items: u64, producer: P, consumer: C) -> Sample
where
    P: FnMut(u64) -> u64 + Send,
    C: FnMut(u64) -> u64 + Send,
{
    let barrier = SpinBarrier::new(2);
    let (ps, cs) = std::thread::scope(|s| {
        let b = &barrier;
        let cons = s.spawn(move || {
            // The closure (and the queue handle in it) moves onto this
            // thread's stack, on a line of its own: handles write their
            // positions on every operation, and two handles in adjacent
            // heap blocks (where the spawn boxes closures) would share a
            // line between the two cores.
            let mut consumer = CachePadded::new(consumer);
            pin_to_cpu(cpus.consumer).expect("pin the consumer");
            b.wait(0);
            assert_eq!((*consumer)(WARMUP_ITEMS), expected_sum(WARMUP_ITEMS));
            b.wait(1);
            let (span, sum) = timed(|| (*consumer)(items));
            assert_eq!(sum, expected_sum(items), "consumer sum");
            span
        });
        let prod = s.spawn(move || {
            let mut producer = CachePadded::new(producer);
            pin_to_cpu(cpus.producer).expect("pin the producer");
            b.wait(0);
            (*producer)(WARMUP_ITEMS);
            b.wait(1);
            timed(|| (*producer)(items)).0
        });
        (
            prod.join().expect("producer thread"),
            cons.join().expect("consumer thread"),
        )
    });
    let t0 = ps.t0.min(cs.t0);
    let t1 = ps.t1.max(cs.t1);
    let c0 = ps.c0.min(cs.c0);
    let c1 = ps.c1.max(cs.c1);
    let side = (ps.c1 - ps.c0) + (cs.c1 - cs.c0);
    Sample {
        ops: items,
        nanos: (t1 - t0).as_nanos() as f64,
        cycles: c1.wrapping_sub(c0) as f64,
        side_cycles_per_op: Some(side as f64 / items as f64),
    }
}

/// Runs `work(n)` on a thread pinned to `cpu`: once with `warmup`, then
/// timed with `ops`. `setup` runs first on that thread and its value is
/// kept alive for the whole run (a mempool slot guard, for instance).
///
/// # Panics
/// When the thread cannot be pinned or `work` panics.
pub fn pinned<G, W>(
    cpu: usize,
    warmup: u64,
    ops: u64,
    setup: impl FnOnce() -> G + Send,
    work: W,
) -> Sample
where
    W: FnMut(u64) -> u64 + Send,
{
    let mut work = work;
    std::thread::scope(|s| {
        s.spawn(move || {
            pin_to_cpu(cpu).expect("pin the bench thread");
            let _guard = setup();
            std::hint::black_box(work(warmup));
            let (span, r) = timed(|| work(ops));
            std::hint::black_box(r);
            Sample {
                ops,
                nanos: (span.t1 - span.t0).as_nanos() as f64,
                cycles: span.c1.wrapping_sub(span.c0) as f64,
                side_cycles_per_op: None,
            }
        })
        .join()
        .expect("bench thread")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_sum_matches_a_loop() {
        for n in [0u64, 1, 2, 3, 10, 65_536, 65_537] {
            assert_eq!(expected_sum(n), (0..n).fold(0u64, u64::wrapping_add));
        }
    }
}
