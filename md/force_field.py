"""The force function the integrators call: model + skin neighbour list → :class:`ForceOutput`."""

from __future__ import annotations

import os

import torch

from mlip.graph import AtomicGraph
from mlip.md.state import ForceOutput, MDState
from mlip.models import Potential, load_model
from mlip.neighbors import VerletList

__all__ = ["ForceField", "resolve_model", "shortest_edges"]


def resolve_model(model: Potential | str | os.PathLike, device: str | torch.device = "cpu",
                  dtype: torch.dtype | None = None) -> Potential:
    """A ready-to-run potential (eval mode) from a module or a checkpoint path.

    Args:
        model: a :class:`mlip.models.Potential` or the path of a file written by ``save_model``.
        device: where the model runs.
        dtype: floating dtype of the model (default: keep / as saved).
    """
    if isinstance(model, (str, os.PathLike)):
        return load_model(model, device=device, dtype=dtype)
    model = model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)
    return model.eval()


class ForceField:
    """Evaluates a potential on an :class:`MDState`, reusing its neighbour list with a skin.

    The model may run in float32; positions are cast for the model and results are cast back
    to float64 for the integrators.

    Args:
        model: the potential (eval mode).
        skin: Verlet skin, Å.
        compute_stress: also return the stress (needed by barostats and cell relaxation).
    """

    def __init__(self, model: Potential, *, skin: float = 1.0,
                 compute_stress: bool = False) -> None:
        self.model = model
        self.compute_stress = compute_stress
        self.neighbors = VerletList(model.cutoff, skin)
        self.model_dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()),
                                torch.float64)
        self._no_stress: torch.Tensor | None = None

    def _nan_stress(self, n_graphs: int, device: torch.device) -> torch.Tensor:
        """(n_graphs, 3, 3) NaN stress for steps that skip it (one tensor reused; never
        modified in place)."""
        if (self._no_stress is None or self._no_stress.shape[0] != n_graphs
                or self._no_stress.device != device):
            self._no_stress = torch.full((n_graphs, 3, 3), float("nan"), dtype=torch.float64,
                                         device=device)
        return self._no_stress

    def __call__(self, state: MDState) -> ForceOutput:
        """Energy, forces, stress and shortest distance per system at ``state.positions``."""
        positions, cell, batch = state.positions, state.cell, state.batch
        edge_index, edge_shift = self.neighbors.update(positions, cell, state.pbc, batch)
        dtype = self.model_dtype
        graph = AtomicGraph(
            positions=positions.to(dtype), atomic_numbers=state.atomic_numbers,
            cell=cell.to(dtype), pbc=state.pbc, batch=batch, n_atoms=state.n_atoms,
            edge_index=edge_index, edge_shift=edge_shift, cutoff=self.model.cutoff)
        with torch.enable_grad():
            out = self.model(graph, compute_forces=True, compute_stress=self.compute_stress)
        n_graphs = state.n_graphs
        min_distance = shortest_edges(self.neighbors.edge_distance_sq, edge_index[0], batch,
                                      n_graphs)
        stress = out.get("stress")
        stress = (self._nan_stress(n_graphs, positions.device) if stress is None
                  else stress.detach().to(torch.float64))
        return ForceOutput(energy=out["energy"].detach().to(torch.float64),
                           forces=out["forces"].detach().to(torch.float64),
                           stress=stress, min_distance=min_distance)


def shortest_edges(distance_sq: torch.Tensor, centres: torch.Tensor, batch: torch.Tensor,
                   n_graphs: int) -> torch.Tensor:
    """Shortest edge length of each system, (n_graphs,) Å (inf for a system without edges).

    Args:
        distance_sq: (n_edges,) Å², squared edge lengths (as the neighbour list left them).
        centres: (n_edges,) int64 centre atom of each edge. batch: (n_atoms,) int64.
    """
    if n_graphs == 1:
        if distance_sq.shape[0] == 0:
            return torch.full((1,), float("inf"), dtype=torch.float64, device=distance_sq.device)
        return distance_sq.min().sqrt().reshape(1)
    shortest = torch.full((n_graphs,), float("inf"), dtype=torch.float64,
                          device=distance_sq.device)
    return shortest.scatter_reduce(0, batch[centres], distance_sq, "amin").sqrt()
