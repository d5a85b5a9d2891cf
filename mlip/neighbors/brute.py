"""Brute-force O(N²·images) neighbour list: the reference the cell list is tested against."""

from __future__ import annotations

import math

import torch


def image_range(cell: torch.Tensor, pbc: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Number of periodic images to search along each axis for wrapped positions.

    Args:
        cell: (3, 3) Å, rows lattice vectors. pbc: (3,) bool. cutoff: Å.

    Returns:
        (3,) int64: ceil(cutoff / h_k) + 1 on periodic axes (h_k the perpendicular height), 0 else.
    """
    c64 = cell.to(torch.float64)
    out = torch.zeros(3, dtype=torch.long)
    if not bool(pbc.any()):
        return out
    volume = torch.linalg.det(c64).abs() if bool(pbc.all()) else None
    for k in range(3):
        if not bool(pbc[k]):
            continue
        a, b = c64[(k + 1) % 3], c64[(k + 2) % 3]
        if volume is not None:
            height = float(volume / torch.linalg.cross(a, b).norm())
        else:  # mixed pbc: height of row k over the plane of the other periodic rows
            others = [c64[m] for m in range(3) if m != k and bool(pbc[m])]
            if len(others) == 2:
                n = torch.linalg.cross(others[0], others[1])
                height = float((c64[k] @ n).abs() / n.norm())
            elif len(others) == 1:
                o = others[0]
                height = float(torch.linalg.cross(c64[k], o).norm() / o.norm())
            else:
                height = float(c64[k].norm())
        out[k] = math.ceil(cutoff / height) + 1
    return out


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
    pos = positions.detach().to(torch.float64)
    c64 = cell.detach().to(torch.float64)
    image_counts = torch.zeros(n, 3, dtype=torch.float64, device=device)
    if bool(pbc.any()):
        frac = torch.linalg.solve(c64.T, pos.T).T  # (n_atoms, 3)
        image_counts = torch.where(pbc.to(device), torch.floor(frac), torch.zeros_like(frac))
        pos = pos - image_counts @ c64
    reach = image_range(c64.cpu(), pbc.cpu(), cutoff)
    axes = [torch.arange(-int(r), int(r) + 1, device=device) for r in reach.tolist()]
    shifts = torch.cartesian_prod(*axes).reshape(-1, 3)  # (n_shifts, 3)
    shift_vec = shifts.to(torch.float64) @ c64
    d = pos[None, :, None, :] - pos[:, None, None, :] + shift_vec[None, None]  # (n, n, s, 3)
    mask = (d * d).sum(-1) < cutoff * cutoff
    zero_shift = (shifts == 0).all(dim=1)
    eye = torch.eye(n, dtype=torch.bool, device=device)
    mask &= ~(eye[:, :, None] & zero_shift[None, None, :])
    i, j, s = torch.nonzero(mask, as_tuple=True)
    S = shifts[s] + (image_counts[i] - image_counts[j]).to(torch.long)
    return i, j, S
