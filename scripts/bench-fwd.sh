#!/usr/bin/env bash
# Forwarding benchmarks, ours side by side with DPDK's own programs on the
# same virtual devices and cores, interleaved in one run (see
# docs/performance.md, "Forwarding").
#
#   scripts/bench-fwd.sh [--rounds N] [--seconds S] [--memory huge,nohuge]
#                        [--only null,ring]
#
# 1. Builds DPDK's l2fwd example from its source in Debian's dpdk-doc
#    package (/usr/share/dpdk/examples/l2fwd; DP_BENCH_L2FWD_SRC changes it)
#    with its own Makefile, which finds libdpdk through pkg-config, in a
#    temporary directory (removed at exit; nothing is written into the tree).
# 2. Reserves 2 MiB hugepages when running as root and fewer than
#    DP_BENCH_HUGEPAGES (default 512) are reserved; the comparisons then run
#    twice, on hugepages (--in-memory) and without (--no-huge -m 256).
# 3. Runs benches/benches/fwd.rs: on net_null0/net_null1, ours (the bench
#    loop, io and l2fwd's MAC rewrite, and our l2fwd program as users run
#    it, with and without --no-mac-updating) against dpdk-testpmd io and
#    macswap and the l2fwd example; on rings, a MemoryPort pair against testpmd io on
#    net_ring0/net_ring1. One forwarding lcore, burst 32, A B B A rounds.
# 4. Prints the tables and the summary of same-round ratios against the
#    goals, and writes them to target/bench/fwd-<timestamp>.{txt,json}.
#
# Needs dpdk-testpmd (package dpdk), libdpdk-dev and dpdk-doc
# (scripts/install-deps.sh installs them); without the l2fwd source the
# l2fwd contender is skipped and says why. Environment: CARGO_TARGET_DIR
# (default target/ in the repository), DP_BENCH_FWD_CPUS (default "0,1":
# EAL's main lcore, the forwarding lcore), DP_BENCH_HUGEPAGES,
# DP_BENCH_TESTPMD.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
export DP_BENCH_FWD_CPUS=${DP_BENCH_FWD_CPUS:-0,1}
out_dir=$repo/target/bench
mkdir -p "$out_dir"
stamp=$(date +%Y%m%d-%H%M%S)
txt=$out_dir/fwd-$stamp.txt
json=$out_dir/fwd-$stamp.json

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

log() { echo "bench-fwd: $*" | tee -a "$txt" >&2; }
: >"$txt"
log "machine: $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
log "rustc: $(rustc --version)"

if ! pkg-config --exists libdpdk 2>/dev/null; then
    log "libdpdk not found by pkg-config (scripts/install-deps.sh installs libdpdk-dev); nothing to compare"
    exit 1
fi
log "DPDK: libdpdk $(pkg-config --modversion libdpdk), testpmd: $(command -v "${DP_BENCH_TESTPMD:-dpdk-testpmd}" || echo 'not found')"

# ---- hugepages ---------------------------------------------------------------
want_pages=${DP_BENCH_HUGEPAGES:-512}
nr=/proc/sys/vm/nr_hugepages
if [[ $(id -u) -eq 0 && -w $nr && $(cat $nr) -lt $want_pages ]]; then
    echo "$want_pages" >$nr || true
fi
log "hugepages: $(awk '/HugePages_Free/ {print $2}' /proc/meminfo) free 2 MiB pages (the bench needs 256)"

# ---- DPDK's l2fwd example --------------------------------------------------------
src=${DP_BENCH_L2FWD_SRC:-/usr/share/dpdk/examples/l2fwd}
if [[ -f $src/main.c && -f $src/Makefile ]]; then
    cp -r "$src" "$tmp/l2fwd"
    # Its Makefile takes the flags from pkg-config (-O3, DPDK's -march) and
    # links the shared libraries, as the Debian package builds it.
    if make -s -C "$tmp/l2fwd" >"$tmp/l2fwd.log" 2>&1; then
        export DP_BENCH_L2FWD_C=$tmp/l2fwd/build/l2fwd
        log "l2fwd: built from $src"
    else
        log "l2fwd: build failed, skipped: $(tail -n 3 "$tmp/l2fwd.log" | tr '\n' ' ')"
    fi
else
    log "l2fwd: no source in $src (install dpdk-doc), skipped"
fi

# ---- our l2fwd program, as users run it --------------------------------------------
if cargo build --release -q -p dataplane-apps --bin l2fwd; then
    export DP_BENCH_L2FWD_APP=$CARGO_TARGET_DIR/release/l2fwd
    log "app: our l2fwd program ($DP_BENCH_L2FWD_APP)"
else
    log "app: our l2fwd program did not build; the app contenders are skipped"
fi

# ---- the interleaved comparison ---------------------------------------------------
log "running the interleaved comparison (per-sample lines on stderr)"
cargo bench -p dataplane-benches --bench fwd -- --json "$json" "$@" | tee -a "$txt"
log "results: $txt and $json"
