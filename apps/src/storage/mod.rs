//! Storage programs' library code: the `nvme-perf` load generator.

pub mod perf;
