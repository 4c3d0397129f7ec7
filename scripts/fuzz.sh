#!/usr/bin/env bash
# Builds every cargo-fuzz target in fuzz/ and runs each for SECONDS
# (default 20); fails on the first crash, hang or failed assertion.
#
#   scripts/fuzz.sh               # 20 s per target
#   scripts/fuzz.sh 60            # 60 s per target
#   FUZZ_TARGETS="ipv4 tcp" scripts/fuzz.sh 30
#
# Needs a nightly toolchain (cargo-fuzz builds with -Zsanitizer=address)
# and cargo-fuzz, which it installs when missing (cargo install cargo-fuzz
# --locked). When either cannot be had it says why, then fails under
# CI=true or whenever DATAPLANE_REQUIRE is set (a run that requires
# capabilities must not quietly drop a step), and skips elsewhere, like
# test.sh's other nightly-only steps.
#
# Inputs that crash land in fuzz/artifacts/<target>/; the corpus grows in
# fuzz/corpus/<target>/ (both ignored by git). Replay one with
#   cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

seconds=${1:-20}
if ! [[ $seconds =~ ^[0-9]+$ ]] || [[ $seconds -eq 0 ]]; then
    echo "fuzz.sh: SECONDS must be a positive integer, not '$seconds'" >&2
    exit 2
fi

unavailable() {
    if [[ ${CI:-} == true || -n ${DATAPLANE_REQUIRE:-} ]]; then
        echo "fuzz.sh: $1" >&2
        exit 1
    fi
    echo "skip: fuzzing: $1"
    exit 0
}

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz.sh: no nightly toolchain; installing one"
    rustup toolchain install nightly --profile minimal 2>&1 | tail -n 3 || true
    rustup run nightly rustc --version >/dev/null 2>&1 ||
        unavailable "no nightly toolchain, and installing one failed (see above)"
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz is missing; running cargo install cargo-fuzz --locked"
    if ! cargo install cargo-fuzz --locked 2>&1 | tail -n 5; then
        unavailable "cargo install cargo-fuzz --locked failed (see above)"
    fi
    cargo fuzz --version >/dev/null 2>&1 ||
        unavailable "cargo-fuzz is still not runnable after installing it"
fi

targets=${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}
echo "fuzz.sh: $(cargo fuzz --version); targets: $(echo $targets); ${seconds} s each"

cargo +nightly fuzz build

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
for target in $targets; do
    echo
    echo "==> $target (${seconds} s)"
    mkdir -p "fuzz/corpus/$target"
    # -timeout: an input that takes 10 s is a hang (a walk that does not
    # advance), reported as a crash.
    if cargo +nightly fuzz run "$target" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
        >"$logs/$target.log" 2>&1; then
        grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$logs/$target.log" || true
        echo "==> $target: ok"
    else
        tail -n 60 "$logs/$target.log"
        echo "fuzz.sh: $target failed; the input is in fuzz/artifacts/$target/" >&2
        exit 1
    fi
done

echo
echo "fuzz.sh: every target ran ${seconds} s without a failure"
