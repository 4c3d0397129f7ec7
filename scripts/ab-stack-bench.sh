#!/usr/bin/env bash
# Two builds of stack-bench against each other, alternating order each
# round: the same-round ratio NEW/OLD of requests/s (rr) or Gbit/s (bulk),
# its median and range (docs/performance.md, "Receives read in place").
#
#   scripts/ab-stack-bench.sh OLD NEW rr CONNS SIZE [ROUNDS]
#   scripts/ab-stack-bench.sh OLD NEW bulk [ROUNDS]
#
# OLD and NEW are stack-bench binaries, e.g. the old one built from a
# worktree of the earlier commit:
#   git worktree add /tmp/old COMMIT
#   (cd /tmp/old && CARGO_TARGET_DIR=/tmp/old-target cargo build --release \
#       -p dataplane-benches --bin stack-bench)
# Each run is 1 s on cpus 0 (server) and 1 (client).
set -euo pipefail
[[ $# -ge 3 ]] || { sed -n '2,14p' "$0" >&2; exit 2; }
old=$1 new=$2 mode=$3
shift 3
case $mode in
    rr) conns=$1 size=$2 rounds=${3:-10}; args=(rr 0 1 "$conns" "$size" 1); key=rps ;;
    bulk) rounds=${1:-10}; args=(bulk 0 1 1); key=gbps ;;
    *) echo "ab-stack-bench: mode is rr or bulk" >&2; exit 2 ;;
esac
run() { # binary
    local v
    v=$("$1" "${args[@]}" | jq -r ".$key")
    [[ $v =~ ^[0-9.]+$ ]] || { echo "ab-stack-bench: $1 ${args[*]} gave no $key" >&2; exit 1; }
    echo "$v"
}
for ((i = 1; i <= rounds; i++)); do
    if ((i % 2)); then n=$(run "$new"); o=$(run "$old"); else o=$(run "$old"); n=$(run "$new"); fi
    echo "round $i: old $o new $n" >&2
    awk -v n="$n" -v o="$o" 'BEGIN {print n / o}'
done | sort -g | awk '{a[NR] = $1} END {
    m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
    printf "new/old, same round: median %.2f [%.2f %.2f] over %d rounds\n", m, a[1], a[NR], NR }'
