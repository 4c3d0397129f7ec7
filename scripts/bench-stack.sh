#!/usr/bin/env bash
# The user-space TCP/IP stack (dataplane::transport::stack) against itself
# over a memory port pair, beside Linux's TCP over loopback on the same two
# cpus (docs/performance.md, "The user-space stack"), interleaved in one run:
#
#   bulk   ours: benches/src/bin/stack-bench.rs bulk, one connection, the
#          server stack pinned to one cpu and the client stack to the other
#          (MTU 9,000, the memory port's). Linux: iperf3 server and client
#          on the same cpus over lo (MTU 65,536). Ours runs twice: with
#          software checksums, and with the memory link carrying them as
#          a virtio link (and lo) does (STACK_BENCH_OFFLOAD), so that
#          neither stack computes one, as neither of Linux's does on lo.
#   rr     CONNS connections, one SIZE-byte request outstanding each, the
#          server echoes. Ours: stack-bench rr. Linux: benches/c/epoll_echo.c
#          as the server, transport-bench's client (our io_uring transport
#          over the kernel's TCP) as the client. p50/p99 round trips too.
#
#   veth   dp-http (/plaintext) in one network namespace, behind a veth
#          whose other end holds wrk (16 connections) in another: on the
#          user-space stack over AF_XDP and over AF_PACKET (--stack-port
#          veth0) against the same server on the kernel's TCP (epoll
#          engine), one shard on the
#          server cpu, wrk pinned to the client cpu. Reports requests/s and
#          the server's busy CPU per request (dp-http's own accounting).
#
#   scripts/bench-stack.sh [--rounds N] [--seconds S] [--size BYTES] [--conns "1 16 256"] [--no-veth]
#
# Goals (issue: the user-space stack against Linux TCP over loopback):
# >= 2x Linux's bulk throughput and >= 2x its 64-byte request rate; and the
# seed's latency p50 < 10 us, p99 < 100 us for a small request. Read on the
# median of same-round ratios. Contenders alternate order each round.
# Writes target/bench/stack-<stamp>.txt and the raw JSON lines beside it.
# DP_BENCH_CPUS="SERVER,CLIENT" (default 0,1).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}

rounds=5
secs=2
size=64
conns_list="1 16 256"
veth=1
while [[ $# -gt 0 ]]; do
    case $1 in
        --rounds) rounds=$2; shift 2 ;;
        --seconds) secs=$2; shift 2 ;;
        --size) size=$2; shift 2 ;;
        --conns) conns_list=$2; shift 2 ;;
        --no-veth) veth=0; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-stack: unknown argument $1" >&2; exit 2 ;;
    esac
done
IFS=, read -r server_cpu client_cpu <<<"${DP_BENCH_CPUS:-0,1}"
for tool in iperf3 jq cc wrk ethtool; do
    command -v "$tool" >/dev/null || { echo "bench-stack: $tool is needed (scripts/install-deps.sh)" >&2; exit 1; }
done

out_dir=$repo/target/bench
mkdir -p "$out_dir"
stamp=$(date +%Y%m%d-%H%M%S)
txt=$out_dir/stack-$stamp.txt
raw=$out_dir/stack-$stamp.jsonl
work=$(mktemp -d)
trap 'pkill -P $$ 2>/dev/null || true; rm -rf "$work"' EXIT
log() { echo "bench-stack: $*" | tee -a "$txt" >&2; }

log "machine: $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
cc -O2 -o "$work/epoll_echo" benches/c/epoll_echo.c
cargo build -q --release -p dataplane-benches --bin stack-bench --bin transport-bench
cargo build -q --release -p dataplane-apps --bin dp-http
STACK=$CARGO_TARGET_DIR/release/stack-bench
TB=$CARGO_TARGET_DIR/release/transport-bench
HTTP=$CARGO_TARGET_DIR/release/dp-http
port=18800

if ((veth)); then
    nsa=dpbs-a-$$; nsb=dpbs-b-$$
    trap 'pkill -P $$ 2>/dev/null || true; ip netns del "$nsa" 2>/dev/null; ip netns del "$nsb" 2>/dev/null; rm -rf "$work"' EXIT
    ip netns add "$nsa"; ip netns add "$nsb"
    ip link add veth0 netns "$nsa" type veth peer name veth0 netns "$nsb"
    for ns in "$nsa" "$nsb"; do
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
        ip netns exec "$ns" ip link set lo up
        ip netns exec "$ns" ip link set veth0 up
        # AF_PACKET sees whole checksums and MTU-sized segments.
        ip netns exec "$ns" ethtool -K veth0 tx off tso off gso off gro off >/dev/null
    done
    ip netns exec "$nsb" ip addr add 10.97.0.2/24 dev veth0
fi

record() { # round contender [conns]
    jq -c --argjson round "$1" --arg who "$2" '. + {round: $round, contender: $who}' | tee -a "$raw" >/dev/null
}

wait_listen() { # port
    for _ in $(seq 100); do
        ss -ltn "sport = :$1" | grep -q LISTEN && return 0
        sleep 0.02
    done
}

run_one() { # round contender [conns]
    port=$((port + 1))
    case $2 in
        ours-bulk) "$STACK" bulk "$server_cpu" "$client_cpu" "$secs" | record "$1" "$2" ;;
        ours-bulk-offload)
            STACK_BENCH_OFFLOAD=1 "$STACK" bulk "$server_cpu" "$client_cpu" "$secs" | record "$1" "$2" ;;
        linux-bulk)
            taskset -c "$server_cpu" iperf3 -s -1 -p "$port" >/dev/null 2>&1 &
            local pid=$!
            wait_listen "$port"
            taskset -c "$client_cpu" iperf3 -c 127.0.0.1 -p "$port" -t "$secs" -O 0.3 -J \
                | jq -c '{mode: "bulk", gbps: ((.end.sum_received.bits_per_second / 1e7 | round) / 100)}' \
                | record "$1" "$2"
            wait "$pid" 2>/dev/null || true
            ;;
        veth-af_xdp|veth-af_packet|veth-epoll)
            local args=(--listen 0.0.0.0:8080 --cpus "$server_cpu" --duration $((secs + 4)) --json)
            if [[ $2 != veth-epoll ]]; then
                args+=(--stack-port veth0 --stack-address 10.97.0.1/24 --stack-backend "${2#veth-}")
            else
                ip netns exec "$nsa" ip addr add 10.97.0.1/24 dev veth0
                args+=(--backend epoll)
            fi
            ip netns exec "$nsa" "$HTTP" "${args[@]}" >"$work/http.out" 2>"$work/http.err" &
            local pid=$!
            for _ in $(seq 200); do grep -q "listening on" "$work/http.out" && break; sleep 0.02; done
            ip netns exec "$nsb" taskset -c "$client_cpu" wrk -t1 -c16 -d"${secs}s" http://10.97.0.1:8080/plaintext >"$work/wrk.out" 2>&1 || true
            wait "$pid" || true
            if [[ $2 == veth-epoll ]]; then ip netns exec "$nsa" ip addr del 10.97.0.1/24 dev veth0; fi
            local rps
            rps=$(awk '/^Requests\/sec/ {print $2}' "$work/wrk.out")
            tail -1 "$work/http.out" | jq -c --argjson rps "${rps:-0}" \
                '{mode: "veth", rps: $rps,
                  server_us_per_req: (if .requests > 0 then .busy_seconds * 1e6 / .requests else null end)}' \
                | record "$1" "$2"
            ;;
        ours-rr) "$STACK" rr "$server_cpu" "$client_cpu" "$3" "$size" "$secs" | record "$1" "$2" ;;
        linux-rr)
            taskset -c "$server_cpu" "$work/epoll_echo" "$port" $((secs + 30)) &
            local pid=$!
            wait_listen "$port"
            "$TB" client "127.0.0.1:$port" "$client_cpu" "$3" "$size" "$secs" \
                | jq -c '{mode: "rr", conns, rps, p50_us, p99_us}' | record "$1" "$2"
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
            ;;
    esac
}

log "rounds $rounds, $secs s each, $size-byte requests, connections: $conns_list"
for round in $(seq 0 "$rounds"); do
    if ((round % 2 == 0)); then pair=(linux ours); else pair=(ours linux); fi
    for who in "${pair[@]}"; do run_one "$round" "$who-bulk"; done
    run_one "$round" ours-bulk-offload
    for conns in $conns_list; do
        for who in "${pair[@]}"; do run_one "$round" "$who-rr" "$conns"; done
    done
    if ((veth)); then
        if ((round % 2 == 0)); then vp=(veth-epoll veth-af_packet veth-af_xdp); else vp=(veth-af_xdp veth-af_packet veth-epoll); fi
        for who in "${vp[@]}"; do run_one "$round" "$who"; done
    fi
done
grep -v '"round":0,' "$raw" >"$work/rec.jsonl" || true

python3 - "$work/rec.jsonl" <<'EOF' | tee -a "$txt"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def med(xs): return statistics.median(xs) if xs else float("nan")
def ratios(a, b, key, conns=None):
    out = []
    for rnd in sorted({r["round"] for r in rows}):
        x = [r for r in rows if r["round"] == rnd and r["contender"] == a and r.get("conns") == conns]
        y = [r for r in rows if r["round"] == rnd and r["contender"] == b and r.get("conns") == conns]
        if x and y and y[0][key]:
            out.append(x[0][key] / y[0][key])
    return out
print("| work | ours | Linux | ours / Linux, same round: median [min max] |")
print("| --- | --- | --- | --- |")
b = ratios("ours-bulk", "linux-bulk", "gbps")
ob = [r["gbps"] for r in rows if r["contender"] == "ours-bulk"]
lb = [r["gbps"] for r in rows if r["contender"] == "linux-bulk"]
if b:
    print(f"| bulk, Gbit/s | {med(ob):.1f} | {med(lb):.1f} | {med(b):.2f} [{min(b):.2f} {max(b):.2f}] |")
b = ratios("ours-bulk-offload", "linux-bulk", "gbps")
ob = [r["gbps"] for r in rows if r["contender"] == "ours-bulk-offload"]
if b:
    print(f"| bulk, checksums left to the link (as lo does), Gbit/s | {med(ob):.1f} | {med(lb):.1f} | {med(b):.2f} [{min(b):.2f} {max(b):.2f}] |")
for c in sorted({r["conns"] for r in rows if r.get("conns")}):
    o = [r for r in rows if r["contender"] == "ours-rr" and r["conns"] == c]
    l = [r for r in rows if r["contender"] == "linux-rr" and r["conns"] == c]
    q = ratios("ours-rr", "linux-rr", "rps", c)
    if q:
        print(f"| {c} conns, requests/s (p50 / p99 us) | {med([r['rps'] for r in o]):,.0f} ({med([r['p50_us'] for r in o]):.1f} / {med([r['p99_us'] for r in o]):.1f}) "
              f"| {med([r['rps'] for r in l]):,.0f} ({med([r['p50_us'] for r in l]):.1f} / {med([r['p99_us'] for r in l]):.1f}) "
              f"| {med(q):.2f} [{min(q):.2f} {max(q):.2f}] |")
ve = [r for r in rows if r["contender"] == "veth-epoll"]
if ve:
    print()
    print("| over veth, dp-http /plaintext, wrk 16 connections | requests/s | server busy CPU, us per request | requests/s / kernel's, same round |")
    print("| --- | --- | --- | --- |")
    for who, name in [("veth-af_xdp", "stack over AF_XDP"), ("veth-af_packet", "stack over AF_PACKET"), ("veth-epoll", "kernel TCP (epoll engine)")]:
        rs = [r for r in rows if r["contender"] == who]
        if not rs:
            continue
        cpu = [r["server_us_per_req"] for r in rs if r.get("server_us_per_req")]
        v = ratios(who, "veth-epoll", "rps")
        ratio = f"{med(v):.2f} [{min(v):.2f} {max(v):.2f}]" if who != "veth-epoll" and v else "1"
        print(f"| {name} | {med([r['rps'] for r in rs]):,.0f} | {med(cpu):.2f} | {ratio} |")
EOF
log "results: $txt (raw: $raw)"
