"""Batched L-BFGS relaxation of positions and, optionally, the cell (Fréchet cell filter).

The algorithm of ASE's ``ase.optimize.LBFGS`` (no line search), per system of the batch: with
generalised coordinates x, generalised forces g = −∇E and the last ``memory`` pairs
sᵢ = x_{i+1} − xᵢ, yᵢ = gᵢ − g_{i+1}, ρᵢ = 1/(yᵢ·sᵢ), the two-loop recursion applies the
inverse-Hessian estimate (initial H₀ = 1/α, α = 70 eV/Å²) to −g; the step p is scaled so that
its longest row (an atom, or a cell row) is at most ``max_step`` Å, as ASE's
``determine_step``. Every system keeps its own history and step length; all systems advance
in one set of tensor operations (the loops run over the history slots, never over systems).
A system without its full history has zero pairs with ρ = 0 in the empty slots, which leave the
recursion unchanged. Converged systems stop moving and keep their history, as with FIRE.

One safeguard ASE lacks: a pair with negative curvature (y·s ≤ 0, e.g. beyond the inflection
point of a pair potential) is not used (ρ = 0), which keeps the inverse-Hessian estimate
positive definite and so every step downhill; ASE's LBFGS keeps such pairs and can stall
(a stretched 3-atom LJ cluster: no convergence in 1000 steps, where this one and FIRE
converge). Elsewhere the two are the same algorithm.

The degrees of freedom, generalised forces, constraints and convergence test are those of
:mod:`mlip.md.relax` (FIRE): with ``relax_cell`` ASE's ``FrechetCellFilter`` coordinates
(x = r·F⁻ᵀ and c·log F), so ``LBFGS(FrechetCellFilter(atoms), memory=...)`` is followed step
for step (to rounding) while every pair has positive curvature; fixed atoms have g = 0 and
so never move, and ``FixCom``'s projected forces keep the centre of mass.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from mlip.md.nve import ForceFn
from mlip.md.relax import (
    OPTIMIZERS,
    OptimizerSpec,
    RelaxState,
    _displace,
    _largest_row,
    _per_system_dot,
    check_cell_relaxable,
    generalized_forces,
)
from mlip.md.state import MDState, atom_field, select_systems, system_field

__all__ = ["LBFGSState", "lbfgs_init", "lbfgs_step"]


@dataclass(frozen=True, kw_only=True)
class LBFGSState(RelaxState):
    """State of a batched L-BFGS relaxation (``m`` = memory, the number of stored pairs), and
    the fields of :class:`RelaxState`.

    Attributes:
        s_atoms, y_atoms: (n_atoms, m, 3) history of coordinate steps (Å) and force changes
            (eV/Å) of the atoms, oldest slot first; unused slots are zero.
        s_cell, y_cell: (n_graphs, m, 3, 3) the same for c·log F.
        rho: (n_graphs, m) 1/(y·s) per stored pair, 1/eV; 0 in unused slots.
        last_step, last_step_cell: (n_atoms, 3), (n_graphs, 3, 3) the previous move.
        last_forces, last_forces_cell: generalised forces before the previous move.
    """

    s_atoms: torch.Tensor = atom_field()
    y_atoms: torch.Tensor = atom_field()
    s_cell: torch.Tensor = system_field()
    y_cell: torch.Tensor = system_field()
    rho: torch.Tensor = system_field()
    last_step: torch.Tensor = atom_field()
    last_step_cell: torch.Tensor = system_field()
    last_forces: torch.Tensor = atom_field()
    last_forces_cell: torch.Tensor = system_field()


def lbfgs_init(state: MDState, force_fn: ForceFn, *, relax_cell: bool = False,
               memory: int = 20) -> LBFGSState:
    """Evaluate forces (and stress) and start with an empty history of ``memory`` pairs.

    ``memory`` defaults to 20 (ASE's ``LBFGS`` uses 100; pass ``memory=20`` there to compare).

    Raises:
        ConfigError: cell relaxation of a system that is not periodic along every axis.
        ValueError: ``memory`` < 1.
    """
    if relax_cell:
        check_cell_relaxable(state)
    if memory < 1:
        raise ValueError(f"memory = {memory!r}: the L-BFGS history needs at least one pair")
    n_atoms, n_graphs = state.positions.shape[0], state.n_graphs
    f64 = dict(dtype=torch.float64, device=state.positions.device)
    fields = {f.name: getattr(state, f.name) for f in dataclasses.fields(MDState)}
    zeros_graph = torch.zeros(n_graphs, dtype=torch.long, device=state.positions.device)
    return LBFGSState(
        **fields, log_deform=torch.zeros(n_graphs, 3, 3, **f64),
        reference_cell=state.cell.clone(), s_atoms=torch.zeros(n_atoms, memory, 3, **f64),
        y_atoms=torch.zeros(n_atoms, memory, 3, **f64),
        s_cell=torch.zeros(n_graphs, memory, 3, 3, **f64),
        y_cell=torch.zeros(n_graphs, memory, 3, 3, **f64),
        rho=torch.zeros(n_graphs, memory, **f64),
        last_step=torch.zeros(n_atoms, 3, **f64), last_step_cell=torch.zeros(n_graphs, 3, 3, **f64),
        last_forces=torch.zeros(n_atoms, 3, **f64),
        last_forces_cell=torch.zeros(n_graphs, 3, 3, **f64),
        converged=zeros_graph.bool(), n_steps=zeros_graph,
    ).with_forces(force_fn(state))


def _push(history: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """Drop the oldest slot (dim 1) and append ``new`` as the newest."""
    return torch.cat([history[:, 1:], new[:, None]], dim=1)


def lbfgs_step(state: LBFGSState, force_fn: ForceFn, *, fmax: float, relax_cell: bool = False,
               pressure: float = 0.0, max_step: float = 0.2, alpha: float = 70.0) -> LBFGSState:
    """Mark converged systems, then move every other system by one L-BFGS step.

    Args:
        fmax: convergence threshold on the generalised forces, eV/Å.
        relax_cell: also relax the cell (Fréchet filter). pressure: P₀, eV/Å³.
        max_step: longest move of one atom (or cell row) per step, Å (ASE's ``maxstep``).
        alpha: initial Hessian guess, eV/Å² (ASE's ``alpha``).
    """
    g, g_cell = generalized_forces(state, relax_cell, pressure)
    converged = state.converged | (_largest_row(g, g_cell, state.batch) < fmax)
    active = ~converged
    n_graphs, batch = state.n_graphs, state.batch
    # record the pair of the previous move (none before the first move)
    started = state.n_steps > 0
    s, s_cell = state.last_step, state.last_step_cell
    y = (state.last_forces - g) * started[batch, None]
    y_cell = (state.last_forces_cell - g_cell) * started[:, None, None]
    curvature = _per_system_dot(y, s, y_cell, s_cell, batch, n_graphs)
    # a pair with y·s <= 0 (negative curvature) would make the step uphill: it is not used
    rho = torch.where(started & (curvature > 0), 1.0 / curvature, torch.zeros_like(curvature))
    s_hist, y_hist = _push(state.s_atoms, s), _push(state.y_atoms, y)
    s_hist_cell, y_hist_cell = _push(state.s_cell, s_cell), _push(state.y_cell, y_cell)
    rho_hist = _push(state.rho, rho)
    # two-loop recursion: z = H·(−g), newest pair first in the first loop
    memory = rho_hist.shape[1]
    q, q_cell = -g, -g_cell
    a = [torch.zeros_like(rho)] * memory
    for i in range(memory - 1, -1, -1):
        a[i] = rho_hist[:, i] * _per_system_dot(s_hist[:, i], q, s_hist_cell[:, i], q_cell, batch,
                                                n_graphs)
        q = q - a[i][batch, None] * y_hist[:, i]
        q_cell = q_cell - a[i][:, None, None] * y_hist_cell[:, i]
    z, z_cell = q / alpha, q_cell / alpha
    for i in range(memory):
        b = rho_hist[:, i] * _per_system_dot(y_hist[:, i], z, y_hist_cell[:, i], z_cell, batch,
                                             n_graphs)
        z = z + (a[i] - b)[batch, None] * s_hist[:, i]
        z_cell = z_cell + (a[i] - b)[:, None, None] * s_hist_cell[:, i]
    dr, dr_cell = -z, -z_cell
    longest = _largest_row(dr, dr_cell, batch)
    scale = torch.where(longest >= max_step, max_step / longest.clamp_min(1e-300),
                        torch.ones_like(longest)) * active
    dr, dr_cell = dr * scale[batch, None], dr_cell * scale[:, None, None]
    moved = _displace(state, dr, dr_cell, relax_cell)
    moved = moved.replace(s_atoms=s_hist, y_atoms=y_hist, s_cell=s_hist_cell, y_cell=y_hist_cell,
                          rho=rho_hist, last_step=dr, last_step_cell=dr_cell, last_forces=g,
                          last_forces_cell=g_cell, n_steps=state.n_steps + 1)
    moved = moved.with_forces(force_fn(moved))
    merged = select_systems(active, moved, state)
    return merged.replace(converged=converged, step=state.step + 1)


OPTIMIZERS.update({o.name: o for o in (
    OptimizerSpec("lbfgs", lbfgs_init, lbfgs_step, False, ("memory",)),
    OptimizerSpec("lbfgs_cell", lbfgs_init, lbfgs_step, True, ("pressure_GPa", "memory")),
)})
