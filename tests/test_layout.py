"""The package graph: sub-packages in layers, no cycles, modules of a readable size.

A module may import from its own sub-package and from the layers before its own, never after:
networks and processes know nothing of sampling, training, io or eval; io (files and formats) knows
nothing of autoencoders or sampling; pipelines, the last layer, are what scripts call; the shared plumbing
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
    {"cli", "registry", "precision", "dist", "layout", "digest"},
    {"networks", "processes"},
    {"io"},
    {"autoencoders"},
    {"sampling"},
    {"data"},
    {"training", "eval", "analysis", "segmentation"},
    {"pipelines"},
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
    """The package, the scripts, the benchmarks and the tests: no file over MAX_LINES lines."""
    files = [*(ROOT / "dit").rglob("*.py"), *ROOT.glob("*.py"), *(ROOT / "benchmarks").rglob("*.py"),
             *(ROOT / "tests").rglob("*.py")]
    long = {str(p.relative_to(ROOT)): n for p in files if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines: {long}"


def test_the_layer_check_can_fail(monkeypatch):
    """The checker sees a violation when there is one (networks importing training)."""
    original = imports_of("dit.networks.dit")
    assert "dit.networks.layers" in original
    bad = [m for m in original | {"dit.training.config"} if unit(m) != "networks" and LAYER[unit(m)] >= LAYER["networks"]]
    assert bad == ["dit.training.config"]


# --- no special cases: outside the registries, nothing branches on a key, a kind or a concrete class ---

def registered_names() -> set[str]:
    """Every architecture and process key and every autoencoder kind (the plugins' too, once loaded)."""
    from dit.networks import ARCHITECTURES
    from dit.processes import PROCESSES

    names = set(ARCHITECTURES.keys()) | set(PROCESSES.keys()) | {"tokens", "latents", "pixels"}
    try:
        from dit.autoencoders.catalog import AUTOENCODERS

        names |= set(AUTOENCODERS.keys())
    except ImportError:
        pass
    return names


def concrete_classes() -> set[str]:
    """Names of the registered networks' and processes' classes and the autoencoders' implementations."""
    import inspect

    from dit.networks import ARCHITECTURES
    from dit.processes import PROCESSES

    names = {PROCESSES.get(k).__name__ for k in PROCESSES.keys()}
    for k in ARCHITECTURES.keys():
        build = ARCHITECTURES.get(k).build
        names.add(build.__self__.__name__ if inspect.ismethod(build) else getattr(build, "__name__", ""))
    return names - {"", "<lambda>"}


def checked_files():
    """The library outside the modules that define and register the keys, and every script."""
    for path in sorted((ROOT / "dit").rglob("*.py")):
        yield path
    yield from sorted(ROOT.glob("*.py"))


# Constants that hold a registered key (a comparison with one is a comparison with the key).
KEY_CONSTANTS = {"DEFAULT_ARCH", "DEFAULT_PROCESS"}

# What the contracts describe: hasattr, or a defaulted getattr, on one of these probes a capability that
# should be declared (dit/networks/base.py, dit/processes/base.py, dit/autoencoders/base.py).
CONTRACT_OBJECTS = {"process", "network", "model", "net", "vae", "autoencoder", "objective", "arch", "pipe", "classifier"}

# Each entry: (file relative to the root, the offending source line's stripped text prefix) -> why it stays.
SPECIAL_CASE_ALLOWED = {
    # The shapes judges (not registered networks): their held-out scores exist only where they were measured.
    ("dit/eval/shapes_judge.py", 'meta = {k: f"{getattr(model, k):.4f}" for k in keys if hasattr(model, k)}'):
        "the judge's optional held-out scores",
    ("dit/eval/motion.py", '", ".join(f"{k} {getattr(model, k):.4f}" for k in HELDOUT_KEYS if hasattr(model, k)))'):
        "the motion judge's optional held-out scores",
    # The I3D network of FVD (dit/eval/fvd.py), not a registered architecture: a state dict loaded without them.
    ("dit/eval/fvd.py", 'weights_sha256=getattr(net, "weights_sha256", None)'): "I3D's provenance, where known",
    # EmerDiff's times were tuned per process (benchmarks/segmentation/segmentation.py); another process gives them itself.
    ("dit/segmentation/emerdiff.py", "DEFAULT_TIMES = {"): "measured per process; others must pass --t-m",
    # --model rebuilds a file without a config (the public .pt) from a DiT preset: the architecture such files hold.
    ("dit/pipelines/pipeline.py", "if source.model and ckpt.arch != DEFAULT_ARCH:"): "DiT presets name DiT",
    # Two keys compared (the flag's and the preset's); the constant is only the preset's default.
    ("dit/training/config.py", 'if arch is not None and arch != preset.get("arch", DEFAULT_ARCH):'): "a default",
    ("dit/training/config.py", 'if process is not None and process != preset.get("process", DEFAULT_PROCESS):'):
        "a default",
    # DDP (and the tests' stand-in for it) holds the tokenizer as .module; its codebook is maintained on the module.
    ("dit/training/vq_objective.py", 'net = getattr(network, "module", network)'): "DDP's wrapper",
    # diffusers' DiTPipeline is DiT's network with DDPM's scheduler: the one pairing its format can hold.
    ("export_diffusers.py", 'if (ckpt.arch, ckpt.process) != ("dit", "gaussian"):'): "what DiTPipeline is",
}


def special_cases(path, names: set[str], classes: set[str], root=ROOT) -> list[str]:
    """Lines of `path` that branch on a registered name, probe an object with hasattr / a defaulted getattr,
    or test a concrete class with isinstance."""
    tree = ast.parse(path.read_text())
    lines = path.read_text().splitlines()
    found = []

    def here(node, what):
        found.append(f"{path.relative_to(root)}:{node.lineno}: {what}: {lines[node.lineno - 1].strip()[:100]}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            consts = [c.value for c in [node.left, *node.comparators] for c in ast.walk(c)
                      if isinstance(c, ast.Constant) and isinstance(c.value, str) and c.value in names]
            consts += [c.id for c in [node.left, *node.comparators] for c in ast.walk(c)
                       if isinstance(c, ast.Name) and c.id in KEY_CONSTANTS]
            if consts:
                here(node, f"compares with {consts[0]!r}")
        elif isinstance(node, ast.Dict):
            keys = [k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]
            if keys and set(keys) <= names:
                here(node, f"a table keyed by {keys[0]!r}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id == "hasattr" and isinstance(node.args[0], ast.Name) and node.args[0].id in CONTRACT_OBJECTS:
                here(node, "hasattr probe")
            elif node.func.id == "getattr" and len(node.args) == 3 and isinstance(node.args[0], ast.Name) \
                    and node.args[0].id in CONTRACT_OBJECTS:
                here(node, "getattr with a default")
            elif node.func.id == "isinstance" and len(node.args) == 2:
                kinds = node.args[1].elts if isinstance(node.args[1], ast.Tuple) else [node.args[1]]
                bad = [k.id for k in kinds if isinstance(k, ast.Name) and k.id in classes]
                if bad:
                    here(node, f"isinstance of the concrete {bad[0]}")
    return sorted(found, key=lambda f: int(f.split(":")[1]))


def _owner_of(path, names) -> set[str]:
    """The keys a module defines itself (`key = "flow"`, `Architecture("dit", ...)`, `register_*("x", ...)`):
    a module may name its own key."""
    text = path.read_text()
    return {n for n in names if f'"{n}"' in text and (f'key = "{n}"' in text or f'Architecture(\n    "{n}"' in text
                                                       or f'Architecture("{n}"' in text or f'KEY = "{n}"' in text
                                                       or f'ARCH = "{n}"' in text)}


def test_no_code_special_cases_a_system():
    names, classes = registered_names(), concrete_classes()
    found, used = [], set()
    for path in checked_files():
        own = _owner_of(path, names)
        for line in special_cases(path, names - own, classes):
            rel, _, rest = line.partition(":")
            text = rest.split(": ", 2)[-1]
            allowed = [(f, prefix) for f, prefix in SPECIAL_CASE_ALLOWED if rel == f and text.startswith(prefix)]
            used |= set(allowed)
            if not allowed:
                found.append(line)
    stale = set(SPECIAL_CASE_ALLOWED) - used
    assert not stale, f"allow-list entries that match nothing any more (remove them): {sorted(stale)}"
    assert not found, "special cases (declare a capability instead, or justify an entry in SPECIAL_CASE_ALLOWED):\n" + \
        "\n".join(found)


def test_the_special_case_check_can_fail(tmp_path):
    """Each kind of special case is seen: a key compared, a table keyed by keys, a probe, a concrete class."""
    bad = tmp_path / "bad.py"
    bad.write_text('def f(process, net):\n'
                   '    if process.key == "flow":\n'
                   '        return hasattr(net, "blocks")\n'
                   '    times = {"gaussian": 500, "flow": 0.2}\n'
                   '    return isinstance(net, DiT) or getattr(net, "blocks", None)\n')
    found = special_cases(bad, {"flow", "gaussian"}, {"DiT"}, root=tmp_path)
    assert [f.split(": ")[1] for f in found] == ["compares with 'flow'", "hasattr probe", "a table keyed by 'gaussian'",
                                                 "isinstance of the concrete DiT", "getattr with a default"], found
