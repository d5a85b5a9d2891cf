"""Streaming readers for ASE trajectories (OC20 ``.traj``) and ASE databases.

(extxyz has its own reader, :mod:`mlip.data.importers.extxyz`.)

Each reader yields ``(frame_index, item)`` from frame ``start`` on, where ``item`` is an
``ase.Atoms`` together with the ids the pipeline should attach (``system``, ``step``). Frames are
read one at a time, so memory does not grow with the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import ase.db
from ase import Atoms
from ase.io.trajectory import Trajectory

from mlip.data.importers.atoms import SYSTEM_KEYS

__all__ = ["read_traj", "read_ase_db", "read_ase_file", "default_ids"]


def read_traj(path: Path, start: int = 0) -> Iterator[tuple[int, Atoms, dict]]:
    """Frames of an ASE ``.traj`` file: one trajectory (system = file stem, step = frame)."""
    traj = Trajectory(str(path), "r")
    try:
        for k in range(start, len(traj)):
            yield k, traj[k], {"system": path.stem, "step": k}
    finally:
        traj.close()


def read_ase_db(path: Path, start: int = 0) -> Iterator[tuple[int, Atoms, dict]]:
    """Rows of an ASE database in id order; ``key_value_pairs`` are available as ``atoms.info``."""
    db = ase.db.connect(str(path))
    for k, row in enumerate(
        db.select(sort="id", offset=start) if start else db.select(sort="id"), start
    ):
        atoms = row.toatoms(add_additional_information=False)
        atoms.info.update(row.key_value_pairs)
        yield k, atoms, default_ids(atoms, path, k)


def read_ase_file(path: Path, start: int = 0) -> Iterator[tuple[int, Atoms, dict]]:
    """Frames of any file ``ase.io`` reads (format guessed by ASE), one at a time."""
    import ase.io

    for k, atoms in enumerate(ase.io.iread(str(path), index=f"{start}:"), start):
        yield k, atoms, default_ids(atoms, path, k)


def default_ids(atoms: Atoms, path: Path, k: int) -> dict:
    """``{"system": "file:k"}`` unless ``atoms.info`` names its system (then nothing)."""
    if any(key in atoms.info for key in SYSTEM_KEYS):
        return {}
    return {"system": f"{path.name}:{k}"}
