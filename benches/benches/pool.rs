//! Criterion bench of the worker pool and the original design's transport,
//! in one group (for same-run ratios use `benches/compare.rs --only pool`).

use criterion::{Criterion, Throughput};
use dataplane_benches::workload::CpuPair;
use dataplane_benches::workload::pool as w;
use std::time::Duration;

type Workload = fn(CpuPair, u64) -> Result<dataplane_benches::harness::Sample, String>;

fn pool(c: &mut Criterion) {
    let cpus = CpuPair::from_env();
    let mut g = c.benchmark_group("worker_pool_keyed_u64");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(1));
    let members: [(&str, Workload); 4] = [
        ("ours_partitioned_sender", w::partitioned_sender),
        ("ours_send_partitioned", w::send_partitioned),
        ("flume_bounded", w::flume_bounded),
        ("crossbeam_bounded", w::crossbeam_bounded),
    ];
    for (label, f) in members {
        g.bench_function(label, |b| {
            b.iter_custom(|iters| match f(cpus, iters.max(1_000)) {
                Ok(s) => {
                    Duration::from_nanos((s.nanos * iters.max(1) as f64 / s.ops as f64) as u64)
                }
                Err(e) => panic!("{label}: {e}"),
            });
        });
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    pool(&mut c);
    c.final_summary();
}
