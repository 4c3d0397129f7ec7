#!/usr/bin/env bash
# dp-capture's write rate against the disk's limit: fio's sequential write
# bandwidth on the same target, at the same write size and depth, O_DIRECT
# through io_uring, interleaved in one run (docs/performance.md,
# "Capture").
#
#   scripts/bench-capture.sh [--rounds N] [--time SECONDS] [--only file|loop]
#                            [--chunk SIZE] [--depth N] [--frame-size BYTES]
#
# Targets:
#   file  new files under DP_BENCH_STORAGE_DIR (default /var/tmp): fio
#         writes a fresh 1 GiB file each run, dp-capture fresh 1 GiB
#         segment files;
#   loop  a loop device (direct I/O to its backing file when the kernel
#         takes it) over a 1 GiB file in /dev/shm, made and removed here;
#         needs root, skipped with a message otherwise. dp-capture writes
#         it in two 512 MiB regions.
# Contenders, every one in every round, in turn A..Z then Z..A (one
# unrecorded warm-up round first):
#   fio-write      fio --rw=write, fixedbufs and registerfiles
#   ours-1lcore    dp-capture --all, generator frames, CPU twin, rx, match
#                  and write on one lcore (the generator on another)
#   ours-3lcores   the same spread over three lcores
# Figures: MB/s written (10^6 bytes), and for dp-capture packets/s and the
# packets dropped for want of a free chunk (the storage behind). The goal
# is judged on the median over rounds of the same-round ratio ours/fio.
# Writes target/bench/capture-<stamp>.txt and the raw JSON lines beside it.
#
# Environment: CARGO_TARGET_DIR (default target/), DP_BENCH_STORAGE_DIR,
# DP_CAPTURE (a prebuilt binary).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}

rounds=5
secs=2
only=
chunk=128KiB
depth=8
frame=1500
while [[ $# -gt 0 ]]; do
    case $1 in
        --rounds) rounds=$2; shift 2 ;;
        --time) secs=$2; shift 2 ;;
        --only) only=$2; shift 2 ;;
        --chunk) chunk=$2; shift 2 ;;
        --depth) depth=$2; shift 2 ;;
        --frame-size) frame=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-capture: unknown argument $1" >&2; exit 2 ;;
    esac
done

out_dir=$repo/target/bench
mkdir -p "$out_dir"
stamp=$(date +%Y%m%d-%H%M%S)
txt=$out_dir/capture-$stamp.txt
raw=$out_dir/capture-$stamp.jsonl
results=$(mktemp)
work=$(mktemp -d)

log() { echo "bench-capture: $*" | tee -a "$txt" >&2; }

for tool in fio jq; do
    command -v $tool >/dev/null || { echo "bench-capture: $tool is not installed" >&2; exit 1; }
done

if [[ -z ${DP_CAPTURE:-} ]]; then
    cargo build -q --release -p dataplane-apps --bin dp-capture
    DP_CAPTURE=$CARGO_TARGET_DIR/release/dp-capture
fi

dir=${DP_BENCH_STORAGE_DIR:-/var/tmp}/dp-bench-capture-$$
shm=/dev/shm/dp-bench-capture-$$.img
loopdev=
cleanup() {
    [[ -n $loopdev ]] && losetup -d "$loopdev" 2>/dev/null || true
    rm -rf "$dir" "$shm" "$results" "$work"
}
trap cleanup EXIT
mkdir -p "$dir"

targets=()
[[ -z $only || $only == file ]] && targets+=("file=$dir")
if [[ -z $only || $only == loop ]]; then
    if [[ $(id -u) -ne 0 ]]; then
        log "skip loop: not root (losetup needs it)"
    else
        dd if=/dev/zero of="$shm" bs=1M count=1024 status=none
        loopdev=$(losetup --find --show --direct-io=on "$shm" 2>/dev/null) ||
            loopdev=$(losetup --find --show "$shm")
        targets+=("loop=$loopdev")
    fi
fi
[[ ${#targets[@]} -gt 0 ]] || { log "no target"; exit 1; }

bytes() { numfmt --from=iec "${1%iB}"; }

# One run of each kind: prints "mbytes_per_s packets_per_s no_buffer" or
# "refused <why>".
fio_run() { # name target
    local target=$2 file size out
    if [[ $1 == file ]]; then
        file=$target/fio.dat
        rm -f "$file"
        size=1G
    else
        file=$target
        size=$(blockdev --getsize64 "$target")
    fi
    if ! out=$(fio --name=seqwrite --filename="$file" --rw=write --bs="$(bytes "$chunk")" \
        --size="$size" --direct=1 --ioengine=io_uring --iodepth="$depth" --fixedbufs=1 \
        --registerfiles=1 --time_based --runtime="${secs}s" --output-format=json 2>"$work/err"); then
        echo "refused $(grep -v '^$' "$work/err" | tail -1 | tr -s ' \n' ' ')"
        return
    fi
    [[ $1 == file ]] && rm -f "$file"
    sed -n '/^{/,$p' <<<"$out" | jq -c . | tee -a "$raw" |
        jq -r '"\(.jobs[0].write.bw_bytes / 1e6) 0 0"'
}

ours() { # name target lcores
    local out args
    if [[ $1 == file ]]; then
        rm -f "$2"/cap-*
        args=(--out "$2/cap" --segment-size 1GiB)
    else
        args=(--out "$2" --segment-size 512MiB)
    fi
    if ! out=$("$DP_CAPTURE" --all --backend cpu --frame-size "$frame" --chunk "$chunk" \
        --depth "$depth" --duration "$secs" --lcores "$3" --json "${args[@]}" 2>"$work/err"); then
        echo "refused $(grep -v -e '^$' -e '^Caused by' -e '^Stack backtrace' "$work/err" | head -3 | tr -s ' \n' ' ')"
        return
    fi
    [[ $1 == file ]] && rm -f "$2"/cap-*
    tail -1 <<<"$out" | tee -a "$raw" |
        jq -r '"\(.mbytes_per_s) \(.packets_per_s) \(.dropped.no_buffer)"'
}

contenders=(
    "fio-write|fio_run %n %t"
    "ours-1lcore|ours %n %t 1"
    "ours-3lcores|ours %n %t 3"
)

steal() { awk '/^cpu /{print $9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }

log "$(date -u +%Y-%m-%dT%H:%M:%SZ), kernel $(uname -r), $(fio --version), $("$DP_CAPTURE" --version)"
log "sequential writes of $chunk at depth $depth, O_DIRECT, io_uring; $frame-byte frames; ${secs} s per run, $rounds rounds + 1 warm-up"
read -r steal0 total0 < <(steal)

for t in "${targets[@]}"; do
    name=${t%%=*}
    path=${t#*=}
    for ((round = 0; round <= rounds; round++)); do
        order=("${contenders[@]}")
        if ((round % 2)); then
            order=()
            for ((i = ${#contenders[@]} - 1; i >= 0; i--)); do order+=("${contenders[$i]}"); done
        fi
        for c in "${order[@]}"; do
            cname=${c%%|*}
            cmd=${c#*|}
            cmd=${cmd//%n/$name}
            r=$(eval "${cmd//%t/\"$path\"}")
            if [[ $r == refused* ]]; then
                log "$name round $round: $cname failed: ${r#refused }"
                continue
            fi
            ((round > 0)) && echo "$name $round $cname $r" >>"$results"
        done
        ((round > 0)) && log "$name: round $round of $rounds done"
    done
done

read -r steal1 total1 < <(steal)

stats() {
    sort -g | awk '{a[NR]=$1} END {
        if (NR == 0) { print "- - -"; exit }
        p10 = int(0.1 * NR + 0.999); if (p10 < 1) p10 = 1
        p90 = int(0.9 * NR + 0.999)
        m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
        printf "%g %g %g\n", m, a[p10], a[p90] }'
}
column_of() { awk -v t="$1" -v c="$2" -v k="$3" '$1 == t && $3 == c {print $k}' "$results"; }
ratios() {
    awk -v t="$1" -v a="$2" -v b="$3" -v k="$4" '
        $1 == t && $3 == a {x[$2] = $k}
        $1 == t && $3 == b {y[$2] = $k}
        END {for (r in x) if ((r in y) && y[r] > 0) print x[r] / y[r]}' "$results"
}

{
    echo
    for t in "${targets[@]}"; do
        name=${t%%=*}
        echo "== $name (${t#*=}): median [p10, p90] over $rounds rounds"
        printf '%-14s %28s %28s %24s\n' contender "MB/s" "packets/s" "dropped no_buffer"
        for c in "${contenders[@]}"; do
            cname=${c%%|*}
            [[ -n $(column_of "$name" "$cname" 4) ]] || continue
            read -r bm b10 b90 < <(column_of "$name" "$cname" 4 | stats)
            read -r pm p10 p90 < <(column_of "$name" "$cname" 5 | stats)
            read -r dm d10 d90 < <(column_of "$name" "$cname" 6 | stats)
            printf '%-14s %8.0f [%7.0f, %7.0f] %10.0f [%7.0f, %7.0f] %8.0f [%5.0f, %5.0f]\n' \
                "$cname" "$bm" "$b10" "$b90" "$pm" "$p10" "$p90" "$dm" "$d10" "$d90"
        done
        echo
        echo "goals on $name: median [p10, p90] of the same-round ratio ours/fio (MB/s)"
        for o in ours-1lcore ours-3lcores; do
            read -r m lo hi < <(ratios "$name" "$o" fio-write 4 | stats)
            [[ $m == - ]] && { printf '  %-30s no figures\n' "$o"; continue; }
            ok=$(awk -v m="$m" 'BEGIN { print (m >= 0.9) ? "met" : "MISSED" }')
            printf '  %-30s %5.3f [%5.3f, %5.3f]  %s (want >= 0.9)\n' "$o vs fio-write" "$m" "$lo" "$hi" "$ok"
        done
        echo
    done
    awk -v s0="$steal0" -v s1="$steal1" -v t0="$total0" -v t1="$total1" 'BEGIN {
        printf "noise: the hypervisor took %.1f%% of all CPUs (steal) during the run\n",
            100 * (s1 - s0) / (t1 - t0) }'
} | tee -a "$txt"
log "results in $txt, raw runs in $raw"
