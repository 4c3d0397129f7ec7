//! Shared code of the benches in `benches/`: the workloads (ours and the
//! peers', loop for loop the same), core pinning and the TSC, and the
//! interleaving harness that runs ours and a peer's code A B B A in one
//! process and reports same-round ratios.
//!
//! - [`cpu`]: `pin_to_cpu`, `rdtsc`, `tsc_per_ns`, a spin barrier.
//! - [`harness`]: [`Comparison`](harness::Comparison) and its
//!   [`Report`](harness::Report) (medians, p10/p90, ratio medians, a text
//!   table and JSON).
//! - [`workload`]: the ring and mempool workloads.
//! - [`dpdk`]: DPDK's contenders: the C programs of `benches/c` and the
//!   `ring_perf_autotest` reference line.
//!
//! docs/performance.md says how to run them and records the results.
#![deny(unsafe_code)]

#[allow(unsafe_code)]
pub mod cpu;
pub mod dpdk;
pub mod harness;
pub mod workload;
