"""Input checks shared by every neighbour-list backend."""

from __future__ import annotations

import torch

from mlip.errors import InvalidStructureError


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

    Raises:
        InvalidStructureError: naming the problem (shape, device, NaN atoms, singular cell).
    """
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
        batch = torch.zeros(n_atoms, dtype=torch.long, device=positions.device)
    if batch.shape != (n_atoms,):
        raise InvalidStructureError(f"batch must have shape ({n_atoms},), got {tuple(batch.shape)}")
    if batch.is_floating_point() or batch.is_complex() or batch.dtype == torch.bool:
        raise InvalidStructureError(f"batch must be an integer tensor, got {batch.dtype}")
    for name, tensor in (("cell", cell), ("pbc", pbc), ("batch", batch)):
        if tensor.device != positions.device:
            raise InvalidStructureError(
                f"{name} is on {tensor.device} but positions are on {positions.device}")
    if n_atoms and (batch.min() < 0 or batch.max() >= cell.shape[0]):
        raise InvalidStructureError(f"batch indices must lie in [0, {cell.shape[0]})")
    if n_atoms > 1 and bool((batch[1:] < batch[:-1]).any()):
        raise InvalidStructureError("batch must be sorted (atoms of one system contiguous)")
    bad = ~torch.isfinite(positions).all(dim=1)
    if bool(bad.any()):
        idx = torch.nonzero(bad).flatten().tolist()
        raise InvalidStructureError(f"non-finite (NaN/inf) positions for atoms {idx[:20]}"
                                    + (" ..." if len(idx) > 20 else ""))
    pbc = pbc.to(torch.bool)
    check_cells(cell, pbc)
    return positions, cell, pbc, batch.to(torch.long)


def check_cells(cell: torch.Tensor, pbc: torch.Tensor) -> None:
    """Raise if a periodic direction has a degenerate cell (zero or linearly dependent rows).

    Args:
        cell: (n_graphs, 3, 3) Å. pbc: (n_graphs, 3) bool.
    """
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
        raise InvalidStructureError(
            f"system {g}: cell is singular along its periodic directions "
            f"(pbc={pbc[g].tolist()}, cell={c64[g].tolist()})")
