"""The bin layout of :mod:`mlip.neighbors.grid`, compiled with numba for CPU arrays.

One compiled call replaces the ~60 small torch operations of
:func:`mlip.neighbors.grid.build_grid`, which dominate the time of a neighbour list for small
systems. Every floating-point operation is
the one the torch code performs, in the same order (including the float32 product in the search
range, from torch's type promotion of ``float * int64``), so both give bit-identical layouts and
the backends return identical pairs.
"""

from __future__ import annotations

import numba
import numpy as np

from mlip.neighbors.grid import BINS_PER_CUTOFF, MAX_BINS_PER_ATOM, SEARCH_MARGIN


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a × b for two (3,) vectors."""
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2],
                     a[0] * b[1] - a[1] * b[0]])


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _frame(cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """Binning frame (3, 3) of one system: cell rows on periodic axes, orthogonal elsewhere."""
    n_periodic = pbc[0] + pbc[1] + pbc[2]
    frame = np.eye(3)
    if n_periodic == 3:
        return cell.copy()
    if n_periodic == 1:
        p = 0 if pbc[0] else (1 if pbc[1] else 2)
        a = cell[p]
        axis = 0  # the first axis where |a| is smallest (argmin)
        for k in range(1, 3):
            if abs(a[k]) < abs(a[axis]):
                axis = k
        e = np.zeros(3)
        e[axis] = 1.0
        u = _cross(a, e)
        v = _cross(a, u)
        for k in range(3):
            frame[k] = u if (p + 1) % 3 == k else v
    for k in range(3):
        if pbc[k]:
            frame[k] = cell[k]
        elif n_periodic == 2:
            frame[k] = _cross(cell[(k + 1) % 3], cell[(k + 2) % 3])
    return frame


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _geometry(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(inverse (3, 3), heights (3,) Å) of a binning frame; ``frame @ inverse = 1``."""
    crosses = np.empty((3, 3))  # column k is frame[k+1] × frame[k+2]
    for k in range(3):
        crosses[:, k] = _cross(frame[(k + 1) % 3], frame[(k + 2) % 3])
    det = frame[0, 0] * crosses[0, 0] + frame[0, 1] * crosses[1, 0] + frame[0, 2] * crosses[2, 0]
    heights = np.empty(3)
    for k in range(3):
        c = crosses[:, k]
        heights[k] = abs(det) / np.sqrt(c[0] * c[0] + c[1] * c[1] + c[2] * c[2])
    return crosses / det, heights


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _wrap_atoms(pos, cell, pbc, batch, inverse):
    """(frac, images, wrapped) of every atom, as :func:`mlip.neighbors.grid.wrap`."""
    n_atoms = pos.shape[0]
    frac, images, wrapped = np.empty((n_atoms, 3)), np.empty((n_atoms, 3)), np.empty((n_atoms, 3))
    for a in range(n_atoms):
        g = batch[a]
        m, c = inverse[g], cell[g]
        for k in range(3):
            f = pos[a, 0] * m[0, k] + pos[a, 1] * m[1, k] + pos[a, 2] * m[2, k]
            n = np.floor(f) if pbc[g, k] else 0.0
            frac[a, k] = f - n
            images[a, k] = n
        for k in range(3):
            wrapped[a, k] = pos[a, k] - (images[a, 0] * c[0, k] + images[a, 1] * c[1, k]
                                         + images[a, 2] * c[2, k])
    return frac, images, wrapped


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _bins_per_axis(length, pbc, counts, cutoff):
    """(n_bins (n_graphs, 3) int64, reach (n_graphs, 3) int64) as in ``build_grid``."""
    n_graphs = length.shape[0]
    n_bins = np.empty((n_graphs, 3), dtype=np.int64)
    reach = np.empty((n_graphs, 3), dtype=np.int64)
    for g in range(n_graphs):
        cap = MAX_BINS_PER_ATOM * counts[g] + 1
        for k in range(3):
            n_bins[g, k] = max(int(np.floor(min(length[g, k] * BINS_PER_CUTOFF / cutoff,
                                                float(cap)))), 1)
        while n_bins[g, 0] * n_bins[g, 1] * n_bins[g, 2] > cap:
            for k in range(3):
                n_bins[g, k] = max(n_bins[g, k] // 2, 1)
        for k in range(3):
            # torch promotes ``cutoff * n_bins`` (float * int64) to float32
            product = np.float64(np.float32(cutoff) * np.float32(n_bins[g, k]))
            r = np.ceil(product / length[g, k] * (1 + SEARCH_MARGIN))
            if not pbc[g, k]:
                r = min(r, float(n_bins[g, k] - 1))
            reach[g, k] = int(r)
    return n_bins, reach


@numba.njit(cache=True, nogil=True, error_model="numpy")
def bin_systems(pos, cell, pbc, batch, counts, cutoff):
    """Wrap and bin a validated CPU batch, exactly as :func:`mlip.neighbors.grid.build_grid`.

    Args:
        pos: (n_atoms, 3) Å float64. cell: (n_graphs, 3, 3) Å float64. pbc: (n_graphs, 3) bool.
        batch: (n_atoms,) int64 sorted. counts: (n_graphs,) int64 atoms per system.
        cutoff: Å.

    Returns:
        wrapped (n_atoms, 3) Å; images (n_atoms, 3) int64; bins (n_atoms, 4) int64 (bin
        coordinates, then the global bin); n_bins, reach (n_graphs, 3) int64; bin_offset
        (n_graphs,) int64; n_bins_total; extent (n_graphs, 3) Å.
    """
    n_graphs, n_atoms = cell.shape[0], pos.shape[0]
    inverse, heights = np.empty((n_graphs, 3, 3)), np.empty((n_graphs, 3))
    for g in range(n_graphs):
        inverse[g], heights[g] = _geometry(_frame(cell[g], pbc[g]))
    frac, images, wrapped = _wrap_atoms(pos, cell, pbc, batch, inverse)
    low, high = np.full((n_graphs, 3), np.inf), np.full((n_graphs, 3), -np.inf)
    for a in range(n_atoms):
        for k in range(3):
            low[batch[a], k] = min(low[batch[a], k], frac[a, k])
            high[batch[a], k] = max(high[batch[a], k], frac[a, k])
    span, length = np.ones((n_graphs, 3)), np.empty((n_graphs, 3))
    for g in range(n_graphs):
        for k in range(3):
            if not (pbc[g, k] or counts[g] == 0):
                span[g, k] = high[g, k] - low[g, k]
            length[g, k] = span[g, k] * heights[g, k]
            if pbc[g, k]:
                low[g, k] = 0.0
            if not span[g, k] > 0:
                span[g, k] = 1.0
    n_bins, reach = _bins_per_axis(length, pbc, counts, cutoff)
    bin_offset = np.empty(n_graphs, dtype=np.int64)
    total = 0
    for g in range(n_graphs):
        bin_offset[g] = total
        total += n_bins[g, 0] * n_bins[g, 1] * n_bins[g, 2]
    bins = np.empty((n_atoms, 4), dtype=np.int64)
    for a in range(n_atoms):
        g = batch[a]
        for k in range(3):
            scaled = (frac[a, k] - low[g, k]) / span[g, k] * n_bins[g, k]
            bins[a, k] = min(max(int(np.floor(scaled)), 0), n_bins[g, k] - 1)
        bins[a, 3] = bin_offset[g] + (bins[a, 0] * n_bins[g, 1] + bins[a, 1]) * n_bins[g, 2] \
            + bins[a, 2]
    return (wrapped, images.astype(np.int64), bins, n_bins, reach, bin_offset, total, length)
