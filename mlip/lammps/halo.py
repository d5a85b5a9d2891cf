"""Exact energy, forces and virial of one rank's atoms from its atoms plus a ghost halo.

One MPI rank of a LAMMPS run owns ``n_local`` atoms and sees copies ("ghosts") of every atom
within the ghost cutoff of its sub-domain (periodic images included: a rank alone in a periodic
box sees its own atoms again as ghosts). :func:`evaluate_halo` treats these ``n_local + n_ghost``
points as one non-periodic cloud and returns what this rank must give LAMMPS so that, summed
over the ranks, energy, forces and virial are those of the whole periodic system exactly, with
no reverse communication. The derivation is in ``docs/lammps.md``; in short, with L the
model's :attr:`~mlip.models.Potential.receptive_layers` and h(k) the number of edges
(length <= r_c) on the shortest path from a local atom to atom k:

* every atom with h <= 2L is needed (its species or features reach an atom with h <= L);
* the energy E_A = sum of E_k over h(k) <= L holds every atom energy that depends on a local
  position or on an edge whose centre is local, each computed exactly (its whole receptive
  field, h <= 2L, is present);
* forces on local atoms: F = -dE_A/dr; virial: W = -sum over edges e with a local centre of
  D_e ⊗ dE_A/dD_e (each edge of the periodic system has exactly one copy whose centre is local
  on some rank, and dE_A/dD_e is the derivative of the total energy for that copy).

The reported energy is the sum of the local atoms' energies (the ranks' sum is the total).

With ``ghost_forces=True`` (the "single" shell) only atoms with h <= L are needed (the ghost
cutoff L·r_c + skin): E_B = sum of the local atoms' energies, and dE_B/dr is returned for the
local atoms and for the ghosts; the caller adds each ghost's force to its owner's (reverse
communication). The virial share is then -sum over all edges of D_e ⊗ dE_B/dD_e.

A rank that owns the whole box (one rank) needs no halo: :func:`evaluate_periodic` runs the
model on its atoms as one periodic system (LAMMPS's box and boundaries), with the same
edge-vector derivatives, so the two agree to round-off.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mlip.graph import AtomicGraph, graph_from_neighbors, update_neighbors
from mlip.models import Potential
from mlip.neighbors import VerletList, neighbor_list
from mlip.structures import Layout, Structures

__all__ = ["HaloResult", "evaluate_halo", "evaluate_periodic", "hop_distances",
           "lammps_cell"]


@dataclass(frozen=True)
class HaloResult:
    """What one rank hands LAMMPS, and how much work it took.

    Attributes:
        energy: sum of the local atoms' energies, eV (float).
        forces: (n_local, 3) float64 eV/Å, exact total forces on the local atoms.
        virial: (3, 3) float64 eV, this rank's share of W = -stress·V (ranks sum to the total).
        node_energy: (n_local,) float64 eV, the local atoms' energies.
        atoms_evaluated: atoms the model ran on (local + the ghosts within 2L hops).
        edges_evaluated: edges the model ran on.
        local_edges: edges whose centre is a local atom (the rank's share of the real graph).
        ghost_index: with ghost forces, (n_g,) int64 indices (into the input atoms) of the
            ghosts that carry a force; else None.
        ghost_forces: (n_g, 3) float64 eV/Å, -dE_B/dr of those ghosts (to add to their owners'
            forces); else None.
    """

    energy: float
    forces: torch.Tensor
    virial: torch.Tensor
    node_energy: torch.Tensor
    atoms_evaluated: int
    edges_evaluated: int
    local_edges: int
    ghost_index: torch.Tensor | None = None
    ghost_forces: torch.Tensor | None = None


def hop_distances(edge_index: torch.Tensor, n_atoms: int, n_local: int,
                  max_hops: int) -> torch.Tensor:
    """Edges on the shortest path from any of the first ``n_local`` atoms, capped.

    Args:
        edge_index: (2, n_edges) int64, a symmetric graph (both directions of each pair).
        n_atoms: atoms of the graph. n_local: the sources are atoms 0..n_local-1.
        max_hops: distances beyond it are reported as ``max_hops + 1``.

    Returns:
        (n_atoms,) int64 hop counts.
    """
    i, j = edge_index
    hops = torch.full((n_atoms,), max_hops + 1, dtype=torch.long, device=edge_index.device)
    hops[:n_local] = 0
    for step in range(1, max_hops + 1):
        reached = torch.zeros(n_atoms, dtype=torch.bool, device=edge_index.device)
        reached[j[hops[i] == step - 1]] = True
        hops = torch.where(reached & (hops > step), step, hops)
    return hops


def evaluate_halo(model: Potential, positions: torch.Tensor, atomic_numbers: torch.Tensor,
                  n_local: int, *, ghost_forces: bool = False) -> HaloResult:
    """Energy, forces and virial share of the first ``n_local`` atoms (module docstring).

    Args:
        model: a potential in eval mode with a stated ``receptive_layers`` L.
        positions: (n_atoms, 3) Å, local atoms first, then the ghosts, explicit images (no
            periodic boundary is applied). Every atom within 2·L·r_c of a local atom must be
            present (the caller's ghost cutoff; L·r_c with ``ghost_forces``).
        atomic_numbers: (n_atoms,) int64.
        n_local: number of local atoms.
        ghost_forces: return the ghosts' force contributions instead of needing the double
            shell (the caller sends them to the owners).

    Returns:
        :class:`HaloResult`.
    """
    layers = model.receptive_layers
    dtype = model.model_dtype()
    positions = positions.to(dtype)
    n_all = positions.shape[0]
    no_cell = positions.new_zeros(3, 3)
    no_pbc = torch.zeros(3, dtype=torch.bool, device=positions.device)
    i, j, _ = neighbor_list(positions, no_cell, no_pbc, model.cutoff)
    depth = layers if ghost_forces else 2 * layers
    hops = hop_distances(torch.stack([i, j]), n_all, n_local, depth)
    keep = (hops <= depth).nonzero().squeeze(1)  # local atoms first, order kept
    renumber = torch.full((n_all,), -1, dtype=torch.long, device=positions.device)
    renumber[keep] = torch.arange(keep.shape[0], device=positions.device)
    # an atom `depth` hops away only lends its species: its own edges are not needed
    edge_mask = hops[i] < depth
    edge_index = renumber[torch.stack([i[edge_mask], j[edge_mask]])]
    positions, numbers, hops = positions[keep], atomic_numbers[keep], hops[keep]
    graph = _cloud_graph(positions, numbers, edge_index, model.cutoff)
    src, dst = edge_index
    vectors = (positions.index_select(0, dst) - positions.index_select(0, src)).detach()
    vectors.requires_grad_(True)
    with torch.enable_grad():
        node_energy = model.node_energy(graph, vectors)
        needed = node_energy[:n_local].sum() if ghost_forces else node_energy[hops <= layers].sum()
        (grad,) = torch.autograd.grad(needed, vectors, allow_unused=True, materialize_grads=True)
    grad = grad.detach()
    forces = torch.zeros_like(positions)
    forces.index_add_(0, src, grad).index_add_(0, dst, -grad)
    local_edge = src < n_local
    counted = slice(None) if ghost_forces else local_edge
    virial = -(vectors.detach()[counted].T @ grad[counted]).to(torch.float64)
    local_energy = node_energy[:n_local].detach()
    ghosts = {}
    if ghost_forces:
        ghosts = dict(ghost_index=keep[n_local:], ghost_forces=forces[n_local:].to(torch.float64))
    return HaloResult(energy=float(local_energy.sum()),
                      forces=forces[:n_local].to(torch.float64), virial=0.5 * (virial + virial.T),
                      node_energy=local_energy, atoms_evaluated=int(keep.shape[0]),
                      edges_evaluated=int(src.shape[0]), local_edges=int(local_edge.sum()),
                      **ghosts)


def evaluate_periodic(model: Potential, positions: torch.Tensor, atomic_numbers: torch.Tensor,
                      cell: torch.Tensor, pbc: torch.Tensor,
                      verlet: VerletList | None = None) -> HaloResult:
    """Energy, forces and virial of all atoms of a box as one (periodic) system.

    Args:
        model: a potential in eval mode.
        positions: (n_atoms, 3) Å, every atom of the box once (no ghosts).
        atomic_numbers: (n_atoms,) int64.
        cell: (3, 3) Å, rows the box vectors (:func:`lammps_cell`).
        pbc: (3,) bool, the periodic axes.
        verlet: a neighbour list with a skin (cutoff: the model's) kept between calls; None
            builds the pairs afresh.

    Returns:
        :class:`HaloResult` of the whole system (no ghosts; the virial is W = -σ·V, and is
        also defined when no axis is periodic: -Σ_e D_e ⊗ ∂E/∂D_e).
    """
    dtype = model.model_dtype()
    positions, cell = positions.to(dtype), cell.to(dtype)
    n = positions.shape[0]
    pbc = pbc.to(device=positions.device, dtype=torch.bool).reshape(1, 3)
    layout = Layout.from_tensors(torch.tensor([n], device=positions.device), atomic_numbers,
                                 pbc)
    structures = Structures(positions=positions, atomic_numbers=atomic_numbers,
                            cell=cell.reshape(1, 3, 3), pbc=pbc, layout=layout)
    if verlet is None:
        graph = AtomicGraph.from_structures(structures, model.cutoff)
    else:
        graph = graph_from_neighbors(structures, update_neighbors(verlet, structures),
                                     model.cutoff)
    vectors = graph.edge_vectors().detach().requires_grad_(True)
    with torch.enable_grad():
        node_energy = model.node_energy(graph, vectors)
        (grad,) = torch.autograd.grad(node_energy.sum(), vectors, allow_unused=True,
                                      materialize_grads=True)
    src, dst = graph.edge_index
    forces = torch.zeros_like(positions)
    forces.index_add_(0, src, grad).index_add_(0, dst, -grad)
    virial = -(vectors.detach().T @ grad).to(torch.float64)
    node_energy = node_energy.detach()
    return HaloResult(energy=float(node_energy.sum()), forces=forces.to(torch.float64),
                      virial=0.5 * (virial + virial.T), node_energy=node_energy,
                      atoms_evaluated=n, edges_evaluated=graph.n_edges,
                      local_edges=graph.n_edges)


def lammps_cell(lx: float, ly: float, lz: float, xy: float = 0.0, xz: float = 0.0,
                yz: float = 0.0) -> torch.Tensor:
    """The (3, 3) float64 cell (rows: lattice vectors a, b, c, Å) of a LAMMPS box:
    a = (lx, 0, 0), b = (xy, ly, 0), c = (xz, yz, lz)."""
    return torch.tensor([[lx, 0.0, 0.0], [xy, ly, 0.0], [xz, yz, lz]], dtype=torch.float64)


def _cloud_graph(positions: torch.Tensor, numbers: torch.Tensor, edge_index: torch.Tensor,
                 cutoff: float) -> AtomicGraph:
    """The non-periodic one-system graph of a point cloud with the given edges."""
    n = positions.shape[0]
    pbc = torch.zeros(1, 3, dtype=torch.bool, device=positions.device)
    layout = Layout.from_tensors(torch.tensor([n], device=positions.device), numbers, pbc)
    return AtomicGraph(positions=positions, atomic_numbers=numbers,
                       cell=positions.new_zeros(1, 3, 3), pbc=pbc, layout=layout,
                       edge_index=edge_index,
                       edge_shift=torch.zeros(edge_index.shape[1], 3, dtype=torch.long,
                                              device=positions.device),
                       cutoff=float(cutoff))
