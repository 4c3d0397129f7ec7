#!/usr/bin/env bash
# Accelerator benchmarks, ours side by side with a bare ash loop and with
# the CPU implementations, interleaved in one run (docs/performance.md,
# "Accelerators").
#
#   scripts/bench-accel.sh [--rounds N] [--quick]
#
# Runs benches/benches/accel.rs: the round trip of a tiny dispatch (our
# Queue against a bare ash submit-and-poll loop, vkWaitForFences and an
# empty submit), every kernel on the device against its CPU implementation
# at batch sizes 1 to 4096 with the crossover, and import against staging.
# Reserves 2 MiB hugepages as root when fewer than 512 are reserved (the
# mbuf pools are imported from them). Writes the text and JSON results to
# target/bench/accel-<timestamp>.{txt,json}. On a machine without Vulkan it
# prints the probe's reason and measures nothing.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
out_dir=$repo/target/bench
mkdir -p "$out_dir"
stamp=$(date +%Y%m%d-%H%M%S)
txt=$out_dir/accel-$stamp.txt
json=$out_dir/accel-$stamp.json

nr=/proc/sys/vm/nr_hugepages
if [[ $(id -u) -eq 0 && -w $nr && $(cat $nr) -lt 512 ]]; then
    echo 512 >$nr || true
fi

{
    echo "bench-accel: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(rustc --version)"
    echo "bench-accel: $(vulkaninfo --summary 2>/dev/null | grep -m1 deviceName | sed 's/^ *//' || echo 'vulkaninfo not installed')"
} | tee "$txt"
cargo bench -q -p dataplane-benches --bench accel -- --json "$json" "$@" | tee -a "$txt"
echo "bench-accel: results in $txt and $json"
