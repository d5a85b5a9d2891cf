"""Streaming dataset statistics: per-element E0, mean energy, force RMS, neighbour counts.

One pass over the chosen frames with exact, mergeable accumulators (integer counts and float64
sums; the least-squares E0 from the accumulated normal equations ``AᵀA``, ``Aᵀy`` where
``A[k, z]`` counts element ``z`` in frame ``k``), so the result does not depend on how the store
is sharded or batched.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from ase.data import chemical_symbols

from mlip.data.edges import frame_edge_counts
from mlip.data.schema import LABEL_BITS
from mlip.data.store import SnapshotStore
from mlip.errors import ConfigError

__all__ = [
    "DataStatistics",
    "compute_statistics",
    "fit_reference_energies",
    "solve_reference_energies",
    "require_separable_e0",
    "average_neighbors",
    "force_rms",
]

_NZ = len(chemical_symbols)


@dataclass
class DataStatistics:
    """Statistics of a set of frames (JSON-friendly via :meth:`as_dict`).

    Attributes:
        n_frames, n_atoms: counted frames and atoms.
        elements: atomic numbers present, sorted.
        reference_energies: {Z: eV} least-squares per-element E0 (or the given ones).
        e0_rank: rank of the normal equations (< len(elements) means E0 is not unique; the
            minimum-norm solution is returned).
        e0_undetermined: elements whose least-squares E0 the energies do not determine (see
            :func:`solve_reference_energies`); empty when E0 were given or well determined.
        mean_energy_per_atom: eV, mean of E/N over frames with energy.
        mean_interaction_energy_per_atom: eV, mean of (E - Σ E0)/N.
        force_rms: eV/Å, root mean square of force components.
        avg_num_neighbors: mean neighbours per atom at ``cutoff`` Å (None if not computed).
    """

    n_frames: int = 0
    n_atoms: int = 0
    elements: list[int] = field(default_factory=list)
    reference_energies: dict[int, float] = field(default_factory=dict)
    e0_rank: int = 0
    e0_undetermined: list[int] = field(default_factory=list)
    mean_energy_per_atom: float = float("nan")
    mean_interaction_energy_per_atom: float = float("nan")
    force_rms: float = float("nan")
    avg_num_neighbors: float | None = None
    cutoff: float | None = None

    def as_dict(self) -> dict:
        """Plain JSON types (element keys as symbols)."""
        out = dict(self.__dict__)
        out["reference_energies"] = {
            chemical_symbols[z]: e for z, e in self.reference_energies.items()
        }
        out["elements"] = [chemical_symbols[z] for z in self.elements]
        out["e0_undetermined"] = [chemical_symbols[z] for z in self.e0_undetermined]
        return out


#: Eigenvalues of the normal matrix AᵀA below this fraction of the largest count as zero:
#: condition numbers of A above ~3e4 (E0 then moves by eV for meV changes of the energies).
E0_RELATIVE_TOLERANCE = 1e-9


def solve_reference_energies(
    ata: np.ndarray, aty: np.ndarray, elements: np.ndarray | list[int]
) -> tuple[dict[int, float], int, list[int]]:
    """Least-squares per-element E0 from the normal equations, and what they cannot determine.

    Args:
        ata: (n, n) ``AᵀA`` with ``A[k, i]`` the count of ``elements[i]`` in frame k (frames
            with an energy only). aty: (n,) ``Aᵀy``, eV. elements: (n,) atomic numbers.

    Returns:
        ({Z: eV} minimum-norm solution, numerical rank, sorted atomic numbers of the elements
        whose E0 lie (partly) in the null space of ``AᵀA``: their E0 cannot be separated from
        each other's by these energies, e.g. H and C on data of one molecule).
    """
    elements = [int(z) for z in elements]
    if not elements:
        return {}, 0, []
    values, vectors = np.linalg.eigh(ata)
    tolerance = max(float(values.max()), 0.0) * E0_RELATIVE_TOLERANCE
    null = vectors[:, values <= tolerance]
    rank = len(elements) - null.shape[1]
    solution = vectors[:, values > tolerance] @ (
        (vectors[:, values > tolerance].T @ aty) / values[values > tolerance]
    )
    undetermined = sorted(
        z for z, weight in zip(elements, (null**2).sum(axis=1)) if weight > 1e-12
    )
    return {z: float(e) for z, e in zip(elements, solution)}, rank, undetermined


def require_separable_e0(undetermined: list[int], n_frames: int, source: str) -> None:
    """Refuse a least-squares E0 fit that the energies do not determine.

    Args:
        undetermined: the third result of :func:`solve_reference_energies`.
        n_frames: frames of the data. source: the data (for the message).

    Raises:
        ConfigError: naming the elements and pointing to ``data.isolated_atoms``/``data.e0``.
    """
    if not undetermined:
        return
    names = [chemical_symbols[z] for z in undetermined]
    example = ", ".join(f"{n}: ..." for n in names)
    raise ConfigError(
        f"cannot fit E0 by least squares on {source}: the element counts of its {n_frames} "
        f"frame(s) with energies do not separate the E0 of {', '.join(names)} (they occur in "
        "fixed ratios, or too few distinct compositions); give isolated-atom energies in "
        f"data.isolated_atoms (a file of one-atom frames) or explicit data.e0 ({{{example}}})"
    )


class _Accumulator:
    """Exact streaming sums over frames."""

    def __init__(self) -> None:
        self.ata = np.zeros((_NZ, _NZ))
        self.aty = np.zeros(_NZ)
        self.counts = np.zeros(_NZ, dtype=np.int64)
        self.n_frames = self.n_atoms = self.n_energy = self.n_force_components = 0
        self.sum_e_per_atom = self.sum_f2 = 0.0
        self.energy_frames: list[tuple[np.ndarray, float]] = []

    def add(
        self,
        n_atoms: np.ndarray,
        numbers: np.ndarray,
        energy: np.ndarray,
        forces: np.ndarray,
        mask: np.ndarray,
    ) -> np.ndarray:
        """Add one batch; returns its composition matrix (n_frames, 119) for the E0 pass."""
        frame_of_atom = np.repeat(np.arange(len(n_atoms)), n_atoms)
        comp = np.zeros((len(n_atoms), _NZ))
        np.add.at(comp, (frame_of_atom, numbers.astype(np.int64)), 1.0)
        self.counts += comp.sum(0).astype(np.int64)
        self.n_frames += len(n_atoms)
        self.n_atoms += int(n_atoms.sum())
        has_e = (mask & LABEL_BITS["energy"]) > 0
        self.ata += comp[has_e].T @ comp[has_e]
        self.aty += comp[has_e].T @ energy[has_e]
        self.n_energy += int(has_e.sum())
        self.sum_e_per_atom += float((energy[has_e] / n_atoms[has_e]).sum())
        has_f = np.repeat((mask & LABEL_BITS["forces"]) > 0, n_atoms)
        self.sum_f2 += float((forces[has_f] ** 2).sum())
        self.n_force_components += 3 * int(has_f.sum())
        return comp


def _indices(
    store: SnapshotStore, split: str | None, indices: np.ndarray | None
) -> np.ndarray | None:
    if indices is not None:
        return np.sort(np.asarray(indices, dtype=np.int64))
    return None if split is None else store.split_indices(split)


def fit_reference_energies(
    store: SnapshotStore, split: str | None = None, indices: np.ndarray | None = None
) -> dict[int, float]:
    """Least-squares per-element reference energies {Z: eV} over the chosen frames."""
    return compute_statistics(store, split, indices=indices).reference_energies


def force_rms(
    store: SnapshotStore, split: str | None = None, indices: np.ndarray | None = None
) -> float:
    """Root mean square of force components, eV/Å."""
    return compute_statistics(store, split, indices=indices).force_rms


def compute_statistics(
    store: SnapshotStore,
    split: str | None = None,
    *,
    indices: np.ndarray | None = None,
    cutoff: float | None = None,
    reference_energies: dict[int, float] | None = None,
    batch_frames: int = 8192,
) -> DataStatistics:
    """All statistics in one streaming pass (two when E0 must be fitted).

    Args:
        store: the store. split: ``train``/``val``/``test`` or None for all frames.
        indices: explicit global frame indices instead of ``split``.
        cutoff: Å; when given, also the average neighbour count.
        reference_energies: {Z: eV} to use instead of fitting (e.g. isolated-atom energies).
        batch_frames: frames per read.
    """
    idx = _indices(store, split, indices)
    cols = ("numbers", "energy", "forces", "label_mask")
    acc = _Accumulator()
    for b in store.iter_batches(batch_frames, idx, cols):
        acc.add(
            b.n_atoms,
            b.atoms["numbers"],
            b.frames["energy"],
            b.atoms["forces"],
            b.frames["label_mask"],
        )
    elements = np.nonzero(acc.counts)[0]
    stats = DataStatistics(n_frames=acc.n_frames, n_atoms=acc.n_atoms, elements=elements.tolist())
    if acc.n_force_components:
        stats.force_rms = float(np.sqrt(acc.sum_f2 / acc.n_force_components))
    if acc.n_energy:
        stats.mean_energy_per_atom = acc.sum_e_per_atom / acc.n_energy
        if reference_energies is None:
            reference_energies, stats.e0_rank, stats.e0_undetermined = solve_reference_energies(
                acc.ata[np.ix_(elements, elements)], acc.aty[elements], elements
            )
        stats.reference_energies = {int(z): float(reference_energies[int(z)]) for z in elements}
        stats.mean_interaction_energy_per_atom = _interaction_mean(
            store, idx, stats.reference_energies, batch_frames
        )
    if cutoff is not None:
        stats.cutoff = float(cutoff)
        stats.avg_num_neighbors = average_neighbors(store, cutoff, indices=idx)
    return stats


def _interaction_mean(
    store: SnapshotStore, idx: np.ndarray | None, e0: dict[int, float], batch_frames: int
) -> float:
    table = np.zeros(_NZ)
    for z, e in e0.items():
        table[z] = e
    total, count = 0.0, 0
    for b in store.iter_batches(batch_frames, idx, ("numbers", "energy", "label_mask")):
        has_e = (b.frames["label_mask"] & LABEL_BITS["energy"]) > 0
        ref = np.bincount(
            np.repeat(np.arange(len(b)), b.n_atoms),
            weights=table[b.atoms["numbers"]],
            minlength=len(b),
        )
        total += float(((b.frames["energy"] - ref)[has_e] / b.n_atoms[has_e]).sum())
        count += int(has_e.sum())
    return total / count if count else float("nan")


def average_neighbors(
    store: SnapshotStore,
    cutoff: float,
    split: str | None = None,
    *,
    indices: np.ndarray | None = None,
    batch_frames: int = 256,
) -> float:
    """Mean number of neighbours per atom within ``cutoff`` Å (mlip.neighbors.neighbor_list)."""
    idx = _indices(store, split, indices)
    edges = atoms = 0
    for b in store.iter_batches(batch_frames, idx, ("numbers", "positions", "cell", "pbc")):
        edges += int(frame_edge_counts(b, cutoff).sum())
        atoms += int(b.n_atoms.sum())
    return edges / atoms if atoms else float("nan")
