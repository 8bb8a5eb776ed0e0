"""Lists every import circle between siblings (the modules and sub-packages of one package) in flowledger.

`lint-imports` enforces the same rule (the `acyclic_siblings` contract in pyproject.toml) but only names the
imports it would cut; this script prints each circle whole, with the line of every import in it, and marks the
circles that one of the contract's `ignore_imports` closes as known. Function-local and TYPE_CHECKING imports
count. Exit status 1 when a circle is not known.

    .venv/bin/python .ci/import_cycles.py
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import grimp
import networkx as nx

ROOT = "flowledger"
MAX_SHOWN = 20
PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def known_imports() -> list[tuple[re.Pattern[str], re.Pattern[str]]]:
    """The acyclic contract's ignore_imports (`*` = one name part, `**` = any number, as in import-linter)."""
    config = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]
    found = []
    for contract in config["contracts"]:
        if contract.get("type") == "acyclic_siblings":
            for line in contract.get("ignore_imports", []):
                importer, imported = (part.strip() for part in line.split("->"))
                found.append((_pattern(importer), _pattern(imported)))
    return found


def _pattern(expression: str) -> re.Pattern[str]:
    parts = (r"[^.]+(\.[^.]+)*" if p == "**" else r"[^.]+" if p == "*" else re.escape(p)
             for p in expression.split("."))
    return re.compile(r"\.".join(parts) + r"\Z")


def child_of(package: str, module: str) -> str | None:
    """The child of `package` that `module` is or lies in, or None outside it."""
    if not module.startswith(package + "."):
        return None
    return package + "." + module[len(package) + 1:].split(".", maxsplit=1)[0]


def sibling_graph(graph: grimp.ImportGraph, package: str, skip: list[tuple[re.Pattern[str], re.Pattern[str]]]
                  ) -> nx.DiGraph[str]:
    """Children of `package`, an edge where one imports the other (through any module inside them)."""
    siblings: nx.DiGraph[str] = nx.DiGraph()
    for module in graph.find_descendants(package):
        for imported in graph.find_modules_directly_imported_by(module):
            a, b = child_of(package, module), child_of(package, imported)
            if a is None or b is None or a == b:
                continue
            if any(i.match(module) and j.match(imported) for i, j in skip):
                continue
            lines = [f"{module}:{d['line_number']}: {d['line_contents']}"
                     for d in graph.get_import_details(importer=module, imported=imported)]
            if siblings.has_edge(a, b):
                siblings[a][b]["lines"].extend(lines)
            else:
                siblings.add_edge(a, b, lines=lines)
    return siblings


def circles(graph: nx.DiGraph[str]) -> list[tuple[set[str], list[list[str]]]]:
    """Each strongly connected group of siblings, with its circles as `[a, b, …, a]` (shortest first, at most
    MAX_SHOWN of them)."""
    out = []
    for group in nx.strongly_connected_components(graph):
        if len(group) > 1:
            found = sorted((c for c in nx.simple_cycles(graph.subgraph(group), length_bound=len(group))),
                           key=lambda c: (len(c), c))[:MAX_SHOWN]
            out.append((set(group), [[*c, c[0]] for c in found]))
    return sorted(out, key=lambda g: sorted(g[0]))


def short(module: str) -> str:
    return module.rsplit(".", 1)[1]


def main() -> int:
    graph = grimp.build_graph(ROOT, cache_dir=None)
    known = known_imports()
    packages = sorted(m for m in graph.modules if graph.find_children(m))
    new = 0
    for package in packages:
        every = sibling_graph(graph, package, [])
        remaining = [group for group, _ in circles(sibling_graph(graph, package, known))]
        for group, cycles in circles(every):
            is_new = any(group & r for r in remaining)
            new += is_new
            print(f"{'NEW  ' if is_new else 'known'} {package}: {', '.join(sorted(map(short, group)))}")
            for cycle in cycles:
                print(f"    {' -> '.join(map(short, cycle))}")
            for a, b in sorted(every.subgraph(group).edges):
                for line in every[a][b]["lines"]:
                    print(f"        {line}")
    print(f"{new} new group(s) of import circles" if new else "no import circles beyond the known ones")
    return 1 if new else 0


if __name__ == "__main__":
    sys.exit(main())
