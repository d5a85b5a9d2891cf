"""Bin layout shared by the cell-list backends: wrapping, bin sizes and search ranges.

Every system gets a *binning frame* ``F`` (3, 3): its rows are the cell rows along periodic
axes and vectors orthogonal to them along non-periodic axes (the cell rows there play no
role in the ``ijS`` convention). Fractional coordinates ``u = r @ inv(F)`` are wrapped into
``[0, 1)`` along periodic axes (``n = floor(u)`` image counts are remembered so that shifts are
reported relative to the positions as given) and binned over the bounding box of the atoms along
non-periodic axes. Two atoms closer than ``rc`` differ by at most ``rc / h_k`` in ``u_k``
(``h_k`` the perpendicular height of ``F``), hence by at most ``m_k = ceil(rc * nb_k / h_k)``
bins, so searching ``m_k`` bins either way along every axis finds every pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Bins per cutoff length along an axis: bins are at least rc / BINS_PER_CUTOFF wide.
BINS_PER_CUTOFF = 1
# At most this many bins per atom (plus one) in a system; sparse systems get wider bins.
MAX_BINS_PER_ATOM = 2
# Relative safety margin on the search range against rounding in the fractional coordinates.
SEARCH_MARGIN = 1e-10


@dataclass(frozen=True)
class Grid:
    """A batch of systems binned for a cell-list search (float64, on the input device).

    Attributes:
        wrapped: (n_atoms, 3) Å, positions wrapped into the cell along periodic axes.
        images: (n_atoms, 3) int64, ``positions = wrapped + images @ cell``.
        bins: (n_atoms, 3) int64, bin coordinates of each atom within its system.
        atom_bin: (n_atoms,) int64, global linear bin index (systems laid out one after another).
        cell: (n_graphs, 3, 3) Å, float64 cells (rows lattice vectors).
        pbc: (n_graphs, 3) bool.
        n_bins: (n_graphs, 3) int64, bins per axis.
        reach: (n_graphs, 3) int64, bins to search either way along each axis.
        bin_offset: (n_graphs,) int64, global index of each system's first bin.
        n_bins_total: total number of bins in the batch.
        extent: (n_graphs, 3) Å, binned length along each axis (perpendicular height or span).
    """

    wrapped: torch.Tensor
    images: torch.Tensor
    bins: torch.Tensor
    atom_bin: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    n_bins: torch.Tensor
    reach: torch.Tensor
    bin_offset: torch.Tensor
    n_bins_total: int
    extent: torch.Tensor


def _cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a × b`` along the last axis, a, b: (..., 3).

    Written as separate products and differences (``torch.linalg.cross`` may fuse them into
    multiply-adds) so that :mod:`mlip.neighbors.grid_numba` reproduces it bit for bit.
    """
    a0, a1, a2 = a.unbind(-1)
    b0, b1, b2 = b.unbind(-1)
    return torch.stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], dim=-1)


def _length(v: torch.Tensor) -> torch.Tensor:
    """Euclidean length along the last axis, ``sqrt((x² + y²) + z²)``. v: (..., 3) -> (...)."""
    x, y, z = v.unbind(-1)
    return torch.sqrt(x * x + y * y + z * z)


def row_times_matrix(v: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Row vectors times per-row matrices, ``v[n] @ m[n]`` (faster than a batched matmul).

    Args:
        v: (n, 3). m: (n, 3, 3).

    Returns:
        (n, 3).
    """
    return v[:, 0:1] * m[:, 0] + v[:, 1:2] * m[:, 1] + v[:, 2:3] * m[:, 2]


def binning_frame(cell: torch.Tensor, pbc: torch.Tensor) -> torch.Tensor:
    """Cell rows on periodic axes, an orthogonal completion on the others.

    The completion rows are cross products, not unit vectors: no square root enters the
    fractional coordinates, so :mod:`mlip.neighbors.grid_numba` reproduces them bit for bit
    (torch's vectorised float64 ``sqrt`` is not always correctly rounded).

    Args:
        cell: (n_graphs, 3, 3) Å float64, rows lattice vectors. pbc: (n_graphs, 3) bool.

    Returns:
        (n_graphs, 3, 3) float64, non-singular for cells that passed validation.
    """
    if bool(pbc.all()):
        return cell
    if not bool(pbc.any()):
        return torch.eye(3, dtype=cell.dtype, device=cell.device).expand_as(cell)
    n_periodic = pbc.sum(dim=1)  # (n_graphs,)
    rolled = [_cross(cell[:, (k + 1) % 3], cell[:, (k + 2) % 3]) for k in range(3)]
    # one periodic axis p with row a: two unit vectors orthogonal to a and to each other
    a = (cell * pbc[:, :, None]).sum(dim=1)  # (n_graphs, 3)
    e = torch.nn.functional.one_hot(a.abs().argmin(dim=1), 3).to(cell.dtype)
    u = _cross(a, e)
    v = _cross(a, u)
    p = pbc.to(torch.long).argmax(dim=1)  # (n_graphs,)
    eye = torch.eye(3, dtype=cell.dtype, device=cell.device)
    rows = []
    for k in range(3):
        one_axis = torch.where(((p + 1) % 3 == k)[:, None], u, v)
        row = torch.where((n_periodic == 1)[:, None], one_axis, eye[k].expand_as(u))
        row = torch.where((n_periodic == 2)[:, None], rolled[k], row)
        rows.append(torch.where(pbc[:, k, None], cell[:, k], row))
    return torch.stack(rows, dim=1)


def frame_geometry(frame: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse and perpendicular heights of binning frames.

    Args:
        frame: (n_graphs, 3, 3) float64 rows.

    Returns:
        inverse: (n_graphs, 3, 3), ``frame @ inverse = 1``; heights: (n_graphs, 3) Å.
    """
    rows = torch.stack([_cross(frame[:, (k + 1) % 3], frame[:, (k + 2) % 3])
                        for k in range(3)], dim=1)  # (n_graphs, 3, 3), row k
    f, c = frame[:, 0], rows[:, 0]
    det = f[:, 0] * c[:, 0] + f[:, 1] * c[:, 1] + f[:, 2] * c[:, 2]  # (n_graphs,)
    inverse = rows.transpose(1, 2) / det[:, None, None]
    heights = det.abs()[:, None] / _length(rows)
    return inverse, heights


def _cap_bins(n_bins: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Halve the bin counts of systems holding more than MAX_BINS_PER_ATOM bins per atom."""
    cap = MAX_BINS_PER_ATOM * counts + 1
    while True:
        over = n_bins.prod(dim=1) > cap
        if not bool(over.any()):
            return n_bins
        n_bins = torch.where(over[:, None], (n_bins // 2).clamp_min(1), n_bins)


def wrap(positions: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor, batch: torch.Tensor
         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fractional coordinates in the binning frame, wrapped along periodic axes.

    Args:
        positions: (n_atoms, 3) Å float64. cell: (n_graphs, 3, 3) Å float64.
        pbc: (n_graphs, 3) bool. batch: (n_atoms,) int64.

    Returns:
        frac: (n_atoms, 3) in [0, 1] on periodic axes; images: (n_atoms, 3) float64 integers,
        the cell images removed; heights: (n_graphs, 3) Å, perpendicular heights of the frames.
    """
    inverse, heights = frame_geometry(binning_frame(cell, pbc))
    frac = row_times_matrix(positions, inverse[batch])  # (n_atoms, 3)
    images = torch.where(pbc[batch], torch.floor(frac), torch.zeros_like(frac))
    return frac - images, images, heights


def build_grid(positions: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor,
               batch: torch.Tensor, counts: torch.Tensor, cutoff: float) -> Grid:
    """Wrap and bin a validated batch.

    Args:
        positions: (n_atoms, 3) Å. cell: (n_graphs, 3, 3) Å. pbc: (n_graphs, 3) bool.
        batch: (n_atoms,) int64 sorted system index. counts: (n_graphs,) int64 atoms per system.
        cutoff: Å, > 0.
    """
    pos = positions.detach().to(torch.float64)
    c64 = cell.detach().to(torch.float64)
    frac, images, heights = wrap(pos, c64, pbc, batch)
    wrapped = pos - row_times_matrix(images, c64[batch])
    n_graphs = cell.shape[0]
    big = torch.full((n_graphs, 3), float("inf"), dtype=torch.float64, device=pos.device)
    index = batch[:, None].expand(-1, 3)
    low = big.scatter_reduce(0, index, frac, "amin")
    high = (-big).scatter_reduce(0, index, frac, "amax")
    span = torch.where(pbc | (counts[:, None] == 0), 1.0, high - low)  # (n_graphs, 3)
    length = span * heights  # Å, the extent that is binned along each axis
    cap = (MAX_BINS_PER_ATOM * counts + 1)[:, None].to(torch.float64)
    n_bins = torch.floor(torch.minimum(length * BINS_PER_CUTOFF / cutoff, cap)).to(torch.long)
    n_bins = _cap_bins(n_bins.clamp_min(1), counts)
    reach = torch.ceil(cutoff * n_bins / length * (1 + SEARCH_MARGIN))
    reach = torch.where(pbc, reach, torch.minimum(reach, (n_bins - 1).to(reach.dtype)))
    reach = reach.to(torch.long)  # a zero-width non-periodic span has one bin and reach 0
    origin = torch.where(pbc, torch.zeros_like(low), low)
    span = torch.where(span > 0, span, torch.ones_like(span))
    scaled = (frac - origin[batch]) / span[batch] * n_bins[batch]
    bins = torch.minimum(torch.floor(scaled).to(torch.long).clamp_min(0), n_bins[batch] - 1)
    per_system = n_bins.prod(dim=1)
    bin_offset = torch.cumsum(per_system, 0) - per_system
    nb = n_bins[batch]
    atom_bin = bin_offset[batch] + (bins[:, 0] * nb[:, 1] + bins[:, 1]) * nb[:, 2] + bins[:, 2]
    return Grid(wrapped=wrapped, images=images.to(torch.long), bins=bins, atom_bin=atom_bin,
                cell=c64, pbc=pbc, n_bins=n_bins, reach=reach, bin_offset=bin_offset,
                n_bins_total=int(per_system.sum()), extent=length)
