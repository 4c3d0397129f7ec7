#!/usr/bin/env python3
"""Checks the module graph of the workspace's crates: no import cycles
between modules, and no lower layer reaching up.

    scripts/check-layers.py [ROOT]     # exit 1 and a list of offences, or 0

A module is a file (`foo.rs`, `foo/mod.rs`). An edge A -> B is a path
`crate::...` or `super::...` in A's code (outside its `#[cfg(test)]`
modules and `tests.rs` files) that names B or something inside B. Edges
between a module and its own ancestors or descendants are how Rust
declares and re-exports modules, and are not counted. A cycle is a set of
modules that reach each other; the layer rules are the `LAYERS` table.
"""

import re
import sys
from pathlib import Path

ROOT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent
CRATES = {"dataplane": "dataplane/src", "hugepages": "hugepages/src", "apps": "apps/src"}

# Modules of `dataplane` that must not import the ones listed: the layers
# read bottom-up (hugepages -> ring -> lcore -> worker/channel/partition;
# hugepages -> wire -> net/block/accel; topology -> profile).
UPPER = ["worker", "channel", "partition", "net", "block", "accel", "profile", "transport", "proto"]
LAYERS = {
    "wire": UPPER + ["ring", "lcore", "topology", "backend", "require"],
    "ring": UPPER + ["wire", "lcore", "topology", "backend", "require"],
    "lcore": UPPER + ["wire"],
    "topology": UPPER + ["lcore", "wire", "ring"],
    "backend": UPPER + ["lcore", "wire", "ring", "topology"],
    "require": UPPER + ["lcore", "wire", "ring", "topology"],
}


def module_of(src: Path, path: Path) -> tuple:
    rel = path.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def strip_tests(text: str) -> str:
    """Drops `#[cfg(test)] mod NAME { ... }` bodies and comments."""
    text = re.sub(r"//[^\n]*", "", text)
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i : m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def resolve(mods: set, here: tuple, path: list) -> tuple | None:
    """The deepest module that `path` (segments after crate/super) names."""
    best = None
    for k in range(1, len(path) + 1):
        if tuple(path[:k]) in mods:
            best = tuple(path[:k])
    return best


def edges_of(src: Path) -> dict:
    files = [p for p in src.rglob("*.rs") if p.name != "tests.rs" and "tests" not in p.parts]
    mods = {module_of(src, f): f for f in files}
    edges = {m: set() for m in mods}
    # `use a::{b, c::d}` flattened just enough: every `crate::x::y` and
    # `super::x` chain, with braces expanded one level.
    pat = re.compile(r"\b(crate|super(?:::super)*)((?:::\w+)*)(?:::\{([^}]*)\})?")
    for m, f in mods.items():
        text = strip_tests(f.read_text())
        # A file `foo.rs` that is not `mod.rs` is module foo; `super` is its parent.
        for hit in pat.finditer(text):
            head, chain, brace = hit.group(1), hit.group(2), hit.group(3)
            segs = [s for s in chain.split("::") if s]
            if head == "crate":
                base = []
            else:
                ups = head.count("super")
                base = list(m[: len(m) - ups])
            targets = [base + segs]
            if brace:
                for item in brace.split(","):
                    item = item.strip().split(" as ")[0]
                    if item and item != "self":
                        targets.append(base + segs + [s for s in item.split("::") if s])
            for t in targets:
                r = resolve(mods.keys(), m, t)
                if r is None or r == m:
                    continue
                # Ancestors and descendants declare and re-export each other.
                if r == m[: len(r)] or m == r[: len(m)]:
                    continue
                edges[m].add(r)
    return edges


def cycles(edges: dict) -> list:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in edges:
        if v not in index:
            visit(v)
    return out


def main() -> int:
    bad = []
    for crate, src in CRATES.items():
        if not (ROOT / src).is_dir():
            print(f"check-layers: no {ROOT / src}")
            return 2
        edges = edges_of(ROOT / src)
        # Cycles among files, and among the crate's top-level modules.
        for comp in cycles(edges):
            bad.append(f"{crate}: import cycle: " + " <-> ".join("::".join(c) for c in comp))
        top = {}
        for a, bs in edges.items():
            if not a:
                continue
            for b in bs:
                if b and a[0] != b[0]:
                    top.setdefault((a[0],), set()).add((b[0],))
        for comp in cycles(top):
            bad.append(f"{crate}: layer cycle: " + " <-> ".join(c[0] for c in comp))
        if crate == "dataplane":
            for a, bs in edges.items():
                if a and a[0] in LAYERS:
                    for b in bs:
                        if b and b[0] in LAYERS[a[0]]:
                            bad.append(
                                f"dataplane: {'::'.join(a)} imports {'::'.join(b)} (a layer above it)"
                            )
    for line in bad:
        print(line)
    if bad:
        return 1
    print("check-layers: no import cycles, no layer reaching up "
          f"({', '.join(CRATES)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
