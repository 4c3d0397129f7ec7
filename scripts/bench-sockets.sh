#!/usr/bin/env bash
# The socket backends (AF_XDP, AF_PACKET, io_uring UDP) and DPDK's
# net_af_xdp driver against a plain sendmmsg/recvmmsg loop, over a veth pair between two network namespaces
# that this script creates and removes (see docs/performance.md).
#
#   scripts/bench-sockets.sh [--rounds N] [--secs S] [--only a,b,...]
#
# Each run starts a receiver in namespace B, then a sender in namespace A,
# one thread each, 64-byte frames flat out for S seconds (default 2). The
# contenders run interleaved, A B C C B A, for N rounds (default 3):
# this kind of VM drifts 2-5x in speed between minutes, so only ratios
# within a round mean anything. Prints every run, then per contender the
# median sender and receiver rates and the median of the per-round ratios
# to the mmsg baseline. Needs root (namespaces, veth, CAP_NET_RAW).
set -euo pipefail

rounds=3
secs=2
order=(af_xdp dpdk_af_xdp af_packet io_uring mmsg)
while [[ $# -gt 0 ]]; do
    case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --secs) secs=$2; shift 2 ;;
    --only) IFS=, read -r -a order <<<"$2"; shift 2 ;;
    *) echo "usage: $0 [--rounds N] [--secs S] [--only af_xdp,dpdk_af_xdp,af_packet,io_uring,mmsg]" >&2; exit 2 ;;
    esac
done

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
if [[ $(id -u) -ne 0 ]]; then
    echo "bench-sockets: needs root (network namespaces, veth, raw sockets)" >&2
    exit 1
fi

cargo build --release -q -p dataplane-benches --bin bench-sockets
bin=$CARGO_TARGET_DIR/release/bench-sockets

ns_a=dpbench-a-$$
ns_b=dpbench-b-$$
results=$(mktemp)
cleanup() {
    ip netns del "$ns_a" 2>/dev/null || true
    ip netns del "$ns_b" 2>/dev/null || true
    rm -f "$results"
}
trap cleanup EXIT

ip netns add "$ns_a"
ip netns add "$ns_b"
for ns in "$ns_a" "$ns_b"; do
    # No router solicitations or neighbour discovery among the packets.
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.default.disable_ipv6=1
    ip -n "$ns" link set lo up
done
ip link add veth-bench netns "$ns_a" type veth peer name veth-bench netns "$ns_b"
ip -n "$ns_a" addr add 10.55.0.1/24 dev veth-bench
ip -n "$ns_b" addr add 10.55.0.2/24 dev veth-bench
ip -n "$ns_a" link set veth-bench up
ip -n "$ns_b" link set veth-bench up
mac_a=$(ip netns exec "$ns_a" cat /sys/class/net/veth-bench/address)
mac_b=$(ip netns exec "$ns_b" cat /sys/class/net/veth-bench/address)
# Static neighbours: no ARP in the way of the first packets.
ip -n "$ns_a" neigh replace 10.55.0.2 lladdr "$mac_b" dev veth-bench nud permanent
ip -n "$ns_b" neigh replace 10.55.0.1 lladdr "$mac_a" dev veth-bench nud permanent

# Sender and receiver on different cores (DP_BENCH_CPUS=TX,RX changes them).
IFS=, read -r tx_cpu rx_cpu <<<"${DP_BENCH_CPUS:-0,1}"
echo "bench-sockets: $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
echo "bench-sockets: $rounds rounds of A..E E..A, ${secs}s per run, one sender thread in $ns_a on cpu $tx_cpu, one receiver thread in $ns_b on cpu $rx_cpu"

one() { # round backend
    ip netns exec "$ns_b" taskset -c "$rx_cpu" "$bin" recv "$2" "$secs" veth-bench 10.55.0.2 10.55.0.1 "$mac_a" >"$results.rx" &
    local rx=$!
    sleep 0.3
    ip netns exec "$ns_a" taskset -c "$tx_cpu" "$bin" send "$2" "$secs" veth-bench 10.55.0.1 10.55.0.2 "$mac_b" >"$results.tx"
    wait "$rx"
    echo "round=$1 $(cat "$results.tx")" | tee -a "$results"
    echo "round=$1 $(cat "$results.rx")" | tee -a "$results"
    rm -f "$results.rx" "$results.tx"
}

for ((r = 1; r <= rounds; r++)); do
    for b in "${order[@]}"; do one "$r" "$b"; done
    for ((i = ${#order[@]} - 1; i >= 0; i--)); do one "$r" "${order[$i]}"; done
done

# Medians of the rates, and of the per-round ratios to mmsg (each round's
# two runs of a contender averaged first).
echo
echo "contender    role  median pps    median pps/core  median ratio to mmsg (pps)"
awk '
function kv(s,   i, a) { for (i = 1; i <= NF; i++) { split($i, a, "="); v[a[1]] = a[2] } }
function median(list,   n, a, i, j, t) {
    n = split(list, a, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
{
    delete v; kv()
    k = v["backend"] SUBSEP v["role"]
    pps[k] = pps[k] " " v["pps"]; core[k] = core[k] " " v["pps_per_core"]
    sum[v["round"], k] += v["pps"]; seen[v["backend"]] = 1; roles[v["role"]] = 1; rounds[v["round"]] = 1
}
END {
    n = split("af_xdp dpdk_af_xdp af_packet io_uring mmsg", order, " ")
    for (o = 1; o <= n; o++) for (role in roles) {
        b = order[o]; k = b SUBSEP role
        if (!(b in seen)) continue
        ratios = ""
        for (r in rounds) if (sum[r, "mmsg" SUBSEP role] > 0) ratios = ratios " " sum[r, k] / sum[r, "mmsg" SUBSEP role]
        printf "%-11s  %-4s  %12.0f  %15.0f  %8.2f\n", b, role, median(pps[k]), median(core[k]), median(ratios)
    }
    # AF_XDP against the two it is measured against: DPDK on the same
    # interface, and our AF_PACKET backend.
    print ""
    for (p = 2; p <= 3; p++) for (role in roles) {
        peer = order[p]
        if (!("af_xdp" in seen) || !(peer in seen)) continue
        ratios = ""
        for (r in rounds) if (sum[r, peer SUBSEP role] > 0) ratios = ratios " " sprintf("%.2f", sum[r, "af_xdp" SUBSEP role] / sum[r, peer SUBSEP role])
        printf "af_xdp / %-11s  %-4s  median %.2f  per round:%s\n", peer, role, median(ratios), ratios
    }
}' "$results"
