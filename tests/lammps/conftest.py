"""LAMMPS coupling tests: a tiny 2-layer float64 Facet on a strained, rattled 32-atom Cu cell,
run by one ``mpiexec -n K`` launch per rank count (driver.py runs the ``mlip lammps`` command line
on each input in turn)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk

MPIEXEC = Path(sys.executable).parent / "mpiexec"

#: the input every test starts from; {steps}, {extra} and {fix} are filled in
INPUT = """\
units metal
atom_style atomic
boundary p p p
atom_modify map array sort 0 0.0
read_data {data}
pair_style zero 3.0
pair_coeff * *
neighbor 1.0 bin
neigh_modify every 1 delay 0 check yes
{fix}
{extra}
thermo_style custom step pe ke etotal press pxx pyy pzz pxy pxz pyz vol
thermo_modify format float %.17g
dump d all custom 1 dump.txt id x y z fx fy fz
dump_modify d sort id format float %.17g
fix out all print 1 "$(step) $(pe:%.17g) $(etotal:%.17g) $(pxx:%.17g) $(pyy:%.17g) \
$(pzz:%.17g) $(pyz:%.17g) $(pxz:%.17g) $(pxy:%.17g) $(vol:%.17g)" file thermo.txt screen no
{run}
"""
FIX = "fix mlip all external pf/callback 1 1"


def cu_atoms():
    """32 Cu atoms (fcc 2×2×2), rattled and strained: non-zero forces and stress."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    atoms.rattle(0.08, seed=3)
    atoms.set_cell(atoms.cell.array * [1.0, 1.02, 0.99], scale_atoms=True)
    atoms.wrap()
    return atoms


def randomized(model, scale: float = 0.2):
    """``model`` with seeded noise on every parameter: fresh models start some weights at zero
    (e.g. Facet's layer-norm gains), which leaves an energy reaching fewer layers than the
    architecture allows, and the tests need the full reach."""
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for parameter in model.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float64)
            parameter.add_(scale * noise.to(parameter.dtype))
    return model


@pytest.fixture(scope="session")
def potential_file(tmp_path_factory) -> Path:
    """A seeded, randomized 2-layer Facet (cutoff 3 Å, float64, Cu only; small and bilinear:
    fast)."""
    from mlip.models import build, save_model
    from mlip.models.facet import FACET_PRESETS

    torch.manual_seed(0)
    model = build("facet", species=[29], avg_num_neighbors=12.0,
                  **{**FACET_PRESETS["facet-tiny"], "cutoff": 3.0, "mixer": "bilinear",
                     "hidden_irreps": "4x0e+2x1o"}).double()
    randomized(model)
    model.set_energy_reference({29: -3.5}, scale=0.5)
    path = tmp_path_factory.mktemp("lammps_model") / "facet_cu.pt"
    save_model(model, path)
    return path


def write_input(directory: Path, atoms, *, run: str, extra: str = "", fix: str = FIX,
                masses: bool = True) -> Path:
    """A LAMMPS data file of ``atoms`` and the input around it, in ``directory``."""
    ase.io.write(directory / "cu.data", atoms, format="lammps-data", masses=masses,
                 specorder=sorted(set(atoms.get_chemical_symbols()), key=_symbol_order(atoms)))
    text = INPUT.format(data="cu.data", fix=fix, extra=extra, run=run)
    (directory / "in.lmp").write_text(text)
    return directory / "in.lmp"


def _symbol_order(atoms):
    first = {s: k for k, s in reversed(list(enumerate(atoms.get_chemical_symbols())))}
    return first.__getitem__


DRIVER = Path(__file__).with_name("driver.py")


def start_cases(directory: Path, ranks: int, cases: dict[str, list[str]]) -> subprocess.Popen:
    """Start one ``mpiexec -n RANKS`` launch of driver.py that runs ``mlip lammps ARGS`` in
    ``directory / NAME`` for each ``NAME: ARGS`` of ``cases``, in order (its output goes to
    ``directory / "mpiexec.out"``; :func:`finish_cases` waits for it)."""
    listing = [{"dir": str(directory / name), "args": args} for name, args in cases.items()]
    (directory / "cases.json").write_text(json.dumps(listing))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    command = [str(MPIEXEC), "-n", str(ranks), sys.executable, str(DRIVER), "cases.json"]
    with open(directory / "mpiexec.out", "w") as out:
        return subprocess.Popen(command, cwd=directory, env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def finish_cases(process: subprocess.Popen, directory: Path,
                 timeout: float = 300) -> tuple[int, str]:
    """Wait for a launch of :func:`start_cases` in ``directory``: its exit status and the last
    3000 characters of its output."""
    try:
        status = process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        status = process.wait()
    return status, (directory / "mpiexec.out").read_text()[-3000:]


def case_output(directory: Path, ranks: int) -> tuple[list[int | None], str, str]:
    """A driver case's exit status on each rank (None: it wrote none), rank 0's output, and
    the error output of all ranks."""
    status = [int(p.read_text()) if (p := directory / f"status.{r}").exists() else None
              for r in range(ranks)]
    out = (directory / "out.0").read_text() if (directory / "out.0").exists() else ""
    errors = "".join((directory / f"err.{r}").read_text() for r in range(ranks)
                     if (directory / f"err.{r}").exists())
    return status, out, errors


def read_dump(path: Path) -> list[np.ndarray]:
    """Frames of ``dump.txt``: (n_atoms, 7) arrays id x y z fx fy fz, sorted by id."""
    frames, lines = [], path.read_text().splitlines()
    k = 0
    while k < len(lines):
        n = int(lines[k + 3])
        frames.append(np.loadtxt(lines[k + 9:k + 9 + n], ndmin=2))
        k += 9 + n
    return frames


def read_thermo(path: Path) -> np.ndarray:
    """Rows of ``thermo.txt``: step pe etotal pxx pyy pzz pyz pxz pxy vol."""
    return np.loadtxt(path, comments="#", ndmin=2)
