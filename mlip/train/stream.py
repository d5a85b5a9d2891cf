"""Streaming a split snapshot store into training (``data.streaming: true``).

Frames are never all in memory: each epoch, :class:`mlip.data.BlockBatchSampler` permutes
store blocks (seeded by seed and epoch), packs the frames of each window into batches of at
most ``data.max_atoms_per_batch`` atoms and ``data.batch_size`` frames, and deals the batches
to the ranks in turn; DataLoader workers (``data.num_workers``) read and build neighbour lists.
The sequence is a pure function of (seed, epoch, rank, world size), so ``--resume`` restarts at
the exact batch. Statistics come from one streaming pass (:func:`mlip.data.compute_statistics`).
``data.config_type_weights`` multiply the stored frame weights by the frames' stored
``config_type``, as they do in memory.
"""

from __future__ import annotations

import os
from functools import cached_property
from typing import Iterator, Mapping

import numpy as np
import torch

from mlip.errors import ConfigError
from mlip.targets import LabelledBatch
from mlip.train.config import DataConfig

__all__ = ["StoreSplit", "store_splits"]


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


class StoreSplit:
    """One split of a store, read in batches on demand.

    Args:
        path: store directory. split: ``train``, ``val`` or ``test``.
        cutoff: Å. max_atoms: atom budget per batch. max_graphs: frames per batch (or None).
        seed: shuffling seed. num_workers: DataLoader worker processes.
        config_type_weights: {config_type: factor} applied to the stored per-frame weight of
            the frames of that ``config_type`` ("Default" for frames without one).
    """

    def __init__(self, path: str | os.PathLike, split: str, cutoff: float, *, max_atoms: int,
                 max_graphs: int | None, seed: int, num_workers: int = 0,
                 config_type_weights: Mapping[str, float] | None = None) -> None:
        from mlip.data import SnapshotStore, StoreDataset

        self.path, self.split, self.cutoff = str(path), split, float(cutoff)
        self.max_atoms, self.max_graphs, self.seed = int(max_atoms), max_graphs, int(seed)
        self.num_workers = int(num_workers)
        self.config_type_weights = dict(config_type_weights or {})
        self.store = SnapshotStore(path)
        self.dataset = StoreDataset(path, split, cutoff)
        self.source = f"{path} ({split} split)"

    def __len__(self) -> int:
        return len(self.dataset)

    def _sampler(self, epoch: int, rank: int, world_size: int, start: int, shuffle: bool):
        from mlip.data import BlockBatchSampler

        return BlockBatchSampler(self.store, self.split, max_atoms=self.max_atoms,
                                 max_graphs=self.max_graphs, shuffle=shuffle, seed=self.seed,
                                 epoch=epoch, rank=rank, world_size=world_size, start_batch=start)

    def n_batches(self, epoch: int, rank: int = 0, world_size: int = 1) -> int:
        """Batches this rank trains on in ``epoch``."""
        return len(self._sampler(epoch, rank, world_size, 0, True))

    def batches(self, epoch: int, rank: int = 0, world_size: int = 1, start: int = 0
                ) -> Iterator[tuple[int, list[str], LabelledBatch]]:
        """Yield ``(batch number, frame names, batch)`` of this rank from batch ``start`` on."""
        loader = torch.utils.data.DataLoader(
            _Indexed(self.dataset), batch_size=None, collate_fn=_first,
            num_workers=self.num_workers,
            sampler=self._sampler(epoch, rank, world_size, start, True))
        for number, (indices, batch) in enumerate(loader, start):
            yield number, [f"{self.path}#{i}" for i in indices], self._weighted(batch, indices)

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
        from mlip.data.schema import SPLIT_CODES

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
        return list(self._statistics_without_e0.elements)

    @cached_property
    def _statistics_without_e0(self):
        from mlip.data import compute_statistics

        return compute_statistics(self.store, self.split)

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


def store_splits(data: DataConfig, seed: int
                 ) -> tuple[StoreSplit, StoreSplit, StoreSplit | None]:
    """Train, val and (if non-empty) test splits of the store in ``data.train``.

    Raises:
        ConfigError: not a single store, or a store without a split.
    """
    from mlip.train.data import is_store, resolve_path

    path = data.train
    if isinstance(path, (list, tuple)) or not is_store(resolve_path(path)):
        raise ConfigError(f"data.streaming needs data.train to be one snapshot store, got {path!r}")
    if data.valid or data.test or data.max_frames:
        raise ConfigError("data.streaming uses the store's own split; unset data.valid, data.test "
                          "and data.max_frames")
    options = dict(max_atoms=data.max_atoms_per_batch or 4096, max_graphs=data.batch_size,
                   seed=seed, num_workers=data.num_workers,
                   config_type_weights=data.config_type_weights)
    parts = [StoreSplit(resolve_path(path), name, data.cutoff, **options)
             for name in ("train", "val", "test")]
    if data.config_type_weights:
        present = parts[0].config_types()
        missing = sorted(set(data.config_type_weights) - present)
        if missing:
            raise ConfigError(
                f"data.config_type_weights names config types {missing} that no frame of "
                f"{parts[0].source} has (present: {sorted(present)})"
            )
    return parts[0], parts[1], parts[2] if len(parts[2]) else None
