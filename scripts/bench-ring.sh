#!/usr/bin/env bash
# Ring and mempool benchmarks, ours side by side with the peer crates and
# with DPDK itself, interleaved in one run (see docs/performance.md).
#
#   scripts/bench-ring.sh [--rounds N] [--scale F] [--only NAME[,NAME]]
#
# 1. Builds benches/c/ring_bench.c and benches/c/mempool_bench.c against the
#    system's libdpdk (pkg-config) into a temporary directory (removed at
#    exit; binaries are never written into the tree).
# 2. Reserves 2 MiB hugepages when running as root and fewer than
#    DP_BENCH_HUGEPAGES (default 512) are reserved; DPDK then runs with
#    --in-memory on hugepages, else with --no-huge.
# 3. Runs `dpdk-test` ring_perf_autotest once and keeps its output (its
#    two-core MP/MC bulk-32 line is a second reference).
# 4. Runs the interleaved comparison (benches/benches/compare.rs): every
#    contender of a target, Rust and C, A B B A for N rounds in one process;
#    prints the per-target tables and the summary of ratios.
# 5. Writes the text and JSON results to target/bench/ring-<timestamp>.{txt,json}.
#
# Without libdpdk the C contenders and the autotest are skipped (said so in
# the output) and the Rust comparisons still run. Environment: CARGO_TARGET_DIR
# (default target/ in the repository), DP_BENCH_CPUS
# (default "0,1": producer cpu, consumer cpu), DP_BENCH_HUGEPAGES.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
cpus=${DP_BENCH_CPUS:-0,1}
export DP_BENCH_CPUS=$cpus
out_dir=$repo/target/bench
mkdir -p "$out_dir"
stamp=$(date +%Y%m%d-%H%M%S)
txt=$out_dir/ring-$stamp.txt
json=$out_dir/ring-$stamp.json

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

log() { echo "bench-ring: $*" | tee -a "$txt" >&2; }
: >"$txt"
log "machine: $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
log "rustc: $(rustc --version)"

# ---- hugepages ---------------------------------------------------------------
want_pages=${DP_BENCH_HUGEPAGES:-512}
nr=/proc/sys/vm/nr_hugepages
if [[ $(id -u) -eq 0 && -w $nr && $(cat $nr) -lt $want_pages ]]; then
    echo "$want_pages" >$nr || true
fi
free_pages=$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)
if [[ ${free_pages:-0} -ge 64 ]]; then
    eal_mem="--in-memory"
    log "hugepages: $free_pages free 2 MiB pages; DPDK runs --in-memory on them"
else
    eal_mem="--no-huge -m 256"
    log "hugepages: ${free_pages:-0} free; DPDK runs --no-huge"
fi
export DP_BENCH_EAL_ARGS="$eal_mem --no-pci --no-telemetry --log-level=lib.*:error"

# ---- the C programs ----------------------------------------------------------
if pkg-config --exists libdpdk 2>/dev/null; then
    log "DPDK: libdpdk $(pkg-config --modversion libdpdk)"
    # -O3 plus libdpdk's own flags (-march=corei7 in Debian's build); the
    # Rust side is built for the default x86-64 target.
    for prog in ring_bench mempool_bench; do
        # shellcheck disable=SC2046 # pkg-config output is a word list
        cc -O3 -Wall -o "$tmp/$prog" "benches/c/$prog.c" $(pkg-config --cflags --libs libdpdk)
    done
    export DP_BENCH_RING_C=$tmp/ring_bench
    export DP_BENCH_MEMPOOL_C=$tmp/mempool_bench
else
    log "DPDK: libdpdk not found by pkg-config; the rte_ring/rte_mempool contenders are skipped"
fi

# ---- ring_perf_autotest, once --------------------------------------------------
if command -v dpdk-test >/dev/null; then
    p=${cpus%%,*}
    c=${cpus##*,}
    # shellcheck disable=SC2086 # the EAL arguments are a word list
    if echo ring_perf_autotest | timeout 300 dpdk-test -l "$p,$c" --main-lcore "$p" \
        $DP_BENCH_EAL_ARGS >"$tmp/autotest.txt" 2>&1; then
        cp "$tmp/autotest.txt" "$out_dir/autotest-$stamp.txt"
        export DP_BENCH_AUTOTEST_OUT=$out_dir/autotest-$stamp.txt
        log "ring_perf_autotest: output kept in $DP_BENCH_AUTOTEST_OUT"
    else
        log "ring_perf_autotest failed: $(tail -n 3 "$tmp/autotest.txt" | tr '\n' ' ')"
    fi
else
    log "dpdk-test not found; no ring_perf_autotest reference"
fi

# ---- the interleaved comparison ---------------------------------------------------
log "running the interleaved comparison (per-sample lines on stderr)"
cargo bench -p dataplane-benches --bench compare -- --json "$json" "$@" | tee -a "$txt"
log "results: $txt and $json"
