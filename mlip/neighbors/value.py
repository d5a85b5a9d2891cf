"""The frozen result of one neighbour-list update: :class:`Neighbors`."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Neighbors"]


@dataclass(frozen=True, kw_only=True)
class Neighbors:
    """Every pair closer than the cutoff at the positions of one update.

    ``D = positions[j] - positions[i] + edge_shift @ cell`` (the cell of the system of *i*).

    Attributes:
        edge_index: (2, n_edges) int64, row 0 centres i (sorted), row 1 neighbours j.
        edge_shift: (n_edges, 3) int64 integer cell images S.
        distance_sq: (n_edges,) float64 Å², |D|².
        shortest_distance: (n_graphs,) float64 Å, the shortest |D| per system (inf without
            pairs).
        periodic: whether some system has a periodic axis (when not, every shift is zero).
        rebuilt: whether this update rebuilt the candidate list of some system.
        stale: (n_graphs,) bool, the systems whose cached candidates no longer covered the
            cutoff at this update and were rebuilt (all True at a first build; all False when
            the cached list was reused).
    """

    edge_index: torch.Tensor
    edge_shift: torch.Tensor
    distance_sq: torch.Tensor
    shortest_distance: torch.Tensor
    periodic: bool
    rebuilt: bool
    stale: torch.Tensor

    @property
    def n_edges(self) -> int:
        return int(self.edge_index.shape[1])
