"""Input checks shared by every neighbour-list backend.

Shapes, dtypes and devices are checked in plain Python. Values (batch order and range, finite
positions, non-singular periodic cells) are checked by one compiled scan for CPU tensors and by
torch operations on other devices; both raise the same messages.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from mlip.errors import InvalidStructureError

# value problems reported by _scan_values, in the order they are checked
_OK, _BATCH_RANGE, _UNSORTED, _NON_FINITE, _CELL_NON_FINITE, _SINGULAR = range(6)


def normalize_inputs(
    positions: torch.Tensor,
    cell: torch.Tensor,
    pbc: torch.Tensor,
    cutoff: float,
    batch: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check shapes, devices and values; return batched ``(positions, cell, pbc, batch)``.

    Args:
        positions: (n_atoms, 3) Å.
        cell: (3, 3) or (n_graphs, 3, 3) Å, rows are lattice vectors.
        pbc: (3,) or (n_graphs, 3) bool.
        cutoff: Å, > 0.
        batch: (n_atoms,) int64 system index, sorted; None means one system.

    Returns:
        positions (n_atoms, 3) as given; cell (n_graphs, 3, 3); pbc (n_graphs, 3) bool;
        batch (n_atoms,) int64.

    Raises:
        InvalidStructureError: naming the problem (shape, device, NaN atoms, singular cell).
    """
    cell, pbc, batch = _check_layout(positions, cell, pbc, cutoff, batch)
    if positions.device.type == "cpu":
        pos, cell64, pbc, batch = _cpu_arrays(positions, cell, pbc, batch)
        _raise_for(_scan_values(pos, cell64, pbc, batch), pos, cell64, pbc)
        return positions, cell, torch.from_numpy(pbc), torch.from_numpy(batch)
    _check_values_torch(positions, cell, pbc, batch)
    return positions, cell, pbc.to(torch.bool), batch.to(torch.long)


def normalize_arrays(positions: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor,
                     cutoff: float, batch: torch.Tensor | None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`normalize_inputs` for CPU tensors, returning float64/bool/int64 numpy arrays.

    Returns:
        positions (n_atoms, 3) Å float64; cell (n_graphs, 3, 3) Å float64; pbc (n_graphs, 3)
        bool; batch (n_atoms,) int64 (views of the inputs where no conversion was needed).
    """
    cell, pbc, batch = _check_layout(positions, cell, pbc, cutoff, batch)
    arrays = _cpu_arrays(positions, cell, pbc, batch)
    _raise_for(_scan_values(*arrays), *arrays[:3])
    return arrays


def _cpu_arrays(positions: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor,
               batch: torch.Tensor | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Contiguous float64/bool/int64 numpy views (or converted copies) of batched CPU inputs.

    Contiguity keeps the compiled functions at one specialisation each (no recompiling for
    sliced or expanded inputs).
    """
    pos = np.ascontiguousarray(positions.detach().to(torch.float64).numpy())
    batch = (np.zeros(pos.shape[0], dtype=np.int64) if batch is None
             else np.ascontiguousarray(batch.detach().to(torch.long).numpy()))
    return (pos, np.ascontiguousarray(cell.detach().to(torch.float64).numpy()),
            np.ascontiguousarray(pbc.detach().to(torch.bool).numpy()), batch)


def _check_layout(positions: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor, cutoff: float,
                  batch: torch.Tensor | None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Check cutoff, shapes, dtypes and devices; return batched cell, pbc (and batch as given)."""
    if not (cutoff > 0.0) or cutoff != cutoff or cutoff == float("inf"):
        raise InvalidStructureError(f"cutoff must be a finite number > 0, got {cutoff!r}")
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise InvalidStructureError(
            f"positions must have shape (n_atoms, 3), got {tuple(positions.shape)}")
    if not positions.is_floating_point():
        raise InvalidStructureError(
            f"positions must be a floating-point tensor, got {positions.dtype}")
    if cell.ndim not in (2, 3) or cell.shape[-2:] != (3, 3):
        raise InvalidStructureError(
            f"cell must have shape (3, 3) or (n_graphs, 3, 3), got {tuple(cell.shape)}")
    if pbc.shape[-1:] != (3,) or pbc.ndim != cell.ndim - 1 or pbc.shape[:-1] != cell.shape[:-2]:
        raise InvalidStructureError(
            f"pbc shape {tuple(pbc.shape)} does not match cell shape {tuple(cell.shape)}")
    if cell.ndim == 2:
        cell, pbc = cell.unsqueeze(0), pbc.unsqueeze(0)
    n_atoms = positions.shape[0]
    if batch is None:
        if cell.shape[0] != 1:
            raise InvalidStructureError("batch is required when cell holds several systems")
        if positions.device.type != "cpu":
            batch = torch.zeros(n_atoms, dtype=torch.long, device=positions.device)
    else:
        if batch.shape != (n_atoms,):
            raise InvalidStructureError(
                f"batch must have shape ({n_atoms},), got {tuple(batch.shape)}")
        if batch.is_floating_point() or batch.is_complex() or batch.dtype == torch.bool:
            raise InvalidStructureError(f"batch must be an integer tensor, got {batch.dtype}")
    for name, tensor in (("cell", cell), ("pbc", pbc), ("batch", batch)):
        if tensor is not None and tensor.device != positions.device:
            raise InvalidStructureError(
                f"{name} is on {tensor.device} but positions are on {positions.device}")
    return cell, pbc, batch


@numba.njit(cache=True, nogil=True)
def _scan_values(pos, cell, pbc, batch) -> int:
    """The first value problem of a batch (a code above), or _OK."""
    n_graphs = cell.shape[0]
    for a in range(batch.shape[0]):
        if batch[a] < 0 or batch[a] >= n_graphs:
            return _BATCH_RANGE
    for a in range(1, batch.shape[0]):
        if batch[a] < batch[a - 1]:
            return _UNSORTED
    if not np.isfinite(pos).all():
        return _NON_FINITE
    if not np.isfinite(cell).all():
        return _CELL_NON_FINITE
    for g in range(n_graphs):
        if _is_singular(cell[g], pbc[g]):
            return _SINGULAR
    return _OK


@numba.njit(cache=True, nogil=True)
def _is_singular(cell, pbc) -> bool:
    """Whether the periodic rows of one (3, 3) cell are zero or linearly dependent.

    The Gram matrix of the periodic rows, padded with the identity on non-periodic axes, must
    have a determinant above 1e-12 times the product of the squared periodic row lengths.
    """
    if not (pbc[0] or pbc[1] or pbc[2]):
        return False
    gram = np.eye(3)
    scale = 1.0
    for a in range(3):
        if pbc[a]:
            scale *= cell[a, 0] ** 2 + cell[a, 1] ** 2 + cell[a, 2] ** 2
            for b in range(3):
                if pbc[b]:
                    gram[a, b] = cell[a, 0] * cell[b, 0] + cell[a, 1] * cell[b, 1] \
                        + cell[a, 2] * cell[b, 2]
    det = (gram[0, 0] * (gram[1, 1] * gram[2, 2] - gram[1, 2] * gram[2, 1])
           - gram[0, 1] * (gram[1, 0] * gram[2, 2] - gram[1, 2] * gram[2, 0])
           + gram[0, 2] * (gram[1, 0] * gram[2, 1] - gram[1, 1] * gram[2, 0]))
    return not det > 1e-12 * scale


def _raise_for(problem: int, pos: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> None:
    """Raise the InvalidStructureError of a _scan_values code (nothing for _OK)."""
    if problem == _OK:
        return
    if problem == _BATCH_RANGE:
        raise InvalidStructureError(f"batch indices must lie in [0, {cell.shape[0]})")
    if problem == _UNSORTED:
        raise InvalidStructureError("batch must be sorted (atoms of one system contiguous)")
    if problem == _NON_FINITE:
        _raise_non_finite(np.flatnonzero(~np.isfinite(pos).all(axis=1)).tolist())
    if problem == _CELL_NON_FINITE:
        raise InvalidStructureError("cell contains non-finite values")
    g = next(g for g in range(cell.shape[0]) if _is_singular(cell[g], pbc[g]))
    _raise_singular(g, pbc[g].tolist(), cell[g].tolist())


def _raise_non_finite(idx: list[int]) -> None:
    """Raise for the atoms ``idx`` with NaN/inf positions (the first 20 are named)."""
    raise InvalidStructureError(f"non-finite (NaN/inf) positions for atoms {idx[:20]}"
                                + (" ..." if len(idx) > 20 else ""))


def _raise_singular(g: int, pbc: list, cell: list) -> None:
    """Raise for system ``g`` whose periodic cell rows are degenerate."""
    raise InvalidStructureError(
        f"system {g}: cell is singular along its periodic directions (pbc={pbc}, cell={cell})")


def _check_values_torch(positions: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor,
                        batch: torch.Tensor) -> None:
    """The value checks of :func:`_scan_values` with torch operations (non-CPU devices)."""
    if positions.shape[0] and (batch.min() < 0 or batch.max() >= cell.shape[0]):
        raise InvalidStructureError(f"batch indices must lie in [0, {cell.shape[0]})")
    if positions.shape[0] > 1 and bool((batch[1:] < batch[:-1]).any()):
        raise InvalidStructureError("batch must be sorted (atoms of one system contiguous)")
    bad = ~torch.isfinite(positions).all(dim=1)
    if bool(bad.any()):
        _raise_non_finite(torch.nonzero(bad).flatten().tolist())
    _check_cells_torch(cell, pbc.to(torch.bool))


def check_cells(cell: torch.Tensor, pbc: torch.Tensor) -> None:
    """Raise if a periodic direction has a degenerate cell (zero or linearly dependent rows).

    Args:
        cell: (n_graphs, 3, 3) Å. pbc: (n_graphs, 3) bool.
    """
    if cell.device.type != "cpu":
        _check_cells_torch(cell, pbc)
        return
    c64 = np.ascontiguousarray(cell.detach().to(torch.float64).numpy())
    flags = np.ascontiguousarray(pbc.detach().to(torch.bool).numpy())
    empty = np.zeros((0, 3))
    _raise_for(_scan_values(empty, c64, flags, np.zeros(0, dtype=np.int64)), empty, c64, flags)


def _check_cells_torch(cell: torch.Tensor, pbc: torch.Tensor) -> None:
    """:func:`check_cells` with torch operations (non-CPU devices)."""
    if not bool(torch.isfinite(cell).all()):
        raise InvalidStructureError("cell contains non-finite values")
    c64 = cell.detach().to(torch.float64)
    both = pbc[:, :, None] & pbc[:, None, :]  # (n_graphs, 3, 3)
    eye = torch.eye(3, dtype=torch.float64, device=cell.device)
    # Gram matrix of the periodic rows, padded with the identity on non-periodic axes
    gram = torch.where(both, c64 @ c64.transpose(1, 2), eye)
    scale = torch.where(pbc, (c64 * c64).sum(dim=2), 1.0).prod(dim=1)  # (n_graphs,)
    singular = pbc.any(dim=1) & ~(torch.linalg.det(gram) > 1e-12 * scale)
    if bool(singular.any()):
        g = int(torch.nonzero(singular)[0])
        _raise_singular(g, pbc[g].tolist(), c64[g].tolist())
