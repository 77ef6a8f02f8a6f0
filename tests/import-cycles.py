#!/usr/bin/env python3
"""Fails when modules of a crate import each other in a cycle (make lint runs it).

A module is a file (`a/b.rs` or `a/b/mod.rs` is `a::b`). An edge is a `crate::...` or
`super::...` path outside comments and `#[cfg(test)]` code, resolved to the longest
module it names. A module and its own parent or children are not a cycle: a parent
declares its children, and children use the parent's shared items by design.

Usage: import-cycles.py SRC_DIR...
"""
import os
import re
import sys
from collections import defaultdict


def modules(root):
    mods = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith(".rs"):
                path = os.path.join(dirpath, f)
                parts = os.path.relpath(path, root)[:-3].split(os.sep)
                if parts[-1] in ("mod", "lib", "main"):
                    parts = parts[:-1]
                mods["::".join(parts)] = path
    return mods


def graph(mods):
    def resolve(path):
        parts = [p for p in path.split("::") if p]
        while parts:
            if "::".join(parts) in mods:
                return "::".join(parts)
            parts.pop()
        return None

    def related(a, b):
        return a == b or a.startswith(b + "::") or b.startswith(a + "::") or not a or not b

    g = defaultdict(set)
    for m, path in mods.items():
        with open(path, encoding="utf-8") as fh:
            src = fh.read()
        cut = src.find("#[cfg(test)]")
        if cut >= 0:
            src = src[:cut]
        src = re.sub(r"//[^\n]*", "", src)
        parent = m.split("::")[:-1] if m else []
        for hit in re.finditer(r"\bcrate::([A-Za-z_][A-Za-z0-9_:]*)", src):
            t = resolve(hit.group(1))
            if t is not None and not related(m, t):
                g[m].add(t)
        for hit in re.finditer(r"\bsuper::([A-Za-z_][A-Za-z0-9_:]*)", src):
            t = resolve("::".join(parent + [hit.group(1)]))
            if t is not None and not related(m, t):
                g[m].add(t)
    return g


def cycles(nodes, g):
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
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

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def main(roots):
    bad = 0
    for root in roots:
        mods = modules(root)
        g = graph(mods)
        for comp in cycles(mods, g):
            bad += 1
            print(f"{root}: import cycle between {', '.join(comp)}")
            for a in comp:
                print(f"  {a} -> {', '.join(sorted(g[a] & set(comp)))}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["src"]))
