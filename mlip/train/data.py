"""Training data: read frames, split them by system, and batch them (seeded, sharded by rank).

Frames are held as one-structure :class:`LabelledBatch` pairs (graph with its neighbour list
built once, at the model cutoff, and its targets) and collated into batches on the fly. Sources
are ASE-readable files (extxyz, traj, ...) or mlip snapshot stores (``.h5``, read through
:mod:`mlip.data`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import ase.io
import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from mlip.data.importers.atoms import SYSTEM_KEYS, FrameFields, LabelKeys, find_labels
from mlip.data.stats import DataStatistics, frame_statistics
from mlip.errors import ConfigError
from mlip.graph import AtomicGraph
from mlip.targets import LabelledBatch, Targets
from mlip.train.config import DataConfig

__all__ = [
    "FrameSet",
    "read_frames",
    "group_by_info_key",
    "frames_without_group",
    "label_keys",
    "resolve_path",
    "load_frameset",
    "split_frameset",
    "Batcher",
    "BUNDLED_PREFIX",
    "is_store",
    "read_store",
]

#: Prefix of data paths that name files shipped with mlip (e.g. ``bundled:3bpa_train_300K.xyz``).
BUNDLED_PREFIX = "bundled:"


@dataclass
class FrameSet:
    """A list of one-structure labelled graphs with the system each belongs to.

    A training split is batched (:meth:`with_batches`) and then read through the interface of a
    streamed :class:`mlip.train.stream.StoreSplit` (:meth:`n_batches`, :meth:`batches`).

    Attributes:
        items: one :class:`LabelledBatch` (graph and targets) per frame.
        system_ids: one id per frame; splits never separate frames of one system.
        source: where the frames came from (for messages).
        batcher: how training groups, shuffles and shards the frames (None: not batched).
    """

    items: list[LabelledBatch]
    system_ids: list[str]
    source: str
    batcher: Batcher | None = None

    def __len__(self) -> int:
        return len(self.items)

    def subset(self, indices: Sequence[int], source: str | None = None) -> FrameSet:
        """The frames at ``indices``, in that order."""
        return FrameSet(
            [self.items[i] for i in indices],
            [self.system_ids[i] for i in indices],
            source or self.source,
        )

    def has_label(self, name: str) -> bool:
        """Whether any frame carries a finite ``energy``, ``forces`` or ``stress`` label."""
        return any(bool(torch.isfinite(getattr(b.targets, name)).any()) for b in self.items)

    def elements(self) -> list[int]:
        """Sorted atomic numbers present."""
        return sorted(self.element_frames())

    def element_frames(self) -> dict[int, int]:
        """{Z: number of frames containing element Z}."""
        counts: dict[int, int] = {}
        for b in self.items:
            for z in b.graph.atomic_numbers.unique().tolist():
                counts[int(z)] = counts.get(int(z), 0) + 1
        return counts

    def statistics(self, reference_energies: Mapping[int, float] | None = None
                   ) -> DataStatistics:
        """:class:`mlip.data.DataStatistics` of the frames at their cutoff (E0 fitted by least
        squares unless ``reference_energies`` {Z: eV} are given), as
        :meth:`StoreSplit.statistics` gives them for a streamed split."""
        graphs = [b.graph for b in self.items]
        return frame_statistics(
            np.array([g.positions.shape[0] for g in graphs]),
            torch.cat([g.atomic_numbers for g in graphs]).numpy(),
            np.array([float(b.targets.energy[0]) for b in self.items]),
            torch.cat([b.targets.forces for b in self.items]).to(torch.float64).numpy(),
            n_edges=sum(g.n_edges for g in graphs), cutoff=graphs[0].cutoff,
            reference_energies=reference_energies,
        )

    def with_batches(self, batch_size: int, max_atoms_per_batch: int | None, seed: int
                     ) -> FrameSet:
        """These frames batched for training by a seeded, shuffling :class:`Batcher`."""
        sizes = [b.graph.positions.shape[0] for b in self.items]
        return dataclasses.replace(
            self, batcher=Batcher(sizes, batch_size, max_atoms_per_batch, shuffle=True, seed=seed)
        )

    def n_batches(self, epoch: int, rank: int = 0, world_size: int = 1) -> int:
        """Batches this rank trains on in ``epoch``."""
        return len(self._batcher().local_batches(epoch, rank, world_size))

    def batches(self, epoch: int, rank: int = 0, world_size: int = 1, start: int = 0
                ) -> Iterator[tuple[int, list[str], LabelledBatch]]:
        """Yield ``(batch number, frame names, batch)`` of this rank from batch ``start`` on."""
        local = self._batcher().local_batches(epoch, rank, world_size)
        for number in range(start, len(local)):
            indices = local[number]
            yield number, [self.system_ids[i] for i in indices], self.batch(indices)

    def _batcher(self) -> Batcher:
        if self.batcher is None:
            raise ValueError(f"{self.source} is not batched for training (see with_batches)")
        return self.batcher

    def batch(self, indices: Sequence[int]) -> LabelledBatch:
        """The frames at ``indices`` collated into one batch, in that order."""
        return LabelledBatch.collate([self.items[i] for i in indices])

    def eval_graphs(self, batch_size: int, rank: int = 0, world_size: int = 1
                    ) -> Iterator[LabelledBatch]:
        """Frames ``rank, rank + world_size, ...`` in batches of ``batch_size`` (for evaluation)."""
        mine = list(range(rank, len(self), world_size))
        for k in range(0, len(mine), batch_size):
            yield self.batch(mine[k:k + batch_size])


def read_frames(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    max_frames: int | None = None,
    keys: LabelKeys | None = None,
) -> list[Atoms]:
    """Read every frame of ASE-readable files or mlip stores (see :func:`resolve_path`).

    Labels of files are found as ``mlip data import`` finds them (:func:`find_labels`: the names
    in ``keys``, else ``energy``/``REF_energy``/``dft_energy``/..., ``forces``/``REF_forces``/...,
    ``stress``/``REF_stress``/... or a virial) and attached as the frames' calculator results.

    Raises:
        ConfigError: a path that does not exist, cannot be read or holds no frames.
    """
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    frames: list[Atoms] = []
    for path in map(resolve_path, paths):
        if not path.exists():
            raise ConfigError(f"data file {path} does not exist")
        read = read_store(path)["all"] if is_store(path) else _read_file(path, keys or LabelKeys())
        if not read:
            raise ConfigError(f"data file {path} holds no frames")
        _name_systems(read, path)
        frames.extend(read)
        if max_frames is not None and len(frames) >= max_frames:
            return frames[:max_frames]
    return frames


def _read_file(path: Path, keys: LabelKeys) -> list[Atoms]:
    """Every frame of an ASE-readable file, with its labels as calculator results.

    Raises:
        ConfigError: one line naming the file and what ASE could not parse.
        InvalidStructureError: a label of the wrong shape (naming the file and frame).
    """
    try:
        frames = ase.io.read(path, index=":")
    except Exception as exc:  # ASE raises anything from ValueError to StopIteration on garbage
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ConfigError(
            f"cannot read data file {path} ({type(exc).__name__}: {reason[:200]}); give an "
            "ASE-readable file (extxyz, traj, ...) or an mlip store"
        ) from None
    for k, atoms in enumerate(frames):
        found = find_labels(FrameFields.from_atoms(atoms), keys, f"{path} frame {k}")
        labels = dict(zip(("energy", "forces", "stress"), found))
        atoms.calc = SinglePointCalculator(
            atoms, **{name: value for name, value in labels.items() if value is not None}
        )
    return frames


def label_keys(data: DataConfig) -> LabelKeys:
    """The label names of the ``data`` config section (``energy_key``, ``forces_key``,
    ``stress_key``; None: auto-detect)."""
    return LabelKeys(energy=data.energy_key, forces=data.forces_key, stress=data.stress_key)


def resolve_path(path: str | os.PathLike) -> Path:
    """A data path; ``bundled:NAME`` names a file shipped in :mod:`mlip.data.bundled`."""
    text = str(path)
    if text.startswith(BUNDLED_PREFIX):
        return Path(str(resources.files("mlip.data.bundled").joinpath(text[len(BUNDLED_PREFIX) :])))
    return Path(path)


def is_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an mlip snapshot store (a directory with a ``manifest.json``)."""
    return Path(path).is_dir() and (Path(path) / "manifest.json").is_file()


def read_store(path: str | os.PathLike, max_frames: int | None = None) -> dict[str, list[Atoms]]:
    """Frames of a snapshot store as ``ase.Atoms``: ``{"all": [...]}``, plus ``train``, ``val``
    and ``test`` when the store has a split (``mlip data split``)."""
    from mlip.data import SnapshotStore

    path = resolve_path(path)
    store = SnapshotStore(path)
    try:
        indices = {"all": store.split_indices(None)}
        if store.split_codes() is not None:
            indices.update({name: store.split_indices(name) for name in ("train", "val", "test")})
        out = {}
        for name, idx in indices.items():
            idx = idx[:max_frames] if max_frames is not None else idx
            out[name] = store.to_ase(idx) if len(idx) else []
            _name_systems(out[name], path)
        return out
    finally:
        store.close()


def group_by_info_key(frames: Sequence[Atoms], key: str, source: str) -> None:
    """Set every frame's split group (``info["split_group"]``) to ``str(atoms.info[key])``.

    Raises:
        ConfigError: frames without ``key`` (naming how many and the first one).
    """
    missing = [k for k, atoms in enumerate(frames) if key not in atoms.info]
    if missing:
        raise ConfigError(
            f"data.split_key = {key!r}: {len(missing)} of {len(frames)} frames of {source} have "
            f"no info[{key!r}] (first: frame {missing[0]})"
        )
    for atoms in frames:
        atoms.info["split_group"] = str(atoms.info[key])


def frames_without_group(frames: Sequence[Atoms]) -> int:
    """How many frames fell back to being their own split group (no trajectory key)."""
    return sum(1 for atoms in frames if not any(key in atoms.info for key in SYSTEM_KEYS))


def _name_systems(frames: list[Atoms], path: Path) -> None:
    """Give every frame its split group ``info["split_group"]``: the first of the importer's
    ``SYSTEM_KEYS`` in its info (``system_id``, ``system`` (stores), ``sid``, ``trajectory``,
    ``traj_id``, ``mol_id``, ...), else ``FILE:index`` (the frame is its own group)."""
    for k, atoms in enumerate(frames):
        found = next((atoms.info[key] for key in SYSTEM_KEYS if key in atoms.info), None)
        atoms.info["split_group"] = str(found) if found is not None else f"{path.name}:{k}"


def load_frameset(
    frames: Sequence[Atoms],
    cutoff: float,
    source: str,
    config_type_weights: Mapping[str, float] | None = None,
) -> FrameSet:
    """One graph per frame (float64); loss weight = ``config_type`` weight × ``info["weight"]``.

    Raises:
        ConfigError: a ``config_type_weights`` key that no frame has.
    """
    weights = dict(config_type_weights or {})
    present = {str(a.info.get("config_type", "Default")) for a in frames}
    missing = sorted(set(weights) - present)
    if missing:
        raise ConfigError(
            f"data.config_type_weights names config types {missing} that no frame of "
            f"{source} has (present: {sorted(present)})"
        )
    items = []
    for atoms in frames:
        weight = float(weights.get(str(atoms.info.get("config_type", "Default")), 1.0))
        weight *= float(atoms.info.get("weight", 1.0))
        targets = Targets.from_ase(atoms).with_weight(torch.full((1,), weight, dtype=torch.float64))
        items.append(LabelledBatch(AtomicGraph.from_ase(atoms, cutoff), targets))
    return FrameSet(items, [str(a.info["split_group"]) for a in frames], source)


def split_frameset(frames: FrameSet, fractions: Sequence[float], seed: int) -> list[FrameSet]:
    """Split by system id into parts of the given fractions (the remainder goes to the first).

    Systems are shuffled with ``seed``; every frame of a system lands in the same part.
    """
    systems = sorted(set(frames.system_ids))
    order = np.random.default_rng(seed).permutation(len(systems))
    counts = [int(round(f * len(systems))) for f in fractions[1:]]
    counts = [len(systems) - sum(counts)] + counts
    assignment: dict[str, int] = {}
    start = 0
    for part, count in enumerate(counts):
        for k in order[start : start + count]:
            assignment[systems[k]] = part
        start += count
    parts = []
    for part in range(len(fractions)):
        indices = [i for i, s in enumerate(frames.system_ids) if assignment[s] == part]
        parts.append(frames.subset(indices))
    return parts


class Batcher:
    """Deterministic batches of frame indices, shuffled per epoch, sharded across ranks.

    A global batch holds ``batch_size`` frames, or as many frames as fit in
    ``max_atoms_per_batch`` atoms when that is set; rank ``r`` of ``world_size`` takes frames
    ``r, r + world_size, ...`` of each global batch, so K processes see the same global batches
    as one. Global batches smaller than ``world_size`` are dropped (only then).

    Args:
        n_atoms: (n_frames,) atoms per frame.
        batch_size: frames per global batch.
        max_atoms_per_batch: atom budget per global batch, or None.
        shuffle: reshuffle every epoch (seeded by ``seed`` and the epoch number).
        seed: shuffling seed.
    """

    def __init__(
        self,
        n_atoms: Sequence[int],
        batch_size: int,
        max_atoms_per_batch: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"data.batch_size must be >= 1, got {batch_size}")
        if max_atoms_per_batch is not None and max_atoms_per_batch < max(n_atoms, default=0):
            raise ConfigError(
                f"data.max_atoms_per_batch = {max_atoms_per_batch} is smaller than the "
                f"largest frame ({max(n_atoms)} atoms)"
            )
        self.n_atoms = list(n_atoms)
        self.batch_size = batch_size
        self.max_atoms = max_atoms_per_batch
        self.shuffle = shuffle
        self.seed = seed

    def global_batches(self, epoch: int) -> list[list[int]]:
        """The global batches of ``epoch`` as lists of frame indices."""
        order = list(range(len(self.n_atoms)))
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            order = torch.randperm(len(order), generator=generator).tolist()
        batches, current, atoms = [], [], 0
        for index in order:
            full = (
                len(current) >= self.batch_size
                if self.max_atoms is None
                else atoms + self.n_atoms[index] > self.max_atoms
            )
            if current and full:
                batches.append(current)
                current, atoms = [], 0
            current.append(index)
            atoms += self.n_atoms[index]
        if current:
            batches.append(current)
        return batches

    def local_batches(self, epoch: int, rank: int = 0, world_size: int = 1) -> list[list[int]]:
        """This rank's share of each global batch of ``epoch``."""
        return [b[rank::world_size] for b in self.global_batches(epoch) if len(b) >= world_size]
