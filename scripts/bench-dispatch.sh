#!/usr/bin/env bash
# I/O-lcore dispatch: the cost of handing every packet to a worker lcore
# and back (docs/performance.md, "I/O lcores feeding workers"),
# interleaved in one run on DPDK's net_null0 -> net_null1:
#
#   ours-1lcore    l2fwd --lcores 1: receive, rewrite the MACs, send, on
#                  one lcore (the forwarding without the hop)
#   ours-dispatch  l2fwd --lcores 1 --workers 1: the data lcore receives,
#                  steers each packet to the worker over a ring, and sends
#                  what comes back; the worker does the rewrite
#   dpdk-pipeline  benches/c/pipeline_bench.c: the same over two rte_rings
#                  (SP/SC) between an rx/tx lcore and a worker lcore
#
#   scripts/bench-dispatch.sh [--rounds N] [--seconds S]
#
# Contenders run in turn A..Z then Z..A, one unrecorded warm-up round
# first. Goals, on the median of same-round ratios: ours-dispatch at least
# dpdk-pipeline. Writes target/bench/dispatch-<stamp>.txt and the raw JSON
# lines beside it. Needs libdpdk-dev and root for hugepages (--in-memory);
# scripts/install-deps.sh installs the packages.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}

rounds=5
secs=2
while [[ $# -gt 0 ]]; do
    case $1 in
        --rounds) rounds=$2; shift 2 ;;
        --seconds) secs=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-dispatch: unknown argument $1" >&2; exit 2 ;;
    esac
done

out_dir=$repo/target/bench
mkdir -p "$out_dir"
stamp=$(date +%Y%m%d-%H%M%S)
txt=$out_dir/dispatch-$stamp.txt
raw=$out_dir/dispatch-$stamp.jsonl
results=$(mktemp)
work=$(mktemp -d)
trap 'rm -rf "$results" "$work"' EXIT
log() { echo "bench-dispatch: $*" | tee -a "$txt" >&2; }

pkg-config --exists libdpdk || { log "libdpdk is not installed"; exit 1; }
cc -O3 -o "$work/pipeline_bench" benches/c/pipeline_bench.c $(pkg-config --cflags --libs libdpdk)
cargo build -q --release -p dataplane-apps --bin l2fwd
L2FWD=$CARGO_TARGET_DIR/release/l2fwd

# Each prints "rx_mpps tx_mpps" or "refused <why>".
ours() {
    local out
    if ! out=$("$L2FWD" --vdev net_null0 --vdev net_null1 --lcores 1 --duration "$secs" --json "$@" 2>"$work/err"); then
        echo "refused $(grep -v '^$' "$work/err" | tail -2 | tr -s ' \n' ' ')"
        return
    fi
    tail -1 <<<"$out" | tee -a "$raw" | jq -r '"\(.rx_mpps) \(.tx_mpps)"'
}
pipeline() {
    local out
    if ! out=$("$work/pipeline_bench" "$secs" -l 0,1 --no-pci --in-memory --log-level=error \
        --vdev net_null0 --vdev net_null1 2>"$work/err"); then
        echo "refused $(grep -v '^$' "$work/err" | tail -2 | tr -s ' \n' ' ')"
        return
    fi
    tail -1 <<<"$out" | tee -a "$raw" | jq -r '"\(.rx_mpps) \(.tx_mpps)"'
}

contenders=(
    "ours-1lcore|ours"
    "ours-dispatch|ours --workers 1"
    "dpdk-pipeline|pipeline"
)

log "$(date -u +%Y-%m-%dT%H:%M:%SZ), kernel $(uname -r), libdpdk $(pkg-config --modversion libdpdk)"
log "net_null0 -> net_null1, burst 32, MAC rewrite, ${secs} s per run, $rounds rounds + 1 warm-up"
for ((round = 0; round <= rounds; round++)); do
    order=("${contenders[@]}")
    if ((round % 2)); then
        order=()
        for ((i = ${#contenders[@]} - 1; i >= 0; i--)); do order+=("${contenders[$i]}"); done
    fi
    for c in "${order[@]}"; do
        name=${c%%|*}
        r=$(eval "${c#*|}")
        if [[ $r == refused* ]]; then
            log "round $round: $name failed: ${r#refused }"
            continue
        fi
        ((round > 0)) && echo "$round $name $r" >>"$results"
    done
    ((round > 0)) && log "round $round of $rounds done"
done

stats() {
    sort -g | awk '{a[NR]=$1} END {
        if (NR == 0) { print "- - -"; exit }
        p10 = int(0.1 * NR + 0.999); if (p10 < 1) p10 = 1
        p90 = int(0.9 * NR + 0.999)
        m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
        printf "%g %g %g\n", m, a[p10], a[p90] }'
}
ratios() {
    awk -v a="$1" -v b="$2" '$2 == a {x[$1] = $4} $2 == b {y[$1] = $4}
        END {for (r in x) if ((r in y) && y[r] > 0) print x[r] / y[r]}' "$results"
}
{
    echo
    echo "tx Mpps, median [p10, p90] over $rounds rounds"
    for c in "${contenders[@]}"; do
        name=${c%%|*}
        read -r m lo hi < <(awk -v n="$name" '$2 == n {print $4}' "$results" | stats)
        printf '  %-14s %7.2f [%6.2f, %6.2f]\n' "$name" "$m" "$lo" "$hi"
    done
    echo
    echo "same-round ratios of tx Mpps, median [p10, p90]"
    for pair in "ours-dispatch dpdk-pipeline ge 1.0" "ours-dispatch ours-1lcore - -"; do
        read -r a b want th <<<"$pair"
        read -r m lo hi < <(ratios "$a" "$b" | stats)
        verdict=""
        if [[ $want == ge ]]; then
            verdict=$(awk -v m="$m" -v t="$th" 'BEGIN { print (m >= t) ? "met" : "MISSED" }')
            verdict="$verdict (want >= $th)"
        fi
        printf '  %-30s %6.3f [%6.3f, %6.3f]  %s\n' "$a / $b" "$m" "$lo" "$hi" "$verdict"
    done
} | tee -a "$txt"
log "results in $txt, raw runs in $raw"
