#!/usr/bin/env bash
# Storage benchmarks: nvme-perf side by side with fio on the same target,
# 4 KiB random reads, O_DIRECT, one core, interleaved in one run
# (docs/performance.md, "Storage").
#
#   scripts/bench-storage.sh [--rounds N] [--time SECONDS] [--only virtio|loop]
#
# Targets:
#   virtio  a 1 GiB file under DP_BENCH_STORAGE_DIR (default /var/tmp),
#           written through once so that every block is real, removed at exit;
#   loop    a loop device (direct I/O to its backing file when the kernel
#           takes it) over a 512 MiB file in /dev/shm, made and removed
#           here; needs root, skipped with a message otherwise.
# Contenders on each target, every one in every round, in the order A..Z
# then Z..A (one unrecorded warm-up round first):
#   ours-uring-qd32   nvme-perf --backend io_uring --qd 32 (polling)
#   ours-wait-qd32    the same with --wait (sleeps in io_uring_enter, as fio)
#   fio-uring-qd32    fio io_uring, fixedbufs, registerfiles, iodepth 32
#   fio-sqpoll-qd32   the same with sqthread_poll       } run when the
#   fio-hipri-qd32    the same with hipri (IOPOLL)      } kernel takes them
#   ours-sqpoll-qd32  nvme-perf --sqpoll 1000           }
#   ours-uring-qd1 / fio-uring-qd1    the same at depth 1 (latency)
#   ours-psync-qd1 / fio-psync-qd1    pread, one at a time
# Figures: IOPS, p50 latency (submission to completion: fio's lat, not
# clat), CPU ns per I/O (the process's user+system time over the measured
# window: nvme-perf's own getrusage-equivalent accounting, fio's usr_cpu +
# sys_cpu over its job runtime). Goals are judged on the median over rounds
# of the same-round ratio ours/fio. Writes target/bench/storage-<stamp>.txt
# and the raw per-run JSON lines beside it.
#
# Environment: CARGO_TARGET_DIR (default target/), DP_BENCH_CPU (default
# the last CPU), DP_BENCH_STORAGE_DIR, NVME_PERF (a prebuilt binary).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}

rounds=5
secs=2
only=
while [[ $# -gt 0 ]]; do
    case $1 in
        --rounds) rounds=$2; shift 2 ;;
        --time) secs=$2; shift 2 ;;
        --only) only=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-storage: unknown argument $1" >&2; exit 2 ;;
    esac
done

cpu=${DP_BENCH_CPU:-$(($(nproc) - 1))}
ramp=0.5
out_dir=$repo/target/bench
mkdir -p "$out_dir"
stamp=$(date +%Y%m%d-%H%M%S)
txt=$out_dir/storage-$stamp.txt
raw=$out_dir/storage-$stamp.jsonl
results=$(mktemp)
work=$(mktemp -d)

log() { echo "bench-storage: $*" | tee -a "$txt" >&2; }

for tool in fio jq; do
    command -v $tool >/dev/null || { echo "bench-storage: $tool is not installed" >&2; exit 1; }
done

if [[ -z ${NVME_PERF:-} ]]; then
    cargo build -q --release -p dataplane-apps --bin nvme-perf
    NVME_PERF=$CARGO_TARGET_DIR/release/nvme-perf
fi

file=${DP_BENCH_STORAGE_DIR:-/var/tmp}/dp-bench-storage-$$.img
shm=/dev/shm/dp-bench-loop-$$.img
loopdev=
cleanup() {
    [[ -n $loopdev ]] && losetup -d "$loopdev" 2>/dev/null || true
    rm -f "$file" "$shm" "$results"
    rm -rf "$work"
}
trap cleanup EXIT

targets=()
if [[ -z $only || $only == virtio ]]; then
    # Written, not fallocated: reads of unwritten extents never reach the disk.
    dd if=/dev/zero of="$file" bs=1M count=1024 oflag=direct status=none
    targets+=("virtio=$file")
fi
if [[ -z $only || $only == loop ]]; then
    if [[ $(id -u) -ne 0 ]]; then
        log "skip loop: not root (losetup needs it)"
    else
        dd if=/dev/zero of="$shm" bs=1M count=512 status=none
        loopdev=$(losetup --find --show --direct-io=on "$shm" 2>/dev/null) ||
            loopdev=$(losetup --find --show "$shm")
        targets+=("loop=$loopdev")
    fi
fi
[[ ${#targets[@]} -gt 0 ]] || { log "no target"; exit 1; }

# One run: prints "iops p50_us cpu_ns_per_io" or "refused <why>".
ours() { # target qd extra...
    local target=$1 qd=$2; shift 2
    local out
    if ! out=$("$NVME_PERF" --target "$target" --rw randread --bs 4k --qd "$qd" \
        --cpus "$cpu" --time "$secs" --ramp "$ramp" --json "$@" 2>"$work/err"); then
        # anyhow's message and its causes, without a backtrace.
        echo "refused $(grep -v -e '^$' -e '^Caused by' -e '^Stack backtrace' "$work/err" | head -3 | tr -s ' \n' ' ')"
        return
    fi
    tail -1 <<<"$out" | tee -a "$raw" |
        jq -r '"\(.iops) \(.latency.p50_us) \(.cpu_ns_per_io)"'
}

ms() { awk -v s="$1" 'BEGIN {printf "%d", s * 1000}'; }

fio_run() { # target qd engine extra...
    local target=$1 qd=$2 engine=$3; shift 3
    local out
    if ! out=$(fio --name=randread --filename="$target" --rw=randread --bs=4k --direct=1 \
        --ioengine="$engine" --iodepth="$qd" --cpus_allowed="$cpu" --time_based \
        --runtime="$(ms "$secs")ms" --ramp_time="$(ms "$ramp")ms" --norandommap --randrepeat=0 \
        --lat_percentiles=1 --output-format=json "$@" 2>"$work/err"); then
        echo "refused $(grep -v '^$' "$work/err" | tail -1 | tr -s ' \n' ' ')"
        return
    fi
    # fio may print warnings before the JSON object.
    sed -n '/^{/,$p' <<<"$out" | jq -c . | tee -a "$raw" | jq -r '
        .jobs[0] as $j
        | ($j.read.total_ios) as $n
        | "\($j.read.iops) \(($j.read.lat_ns.percentile["50.000000"] // 0) / 1000)"
          + " \(if $n > 0 then ($j.usr_cpu + $j.sys_cpu) / 100 * $j.job_runtime * 1e6 / $n else 0 end)"'
}

# name: command
contenders=(
    "ours-uring-qd32|ours %t 32 --backend io_uring"
    "ours-wait-qd32|ours %t 32 --backend io_uring --wait"
    "fio-uring-qd32|fio_run %t 32 io_uring --fixedbufs=1 --registerfiles=1"
    "fio-sqpoll-qd32|fio_run %t 32 io_uring --fixedbufs=1 --registerfiles=1 --sqthread_poll=1"
    "fio-hipri-qd32|fio_run %t 32 io_uring --fixedbufs=1 --registerfiles=1 --hipri=1"
    "ours-sqpoll-qd32|ours %t 32 --backend io_uring --sqpoll 1000"
    "ours-iopoll-qd32|ours %t 32 --backend io_uring --iopoll required"
    "ours-uring-qd1|ours %t 1 --backend io_uring"
    "fio-uring-qd1|fio_run %t 1 io_uring --fixedbufs=1 --registerfiles=1"
    "ours-psync-qd1|ours %t 1 --backend psync"
    "fio-psync-qd1|fio_run %t 1 psync"
)

steal() { awk '/^cpu /{print $9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }

log "$(date -u +%Y-%m-%dT%H:%M:%SZ), kernel $(uname -r), $(fio --version), $("$NVME_PERF" --version)"
log "4 KiB random reads, O_DIRECT, cpu $cpu, ${secs} s per run after ${ramp} s ramp, $rounds rounds + 1 warm-up"
read -r steal0 total0 < <(steal)

for t in "${targets[@]}"; do
    name=${t%%=*}
    path=${t#*=}
    # Which contenders the kernel takes on this target: one short try each.
    live=()
    for c in "${contenders[@]}"; do
        cname=${c%%|*}
        cmd=${c#*|}
        r=$(secs=0.2 ramp=0 eval "${cmd//%t/\"$path\"}")
        if [[ $r == refused* ]]; then
            log "$name: $cname refused: ${r#refused }"
        else
            live+=("$c")
        fi
    done
    for ((round = 0; round <= rounds; round++)); do
        order=("${live[@]}")
        if ((round % 2)); then
            order=()
            for ((i = ${#live[@]} - 1; i >= 0; i--)); do order+=("${live[$i]}"); done
        fi
        for c in "${order[@]}"; do
            cname=${c%%|*}
            cmd=${c#*|}
            r=$(eval "${cmd//%t/\"$path\"}")
            if [[ $r == refused* ]]; then
                log "$name round $round: $cname failed: ${r#refused }"
                continue
            fi
            # Round 0 is the warm-up.
            ((round > 0)) && echo "$name $round $cname $r" >>"$results"
        done
        ((round > 0)) && log "$name: round $round of $rounds done"
    done
done

read -r steal1 total1 < <(steal)

# Median and p10/p90 (nearest rank) of the numbers on stdin.
stats() {
    sort -g | awk '{a[NR]=$1} END {
        if (NR == 0) { print "- - -"; exit }
        p10 = int(0.1 * NR + 0.999); if (p10 < 1) p10 = 1
        p90 = int(0.9 * NR + 0.999)
        m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
        printf "%g %g %g\n", m, a[p10], a[p90] }'
}
# col: 4 iops, 5 p50, 6 cpu
column_of() { awk -v t="$1" -v c="$2" -v k="$3" '$1 == t && $3 == c {print $k}' "$results"; }
# The per-round ratio a/b of column k.
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
        printf '%-18s %26s %24s %20s\n' contender "IOPS" "p50 lat us" "CPU ns/IO"
        for c in "${contenders[@]}"; do
            cname=${c%%|*}
            [[ -n $(column_of "$name" "$cname" 4) ]] || continue
            read -r im i10 i90 < <(column_of "$name" "$cname" 4 | stats)
            read -r lm l10 l90 < <(column_of "$name" "$cname" 5 | stats)
            read -r cm c10 c90 < <(column_of "$name" "$cname" 6 | stats)
            printf '%-18s %8.0f [%7.0f, %7.0f] %6.1f [%6.1f, %6.1f] %6.0f [%5.0f, %5.0f]\n' \
                "$cname" "$im" "$i10" "$i90" "$lm" "$l10" "$l90" "$cm" "$c10" "$c90"
        done
        echo
        echo "goals on $name: median [p10, p90] of the same-round ratio ours/fio"
        goal() { # label a b col want(ge|le) threshold
            local r
            r=$(ratios "$name" "$2" "$3" "$4" | stats)
            read -r m lo hi <<<"$r"
            [[ $m == - ]] && { printf '  %-52s no figures\n' "$1"; return; }
            local ok
            ok=$(awk -v m="$m" -v w="$5" -v th="$6" 'BEGIN {
                print ((w == "ge" && m >= th) || (w == "le" && m <= th)) ? "met" : "MISSED" }')
            printf '  %-52s %5.3f [%5.3f, %5.3f]  %s (want %s %s)\n' "$1" "$m" "$lo" "$hi" \
                "$ok" "$(sed 's/ge/>=/; s/le/<=/' <<<"$5")" "$6"
        }
        goal "io_uring QD32 IOPS vs fio fixedbufs+regfiles" ours-uring-qd32 fio-uring-qd32 4 ge 1.0
        goal "io_uring QD32 IOPS vs fio sqthread_poll" ours-uring-qd32 fio-sqpoll-qd32 4 ge 1.0
        goal "io_uring QD32 IOPS vs fio hipri" ours-uring-qd32 fio-hipri-qd32 4 ge 1.0
        goal "io_uring --wait QD32 IOPS vs fio fixedbufs+regfiles" ours-wait-qd32 fio-uring-qd32 4 ge 1.0
        goal "io_uring QD1 p50 latency vs fio" ours-uring-qd1 fio-uring-qd1 5 le 1.0
        goal "psync QD1 IOPS vs fio psync" ours-psync-qd1 fio-psync-qd1 4 ge 1.0
        goal "io_uring QD32 CPU ns/IO vs fio" ours-uring-qd32 fio-uring-qd32 6 le 1.0
        goal "io_uring --wait QD32 CPU ns/IO vs fio" ours-wait-qd32 fio-uring-qd32 6 le 1.0
        goal "psync QD1 CPU ns/IO vs fio" ours-psync-qd1 fio-psync-qd1 6 le 1.0
        echo
    done
    awk -v s0="$steal0" -v s1="$steal1" -v t0="$total0" -v t1="$total1" 'BEGIN {
        printf "noise: the hypervisor took %.1f%% of all CPUs (steal) during the run\n",
            100 * (s1 - s0) / (t1 - t0) }'
} | tee -a "$txt"
log "results in $txt, raw runs in $raw"
