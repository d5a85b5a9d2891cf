"""PubChemQCR relaxation trajectories from its released LMDB files (optional dependency ``lmdb``).

Layout (see ``shared/data/MANIFEST.md``): a single-file LMDB whose keys are 9-digit PubChem
compound ids and whose values are gzip-compressed pickles ``{stage: [step, ...]}`` with stages
``pm3``, ``hf``, ``DFT_1st``, ``DFT_2nd`` (``DFT_1st`` may be None). A step holds
``coordinates`` (``atom``, ``x``, ``y``, ``z`` in Å), ``energy`` (Hartree, total) and
``gradient`` (``dx``, ``dy``, ``dz`` in Hartree/Bohr). Stored: energy in eV, forces
``-gradient · Hartree/Bohr`` in eV/Å, system = compound id (so a split never separates the stages
of one molecule), ``lot`` = stage name, ``step`` = index over the imported stages in order.

The values are Python pickles: only import files from a source you trust.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from ase.data import atomic_numbers

from mlip.data.importers.lmdb import open_lmdb
from mlip.errors import ConfigError, InvalidStructureError, UnknownElementError
from mlip.units import Bohr, Hartree

__all__ = ["read_pubchemqcr", "resolve_stages", "DFT_STAGES", "ALL_STAGES", "STAGE_ALIASES"]

DFT_STAGES = ("DFT_1st", "DFT_2nd")
ALL_STAGES = ("pm3", "hf", "DFT_1st", "DFT_2nd")
#: Names ``--stage`` accepts (case-insensitive) → the stages they select.
STAGE_ALIASES = {
    "pm3": ("pm3",),
    "hf": ("hf",),
    "dft_1st": ("DFT_1st",),
    "1st": ("DFT_1st",),
    "dft_2nd": ("DFT_2nd",),
    "2nd": ("DFT_2nd",),
    "dft": DFT_STAGES,
    "all": ALL_STAGES,
}


def resolve_stages(names: Sequence[str] | str | None) -> tuple[str, ...]:
    """The PubChemQCR stages selected by level-of-theory names, in optimisation order.

    Args:
        names: stage names or aliases (``pm3``, ``hf``, ``DFT_1st``/``1st``, ``DFT_2nd``/``2nd``,
            ``dft`` = both DFT stages, ``all``), case-insensitive; None = the DFT stages.

    Raises:
        ConfigError: an unknown name (the message lists the accepted ones).
    """
    if names is None:
        return DFT_STAGES
    if isinstance(names, str):
        names = [names]
    chosen: set[str] = set()
    for name in names:
        stages = STAGE_ALIASES.get(str(name).lower())
        if stages is None:
            raise ConfigError(
                f"unknown PubChemQCR stage {name!r}; choose from {', '.join(STAGE_ALIASES)}"
            )
        chosen.update(stages)
    if not chosen:
        raise ConfigError("no PubChemQCR stage selected")
    return tuple(stage for stage in ALL_STAGES if stage in chosen)


def read_pubchemqcr(
    path: Path, start: int = 0, stages: tuple[str, ...] = DFT_STAGES
) -> Iterator[tuple[int, dict, dict]]:
    """Steps of every molecule in key order, from flat frame index ``start`` on.

    Raises:
        ConfigError: ``lmdb`` is not installed or a stage name is unknown.
    """
    unknown = set(stages) - set(ALL_STAGES)
    if unknown:
        raise ConfigError(f"unknown PubChemQCR stages {sorted(unknown)}; choose from {ALL_STAGES}")
    env = open_lmdb(path)
    k = 0
    try:
        with env.begin() as txn:
            for key, value in txn.cursor():
                cid = key.decode()
                steps = _steps(value, stages, path, cid)
                if k + len(steps) <= start:
                    k += len(steps)
                    continue
                for n, (stage, step) in enumerate(steps):
                    if k >= start:
                        yield (
                            k,
                            _record(step, f"{path} molecule {cid} {stage}"),
                            {"system": cid, "step": n, "lot": stage},
                        )
                    k += 1
    finally:
        env.close()


def _steps(value: bytes, stages: tuple[str, ...], path: Path, cid: str) -> list[tuple[str, dict]]:
    try:
        molecule = pickle.loads(gzip.decompress(value))
    except (OSError, pickle.UnpicklingError, EOFError) as exc:
        raise InvalidStructureError(
            f"{path} molecule {cid}: cannot decode value as a gzip-compressed pickle ({exc}); "
            "not a PubChemQCR LMDB?"
        ) from None
    if not isinstance(molecule, dict) or not molecule.keys() & set(ALL_STAGES):
        found = sorted(map(str, molecule))[:12] if isinstance(molecule, dict) else molecule
        raise InvalidStructureError(
            f"{path} molecule {cid}: not a PubChemQCR record (expected a dict of stages "
            f"{ALL_STAGES}, found {type(molecule).__name__} {found!r:.200})"
        )
    return [(stage, step) for stage in stages for step in (molecule.get(stage) or [])]


def _record(step: dict, where: str) -> dict:
    coords = step.get("coordinates") or []
    try:
        numbers = np.array([atomic_numbers[c["atom"]] for c in coords], dtype=np.int64)
    except KeyError as exc:
        raise UnknownElementError(f"{where}: unknown element {exc.args[0]!r}") from None
    positions = np.array([[c["x"], c["y"], c["z"]] for c in coords], dtype=np.float64).reshape(
        -1, 3
    )
    gradient = step.get("gradient")
    forces = None
    if gradient is not None:
        forces = -np.array([[g["dx"], g["dy"], g["dz"]] for g in gradient], dtype=np.float64) * (
            Hartree / Bohr
        )
    energy = step.get("energy")
    return {
        "numbers": numbers,
        "positions": positions,
        "cell": np.zeros((3, 3)),
        "pbc": np.zeros(3, dtype=bool),
        "energy": float("nan") if energy is None else float(energy) * Hartree,
        "forces": forces,
    }
