"""Import layering: each folder of mlip is one layer and no import runs against their order.

    base (errors, units, settings, files, determinism) → neighbours → graph → nn → models
        → data / train → md / calculators → workflows (distill) → cli (and the ``mlip`` facade
        package)

A module may import its own layer and any lower one. Every ``import`` is checked, at module
level and inside functions (a lazy import is still a dependency). The top-level folders
``calculators/``, ``data/`` and ``md/`` are installed as ``mlip.calculators``, ``mlip.data`` and
``mlip.md`` (pyproject.toml), and are mapped here by those names.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Source folder → package name (as pyproject.toml's ``package-dir``).
SOURCES = {"mlip": "mlip", "calculators": "mlip.calculators", "data": "mlip.data",
           "md": "mlip.md"}

#: Layers, lowest first: (name, module prefixes). A module belongs to the layer of its longest
#: matching prefix.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("mlip.errors", "mlip.units", "mlip.settings", "mlip.files", "mlip.determinism")),
    ("neighbours", ("mlip.neighbors",)),
    ("graph", ("mlip.graph", "mlip.structures", "mlip.targets")),
    ("nn", ("mlip.nn",)),
    ("models", ("mlip.models", "mlip.testing")),
    ("data/train", ("mlip.data", "mlip.train", "mlip.io")),
    ("md/calculators", ("mlip.md", "mlip.calculators", "mlip.lammps")),
    ("workflows", ("mlip.distill",)),
    ("cli", ("mlip.cli", "mlip.__main__", "mlip")),
)

#: Packages of one layer that must not import each other (two users of the layers below).
SIBLINGS = (("mlip.md", "mlip.calculators"),)

#: Names of the root package any layer may import (``from mlip import __version__``): the root
#: package runs before any ``mlip.*`` module anyway.
ROOT_NAMES_ALLOWED = {"__version__"}


def _modules() -> dict[str, Path]:
    """Every module of mlip: dotted name → file."""
    found = {}
    for folder, package in SOURCES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_of(module: str) -> int:
    """Index in :data:`LAYERS` of ``module`` (longest matching prefix)."""
    best, best_len = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if _within(module, prefix) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    if best is None:
        raise KeyError(f"module {module} has no layer: add it to LAYERS in {__file__}")
    return best


def _imports(module: str, path: Path) -> list[tuple[str, int]]:
    """(imported mlip module, line) for every import of ``path``, lazy ones included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                name = f"{base}.{alias.name}"
                if name in MODULES:
                    found.append((name, node.lineno))
                elif base == "mlip" and alias.name in ROOT_NAMES_ALLOWED:
                    continue
                else:
                    found.append((base, node.lineno))
    return [(name, line) for name, line in found if name == "mlip" or name.startswith("mlip.")]


def violations() -> list[str]:
    """``"<module> imports <module> against the layer order (...)"`` for each bad import."""
    bad = []
    for module, path in MODULES.items():
        own = layer_of(module)
        for imported, line in _imports(module, path):
            if layer_of(imported) > own:
                bad.append(f"{module} imports {imported} against the layer order "
                           f"({LAYERS[own][0]} < {LAYERS[layer_of(imported)][0]}; "
                           f"{path.relative_to(ROOT)}:{line})")
            for pair in SIBLINGS:
                for mine, other in (pair, pair[::-1]):
                    if _within(module, mine) and _within(imported, other):
                        bad.append(f"{module} imports {imported} against the layer order "
                                   f"({mine} and {other} are siblings; "
                                   f"{path.relative_to(ROOT)}:{line})")
    return bad


def test_every_module_has_a_layer():
    unmapped = []
    for module in MODULES:
        try:
            layer_of(module)
        except KeyError:
            unmapped.append(module)
    assert len(MODULES) > 100  # the walk found the tree (mlip, data, md, calculators)
    assert not unmapped, f"modules without a layer in LAYERS: {unmapped}"


def test_no_import_against_the_layer_order():
    bad = violations()
    assert not bad, "\n".join(bad)


def test_base_layer_imports_nothing_above_it():
    """errors, units, settings, files, determinism: only each other (no torch model code)."""
    for module, path in MODULES.items():
        if layer_of(module) == 0:
            above = [name for name, _ in _imports(module, path) if layer_of(name) > 0]
            assert not above, f"{module} (base layer) imports {above}"


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    """A lazy import inside a function and a relative import are both found."""
    source = tmp_path / "mod.py"
    source.write_text("def f():\n    from mlip.md import run_md\n"
                      "from ..cli import main\n")
    found = _imports("mlip.models.mod", source)
    assert ("mlip.md", 2) in found
    assert ("mlip.cli", 3) in found
    assert layer_of("mlip.md") > layer_of("mlip.models")


@pytest.mark.parametrize("module, layer", [
    ("mlip.files", "base"), ("mlip.neighbors.verlet", "neighbours"), ("mlip.graph", "graph"),
    ("mlip.nn.so2", "nn"), ("mlip.models.checkpoint", "models"), ("mlip.data.store", "data/train"),
    ("mlip.train.loop", "data/train"), ("mlip.md.driver", "md/calculators"),
    ("mlip.calculators.ase", "md/calculators"), ("mlip.cli.md", "cli"),
])
def test_folders_map_to_their_layer(module, layer):
    assert module in MODULES
    assert LAYERS[layer_of(module)][0] == layer
