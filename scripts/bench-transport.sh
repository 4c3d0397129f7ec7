#!/usr/bin/env bash
# Request/response of small messages over TCP on loopback (docs/performance.md,
# "Transport"), interleaved in one run, each server pinned to one cpu and the
# client to the other:
#
#   ours-io_uring  the transport's io_uring engine, a poll-mode echo loop
#   ours-epoll     the transport's epoll engine, the same loop
#   tokio          Tokio's current-thread runtime, one task per connection
#                  (the server a Rust user would write instead)
#   c-epoll        benches/c/epoll_echo.c, a plain level-triggered epoll loop
#
# The client (benches/src/bin/transport-bench.rs) is the same for every
# server: our transport on io_uring, CONNS connections with one request of
# SIZE bytes outstanding each, 0.3 s of warm-up, then SECONDS counted; it
# reports requests/s and the p50 and p99 round trip. On a machine where one
# client core cannot saturate a server, requests/s measures the client; the
# server's CPU per request says what each server costs: user plus system
# time for the peers (from /proc), busy time for ours (they spin; the passes
# that found work, as DPDK's /eal/lcore/usage counts it), over a window
# inside the client's measured span.
#
#   scripts/bench-transport.sh [--rounds N] [--seconds S] [--size BYTES] [--conns "1 16 256"]
#
# Contenders run A..Z then Z..A in alternate rounds. Goal (issue: io_uring
# engine >= 1.5x Tokio's requests/s at 256 connections, p99 no worse), read
# on the median of same-round ratios. Writes target/bench/transport-<stamp>.txt
# and the raw JSON lines beside it. DP_BENCH_CPUS="SERVER,CLIENT" (default 0,1).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}

rounds=5
secs=2
size=64
conns_list="1 16 256"
while [[ $# -gt 0 ]]; do
    case $1 in
        --rounds) rounds=$2; shift 2 ;;
        --seconds) secs=$2; shift 2 ;;
        --size) size=$2; shift 2 ;;
        --conns) conns_list=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-transport: unknown argument $1" >&2; exit 2 ;;
    esac
done
IFS=, read -r server_cpu client_cpu <<<"${DP_BENCH_CPUS:-0,1}"

out_dir=$repo/target/bench
mkdir -p "$out_dir"
stamp=$(date +%Y%m%d-%H%M%S)
txt=$out_dir/transport-$stamp.txt
raw=$out_dir/transport-$stamp.jsonl
work=$(mktemp -d)
trap 'pkill -P $$ 2>/dev/null || true; rm -rf "$work"' EXIT
log() { echo "bench-transport: $*" | tee -a "$txt" >&2; }

log "machine: $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
cc -O2 -o "$work/epoll_echo" benches/c/epoll_echo.c
cargo build -q --release -p dataplane-benches --bin transport-bench
BENCH=$CARGO_TARGET_DIR/release/transport-bench
contenders=(ours-io_uring ours-epoll tokio c-epoll)
port=17800
life=$((secs + 30))

start_server() { # contender port
    case $1 in
        ours-io_uring) exec "$BENCH" server io_uring "127.0.0.1:$2" "$server_cpu" "$life" ;;
        ours-epoll) exec "$BENCH" server epoll "127.0.0.1:$2" "$server_cpu" "$life" ;;
        tokio) exec "$BENCH" server tokio "127.0.0.1:$2" "$server_cpu" "$life" ;;
        c-epoll) exec taskset -c "$server_cpu" "$work/epoll_echo" "$2" "$life" ;;
    esac
}

# CPU the server has used, in ns: ours spin, so their busy time (the passes
# that found work, which they print every 100 ms); the others' user and
# system time from /proc.
server_cpu_ns() { # contender pid
    case $1 in
        ours-*) tail -1 "$work/server.err" | jq -r '.busy_ns // 0' ;;
        *) awk -v hz="$(getconf CLK_TCK)" '{printf "%d\n", ($14 + $15) * 1e9 / hz}' "/proc/$2/stat" ;;
    esac
}

run_one() { # round contender conns
    port=$((port + 1))
    start_server "$2" "$port" 2>"$work/server.err" &
    local pid=$!
    # Wait (bounded) for the listener.
    for _ in $(seq 100); do
        ss -ltn "sport = :$port" | grep -q LISTEN && break
        sleep 0.02
    done
    "$BENCH" client "127.0.0.1:$port" "$client_cpu" "$3" "$size" "$secs" >"$work/client.out" 2>"$work/client.err" &
    local client=$!
    # The server's CPU over a window inside the client's measured span.
    sleep 0.8
    local c0 t0 c1 t1
    c0=$(server_cpu_ns "$2" "$pid"); t0=$(date +%s%N)
    sleep "$(python3 -c "print(max(0.2, $secs - 1.0))")"
    c1=$(server_cpu_ns "$2" "$pid"); t1=$(date +%s%N)
    if wait "$client"; then
        jq -c --argjson round "$1" --arg who "$2" --argjson cpu "$((c1 - c0))" --argjson wall "$((t1 - t0))" \
            '. + {round: $round, contender: $who,
                  server_us_per_req: (if .rps > 0 then ($cpu / 1000) / (.rps * $wall / 1e9) else null end)}' \
            "$work/client.out" | tee -a "$raw"
    else
        log "$2 conns=$3 failed: $(tail -2 "$work/client.err" "$work/server.err" | tr '\n' ' ')"
    fi
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

log "rounds $rounds, $secs s each, $size-byte requests, connections: $conns_list"
for round in $(seq 0 "$rounds"); do
    order=("${contenders[@]}")
    if ((round % 2 == 0)); then
        order=(); for ((i = ${#contenders[@]} - 1; i >= 0; i--)); do order+=("${contenders[i]}"); done
    fi
    for conns in $conns_list; do
        for who in "${order[@]}"; do
            # Round 0 warms up and is not recorded.
            if ((round == 0)); then run_one 0 "$who" "$conns" >/dev/null; else run_one "$round" "$who" "$conns" >/dev/null; fi
        done
    done
done
grep -v '"round":0' "$raw" >"$work/rec.jsonl" || true

python3 - "$work/rec.jsonl" <<'EOF' | tee -a "$txt"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def med(xs): return statistics.median(xs) if xs else float("nan")
def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))] if xs else float("nan")
conns = sorted({r["conns"] for r in rows})
who = ["ours-io_uring", "ours-epoll", "tokio", "c-epoll"]
print("| connections | contender | requests/s, median | p50 us | p99 us | server CPU us per request |")
print("| --- | --- | --- | --- | --- | --- |")
for c in conns:
    for w in who:
        rs = [r for r in rows if r["conns"] == c and r["contender"] == w]
        if rs:
            cpu = [r["server_us_per_req"] for r in rs if r.get("server_us_per_req") is not None]
            print(f"| {c} | {w} | {med([r['rps'] for r in rs]):,.0f} | {med([r['p50_us'] for r in rs]):.1f} | {med([r['p99_us'] for r in rs]):.1f} | {med(cpu):.2f} |")
print()
print("| connections | ratio (same round) | requests/s: median [min max] | p99: median | server CPU per request, peer / ours: median [min max] |")
print("| --- | --- | --- | --- | --- |")
for c in conns:
    for a, b in [("ours-io_uring", "tokio"), ("ours-epoll", "tokio"), ("ours-io_uring", "c-epoll")]:
        rr, pp, cc = [], [], []
        for rnd in sorted({r["round"] for r in rows}):
            x = [r for r in rows if r["conns"] == c and r["round"] == rnd and r["contender"] == a]
            y = [r for r in rows if r["conns"] == c and r["round"] == rnd and r["contender"] == b]
            if x and y and y[0]["rps"] > 0:
                rr.append(x[0]["rps"] / y[0]["rps"])
                pp.append(x[0]["p99_us"] / y[0]["p99_us"] if y[0]["p99_us"] else float("nan"))
                if x[0].get("server_us_per_req") and y[0].get("server_us_per_req"):
                    cc.append(y[0]["server_us_per_req"] / x[0]["server_us_per_req"])
        if rr:
            cpu = f"{med(cc):.2f} [{min(cc):.2f} {max(cc):.2f}]" if cc else "n/a"
            print(f"| {c} | {a} / {b} | {med(rr):.2f} [{min(rr):.2f} {max(rr):.2f}] | {med(pp):.2f} | {cpu} |")
EOF
log "results: $txt (raw: $raw)"
