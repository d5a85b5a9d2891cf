"""Verlet-skin reuse of :func:`mlip.neighbors.neighbor_list` for MD, relaxation and the calculator.

Candidates are built with radius ``cutoff + skin`` and reused until some pair could have moved
across the skin (Verlet 1967; LAMMPS ``neigh_modify check yes``). Each call then keeps only the
candidates strictly inside ``cutoff`` at the current positions, so the edges handed to a model are
exactly those a fresh list would give (in a different order).

Rebuild test, per batch: a pair's separation r_j − r_i + S·C changes by at most
|Δr_i| + |Δr_j| + Σ_k |S_k|·|ΔC_k| (ΔC_k the change of lattice row k), so the list is rebuilt when
2·max|Δr| + Σ_k (max|S_k| + 1)·|ΔC_k| ≥ skin. With a fixed cell this is the classic
max|Δr| ≥ skin/2. Positions must be unwrapped between rebuilds (see engine.md §1.4).
"""

from __future__ import annotations

import torch

from mlip.neighbors import neighbor_list

__all__ = ["SkinNeighborList", "edges_within_cutoff"]


class SkinNeighborList:
    """Candidate neighbour pairs within ``cutoff + skin``, rebuilt only when needed.

    Args:
        cutoff: model cutoff, Å.
        skin: extra radius, Å; 0 rebuilds at every call.
    """

    def __init__(self, cutoff: float, skin: float = 1.0) -> None:
        self.cutoff = float(cutoff)
        self.skin = float(skin)
        self.n_builds = 0
        self._reference: tuple[torch.Tensor, ...] | None = None
        self._edges: tuple[torch.Tensor, torch.Tensor] | None = None
        self._max_shift: torch.Tensor | None = None

    def reset(self) -> None:
        """Forget the cached list; the next :meth:`update` rebuilds."""
        self._reference = None
        self._edges = None

    def needs_rebuild(self, positions: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor,
                      batch: torch.Tensor) -> bool:
        """Whether the cached candidates may miss a pair now (one host sync).

        Args:
            positions: (n_atoms, 3) Å. cell: (n_graphs, 3, 3) Å. pbc: (n_graphs, 3) bool.
            batch: (n_atoms,) int64.
        """
        if self._reference is None or self.skin <= 0.0:
            return True
        ref_pos, ref_cell, ref_pbc, ref_batch = self._reference
        if (ref_pos.shape != positions.shape or ref_cell.shape != cell.shape
                or not torch.equal(ref_pbc, pbc) or not torch.equal(ref_batch, batch)):
            return True
        displacement = (positions - ref_pos).norm(dim=1).max() if positions.shape[0] else 0.0
        cell_change = ((cell - ref_cell).norm(dim=2) * (self._max_shift + 1.0)).sum(dim=1).max()
        return bool(2.0 * displacement + cell_change >= self.skin)

    def update(self, positions: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor,
               batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Candidate pairs valid at these positions, rebuilding if the skin test fails.

        Returns:
            edge_index: (2, n_candidates) int64 (centre, neighbour);
            edge_shift: (n_candidates, 3) int64 integer cell shifts.
        """
        if self.needs_rebuild(positions, cell, pbc, batch):
            self.build(positions, cell, pbc, batch)
        assert self._edges is not None
        return self._edges

    def build(self, positions: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor,
              batch: torch.Tensor) -> None:
        """Build the candidate list at these positions (the new skin reference)."""
        positions, cell = positions.detach(), cell.detach()
        i, j, shift = neighbor_list(positions, cell, pbc, self.cutoff + max(self.skin, 0.0), batch)
        self._edges = (torch.stack([i, j]), shift)
        self._reference = (positions.clone(), cell.clone(), pbc.clone(), batch.clone())
        n_graphs = cell.shape[0]
        max_shift = torch.zeros(n_graphs, 3, dtype=cell.dtype, device=cell.device)
        if shift.shape[0]:
            index = batch[i][:, None].expand(-1, 3)
            max_shift = max_shift.scatter_reduce(0, index, shift.abs().to(cell.dtype), "amax")
        self._max_shift = max_shift
        self.n_builds += 1

    @property
    def reference(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(positions (n_atoms, 3) Å, cell (n_graphs, 3, 3) Å) of the last build, or None."""
        return None if self._reference is None else self._reference[:2]


def edges_within_cutoff(
    positions: torch.Tensor, cell: torch.Tensor, batch: torch.Tensor, edge_index: torch.Tensor,
    edge_shift: torch.Tensor, cutoff: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep the candidate edges with |r_j − r_i + S·C| < cutoff.

    Args:
        positions: (n_atoms, 3) Å. cell: (n_graphs, 3, 3) Å. batch: (n_atoms,) int64.
        edge_index: (2, n_candidates) int64. edge_shift: (n_candidates, 3) int64. cutoff: Å.

    Returns:
        edge_index (2, n_edges), edge_shift (n_edges, 3) and distances (n_edges,) Å.
    """
    i, j = edge_index
    shift = torch.einsum("ek,ekl->el", edge_shift.to(positions.dtype), cell[batch[i]])
    distance = (positions[j] - positions[i] + shift).detach().norm(dim=1)
    keep = distance < cutoff
    return edge_index[:, keep], edge_shift[keep], distance[keep]
