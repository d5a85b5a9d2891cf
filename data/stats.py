"""Dataset statistics (per-element E0, mean energy, force RMS, neighbour counts) and the model
statistics a training run derives from them: the one statistics module of mlip.

One pass over the chosen frames with exact, mergeable accumulators (integer counts and float64
sums; the least-squares E0 from the accumulated normal equations ``AᵀA``, ``Aᵀy`` where
``A[k, z]`` counts element ``z`` in frame ``k``), so the result does not depend on how the store
is sharded or batched, or whether the frames are streamed from a store
(:func:`compute_statistics`) or held in memory (:func:`frame_statistics`); both solve for E0
with :func:`solve_reference_energies`, the one least-squares E0 fit.

Model statistics (:class:`ModelStatistics`, conventions of MACE's ``rms_forces_scaling``):

* E0 (eV per element) from isolated-atom energies when given, else by least squares
  ``min_E0 Σ_k (E_k − Σ_z c_kz E0_z)²`` with ``c_kz`` the count of element z in frame k;
* shift (eV/atom) = mean over frames of the interaction energy per atom, (E_k − Σ_z c_kz E0_z)/N_k;
* scale (eV) = RMS of the force components (or the standard deviation of the per-atom
  interaction energy when no frame has forces);
* ``avg_num_neighbors`` = mean number of edges per atom at the model cutoff.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols

from mlip.data.edges import frame_edge_counts
from mlip.data.schema import LABEL_BITS
from mlip.data.store import SnapshotStore
from mlip.errors import ConfigError

__all__ = [
    "DataStatistics",
    "ModelStatistics",
    "compute_statistics",
    "frame_statistics",
    "composition",
    "isolated_atom_e0",
    "parse_e0",
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
        std_interaction_energy_per_atom: eV, standard deviation of (E - Σ E0)/N over frames.
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
    std_interaction_energy_per_atom: float = float("nan")
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
    ata: np.ndarray, aty: np.ndarray, elements: np.ndarray | list[int],
    prior: Mapping[int, float] | None = None,
) -> tuple[dict[int, float], int, list[int]]:
    """Least-squares per-element E0 from the normal equations, and what they cannot determine.

    Args:
        ata: (n, n) ``AᵀA`` with ``A[k, i]`` the count of ``elements[i]`` in frame k (frames
            with an energy only). aty: (n,) ``Aᵀy``, eV. elements: (n,) atomic numbers.
        prior: {Z: eV} E0 to stay closest to (fine-tuning: the model's old E0; missing: 0).
            The fit is then ``prior + δ`` with δ the minimum-norm least-squares fit of what the
            prior leaves, so directions the energies do not determine keep the prior.

    Returns:
        ({Z: eV} minimum-norm solution, numerical rank, sorted atomic numbers of the elements
        whose E0 lie (partly) in the null space of ``AᵀA``: their E0 cannot be separated from
        each other's by these energies, e.g. H and C on data of one molecule).
    """
    elements = [int(z) for z in elements]
    if not elements:
        return {}, 0, []
    base = np.array([float((prior or {}).get(z, 0.0)) for z in elements])
    aty = aty - ata @ base
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
    return {z: float(b + e) for z, b, e in zip(elements, base, solution)}, rank, undetermined


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
        comp = composition(n_atoms, numbers, range(_NZ))
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
    batches = lambda: store.iter_batches(  # noqa: E731
        batch_frames, idx, ("numbers", "energy", "label_mask"))
    stats = _finish(acc, reference_energies, batches)
    if cutoff is not None:
        stats.cutoff = float(cutoff)
        stats.avg_num_neighbors = average_neighbors(store, cutoff, indices=idx)
    return stats


def frame_statistics(
    n_atoms: np.ndarray,
    numbers: np.ndarray,
    energy: np.ndarray,
    forces: np.ndarray | None = None,
    *,
    n_edges: int | None = None,
    cutoff: float | None = None,
    reference_energies: Mapping[int, float] | None = None,
    prior: Mapping[int, float] | None = None,
) -> DataStatistics:
    """The statistics of :func:`compute_statistics` for frames held in memory.

    Args:
        n_atoms: (n_frames,) atoms per frame. numbers: (n_atoms_total,) atomic numbers.
        energy: (n_frames,) eV, NaN where a frame has no energy (the value fitted: a frame's
            energy, or a residual). forces: (n_atoms_total, 3) eV/Å, NaN where absent (None:
            no forces).
        n_edges: edges of the frames at ``cutoff`` Å (gives ``avg_num_neighbors``).
        reference_energies: {Z: eV} to use instead of fitting.
        prior: {Z: eV} E0 the least-squares fit stays closest to (see
            :func:`solve_reference_energies`).
    """
    n_atoms = np.asarray(n_atoms, dtype=np.int64)
    numbers = np.asarray(numbers, dtype=np.int64)
    energy = np.asarray(energy, dtype=np.float64)
    forces = (np.full((len(numbers), 3), np.nan) if forces is None
              else np.asarray(forces, dtype=np.float64).reshape(-1, 3))
    labelled_atoms = np.bincount(np.repeat(np.arange(len(n_atoms)), n_atoms),
                                 weights=np.isfinite(forces).all(axis=1), minlength=len(n_atoms))
    mask = np.where(np.isfinite(energy), LABEL_BITS["energy"], 0) | np.where(
        labelled_atoms == n_atoms, LABEL_BITS["forces"], 0)
    columns = _Columns(n_atoms, {"numbers": numbers},
                       {"energy": np.nan_to_num(energy), "label_mask": mask})
    acc = _Accumulator()
    acc.add(n_atoms, numbers, columns.frames["energy"], np.nan_to_num(forces), mask)
    stats = _finish(acc, reference_energies, lambda: [columns], prior)
    if n_edges is not None:
        stats.cutoff = None if cutoff is None else float(cutoff)
        stats.avg_num_neighbors = n_edges / float(n_atoms.sum()) if n_atoms.sum() else float("nan")
    return stats


@dataclass(frozen=True)
class _Columns:
    """The frame columns :func:`_interaction_moments` reads, for frames held in memory."""

    n_atoms: np.ndarray
    atoms: dict[str, np.ndarray]
    frames: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.n_atoms)


def composition(n_atoms: np.ndarray, numbers: np.ndarray, elements: Sequence[int]) -> np.ndarray:
    """(n_frames, len(elements)) count of each of ``elements`` in each frame."""
    column = np.full(_NZ, -1, dtype=np.int64)
    column[np.asarray(list(elements), dtype=np.int64)] = np.arange(len(elements))
    frame_of_atom = np.repeat(np.arange(len(n_atoms)), n_atoms)
    comp = np.zeros((len(n_atoms), len(elements)))
    np.add.at(comp, (frame_of_atom, column[np.asarray(numbers, dtype=np.int64)]), 1.0)
    return comp


def _finish(acc: _Accumulator, reference_energies: Mapping[int, float] | None, batches,
            prior: Mapping[int, float] | None = None) -> DataStatistics:
    """Statistics of the accumulated sums; ``batches()`` re-reads the frames for the
    interaction-energy pass (numbers, energy, label_mask)."""
    elements = np.nonzero(acc.counts)[0]
    stats = DataStatistics(n_frames=acc.n_frames, n_atoms=acc.n_atoms, elements=elements.tolist())
    if acc.n_force_components:
        stats.force_rms = float(np.sqrt(acc.sum_f2 / acc.n_force_components))
    if acc.n_energy:
        stats.mean_energy_per_atom = acc.sum_e_per_atom / acc.n_energy
        if reference_energies is None:
            reference_energies, stats.e0_rank, stats.e0_undetermined = solve_reference_energies(
                acc.ata[np.ix_(elements, elements)], acc.aty[elements], elements, prior
            )
        stats.reference_energies = {
            int(z): float(reference_energies[int(z)]) for z in elements if z in reference_energies
        }
        stats.mean_interaction_energy_per_atom, stats.std_interaction_energy_per_atom = (
            _interaction_moments(batches(), stats.reference_energies)
        )
    return stats


def _interaction_moments(batches, e0: dict[int, float]) -> tuple[float, float]:
    """Mean and standard deviation over frames with energy of (E − Σ E0)/N, eV."""
    table = np.zeros(_NZ)
    for z, e in e0.items():
        table[z] = e
    total, squares, count = 0.0, 0.0, 0
    for b in batches:
        has_e = (b.frames["label_mask"] & LABEL_BITS["energy"]) > 0
        ref = np.bincount(
            np.repeat(np.arange(len(b)), b.n_atoms),
            weights=table[b.atoms["numbers"]],
            minlength=len(b),
        )
        per_atom = (b.frames["energy"] - ref)[has_e] / b.n_atoms[has_e]
        total += float(per_atom.sum())
        squares += float((per_atom**2).sum())
        count += int(has_e.sum())
    if not count:
        return float("nan"), float("nan")
    mean = total / count
    return mean, float(np.sqrt(max(squares / count - mean**2, 0.0)))


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


@dataclass
class ModelStatistics:
    """What a training run sets the model's energy reference with (saved in checkpoints).

    Attributes:
        e0: {Z: eV} per-element reference energies.
        scale: eV, model output scale.
        shift: eV/atom, mean interaction energy per atom.
        avg_num_neighbors: mean edges per atom at the cutoff.
        e0_method: how E0 was obtained.
    """

    e0: dict[int, float]
    scale: float
    shift: float
    avg_num_neighbors: float
    e0_method: str

    @classmethod
    def from_data(cls, data: DataStatistics, e0: Mapping[int, float], species: Sequence[int],
                  e0_method: str) -> ModelStatistics:
        """Scale and shift of ``data`` (computed with ``e0`` as its reference energies); ``e0``
        kept for ``species``.

        Raises:
            ConfigError: an element of the data without an E0.
        """
        missing = [z for z in data.elements if z not in e0]
        if missing:
            raise ConfigError(
                f"no E0 for element(s) {[chemical_symbols[z] for z in missing]} "
                f"({e0_method}); give them in data.e0 or data.isolated_atoms"
            )
        scale = next((float(v) for v in (data.force_rms, data.std_interaction_energy_per_atom)
                      if np.isfinite(v) and v > 0), 1.0)
        shift = data.mean_interaction_energy_per_atom
        return cls(e0={int(z): float(e0[z]) for z in species if z in e0}, scale=scale,
                   shift=float(shift) if np.isfinite(shift) else 0.0,
                   avg_num_neighbors=float(data.avg_num_neighbors), e0_method=e0_method)

    @classmethod
    def from_dict(cls, saved: Mapping) -> ModelStatistics:
        """The inverse of :meth:`as_dict` (element keys may have become strings)."""
        return cls(**{**saved, "e0": {int(z): float(e) for z, e in saved["e0"].items()}})

    def as_dict(self) -> dict:
        """Plain-Python form (for checkpoints and JSON)."""
        out = asdict(self)
        out["e0"] = {int(z): float(v) for z, v in self.e0.items()}
        return out


def isolated_atom_e0(frames: Sequence[Atoms], source: str) -> dict[int, float]:
    """E0 (eV) from one-atom frames with energies.

    Raises:
        ConfigError: a frame with more than one atom or without an energy.
    """
    e0 = {}
    for k, atoms in enumerate(frames):
        if len(atoms) != 1:
            raise ConfigError(
                f"{source}: frame {k} has {len(atoms)} atoms; isolated-atom files hold "
                "one-atom frames"
            )
        try:
            e0[int(atoms.numbers[0])] = float(atoms.get_potential_energy())
        except Exception:
            raise ConfigError(
                f"{source}: frame {k} ({atoms.get_chemical_formula()}) has no energy"
            ) from None
    return e0


def parse_e0(mapping: Mapping) -> dict[int, float]:
    """Turn ``{"H": -13.6, 8: -2040.0}`` into ``{1: -13.6, 8: -2040.0}``.

    Raises:
        ConfigError: an unknown element symbol.
    """
    out = {}
    for key, value in mapping.items():
        if isinstance(key, str) and not key.isdigit():
            if key not in atomic_numbers:
                raise ConfigError(f"data.e0: unknown element {key!r}")
            out[atomic_numbers[key]] = float(value)
        else:
            out[int(key)] = float(value)
    return out
