#!/usr/bin/env bash
# Two builds of dp-kv against each other under redis-benchmark, alternating
# order each round: per build the server's CPU per request (its busy time
# from the --json summary over the run's SET and GET requests) and GET's
# requests/s, and the same-round ratio OLD/NEW of CPU per request (above 1:
# the new build spends less), its median and range (docs/performance.md,
# Servers).
#
#   scripts/ab-kv.sh OLD NEW [ROUNDS] [PIPELINE] [VALUE_BYTES] [REQUESTS]
#
# Defaults: 8 rounds, -P 16, 1024-byte values, 400000 requests of each of
# SET and GET, 50 connections. OLD and NEW are dp-kv binaries, e.g. the old
# one built from a worktree of the earlier commit:
#   git worktree add /tmp/old COMMIT
#   (cd /tmp/old && CARGO_TARGET_DIR=/tmp/old-target cargo build --release \
#       -p dataplane-apps --bin dp-kv)
# Server on cpu 0, client on cpu 1 (DP_BENCH_CPUS=server,client).
set -euo pipefail
[[ $# -ge 2 ]] || { sed -n '2,17p' "$0" >&2; exit 2; }
old=$1 new=$2 rounds=${3:-8} pipeline=${4:-16} size=${5:-1024} requests=${6:-400000}
IFS=, read -r server_cpu client_cpu <<<"${DP_BENCH_CPUS:-0,1}"
for tool in redis-benchmark redis-cli python3; do
    command -v "$tool" >/dev/null || { echo "ab-kv: $tool is missing" >&2; exit 1; }
done
work=$(mktemp -d)
trap 'pkill -P $$ 2>/dev/null || true; rm -rf "$work"' EXIT
port=18900

run() { # binary -> "cpu_us_per_request get_rps"
    port=$((port + 1))
    "$1" --port "$port" --cpus "$server_cpu" --json >"$work/server.log" 2>&1 &
    local pid=$! up=
    for _ in $(seq 200); do
        redis-cli -p "$port" PING >/dev/null 2>&1 && { up=1; break; }
        sleep 0.05
    done
    [[ -n $up ]] || { echo "ab-kv: $1 did not start:" >&2; cat "$work/server.log" >&2; exit 1; }
    local rps
    rps=$(taskset -c "$client_cpu" redis-benchmark -p "$port" -t set,get -c 50 -n "$requests" \
        -P "$pipeline" -d "$size" --csv 2>/dev/null | awk -F, '/^"GET"/ { gsub(/"/, ""); print $2 }')
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    local busy
    busy=$(tail -n1 "$work/server.log" | python3 -c 'import json,sys; print(json.load(sys.stdin)["busy_seconds"])')
    [[ $rps =~ ^[0-9.]+$ && $busy =~ ^[0-9.]+$ ]] || { echo "ab-kv: $1 gave no figures" >&2; exit 1; }
    awk -v b="$busy" -v n="$requests" -v r="$rps" 'BEGIN { printf "%.4f %s\n", b * 1e6 / (2 * n), r }'
}

for ((i = 1; i <= rounds; i++)); do
    if ((i % 2)); then n=$(run "$new"); o=$(run "$old"); else o=$(run "$old"); n=$(run "$new"); fi
    read -r ocpu orps <<<"$o"
    read -r ncpu nrps <<<"$n"
    echo "round $i: old ${ocpu} us/request ${orps} GET/s, new ${ncpu} us/request ${nrps} GET/s" >&2
    awk -v o="$ocpu" -v n="$ncpu" 'BEGIN { print o / n }'
done | sort -g | awk -v p="$pipeline" -v d="$size" '{a[NR] = $1} END {
    m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
    printf "-P %s -d %s: old/new CPU per request, same round: median %.2f [%.2f %.2f] over %d rounds\n", p, d, m, a[1], a[NR], NR }'
