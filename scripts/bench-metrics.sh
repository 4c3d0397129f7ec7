#!/usr/bin/env bash
# Metrics cost nothing on the data path: l2fwd on DPDK's net_null0 and
# net_null1 with --metrics (scraped three times a run) and without, in
# turn, one pair a round in alternating order (docs/performance.md,
# "Metrics on and off"). Goal: the median same-round ratio of tx Mpps,
# on/off, within 1% of 1.
#
#   scripts/bench-metrics.sh [--rounds N] [--seconds S] [--addr 127.0.0.1:19109]
#
# Needs libdpdk (net_null), curl and jq. Writes target/bench/metrics-<stamp>.txt.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
rounds=15
secs=2.5
addr=127.0.0.1:19109
while [[ $# -gt 0 ]]; do
    case $1 in
        --rounds) rounds=$2; shift 2 ;;
        --seconds) secs=$2; shift 2 ;;
        --addr) addr=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-metrics: unknown argument $1" >&2; exit 2 ;;
    esac
done
for tool in curl jq; do
    command -v $tool >/dev/null || { echo "bench-metrics: $tool is not installed" >&2; exit 1; }
done
mkdir -p target/bench
txt=target/bench/metrics-$(date +%Y%m%d-%H%M%S).txt
cargo build -q --release -p dataplane-apps --bin l2fwd
l2fwd=$CARGO_TARGET_DIR/release/l2fwd

one() { # on|off
    local extra=()
    if [[ $1 == on ]]; then
        extra=(--metrics "$addr")
        (for _ in 1 2 3; do sleep 0.7; curl -s "http://$addr/metrics" >/dev/null || true; done) &
    fi
    "$l2fwd" --vdev net_null0 --vdev net_null1 --lcores 1 --duration "$secs" --json "${extra[@]}" 2>/dev/null |
        tail -1 | jq .tx_mpps
    wait
}

results=$(mktemp)
trap 'rm -f "$results"' EXIT
for ((r = 1; r <= rounds; r++)); do
    order=(off on)
    ((r % 2)) || order=(on off)
    for mode in "${order[@]}"; do
        echo "$r $mode $(one "$mode")" >>"$results"
    done
done
{
    echo "l2fwd on net_null, tx Mpps with --metrics (scraped) and without, $rounds rounds of $secs s"
    awk '{print}' "$results"
    awk '{ if ($2 == "on") on[$1] = $3; else off[$1] = $3 }
        END { for (r in on) if (off[r] > 0) print on[r] / off[r] }' "$results" | sort -g |
        awk '{a[NR] = $1} END {
            m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
            printf "on/off: median %.4f [p10 %.4f, p90 %.4f] over %d rounds: %s (want within 0.01 of 1)\n",
                m, a[int(0.1 * NR + 0.999)], a[int(0.9 * NR + 0.999)], NR,
                (m >= 0.99 && m <= 1.01) ? "met" : "MISSED" }'
} | tee "$txt"
