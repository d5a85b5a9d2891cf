"""Neighbour lists in the ASE ``ijS`` convention on any torch device.

``D = positions[j] - positions[i] + S @ cell``; every ordered pair with ``|D| < cutoff`` is
listed (a full list); the self pair with ``S = 0`` is excluded and periodic images of an atom
itself are included.
"""

from __future__ import annotations

import torch

from mlip.neighbors._validate import normalize_inputs
from mlip.neighbors.brute import brute_force_single

__all__ = ["neighbor_list"]


def neighbor_list(
    positions: torch.Tensor,
    cell: torch.Tensor,
    pbc: torch.Tensor,
    cutoff: float,
    batch: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Neighbour pairs of one or many systems; no pair ever crosses systems.

    Args:
        positions: (n_atoms, 3) Å (unwrapped positions are fine).
        cell: (3, 3) or (n_graphs, 3, 3) Å, rows are lattice vectors.
        pbc: (3,) or (n_graphs, 3) bool.
        cutoff: Å.
        batch: (n_atoms,) int64 sorted system index; None for a single system.

    Returns:
        i: (n_edges,) int64 centre atoms; j: (n_edges,) int64 neighbours (global indices);
        S: (n_edges, 3) int64 integer cell shifts.
    """
    positions, cell, pbc, batch = normalize_inputs(positions, cell, pbc, cutoff, batch)
    counts = torch.bincount(batch, minlength=cell.shape[0]).tolist()
    offsets = [0]
    for c in counts:
        offsets.append(offsets[-1] + c)
    parts_i, parts_j, parts_s = [], [], []
    for g, (start, stop) in enumerate(zip(offsets[:-1], offsets[1:])):
        i, j, S = brute_force_single(positions[start:stop], cell[g], pbc[g], cutoff)
        parts_i.append(i + start)
        parts_j.append(j + start)
        parts_s.append(S)
    if not parts_i:
        empty = torch.zeros(0, dtype=torch.long, device=positions.device)
        return empty, empty, torch.zeros(0, 3, dtype=torch.long, device=positions.device)
    return torch.cat(parts_i), torch.cat(parts_j), torch.cat(parts_s)
