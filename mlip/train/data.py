"""Training data: every source becomes a snapshot store split, read through one loader.

A split store given as ``data.train`` is read as it is (its own split, batch by batch). Any other
source -- ASE-readable files (extxyz, ASE db, traj, ...), a store without a split, or a store
whose split the config overrides (``data.valid``, ``data.max_frames``) -- is imported by
:mod:`mlip.data`'s importers (the code ``mlip data import`` runs: same label keys, same system
ids) into a private temporary store that lives as long as its splits (in memory, ``/dev/shm``,
when the sources are small; else in the system's temporary folder), and split there by system id
with ``data.split_seed`` (the sorted system ids permuted, the rounded valid/test fractions of the
systems held out). Every split is then read by :class:`mlip.train.split.StoreSplit`. Statistics
come from one streaming pass (:func:`mlip.data.compute_statistics`). ``data.config_type_weights``
multiply the stored frame weights (``atoms.info["weight"]``) by the frames' stored
``config_type``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from ase import Atoms

from mlip.data.importers.atoms import LabelKeys
from mlip.data.schema import SPLIT_CODES
from mlip.data.splits import string_column
from mlip.errors import ConfigError, MLIPError
from mlip.train.config import DataConfig
from mlip.train.split import StoreSplit

__all__ = [
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
    systems = string_column(store, "system")[:n]
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
