"""Module-level layering, read statically with `ast` (nothing is imported or run): no import cycle between
vidur_ppo's modules, so each imports only downwards, and experiment scripts use only vidur_ppo's public
names. Every import statement counts, function-local ones too: a cycle hidden in a function is still one.
The packages stack sim < workloads < routing: each imports only the ones below it."""

import ast
from pathlib import Path

import networkx as nx  # installed with torch

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "vidur_ppo"

# Pairs that must import one way only, upper -> lower: the report assembles the matrix's tables, the
# suite runs the capacity bisections.
ONE_WAY = [("eval.report", "eval.matrix"), ("eval.suite", "eval.slo_capacity")]
LAYERS = ("sim", "workloads", "routing")  # each package may import the ones before it
BASE = ("checks", "registry")  # leaves every layer may import (and the package's own __init__)


def modules() -> dict:
    """Dotted name -> file of every module of the package (a package by its __init__.py)."""
    out = {}
    for f in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = f.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def imported(source: str, module: str, known, is_package: bool = False) -> set:
    """The modules of `known` that `module`'s import statements name, at any depth. `from a.b import c`
    names a.b.c when that is a module, else a.b."""
    package = module if is_package else module.rpartition(".")[0]
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, one level up per extra dot
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names += [f"{base}.{a.name}" for a in node.names]
    out = set()
    for name in names:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name != module:
            out.add(name)
    return out


def import_graph() -> nx.DiGraph:
    """Module -> the package modules it imports, names without the `vidur_ppo.` prefix."""
    mods = modules()
    short = {m: m.removeprefix(PACKAGE + ".") for m in mods}
    g = nx.DiGraph()
    g.add_nodes_from(short.values())
    for m, f in mods.items():
        for t in imported(f.read_text(), m, mods, f.name == "__init__.py"):
            g.add_edge(short[m], short[t])
    return g


def test_function_local_and_relative_imports_count():
    known = {"vidur_ppo.eval", "vidur_ppo.eval.suite", "vidur_ppo.eval.report", "vidur_ppo.checks"}
    src = ("from vidur_ppo.checks import check\n"
           "def run():\n    from vidur_ppo.eval.report import suite_report\n"
           "def other():\n    from . import suite\n    import numpy\n")
    assert imported(src, "vidur_ppo.eval.matrix", known) == {"vidur_ppo.checks", "vidur_ppo.eval.report",
                                                             "vidur_ppo.eval.suite"}


def test_no_import_cycle():
    g = import_graph()
    assert g.has_edge("eval.suite", "eval.report")  # a function-local import, seen
    cycles = [" -> ".join(c + c[:1]) for c in nx.simple_cycles(g)]
    assert not cycles, "import cycles:\n" + "\n".join(sorted(cycles))


def test_a_layer_imports_only_the_layers_below_it():
    g = import_graph()
    upward = []
    for i, layer in enumerate(LAYERS):
        allowed = set(LAYERS[: i + 1]) | set(BASE) | {PACKAGE}
        for m in g.nodes:
            if m == layer or m.startswith(layer + "."):
                upward += [f"{m} -> {t}" for t in g.successors(m) if t.split(".")[0] not in allowed]
    assert not upward, sorted(upward)


def test_eval_layers_import_one_way():
    g = import_graph()
    for upper, lower in ONE_WAY:
        assert nx.has_path(g, upper, lower), (upper, lower)
        assert not nx.has_path(g, lower, upper), f"{lower} imports {upper}, directly or through others"


def test_experiment_scripts_use_public_names_only():
    bad = []
    for f in sorted((ROOT / "experiments").glob("*.py")):
        tree = ast.parse(f.read_text())
        aliases = {}  # local name -> what of vidur_ppo it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE):
                for a in node.names:
                    if a.name.startswith("_") or any(p.startswith("_") for p in node.module.split(".")):
                        bad.append(f"{f.name}:{node.lineno} from {node.module} import {a.name}")
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            elif isinstance(node, ast.Import):
                aliases.update({a.asname: a.name for a in node.names if a.asname and a.name.startswith(PACKAGE)})
        for node in ast.walk(tree):  # `module._name` is the same private use
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and isinstance(node.value, ast.Name) and node.value.id in aliases):
                bad.append(f"{f.name}:{node.lineno} {aliases[node.value.id]}.{node.attr}")
    assert not bad, "private vidur_ppo names used by experiments/:\n" + "\n".join(bad)
