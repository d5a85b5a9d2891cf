"""Batched evaluation of a potential on frames, and teacher labels written into a store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from ase import Atoms

from mlip.data.frames import FrameBatch, FrameBuilder
from mlip.data.writer import StoreWriter
from mlip.graph import AtomicGraph
from mlip.models import Potential

__all__ = ["Predictions", "predict", "write_labelled", "read_frames"]

#: Atoms per model call when evaluating many frames.
ATOMS_PER_CALL = 2048


@dataclass
class Predictions:
    """A potential's results on a list of frames.

    Attributes:
        energy: (n_frames,) eV. forces: per frame an (n_atoms, 3) array, eV/Å.
        stress: (n_frames, 3, 3) eV/Å³ (ASE sign), NaN for frames that are not fully periodic.
    """

    energy: np.ndarray
    forces: list[np.ndarray]
    stress: np.ndarray


def _chunks(frames: Sequence[Atoms], atoms_per_call: int) -> list[list[int]]:
    chunks, current, size = [], [], 0
    for k, atoms in enumerate(frames):
        if current and size + len(atoms) > atoms_per_call:
            chunks.append(current)
            current, size = [], 0
        current.append(k)
        size += len(atoms)
    return chunks + ([current] if current else [])


def predict(model: Potential, frames: Sequence[Atoms],
            atoms_per_call: int = ATOMS_PER_CALL) -> Predictions:
    """Energies, forces and stresses of ``model`` on ``frames`` (batched, in eval mode).

    The model runs on its own device and dtype; results come back as float64 numpy arrays.
    """
    tensors = [*model.parameters(), *model.buffers()]
    device = tensors[0].device if tensors else "cpu"
    energy = np.zeros(len(frames))
    stress = np.full((len(frames), 3, 3), np.nan)
    forces: list[np.ndarray] = [np.empty((0, 3))] * len(frames)
    for chunk in _chunks(frames, atoms_per_call):
        batch = [frames[k] for k in chunk]
        graph = AtomicGraph.from_ase(batch, cutoff=model.cutoff).to(device=device)
        periodic = [bool(np.all(a.pbc)) for a in batch]
        out = model(graph, compute_forces=True, compute_stress=any(periodic))
        e = out.energy.detach().double().cpu().numpy()
        f = out.forces.detach().double().cpu().numpy()
        s = (out.stress.detach().double().cpu().numpy() if out.stress is not None
             else np.full((len(batch), 3, 3), np.nan))
        start = 0
        for row, (k, atoms) in enumerate(zip(chunk, batch)):
            energy[k] = e[row]
            forces[k] = f[start:start + len(atoms)]
            if periodic[row]:
                stress[k] = s[row]
            start += len(atoms)
    return Predictions(energy=energy, forces=forces, stress=stress)


def write_labelled(store: Path, frames: Sequence[Atoms], labels: Predictions,
                   systems: Sequence[str], config_types: Sequence[str],
                   steps: Sequence[int] | None = None, metadata: dict | None = None) -> None:
    """Append ``frames`` with ``labels`` (energy, forces, stress where periodic) to ``store``.

    Args:
        store: snapshot store directory (created if needed).
        frames: the structures. labels: their labels, in the same order.
        systems: trajectory id of each frame (``system`` column). config_types: kind of each
            frame (``md_300K``, ``rattle``, ``strain``, ``active_1``, ...). steps: MD step.
    """
    builder = FrameBuilder()
    for k, atoms in enumerate(frames):
        stress = labels.stress[k] if np.all(np.isfinite(labels.stress[k])) else None
        builder.add(numbers=atoms.numbers, positions=atoms.positions,
                    cell=np.asarray(atoms.cell[:]), pbc=atoms.pbc, energy=labels.energy[k],
                    forces=labels.forces[k], stress=stress, where=f"frame {k} of {systems[k]}",
                    system=str(systems[k]), config_type=str(config_types[k]),
                    step=int(steps[k]) if steps is not None else 0)
    writer = StoreWriter(store, metadata=metadata)
    try:
        if len(builder):
            writer.append(builder.build())
        writer.commit()
    finally:
        writer.close()


def read_frames(store: Path, indices: Sequence[int] | np.ndarray | None = None
                ) -> tuple[list[Atoms], FrameBatch]:
    """Frames of ``store`` (all, or ``indices`` in that order) as ASE atoms and as columns."""
    from mlip.data import SnapshotStore

    reader = SnapshotStore(store)
    try:
        ids = np.arange(len(reader)) if indices is None else np.asarray(indices, dtype=np.int64)
        if len(ids) == 0:
            return [], FrameBatch(n_atoms=np.zeros(0, np.int64))
        batch = reader.read(ids)
        return batch.to_ase(), batch
    finally:
        reader.close()

