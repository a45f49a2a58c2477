#!/usr/bin/env python3
"""Fails when the crate's top-level modules import each other in a cycle (issue #21).

Reads every file under src/ (binaries excepted: they sit above the library), collects the
top-level modules each module names (`crate::x`, `super::super::x` is not used here), and
reports every strongly connected component of more than one module with the files that make
each of its edges. Prints the module order (lowest first) when there is no cycle.
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "src"


def top_module(path: Path) -> str | None:
    rel = path.relative_to(ROOT)
    if rel.parts[0] == "bin" or rel.name in ("lib.rs", "main.rs"):
        return None
    return rel.parts[0].removesuffix(".rs")


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def graph():
    modules = {p.name.removesuffix(".rs") for p in ROOT.iterdir() if p.name not in ("lib.rs", "bin")}
    edges: dict[str, dict[str, set[str]]] = {m: {} for m in modules}
    for path in sorted(ROOT.rglob("*.rs")):
        source = top_module(path)
        if source is None:
            continue
        text = strip_comments(path.read_text())
        names = set(re.findall(r"\bcrate::([a-z_][a-z0-9_]*)", text))
        # `use crate::{a, b::c}` groups
        for group in re.findall(r"\bcrate::\{([^}]*)\}", text, flags=re.S):
            names |= set(re.findall(r"(?:^|[,{\s])([a-z_][a-z0-9_]*)", group))
        for name in names:
            if name in modules and name != source:
                edges[source].setdefault(name, set()).add(str(path.relative_to(ROOT.parent)))
    return edges


def sccs(edges):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

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
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(comp)

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    edges = graph()
    cycles = [sorted(c) for c in sccs(edges) if len(c) > 1]
    if not cycles:
        # Tarjan emits components in reverse topological order: dependencies first.
        order = [c[0] for c in sccs(edges)]
        print("module graph is acyclic; lowest first: " + " < ".join(order))
        return 0
    for comp in cycles:
        print(f"cycle among modules: {', '.join(comp)}")
        for a in comp:
            for b in sorted(edges[a]):
                if b in comp:
                    files = sorted(edges[a][b])
                    print(f"  {a} -> {b}: {', '.join(files[:6])}{' ...' if len(files) > 6 else ''}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
