"""The README's and docs/*.md's examples run: every ``python`` and ``bash`` block is a test.

Blocks are collected with Sybil and run in order, one working directory per document (with
``data/`` linked to the repository's, so ``data/bundled/...`` paths work), so that a block may
use what an earlier block of the same document made (``store.h5``, ``runs/facet``). Each
python block shares its document's namespace. A block that cannot run here is preceded in the
Markdown by ``<!-- skip: next "why" -->`` (or ``<!-- skip: next if(CONDITION, reason="why") -->``
where it needs an optional package); the reason shows in the test report.

Small sizes: before a block runs, :data:`SMALL_SIZES` rewrites long runs into short ones
(``mlip train`` 2 steps on 24 frames, ``mlip eval`` on 8 frames, ``mlip relax`` to fmax 10
eV/Å, MD and relaxation step counts divided by 5000, at least 2), so that the whole file stays
within a few minutes on 2 CPU cores. ``mlip`` commands run in this process. :data:`SETUP` gives the
names and files a document's examples assume without making them (``structures``, ``graph``,
``model.pt``, ...).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import unittest
from pathlib import Path

import pytest
from sybil import Sybil
from sybil.example import Example
from sybil.parsers.markdown import CodeBlockParser, SkipParser

from mlip.cli import main

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _fewer_steps(match: re.Match) -> str:
    """``--steps N`` / ``steps=N`` with N / 5000 (at least 2): 20000 → 4, 40000 → 8."""
    steps = max(2, int(match.group(2).replace("_", "")) // 5000)
    return f"{match.group(1)}{steps}"


#: (pattern, replacement) applied to every block before it runs (re.MULTILINE).
SMALL_SIZES: tuple[tuple[str, object], ...] = (
    (r"^(\s*(?:torchrun [^\n]*?)?mlip train (?!--resume)[^#\n]*?)(\s*(?:#[^\n]*)?)$",
     r"\1 --set train.max_steps=2 --set data.max_frames=24\2"),
    (r"^(\s*mlip train --resume [^#\n]*?)(\s*(?:#[^\n]*)?)$", r"\1 --set train.max_steps=4\2"),
    (r"^(\s*mlip eval [^#\n]*?)(\s*(?:#[^\n]*)?)$", r"\1 --max-frames 8\2"),
    (r"^(\s*mlip relax [^#\n]*--fmax )[\d.]+", r"\g<1>10"),  # converged in the steps left
    (r"(--steps )(\d+)", _fewer_steps),
    (r"(\bsteps=)([\d_]+)", _fewer_steps),
    (r"\bduration_fs=[\d_.]+", "duration_fs=5"),
    (r"\boverrides=\{", 'overrides={"train.max_steps": 2, "data.max_frames": 24, '),
)

_MOLECULES = """
import ase.io
structures = ase.io.read("data/bundled/3bpa_train_300K.xyz", index=":2")
boxes = [m.copy() for m in structures]
for box in boxes:
    box.cell, box.pbc = [12.0, 12.0, 12.0], True
    box.center()
ase.io.write("cell.xyz", boxes[:1])
"""

_TINY_MODEL = """
from mlip.models import build, save_model
save_model(build("facet", species=[1, 6, 7, 8], cutoff=4.0, hidden_irreps="8x0e+4x1o",
                 num_layers=1, sh_lmax=1, embedding_dim=8, mixer_hidden=[8],
                 readout_hidden=[8]), "model.pt")
"""

#: Python run in a document's namespace before its first block (names the text assumes).
SETUP: dict[str, str] = {
    "README.md": _MOLECULES + """
atoms = structures[0].copy()
import yaml
from mlip.train import shipped_config
ase.io.write("structures.xyz", structures)
yaml.safe_dump(yaml.safe_load(shipped_config("facet").read_text()), open("my.yaml", "w"))
""",
    "equiformer_v3.md": """
from mlip.graph import AtomicGraph
from ase.build import bulk
graph = AtomicGraph.from_ase(bulk("C", "diamond", a=3.57), cutoff=5.0)
""",
    "neighbors.md": """
import torch
positions = torch.rand(20, 3, dtype=torch.float64) * 6.0
cell = 6.0 * torch.eye(3, dtype=torch.float64)
pbc = torch.tensor([True, True, True])
cutoff, batch, n_steps = 3.0, None, 2
""",
    "simulation.md": _MOLECULES + _TINY_MODEL + """
structures, atoms = boxes, boxes[0].copy()  # --cell and the stress need periodic cells
ase.io.write("structures.xyz", structures)
""",
    "store.md": "",
    "training.md": "",
}


def _shrink(source: str) -> str:
    for pattern, replacement in SMALL_SIZES:
        source = re.sub(pattern, replacement, source, flags=re.MULTILINE)
    return source


def _run_python(example: Example) -> None:
    """Run a python block in its document's namespace, with the document's line numbers."""
    source = "\n" * (example.line) + _shrink(example.parsed)
    exec(compile(source, example.path, "exec"), example.namespace)


def _commands(source: str) -> list[tuple[str, list[str]]]:
    """(line, argv) of each command of a bash block (continuations joined, comments dropped)."""
    joined = source.replace("\\\n", " ")
    return [(line.strip(), argv) for line in joined.splitlines()
            if (argv := shlex.split(line, comments=True))]


def _run_bash(example: Example) -> None:
    """Run a bash block command by command, stopping at the first that fails.

    ``mlip ...`` runs in this process through :func:`mlip.cli.main` (the console script's
    entry point; saves importing torch for every command); any other command runs in bash.
    """
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "MPLBACKEND": "Agg"}
    for line, argv in _commands(_shrink(example.parsed)):
        if argv[0] == "mlip":
            try:
                status = main(argv[1:])
            except SystemExit as exc:  # argparse: a usage error
                status = exc.code
        else:
            status = subprocess.run(["bash", "-c", line], env=env, timeout=600).returncode
        if status:
            raise AssertionError(f"{Path(example.path).name}:{example.line}: `{line}` exited "
                                 f"with status {status} (its output is below)")


SYBIL = Sybil(parsers=[CodeBlockParser("python", _run_python), CodeBlockParser("bash", _run_bash),
                       SkipParser()], path=str(ROOT))


def _examples() -> list:
    """(document, index of the example) for every block and skip marker, in order, named
    ``DOCUMENT:LINE``."""
    return [pytest.param(path, k, id=f"{path.name}:{example.line}")
            for path in DOCUMENTS for k, example in enumerate(SYBIL.parse(path))]


_PARSED: dict[Path, tuple[list[Example], Path]] = {}


def _document(path: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Example], Path]:
    """The examples of one document and its working directory (set up on first use)."""
    if path not in _PARSED:
        workdir = tmp_path_factory.mktemp(path.stem)
        (workdir / "data").symlink_to(ROOT / "data")
        (workdir / "examples").symlink_to(ROOT / "examples")
        examples = list(SYBIL.parse(path))
        setup = SETUP.get(path.name, "")
        if setup and examples:
            cwd = os.getcwd()
            os.chdir(workdir)
            try:
                exec(compile(setup, f"SETUP[{path.name!r}]", "exec"), examples[0].namespace)
            finally:
                os.chdir(cwd)
        _PARSED[path] = examples, workdir
    return _PARSED[path]


@pytest.mark.parametrize(("path", "index"), _examples())
def test_documented_example_runs(path: Path, index: int, tmp_path_factory, monkeypatch):
    examples, workdir = _document(path, tmp_path_factory)
    example = examples[index]
    assert example.region.evaluator is not None, f"{path.name}:{example.line}: nothing runs it"
    monkeypatch.chdir(workdir)
    try:
        example.evaluate()  # raises SybilFailure when the block fails
    except unittest.SkipTest as skip:
        pytest.skip(f"{path.name}:{example.line}: {skip}")


def test_every_skip_marker_gives_a_reason():
    for path in DOCUMENTS:
        for line, text in enumerate(path.read_text().splitlines(), start=1):
            if text.lstrip().startswith("<!-- skip"):
                assert re.fullmatch(r'\s*<!-- skip: next "[^"]+" -->', text) or re.fullmatch(
                    r'\s*<!-- skip: next if\(.+, reason="[^"]+"\) -->', text), (
                    f"{path.name}:{line}: write <!-- skip: next \"why\" --> or <!-- skip: "
                    "next if(CONDITION, reason=\"why\") -->")


def test_a_broken_example_fails(tmp_path, monkeypatch):
    """The runner is not a no-op: a failing command, a failing python line and a skip."""
    page = tmp_path / "page.md"
    page.write_text('```bash\nmlip data info missing.h5\n```\n\n```python\nx = 1\nassert x == 2\n'
                    '```\n\n<!-- skip: next "a reason" -->\n```python\nraise ValueError\n```\n')
    monkeypatch.chdir(tmp_path)
    bash, python, marker, skipped = SYBIL.parse(page)
    with pytest.raises(AssertionError, match=r"page.md:1: `mlip data info missing.h5` exited"):
        bash.evaluate()
    with pytest.raises(AssertionError):
        python.evaluate()
    marker.evaluate()
    with pytest.raises(unittest.SkipTest, match="a reason"):
        skipped.evaluate()
