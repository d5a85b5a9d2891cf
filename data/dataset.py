"""Torch access to a store: :class:`StoreDataset` (batches of frames → ``AtomicGraph`` with
``Targets``) and :func:`make_loader` (DataLoader + :class:`BlockBatchSampler`).

Each process (main or DataLoader worker) opens its own HDF5 handles on first use; neighbour lists
are built where the batch is assembled, i.e. in the workers. Whole blocks of consecutive frames
are read and kept in a small LRU cache, so the block-local batches of the sampler cost one slice
read per column per block.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Sequence

import numpy as np
import torch
import torch.utils.data
from mlip.data.edges import edge_counts
from mlip.data.frames import FrameBatch
from mlip.data.sampler import BlockBatchSampler
from mlip.data.store import SnapshotStore

from mlip.graph import AtomicGraph, Targets

__all__ = ["StoreDataset", "make_loader", "frames_to_graph"]

GRAPH_COLUMNS = ("numbers", "positions", "cell", "pbc", "energy", "forces", "stress", "weight")


def frames_to_graph(
    batch: FrameBatch, cutoff: float, dtype: torch.dtype = torch.float64
) -> AtomicGraph:
    """An ``AtomicGraph`` (neighbour list at ``cutoff`` Å) with ``Targets`` from frames.

    Absent labels stay NaN (the trainer masks them).
    """
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(dtype)  # noqa: E731
    targets = Targets(
        energy=t(batch.frames["energy"]),
        forces=t(batch.atoms["forces"]),
        stress=t(batch.frames["stress"]),
        weight=t(batch.frames["weight"]),
    )
    return AtomicGraph.build(
        positions=t(batch.atoms["positions"]),
        atomic_numbers=torch.from_numpy(batch.atoms["numbers"].astype(np.int64)),
        cell=t(batch.frames["cell"]),
        pbc=torch.from_numpy(batch.frames["pbc"]),
        n_atoms=torch.from_numpy(batch.n_atoms),
        cutoff=cutoff,
        targets=targets,
    )


class StoreDataset(torch.utils.data.Dataset):
    """Map-style dataset over a store split: ``dataset[i]`` is one frame, ``dataset[[i, j, ...]]``
    a batch (global frame indices, as yielded by :class:`BlockBatchSampler`).

    Args:
        path: store directory.
        split: ``train``/``val``/``test`` or None (all frames).
        cutoff: neighbour cutoff, Å.
        dtype: floating dtype of positions, cell and labels.
        block_frames: frames per cached block (match the sampler's).
        cache_blocks: blocks kept per process.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        split: str | None = "train",
        cutoff: float = 5.0,
        dtype: torch.dtype = torch.float64,
        block_frames: int = 256,
        cache_blocks: int = 128,
    ):
        self.path, self.split, self.cutoff, self.dtype = str(path), split, float(cutoff), dtype
        self.block_frames, self.cache_blocks = block_frames, cache_blocks
        self._store: SnapshotStore | None = None
        self._pid = -1
        self._cache: OrderedDict[int, FrameBatch] = OrderedDict()
        self._length = self.store.split_size(split)

    @property
    def store(self) -> SnapshotStore:
        """This process's store handle (reopened after a fork)."""
        if self._store is None or self._pid != os.getpid():
            self._store, self._pid, self._cache = (
                SnapshotStore(self.path),
                os.getpid(),
                OrderedDict(),
            )
        return self._store

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.update(_store=None, _pid=-1, _cache=OrderedDict())
        return state

    def __len__(self) -> int:
        """Frames in the split."""
        return self._length

    def _block(self, block: int) -> FrameBatch:
        cached = self._cache.get(block)
        if cached is None:
            start = block * self.block_frames
            stop = min(len(self.store), start + self.block_frames)
            cached = self.store.read(np.arange(start, stop), GRAPH_COLUMNS)
            self._cache[block] = cached
            if len(self._cache) > self.cache_blocks:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(block)
        return cached

    def frames(self, indices: Sequence[int]) -> FrameBatch:
        """The frames at global ``indices`` (in order) through the block cache."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        blocks = indices // self.block_frames
        parts, order = [], []
        for block in np.unique(blocks):
            sel = np.nonzero(blocks == block)[0]
            parts.append(self._block(int(block)).select(indices[sel] - block * self.block_frames))
            order.append(sel)
        batch = parts[0] if len(parts) == 1 else FrameBatch.concat(parts)
        order = np.concatenate(order)
        return batch if (order == np.arange(len(order))).all() else batch.select(np.argsort(order))

    def __getitem__(self, index: int | Sequence[int]) -> AtomicGraph:
        indices = [index] if np.isscalar(index) else index
        return frames_to_graph(self.frames(indices), self.cutoff, self.dtype)


def _identity(graph: AtomicGraph) -> AtomicGraph:
    return graph


def make_loader(
    store: str | os.PathLike,
    split: str | None = "train",
    cutoff: float = 5.0,
    *,
    max_atoms: int = 4096,
    max_graphs: int | None = None,
    max_edges: int | None = None,
    shuffle: bool = True,
    seed: int = 0,
    epoch: int = 0,
    rank: int = 0,
    world_size: int = 1,
    start_batch: int = 0,
    num_workers: int = 0,
    dtype: torch.dtype = torch.float64,
    block_frames: int = 256,
    window_blocks: int = 64,
) -> torch.utils.data.DataLoader:
    """A DataLoader yielding ``AtomicGraph`` batches (with ``Targets``) of a store split.

    The batch sequence is a pure function of ``(seed, epoch, rank, world_size)``; change epochs
    with ``loader.sampler.set_epoch(e)`` (the :class:`BlockBatchSampler`) or build a new
    loader; resume mid-epoch with ``start_batch``. See :class:`BlockBatchSampler` for the
    batching rules.

    Args:
        store: store directory. split: ``train``/``val``/``test`` or None.
        cutoff: neighbour cutoff, Å. max_atoms / max_graphs: batch budget.
        max_edges: edge budget at ``cutoff`` (per-frame counts are computed once and cached in
            the store directory, see :func:`mlip.data.edges.edge_counts`).
        num_workers: DataLoader worker processes (each builds its neighbour lists).
    """
    dataset = StoreDataset(
        store, split, cutoff, dtype, block_frames, cache_blocks=max(2 * window_blocks, 16)
    )
    sampler = BlockBatchSampler(
        dataset.store,
        split,
        max_atoms=max_atoms,
        max_graphs=max_graphs,
        max_edges=max_edges,
        edge_counts=None if max_edges is None else edge_counts(dataset.store, cutoff),
        shuffle=shuffle,
        seed=seed,
        epoch=epoch,
        rank=rank,
        world_size=world_size,
        start_batch=start_batch,
        block_frames=block_frames,
        window_blocks=window_blocks,
    )
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        sampler=sampler,
        collate_fn=_identity,
        num_workers=num_workers,
        persistent_workers=False,
        prefetch_factor=4 if num_workers else None,
    )
