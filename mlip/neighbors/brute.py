"""Brute-force O(N²·images) neighbour list: the reference the cell lists are tested against.

It shares no code with the cell lists: the frame used to wrap positions is completed with an SVD
null space, and every pair of atoms is tested against every image in the search box.
"""

from __future__ import annotations

import math

import torch


def _completed_cell(cell: torch.Tensor, pbc: torch.Tensor) -> torch.Tensor:
    """Cell rows on periodic axes; an orthonormal basis of their complement elsewhere.

    Args:
        cell: (3, 3) float64 Å. pbc: (3,) bool.
    """
    out = cell.clone()
    periodic = [k for k in range(3) if bool(pbc[k])]
    free = [k for k in range(3) if not bool(pbc[k])]
    if free:
        if periodic:
            _, _, vh = torch.linalg.svd(cell[periodic], full_matrices=True)
            out[free] = vh[len(periodic):]
        else:
            out = torch.eye(3, dtype=cell.dtype, device=cell.device)
    return out


def image_range(frame: torch.Tensor, pbc: torch.Tensor, cutoff: float) -> list[int]:
    """Images to search either way along each axis for positions wrapped into ``frame``.

    Args:
        frame: (3, 3) non-singular, Å. pbc: (3,) bool. cutoff: Å.

    Returns:
        ceil(cutoff / h_k) + 1 on periodic axes (h_k the perpendicular height), 0 else.
    """
    volume = float(torch.linalg.det(frame).abs())
    reach = []
    for k in range(3):
        area = float(torch.linalg.cross(frame[(k + 1) % 3], frame[(k + 2) % 3]).norm())
        reach.append(math.ceil(cutoff * area / volume) + 1 if bool(pbc[k]) else 0)
    return reach


def brute_force_single(
    positions: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor, cutoff: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All pairs of one system with |D| < cutoff, ASE ``ijS`` convention.

    Args:
        positions: (n_atoms, 3) Å, possibly unwrapped. cell: (3, 3) Å. pbc: (3,) bool.

    Returns:
        i, j: (n_edges,) int64; S: (n_edges, 3) int64 with D = r[j] - r[i] + S @ cell.
    """
    device = positions.device
    n = positions.shape[0]
    empty = torch.zeros(0, dtype=torch.long, device=device)
    if n == 0:
        return empty, empty, torch.zeros(0, 3, dtype=torch.long, device=device)
    pbc = pbc.to(device=device, dtype=torch.bool)
    c64 = cell.detach().to(torch.float64)
    frame = _completed_cell(c64, pbc)
    frac = torch.linalg.solve(frame.T, positions.detach().to(torch.float64).T).T  # (n_atoms, 3)
    image_counts = torch.where(pbc, torch.floor(frac), torch.zeros_like(frac))
    pos = positions.detach().to(torch.float64) - image_counts @ c64
    axes = [torch.arange(-r, r + 1, device=device) for r in image_range(frame, pbc, cutoff)]
    shifts = torch.cartesian_prod(*axes).reshape(-1, 3)  # (n_shifts, 3)
    shift_vec = shifts.to(torch.float64) @ c64
    zero_shift = (shifts == 0).all(dim=1)
    rows = max(1, (1 << 22) // (n * shifts.shape[0]))  # centre atoms per chunk, bounds memory
    parts = []
    for start in range(0, n, rows):
        centre = torch.arange(start, min(start + rows, n), device=device)
        d = pos[None, :, None, :] - pos[centre, None, None, :] + shift_vec[None, None]
        mask = (d * d).sum(-1) < cutoff * cutoff  # (n_centre, n, n_shifts)
        mask &= ~((centre[:, None, None] == torch.arange(n, device=device)[None, :, None])
                  & zero_shift[None, None, :])
        a, j, s = torch.nonzero(mask, as_tuple=True)
        parts.append((centre[a], j, s))
    i, j, s = (torch.cat(p) for p in zip(*parts))
    S = shifts[s] + (image_counts[i] - image_counts[j]).to(torch.long)
    return i, j, S
