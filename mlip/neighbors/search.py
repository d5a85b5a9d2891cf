"""The ``neighbor_list`` front door: validation, bin layout, backend choice, ceiling check.

For CPU tensors (the numba backend) the tensors are viewed as numpy arrays, checked by one
compiled scan and binned and searched by one compiled call; torch is touched again only to wrap
the results. This keeps one call on a small system at a few tens of microseconds.
"""

from __future__ import annotations

import numpy as np
import torch

from mlip.errors import ConfigError, NeighborListOverflow
from mlip.neighbors._validate import normalize_arrays, normalize_inputs
from mlip.neighbors.cell_list import DEFAULT_MAX_CANDIDATES, search_pairs_torch
from mlip.neighbors.cell_list_numba import pairs_of_batch
from mlip.neighbors.grid import build_grid

__all__ = ["neighbor_list", "BACKENDS"]

BACKENDS = ("auto", "numba", "torch")


def neighbor_list(
    positions: torch.Tensor,
    cell: torch.Tensor,
    pbc: torch.Tensor,
    cutoff: float,
    batch: torch.Tensor | None = None,
    *,
    backend: str = "auto",
    max_neighbors: int | None = None,
    max_candidates: int = DEFAULT_MAX_CANDIDATES,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Neighbour pairs of one or many systems; no pair ever crosses systems.

    Args:
        positions: (n_atoms, 3) Å (unwrapped positions are fine; any float dtype).
        cell: (3, 3) or (n_graphs, 3, 3) Å, rows are lattice vectors (ignored on
            non-periodic axes, may be zero there).
        pbc: (3,) or (n_graphs, 3) bool.
        cutoff: Å, > 0.
        batch: (n_atoms,) int64 sorted system index; None for a single system.
        backend: "auto" (numba on CPU, torch elsewhere), "numba" (CPU only) or "torch".
        max_neighbors: optional hard ceiling on the neighbours of any atom; exceeding it raises
            :class:`NeighborListOverflow` (never a truncated list).
        max_candidates: torch backend only: candidate pairs held in memory at once.

    Returns:
        i: (n_edges,) int64 centre atoms, sorted; j: (n_edges,) int64 neighbours (global
        indices); S: (n_edges, 3) int64 integer cell shifts; all on the device of ``positions``.

    Raises:
        InvalidStructureError: bad shapes, dtypes or devices, non-finite positions, singular
            periodic cell, cutoff ≤ 0 (a ``ValueError``).
        ConfigError: unknown backend, numba on a non-CPU device, max_neighbors or
            max_candidates < 1 (a ``ValueError``).
        NeighborListOverflow: more than ``max_neighbors`` neighbours for some atom.
    """
    backend = _check_options(backend, positions.device, max_neighbors, max_candidates)
    if backend == "numba":
        pos, cell64, flags, index = normalize_arrays(positions, cell, pbc, cutoff, batch)
        i, j, S = pairs_of_batch(pos, cell64, flags, index, float(cutoff))
        if max_neighbors is not None:
            _check_ceiling(np.bincount(i, minlength=index.shape[0]), index, max_neighbors)
        return torch.from_numpy(i), torch.from_numpy(j), torch.from_numpy(S)
    positions, cell, pbc, batch = normalize_inputs(positions, cell, pbc, cutoff, batch)
    device = positions.device
    if positions.shape[0] == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty, torch.zeros(0, 3, dtype=torch.long, device=device)
    counts = torch.bincount(batch, minlength=cell.shape[0])
    grid = build_grid(positions, cell, pbc, batch, counts, float(cutoff))
    i, j, S = search_pairs_torch(grid, batch, float(cutoff), max_candidates)
    if max_neighbors is not None:
        n_atoms = positions.shape[0]
        _check_ceiling(torch.bincount(i, minlength=n_atoms).cpu().numpy(), batch.cpu().numpy(),
                       max_neighbors)
    return i, j, S


def _check_options(backend: str, device: torch.device, max_neighbors: int | None,
                   max_candidates: int) -> str:
    """Resolve "auto" to a backend; reject unknown or impossible options."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown neighbour-list backend {backend!r}; choose one of {BACKENDS}")
    if max_neighbors is not None and not max_neighbors >= 1:
        raise ConfigError(f"max_neighbors must be None or >= 1, got {max_neighbors!r}")
    if not max_candidates >= 1:
        raise ConfigError(f"max_candidates must be >= 1, got {max_candidates!r}")
    if backend == "auto":
        return "numba" if device.type == "cpu" else "torch"
    if backend == "numba" and device.type != "cpu":
        raise ConfigError(f"backend 'numba' needs CPU tensors, got device {device}")
    return backend


def _check_ceiling(per_atom: np.ndarray, batch: np.ndarray, max_neighbors: int) -> None:
    """Raise NeighborListOverflow naming the system and densest atom above the ceiling.

    Args:
        per_atom: (n_atoms,) int64 neighbours of each atom. batch: (n_atoms,) int64.
    """
    if per_atom.shape[0] == 0:
        return
    densest = int(per_atom.argmax())
    if int(per_atom[densest]) > max_neighbors:
        raise NeighborListOverflow(
            f"atom {densest} of system {int(batch[densest])} has {int(per_atom[densest])} "
            f"neighbours, more than max_neighbors={max_neighbors}; raise the ceiling or "
            f"check the cutoff and the structure")
