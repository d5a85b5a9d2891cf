"""Per-frame edge counts at a cutoff, cached beside the shards for edge-budget batching.

``edges-r<cutoff>.npy`` holds one int64 per frame (directed edges, as in the neighbour list the
loader builds). It is computed once with :func:`mlip.neighbors.neighbor_list` in a streaming pass,
written atomically, and memory-mapped afterwards; a cache that does not match the store's frame
count is recomputed.
"""

from __future__ import annotations

import io

import numpy as np
import torch

from mlip.data.frames import FrameBatch
from mlip.data.manifest import atomic_write_bytes
from mlip.data.store import SnapshotStore
from mlip.neighbors import neighbor_list

__all__ = ["edge_counts", "frame_edge_counts"]


def frame_edge_counts(batch: FrameBatch, cutoff: float) -> np.ndarray:
    """(len(batch),) int64 number of directed edges of each frame of ``batch`` within ``cutoff``.

    ``batch`` needs the ``positions``, ``cell`` and ``pbc`` columns.
    """
    n_atoms = torch.from_numpy(batch.n_atoms)
    graph_of_atom = torch.repeat_interleave(torch.arange(len(batch)), n_atoms)
    i, _, _ = neighbor_list(
        torch.from_numpy(batch.atoms["positions"]),
        torch.from_numpy(batch.frames["cell"]),
        torch.from_numpy(batch.frames["pbc"]),
        cutoff,
        graph_of_atom,
    )
    return np.bincount(graph_of_atom[i].numpy(), minlength=len(batch))


def edge_counts(store: SnapshotStore, cutoff: float, batch_frames: int = 256) -> np.ndarray:
    """(n_frames,) int64 number of directed edges of each frame within ``cutoff`` Å."""
    path = store.root / f"edges-r{float(cutoff):.4f}.npy"
    if path.exists():
        cached = np.load(path, mmap_mode="r")
        if len(cached) == len(store):
            return cached
    counts = np.zeros(len(store), dtype=np.int64)
    start = 0
    for b in store.iter_batches(batch_frames, columns=("numbers", "positions", "cell", "pbc")):
        counts[start : start + len(b)] = frame_edge_counts(b, cutoff)
        start += len(b)
    buf = io.BytesIO()
    np.save(buf, counts)
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError:  # a read-only store: use the counts without caching them
        pass
    return counts
