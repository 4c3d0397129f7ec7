#!/usr/bin/env bash
# Reserves 2 MiB hugepages (default 512 = 1 GiB) when root; otherwise says
# how. The framework falls back to 4 KiB pages, and says why, without them.
#
#   scripts/setup-hugepages.sh [PAGES]
set -euo pipefail

want=${1:-${DATAPLANE_HUGEPAGES_2M:-512}}
sys=/sys/kernel/mm/hugepages/hugepages-2048kB
if [[ ! -d $sys ]]; then
    echo "setup-hugepages: this kernel has no 2 MiB hugepages"
    exit 0
fi
have=$(cat "$sys/nr_hugepages")
if (( have >= want )); then
    echo "setup-hugepages: $have x 2 MiB reserved ($(cat "$sys/free_hugepages") free)"
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "setup-hugepages: $have x 2 MiB reserved; as root: echo $want > /proc/sys/vm/nr_hugepages"
    exit 0
fi
echo "$want" > /proc/sys/vm/nr_hugepages
got=$(cat "$sys/nr_hugepages")
echo "setup-hugepages: asked for $want x 2 MiB, the kernel reserved $got ($(cat "$sys/free_hugepages") free)"
