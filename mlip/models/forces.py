"""The single autograd path from energy to forces and stress (symmetric-strain trick)."""

from __future__ import annotations

import torch

from mlip.graph import AtomicGraph
from mlip.nn.scatter import scatter_sum

__all__ = ["energy_forces_stress"]


def energy_forces_stress(
    model: torch.nn.Module,
    graph: AtomicGraph,
    *,
    compute_forces: bool = True,
    compute_stress: bool = False,
    create_graph: bool = False,
) -> dict[str, torch.Tensor]:
    """Evaluate ``model.node_energy`` and differentiate it.

    A zero strain ε (n_graphs, 3, 3) is symmetrised, ε_s = (ε + εᵀ)/2, and applied to
    positions and cell as ``r' = r + r ε_s`` and ``C' = C + C ε_s``; edge vectors are recomputed
    from ``r'``, ``C'`` and the integer shifts, so the periodic images contribute to the virial.
    Then F = -∂E/∂r and σ = (1/V) ∂E/∂ε (ASE sign: positive = tensile).

    Args:
        model: a :class:`mlip.models.Potential`.
        graph: the batch.
        compute_forces: return ``forces`` (n_atoms, 3) eV/Å.
        compute_stress: return ``stress`` (n_graphs, 3, 3) eV/Å³; NaN where no axis is periodic.
        create_graph: keep the autograd graph (for losses on energies, forces and stress);
            without it every output is detached.

    Returns:
        dict with ``energy`` (n_graphs,) eV, ``node_energy`` (n_atoms,) eV, and the derivatives.
    """
    positions = graph.positions
    cell = graph.cell
    wrt: list[torch.Tensor] = []
    if compute_forces or compute_stress:
        positions = positions.detach().requires_grad_(True)
        wrt.append(positions)
    if compute_stress:
        strain = torch.zeros_like(cell, requires_grad=True)
        wrt.append(strain)
        sym = 0.5 * (strain + strain.transpose(1, 2))
        positions_strained = positions + torch.einsum("ni,nij->nj", positions, sym[graph.batch])
        cell = cell + torch.bmm(cell, sym)
    else:
        positions_strained = positions
    edge_vectors = graph.edge_vectors(positions_strained, cell)
    node_energy = model.node_energy(graph, edge_vectors)
    energy = scatter_sum(node_energy, graph.batch, graph.n_graphs)
    out = {"energy": energy, "node_energy": node_energy}
    if not wrt:
        return out if create_graph else {key: value.detach() for key, value in out.items()}
    grads = torch.autograd.grad(energy.sum(), wrt, create_graph=create_graph,
                                allow_unused=True, materialize_grads=True)
    if compute_forces:
        out["forces"] = -grads[0]
    if not create_graph:
        out = {key: value.detach() for key, value in out.items()}
    if compute_stress:
        volume = torch.linalg.det(graph.cell).abs()
        stress = grads[1] / volume[:, None, None]
        periodic = graph.pbc.any(dim=1)[:, None, None]
        out["stress"] = torch.where(periodic, stress, torch.full_like(stress, float("nan")))
    return out
