"""Import circles among a package's modules, read from the source with ast (nothing is imported).

    python tools/import_cycles.py [PACKAGE_DIR] [--verbose]

Each import is sorted by where it stands:
  module    at module level (also inside try/if, class bodies): runs when the module loads;
  function  inside a def: runs when the function is called;
  typing    under `if TYPE_CHECKING:`: never runs, does not count.

An edge goes to the module named; `from pkg import name` goes to `pkg.name` when that is a
module of the package, else to `pkg`. The implicit import of parent packages (importing
`a.b.c` runs `a/__init__` and `a/b/__init__`) is not an edge, as in grimp and pydeps.

Prints, for the module-level graph, then with function-level imports added, then with the
TYPE_CHECKING ones added too, the strongly connected components of more than one module
("tangled groups") and the elementary circles in them.
"""

from __future__ import annotations

import ast
import itertools
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

MODULE, FUNCTION, TYPING = "module", "function", "typing"


@dataclass
class Graph:
    modules: set[str] = field(default_factory=set)
    # (importer, imported) -> kinds of the imports that make the edge, with their lines
    edges: dict[tuple[str, str], list[tuple[str, int]]] = field(default_factory=dict)

    def adjacency(self, kinds: Iterable[str]) -> dict[str, set[str]]:
        kinds = set(kinds)
        adj: dict[str, set[str]] = {m: set() for m in self.modules}
        for (a, b), sites in self.edges.items():
            if a != b and any(kind in kinds for kind, _ in sites):
                adj[a].add(b)
        return adj


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.Module) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
    def walk(node: ast.AST, kind: str) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                yield child, kind
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    yield from walk(ast.Module(body=[stmt], type_ignores=[]), TYPING)
                for stmt in child.orelse:
                    yield from walk(ast.Module(body=[stmt], type_ignores=[]), kind)
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                yield from walk(child, TYPING if kind == TYPING else FUNCTION)
            else:
                yield from walk(child, kind)

    yield from walk(tree, MODULE)


def build(root: Path) -> Graph:
    root = root.resolve()
    graph = Graph()
    files = {module_name(root, p): p for p in sorted(root.rglob("*.py"))}
    graph.modules = set(files)
    top = root.name
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node, kind in _imports(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    pkg = ".".join(base + ([node.module] if node.module else []))
                else:
                    pkg = node.module or ""
                for alias in node.names:
                    sub = f"{pkg}.{alias.name}"
                    targets.append(sub if sub in files else pkg)
            for target in targets:
                if target != top and not target.startswith(top + "."):
                    continue
                while target not in files and "." in target:  # `import a.b.name`
                    target = target.rsplit(".", 1)[0]
                graph.edges.setdefault((name, target), []).append((kind, node.lineno))
    return graph


def strongly_connected(adj: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm; the components of more than one module, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(adj[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for v in sorted(adj):
        if v not in index:
            visit(v)
    return sorted(out)


def elementary_cycles(adj: dict[str, set[str]], limit: int = 10_000) -> list[list[str]]:
    """Every simple circle, each once, starting at its smallest module (at most `limit`)."""
    cycles: list[list[str]] = []

    def extend(path: list[str], members: set[str]) -> None:
        start = path[0]
        for w in sorted(adj[path[-1]] & members):
            if len(cycles) >= limit:
                return
            if w == start:
                cycles.append(list(path))
            elif w > start and w not in path:
                path.append(w)
                extend(path, members)
                path.pop()

    for comp in strongly_connected(adj):
        for start in comp:  # the circles whose smallest module is `start`
            extend([start], set(comp))
    return cycles


def module_level_cycles(root: Path) -> list[list[str]]:
    return elementary_cycles(build(root).adjacency([MODULE]))


def report(root: Path, verbose: bool = False) -> None:
    graph = build(root)
    for title, kinds in (("module-level imports", [MODULE]),
                         ("module- and function-level imports", [MODULE, FUNCTION]),
                         ("all imports, TYPE_CHECKING ones too", [MODULE, FUNCTION, TYPING])):
        adj = graph.adjacency(kinds)
        comps = strongly_connected(adj)
        cycles = elementary_cycles(adj)
        print(f"{title}: {len(comps)} tangled group(s), {len(cycles)} elementary circle(s)")
        for comp in comps:
            print("  group:", ", ".join(comp))
        for cycle in cycles:
            ring = [*cycle, cycle[0]]
            line = " -> ".join(ring)
            if verbose:
                sites = []
                for a, b in itertools.pairwise(ring):
                    lines = [f"{k[0]}{n}" for k, n in graph.edges[(a, b)] if k in kinds]
                    sites.append(f"{a.rsplit('.', 1)[-1]}:{'/'.join(lines)}")
                line += "   [" + ", ".join(sites) + "]"
            print("   ", line)


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("-")]
    root = Path(args[0]) if args else Path(__file__).resolve().parents[1] / "aetherflow_tui"
    report(root, verbose="--verbose" in argv or "-v" in argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
