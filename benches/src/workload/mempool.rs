//! Mempool workloads: `get_bulk` then `put_bulk` of [`BURST`] objects in a
//! loop on one pinned thread, the loop of benches/c/mempool_bench.c over
//! `rte_mempool_get_bulk` / `rte_mempool_put_bulk`. One operation is one
//! object (so a figure is cycles per object, get and put together).

use super::pinned;
use crate::harness::Sample;
use hugepages::mempool::{Mempool, MempoolConfig};

/// Objects per pool: 2^13 - 1, so that DPDK's ring-backed pool gets a ring
/// of exactly 2^13 (rte_mempool sizes its ring to the next power of two
/// above the count).
pub const POOL_COUNT: usize = 8191;

/// Bytes per object (one cache line; the loop never touches the objects).
pub const ELT_SIZE: usize = 64;

/// The per-lcore cache size of the comparison: what `mempool_perf_autotest`
/// and most DPDK examples use (`MEMPOOL_CACHE_SIZE` 256 in examples/l3fwd).
pub const CACHE_SIZE: usize = 256;

/// Objects per get/put.
pub const BURST: usize = 32;

/// Loop iterations before the timed pass.
pub const WARMUP_ITERS: u64 = 10_000;

/// A pool for the loop: [`POOL_COUNT`] objects of [`ELT_SIZE`] bytes with
/// a cache of `cache_size` (0: none).
///
/// # Panics
/// When the pool cannot be built (no memory at all).
pub fn pool(cache_size: usize) -> Mempool {
    Mempool::new(MempoolConfig {
        name: format!("bench-cache{cache_size}"),
        count: POOL_COUNT,
        elt_size: ELT_SIZE,
        cache_size,
        ..MempoolConfig::default()
    })
    .expect("bench mempool")
}

/// `iters` rounds of `get_bulk(32)` + `put_bulk(32)`.
#[inline(never)]
pub fn get_put_loop(pool: &Mempool, iters: u64) -> u64 {
    let mut objs = [std::ptr::null_mut::<u8>(); BURST];
    let mut acc = 0usize;
    for _ in 0..iters {
        pool.get_bulk(&mut objs)
            .expect("the pool holds more than a burst");
        acc = acc.wrapping_add(objs[0].addr());
        // SAFETY: the objects were just taken from this pool and are given
        // back once, untouched.
        unsafe { pool.put_bulk(&objs) };
    }
    acc as u64
}

/// Runs [`get_put_loop`] on `cpu` (claiming a cache slot there, as an lcore
/// does) and returns a sample whose operations are objects.
pub fn get_put(pool: &Mempool, cpu: usize, iters: u64) -> Sample {
    let mut s = pinned(
        cpu,
        WARMUP_ITERS,
        iters,
        || hugepages::slot::claim().expect("a free cache slot"),
        |n| get_put_loop(pool, n),
    );
    s.ops = iters * BURST as u64;
    s
}
