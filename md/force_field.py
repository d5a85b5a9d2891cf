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
        self._pbc_seen: torch.Tensor | None = None
        self._any_periodic = True
        self.model_dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()),
                                torch.float64)

    def _periodic(self, pbc: torch.Tensor) -> bool:
        """Whether any system is periodic (cached per pbc tensor: one host check per run)."""
        if self._pbc_seen is not pbc:
            self._pbc_seen, self._any_periodic = pbc, bool(pbc.any())
        return self._any_periodic

    def __call__(self, state: MDState) -> ForceOutput:
        """Energy, forces, stress and shortest distance per system at ``state.positions``."""
        positions, cell = state.positions, state.cell
        edge_index, edge_shift = self.neighbors.update(positions, cell, state.pbc, state.batch)
        dtype = self.model_dtype
        graph = AtomicGraph(
            positions=positions.to(dtype), atomic_numbers=state.atomic_numbers,
            cell=cell.to(dtype), pbc=state.pbc, batch=state.batch, n_atoms=state.n_atoms,
            edge_index=edge_index, edge_shift=edge_shift, cutoff=self.model.cutoff)
        with torch.enable_grad():
            out = self.model(graph, compute_forces=True, compute_stress=self.compute_stress)
        n_graphs = state.n_graphs
        min_distance = shortest_edges(positions, cell, state.batch, edge_index, edge_shift,
                                      n_graphs, periodic=self._periodic(state.pbc))
        stress = out.get("stress")
        if stress is None:
            stress = torch.full((n_graphs, 3, 3), float("nan"), dtype=torch.float64,
                                device=positions.device)
        return ForceOutput(energy=out["energy"].detach().to(torch.float64),
                           forces=out["forces"].detach().to(torch.float64),
                           stress=stress.detach().to(torch.float64), min_distance=min_distance)


def shortest_edges(positions: torch.Tensor, cell: torch.Tensor, batch: torch.Tensor,
                   edge_index: torch.Tensor, edge_shift: torch.Tensor, n_graphs: int,
                   periodic: bool = True) -> torch.Tensor:
    """Shortest edge length of each system, (n_graphs,) Å (inf for a system without edges).

    Args:
        positions: (n_atoms, 3) Å. cell: (n_graphs, 3, 3) Å. batch: (n_atoms,) int64.
        edge_index: (2, n_edges) int64. edge_shift: (n_edges, 3) int64.
        periodic: False when no system is periodic (all shifts are then zero).
    """
    i, j = edge_index
    vectors = positions[j] - positions[i]
    images = edge_shift.to(positions.dtype)
    if n_graphs == 1:  # one matmul instead of a gathered (n_edges, 3, 3) batch
        vectors = vectors + images @ cell[0]
    elif periodic:
        vectors = vectors + torch.einsum("ek,ekl->el", images, cell[batch[i]])
    length = vectors.detach().norm(dim=1).to(torch.float64)
    shortest = torch.full((n_graphs,), float("inf"), dtype=torch.float64, device=positions.device)
    return shortest.scatter_reduce(0, batch[i], length, "amin")
