"""Training data: every source becomes a snapshot store split, read through one loader.

A split store given as ``data.train`` is read as it is (its own split, batch by batch). Any other
source -- ASE-readable files (extxyz, ASE db, traj, ...), a store without a split, or a store
whose split the config overrides (``data.valid``, ``data.max_frames``) -- is imported by
:mod:`mlip.data`'s importers (the code ``mlip data import`` runs: same label keys, same system
ids) into a private temporary store that lives as long as its splits (in memory, ``/dev/shm``,
when the sources are small; else in the system's temporary folder), and split there by system id
with ``data.split_seed`` (the sorted system ids permuted, the rounded valid/test fractions of the
systems held out). Every split is then a :class:`StoreSplit`: each epoch
:class:`mlip.data.BlockBatchSampler` permutes store blocks (seeded by seed and epoch), packs the
frames of each window into batches of at most ``data.max_atoms_per_batch`` atoms and
``data.batch_size`` frames, and deals the batches to the ranks in turn; DataLoader workers
(``data.num_workers``) read and build neighbour lists. The sequence is a pure function of (seed,
epoch, rank, world size), so ``--resume`` restarts at the exact batch. Statistics come from one
streaming pass (:func:`mlip.data.compute_statistics`). ``data.config_type_weights`` multiply
the stored frame weights (``atoms.info["weight"]``) by the frames' stored ``config_type``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch
from ase import Atoms

from mlip.data.importers.atoms import LabelKeys
from mlip.data.schema import SPLIT_CODES
from mlip.errors import ConfigError, MLIPError
from mlip.targets import LabelledBatch
from mlip.train.config import DataConfig

__all__ = [
    "StoreSplit",
    "TemporaryStore",
    "source_store",
    "source_split",
    "train_splits",
    "read_atoms",
    "label_keys",
    "resolve_path",
    "is_store",
    "BUNDLED_PREFIX",
]

log = logging.getLogger(__name__)

#: Prefix of data paths that name files shipped with mlip (e.g. ``bundled:3bpa_train_300K.xyz``).
BUNDLED_PREFIX = "bundled:"

#: Atom budget of a batch when ``data.max_atoms_per_batch`` is unset: 4096 for a streamed store
#: (``data.streaming``), else none (batches of ``data.batch_size`` frames).
STREAMING_MAX_ATOMS = 4096
NO_ATOM_BUDGET = 1 << 62
#: Sources of at most this many bytes are imported into a store in memory (``MEMORY_FOLDER``).
MEMORY_BYTES = 256 << 20
MEMORY_FOLDER = "/dev/shm"


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


def _paths(sources: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    items = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    return [resolve_path(p) for p in items]


class TemporaryStore:
    """A private store directory, removed when the last split reading it is garbage collected.

    Args:
        sources: store directories (frames copied) and files (imported as by
            ``mlip data import``, every frame of a file without a system id its own system).
        keys: label names of the files; ``keys.system`` is the info key naming a frame's system.
        label: how messages name the sources.
        select: {store path: sorted global indices} of the frames to copy (default: all).
        max_frames: stop reading sources once this many frames are in (files are read whole).

    Raises:
        ConfigError: a source that does not exist, cannot be read or holds no frames.
    """

    def __init__(self, sources: str | os.PathLike | Sequence[str | os.PathLike],
                 keys: LabelKeys = LabelKeys(), label: str | None = None,
                 select: Mapping[Path, np.ndarray] | None = None,
                 max_frames: int | None = None) -> None:
        from mlip.data.importers.pipeline import import_files
        from mlip.data.writer import StoreWriter

        self._dir = tempfile.TemporaryDirectory(prefix="mlip-source-",
                                                dir=_memory_folder(_paths(sources)))
        self.root = Path(self._dir.name) / "store.h5"
        self.source = label or ",".join(str(p) for p in _paths(sources))
        for path in _paths(sources):
            if max_frames is not None and self._frames() >= max_frames:
                break
            if not path.exists():
                raise ConfigError(f"data file {path} does not exist")
            before = self._frames()
            if is_store(path):
                self._copy(path, StoreWriter, (select or {}).get(path))
            else:
                try:
                    import_files([path], self.root, fmt=_format(path), keys=keys,
                                 compression="none")
                except MLIPError:
                    raise
                except Exception as exc:  # readers raise anything from ValueError to StopIteration
                    reason = " ".join(str(exc).split()) or type(exc).__name__
                    raise ConfigError(
                        f"cannot read data file {path} ({type(exc).__name__}: {reason[:200]}); "
                        "give an ASE-readable file (extxyz, traj, ...) or an mlip store"
                    ) from None
            if self._frames() == before:
                raise ConfigError(f"data file {path} holds no frames")

    def _frames(self) -> int:
        from mlip.data import SnapshotStore

        return len(SnapshotStore(self.root)) if is_store(self.root) else 0

    def _copy(self, path: Path, writer_type, indices: np.ndarray | None) -> None:
        from mlip.data import SnapshotStore

        store = SnapshotStore(path)
        try:
            with writer_type(self.root, metadata=store.metadata, compression="none") as writer:
                for batch in store.iter_batches(indices=indices):
                    writer.append(batch)
        finally:
            store.close()

    def store(self):
        """A :class:`mlip.data.SnapshotStore` reader of this store."""
        from mlip.data import SnapshotStore

        return SnapshotStore(self.root)

    def write_split(self, codes: np.ndarray, by: str) -> None:
        """Record ``codes`` (one ``SPLIT_CODES`` value per frame) as the store's split."""
        from mlip.data.splits import write_split

        write_split(self.root, codes, by=by)


def _bytes(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


def _memory_folder(paths: list[Path]) -> str | None:
    """``/dev/shm`` (memory) when the sources are small (:data:`MEMORY_BYTES`) and it has room
    for them four times over, else None (the system's temporary folder, on disk)."""
    shm = Path(MEMORY_FOLDER)
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        return None
    size = sum(_bytes(p) for p in paths)
    return str(shm) if size <= MEMORY_BYTES and 4 * size < shutil.disk_usage(shm).free else None


def _format(path: Path) -> str:
    """The importer format of a file: by its name, else any format ASE reads (``ase``)."""
    from mlip.data.importers.pipeline import detect_format

    try:
        return detect_format(path)
    except ConfigError:
        return "ase"


def read_atoms(sources: str | os.PathLike | Sequence[str | os.PathLike],
               keys: LabelKeys = LabelKeys()) -> list[Atoms]:
    """Every frame of the sources as ``ase.Atoms`` with their labels as calculator results, read
    through the importers as training reads them (e.g. ``data.isolated_atoms``)."""
    temporary = TemporaryStore(sources, keys)
    store = temporary.store()
    try:
        return store.to_ase()
    finally:
        store.close()


def _split_codes(systems: np.ndarray, fractions: Sequence[float], seed: int) -> np.ndarray:
    """Split codes (train, val, test) of frames by their system ids: the sorted unique systems
    are permuted with ``seed`` and ``round(fraction × n_systems)`` go to val and test, the
    remainder to train; every frame of a system lands in the same split."""
    unique, inverse = np.unique(systems, return_inverse=True)
    order = np.random.default_rng(seed).permutation(len(unique))
    counts = [int(round(f * len(unique))) for f in fractions[1:]]
    counts = [len(unique) - sum(counts)] + counts
    per_system = np.empty(len(unique), dtype=np.uint8)
    start = 0
    for name, count in zip(("train", "val", "test"), counts):
        per_system[order[start : start + count]] = SPLIT_CODES[name]
        start += count
    return per_system[inverse.reshape(-1)]


def _system_column(store) -> np.ndarray:
    parts = []
    for shard in range(store.n_shards):
        a, b = store.shard_range(shard)
        column = store.frame_column("system", shard)
        parts.append(np.full(b - a, "", dtype=object) if column is None else column)
    return np.concatenate(parts).astype(str) if parts else np.zeros(0, dtype=str)


class StoreSplit:
    """One split of a store, read in batches on demand.

    Args:
        path: store directory. split: ``train``, ``val`` or ``test``.
        cutoff: Å. max_atoms: atom budget per batch. max_graphs: frames per batch (or None).
        seed: shuffling seed. num_workers: DataLoader worker processes.
        config_type_weights: {config_type: factor} applied to the stored per-frame weight of
            the frames of that ``config_type`` ("Default" for frames without one).
        source: how messages name the split (default: path and split).
        owner: what keeps ``path`` alive (a :class:`TemporaryStore`), if anything; its frames
            are named ``FILE:FRAME`` of their source file, a user store's ``STORE#INDEX``.
        global_batches: under DDP, rank r takes frames r, r+K, ... of every global batch (of
            at least K frames), so K processes see the batches of one; False deals whole
            batches to the ranks in turn (the effective global batch is K batches).
    """

    def __init__(self, path: str | os.PathLike, split: str, cutoff: float, *, max_atoms: int,
                 max_graphs: int | None, seed: int, num_workers: int = 0,
                 config_type_weights: Mapping[str, float] | None = None,
                 source: str | None = None, owner: TemporaryStore | None = None,
                 global_batches: bool = True) -> None:
        from mlip.data import SnapshotStore, StoreDataset

        self.path, self.split, self.cutoff = str(path), split, float(cutoff)
        self.max_atoms, self.max_graphs, self.seed = int(max_atoms), max_graphs, int(seed)
        self.num_workers = int(num_workers)
        self.config_type_weights = dict(config_type_weights or {})
        self.store = SnapshotStore(path)
        self.dataset = StoreDataset(path, split, cutoff)
        self.source = source or f"{path} ({split} split)"
        self.owner = owner
        self.global_batches = bool(global_batches)

    def __len__(self) -> int:
        return len(self.dataset)

    def _sampler(self, epoch: int, rank: int, world_size: int, start: int, shuffle: bool):
        from mlip.data import BlockBatchSampler

        if self.global_batches and world_size > 1:
            return _FramesOfRank(self._sampler(epoch, 0, 1, 0, shuffle), rank, world_size, start)
        return BlockBatchSampler(self.store, self.split, max_atoms=self.max_atoms,
                                 max_graphs=self.max_graphs, shuffle=shuffle, seed=self.seed,
                                 epoch=epoch, rank=rank, world_size=world_size, start_batch=start)

    def n_batches(self, epoch: int, rank: int = 0, world_size: int = 1) -> int:
        """Batches this rank trains on in ``epoch``."""
        return len(self._sampler(epoch, rank, world_size, 0, True))

    def batch_indices(self, epoch: int, rank: int = 0, world_size: int = 1) -> list[list[int]]:
        """Global store frame indices of each batch this rank trains on in ``epoch``."""
        return list(self._sampler(epoch, rank, world_size, 0, True))

    def batches(self, epoch: int, rank: int = 0, world_size: int = 1, start: int = 0
                ) -> Iterator[tuple[int, list[str], LabelledBatch]]:
        """Yield ``(batch number, frame names, batch)`` of this rank from batch ``start`` on."""
        loader = torch.utils.data.DataLoader(
            _Indexed(self.dataset), batch_size=None, collate_fn=_first,
            num_workers=self.num_workers,
            sampler=self._sampler(epoch, rank, world_size, start, True))
        for number, (indices, batch) in enumerate(loader, start):
            yield number, self.frame_names(indices), self._weighted(batch, indices)

    def frame_names(self, indices: Sequence[int]) -> list[str]:
        """Names of the frames at global ``indices`` for messages: ``FILE:FRAME`` of the file
        they were imported from (temporary stores), else ``STORE#INDEX``."""
        if self.owner is None:
            return [f"{self.path}#{i}" for i in indices]
        frames = self.store.read(indices, ("source", "source_frame")).frames
        return [f"{Path(str(source)).name}:{int(k)}"
                for source, k in zip(frames["source"], frames["source_frame"])]

    def eval_graphs(self, batch_size: int, rank: int = 0, world_size: int = 1
                    ) -> Iterator[LabelledBatch]:
        """Every frame once (store order): batch k goes to rank k mod world_size."""
        sampler = self._sampler(0, 0, 1, 0, False)
        sampler.max_graphs = batch_size
        for k, indices in enumerate(sampler):
            if k % world_size == rank:
                yield self._weighted(self.dataset[indices], indices)

    def _weighted(self, batch: LabelledBatch, indices: list[int]) -> LabelledBatch:
        """``batch`` with its frame weights times the ``config_type_weights`` factors."""
        factors = self._config_type_factors
        if factors is None:
            return batch
        weight = batch.targets.weight * torch.as_tensor(
            factors[np.asarray(indices)], dtype=batch.targets.weight.dtype
        )
        return LabelledBatch(batch.graph, batch.targets.with_weight(weight))

    def system_ids(self) -> list[str]:
        """The system id of every frame of the split (store order)."""
        return _system_column(self.store)[self.store.split_indices(self.split)].tolist()

    def config_types(self) -> set[str]:
        """The ``config_type`` values of the split's frames ("Default" for frames without)."""
        return set(np.unique(self._config_type_names()[self.store.split_indices(self.split)]))

    def _config_type_names(self) -> np.ndarray:
        """(n_store_frames,) object array of every frame's config_type."""
        names = []
        for shard in range(self.store.n_shards):
            a, b = self.store.shard_range(shard)
            column = self.store.frame_column("config_type", shard)
            column = np.full(b - a, "", dtype=object) if column is None else column
            names.append(np.where(column == "", "Default", column).astype(object))
        return np.concatenate(names) if names else np.zeros(0, dtype=object)

    @cached_property
    def _config_type_factors(self) -> np.ndarray | None:
        """(n_store_frames,) ``config_type_weights`` factor of every frame (None: no weights)."""
        if not self.config_type_weights:
            return None
        weights = self.config_type_weights
        return np.array([float(weights.get(n, 1.0)) for n in self._config_type_names()])

    @cached_property
    def _label_mask(self) -> int:
        mask = 0
        codes = self.store.split_codes()
        for shard in range(self.store.n_shards):
            column = np.asarray(self.store.frame_column("label_mask", shard))
            a, b = self.store.shard_range(shard)
            selected = column[np.asarray(codes[a:b]) == SPLIT_CODES[self.split]]
            mask |= int(np.bitwise_or.reduce(selected)) if selected.size else 0
        return mask

    def has_label(self, name: str) -> bool:
        """Whether any frame of the split has ``energy``, ``forces`` or ``stress``."""
        from mlip.data.schema import LABEL_BITS

        return bool(self._label_mask & LABEL_BITS[name])

    def statistics(self, reference_energies: Mapping[int, float] | None):
        """:class:`mlip.data.DataStatistics` of the split at the cutoff (one streaming pass)."""
        from mlip.data import compute_statistics

        given = dict(reference_energies) if reference_energies else None
        return compute_statistics(self.store, self.split, cutoff=self.cutoff,
                                  reference_energies=given)

    def elements(self) -> list[int]:
        """Atomic numbers present in the split."""
        return sorted(self._element_frames)

    @cached_property
    def _element_frames(self) -> dict[int, int]:
        counts = np.zeros(256, dtype=np.int64)
        indices = self.store.split_indices(self.split)
        for b in self.store.iter_batches(8192, indices, ("numbers",)):
            frame = np.repeat(np.arange(len(b.n_atoms)), b.n_atoms)
            pairs = np.unique(np.stack([frame, b.atoms["numbers"].astype(np.int64)]), axis=1)
            counts += np.bincount(pairs[1], minlength=256)
        return {int(z): int(counts[z]) for z in np.nonzero(counts)[0]}

    def element_frames(self) -> dict[int, int]:
        """{Z: number of frames of the split containing element Z} (one pass, cached)."""
        return dict(self._element_frames)


class _Indexed(torch.utils.data.Dataset):
    """Wraps a StoreDataset so that each batch comes with its frame indices."""

    def __init__(self, dataset: torch.utils.data.Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, indices: list[int]) -> tuple[list[int], LabelledBatch]:
        return list(indices), self.dataset[indices]


def _first(item):
    return item


class _FramesOfRank(torch.utils.data.Sampler):
    """Rank ``rank``'s frames ``rank::world_size`` of each global batch of ``sampler`` that has
    at least ``world_size`` frames, from this rank's batch ``start`` on."""

    def __init__(self, sampler, rank: int, world_size: int, start: int) -> None:
        self.sampler, self.rank, self.world_size, self.start = sampler, rank, world_size, start

    def _mine(self) -> Iterator[list[int]]:
        for batch in self.sampler:
            if len(batch) >= self.world_size:
                yield batch[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        for k, batch in enumerate(self._mine()):
            if k >= self.start:
                yield batch

    def __len__(self) -> int:
        return max(0, sum(1 for _ in self._mine()) - self.start)


def _options(data: DataConfig, seed: int) -> dict:
    """StoreSplit keyword arguments of the ``data`` section."""
    default = STREAMING_MAX_ATOMS if data.streaming else NO_ATOM_BUDGET
    return dict(max_atoms=data.max_atoms_per_batch or default, max_graphs=data.batch_size,
                seed=seed, num_workers=data.num_workers,
                config_type_weights=data.config_type_weights,
                global_batches=not data.streaming)


def source_store(sources: str | os.PathLike | Sequence[str | os.PathLike], split: str,
                 keys: LabelKeys = LabelKeys(), max_frames: int | None = None
                 ) -> TemporaryStore:
    """A temporary store of ``sources`` whose (first ``max_frames``) frames are all ``split``."""
    temporary = TemporaryStore(sources, keys, max_frames=max_frames)
    store = temporary.store()
    codes = np.full(len(store), SPLIT_CODES[split], dtype=np.uint8)
    if max_frames is not None:
        codes[max_frames:] = SPLIT_CODES["none"]
    store.close()
    temporary.write_split(codes, by="all")
    return temporary


def source_split(sources: str | os.PathLike | Sequence[str | os.PathLike], cutoff: float, *,
                 split: str | None = None, keys: LabelKeys = LabelKeys(),
                 max_frames: int | None = None, batch_size: int = 16,
                 max_atoms: int | None = None,
                 config_type_weights: Mapping[str, float] | None = None) -> StoreSplit:
    """Every frame of ``sources`` (files or stores), or only the ``split`` of each split store,
    as one :class:`StoreSplit` (for evaluation: ``eval_graphs``).

    Raises:
        ConfigError: ``split`` given for a source that is not a split store.
    """
    paths = _paths(sources)
    label = ",".join(str(p) for p in paths)
    if split is not None:
        temporary = _store_split_copy(paths, split, max_frames)
    else:
        temporary = source_store(paths, "test", keys, max_frames)
    return StoreSplit(temporary.root, "test", cutoff, max_atoms=max_atoms or NO_ATOM_BUDGET,
                      max_graphs=batch_size, seed=0, config_type_weights=config_type_weights,
                      source=label, owner=temporary)


def _store_split_copy(paths: list[Path], split: str, max_frames: int | None) -> TemporaryStore:
    """A temporary store of the ``split`` frames of each split store (first ``max_frames``)."""
    from mlip.data import SnapshotStore

    select, left = {}, max_frames
    for path in paths:
        if not is_store(path) or SnapshotStore(path).split_codes() is None:
            raise ConfigError(f"--split {split}: {path} is not a snapshot store with a split")
        select[path] = SnapshotStore(path).split_indices(split)[:left]
        left = None if left is None else left - len(select[path])
    paths = [p for p in paths if len(select[p])]
    if not paths:
        raise ConfigError(f"--split {split}: no {split} frames in {','.join(map(str, select))}")
    temporary = TemporaryStore(paths, select=select)
    store = temporary.store()
    temporary.write_split(np.full(len(store), SPLIT_CODES["test"], dtype=np.uint8), by="copy")
    store.close()
    return temporary


def train_splits(data: DataConfig, seed: int) -> tuple[StoreSplit, StoreSplit, StoreSplit]:
    """Train, val and (possibly empty) test splits of the ``data`` section.

    A split store given alone as ``data.train`` keeps its own split (``data.test`` replaces its
    test split); with ``data.max_frames`` each of its splits keeps its first frames. Anything
    else is split by system id (``data.split_key`` names the info key of the system; frames
    without one are each their own system), with ``data.valid_fraction`` and
    ``data.test_fraction`` of the systems held out unless ``data.valid`` / ``data.test`` give
    those splits.

    Raises:
        ConfigError: missing or unreadable files, a split that ends up empty, streaming from
            anything but a split store, or a ``config_type_weights`` key no frame has.
    """
    paths = _paths(data.train)
    single = len(paths) == 1 and is_store(paths[0])
    if data.streaming:
        if not single:
            raise ConfigError(
                f"data.streaming needs data.train to be one snapshot store, got {data.train!r}")
        if data.valid or data.test or data.max_frames:
            raise ConfigError("data.streaming uses the store's own split; unset data.valid, "
                              "data.test and data.max_frames")
    keys = label_keys(data)
    options = _options(data, seed)
    cutoff = float(data.cutoff)
    if single and not data.valid and _has_split(paths[0]):
        if data.max_frames:
            owner = _first_of_each_split(paths[0], data.max_frames)
            root = owner.root
        else:
            owner, root = None, paths[0]
        parts = [StoreSplit(root, name, cutoff, owner=owner, source=f"{data.train} ({name} split)",
                            **options) for name in ("train", "val", "test")]
    else:
        owner = _imported_and_split(data, paths, keys)
        parts = [StoreSplit(owner.root, name, cutoff, owner=owner,
                            source=str(data.train) if name == "train" else
                            f"{data.train} ({name} split)", **options)
                 for name in ("train", "val", "test")]
        if data.valid:
            valid = source_store(data.valid, "val", keys)
            parts[1] = StoreSplit(valid.root, "val", cutoff, owner=valid,
                                  source=str(data.valid), **options)
        for name, part in (("training", parts[0]), ("validation", parts[1])):
            if len(part) == 0:
                raise ConfigError(
                    f"the {name} split of {data.train} is empty ({len(part.store)} frames, "
                    f"valid_fraction={data.valid_fraction}); add frames or change the fractions"
                )
    if data.test:
        test = source_store(data.test, "test", keys)
        parts[2] = StoreSplit(test.root, "test", cutoff, owner=test, source=str(data.test),
                              **options)
    _check_config_types(data, parts)
    if data.max_atoms_per_batch is not None and not data.streaming:
        sizes = parts[0].store.n_atoms_of(parts[0].store.split_indices("train"))
        if len(sizes) and data.max_atoms_per_batch < sizes.max():
            raise ConfigError(
                f"data.max_atoms_per_batch = {data.max_atoms_per_batch} is smaller than the "
                f"largest frame ({sizes.max()} atoms)"
            )
    return parts[0], parts[1], parts[2]


def _has_split(path: Path) -> bool:
    from mlip.data import SnapshotStore

    return SnapshotStore(path).split_codes() is not None


def _first_of_each_split(path: Path, max_frames: int) -> TemporaryStore:
    """A temporary copy of a split store keeping the first ``max_frames`` frames of each split."""
    from mlip.data import SnapshotStore

    codes = np.array(SnapshotStore(path).split_codes(), dtype=np.uint8)
    for name in ("train", "val", "test"):
        codes[np.flatnonzero(codes == SPLIT_CODES[name])[max_frames:]] = SPLIT_CODES["none"]
    kept = np.flatnonzero(codes != SPLIT_CODES["none"])
    temporary = TemporaryStore([path], select={path: kept})
    temporary.write_split(codes[kept], by="copy")
    return temporary


def _imported_and_split(data: DataConfig, paths: list[Path], keys: LabelKeys
                        ) -> TemporaryStore:
    """``data.train`` imported into a temporary store (its first ``data.max_frames`` frames)
    and split by system id."""
    from dataclasses import replace

    from mlip.data.splits import frames_without_system_id

    system_keys = replace(keys, system=data.split_key) if data.split_key else keys
    temporary = TemporaryStore(paths, system_keys, str(data.train), max_frames=data.max_frames)
    store = temporary.store()
    n = len(store) if data.max_frames is None else min(len(store), data.max_frames)
    systems = _system_column(store)[:n]
    fractions = [1.0, 0.0 if data.valid else float(data.valid_fraction),
                 0.0 if data.test else float(data.test_fraction)]
    alone = frames_without_system_id(store, np.arange(n))
    if data.split_key is not None and alone:
        raise ConfigError(
            f"data.split_key = {data.split_key!r}: {alone} of {n} frames of {data.train} have "
            f"no info[{data.split_key!r}]"
        )
    if sum(fractions[1:]) > 0 and alone:
        log.warning(
            "%d of %d frames of %s carry no trajectory id: the validation/test fractions are "
            "drawn frame by frame, so correlated frames of one MD run can land on both sides; "
            "name the info key that groups them with data.split_key", alone, n, data.train,
        )
    codes = np.full(len(store), SPLIT_CODES["none"], dtype=np.uint8)
    codes[:n] = _split_codes(systems, fractions, int(data.split_seed))
    store.close()
    temporary.write_split(codes, by="system")
    return temporary


def _check_config_types(data: DataConfig, parts: list[StoreSplit]) -> None:
    if not data.config_type_weights:
        return
    present = parts[0].config_types()
    missing = sorted(set(data.config_type_weights) - present)
    if missing:
        raise ConfigError(
            f"data.config_type_weights names config types {missing} that no frame of "
            f"{parts[0].source} has (present: {sorted(present)})"
        )
