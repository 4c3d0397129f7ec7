#!/usr/bin/env bash
# Durable writes: nvme-perf's FUA writes (`--fua`: RWF_DSYNC on io_uring)
# against fio's `--sync=dsync` (the file opened O_DSYNC: every write
# durable on completion), 4 KiB random writes, O_DIRECT, io_uring, one
# core, on a file on the build's disk; beside them the same writes
# without durability, for what durability costs each. Rounds alternate
# the order; the figure is the median of the same-round ratio ours/fio.
#
#   scripts/bench-fua.sh [--rounds N] [--time SECONDS] [--qd N]
#
# Goal: FUA write IOPS >= 1.0x fio's dsync writes. Writes
# target/bench/fua-<stamp>.txt. DP_BENCH_CPU picks the core (default 0).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=5
secs=3
qd=32
while (($#)); do
    case $1 in
        --rounds) rounds=$2; shift 2 ;;
        --time) secs=$2; shift 2 ;;
        --qd) qd=$2; shift 2 ;;
        *) echo "usage: $0 [--rounds N] [--time SECONDS] [--qd N]" >&2; exit 2 ;;
    esac
done
for tool in fio jq; do
    command -v "$tool" >/dev/null || { echo "bench-fua: $tool is not installed" >&2; exit 1; }
done
cpu=${DP_BENCH_CPU:-0}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
out_dir=$CARGO_TARGET_DIR/bench
mkdir -p "$out_dir"
stamp=$(date -u +%Y%m%d-%H%M%S)
txt=$out_dir/fua-$stamp.txt
results=$(mktemp)
# On the disk the build is on (not tmpfs: O_DIRECT and the flushes must
# reach a device).
file=$out_dir/fua-$stamp.dat
trap 'rm -f "$results" "$file" "${err:-}"' EXIT
log() { echo "bench-fua: $*" | tee -a "$txt" >&2; }

cargo build -q --release -p dataplane-apps --bin nvme-perf
NVME_PERF=$CARGO_TARGET_DIR/release/nvme-perf
# The file's blocks allocated once, so no run pays for first writes.
fio --name=fill --filename="$file" --size=256M --rw=write --bs=1M --direct=1 \
    --output-format=terse >/dev/null 2>&1

# A run that fails stops the script with its error, not a blank figure.
iops() { # what
    local v
    v=$(cat)
    [[ $v =~ ^[0-9.]+$ ]] && { echo "$v"; return; }
    log "$1 failed: $(grep -v -e '^ *[0-9]*: ' -e '^ *at ' -e '^Stack backtrace' -e '^$' "$err" | head -3 | tr -s '\n' ' ')"
    exit 1
}
err=$(mktemp)
ours() { # extra...
    "$NVME_PERF" --target "$file" --backend io_uring --rw randwrite --bs 4k --qd "$qd" \
        --cpus "$cpu" --time "$secs" --json "$@" 2>"$err" | tail -1 | jq -r '.iops' 2>>"$err" |
        iops "nvme-perf $*"
}
fio_run() { # extra...
    fio --name=w --filename="$file" --size=256M --rw=randwrite --bs=4k --direct=1 \
        --ioengine=io_uring --fixedbufs=1 --registerfiles=1 --iodepth="$qd" \
        --cpus_allowed="$cpu" --time_based --runtime="$secs" --norandommap --randrepeat=0 \
        --output-format=json "$@" 2>"$err" | sed -n '/^{/,$p' | jq -r '.jobs[0].write.iops' 2>>"$err" |
        iops "fio $*"
}
contenders=("ours-fua|ours --fua" "fio-dsync|fio_run --sync=dsync" "ours-write|ours" "fio-write|fio_run")

log "$(date -u +%Y-%m-%dT%H:%M:%SZ), kernel $(uname -r), $(fio --version), $(df --output=source "$out_dir" | tail -1)"
log "4 KiB random writes, O_DIRECT, io_uring, QD $qd, cpu $cpu, $secs s per run, $rounds rounds"
for ((r = 1; r <= rounds; r++)); do
    order=("${contenders[@]}")
    if ((r % 2 == 0)); then order=("${contenders[3]}" "${contenders[2]}" "${contenders[1]}" "${contenders[0]}"); fi
    for c in "${order[@]}"; do
        v=$(eval "${c#*|}") || exit 1
        echo "$r ${c%%|*} $v" >>"$results"
    done
done

median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
ratios() { awk -v a="$1" -v b="$2" '$2 == a {x[$1] = $3} $2 == b {y[$1] = $3}
    END {for (r in x) if (y[r] > 0) print x[r] / y[r]}' "$results"; }
{
    for c in "${contenders[@]}"; do
        n=${c%%|*}
        printf '%-11s %10.0f IOPS\n' "$n" "$(awk -v n="$n" '$2 == n {print $3}' "$results" | median)"
    done
    echo "FUA / fio dsync, same round: median $(ratios ours-fua fio-dsync | median)" \
        "[$(ratios ours-fua fio-dsync | sort -g | head -1) $(ratios ours-fua fio-dsync | sort -g | tail -1)]"
    echo "plain writes, ours / fio: median $(ratios ours-write fio-write | median)"
} | tee -a "$txt"
echo "bench-fua: results in $txt" >&2
