"""Batched cell-list pair search in pure torch (any device; the default backend on GPUs).

Work is ragged, never padded to the largest system: every atom gets exactly the bin offsets of
its own system's search range (``(2 m + 1)`` per axis), and candidates are expanded exactly from
per-(atom, offset) bin counts with ``repeat_interleave``. Atoms are processed in chunks of at most
about ``max_candidates`` entries, so memory stays O(N) however large the batch. Pairs come out in
the order of :mod:`mlip.neighbors.cell_list_numba`.
"""

from __future__ import annotations

import itertools

import torch

from mlip.neighbors.grid import Grid, row_times_matrix

# (atom, offset) entries and candidate pairs held in memory at once (about 100 bytes each).
DEFAULT_MAX_CANDIDATES = 1 << 22


def _chunks(per_atom: torch.Tensor, limit: int) -> list[tuple[int, int]]:
    """Consecutive atom ranges whose work starts within one window of ``limit`` (so a range
    holds less than ``limit`` plus the largest per-atom amount)."""
    begin = torch.cumsum(per_atom, 0) - per_atom
    key = torch.div(begin, limit, rounding_mode="floor")
    sizes = torch.unique_consecutive(key, return_counts=True)[1].tolist()
    ends = list(itertools.accumulate(sizes))
    return list(zip([0] + ends[:-1], ends))


def _entries(grid: Grid, batch: torch.Tensor, n_offsets: torch.Tensor,
             atoms: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The (atom, bin offset) entries of a range of atoms, offsets in lexicographic order.

    Returns:
        atom: (n_entries,) int64 global atom index; target: (n_entries,) int64 global bin
        (0 where invalid); shift: (n_entries, 3) int64 image shift of that bin;
        valid: (n_entries,) bool.
    """
    a, b = atoms
    device = batch.device
    counts = n_offsets[a:b]
    atom = torch.repeat_interleave(torch.arange(a, b, device=device), counts)
    first = torch.cumsum(counts, 0) - counts
    local = torch.arange(atom.numel(), device=device) - first[atom - a]
    g = batch[atom]
    reach = grid.reach[g]  # (n_entries, 3)
    width = 2 * reach + 1
    offset = torch.stack([torch.div(local, width[:, 1] * width[:, 2], rounding_mode="floor"),
                          torch.div(local, width[:, 2], rounding_mode="floor") % width[:, 1],
                          local % width[:, 2]], dim=1) - reach
    n_bins, pbc = grid.n_bins[g], grid.pbc[g]
    t = grid.bins[atom] + offset
    shift = torch.div(t, n_bins, rounding_mode="floor")
    t = t - shift * n_bins
    valid = (pbc | (shift == 0)).all(dim=1)
    shift = torch.where(pbc, shift, torch.zeros_like(shift))
    target = (t[:, 0] * n_bins[:, 1] + t[:, 1]) * n_bins[:, 2] + t[:, 2] + grid.bin_offset[g]
    return atom, torch.where(valid, target, torch.zeros_like(target)), shift, valid


def _pairs_of_chunk(grid: Grid, batch: torch.Tensor, n_offsets: torch.Tensor, start: torch.Tensor,
                    order: torch.Tensor, sorted_pos: torch.Tensor, atoms: tuple[int, int],
                    cutoff: float):
    """Exact pairs with centres in one range of atoms, in the documented order."""
    atom, target, shift, valid = _entries(grid, batch, n_offsets, atoms)
    counts = torch.where(valid, start[target + 1] - start[target], 0)  # (n_entries,)
    total = int(counts.sum())
    entry = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts,
                                    output_size=total)  # (n_candidates,)
    base = start[target] - (torch.cumsum(counts, 0) - counts)
    slot = torch.arange(total, device=counts.device) + base[entry]  # into the bin-sorted atoms
    # centre minus the image shift, once per entry: D = r_j - (r_i - S @ cell)
    shift_vectors = row_times_matrix(shift.to(torch.float64), grid.cell[batch[atom]])
    centre = grid.wrapped[atom] - shift_vectors  # (n_entries, 3) Å
    d = sorted_pos.index_select(0, slot) - centre.index_select(0, entry)
    keep = (d * d).sum(dim=1) < cutoff * cutoff
    entry, slot = entry[keep], slot[keep]
    i, j, s = atom[entry], order[slot], shift[entry]
    not_self = (i != j) | (s != 0).any(dim=1)
    i, j, s = i[not_self], j[not_self], s[not_self]
    return i, j, s + grid.images[i] - grid.images[j]


def search_pairs_torch(grid: Grid, batch: torch.Tensor, cutoff: float,
                       max_candidates: int = DEFAULT_MAX_CANDIDATES
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pairs of a binned batch on the grid's device.

    Args:
        grid: the bin layout. batch: (n_atoms,) int64. cutoff: Å.
        max_candidates: entries and candidate pairs processed at once (bounds memory; ≥ 1).

    Returns:
        i, j: (n_edges,) int64; S: (n_edges, 3) int64, sorted by i.
    """
    order = torch.argsort(grid.atom_bin, stable=True)
    start = torch.zeros(grid.n_bins_total + 1, dtype=torch.long, device=order.device)
    start[1:] = torch.cumsum(torch.bincount(grid.atom_bin, minlength=grid.n_bins_total), 0)
    n_offsets = (2 * grid.reach + 1).prod(dim=1)[batch]  # (n_atoms,)
    work = []
    for a, b in _chunks(n_offsets, max_candidates):
        atom, target, _, valid = _entries(grid, batch, n_offsets, (a, b))
        counts = torch.where(valid, start[target + 1] - start[target], 0)
        work.append(torch.zeros(b - a, dtype=torch.long, device=order.device)
                    .index_add_(0, atom - a, counts) + n_offsets[a:b])
    sorted_pos = grid.wrapped[order]
    parts = [_pairs_of_chunk(grid, batch, n_offsets, start, order, sorted_pos, chunk, cutoff)
             for chunk in _chunks(torch.cat(work), max_candidates)]
    return tuple(torch.cat(p) for p in zip(*parts))
