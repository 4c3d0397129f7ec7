#!/usr/bin/env bash
# Installs the system packages the real backends and the tests need, on
# Debian or Ubuntu, when run as root (or with sudo available). Anything
# else: prints what to install and exits 0, so that fallback-mode builds
# still work with nothing but cargo.
#
#   scripts/install-deps.sh            # the test set
#   scripts/install-deps.sh --check    # only report what is missing
set -euo pipefail

# What each package is for:
#   pkg-config               how the sys crates find libraries
#   libhwloc-dev libudev-dev richer topology (the `hwloc` feature; hwlocality
#                            links the system libhwloc, never a vendored copy)
#   dpdk dpdk-dev libdpdk-dev  the DPDK backend (22.11 on Debian 12)
#   libclang-dev             bindgen, for the sys crates' bindings
#   hwloc                    lstopo, for diagnostics
#   dpdk-doc                 DPDK's example sources (l2fwd), built by the forwarding bench
#   iproute2                 network namespaces and veth pairs for the socket backends' tests
#   mesa-vulkan-drivers libvulkan1 libvulkan-dev vulkan-tools vulkan-validationlayers
#                            a real Vulkan device on the CPU (lavapipe), the loader,
#                            vulkaninfo, and the Khronos validation layer
#   fio                      the storage peer in the benchmarks
#   tcpdump                  a real reader for the pcap files the programs write
#   tshark                   a second one (Wireshark's), for dp-capture's pcapng
#   curl socat redis-tools redis-server nginx-light wrk
#                            the real peers of the transport's and the servers'
#                            tests: HTTP and RESP clients, redis-server, a
#                            byte-stream peer, nginx, an HTTP load generator
#   iperf3                   Linux's TCP bulk throughput, beside the user-space stack's
#                            (scripts/bench-stack.sh)
#   openssl                  makes the test CAs and certificates of the TLS tests, and
#                            its s_client is a TLS client they check the servers with
#   iputils-ping             Linux's ping, which sends echo requests past the MTU in
#                            fragments to the user-space stack (its reassembly test)
#   ethtool                  switches a veth's offloads off, so that AF_PACKET sees
#                            whole checksums and MTU-sized segments (the user-space
#                            stack's tests against Linux's TCP)
packages=(pkg-config libhwloc-dev libudev-dev hwloc dpdk dpdk-dev libdpdk-dev libclang-dev dpdk-doc
    iproute2 mesa-vulkan-drivers libvulkan1 libvulkan-dev vulkan-tools vulkan-validationlayers fio jq
    tcpdump tshark curl socat redis-tools redis-server nginx-light wrk ethtool iperf3 openssl
    iputils-ping)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-deps: all present (${packages[*]})"
    exit 0
fi
echo "install-deps: missing: ${missing[*]}"
[[ ${1:-} == --check ]] && exit 0

if ! command -v apt-get >/dev/null; then
    echo "install-deps: no apt-get here; install the equivalents of: ${missing[*]}"
    exit 0
fi
sudo=""
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo=sudo
    else
        echo "install-deps: not root and no passwordless sudo; install: ${missing[*]}"
        exit 0
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
