"""Batched cell-list pair search in pure torch (any device; the default backend on GPUs).

Candidates are expanded exactly (no padding) from per-(atom, bin offset) counts with
``repeat_interleave``, in chunks of at most ``max_candidates`` so that memory stays O(N) however
large the batch. Pairs come out in the order of :mod:`mlip.neighbors.cell_list_numba`.
"""

from __future__ import annotations

import itertools

import torch

from mlip.neighbors.grid import Grid

# Candidate pairs held in memory at once (about 100 bytes each).
DEFAULT_MAX_CANDIDATES = 1 << 22


def _offsets(grid: Grid) -> torch.Tensor:
    """(n_offsets, 3) int64 bin offsets up to the largest reach, lexicographic order."""
    reach = grid.reach.max(dim=0).values.tolist() if grid.reach.numel() else [0, 0, 0]
    ranges = [range(-r, r + 1) for r in reach]
    return torch.tensor(list(itertools.product(*ranges)), dtype=torch.long,
                        device=grid.bins.device).reshape(-1, 3)


def _neighbor_bins(grid: Grid, batch: torch.Tensor, offsets: torch.Tensor,
                   atoms: slice) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bins next to a slice of atoms.

    Returns:
        target: (n, n_offsets) int64 global bin index (0 where invalid);
        shift: (n, n_offsets, 3) int64 image shift of that bin; valid: (n, n_offsets) bool.
    """
    g = batch[atoms]
    n_bins = grid.n_bins[g][:, None, :]  # (n, 1, 3)
    pbc = grid.pbc[g][:, None, :]
    t = grid.bins[atoms][:, None, :] + offsets[None]  # (n, n_offsets, 3)
    shift = torch.div(t, n_bins, rounding_mode="floor")
    t = t - shift * n_bins
    valid = (offsets[None].abs() <= grid.reach[g][:, None, :]).all(dim=2)
    valid &= (pbc | (shift == 0)).all(dim=2)
    shift = torch.where(pbc, shift, torch.zeros_like(shift))
    target = (t[..., 0] * n_bins[..., 1] + t[..., 1]) * n_bins[..., 2] + t[..., 2]
    target = torch.where(valid, target + grid.bin_offset[g][:, None], torch.zeros_like(target))
    return target, shift, valid


def _chunks(per_atom: torch.Tensor, limit: int, max_atoms: int) -> list[tuple[int, int]]:
    """Consecutive atom ranges of at most ``max_atoms`` atoms whose candidates start within one
    window of ``limit`` (so a range holds < limit + the largest per-atom count candidates)."""
    begin = torch.cumsum(per_atom, 0) - per_atom
    index = torch.arange(per_atom.numel(), device=per_atom.device)
    key = torch.div(begin, limit, rounding_mode="floor") * (per_atom.numel() // max_atoms + 1)
    key = key + torch.div(index, max_atoms, rounding_mode="floor")
    sizes = torch.unique_consecutive(key, return_counts=True)[1].tolist()
    ends = list(itertools.accumulate(sizes))
    return list(zip([0] + ends[:-1], ends))


def _pairs_of_chunk(grid: Grid, batch: torch.Tensor, offsets: torch.Tensor, start: torch.Tensor,
                    order: torch.Tensor, sorted_pos: torch.Tensor, atoms: slice, cutoff: float):
    """Exact pairs with centres in one slice of atoms, in the documented order."""
    target, shift, valid = _neighbor_bins(grid, batch, offsets, atoms)
    n, n_offsets = target.shape
    counts = torch.where(valid, start[target + 1] - start[target], 0).flatten()  # (n * n_offsets,)
    total = int(counts.sum())
    entry = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts,
                                    output_size=total)  # (n_candidates,) index into (n, n_offsets)
    base = start[target.flatten()] - (torch.cumsum(counts, 0) - counts)
    slot = torch.arange(total, device=counts.device) + base[entry]  # into the bin-sorted atoms
    # centre minus the image shift, once per (atom, offset): D = r_j - (r_i - S @ cell)
    cell = grid.cell[batch[atoms]]  # (n, 3, 3)
    centre = grid.wrapped[atoms][:, None, :] - (shift.to(torch.float64)[..., None] * cell[:, None]).sum(2)
    d = sorted_pos.index_select(0, slot) - centre.reshape(-1, 3).index_select(0, entry)
    keep = (d * d).sum(dim=1) < cutoff * cutoff
    entry, slot = entry[keep], slot[keep]
    i = atoms.start + torch.div(entry, n_offsets, rounding_mode="floor")
    j = order[slot]
    s = shift.reshape(-1, 3)[entry]
    not_self = (i != j) | (s != 0).any(dim=1)
    i, j, s = i[not_self], j[not_self], s[not_self]
    return i, j, s + grid.images[i] - grid.images[j]


def search_pairs_torch(grid: Grid, batch: torch.Tensor, cutoff: float,
                       max_candidates: int = DEFAULT_MAX_CANDIDATES
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pairs of a binned batch on the grid's device.

    Args:
        grid: the bin layout. batch: (n_atoms,) int64. cutoff: Å.
        max_candidates: candidate pairs processed at once (bounds memory; ≥ 1).

    Returns:
        i, j: (n_edges,) int64; S: (n_edges, 3) int64, sorted by i.
    """
    order = torch.argsort(grid.atom_bin, stable=True)
    start = torch.zeros(grid.n_bins_total + 1, dtype=torch.long, device=order.device)
    start[1:] = torch.cumsum(torch.bincount(grid.atom_bin, minlength=grid.n_bins_total), 0)
    offsets = _offsets(grid)
    n_atoms = grid.bins.shape[0]
    rows = max(1, max_candidates // max(1, offsets.shape[0]))
    per_atom = []
    for a in range(0, n_atoms, rows):
        target, _, valid = _neighbor_bins(grid, batch, offsets, slice(a, min(a + rows, n_atoms)))
        per_atom.append(torch.where(valid, start[target + 1] - start[target], 0).sum(dim=1))
    sorted_pos = grid.wrapped[order]
    parts = [_pairs_of_chunk(grid, batch, offsets, start, order, sorted_pos, slice(a, b), cutoff)
             for a, b in _chunks(torch.cat(per_atom), max(1, max_candidates), rows)]
    return tuple(torch.cat(p) for p in zip(*parts))
