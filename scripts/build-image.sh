#!/usr/bin/env bash
# Builds the apps' image from deploy/Dockerfile and checks it: every app's
# shared libraries resolve, dp-info runs, and l2fwd forwards between two
# DPDK net_null ports for two seconds inside it.
#
#   scripts/build-image.sh [--local-bases] [--tag NAME]
#
# With Docker (a running daemon) or buildah (no daemon; chroot isolation,
# which works as root without one). --local-bases is for a machine that
# reaches a Debian mirror but no image registry: it makes the two base
# images the Dockerfile names instead of pulling them, `debian:bookworm-slim`
# from `debootstrap --variant=minbase bookworm` and `rust:1-bookworm` from
# that plus build-essential and this machine's Rust toolchain (rustup's
# active one), under the same names, so the Dockerfile builds unchanged.
# The host's CA bundle is lent to the build's steps (cargo and apt behind a
# proxy that re-signs TLS need it), not copied into the image.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
tag=localhost/dataplane:latest
local_bases=false
while [ $# -gt 0 ]; do
    case "$1" in
        --local-bases) local_bases=true ;;
        --tag) tag=$2; shift ;;
        *) echo "build-image: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

if docker info >/dev/null 2>&1; then
    tool=docker
elif command -v buildah >/dev/null; then
    tool=buildah
    export BUILDAH_ISOLATION=${BUILDAH_ISOLATION:-chroot}
else
    echo "build-image: neither a Docker daemon nor buildah (apt-get install buildah)" >&2
    exit 1
fi
echo "build-image: with $tool"

if $local_bases; then
    [ "$tool" = buildah ] || { echo "build-image: --local-bases needs buildah" >&2; exit 1; }
    command -v debootstrap >/dev/null || { echo "build-image: debootstrap is not installed" >&2; exit 1; }
    mirror=${DEBIAN_MIRROR:-$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)}
    [ -n "$mirror" ] || { echo "build-image: set DEBIAN_MIRROR" >&2; exit 1; }
    toolchain=$(rustc --print sysroot)
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    echo "build-image: debootstrap bookworm from $mirror"
    debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" \
        || { tail -20 "$work/debootstrap.log"; exit 1; }
    c=$(buildah from scratch)
    buildah copy "$c" "$work/rootfs" / >/dev/null
    buildah commit --rm "$c" docker.io/library/debian:bookworm-slim >/dev/null
    c=$(buildah from --pull=never docker.io/library/debian:bookworm-slim)
    buildah run -v /etc/ssl/certs:/etc/ssl/certs:ro "$c" -- sh -c \
        'apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends build-essential libc6-dev >/dev/null'
    buildah copy "$c" "$toolchain/bin" /usr/local/rust/bin >/dev/null
    buildah copy "$c" "$toolchain/lib" /usr/local/rust/lib >/dev/null
    buildah config --env PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env CARGO_HOME=/usr/local/cargo "$c"
    buildah commit --rm "$c" docker.io/library/rust:1-bookworm >/dev/null
    echo "build-image: made debian:bookworm-slim and rust:1-bookworm ($(rustc --version))"
fi

case $tool in
    docker) docker build -f deploy/Dockerfile -t "$tag" . ;;
    buildah)
        pull=()
        $local_bases && pull=(--pull=never)
        buildah bud --layers "${pull[@]}" --network host -v /etc/ssl/certs:/etc/ssl/certs:ro \
            -f deploy/Dockerfile -t "$tag" .
        ;;
esac

run() { # command...
    case $tool in
        docker) docker run --rm "$tag" "$@" ;;
        buildah)
            local c
            c=$(buildah from --pull=never "$tag")
            local rc=0
            buildah run "$c" -- "$@" || rc=$?
            buildah rm "$c" >/dev/null
            return $rc
            ;;
    esac
}

echo "build-image: checking $tag"
run sh -c 'for b in /usr/local/bin/*; do
    if ldd "$b" | grep "not found"; then echo "$b: a library is missing"; exit 1; fi
done; ls /usr/local/bin'
run dp-info >/dev/null
out=$(run l2fwd --backend dpdk --vdev net_null0 --vdev net_null1 --no-mac-updating --duration 2 --json 2>/dev/null | tail -1)
echo "$out" | python3 -c 'import json, sys
s = json.loads(sys.stdin.read())
assert s["backend"] == "dpdk" and s["tx_packets"] > 0, s
print("build-image: l2fwd in the image forwarded %.1f Mpps on net_null" % s["tx_mpps"])'
echo "build-image: $tag is good"
