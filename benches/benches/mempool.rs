//! Criterion benches of the mempool: `get_bulk` + `put_bulk` of 32 on one
//! pinned lcore thread, with a per-lcore cache of 256 and without one, and
//! DPDK's rte_mempool in the same groups when scripts/bench-ring.sh built
//! benches/c/mempool_bench.c. One element is one object.

use criterion::{Criterion, Throughput};
use dataplane_benches::dpdk::{MEMPOOL_BIN_ENV, Program};
use dataplane_benches::workload::CpuPair;
use dataplane_benches::workload::mempool as w;
use std::time::Duration;

fn get_put(c: &mut Criterion) {
    let cpu = CpuPair::from_env().producer;
    let dpdk = Program::from_env(MEMPOOL_BIN_ENV);
    if let Err(why) = &dpdk {
        eprintln!("mempool/dpdk_rte_mempool: skip: {why}");
    }
    for cache in [w::CACHE_SIZE, 0] {
        let mut g = c.benchmark_group(format!("mempool_get_put32_cache{cache}"));
        g.sample_size(10)
            .measurement_time(Duration::from_secs(3))
            .throughput(Throughput::Elements(w::BURST as u64));
        let pool = w::pool(cache);
        g.bench_function("ours", |b| {
            b.iter_custom(|iters| {
                Duration::from_nanos(w::get_put(&pool, cpu, iters.max(1)).nanos as u64)
            });
        });
        if let Ok(prog) = &dpdk {
            g.bench_function("dpdk_rte_mempool", |b| {
                b.iter_custom(|iters| {
                    let s = prog
                        .mempool(cpu, iters.max(1), w::BURST, cache, w::POOL_COUNT)
                        .expect("mempool_bench");
                    Duration::from_nanos(s.nanos as u64)
                });
            });
        }
        g.finish();
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    get_put(&mut c);
    c.final_summary();
}
