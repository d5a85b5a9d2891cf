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

from mlip.data.manifest import atomic_write_bytes
from mlip.data.store import SnapshotStore
from mlip.neighbors import neighbor_list

__all__ = ["edge_counts"]


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
        graph_of_atom = torch.repeat_interleave(torch.arange(len(b)), torch.from_numpy(b.n_atoms))
        i, _, _ = neighbor_list(
            torch.from_numpy(b.atoms["positions"]),
            torch.from_numpy(b.frames["cell"]),
            torch.from_numpy(b.frames["pbc"]),
            cutoff,
            graph_of_atom,
        )
        counts[start : start + len(b)] = np.bincount(graph_of_atom[i].numpy(), minlength=len(b))
        start += len(b)
    buf = io.BytesIO()
    np.save(buf, counts)
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError:  # a read-only store: use the counts without caching them
        pass
    return counts
