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
#   dp-kv --durable  the same with its log on a file (io_uring, O_DIRECT),
#                  each group committed by FUA writes (RWF_DSYNC), and
#                  again with --durable-commit flush (the writes, then a
#                  flush)
#   redis AOF      redis-server --appendonly yes --appendfsync always, its
#                  AOF on the same file system
#   dp-http        apps/src/bin/dp-http.rs, one shard, `/plaintext`
#   nginx          Debian's nginx-light, worker_processes 1, access log
#                  off, `return 200 "Hello, World!"` (the same 13 bytes)
#
# The key-value client is redis-benchmark: -t set,get -c 50, -n REQUESTS
# per test, for each pipeline depth (-P 1 and 16) and value size (-d 16
# and 1024); it reports requests/s and the p99 latency (--csv). The HTTP
# client is wrk -t1 -c64 for HTTP_SECONDS with --latency (requests/s and
# p99). Contenders run in alternating order from round to round; the
# ratios are ours / peer per round, and the tables give their median.
#
# The durable three run redis-benchmark -t set -c 50 -P 16 -d 16 for
# DURABLE_REQUESTS (every reply after stable storage on both sides).
#
# The TLS pairs (--only tls) are the same servers with a certificate from
# a CA this script makes with openssl (ECDSA P-256): dp-kv --tls-port
# against redis-server --tls-port (--tls-auth-clients no), with
# redis-benchmark --tls -t set,get -c 50 -d 16 at each pipeline depth; and
# dp-http --tls-cert against nginx with `listen ... ssl` (its default
# protocols and ciphers), with wrk -t1 -c64 over https. Both sides
# negotiate TLS 1.3 with the client's first suite (AES-256-GCM).
#
#   scripts/bench-servers.sh [--only kv|durable|http|tls] [--rounds N] [--requests N]
#       [--durable-requests N]
#       [--pipelines "1 16"] [--sizes "16 1024"] [--http-seconds S]
#
# Goals (issue): dp-kv >= 2x redis-server's ops/s at -P 16 and >= 1.3x at
# -P 1; durable dp-kv >= 3x Redis's SETs/s with appendfsync always at -P 16;
# dp-http >= 2x nginx's requests/s; p99 no worse; over TLS, at least the
# peers' speed (the goal the issue sets for every server). Writes
# target/bench/servers-<stamp>.txt and the raw CSV lines beside it.
# DP_BENCH_CPUS="SERVER,CLIENT" (default 0,1).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}

rounds=3
requests=200000
pipelines="1 16"
sizes="16 1024"
only=all
http_secs=5
durable_requests=100000
while [[ $# -gt 0 ]]; do
    case $1 in
        --rounds) rounds=$2; shift 2 ;;
        --requests) requests=$2; shift 2 ;;
        --pipelines) pipelines=$2; shift 2 ;;
        --sizes) sizes=$2; shift 2 ;;
        --only) only=$2; shift 2 ;;
        --http-seconds) http_secs=$2; shift 2 ;;
        --durable-requests) durable_requests=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-servers: unknown argument $1" >&2; exit 2 ;;
    esac
done
IFS=, read -r server_cpu client_cpu <<<"${DP_BENCH_CPUS:-0,1}"
for tool in redis-server redis-benchmark redis-cli nginx wrk openssl; do
    command -v "$tool" >/dev/null || { echo "bench-servers: $tool is missing (scripts/install-deps.sh)" >&2; exit 1; }
done

out_dir=$repo/target/bench
mkdir -p "$out_dir"
stamp=$(date +%Y%m%d-%H%M%S)
txt=$out_dir/servers-$stamp.txt
raw=$out_dir/servers-$stamp.csv
work=$(mktemp -d)
# Logs on the disk the build is on (not tmpfs: O_DIRECT and fsync must
# reach a device).
disk=$out_dir/durable-$stamp
mkdir -p "$disk"
trap 'pkill -P $$ 2>/dev/null || true; rm -rf "$work" "$disk"' EXIT
log() { echo "bench-servers: $*" | tee -a "$txt" >&2; }

log "machine: $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
log "$(redis-server --version)"
cargo build -q --release -p dataplane-apps --bin dp-kv --bin dp-http
KV=$CARGO_TARGET_DIR/release/dp-kv
HTTP=$CARGO_TARGET_DIR/release/dp-http
port=17900

# A CA and a certificate for 127.0.0.1 it signed (the TLS pairs).
pki=$work/pki
make_pki() {
    mkdir -p "$pki"
    (
        cd "$pki"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -keyout ca.key -out ca.pem -days 2 -subj "/CN=bench CA" 2>/dev/null
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -keyout key.pem -out req.csr -subj "/CN=localhost" 2>/dev/null
        printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >ext
        openssl x509 -req -in req.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
            -out cert.pem -days 2 -extfile ext 2>/dev/null
    )
}
# A contender's TLS port, beside its plain one.
tls_port() { echo $(($1 + 1000)); }

start() { # contender port
    case $1 in
        dp-kv) "$KV" --port "$2" --cpus "$server_cpu" --json >"$work/server.log" 2>&1 & ;;
        dp-kv-durable)
            rm -rf "$disk/kv" && mkdir -p "$disk/kv"
            "$KV" --port "$2" --cpus "$server_cpu" --json --durable "$disk/kv" \
                --durable-size 4gb --durable-backend io_uring >"$work/server.log" 2>&1 & ;;
        dp-kv-durable-flush)
            rm -rf "$disk/kv" && mkdir -p "$disk/kv"
            "$KV" --port "$2" --cpus "$server_cpu" --json --durable "$disk/kv" \
                --durable-size 4gb --durable-backend io_uring --durable-commit flush \
                >"$work/server.log" 2>&1 & ;;
        redis-aof)
            rm -rf "$disk/redis" && mkdir -p "$disk/redis"
            taskset -c "$server_cpu" redis-server --port "$2" --bind 127.0.0.1 --save "" \
                --appendonly yes --appendfsync always --dir "$disk/redis" >"$work/server.log" 2>&1 & ;;
        redis) taskset -c "$server_cpu" redis-server --port "$2" --bind 127.0.0.1 \
            --save "" --appendonly no >"$work/server.log" 2>&1 & ;;
        dp-kv-tls) "$KV" --port "$2" --cpus "$server_cpu" --json --tls-port "$(tls_port "$2")" \
            --tls-cert-file "$pki/cert.pem" --tls-key-file "$pki/key.pem" >"$work/server.log" 2>&1 & ;;
        redis-tls) taskset -c "$server_cpu" redis-server --port "$2" --bind 127.0.0.1 \
            --save "" --appendonly no --tls-port "$(tls_port "$2")" --tls-auth-clients no \
            --tls-cert-file "$pki/cert.pem" --tls-key-file "$pki/key.pem" \
            --tls-ca-cert-file "$pki/ca.pem" >"$work/server.log" 2>&1 & ;;
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

# The server's CPU seconds: ours spin, so their busy time (passes that
# found work, from the JSON summary they print when stopped); the peers'
# user and system time from /proc (nginx: master and workers).
stop_server() { # contender -> prints cpu seconds
    local ticks=0 p
    case $1 in
        dp-kv | dp-kv-durable | dp-kv-durable-flush | dp-http | dp-kv-tls | dp-http-tls) ;;
        *) for p in $pid $(pgrep -P "$pid"); do
               ticks=$((ticks + $(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0)))
           done ;;
    esac
    kill "$pid" 2>/dev/null || true
    # A subshell cannot wait for its parent's child: watch it go.
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    case $1 in
        dp-kv | dp-kv-durable | dp-kv-durable-flush | dp-http | dp-kv-tls | dp-http-tls) tail -n1 "$work/server.log" | python3 -c 'import json,sys; print(json.load(sys.stdin)["busy_seconds"])' ;;
        *) echo "scale=4; $ticks / $(getconf CLK_TCK)" | bc ;;
    esac
}

echo "round,contender,pipeline,size,test,rps,p99_ms,cpu_s,run_requests" >"$raw"
[[ $only == all || $only == kv ]] && rounds_kv=$rounds || rounds_kv=0
for r in $(seq "$rounds_kv"); do
    order=(dp-kv redis)
    ((r % 2 == 0)) && order=(redis dp-kv)
    for p in $pipelines; do
        for d in $sizes; do
            for c in "${order[@]}"; do
                port=$((port + 1))
                start "$c" "$port"
                taskset -c "$client_cpu" redis-benchmark -p "$port" -t set,get -c 50 \
                    -n "$requests" -P "$p" -d "$d" --csv 2>/dev/null |
                    awk -F, -v r="$r" -v c="$c" -v p="$p" -v d="$d" \
                        'NR > 1 { gsub(/"/, ""); print r "," c "," p "," d "," $1 "," $2 "," $7 }' >"$work/rows"
                cpu=$(stop_server "$c")
                wait "$pid" 2>/dev/null || true
                sed "s/\$/,$cpu,$((2 * requests))/" "$work/rows" >>"$raw"
            done
            log "round $r -P $p -d $d done"
        done
    done
done


# HTTP: nginx's configuration, then the rounds.
http_start() { # contender port
    case $1 in
        dp-http) "$HTTP" --listen "127.0.0.1:$2" --cpus "$server_cpu" --json >"$work/server.log" 2>&1 & ;;
        dp-http-tls) "$HTTP" --listen "127.0.0.1:$2" --cpus "$server_cpu" --json \
            --tls-cert "$pki/cert.pem" --tls-key "$pki/key.pem" >"$work/server.log" 2>&1 & ;;
        nginx | nginx-tls)
            local listen="listen 127.0.0.1:$2;"
            [[ $1 == nginx-tls ]] && listen="listen 127.0.0.1:$2 ssl; ssl_certificate $pki/cert.pem; ssl_certificate_key $pki/key.pem;"
            mkdir -p "$work/nginx"
            cat >"$work/nginx.conf" <<CONF
worker_processes 1;
daemon off;
error_log $work/nginx/error.log;
pid $work/nginx/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 100000000;
    client_body_temp_path $work/nginx;
    proxy_temp_path $work/nginx;
    fastcgi_temp_path $work/nginx;
    uwsgi_temp_path $work/nginx;
    scgi_temp_path $work/nginx;
    server {
        $listen
        location = /plaintext { default_type text/plain; return 200 "Hello, World!"; }
    }
}
CONF
            taskset -c "$server_cpu" nginx -c "$work/nginx.conf" >"$work/server.log" 2>&1 & ;;
    esac
    pid=$!
    local scheme=http
    [[ $1 == *-tls ]] && scheme=https
    for _ in $(seq 200); do
        curl -sf --cacert "$pki/ca.pem" "$scheme://127.0.0.1:$2/plaintext" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "bench-servers: $1 did not start:" >&2
    cat "$work/server.log" >&2
    exit 1
}

# wrk's "Requests/sec" and the 99% line of --latency, in ms.
wrk_csv() { # round contender [test]
    awk -v r="$1" -v c="$2" -v t="${3:-plaintext}" '
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
        /^ +99%/ { p99 = ms($2) }
        /^Requests\/sec:/ { rps = $2 }
        /Non-2xx|Socket errors/ { bad = 1 }
        END { if (bad) print "bench-servers: " c " had errors" > "/dev/stderr"; print r "," c ",0,13," t "," rps "," p99 }'
}

[[ $only == all || $only == durable ]] && rounds_durable=$rounds || rounds_durable=0
for r in $(seq "$rounds_durable"); do
    # Rotated each round: FUA commits (the default), flush commits, Redis.
    order=(dp-kv-durable dp-kv-durable-flush redis-aof)
    ((r % 3 == 2)) && order=(dp-kv-durable-flush redis-aof dp-kv-durable)
    ((r % 3 == 0)) && order=(redis-aof dp-kv-durable dp-kv-durable-flush)
    for c in "${order[@]}"; do
        port=$((port + 1))
        start "$c" "$port"
        taskset -c "$client_cpu" redis-benchmark -p "$port" -t set -c 50 \
            -n "$durable_requests" -P 16 -d 16 --csv 2>/dev/null |
            awk -F, -v r="$r" -v c="$c" \
                'NR > 1 { gsub(/"/, ""); print r "," c ",16,16,durable-" $1 "," $2 "," $7 }' >"$work/rows"
        cpu=$(stop_server "$c")
        wait "$pid" 2>/dev/null || true
        sed "s/\$/,$cpu,$durable_requests/" "$work/rows" >>"$raw"
    done
    log "round $r durable done"
done

[[ $only == all || $only == http ]] && rounds_http=$rounds || rounds_http=0
for r in $(seq "$rounds_http"); do
    order=(dp-http nginx)
    ((r % 2 == 0)) && order=(nginx dp-http)
    for c in "${order[@]}"; do
        port=$((port + 1))
        http_start "$c" "$port"
        taskset -c "$client_cpu" wrk -t1 -c64 -d"${http_secs}s" --latency \
            "http://127.0.0.1:$port/plaintext" 2>&1 | tee "$work/wrk.txt" | wrk_csv "$r" "$c" >"$work/rows"
        cpu=$(stop_server "$c")
        wait "$pid" 2>/dev/null || true
        n=$(awk '/requests in/ { print $1 }' "$work/wrk.txt")
        sed "s/\$/,$cpu,$n/" "$work/rows" >>"$raw"
    done
    log "round $r http done"
done

[[ $only == all || $only == tls ]] && rounds_tls=$rounds || rounds_tls=0
((rounds_tls > 0)) && make_pki
for r in $(seq "$rounds_tls"); do
    order=(dp-kv-tls redis-tls)
    ((r % 2 == 0)) && order=(redis-tls dp-kv-tls)
    for p in $pipelines; do
        for c in "${order[@]}"; do
            port=$((port + 1))
            start "$c" "$port"
            taskset -c "$client_cpu" redis-benchmark --tls --cacert "$pki/ca.pem" \
                -p "$(tls_port "$port")" -t set,get -c 50 -n "$requests" -P "$p" -d 16 --csv 2>/dev/null |
                awk -F, -v r="$r" -v c="$c" -v p="$p" \
                    'NR > 1 { gsub(/"/, ""); print r "," c "," p ",16,tls-" $1 "," $2 "," $7 }' >"$work/rows"
            cpu=$(stop_server "$c")
            wait "$pid" 2>/dev/null || true
            sed "s/\$/,$cpu,$((2 * requests))/" "$work/rows" >>"$raw"
        done
    done
    order=(dp-http-tls nginx-tls)
    ((r % 2 == 0)) && order=(nginx-tls dp-http-tls)
    for c in "${order[@]}"; do
        port=$((port + 1))
        http_start "$c" "$port"
        taskset -c "$client_cpu" wrk -t1 -c64 -d"${http_secs}s" --latency \
            "https://127.0.0.1:$port/plaintext" 2>&1 | tee "$work/wrk.txt" |
            wrk_csv "$r" "$c" tls-plaintext >"$work/rows"
        cpu=$(stop_server "$c")
        wait "$pid" 2>/dev/null || true
        n=$(awk '/requests in/ { print $1 }' "$work/wrk.txt")
        sed "s/\$/,$cpu,$n/" "$work/rows" >>"$raw"
    done
    log "round $r tls done"
done

python3 - "$raw" <<'EOF' | tee -a "$txt"
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
keys = sorted({(int(r["pipeline"]), int(r["size"]), r["test"]) for r in rows})
print(f"{'test':<9} {'-P':>3} {'-d':>5} {'ours rps':>11} {'peer rps':>11} {'ratio':>6} {'ours p99':>9} {'peer p99':>9} {'p99 ratio':>9} {'ours us':>8} {'peer us':>8} {'cpu ratio':>9}")
def pairs(t):
    if t == "durable-SET":
        return [(t, "dp-kv-durable", "redis-aof"), ("durable-SET, flush", "dp-kv-durable-flush", "redis-aof")]
    ours, peer = {"plaintext": ("dp-http", "nginx"), "tls-plaintext": ("dp-http-tls", "nginx-tls")}.get(
        t, ("dp-kv-tls", "redis-tls") if t.startswith("tls-") else ("dp-kv", "redis"))
    return [(t, ours, peer)]
for p, d, t0 in keys:
  for t, ours, peer in pairs(t0):
    def get(c):
        return {r["round"]: r for r in rows if r["contender"] == c and int(r["pipeline"]) == p and int(r["size"]) == d and r["test"] == t0}
    a, b = get(ours), get(peer)
    rounds = sorted(set(a) & set(b))
    if not rounds:
        continue
    ratio = statistics.median(float(a[x]["rps"]) / float(b[x]["rps"]) for x in rounds)
    lat = statistics.median(float(b[x]["p99_ms"]) / max(float(a[x]["p99_ms"]), 1e-3) for x in rounds)
    med = lambda m, k: statistics.median(float(m[x][k]) for x in rounds)
    us = lambda m, x: float(m[x]["cpu_s"]) * 1e6 / float(m[x]["run_requests"])
    cpu = statistics.median(us(b, x) / max(us(a, x), 1e-6) for x in rounds)
    print(f"{t:<9} {p:>3} {d:>5} {med(a,'rps'):>11.0f} {med(b,'rps'):>11.0f} {ratio:>6.2f} {med(a,'p99_ms'):>9.3f} {med(b,'p99_ms'):>9.3f} {lat:>9.2f} {statistics.median(us(a,x) for x in rounds):>8.2f} {statistics.median(us(b,x) for x in rounds):>8.2f} {cpu:>9.2f}")
print("GET/SET: dp-kv against redis-server; durable-SET: dp-kv --durable (FUA writes; ', flush': a flush after each")
print("group's writes) against redis-server --appendfsync always;")
print("plaintext: dp-http against nginx (-P 0: no pipelining); tls-*: the same over TLS 1.3")
print("ratio: ours / peer requests/s, median of same-round ratios; p99 ratio: peer / ours (> 1: ours lower), in ms")
print("us: the server's CPU microseconds per request over its run (ours: busy passes; peers: user + system);")
print("cpu ratio: peer / ours, median of same-round ratios (> 1: ours cheaper)")
EOF
echo "bench-servers: results in $txt" >&2
