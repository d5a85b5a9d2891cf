"""Torch access to a store: :class:`StoreDataset` (batches of frames → ``LabelledBatch``, an
``AtomicGraph`` with its ``Targets``) and :func:`make_loader` (DataLoader +
:class:`BlockBatchSampler`).

Each process (main or DataLoader worker) opens its own HDF5 handles on first use; neighbour lists
are built where the batch is assembled, i.e. in the workers. Whole blocks of consecutive frames
are read and kept in a small LRU cache, so the block-local batches of the sampler cost one slice
read per column per block. Workers hand batches to the main process packed into one buffer
(:mod:`mlip.data.packing`).
"""

from __future__ import annotations

import functools
import multiprocessing
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
import torch.utils.data

from mlip.data.edges import edge_counts
from mlip.data.frames import FrameBatch
from mlip.data.packing import GraphLoader, pack_graph
from mlip.data.sampler import BlockBatchSampler
from mlip.data.store import SnapshotStore
from mlip.graph import AtomicGraph
from mlip.neighbors import neighbor_list
from mlip.targets import LabelledBatch, Targets

__all__ = ["StoreDataset", "make_loader", "frames_to_batch"]

GRAPH_COLUMNS = ("numbers", "positions", "cell", "pbc", "energy", "forces", "stress", "weight")


def frames_to_batch(
    batch: FrameBatch, cutoff: float, dtype: torch.dtype = torch.float64
) -> LabelledBatch:
    """An ``AtomicGraph`` (neighbour list at ``cutoff`` Å) with its ``Targets``, from frames.

    Absent labels stay NaN (the trainer masks them).
    """
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(dtype)  # noqa: E731
    targets = Targets(
        energy=t(batch.frames["energy"]),
        forces=t(batch.atoms["forces"]),
        stress=t(batch.frames["stress"]),
        weight=t(batch.frames["weight"]),
    )
    graph = AtomicGraph.build(
        positions=t(batch.atoms["positions"]),
        atomic_numbers=torch.from_numpy(batch.atoms["numbers"].astype(np.int64)),
        cell=t(batch.frames["cell"]),
        pbc=torch.from_numpy(batch.frames["pbc"]),
        n_atoms=torch.from_numpy(batch.n_atoms),
        cutoff=cutoff,
    )
    return LabelledBatch(graph, targets)


@dataclass(frozen=True)
class _Block:
    """A cached block of consecutive frames, its graph columns packed into two float64 tables.

    Attributes:
        atoms: (n_atoms, 7) float64: positions Å (0:3), forces eV/Å (3:6), atomic number (6).
        frames: (n_frames, 23) float64: energy eV (0), cell Å (1:10), stress eV/Å³ (10:19),
            weight (19), pbc as 0/1 (20:23).
        offsets: (n_frames,) int64 first atom of each frame. n_atoms: (n_frames,) int64.
    """

    ATOM_WIDTH: ClassVar[int] = 7
    FRAME_WIDTH: ClassVar[int] = 23

    atoms: np.ndarray
    frames: np.ndarray
    offsets: np.ndarray
    n_atoms: np.ndarray

    @classmethod
    def pack(cls, batch: FrameBatch) -> _Block:
        """Pack the graph columns of ``batch`` (all float64 or exactly representable in it)."""
        a, f, n = batch.atoms, batch.frames, len(batch)
        atoms = np.concatenate([a["positions"], a["forces"], a["numbers"][:, None]], axis=1)
        frames = np.concatenate(
            [
                f["energy"][:, None],
                f["cell"].reshape(n, 9),
                f["stress"].reshape(n, 9),
                f["weight"][:, None],
                f["pbc"],
            ],
            axis=1,
            dtype=np.float64,
        )
        return cls(atoms, frames, batch.atom_offsets[:-1], batch.n_atoms)

    @staticmethod
    def unpack(n_atoms: np.ndarray, atoms: np.ndarray, frames: np.ndarray) -> FrameBatch:
        """A :class:`FrameBatch` (column views where the dtype allows) of packed tables."""
        n = len(n_atoms)
        return FrameBatch(
            n_atoms=n_atoms,
            atoms={
                "positions": atoms[:, 0:3],
                "forces": atoms[:, 3:6],
                "numbers": atoms[:, 6].astype(np.uint8),
            },
            frames={
                "energy": frames[:, 0],
                "cell": frames[:, 1:10].reshape(n, 3, 3),
                "stress": frames[:, 10:19].reshape(n, 3, 3),
                "weight": frames[:, 19],
                "pbc": frames[:, 20:23] > 0.5,
            },
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
        self._cache: OrderedDict[int, _Block] = OrderedDict()
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

    def _block(self, block: int) -> _Block:
        cached = self._cache.get(block)
        if cached is None:
            start = block * self.block_frames
            stop = min(len(self.store), start + self.block_frames)
            cached = _Block.pack(self.store.read(np.arange(start, stop), GRAPH_COLUMNS))
            self._cache[block] = cached
            if len(self._cache) > self.cache_blocks:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(block)
        return cached

    def frames(self, indices: Sequence[int]) -> FrameBatch:
        """The frames at global ``indices`` (in order, graph columns only) via the block cache.

        Index arithmetic is vectorised over the whole batch; per touched block only two gathers
        run (one per-atom, one per-frame), writing straight to the frames' output positions.
        """
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        blocks, local = np.divmod(indices, self.block_frames)
        order = np.argsort(blocks, kind="stable")
        cuts = np.flatnonzero(np.diff(blocks[order])) + 1
        groups = [(self._block(int(blocks[g[0]])), g) for g in np.split(order, cuts)]
        starts, counts = np.empty_like(indices), np.empty_like(indices)
        for block, g in groups:
            starts[g], counts[g] = block.offsets[local[g]], block.n_atoms[local[g]]
        out_start = np.cumsum(counts) - counts
        sorted_counts = counts[order]
        first = np.cumsum(sorted_counts) - sorted_counts  # atom start of each sorted frame
        ramp = np.arange(int(counts.sum())) - np.repeat(first, sorted_counts)
        src = np.repeat(starts[order], sorted_counts) + ramp
        dst = np.repeat(out_start[order], sorted_counts) + ramp
        atom_cuts = np.append(first, len(ramp))[np.concatenate([[0], cuts, [len(order)]])]
        atoms = np.empty((len(ramp), _Block.ATOM_WIDTH))
        frames = np.empty((len(indices), _Block.FRAME_WIDTH))
        for k, (block, g) in enumerate(groups):
            a, b = atom_cuts[k], atom_cuts[k + 1]
            atoms[dst[a:b]] = block.atoms[src[a:b]]
            frames[g] = block.frames[local[g]]
        return _Block.unpack(counts, atoms, frames)

    def __getitem__(self, index: int | Sequence[int]) -> LabelledBatch:
        indices = [index] if np.isscalar(index) else index
        return frames_to_batch(self.frames(indices), self.cutoff, self.dtype)


def _identity(batch: LabelledBatch) -> LabelledBatch:
    return batch


@functools.cache
def _warm_neighbor_list() -> None:
    """Load the compiled neighbour-list kernels once in this process, before workers fork.

    Loading numba's on-disk cache costs about 0.5 s per process; forked workers inherit the
    loaded kernels instead of paying it at every epoch's start.
    """
    if multiprocessing.get_start_method(allow_none=True) in (None, "fork"):
        pos = torch.zeros(2, 3, dtype=torch.float64)
        pos[1, 0] = 1.0
        neighbor_list(pos, torch.eye(3, dtype=torch.float64), torch.ones(3, dtype=torch.bool), 2.0)


def make_loader(
    store: str | os.PathLike,
    split: str | None = "train",
    cutoff: float = 5.0,
    *,
    max_edges: int | None = None,
    num_workers: int = 0,
    dtype: torch.dtype = torch.float64,
    block_frames: int = 256,
    window_blocks: int = 64,
    **sampler_options: Any,
) -> torch.utils.data.DataLoader:
    """A DataLoader yielding ``LabelledBatch`` batches (graph and ``Targets``) of a store split.

    The batch sequence is a pure function of ``(seed, epoch, rank, world_size)``; change epochs
    with ``loader.sampler.set_epoch(e)`` (the :class:`BlockBatchSampler`) or build a new
    loader; resume mid-epoch with ``start_batch``. See :class:`BlockBatchSampler` for the
    batching rules.

    Args:
        store: store directory. split: ``train``/``val``/``test`` or None.
        cutoff: neighbour cutoff, Å.
        max_edges: edge budget at ``cutoff`` (per-frame counts are computed once and cached in
            the store directory, see :func:`mlip.data.edges.edge_counts`).
        num_workers: DataLoader worker processes (each builds its neighbour lists and ships
            every batch as one shared-memory buffer, see :mod:`mlip.data.packing`).
        dtype: floating dtype of positions, cell and labels.
        block_frames, window_blocks: sampler blocks, also the dataset's cache granularity.
        sampler_options: the other keyword arguments of :class:`BlockBatchSampler`
            (``max_atoms``, ``max_graphs``, ``shuffle``, ``seed``, ``epoch``, ``rank``,
            ``world_size``, ``start_batch``); an unknown name raises ``TypeError``.
    """
    dataset = StoreDataset(
        store, split, cutoff, dtype, block_frames, cache_blocks=max(2 * window_blocks, 16)
    )
    sampler = BlockBatchSampler(
        dataset.store,
        split,
        max_edges=max_edges,
        edge_counts=None if max_edges is None else edge_counts(dataset.store, cutoff),
        block_frames=block_frames,
        window_blocks=window_blocks,
        **sampler_options,
    )
    if num_workers:
        _warm_neighbor_list()
    return GraphLoader(
        dataset,
        batch_size=None,
        sampler=sampler,
        collate_fn=pack_graph if num_workers else _identity,
        num_workers=num_workers,
        persistent_workers=False,
        prefetch_factor=4 if num_workers else None,
    )
