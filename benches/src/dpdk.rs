//! DPDK's side of a comparison: the C programs in benches/c (built by
//! scripts/bench-ring.sh against the system's libdpdk), run as contenders,
//! and the reference line of `dpdk-test`'s `ring_perf_autotest`.
//!
//! A C program runs its loop once per invocation and prints one line
//!
//! ```text
//! RESULT ops=<n> cycles=<tsc ticks> ns=<wall ns> side_cycles=<per op or ->
//! ```
//!
//! measured with `rte_rdtsc()` around exactly the loop the Rust workload
//! times, so EAL start-up is outside the figure. The programs are found
//! through environment variables, so that `cargo bench` works (without the
//! DPDK contenders) where nothing was built.

use crate::harness::Sample;
use crate::workload::CpuPair;
use std::path::PathBuf;
use std::process::Command;

/// Names the rte_ring program (benches/c/ring_bench.c).
pub const RING_BIN_ENV: &str = "DP_BENCH_RING_C";
/// Names the rte_mempool program (benches/c/mempool_bench.c).
pub const MEMPOOL_BIN_ENV: &str = "DP_BENCH_MEMPOOL_C";
/// Extra EAL arguments (memory, logging); the lcores are added from the
/// cpus of the run.
pub const EAL_ARGS_ENV: &str = "DP_BENCH_EAL_ARGS";
/// The default extra EAL arguments: no hugepages needed, no devices.
pub const DEFAULT_EAL_ARGS: &str =
    "--no-huge -m 256 --no-pci --no-telemetry --log-level=lib.*:error";

/// A built C program, or why there is none.
#[derive(Debug, Clone)]
pub struct Program {
    path: PathBuf,
    eal: Vec<String>,
}

impl Program {
    /// The program named by the environment variable `var`.
    ///
    /// # Errors
    /// Why it cannot run: the variable is unset or names no file.
    pub fn from_env(var: &str) -> Result<Program, String> {
        let path = std::env::var_os(var).map(PathBuf::from).ok_or_else(|| {
            format!("{var} is not set (scripts/bench-ring.sh builds and sets it)")
        })?;
        if !path.is_file() {
            return Err(format!("{var}={} is not a file", path.display()));
        }
        let eal = std::env::var(EAL_ARGS_ENV)
            .unwrap_or_else(|_| DEFAULT_EAL_ARGS.into())
            .split_whitespace()
            .map(String::from)
            .collect();
        Ok(Program { path, eal })
    }

    /// Runs the program once with EAL lcores `lcores` (the first is the
    /// main lcore) and the program's own `args`; parses its RESULT line.
    ///
    /// # Errors
    /// Why no sample came back: the program failed or printed no result.
    pub fn run(&self, lcores: &[usize], args: &[String]) -> Result<Sample, String> {
        let list: Vec<String> = lcores.iter().map(usize::to_string).collect();
        let out = Command::new(&self.path)
            .arg("-l")
            .arg(list.join(","))
            .arg("--main-lcore")
            .arg(&list[0])
            .args(&self.eal)
            .arg("--")
            .args(args)
            .output()
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().find(|l| l.starts_with("RESULT "));
        match (out.status.success(), line) {
            (true, Some(line)) => parse_result(line),
            _ => {
                let err = String::from_utf8_lossy(&out.stderr);
                let tail: Vec<&str> = err.lines().rev().take(3).collect();
                Err(format!(
                    "{} exited with {}: {}",
                    self.path.display(),
                    out.status,
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                ))
            }
        }
    }

    /// rte_ring MP/MC burst of `burst` between the two cpus, `items` items.
    ///
    /// # Errors
    /// As [`Program::run`].
    pub fn ring(
        &self,
        cpus: CpuPair,
        items: u64,
        burst: usize,
        size: usize,
    ) -> Result<Sample, String> {
        self.run(
            &[cpus.producer, cpus.consumer],
            &[
                format!("--items={items}"),
                format!("--burst={burst}"),
                format!("--size={size}"),
            ],
        )
    }

    /// rte_mempool get/put of `burst` on `cpu`, `iters` times, with a cache
    /// of `cache` (0: none). Operations are objects.
    ///
    /// # Errors
    /// As [`Program::run`].
    pub fn mempool(
        &self,
        cpu: usize,
        iters: u64,
        burst: usize,
        cache: usize,
        count: usize,
    ) -> Result<Sample, String> {
        self.run(
            &[cpu],
            &[
                format!("--iters={iters}"),
                format!("--burst={burst}"),
                format!("--cache={cache}"),
                format!("--count={count}"),
            ],
        )
    }
}

/// Parses `RESULT ops=.. cycles=.. ns=.. side_cycles=..`.
///
/// # Errors
/// Which field is missing or malformed.
pub fn parse_result(line: &str) -> Result<Sample, String> {
    let field = |key: &str| -> Option<&str> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
    };
    let num = |key: &str| -> Result<f64, String> {
        field(key)
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| format!("no {key}= in {line:?}"))
    };
    let ops = num("ops")? as u64;
    if ops == 0 {
        return Err(format!("ops=0 in {line:?}"));
    }
    Ok(Sample {
        ops,
        nanos: num("ns")?,
        cycles: num("cycles")?,
        side_cycles_per_op: field("side_cycles").and_then(|v| v.parse().ok()),
    })
}

/// The two-core MP/MC bulk-32 line of `ring_perf_autotest`'s output, in
/// DPDK 22.11's format:
///
/// ```text
/// ### Testing using two physical cores ###
/// legacy APIs: SP/SC: bulk (size: 8): 7.66
/// legacy APIs: MP/MC: bulk (size: 8): 30.35
/// legacy APIs: SP/SC: bulk (size: 32): 4.16
/// legacy APIs: MP/MC: bulk (size: 32): 9.08
/// ```
///
/// The figure is the enqueue core's cycles per item plus the dequeue
/// core's (app/test/test_ring_perf.c, `run_on_core_pair`), over 2^15
/// bulks. Older releases print `MP/MC bulk enq/dequeue (size: 32): x`
/// under the same heading; that is accepted too. Returns `None` when no
/// such line is found (the format changed, or no two cores were found).
pub fn parse_autotest_mpmc32(output: &str) -> Option<f64> {
    let mut in_two_cores = false;
    for line in output.lines() {
        let line = line.trim();
        if line.starts_with("###") {
            in_two_cores = line.contains("two physical cores");
            continue;
        }
        // The legacy (pointer) API section comes first; the 16-byte element
        // section repeats the heading and is skipped by taking the first.
        if in_two_cores
            && line.contains("MP/MC")
            && line.contains("bulk")
            && line.contains("(size: 32)")
            && !line.contains("element size")
        {
            return line.rsplit(':').next()?.trim().parse().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_result_line() {
        let s = parse_result("RESULT ops=64 cycles=128 ns=50.5 side_cycles=3.5").unwrap();
        assert_eq!((s.ops, s.cycles, s.nanos), (64, 128.0, 50.5));
        assert_eq!(s.side_cycles_per_op, Some(3.5));
        let s = parse_result("RESULT ops=64 cycles=128 ns=50 side_cycles=-").unwrap();
        assert_eq!(s.side_cycles_per_op, None);
        assert!(parse_result("RESULT cycles=1 ns=1").is_err());
    }

    #[test]
    fn parses_the_autotest_two_core_line() {
        let out = "\
### Testing using a single lcore ###
legacy APIs: MP/MC: bulk (size: 32): 56.65

### Testing using two physical cores ###
legacy APIs: SP/SC: bulk (size: 8): 7.66
legacy APIs: MP/MC: bulk (size: 8): 30.35
legacy APIs: SP/SC: bulk (size: 32): 4.16
legacy APIs: MP/MC: bulk (size: 32): 9.08

### Testing using two physical cores ###
elem APIs: element size 16B: MP/MC: bulk (size: 32): 9.92
";
        assert_eq!(parse_autotest_mpmc32(out), Some(9.08));
        let old =
            "### Testing using two physical cores ###\nMP/MC bulk enq/dequeue (size: 32): 7.90\n";
        assert_eq!(parse_autotest_mpmc32(old), Some(7.90));
        assert_eq!(parse_autotest_mpmc32("nothing"), None);
    }
}
