"""Deterministic, memory-bounded batch sampling over a store: :class:`BlockBatchSampler`.

The store's frames are cut into blocks of ``block_frames`` consecutive frames. Each epoch the
block order is permuted (seeded by ``(seed, epoch)``); blocks are taken ``window_blocks`` at a
time, the selected frames of a window (those of the split) are shuffled together and packed
greedily into batches of at most ``max_atoms`` atoms (and ``max_graphs`` graphs). Only one
window's indices exist at a time, so memory does not grow with the store, and reads stay
block-local (fast, cache friendly).

Every rank generates the same global batch sequence and keeps batches ``rank, rank +
world_size, ...``; an incomplete final group is dropped so every rank yields the same number of
batches (DDP never waits on a missing batch). ``start_batch`` skips batches already consumed,
so a resumed run sees exactly the sequence an uninterrupted one would have.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch.utils.data

from mlip.data.schema import SPLIT_CODES
from mlip.data.store import SnapshotStore
from mlip.errors import ConfigError

__all__ = ["BlockBatchSampler"]


class BlockBatchSampler(torch.utils.data.Sampler):
    """Yields lists of global frame indices (one list per batch).

    Args:
        store: the store (only offsets and the split sidecar are read).
        split: ``train``/``val``/``test`` or None for every frame.
        max_atoms: atom budget of a batch (a larger frame forms a batch alone).
        max_graphs: optional cap on frames per batch.
        max_edges: optional edge budget; needs ``edge_counts``.
        edge_counts: (n_frames,) edges per frame at the loader's cutoff
            (:func:`mlip.data.edges.edge_counts`).
        shuffle: permute blocks and frames within windows; False keeps store order.
        seed, epoch: the permutation is a pure function of these.
        rank, world_size: DDP sharding of the batch sequence.
        start_batch: number of this rank's batches to skip (resume).
        block_frames: consecutive frames per block. window_blocks: blocks shuffled together.
    """

    def __init__(
        self,
        store: SnapshotStore,
        split: str | None = None,
        *,
        max_atoms: int = 4096,
        max_graphs: int | None = None,
        max_edges: int | None = None,
        edge_counts: np.ndarray | None = None,
        shuffle: bool = True,
        seed: int = 0,
        epoch: int = 0,
        rank: int = 0,
        world_size: int = 1,
        start_batch: int = 0,
        block_frames: int = 256,
        window_blocks: int = 64,
    ):
        if max_atoms < 1 or (max_graphs is not None and max_graphs < 1):
            raise ConfigError(
                f"max_atoms ({max_atoms}) and max_graphs ({max_graphs}) must be positive"
            )
        if max_edges is not None and (max_edges < 1 or edge_counts is None):
            raise ConfigError(f"max_edges ({max_edges}) must be positive and needs edge_counts")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is not in [0, world_size={world_size})")
        if split is not None and split not in ("train", "val", "test"):
            raise ConfigError(f"unknown split {split!r}; use train, val, test or None")
        self.store, self.split = store, split
        self.codes = None if split is None else store.split_codes()
        if split is not None and self.codes is None:
            raise ConfigError(
                f"{store.root} has no split; run `mlip data split {store.root}` first"
            )
        self.max_atoms, self.max_graphs, self.shuffle = max_atoms, max_graphs, shuffle
        self.max_edges, self.edge_counts = max_edges, edge_counts
        self.seed, self.epoch, self.rank, self.world_size = seed, epoch, rank, world_size
        self.start_batch, self.block_frames, self.window_blocks = (
            start_batch,
            block_frames,
            window_blocks,
        )
        self._length: dict[int, int] = {}

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch (and the resume position within it)."""
        self.epoch, self.start_batch = epoch, start_batch

    def _windows(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        """The selected global frame indices of each window, shuffled if requested."""
        n, size = len(self.store), self.block_frames
        n_blocks = -(-n // size)
        order = rng.permutation(n_blocks) if self.shuffle else np.arange(n_blocks)
        for w in range(0, n_blocks, self.window_blocks):
            starts = np.sort(order[w : w + self.window_blocks]) * size
            idx = np.concatenate([np.arange(s, min(n, s + size)) for s in starts])
            if self.codes is not None:
                idx = idx[np.asarray(self.codes[idx]) == SPLIT_CODES[self.split]]
            yield rng.permutation(idx) if self.shuffle else idx

    def _global_batches(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        current: list[int] = []
        atoms = edges = 0
        max_edges = self.max_edges if self.max_edges is not None else np.inf
        for idx in self._windows(rng):
            n_edges = np.zeros(len(idx)) if self.max_edges is None else self.edge_counts[idx]
            sizes = zip(idx.tolist(), self.store.n_atoms_of(idx).tolist(), n_edges.tolist())
            for frame, n, e in sizes:
                full = self.max_graphs is not None and len(current) >= self.max_graphs
                if current and (atoms + n > self.max_atoms or edges + e > max_edges or full):
                    yield current
                    current, atoms, edges = [], 0, 0
                current.append(frame)
                atoms += n
                edges += e
        if current:
            yield current

    def _mine(self) -> Iterator[list[int]]:
        group: list[list[int]] = []
        for batch in self._global_batches():
            group.append(batch)
            if len(group) == self.world_size:
                yield group[self.rank]
                group = []

    def __iter__(self) -> Iterator[list[int]]:
        for k, batch in enumerate(self._mine()):
            if k >= self.start_batch:
                yield batch

    def __len__(self) -> int:
        """Batches this rank yields this epoch (after ``start_batch``)."""
        if self.epoch not in self._length:
            self._length[self.epoch] = sum(1 for _ in self._mine())
        return max(0, self._length[self.epoch] - self.start_batch)
