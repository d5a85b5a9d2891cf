"""The path from energy to forces and stress (symmetric-strain trick): autograd for training
and eager inference, a compiled function transform for opt-in compiled inference."""

from __future__ import annotations

import logging
import os
import shutil

import torch
from torch._dynamo.exc import TorchDynamoException

from mlip.graph import AtomicGraph
from mlip.models.output import PotentialOutput
from mlip.nn.scatter import scatter_sum

__all__ = ["CompiledEnergyForcesStress", "cpu_compiler_available", "energy_forces_stress"]

log = logging.getLogger(__name__)


def energy_forces_stress(
    model: torch.nn.Module,
    graph: AtomicGraph,
    *,
    compute_forces: bool = True,
    compute_stress: bool = False,
    create_graph: bool = False,
) -> PotentialOutput:
    """Evaluate ``model.node_energy`` and differentiate it.

    A zero strain ε (n_graphs, 3, 3) is symmetrised, ε_s = (ε + εᵀ)/2, and applied to
    positions and cell as ``r' = r + r ε_s`` and ``C' = C + C ε_s``; edge vectors are recomputed
    from ``r'``, ``C'`` and the integer shifts, so the periodic images contribute to the virial.
    Then F = -∂E/∂r, σ = (1/V) ∂E/∂ε (ASE sign: positive = tensile) and W = -∂E/∂ε.

    Args:
        model: a :class:`mlip.models.Potential`.
        graph: the batch.
        compute_forces: return ``forces`` (n_atoms, 3) eV/Å.
        compute_stress: return ``stress`` (n_graphs, 3, 3) eV/Å³ and ``virial`` (n_graphs, 3, 3)
            eV; NaN where no axis is periodic.
        create_graph: keep the autograd graph (for losses on energies, forces and stress);
            without it every output is detached.

    Returns:
        ``energy`` (n_graphs,) eV, ``node_energy`` (n_atoms,) eV, and the derivatives asked for.
    """
    positions = graph.positions
    wrt: list[torch.Tensor] = []
    if compute_forces or compute_stress:
        positions = positions.detach().requires_grad_(True)
        wrt.append(positions)
    strain = None
    if compute_stress:
        strain = torch.zeros_like(graph.cell, requires_grad=True)
        wrt.append(strain)
    energy, node_energy = _strained_energy(model, graph, positions, strain)
    out = PotentialOutput(energy, node_energy)
    if wrt:
        grads = torch.autograd.grad(energy.sum(), wrt, create_graph=create_graph,
                                    allow_unused=True, materialize_grads=True)
        out = PotentialOutput(
            energy, node_energy, forces=-grads[0] if compute_forces else None,
            stress=_stress(grads[1], graph) if compute_stress else None,
            virial=_virial(grads[1], graph) if compute_stress else None)
    return out if create_graph else out.detach()


def _strained_energy(model: torch.nn.Module, graph: AtomicGraph, positions: torch.Tensor,
                     strain: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Energies at ``positions`` with the symmetrised ``strain`` (n_graphs, 3, 3) applied to
    positions and cell (None: unstrained): (n_graphs,) and per atom (n_atoms,), eV."""
    cell = graph.cell
    if strain is not None:
        sym = 0.5 * (strain + strain.transpose(1, 2))
        positions = positions + torch.einsum("ni,nij->nj", positions, sym[graph.batch])
        cell = cell + torch.bmm(cell, sym)
    node_energy = model.node_energy(graph, graph.edge_vectors(positions, cell))
    if graph.n_graphs == 1:  # a plain sum (torch.compile's CPU float32 code generation fails
        return node_energy.sum(0, keepdim=True), node_energy  # on a scatter into one bucket)
    return scatter_sum(node_energy, graph.batch, graph.n_graphs), node_energy


def _stress(strain_derivative: torch.Tensor, graph: AtomicGraph) -> torch.Tensor:
    """σ = (1/V) ∂E/∂ε from the strain derivative (n_graphs, 3, 3) eV, in eV/Å³; NaN for
    graphs without a periodic axis."""
    stress = strain_derivative / torch.linalg.det(graph.cell).abs()[:, None, None]
    periodic = graph.pbc.any(dim=1)[:, None, None]
    return torch.where(periodic, stress, torch.full_like(stress, float("nan")))


def _virial(strain_derivative: torch.Tensor, graph: AtomicGraph) -> torch.Tensor:
    """W = -∂E/∂ε (n_graphs, 3, 3) eV (= -σ·V); NaN for graphs without a periodic axis."""
    periodic = graph.pbc.any(dim=1)[:, None, None]
    return torch.where(periodic, -strain_derivative,
                       torch.full_like(strain_derivative, float("nan")))


def _energy_and_derivatives(model: torch.nn.Module, graph: AtomicGraph,
                            compute_stress: bool) -> tuple[torch.Tensor | None, ...]:
    """Inference energies, forces and (optionally) stress and virial by a function transform.

    The same quantities as :func:`energy_forces_stress` without the autograd engine:
    ``torch.func.grad`` traces the derivative into the same graph as the energy, so that
    ``torch.compile`` can fuse both (see :class:`CompiledEnergyForcesStress`). Returns the
    fields of :class:`PotentialOutput` as a plain tuple (stress and virial None when not
    asked), which the caller wraps outside the compiled code.
    """
    def total_energy(positions: torch.Tensor, strain: torch.Tensor | None):
        energy, node_energy = _strained_energy(model, graph, positions, strain)
        return energy.sum(), (energy, node_energy)

    if not compute_stress:
        grad, (energy, node_energy) = torch.func.grad(
            lambda p: total_energy(p, None), has_aux=True)(graph.positions)
        return energy, node_energy, -grad, None, None
    (grad, strain_derivative), (energy, node_energy) = torch.func.grad(
        total_energy, argnums=(0, 1), has_aux=True)(graph.positions, torch.zeros_like(graph.cell))
    return (energy, node_energy, -grad, _stress(strain_derivative, graph),
            _virial(strain_derivative, graph))


def cpu_compiler_available() -> bool:
    """Whether torch.compile can build CPU kernels here (a C++ compiler: ``$CXX``, g++ or c++)."""
    return bool(shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++"))


class CompiledEnergyForcesStress:
    """Inference energy, forces and stress of one model through ``torch.compile``.

    The energy and its derivatives (a ``torch.func.grad`` transform, no autograd engine) are
    compiled together. The sizes (atoms, edges, and systems when there are several) are marked
    dynamic before each new specialisation compiles, so a new number of atoms or edges does not
    recompile; a change between one and several systems, periodic or not, with or without
    stress, or of dtype compiles once more. (Marking the inputs, rather than
    ``torch.compile(dynamic=True)``, keeps the per-call cost of the compiled function at about
    half.) What has to look at values stays outside the compiled code and runs eagerly first:
    the unknown-element check and whether the batch is periodic. Results equal
    :func:`energy_forces_stress` up to round-off.

    The first call compiles (seconds for Lennard-Jones, about a minute for facet-s on a CPU).
    Worth it where per-operation overhead dominates: small systems, cheap models, long runs.
    Where torch cannot compile a specialisation, at its first call or at a later recompile
    (older torch releases fail on ``torch.func`` with dynamic shapes, e.g. torch 2.11 on CUDA),
    a warning names the error and that specialisation runs eagerly (autograd) from then on:
    same results, no compiled speed.

    Args:
        model: a :class:`mlip.models.Potential` in eval mode.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self._compiled = torch.compile(_energy_and_derivatives)
        self._specialisations: set[tuple] = set()
        self._eager: set[tuple] = set()  # specialisations torch failed to compile

    def __reduce__(self) -> tuple:
        """Pickle and copy as the model alone (the copy compiles again on its first call)."""
        return type(self), (self.model,)

    def __call__(self, graph: AtomicGraph, compute_stress: bool) -> PotentialOutput:
        self.model.check_elements(graph.layout.elements)  # before the compiled code
        key = (graph.periodic, graph.n_graphs == 1, compute_stress, graph.positions.dtype,
               graph.positions.device)
        if key in self._eager:
            return energy_forces_stress(self.model, graph, compute_stress=compute_stress)
        if key not in self._specialisations:  # this call compiles: make its sizes symbolic
            _mark_sizes_dynamic(graph)
            self._specialisations.add(key)
        try:
            with torch.no_grad():
                return PotentialOutput(*self._compiled(self.model, graph, compute_stress))
        except TorchDynamoException as error:  # compiling (or recompiling) failed
            self._eager.add(key)
            log.warning("torch %s could not compile %s for %s (%s); it runs eagerly instead",
                        torch.__version__, type(self.model).__name__, _describe(key),
                        f"{type(error).__name__}: {str(error).strip().splitlines()[0]}")
            return energy_forces_stress(self.model, graph, compute_stress=compute_stress)


def _describe(key: tuple) -> str:
    """The specialisation ``key`` of :class:`CompiledEnergyForcesStress` in words."""
    periodic, single, stress, dtype, device = key
    return (f"{'one' if single else 'several'} {'periodic' if periodic else 'non-periodic'} "
            f"system{'' if single else 's'}{' with stress' if stress else ''}, {dtype}, "
            f"{device}")


def _mark_sizes_dynamic(graph: AtomicGraph) -> None:
    """Ask the next compilation to keep the atom, edge and system counts symbolic."""
    sized = [(graph.positions, 0), (graph.atomic_numbers, 0), (graph.batch, 0),
             (graph.edge_index, 1), (graph.edge_shift, 0)]
    if graph.n_graphs > 1:
        sized += [(graph.cell, 0), (graph.pbc, 0), (graph.n_atoms, 0)]
    for tensor, dim in sized:
        if tensor.shape[dim] > 1:  # sizes 0 and 1 are always specialised
            torch._dynamo.maybe_mark_dynamic(tensor, dim)
