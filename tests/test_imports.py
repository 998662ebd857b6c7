"""The package's layers import one way: models/ stands on nothing above it, and no two parts of the package import
each other, directly or around a loop. Imports inside functions count: they run as soon as the function does.

Nodes of the graph: each subpackage emo_jax/<sub>/, each top-level module emo_jax/<name>.py, and data_pipeline.
"""
from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("emo_jax", "data_pipeline")
# What emo_jax/models/ may not import: the layers built on top of it.
ABOVE_MODELS = ("emo_jax.interop", "emo_jax.train", "emo_jax.sample", "emo_jax.cli", "data_pipeline")


def node_of(module: str) -> str | None:
    """The graph node of a dotted module name, or None outside the two packages (and for bare `emo_jax`)."""
    parts = module.split(".")
    if parts[0] == "data_pipeline":
        return "data_pipeline"
    if parts[0] == "emo_jax" and len(parts) > 1:
        return ".".join(parts[:2])
    return None


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, package: str) -> list[tuple[int, str]]:
    """(line, dotted module) of every import in `source` at any depth; relative ones resolved against `package`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from emo_jax import encoders` imports the module emo_jax.encoders; `from emo_jax.audio import x`
            # imports from the node emo_jax.audio whatever x is.
            found += [(node.lineno, base if node_of(base) else f"{base}.{alias.name}") for alias in node.names]
    return found


def import_edges() -> dict[tuple[str, str], list[str]]:
    """(importing node, imported node) -> ['file:line imports module', ...] for every import across nodes."""
    edges: dict[tuple[str, str], list[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = module_name(path)
            source = node_of(name)
            importer_package = name if path.name == "__init__.py" else name.rpartition(".")[0]
            for line, module in imported_modules(path.read_text(encoding="utf-8"), importer_package):
                target = node_of(module)
                where = f"{path.relative_to(ROOT)}:{line} imports {module}"
                if source and target and target != source and where not in edges.get((source, target), ()):
                    edges.setdefault((source, target), []).append(where)
    return edges


def find_cycle(edges) -> list[str] | None:
    """One cycle [a, b, ..., a] of the directed graph whose edges are the keys of `edges`, or None."""
    graph: dict[str, list[str]] = {}
    for a, b in edges:
        graph.setdefault(a, []).append(b)
    finished: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt in path:
                return path[path.index(nxt):] + [nxt]
            if nxt not in finished and (cycle := visit(nxt)):
                return cycle
        path.pop()
        finished.add(node)
        return None

    for start in sorted(graph):
        if start not in finished and (cycle := visit(start)):
            return cycle
    return None


def test_scan_sees_function_level_and_relative_imports():
    source = "import numpy\n\ndef f():\n    from emo_jax.train import state\n    from ..audio import decode\n"
    assert imported_modules(source, "emo_jax.models") == [
        (1, "numpy"), (4, "emo_jax.train"), (5, "emo_jax.audio")]
    assert imported_modules("from emo_jax import encoders", "data_pipeline") == [(1, "emo_jax.encoders")]


def test_cycle_finder_finds_a_loop_and_only_a_loop():
    assert find_cycle({("a", "b"): [], ("b", "c"): [], ("a", "c"): []}) is None
    assert find_cycle({("a", "b"): [], ("b", "c"): [], ("c", "a"): [], ("c", "d"): []}) == ["a", "b", "c", "a"]


def test_models_import_no_layer_above_them():
    bad = [where for (a, b), wheres in sorted(import_edges().items())
           if a == "emo_jax.models" and b in ABOVE_MODELS for where in wheres]
    assert not bad, "emo_jax/models/ must not import interop, train, sample, cli or data_pipeline:\n" + "\n".join(bad)


def test_no_import_cycle():
    edges = import_edges()
    assert ("emo_jax.cli", "emo_jax.train") in edges  # the scan reads the real package
    cycle = find_cycle(edges)
    if cycle:
        steps = [f"  {a} -> {b}: {', '.join(edges[a, b])}" for a, b in zip(cycle, cycle[1:])]
        raise AssertionError("import cycle " + " -> ".join(cycle) + "\n" + "\n".join(steps))
