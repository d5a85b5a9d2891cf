"""One split of a snapshot store read as training batches: :class:`StoreSplit`.

Every training source ends up here (:mod:`mlip.train.data` turns files and stores into store
splits). Each epoch :class:`mlip.data.BlockBatchSampler` permutes store blocks (seeded by seed and
epoch), packs the frames of each window into batches of at most ``max_atoms`` atoms and
``max_graphs`` frames, and deals them to the ranks; DataLoader workers read the frames and build
the neighbour lists. The sequence is a pure function of (seed, epoch, rank, world size), so a
resumed run restarts at the exact batch.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Mapping, Sequence

import numpy as np
import torch

from mlip.data.schema import SPLIT_CODES
from mlip.data.splits import string_column
from mlip.targets import LabelledBatch

if TYPE_CHECKING:
    from mlip.train.data import TemporaryStore

__all__ = ["StoreSplit"]


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
        return string_column(self.store, "system")[self.store.split_indices(self.split)].tolist()

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
