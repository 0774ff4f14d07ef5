#!/usr/bin/env python3
"""The application state sits below the areas: no import cycle may run through `src/state.rs`
or `src/app.rs` (ARCHITECTURE.md, "Layers").

Reads `src/` as text and draws one edge from a file to each file it names a path into
(`use crate::a::b`, `crate::a::b::f()`, `super::`, `self::`, and a `mod.rs` naming a child
module), the file that path lands in being the longest prefix that is a module file; test
modules (`#[cfg(test)] mod tests`) are left out. Then it finds the strongly connected groups
of files (Tarjan) and fails when state.rs or app.rs is in one.

    scripts/check-layers.py            # the check (exit 1 on a cycle through the state)
    scripts/check-layers.py --all      # also list every other cycle, with its edges
    scripts/check-layers.py --why A B  # the shortest import path from file A to file B
"""
import os
import re
import sys
from collections import defaultdict, deque

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
GUARDED = ("state.rs", "app.rs")


def module_path(f):
    p = f[:-3].split("/")
    if p[-1] == "mod":
        p = p[:-1]
    return [] if p in (["lib"], ["main"]) else p


def is_mod_file(f):
    return f.endswith("mod.rs") or f in ("lib.rs", "main.rs")


def expand_use(prefix, s):
    """`a::{b, c::{d, e}}` as [[a, b], [a, c, d], [a, c, e]]."""
    s = s.strip()
    if "{" not in s:
        s = s.split(" as ")[0].strip()
        return [prefix + [x for x in s.split("::") if x and x not in ("self", "*")]]
    j = s.index("{")
    pre = s[:j].strip().rstrip(":")
    inner = s[j + 1 : s.rindex("}")]
    depth, cur, parts = 0, "", []
    for ch in inner:
        depth += ch == "{"
        depth -= ch == "}"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    base = prefix + [x for x in pre.split("::") if x]
    return [segs for p in parts if p.strip() for segs in expand_use(base, p)]


def graph():
    files = []
    for d, _, names in os.walk(ROOT):
        files += [os.path.relpath(os.path.join(d, n), ROOT) for n in names if n.endswith(".rs")]
    by_module = {tuple(module_path(f)): f for f in files}

    def land(segs):
        for n in range(len(segs), 0, -1):
            if tuple(segs[:n]) in by_module:
                return by_module[tuple(segs[:n])]
        return None

    edges = defaultdict(set)
    for f in files:
        with open(os.path.join(ROOT, f), encoding="utf-8") as fh:
            src = fh.read()
        cut = src.find("#[cfg(test)]\nmod tests")
        if cut >= 0:
            src = src[:cut]
        src = re.sub(r"//[^\n]*", "", src)
        me = module_path(f)

        def absolute(base, segs):
            if base == "crate":
                return segs
            if base == "self":
                return me + segs
            parent = me[:-1]
            while segs and segs[0] == "super":
                parent, segs = parent[:-1], segs[1:]
            return parent + segs

        targets = []
        for m in re.finditer(r"\buse\s+(crate|super|self)::([^;]*);", src, re.S):
            targets += [absolute(m.group(1), segs) for segs in expand_use([], m.group(2))]
        for m in re.finditer(r"(?<![:\w])(crate|super|self)((?:::(?:super|[A-Za-z_]\w*))+)", src):
            targets.append(absolute(m.group(1), [x for x in m.group(2).split("::") if x]))
        if is_mod_file(f):
            # Edition 2018 paths from a module file: `use child::X;`, `child::f()`.
            for m in re.finditer(r"(?<![:\w])([a-z_]\w*)((?:::[A-Za-z_]\w*)+)", src):
                if tuple(me + [m.group(1)]) in by_module:
                    targets.append(me + [m.group(1)] + [x for x in m.group(2).split("::") if x])
        for t in targets:
            to = land(t)
            if to and to != f:
                edges[f].add(to)
    return files, edges


def cycles(files, edges):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for f in sorted(files):
        if f not in index:
            visit(f)
    return sorted(out, key=len, reverse=True)


def shortest(edges, a, b):
    prev, queue = {a: None}, deque([a])
    while queue:
        u = queue.popleft()
        for w in sorted(edges[u]):
            if w not in prev:
                prev[w] = u
                queue.append(w)
    if b not in prev:
        return None
    path, u = [], b
    while u:
        path.append(u)
        u = prev[u]
    return path[::-1]


def main():
    files, edges = graph()
    if "--why" in sys.argv:
        i = sys.argv.index("--why")
        print(" -> ".join(shortest(edges, sys.argv[i + 1], sys.argv[i + 2]) or ["no path"]))
        return 0
    groups = cycles(files, edges)
    bad = [g for g in groups if any(x in g for x in GUARDED)]
    n_edges = sum(len(e) for e in edges.values())
    print(f"check-layers: {len(files)} files, {n_edges} import edges, {len(groups)} cycles "
          f"(largest {len(groups[0]) if groups else 0} files), {len(bad)} through state.rs/app.rs")
    if "--all" in sys.argv:
        for g in groups:
            print(f"  {len(g)} files:")
            for f in g:
                print(f"    {f} -> {', '.join(sorted(x for x in edges[f] if x in g))}")
    for g in bad:
        print(f"FAIL: {len(g)} files form an import cycle through the application state:", file=sys.stderr)
        for f in g:
            print(f"  {f} -> {', '.join(sorted(x for x in edges[f] if x in g))}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
