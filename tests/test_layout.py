"""The package graph: sub-packages in layers, no cycles, modules of a readable size.

A module may import from its own sub-package and from the layers before its own, never after:
networks and processes know nothing of sampling, training, io or eval; the shared plumbing
(errors, cli, registry, precision, dist) knows nothing of any sub-package. Every import counts,
also those inside functions.
"""

import ast
import importlib
import pkgutil

import pytest
from conftest import ROOT

import dit

LAYERS = [
    {"errors"},
    {"cli", "registry", "precision", "dist", "layout"},
    {"networks", "processes"},
    {"autoencoders"},
    {"sampling"},
    {"io"},
    {"data"},
    {"training", "eval", "analysis", "segmentation"},
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}
MAX_LINES = 400


def modules():
    return sorted(m.name for m in pkgutil.walk_packages(dit.__path__, "dit."))


def unit(module: str) -> str:
    """dit.networks.dit -> networks; dit.errors -> errors."""
    return module.split(".")[1]


def imports_of(module: str) -> set[str]:
    spec = importlib.util.find_spec(module)
    tree = ast.parse(open(spec.origin).read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("dit.")}
        elif isinstance(node, ast.ImportFrom) and node.module and (node.module == "dit" or node.module.startswith("dit.")):
            for a in node.names:  # `from dit.networks import dit_config` imports the module dit.networks.dit_config
                sub = f"{node.module}.{a.name}"
                found.add(sub if importlib.util.find_spec(node.module).submodule_search_locations is not None
                          and importlib.util.find_spec(sub) is not None else node.module)
    return found


def test_every_module_imports():
    for name in modules():
        importlib.import_module(name)


def test_every_sub_package_is_in_a_layer():
    assert {unit(m) for m in modules()} == set(LAYER)


@pytest.mark.parametrize("module", modules())
def test_imports_follow_the_layers(module):
    here = unit(module)
    bad = [m for m in imports_of(module) if unit(m) != here and LAYER[unit(m)] >= LAYER[here]]
    assert not bad, f"{module} (layer {LAYER[here]}) imports {bad}, not from an earlier layer"


def test_no_import_cycles_between_modules():
    graph = {m: {i for i in imports_of(m) if i in set(modules())} for m in modules()}
    state = {}

    def visit(m, path):
        if state.get(m) == "done":
            return
        assert state.get(m) != "open", f"import cycle: {' -> '.join(path + [m])}"
        state[m] = "open"
        for n in graph[m]:
            visit(n, path + [m])
        state[m] = "done"

    for m in graph:
        visit(m, [])


def test_modules_stay_readable():
    long = {p.relative_to(ROOT): n for p in (ROOT / "dit").rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_the_layer_check_can_fail(monkeypatch):
    """The checker sees a violation when there is one (networks importing training)."""
    original = imports_of("dit.networks.dit")
    assert "dit.networks.layers" in original
    bad = [m for m in original | {"dit.training.config"} if unit(m) != "networks" and LAYER[unit(m)] >= LAYER["networks"]]
    assert bad == ["dit.training.config"]
