"""The per-step work of :class:`~mlip.neighbors.verlet.VerletList`, compiled with numba for CPU.

While the cached candidate list is reused (the MD fast path) every step asks which systems went
stale and filters the candidates with fresh distances. In torch each is a chain of about ten
small operations whose dispatch overhead dominates for molecules of tens of atoms; here each is
one compiled call on zero-copy numpy views of the CPU tensors. The torch functions of
:mod:`mlip.neighbors.verlet` stay the reference and the path on other devices. Every
floating-point operation is the one the torch code performs, in the same order, so both give
the same pairs and the same squared distances (see :func:`filter_candidates` for the one case
that could differ in the last bit), and the same stale flags (torch's ``norm`` kernels may round
a length differently, which matters only for a displacement within an ulp of the threshold).
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
import torch


class BuildArrays(NamedTuple):
    """Contiguous numpy views of the state of a CPU build (the cache of a ``VerletList``).

    Refreshed after every build; the compiled functions only read them.
    """

    positions: np.ndarray  # (n_atoms, 3) float64 Å at the build
    cell: np.ndarray  # (n_graphs, 3, 3) float64 Å at the build
    images: np.ndarray  # (n_atoms, 3) float64 integers, cell images removed when wrapping
    widest_shift: np.ndarray  # (n_graphs, 3) float64, widest image shift per periodic axis
    batch: np.ndarray  # (n_atoms,) int64 system index
    pairs: np.ndarray  # (2, n_candidates) int64, rows i (sorted) and j
    shift: np.ndarray  # (n_candidates, 3) int64 image shifts S
    shift64: np.ndarray  # (n_candidates, 3) float64, the same shifts
    system: np.ndarray  # (n_candidates,) int64, system of each candidate
    periodic: bool  # some system is periodic along some axis


def build_arrays(positions: torch.Tensor, cell: torch.Tensor, images: torch.Tensor,
                 widest_shift: torch.Tensor, batch: torch.Tensor, pairs: torch.Tensor,
                 shift: torch.Tensor, shift64: torch.Tensor, system: torch.Tensor,
                 periodic: bool) -> BuildArrays:
    """:class:`BuildArrays` of the CPU tensors of a build (shapes and dtypes as listed there).

    Views where the tensors are contiguous, copies otherwise: call it again after any change.
    """
    tensors = (positions, cell, images, widest_shift, batch, pairs, shift, shift64, system)
    return BuildArrays(*(np.ascontiguousarray(t.numpy()) for t in tensors), periodic)


def _float64_array(tensor: torch.Tensor) -> np.ndarray:
    """A contiguous float64 numpy view (or converted copy) of a CPU tensor."""
    if tensor.dtype != torch.float64:
        tensor = tensor.to(torch.float64)
    return np.ascontiguousarray(tensor.numpy(force=True))  # force=True: cheaper than detach()


def stale_systems(positions: torch.Tensor, cell: torch.Tensor, built: BuildArrays,
                  skin: float) -> torch.Tensor:
    """Which systems the cached list no longer covers, as ``verlet._stale_torch``.

    Args:
        positions: (n_atoms, 3) Å, CPU, any float dtype. cell: (n_graphs, 3, 3) Å, CPU.
        built: the build the list comes from, with the same atoms and systems.
        skin: Å.

    Returns:
        (n_graphs,) bool; NaN positions count as stale.
    """
    return torch.from_numpy(_stale(
        _float64_array(positions), _float64_array(cell), built.positions, built.cell,
        built.images, built.widest_shift, built.batch, built.periodic, skin))


def filter_candidates(positions: torch.Tensor, cell: torch.Tensor, built: BuildArrays,
                      cutoff: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The cached candidates closer than ``cutoff``, as ``verlet._filter_torch``.

    ``D = r[j] - r[i] + S @ cell`` is summed in the order of ``row_times_matrix``. Torch computes
    ``S @ cell`` of a single periodic system with a BLAS matmul instead (bit-identical with the
    MKL build tested); a BLAS that fuses multiply-adds could change the last bit of ``|D|²``
    for shifts beyond ±2 (their products are inexact), in cells thinner than half the cutoff.

    Args:
        positions: (n_atoms, 3) Å, CPU, any float dtype. cell: (n_graphs, 3, 3) Å, CPU.
        built: the build the list comes from, with the same atoms and systems.
        cutoff: Å.

    Returns:
        edge_index: (2, n_edges) int64, in the order of the candidates (sorted by centre atom);
        edge_shift: (n_edges, 3) int64; distance_sq: (n_edges,) float64 Å², |D|²; shortest:
        (n_graphs,) float64 Å, the shortest |D| per system (inf for a system without pairs).
        Freshly allocated arrays, owned by the caller.
    """
    return tuple(map(torch.from_numpy, _filter(
        _float64_array(positions), _float64_array(cell), built.pairs, built.shift,
        built.shift64, built.system, built.periodic, cutoff * cutoff)))


def stale_or_filter(positions: torch.Tensor, cell: torch.Tensor, built: BuildArrays, skin: float,
                    cutoff: float) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """A reused list's whole step in one compiled call: :func:`stale_systems`, then, when no
    system is stale, :func:`filter_candidates` (same arguments).

    Returns:
        stale: (n_graphs,) bool; filtered: the four tensors of :func:`filter_candidates`, or
        None when some system is stale (the list must be rebuilt first).
    """
    any_stale, stale, *filtered = _stale_or_filter(
        _float64_array(positions), _float64_array(cell), built, skin, cutoff * cutoff)
    return torch.from_numpy(stale), None if any_stale else tuple(map(torch.from_numpy, filtered))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _stale_or_filter(pos, cell, built, skin, cutoff_sq):
    """(any stale, stale flags, then the arrays of ``_filter``, empty when any is stale)."""
    stale = _stale(pos, cell, built.positions, built.cell, built.images, built.widest_shift,
                   built.batch, built.periodic, skin)
    if stale.any():
        return (True, stale, np.empty((2, 0), dtype=np.int64), np.empty((0, 3), dtype=np.int64),
                np.empty(0), np.empty(0))
    edge_index, edge_shift, kept_sq, shortest = _filter(
        pos, cell, built.pairs, built.shift, built.shift64, built.system, built.periodic,
        cutoff_sq)
    return False, stale, edge_index, edge_shift, kept_sq, shortest


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _stale(pos, cell, pos0, cell0, images, widest_shift, batch, periodic, skin):
    """(n_graphs,) bool stale flags; the rule and the operations of ``verlet._stale_torch``."""
    n_graphs = cell.shape[0]
    change = np.zeros((n_graphs, 3, 3))  # C - C0 per system (zero without a periodic axis)
    cell_term = np.zeros(n_graphs)  # sum_k s_k |C_k - C0_k| Å
    if periodic:
        for g in range(n_graphs):
            for k in range(3):
                for m in range(3):
                    change[g, k, m] = cell[g, k, m] - cell0[g, k, m]
                x, y, z = change[g, k, 0], change[g, k, 1], change[g, k, 2]
                cell_term[g] += widest_shift[g, k] * np.sqrt(x * x + y * y + z * z)
    largest_sq = np.zeros(n_graphs)  # max |e_i|² per system Å², NaN once any e_i is NaN
    for a in range(pos.shape[0]):
        g = batch[a]
        x = pos[a, 0] - pos0[a, 0]
        y = pos[a, 1] - pos0[a, 1]
        z = pos[a, 2] - pos0[a, 2]
        if periodic:  # e_a = (r_a - r0_a) - n_a @ (C - C0)
            n0, n1, n2 = images[a, 0], images[a, 1], images[a, 2]
            x -= n0 * change[g, 0, 0] + n1 * change[g, 1, 0] + n2 * change[g, 2, 0]
            y -= n0 * change[g, 0, 1] + n1 * change[g, 1, 1] + n2 * change[g, 2, 1]
            z -= n0 * change[g, 0, 2] + n1 * change[g, 1, 2] + n2 * change[g, 2, 2]
        sq = x * x + y * y + z * z
        if largest_sq[g] == largest_sq[g] and not sq <= largest_sq[g]:  # larger or NaN
            largest_sq[g] = sq
    stale = np.empty(n_graphs, dtype=np.bool_)
    for g in range(n_graphs):
        stale[g] = (cell_term[g] > skin
                    or not np.sqrt(largest_sq[g]) <= 0.5 * (skin - cell_term[g]))
    return stale


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _filter(pos, cell, pairs, shift, shift64, system, periodic, cutoff_sq):
    """(edge_index, edge_shift, distance_sq, shortest) of the candidates with |D|² < cutoff_sq."""
    n_candidates = pairs.shape[1]
    distance_sq = np.empty(n_candidates)
    n_edges = 0
    for e in range(n_candidates):
        i, j = pairs[0, e], pairs[1, e]
        x = pos[j, 0] - pos[i, 0]
        y = pos[j, 1] - pos[i, 1]
        z = pos[j, 2] - pos[i, 2]
        if periodic:
            g = system[e]
            s0, s1, s2 = shift64[e, 0], shift64[e, 1], shift64[e, 2]
            x += s0 * cell[g, 0, 0] + s1 * cell[g, 1, 0] + s2 * cell[g, 2, 0]
            y += s0 * cell[g, 0, 1] + s1 * cell[g, 1, 1] + s2 * cell[g, 2, 1]
            z += s0 * cell[g, 0, 2] + s1 * cell[g, 1, 2] + s2 * cell[g, 2, 2]
        d = x * x + y * y + z * z
        distance_sq[e] = d
        if d < cutoff_sq:
            n_edges += 1
    edge_index = np.empty((2, n_edges), dtype=np.int64)
    edge_shift = np.empty((n_edges, 3), dtype=np.int64)
    kept_sq = np.empty(n_edges)
    shortest_sq = np.full(cell.shape[0], np.inf)
    n = 0
    for e in range(n_candidates):
        if distance_sq[e] < cutoff_sq:
            edge_index[0, n], edge_index[1, n] = pairs[0, e], pairs[1, e]
            edge_shift[n, 0], edge_shift[n, 1], edge_shift[n, 2] = (
                shift[e, 0], shift[e, 1], shift[e, 2])
            kept_sq[n] = distance_sq[e]
            shortest_sq[system[e]] = min(shortest_sq[system[e]], distance_sq[e])
            n += 1
    return edge_index, edge_shift, kept_sq, np.sqrt(shortest_sq)
