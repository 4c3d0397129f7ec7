#!/usr/bin/env bash
# The benchmark entry point for the message-passing core: the interleaved
# ring, mempool and worker-pool comparisons (bench-ring.sh), and with
# `criterion` the criterion groups too. The other comparisons have their
# own scripts, each run on its own (they need root, namespaces, DPDK or
# fio, and minutes each): bench-fwd.sh (forwarding against testpmd and
# DPDK's l2fwd), bench-sockets.sh (AF_PACKET and io_uring over veth),
# bench-storage.sh (nvme-perf against fio), bench-accel.sh (accelerator
# queues against a bare ash loop).
#
#   scripts/bench.sh              # the interleaved comparisons (bench-ring.sh)
#   scripts/bench.sh criterion    # ... and then `cargo bench -p dataplane-benches`
#   scripts/bench.sh -- ARGS      # ARGS go to bench-ring.sh (--rounds, --scale, --only)
#
# Results go to target/bench/ (not committed); docs/performance.md records
# the reference figures and explains the method.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}

criterion=0
if [[ ${1:-} == criterion ]]; then
    criterion=1
    shift
fi
[[ ${1:-} == -- ]] && shift

"$repo/scripts/bench-ring.sh" "$@"

if [[ $criterion -eq 1 ]]; then
    # The criterion groups include DPDK's rte_ring/rte_mempool when the C
    # programs are built (same as bench-ring.sh does, into a temp dir).
    if pkg-config --exists libdpdk 2>/dev/null; then
        tmp=$(mktemp -d)
        trap 'rm -rf "$tmp"' EXIT
        for prog in ring_bench mempool_bench; do
            # shellcheck disable=SC2046 # pkg-config output is a word list
            cc -O3 -Wall -o "$tmp/$prog" "benches/c/$prog.c" $(pkg-config --cflags --libs libdpdk)
        done
        export DP_BENCH_RING_C=$tmp/ring_bench DP_BENCH_MEMPOOL_C=$tmp/mempool_bench
    fi
    cargo bench -p dataplane-benches --bench ring --bench mempool
fi
