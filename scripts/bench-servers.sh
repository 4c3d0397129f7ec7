#!/usr/bin/env bash
# The servers against their peers with the peers' own clients
# (docs/performance.md, "Servers"), interleaved in one run, the server
# pinned to one cpu and the client to the other:
#
#   dp-kv          apps/src/bin/dp-kv.rs, one shard (--cpus SERVER_CPU),
#                  the transport's default engine
#   redis-server   Debian's redis-server, persistence off (--save ""
#                  --appendonly no), io-threads off (its default)
#
# The client is redis-benchmark: -t set,get -c 50, -n REQUESTS per test,
# for each pipeline depth (-P 1 and 16) and value size (-d 16 and 1024);
# it reports requests/s and the p99 latency (--csv). Contenders run in
# alternating order from round to round; the ratios are dp-kv / redis per
# round, and the table gives their median.
#
#   scripts/bench-servers.sh [--rounds N] [--requests N] [--pipelines "1 16"] [--sizes "16 1024"]
#
# Goal (issue): dp-kv >= 2x redis-server's ops/s at -P 16 and >= 1.3x at
# -P 1, p99 no worse. Writes target/bench/servers-<stamp>.txt and the raw
# CSV lines beside it. DP_BENCH_CPUS="SERVER,CLIENT" (default 0,1).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}

rounds=3
requests=200000
pipelines="1 16"
sizes="16 1024"
while [[ $# -gt 0 ]]; do
    case $1 in
        --rounds) rounds=$2; shift 2 ;;
        --requests) requests=$2; shift 2 ;;
        --pipelines) pipelines=$2; shift 2 ;;
        --sizes) sizes=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-servers: unknown argument $1" >&2; exit 2 ;;
    esac
done
IFS=, read -r server_cpu client_cpu <<<"${DP_BENCH_CPUS:-0,1}"
for tool in redis-server redis-benchmark; do
    command -v "$tool" >/dev/null || { echo "bench-servers: $tool is missing (scripts/install-deps.sh)" >&2; exit 1; }
done

out_dir=$repo/target/bench
mkdir -p "$out_dir"
stamp=$(date +%Y%m%d-%H%M%S)
txt=$out_dir/servers-$stamp.txt
raw=$out_dir/servers-$stamp.csv
work=$(mktemp -d)
trap 'pkill -P $$ 2>/dev/null || true; rm -rf "$work"' EXIT
log() { echo "bench-servers: $*" | tee -a "$txt" >&2; }

log "machine: $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
log "$(redis-server --version)"
cargo build -q --release -p dataplane-apps --bin dp-kv
KV=$CARGO_TARGET_DIR/release/dp-kv
port=17900

start() { # contender port
    case $1 in
        dp-kv) "$KV" --port "$2" --cpus "$server_cpu" >"$work/server.log" 2>&1 & ;;
        redis) taskset -c "$server_cpu" redis-server --port "$2" --bind 127.0.0.1 \
            --save "" --appendonly no >"$work/server.log" 2>&1 & ;;
    esac
    pid=$!
    for _ in $(seq 200); do
        redis-cli -p "$2" PING >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "bench-servers: $1 did not start:" >&2
    cat "$work/server.log" >&2
    exit 1
}

echo "round,contender,pipeline,size,test,rps,p99_ms" >"$raw"
for r in $(seq "$rounds"); do
    order=(dp-kv redis)
    ((r % 2 == 0)) && order=(redis dp-kv)
    for p in $pipelines; do
        for d in $sizes; do
            for c in "${order[@]}"; do
                port=$((port + 1))
                start "$c" "$port"
                taskset -c "$client_cpu" redis-benchmark -p "$port" -t set,get -c 50 \
                    -n "$requests" -P "$p" -d "$d" --csv 2>/dev/null |
                    awk -F'","' -v r="$r" -v c="$c" -v p="$p" -v d="$d" \
                        'NR > 1 { gsub(/"/, ""); print r "," c "," p "," d "," $1 "," $2 "," $7 }' >>"$raw"
                kill "$pid" 2>/dev/null || true
                wait "$pid" 2>/dev/null || true
            done
            log "round $r -P $p -d $d done"
        done
    done
done

python3 - "$raw" <<'EOF' | tee -a "$txt"
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
keys = sorted({(int(r["pipeline"]), int(r["size"]), r["test"]) for r in rows})
print(f"{'test':<6} {'-P':>3} {'-d':>5} {'dp-kv rps':>11} {'redis rps':>11} {'ratio':>6} {'dp-kv p99':>9} {'redis p99':>9} {'p99 ratio':>9}")
for p, d, t in keys:
    def get(c):
        return {r["round"]: r for r in rows if r["contender"] == c and int(r["pipeline"]) == p and int(r["size"]) == d and r["test"] == t}
    a, b = get("dp-kv"), get("redis")
    rounds = sorted(set(a) & set(b))
    if not rounds:
        continue
    ratio = statistics.median(float(a[x]["rps"]) / float(b[x]["rps"]) for x in rounds)
    lat = statistics.median(float(b[x]["p99_ms"]) / max(float(a[x]["p99_ms"]), 1e-3) for x in rounds)
    med = lambda m, k: statistics.median(float(m[x][k]) for x in rounds)
    print(f"{t:<6} {p:>3} {d:>5} {med(a,'rps'):>11.0f} {med(b,'rps'):>11.0f} {ratio:>6.2f} {med(a,'p99_ms'):>9.3f} {med(b,'p99_ms'):>9.3f} {lat:>9.2f}")
print("ratio: dp-kv / redis requests/s, median of same-round ratios; p99 ratio: redis / dp-kv (> 1: dp-kv lower)")
EOF
echo "bench-servers: results in $txt" >&2
