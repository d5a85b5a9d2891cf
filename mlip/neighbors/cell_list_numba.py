"""CPU cell-list pair search compiled with numba (the default backend for CPU tensors).

It visits pairs in exactly the order of :mod:`mlip.neighbors.cell_list` (centre atom, then bin
offset in lexicographic order, then neighbours by index within a bin), so both backends return
identical ``(i, j, S)`` arrays. Output buffers are sized from an estimate; the kernel counts the
true number of pairs even past the end of its buffers, and a second search with exactly that
room follows when the estimate was short, so nothing is ever truncated.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from mlip.neighbors.grid import Grid
from mlip.neighbors.grid_numba import bin_systems


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _bin_sort(atom_bin: np.ndarray, n_bins_total: int) -> tuple[np.ndarray, np.ndarray]:
    """Stable counting sort: (bin_start (n_bins + 1,), order (n_atoms,)) by global bin."""
    start = np.zeros(n_bins_total + 1, dtype=np.int64)
    for a in range(atom_bin.shape[0]):
        start[atom_bin[a] + 1] += 1
    for b in range(n_bins_total):
        start[b + 1] += start[b]
    fill = start[:-1].copy()
    order = np.empty(atom_bin.shape[0], dtype=np.int64)
    for a in range(atom_bin.shape[0]):
        order[fill[atom_bin[a]]] = a
        fill[atom_bin[a]] += 1
    return start, order


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _wrap_axis(t: int, n: int, periodic: bool) -> tuple[int, int, bool]:
    """(bin, image shift, valid) of bin coordinate ``t`` along an axis with ``n`` bins."""
    if periodic:
        s = t // n
        return t - s * n, s, True
    return t, 0, 0 <= t < n


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _search(wrapped, images, bins, batch, cell, pbc, n_bins, reach, bin_offset,
            n_bins_total, cutoff, out_i, out_j, out_s):
    """Write the pairs with |D| < cutoff into ``out_*`` while they fit; return how many exist.

    Arrays as in :class:`Grid` (numpy), ``bins[:, 3]`` the global bin; see module docstring.
    """
    start, order = _bin_sort(bins[:, 3], n_bins_total)
    sorted_pos = np.empty((order.shape[0], 3))
    for k in range(order.shape[0]):
        sorted_pos[k] = wrapped[order[k]]
    capacity = out_i.shape[0]
    used = 0
    rc2 = cutoff * cutoff
    for i in range(wrapped.shape[0]):
        g = batch[i]
        c = cell[g]
        nx, ny, nz = n_bins[g, 0], n_bins[g, 1], n_bins[g, 2]
        for ox in range(-reach[g, 0], reach[g, 0] + 1):
            tx, sx, okx = _wrap_axis(bins[i, 0] + ox, nx, pbc[g, 0])
            if not okx:
                continue
            for oy in range(-reach[g, 1], reach[g, 1] + 1):
                ty, sy, oky = _wrap_axis(bins[i, 1] + oy, ny, pbc[g, 1])
                if not oky:
                    continue
                for oz in range(-reach[g, 2], reach[g, 2] + 1):
                    tz, sz, okz = _wrap_axis(bins[i, 2] + oz, nz, pbc[g, 2])
                    if not okz:
                        continue
                    # centre position minus the image shift: D = r_j - (r_i - S @ cell)
                    x = wrapped[i, 0] - (sx * c[0, 0] + sy * c[1, 0] + sz * c[2, 0])
                    y = wrapped[i, 1] - (sx * c[0, 1] + sy * c[1, 1] + sz * c[2, 1])
                    z = wrapped[i, 2] - (sx * c[0, 2] + sy * c[1, 2] + sz * c[2, 2])
                    self_image = sx == 0 and sy == 0 and sz == 0
                    b = bin_offset[g] + (tx * ny + ty) * nz + tz
                    for k in range(start[b], start[b + 1]):
                        dx = sorted_pos[k, 0] - x
                        dy = sorted_pos[k, 1] - y
                        dz = sorted_pos[k, 2] - z
                        if dx * dx + dy * dy + dz * dz >= rc2:
                            continue
                        j = order[k]
                        if self_image and j == i:
                            continue
                        if used < capacity:  # past capacity only count the true demand
                            out_i[used] = i
                            out_j[used] = j
                            out_s[used, 0] = sx + images[i, 0] - images[j, 0]
                            out_s[used, 1] = sy + images[i, 1] - images[j, 1]
                            out_s[used, 2] = sz + images[i, 2] - images[j, 2]
                        used += 1
    return used


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _estimate_pairs(extent: np.ndarray, counts: np.ndarray, cutoff: float) -> int:
    """A generous guess of the number of pairs, used to size the output buffers.

    Args:
        extent: (n_graphs, 3) Å binned lengths. counts: (n_graphs,) int64 atoms per system.
    """
    total = 0.0
    ball = 4.0 / 3.0 * np.pi * cutoff**3
    for g in range(counts.shape[0]):
        box = max(extent[g, 0], cutoff) * max(extent[g, 1], cutoff) * max(extent[g, 2], cutoff)
        n = float(counts[g])
        total += n * (1.5 * n * ball / box + min(n, 64.0))
    return int(total) + 16


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _search_all(wrapped, images, bins, batch, cell, pbc, n_bins, reach, bin_offset,
                n_bins_total, cutoff, capacity):
    """Every pair, in buffers of ``capacity`` grown once to the exact size when too small."""
    capacity = max(capacity, 1)
    while True:
        i, j = np.empty(capacity, dtype=np.int64), np.empty(capacity, dtype=np.int64)
        S = np.empty((capacity, 3), dtype=np.int64)
        total = _search(wrapped, images, bins, batch, cell, pbc, n_bins, reach, bin_offset,
                        n_bins_total, cutoff, i, j, S)
        if total <= capacity:
            return i[:total], j[:total], S[:total]
        capacity = total  # the buffers were too small: search again with room for every pair


@numba.njit(cache=True, nogil=True, error_model="numpy")
def pairs_of_batch(pos, cell, pbc, batch, cutoff):
    """Bin and search a validated CPU batch in one compiled call.

    Args:
        pos: (n_atoms, 3) Å float64. cell: (n_graphs, 3, 3) Å float64. pbc: (n_graphs, 3) bool.
        batch: (n_atoms,) int64 sorted system index. cutoff: Å.

    Returns:
        i, j: (n_edges,) int64; S: (n_edges, 3) int64, sorted by i (numpy arrays).
    """
    counts = np.zeros(cell.shape[0], dtype=np.int64)
    for a in range(batch.shape[0]):
        counts[batch[a]] += 1
    wrapped, images, bins, n_bins, reach, bin_offset, n_bins_total, extent = bin_systems(
        pos, cell, pbc, batch, counts, cutoff)
    return _search_all(wrapped, images, bins, batch, cell, pbc, n_bins, reach, bin_offset,
                       n_bins_total, cutoff, _estimate_pairs(extent, counts, cutoff))


def search_pairs_numba(grid: Grid, batch: torch.Tensor, cutoff: float,
                       capacity: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pairs of a batch binned by :func:`mlip.neighbors.grid.build_grid` (CPU tensors).

    Args:
        grid: the bin layout (CPU tensors). batch: (n_atoms,) int64. cutoff: Å.
        capacity: initial output length (pairs); a too-small value costs a second search.

    Returns:
        i, j: (n_edges,) int64; S: (n_edges, 3) int64, sorted by i.
    """
    bins = torch.cat([grid.bins, grid.atom_bin[:, None]], dim=1).numpy()
    pairs = _search_all(grid.wrapped.numpy(), grid.images.numpy(), bins, batch.numpy(),
                        grid.cell.numpy(), grid.pbc.numpy(), grid.n_bins.numpy(),
                        grid.reach.numpy(), grid.bin_offset.numpy(), grid.n_bins_total,
                        float(cutoff), int(capacity))
    return tuple(torch.from_numpy(x) for x in pairs)
