#!/usr/bin/env python3
"""Before/after comparison of two builds of the compare bench, interleaved.

    benches/ab.py BEFORE_BIN AFTER_BIN --only mpmc_single --pairs 8 [--scale 0.5]
        [--contender ours] [--peer "crossbeam ArrayQueue"]

A code change to the rings or the mempool cannot be measured A B A B inside
one process (both versions would have to be linked in), so this alternates
the two compare binaries (build once before the change, copy the binary out
of target/, build again after): before, after, after, before, ... each run
doing one recorded round of the selected comparison. Reported per build: the
contender's median figure, and its same-run ratio against a peer (which
cancels the VM's minute-to-minute swings); and per adjacent pair of runs,
the after/before speed ratio of the contender.
"""

import argparse
import json
import statistics
import subprocess
import tempfile


def run(binary, only, scale, path):
    subprocess.run(
        [binary, "--only", only, "--rounds", "1", "--scale", str(scale), "--json", path],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with open(path) as f:
        return json.load(f)


def ns_per_op(data, name):
    """The contender's figures, from whichever comparison of the run has it."""
    for report in data["comparisons"]:
        for c in report["contenders"]:
            if c["name"] == name and c["ns_per_op"]:
                return c["ns_per_op"]["median"], c["cycles_per_op"]["median"]
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--only", required=True)
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--contender", default="ours")
    ap.add_argument("--peer", default=None)
    a = ap.parse_args()

    rows = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(a.pairs):
            order = ["before", "after"] if i % 2 == 0 else ["after", "before"]
            for which in order:
                binary = a.before if which == "before" else a.after
                data = run(binary, a.only, a.scale, f"{tmp}/{which}.json")
                ours = ns_per_op(data, a.contender)
                peer = ns_per_op(data, a.peer) if a.peer else None
                if ours is None:
                    raise SystemExit(f"no contender named {a.contender!r} in --only {a.only}")
                rows[which].append((ours, peer))
                print(
                    f"pair {i} {which:<6} {a.contender}: {ours[0]:8.3f} ns/op {ours[1]:7.2f} cyc/op"
                    + (f"   {a.peer}: {peer[0]:8.3f} ns/op" if peer else ""),
                    flush=True,
                )

    print(f"\n{a.only}: {a.contender}, {a.pairs} interleaved pairs of runs")
    for which in ("before", "after"):
        ns = [r[0][0] for r in rows[which]]
        cyc = [r[0][1] for r in rows[which]]
        line = (
            f"  {which:<6} median {statistics.median(ns):8.3f} ns/op "
            f"({1e3 / statistics.median(ns):8.1f} Mops/s, {statistics.median(cyc):6.2f} cyc/op)"
        )
        if a.peer:
            vs = [r[1][0] / r[0][0] for r in rows[which]]
            line += f"; speed vs {a.peer} same run: median {statistics.median(vs):.2f} [{min(vs):.2f} {max(vs):.2f}]"
        print(line)
    gain = [b[0][0] / f[0][0] for b, f in zip(rows["before"], rows["after"])]
    print(
        f"  after/before speed, pair by pair: median {statistics.median(gain):.2f} "
        f"[{min(gain):.2f} {max(gain):.2f}]"
    )


if __name__ == "__main__":
    main()
