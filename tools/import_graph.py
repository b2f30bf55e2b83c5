"""The package's import graph: modules, imports, cycles, imports running against the layering.

    python tools/import_graph.py            # the summary
    python tools/import_graph.py --list     # also every cycle, every import against the layering, every late import

It reads ``romlib/**/*.py`` with :mod:`ast` (nothing is imported), resolves relative imports, and counts
module-to-module imports (one per importing module and imported module; ``from romlib.x import y`` counts
``romlib.x.y`` when ``y`` is a module). Cycles are the strongly connected components of more than one module
(Tarjan). An import runs *against the layering* when it goes from a lower layer to a higher one in :data:`LAYERS`,
the package's layering in one sentence (the comment above it). Imports inside a function or a class body are
*late* imports; each one is listed with ``--list`` (an optional heavy dependency loaded on use is a fair
reason for one, hiding a loop is not). Imports under ``if TYPE_CHECKING:`` are never executed and are not counted.
"""
from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "romlib"

#: (layer, module prefixes), bottom first; a module belongs to the layer of its longest matching prefix. In one
#: sentence: plain data and checks (specs, contracts) at the bottom, then the settings (config), files and masks (io),
#: the networks (models, ShapesWorld's world and networks among them), the guidance rules, the samplers, the stages
#: (segment, rank, result, figures, work accounting; the embedded world's scenes, language, oracle and networks), the
#: guidance methods, the backends' assembly, the pipeline
#: and its experiments, and on top the applications (teach, the CLI, ShapesWorld's demo/bench/trainer, the study,
#: the test and tool machinery).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("checks", ("romlib.checks", "romlib.specs", "romlib.contracts", "romlib.interrupts", "romlib.lazy",
                "romlib.progress")),
    ("config", ("romlib.config",)),
    ("io", ("romlib.io", "romlib.masks", "romlib.hub", "romlib.runs")),
    ("models", ("romlib.models", "romlib.clipseg", "romlib.shapes.scenes", "romlib.shapes.oracle", "romlib.shapes.cases",
                "romlib.shapes.segmenter", "romlib.shapes.ranker", "romlib.shapes.backend", "romlib.shapes")),
    ("rules", ("romlib.guidance.cfg",)),
    ("sampling", ("romlib.sampling",)),
    ("stages", ("romlib.segment", "romlib.rank", "romlib.result", "romlib.plots", "romlib.training", "romlib.perf.work",
                "romlib.perf.measure", "romlib.perf.fast", "romlib.perf", "romlib.world")),
    ("guidance", ("romlib.guidance",)),
    ("backends", ("romlib.backends", "romlib.world.backend")),
    ("pipeline", ("romlib.pipeline", "romlib.experiments")),
    ("apps", ("romlib.teach", "romlib.arguments", "romlib.cli", "romlib.study", "romlib.bench",
              "romlib.perf.reference", "romlib.shapes.demo", "romlib.shapes.bench", "romlib.shapes.figures",
              "romlib.shapes.tables", "romlib.shapes.keeps", "romlib.shapes.measure", "romlib.shapes.train",
              "romlib.shapes.train_data", "romlib.shapes.sampler_study", "romlib.shapes.cli", "romlib.testing",
              "romlib.rehearsal", "romlib.rehearsal_sd", "romlib.world.train", "romlib.world.bench",
              "romlib.world.segstudy", "romlib.world.dilstudy", "romlib.world.guidestudy",
              "romlib.world.rankstudy", "romlib.world.studies")),
    ("package", ("romlib",)),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((ROOT / PACKAGE).rglob("*.py"))}


def _resolve(node: ast.ImportFrom, here: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = here.split(".") if is_package else here.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _owner(name: str, known) -> str | None:
    """The longest known module that ``name`` is or lies in."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def imports(mods: dict[str, Path]):
    """``[(importer, imported, line, late)]``, one per import statement and imported module."""
    out = []
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        late_nodes, typing_only = set(), set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                for sub in ast.walk(node):
                    if sub is not node and isinstance(sub, (ast.Import, ast.ImportFrom)):
                        late_nodes.add(id(sub))
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                typing_only.update(id(sub) for sub in ast.walk(node) if isinstance(sub, (ast.Import, ast.ImportFrom)))
        for node in ast.walk(tree):
            if id(node) in typing_only:  # annotations only: never executed, no arrow of the import graph
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(node, mod, is_package)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            for t in dict.fromkeys(targets):
                owner = _owner(t, mods) if t.split(".")[0] == PACKAGE else None
                if owner and owner != mod:
                    out.append((mod, owner, node.lineno, id(node) in late_nodes))
    return out


def layer(mod: str) -> int:
    best, best_len = len(LAYERS) - 1, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (mod == p or mod.startswith(p + ".")) and len(p) > best_len:
                best, best_len = i, len(p)
    return best


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], [0]
    nodes = sorted(set(edges) | {m for ts in edges.values() for m in ts})
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
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
    return out


def measure(exclude: tuple[str, ...] = ()) -> dict:
    mods = {m: p for m, p in modules().items() if not any(m == e or m.startswith(e + ".") for e in exclude)}
    found = [i for i in imports(mods) if i[1] in mods]
    edges: dict[str, set[str]] = defaultdict(set)
    for a, b, _, _ in found:
        edges[a].add(b)
    pairs = {(a, b) for a, b, _, _ in found}
    # the package's own __init__ re-exports on use (PEP 562): an import of "romlib" is no arrow of the layering
    against = sorted((a, b) for a, b in pairs if b != PACKAGE and layer(b) > layer(a))
    late = [i for i in found if i[3]]
    return dict(modules=len(mods), imports=len(pairs), statements=len(found), cycles=cycles(edges), against=against,
                late=late)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--list", action="store_true", help="list every cycle, import against the layering, late import")
    ap.add_argument("--exclude", action="append", default=[], metavar="MODULE",
                    help="leave out a module or package (e.g. romlib.hub); repeatable")
    args = ap.parse_args(argv)
    r = measure(tuple(args.exclude))
    print(f"layering (bottom first): {' -> '.join(name for name, _ in LAYERS)}")
    print(f"modules: {r['modules']}  imports (module->module): {r['imports']}  import statements: {r['statements']}")
    print(f"cycles: {len(r['cycles'])} ({', '.join(str(len(c)) for c in r['cycles']) or '-'} modules)")
    print(f"imports against the layering: {len(r['against'])}")
    print(f"late imports (inside a function or class): {len(r['late'])} of {r['statements']}")
    if args.list:
        for c in r["cycles"]:
            print("cycle:", " ".join(c))
        for a, b in r["against"]:
            print(f"against: {a} -> {b}  ({LAYERS[layer(a)][0]} -> {LAYERS[layer(b)][0]})")
        for a, b, line, _ in r["late"]:
            print(f"late: {a}:{line} -> {b}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
