#!/usr/bin/env bash
# Runs every test: the README's test command and what CI runs.
#
#   scripts/test.sh            # everything
#   scripts/test.sh --fast     # without the loom, Miri, ThreadSanitizer and fuzz runs
#
# As root on Debian/Ubuntu it first installs the system packages the real
# backends need and reserves hugepages. DATAPLANE_REQUIRE (a comma list of
# hugepages, hwloc, io_uring, dpdk, spdk, vulkan, netns, xdp, loop_device) turns
# a backend or test that would be skipped into a failure; CI sets it (see
# .ci/run). Without it, tests that cannot run here print
# `skip: <capability>: <reason>` and pass.
#
# Steps: deps, fmt, layers (no import cycle, no layer reaching up),
# clippy, doc, test (unit, end-to-end, doc tests, examples),
# vulkan-validation, loom, miri, tsan, fuzz. Each prints its time; the
# first failure stops the run.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

fast=0
for arg in "$@"; do
    case $arg in
        --fast) fast=1 ;;
        -h | --help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "test.sh: unknown argument $arg" >&2; exit 2 ;;
    esac
done

require=${DATAPLANE_REQUIRE:-}
requires() { [[ ",$require," == *",$1,"* ]]; }
export DATAPLANE_REQUIRE=$require
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
export RUST_BACKTRACE=${RUST_BACKTRACE:-1}
target=${CARGO_TARGET_DIR:-$repo/target}

step() {
    local name=$1
    shift
    local t0=$SECONDS
    echo
    echo "==> $name"
    "$@"
    echo "==> $name: ok ($((SECONDS - t0)) s)"
}

# ---- system: packages and hugepages ----------------------------------------
step deps bash -c "scripts/install-deps.sh && scripts/setup-hugepages.sh"

features=()
if requires hwloc || pkg-config --exists hwloc 2>/dev/null; then
    features+=(dataplane/hwloc)
fi
if requires dpdk; then
    features+=(dataplane/require-dpdk)
fi
if requires spdk; then
    features+=(dataplane/require-spdk)
fi
if requires vulkan; then
    features+=(dataplane/require-vulkan)
fi
feature_args=()
if [[ ${#features[@]} -gt 0 ]]; then
    feature_args=(--features "$(IFS=,; echo "${features[*]}")")
fi
echo "features: ${features[*]:-none}; DATAPLANE_REQUIRE=${require:-none}"

# ---- static checks -----------------------------------------------------------
step fmt cargo fmt --all -- --check
step layers python3 scripts/check-layers.py
step clippy cargo clippy --workspace --all-targets "${feature_args[@]}" -- -D warnings
step doc env RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps "${feature_args[@]}"

# ---- tests -------------------------------------------------------------------
run_tests() {
    cargo test --workspace "${feature_args[@]}"
    # The quick-start examples are programs users copy: run them.
    for ex in counter data_processing pipeline echo; do
        echo "--- example $ex"
        cargo run -q -p dataplane-apps --example "$ex"
    done
}
step test run_tests

# The accelerator tests again under the Khronos validation layer with
# synchronization validation: a missing barrier or a hazard between the
# host and the device is an error there, not a silent race. The tests fail
# on any validation message (see accel's debug messenger).
vulkan_validation() {
    # What the loader sees, for the log.
    if command -v vulkaninfo >/dev/null; then
        vulkaninfo --summary 2>&1 | sed -n '/^Devices:/,$p' | grep -E 'deviceName|deviceType|apiVersion|driverName' || true
    fi
    if ! [[ -f /usr/share/vulkan/explicit_layer.d/VkLayer_khronos_validation.json ]]; then
        if requires vulkan; then
            echo "test.sh: the Khronos validation layer is not installed" >&2
            return 1
        fi
        echo "skip: vulkan-validation: the Khronos validation layer is not installed"
        return 0
    fi
    VK_INSTANCE_LAYERS=VK_LAYER_KHRONOS_validation \
        VK_LAYER_ENABLES=VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT \
        cargo test "${feature_args[@]}" -p dataplane-tests \
        --test accel_kernels --test accel_buffers --test accel_fallback \
        -p dataplane-apps --test gpu_offload
}
step vulkan-validation vulkan_validation

# The Kubernetes manifests under deploy/, validated offline (and a
# misspelled field shown to fail). kubernetes-validate comes from PyPI.
deploy_check() {
    if ! command -v kubernetes-validate >/dev/null; then
        python3 -m pip install --quiet --user kubernetes-validate 2>/dev/null ||
            python3 -m pip install --quiet --user --break-system-packages kubernetes-validate ||
            true
        export PATH="$HOME/.local/bin:$PATH"
    fi
    if ! command -v kubectl >/dev/null || ! command -v kubernetes-validate >/dev/null; then
        echo "skip: deploy: needs kubectl (for kustomize) and kubernetes-validate (pip)"
        return 0
    fi
    scripts/check-deploy.sh
}
step deploy deploy_check

if [[ $fast -eq 1 ]]; then
    echo
    echo "test.sh: --fast: skipped loom, miri, tsan and fuzz"
    exit 0
fi

# ---- model checking and sanitizers (nightly) ---------------------------------
need_nightly() {
    if rustup run nightly rustc --version >/dev/null 2>&1 &&
        rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^miri' &&
        rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
        return 0
    fi
    echo "nightly with miri and rust-src is missing; installing"
    rustup toolchain install nightly --profile minimal --component miri,rust-src 2>&1 | tail -n 3 || true
    rustup component add --toolchain nightly miri rust-src 2>&1 | tail -n 3 || true
    rustup run nightly rustc --version >/dev/null 2>&1 &&
        rustup component list --toolchain nightly --installed | grep -q '^miri'
}
if ! need_nightly; then
    if [[ -n ${CI:-} || -n $require ]]; then
        echo "test.sh: no nightly toolchain with miri: cannot run loom/miri/tsan" >&2
        exit 1
    fi
    echo "skip: loom, miri and tsan need a nightly toolchain with miri and rust-src"
    exit 0
fi

# Loom: every ring mode, the mempool's shared ring and cache, slot handover.
loom_tests() {
    RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR="$target/loom" \
        cargo test --release -p hugepages -p dataplane --lib loom
}
step loom loom_tests

# Miri: the ring, channel, mempool, mbuf and region unit tests (sizes scale
# down under cfg(miri); tests that need sysfs or mmap are ignored there).
miri_tests() {
    cargo +nightly miri test -p hugepages
    # `ring::` also matches `net::uring::`, which needs the kernel: skipped.
    cargo +nightly miri test -p dataplane --lib -- ring:: channel:: --skip uring::
}
step miri miri_tests

# ThreadSanitizer over the concurrent unit and integration tests.
tsan() {
    RUSTFLAGS="-Zsanitizer=thread" CARGO_TARGET_DIR="$target/tsan" \
        TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
        cargo +nightly test -Zbuild-std --target x86_64-unknown-linux-gnu "$@"
}
tsan_tests() {
    tsan -p hugepages --lib --tests
    tsan -p dataplane --lib --tests -- ring:: channel:: lcore:: worker:: --skip uring::
}
step tsan tsan_tests

# Every wire parser under libFuzzer for a short while (fuzz/ is a cargo-fuzz
# project outside the workspace); scripts/fuzz.sh installs cargo-fuzz.
step fuzz scripts/fuzz.sh "${DATAPLANE_FUZZ_SECONDS:-10}"

echo
echo "test.sh: all steps passed"
