//! Criterion benches of the rings, ours and the peers in the same group
//! (criterion runs them one after the other, not interleaved: for the
//! same-run ratios use `benches/compare.rs` or scripts/bench-ring.sh).
//!
//! Every cross-core sample spawns its two pinned threads, warms the ring
//! up, and times only the transfer of `iters` items (`iter_custom`), so
//! thread start-up is outside the figure. cpus: `DP_BENCH_CPUS` (default
//! `0,1`).

use criterion::{Criterion, Throughput};
use dataplane_benches::harness::Sample;
use dataplane_benches::workload::CpuPair;
use dataplane_benches::workload::ring as w;
use std::time::Duration;

type Workload = fn(CpuPair, u64) -> Sample;

fn group(c: &mut Criterion, name: &str, per_iter: Option<u64>, members: &[(&str, Workload)]) {
    let cpus = CpuPair::from_env();
    let mut g = c.benchmark_group(name);
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    if let Some(n) = per_iter {
        g.throughput(Throughput::Elements(n));
    }
    for &(label, f) in members {
        g.bench_function(label, |b| {
            b.iter_custom(|iters| Duration::from_nanos(f(cpus, iters.max(1)).nanos as u64));
        });
    }
    g.finish();
}

fn rings(c: &mut Criterion) {
    group(
        c,
        "spsc_single_u64",
        Some(1),
        &[
            ("ours", w::spsc_single_ours),
            ("rtrb", w::spsc_single_rtrb),
            ("ringbuf", w::spsc_single_ringbuf),
        ],
    );
    group(
        c,
        "spsc_burst32_u64",
        Some(1),
        &[
            ("ours_slice", w::spsc_burst_ours_slice),
            ("ours_batch", w::spsc_burst_ours_batch),
            ("ours_chunk", w::spsc_burst_ours_chunk),
            ("rtrb_chunk", w::spsc_burst_rtrb_chunk),
            ("ringbuf_slice", w::spsc_burst_ringbuf_slice),
        ],
    );
    group(
        c,
        "spsc_pingpong_round_trip",
        None,
        &[
            ("atomic_mailbox", w::pingpong_mailbox),
            ("ours", w::pingpong_ours),
            ("rtrb", w::pingpong_rtrb),
        ],
    );
    group(
        c,
        "mpmc_single_u64",
        Some(1),
        &[
            ("ours", w::mpmc_single_ours),
            ("crossbeam_arrayqueue", w::mpmc_single_arrayqueue),
        ],
    );
    mpmc_burst(c);
}

/// Ours, and DPDK's rte_ring when scripts/bench-ring.sh built the C program.
fn mpmc_burst(c: &mut Criterion) {
    let cpus = CpuPair::from_env();
    let mut g = c.benchmark_group("mpmc_burst32_u64");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(1));
    g.bench_function("ours", |b| {
        b.iter_custom(|iters| {
            Duration::from_nanos(w::mpmc_burst_ours(cpus, iters.max(1)).nanos as u64)
        });
    });
    match dataplane_benches::dpdk::Program::from_env(dataplane_benches::dpdk::RING_BIN_ENV) {
        Ok(prog) => {
            g.bench_function("dpdk_rte_ring", |b| {
                b.iter_custom(|iters| {
                    let s = prog
                        .ring(cpus, iters.max(1), w::BURST, w::RING_SIZE)
                        .expect("ring_bench");
                    Duration::from_nanos(s.nanos as u64)
                });
            });
        }
        Err(why) => eprintln!("mpmc_burst32_u64/dpdk_rte_ring: skip: {why}"),
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    rings(&mut c);
    c.final_summary();
}
