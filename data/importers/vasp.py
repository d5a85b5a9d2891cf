"""VASP outputs: every ionic step of a ``vasprun.xml`` (pymatgen) or an ``OUTCAR`` (ASE reader).

Energies are VASP's ``e_0_energy`` (σ→0) when present, else the free energy; forces eV/Å;
stress converted from VASP's kBar (positive = compressive) to eV/Å³ with the ASE sign:
``σ_ASE = -σ_VASP · 0.1 GPa``. With ``PSTRESS`` set, VASP's energies are enthalpies; the
``PSTRESS · V`` term is removed (as ASE's reader does). The file is one trajectory
(system = parent folder / file name).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from mlip.errors import InvalidStructureError
from mlip.structures import voigt_to_full
from mlip.units import GPa

__all__ = ["read_vasp", "KBAR_TO_EV_PER_A3"]

KBAR_TO_EV_PER_A3 = 0.1 * GPa


def read_vasp(path: Path, start: int = 0) -> Iterator[tuple[int, dict, dict]]:
    """Ionic steps of a ``vasprun.xml`` (or an ``OUTCAR``) as store records."""
    steps = _vasprun_steps(path) if path.suffix == ".xml" else _outcar_steps(path)
    system = f"{path.parent.name}/{path.name}"
    for k, record in enumerate(steps):
        if k >= start:
            yield k, record, {"system": system, "step": k}


def _vasprun_steps(path: Path) -> Iterator[dict]:
    from pymatgen.io.vasp.outputs import Vasprun

    try:
        run = Vasprun(
            str(path),
            parse_dos=False,
            parse_eigen=False,
            parse_projected_eigen=False,
            parse_potcar_file=False,
        )
    except Exception as exc:  # pymatgen raises many unrelated types on malformed XML
        raise InvalidStructureError(f"{path}: cannot parse vasprun.xml ({exc})") from None
    pstress = float(run.parameters.get("PSTRESS", 0.0) or 0.0) * KBAR_TO_EV_PER_A3
    for step in run.ionic_steps:
        structure = step["structure"]
        energy = step.get("e_0_energy", step.get("e_fr_energy"))
        energy = None if energy is None else energy - pstress * structure.volume
        stress = step.get("stress")
        yield {
            "numbers": np.array(structure.atomic_numbers),
            "positions": structure.cart_coords,
            "cell": structure.lattice.matrix,
            "pbc": np.ones(3, dtype=bool),
            "energy": float("nan") if energy is None else float(energy),
            "forces": None if step.get("forces") is None else np.asarray(step["forces"]),
            "stress": None if stress is None else -np.asarray(stress) * KBAR_TO_EV_PER_A3,
        }


def _outcar_steps(path: Path) -> Iterator[dict]:
    import ase.io

    for atoms in ase.io.iread(path, index=":", format="vasp-out"):
        results = atoms.calc.results
        stress = results.get("stress")
        yield {
            "numbers": atoms.numbers,
            "positions": atoms.positions,
            "cell": atoms.cell.array,
            "pbc": atoms.pbc,
            "energy": float(results.get("energy", float("nan"))),
            "forces": results.get("forces"),
            "stress": None if stress is None else _voigt_to_3x3(stress),
        }


def _voigt_to_3x3(stress: np.ndarray) -> np.ndarray:

    return voigt_to_full(np.asarray(stress, dtype=np.float64))
