"""Batched FIRE relaxation of positions and, optionally, the cell (Fréchet cell filter).

FIRE (Bitzek et al., Phys. Rev. Lett. 97, 170201, 2006) exactly as ASE's ``ase.optimize.FIRE``
implements it, per system: with generalised forces g and velocities v,

* if g·v > 0: v ← (1−α)v + α·ĝ·|v|; after more than N_min such steps dt ← min(f_inc·dt, dt_max)
  and α ← f_α·α;  else: v ← 0, α ← α_start, dt ← f_dec·dt;
* v ← v + dt·g;  Δx = dt·v, scaled down so that |Δx| (over the whole system) ≤ max_step.

The very first step skips the mixing test, as in ASE. With ``relax_cell`` the degrees of freedom
are those of ASE's ``FrechetCellFilter``: atom coordinates x = r·F⁻ᵀ in the reference cell and
c·log F (c = number of atoms) for the deformation gradient F (cell = cell₀·Fᵀ); the generalised
forces are f·F for the atoms and (1/c)·∂/∂log F ⟨exp(log F), W·F⁻ᵀ⟩ for the cell, with
virial W = −V(σ + P₀·I). Convergence: every row of g (atoms and the three cell rows) below fmax.

Constraints (:mod:`mlip.md.constraints`) act on the atomic forces before anything else, as
ASE's ``atoms.get_forces()`` does: a fixed atom has g = 0, so it never moves (with the cell
relaxed it keeps its fractional coordinates) and does not count in fmax; ``FixCom`` uses ASE's
projection, so the displacements keep the centre of mass.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable

import torch

from mlip.errors import ConfigError
from mlip.md.nve import ForceFn
from mlip.md.state import MDState, atom_field, select_systems, system_field, volume
from mlip.nn.scatter import scatter_sum
from mlip.units import GPa

__all__ = ["OPTIMIZERS", "FireState", "Optimizer", "OptimizerSpec", "RelaxState", "fire_init",
           "fire_step", "generalized_forces", "make_optimizer", "max_force"]


@dataclass(frozen=True, kw_only=True)
class RelaxState(MDState):
    """What the state of every batched optimiser holds: the cell filter and the progress.

    Attributes:
        log_deform: (n_graphs, 3, 3) log F, the cell deformation from ``reference_cell``.
        reference_cell: (n_graphs, 3, 3) Å, the cell at the start.
        converged: (n_graphs,) bool, fmax reached; the system no longer moves.
        n_steps: (n_graphs,) int64 moves made.
    """

    log_deform: torch.Tensor = system_field()
    reference_cell: torch.Tensor = system_field()
    converged: torch.Tensor = system_field()
    n_steps: torch.Tensor = system_field()


@dataclass(frozen=True, kw_only=True)
class FireState(RelaxState):
    """State of a batched FIRE relaxation (and the fields of :class:`RelaxState`).

    Attributes:
        velocities: (n_atoms, 3) FIRE velocities of the atom coordinates, Å/t.
        cell_velocities: (n_graphs, 3, 3) FIRE velocities of c·log F.
        fire_dt: (n_graphs,) current FIRE time step, ASE time.
        alpha: (n_graphs,) current mixing parameter.
        n_positive: (n_graphs,) int64 steps since the power g·v was last ≤ 0.
        started: (n_graphs,) bool, False until the first move (ASE's ``vel is None``).
    """

    velocities: torch.Tensor = atom_field()
    cell_velocities: torch.Tensor = system_field()
    fire_dt: torch.Tensor = system_field()
    alpha: torch.Tensor = system_field()
    n_positive: torch.Tensor = system_field()
    started: torch.Tensor = system_field()


def fire_init(state: MDState, force_fn: ForceFn, *, relax_cell: bool = False, dt_start: float = 0.1,
              alpha_start: float = 0.1) -> FireState:
    """Evaluate forces (and stress) and set the FIRE variables to their starting values.

    Raises:
        ConfigError: cell relaxation of a system that is not periodic along every axis.
    """
    if relax_cell:
        check_cell_relaxable(state)
    n_graphs = state.n_graphs
    f64 = dict(dtype=torch.float64, device=state.positions.device)
    fields = {f.name: getattr(state, f.name) for f in dataclasses.fields(MDState)}
    zeros_graph = torch.zeros(n_graphs, dtype=torch.long, device=state.positions.device)
    return FireState(
        **fields, velocities=torch.zeros_like(state.positions),
        cell_velocities=torch.zeros(n_graphs, 3, 3, **f64),
        log_deform=torch.zeros(n_graphs, 3, 3, **f64),
        reference_cell=state.cell.clone(), fire_dt=torch.full((n_graphs,), dt_start, **f64),
        alpha=torch.full((n_graphs,), alpha_start, **f64), n_positive=zeros_graph,
        started=zeros_graph.bool(), converged=zeros_graph.bool(), n_steps=zeros_graph.clone(),
    ).with_forces(force_fn(state))


def check_cell_relaxable(state: MDState) -> None:
    """Refuse (ConfigError) a cell relaxation of a system not periodic along every axis."""
    bad = torch.nonzero(~state.pbc.all(dim=1)).flatten().tolist()
    if bad:
        raise ConfigError(f"cell relaxation needs pbc on all axes; system {bad[0]} has "
                          f"pbc={state.pbc[bad[0]].tolist()}")


def generalized_forces(state: RelaxState, relax_cell: bool, pressure: float = 0.0
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """FIRE's forces on the atom coordinates (n_atoms, 3) and on c·log F (n_graphs, 3, 3).

    Without ``relax_cell`` these are the atomic forces (eV/Å) and zeros, projected onto the
    constraints in both cases. ``pressure`` P₀ in eV/Å³.
    """
    forces = state.forces
    if state.constraints is not None:
        forces = state.constraints.project_forces(forces, state.masses, state.batch)
    if not relax_cell:
        return forces, torch.zeros_like(state.cell)
    eye = torch.eye(3, dtype=state.cell.dtype, device=state.cell.device)
    virial = -volume(state.cell)[:, None, None] * (state.stress + pressure * eye)
    with torch.enable_grad():
        log_deform = state.log_deform.detach().requires_grad_(True)
        deform_graph = torch.linalg.matrix_exp(log_deform)  # (n_graphs, 3, 3) F
        deform = deform_graph.detach()
        unit_cell_grad = virial @ torch.linalg.inv(deform.transpose(1, 2))  # W F^-T
        (log_grad,) = torch.autograd.grad((deform_graph * unit_cell_grad).sum(), log_deform)
    atom_forces = torch.einsum("ni,nij->nj", forces, deform[state.batch])
    cell_factor = state.n_atoms.to(state.cell.dtype)[:, None, None]
    return atom_forces, log_grad / cell_factor


def max_force(state: RelaxState, relax_cell: bool, pressure: float = 0.0) -> torch.Tensor:
    """Largest row norm of the generalised forces per system, (n_graphs,) eV/Å."""
    return _largest_row(*generalized_forces(state, relax_cell, pressure), state.batch)


def _largest_row(atom_forces: torch.Tensor, cell_forces: torch.Tensor,
                 batch: torch.Tensor) -> torch.Tensor:
    """max(|g_atom|, |g_cell row|) per system, (n_graphs,)."""
    norms = atom_forces.norm(dim=1)
    fmax = torch.zeros(cell_forces.shape[0], dtype=norms.dtype, device=norms.device)
    fmax = fmax.scatter_reduce(0, batch, norms, "amax")
    return torch.maximum(fmax, cell_forces.norm(dim=2).amax(dim=1))


def _per_system_dot(a: torch.Tensor, b: torch.Tensor, a_cell: torch.Tensor, b_cell: torch.Tensor,
                    batch: torch.Tensor, n_graphs: int) -> torch.Tensor:
    """Σ a·b over a system's atom and cell degrees of freedom, (n_graphs,)."""
    return scatter_sum((a * b).sum(dim=1), batch, n_graphs) + (a_cell * b_cell).sum(dim=(1, 2))


def fire_step(state: FireState, force_fn: ForceFn, *, fmax: float, relax_cell: bool = False,
              pressure: float = 0.0, dt_max: float = 1.0, n_min: int = 5, f_inc: float = 1.1,
              f_dec: float = 0.5, alpha_start: float = 0.1, f_alpha: float = 0.99,
              max_step: float = 0.2) -> FireState:
    """Mark converged systems, then move every other system by one FIRE step.

    Args:
        fmax: convergence threshold on the generalised forces, eV/Å.
        relax_cell: also relax the cell (Fréchet filter). pressure: P₀, eV/Å³.
        dt_max, n_min, f_inc, f_dec, alpha_start, f_alpha, max_step: FIRE parameters
            (ASE's defaults; times in ASE units, ``max_step`` in Å).
    """
    g, g_cell = generalized_forces(state, relax_cell, pressure)
    converged = state.converged | (_largest_row(g, g_cell, state.batch) < fmax)
    active = ~converged
    n_graphs, batch = state.n_graphs, state.batch
    v, v_cell = state.velocities, state.cell_velocities
    power = _per_system_dot(g, v, g_cell, v_cell, batch, n_graphs)
    g_norm = _per_system_dot(g, g, g_cell, g_cell, batch, n_graphs).sqrt().clamp_min(1e-300)
    v_norm = _per_system_dot(v, v, v_cell, v_cell, batch, n_graphs).sqrt()
    downhill = state.started & (power > 0)
    uphill = state.started & ~(power > 0)
    mix = torch.where(downhill, state.alpha, torch.zeros_like(state.alpha))
    keep = torch.where(uphill, torch.zeros_like(mix), 1.0 - mix)
    push = mix * v_norm / g_norm
    grow = downhill & (state.n_positive > n_min)
    fire_dt = torch.where(grow, (state.fire_dt * f_inc).clamp_max(dt_max), state.fire_dt)
    fire_dt = torch.where(uphill, state.fire_dt * f_dec, fire_dt)
    alpha = torch.where(grow, state.alpha * f_alpha, state.alpha)
    alpha = torch.where(uphill, torch.full_like(alpha, alpha_start), alpha)
    n_positive = torch.where(downhill, state.n_positive + 1, state.n_positive)
    n_positive = torch.where(uphill, torch.zeros_like(n_positive), n_positive)
    v = keep[batch, None] * v + push[batch, None] * g + fire_dt[batch, None] * g
    v_cell = (keep[:, None, None] * v_cell + push[:, None, None] * g_cell
              + fire_dt[:, None, None] * g_cell)
    dr, dr_cell = fire_dt[batch, None] * v, fire_dt[:, None, None] * v_cell
    step_norm = _per_system_dot(dr, dr, dr_cell, dr_cell, batch, n_graphs).sqrt()
    limit = torch.where(step_norm > max_step, max_step / step_norm.clamp_min(1e-300),
                        torch.ones_like(step_norm)) * active
    moved = _displace(state, dr * limit[batch, None], dr_cell * limit[:, None, None], relax_cell)
    moved = moved.replace(velocities=v, cell_velocities=v_cell, fire_dt=fire_dt, alpha=alpha,
                          n_positive=n_positive, started=torch.ones_like(state.started),
                          n_steps=state.n_steps + 1)
    moved = moved.with_forces(force_fn(moved))
    merged = select_systems(active, moved, state)
    return merged.replace(converged=converged, step=state.step + 1)


def _displace(state: RelaxState, dr: torch.Tensor, dr_cell: torch.Tensor,
              relax_cell: bool) -> RelaxState:
    """Apply FIRE displacements to the atom coordinates and c·log F."""
    if not relax_cell:
        return state.replace(positions=state.positions + dr)
    deform = torch.linalg.matrix_exp(state.log_deform)
    # x = r F^-T in the reference cell: solve F x^T = r^T per atom
    frac = torch.linalg.solve(deform[state.batch], state.positions[:, :, None])[:, :, 0]
    cell_factor = state.n_atoms.to(state.cell.dtype)[:, None, None]
    log_deform = state.log_deform + dr_cell / cell_factor
    new_deform = torch.linalg.matrix_exp(log_deform)
    positions = torch.einsum("ni,nji->nj", frac + dr, new_deform[state.batch])
    cell = state.reference_cell @ new_deform.transpose(1, 2)
    return state.replace(positions=positions, cell=cell, log_deform=log_deform)


@dataclass(frozen=True)
class Optimizer:
    """A relaxation optimiser with its settings bound.

    Attributes:
        name: key of :data:`OPTIMIZERS`.
        init: ``init(state, force_fn) -> RelaxState`` (evaluates the first forces).
        step: ``step(state, force_fn) -> RelaxState``: marks converged systems, moves the others.
        max_force: ``max_force(state) -> (n_graphs,)`` largest generalised force, eV/Å.
        fmax: convergence threshold, eV/Å. needs_stress: the cell is relaxed.
        settings: the keyword arguments of :func:`make_optimizer`.
    """

    name: str
    init: Callable[[MDState, ForceFn], RelaxState]
    step: Callable[[RelaxState, ForceFn], RelaxState]
    max_force: Callable[[RelaxState], torch.Tensor]
    fmax: float
    needs_stress: bool
    settings: dict[str, Any]


@dataclass(frozen=True)
class OptimizerSpec:
    """One entry of :data:`OPTIMIZERS`: an optimiser that knows its functions and settings.

    Attributes:
        name: registry key. init, step: the pure functions (settings unbound).
        relax_cell: the cell is a degree of freedom too (ASE's ``FrechetCellFilter``).
        settings: the :func:`make_optimizer` settings it reads besides ``fmax`` (a non-zero
            ``pressure_GPa``, or a ``memory``, is refused where it is not listed).
    """

    name: str
    init: Callable[..., RelaxState]
    step: Callable[..., RelaxState]
    relax_cell: bool
    settings: tuple[str, ...]


#: Optimiser name → :class:`OptimizerSpec`: FIRE on the positions, and FIRE on the positions
#: and the cell (Fréchet cell filter); :mod:`mlip.md.lbfgs` adds ``lbfgs`` and ``lbfgs_cell``.
OPTIMIZERS: dict[str, OptimizerSpec] = {o.name: o for o in (
    OptimizerSpec("fire", fire_init, fire_step, False, ()),
    OptimizerSpec("fire_cell", fire_init, fire_step, True, ("pressure_GPa",)),
)}


def make_optimizer(name: str, *, fmax: float = 0.05, pressure_GPa: float = 0.0,
                   memory: int | None = None) -> Optimizer:
    """Bind an optimiser's settings through its :data:`OPTIMIZERS` entry (GPa → eV/Å³ once).

    Args:
        name: ``fire``, ``lbfgs`` (positions) or ``fire_cell``, ``lbfgs_cell`` (positions and
            cell; ``lbfgs`` is registered by :mod:`mlip.md.lbfgs`).
        fmax: convergence threshold on the generalised forces, eV/Å.
        pressure_GPa: external pressure of a cell relaxation, GPa.
        memory: L-BFGS history length (stored step pairs; None: the optimiser's default, 20).

    Raises:
        ConfigError: unknown optimiser, ``fmax`` not a finite number > 0, ``memory`` not an
            integer >= 1, or a setting the optimiser would ignore (a pressure without the
            cell, a memory for FIRE); the message names it.
    """
    spec = OPTIMIZERS.get(name)
    if spec is None:
        raise ConfigError(f"unknown optimizer {name!r}; choose one of {sorted(OPTIMIZERS)}")
    if not (isinstance(fmax, numbers.Real) and math.isfinite(fmax) and fmax > 0):
        raise ConfigError(f"fmax = {fmax!r} is not allowed: a finite number > 0 (eV/Å)")
    if "pressure_GPa" not in spec.settings and pressure_GPa != 0.0:
        raise ConfigError(f"pressure_GPa = {pressure_GPa!r} is not allowed without "
                          "relax_cell=True (only a cell relaxation feels a pressure)")
    if not (isinstance(pressure_GPa, numbers.Real) and math.isfinite(pressure_GPa)):
        raise ConfigError(f"pressure_GPa = {pressure_GPa!r} is not allowed: a finite number (GPa)")
    extra = {}
    if memory is not None:
        if "memory" not in spec.settings:
            raise ConfigError(f"memory = {memory!r} is not allowed for {name!r}: only L-BFGS "
                              "keeps a history")
        if not isinstance(memory, numbers.Integral) or isinstance(memory, bool) or memory < 1:
            raise ConfigError(f"memory = {memory!r} is not allowed: an integer >= 1 (L-BFGS "
                              "history length)")
        extra = {"memory": int(memory)}
    cell, pressure = spec.relax_cell, pressure_GPa * GPa
    return Optimizer(
        name, functools.partial(spec.init, relax_cell=cell, **extra),
        functools.partial(spec.step, fmax=fmax, relax_cell=cell, pressure=pressure),
        functools.partial(max_force, relax_cell=cell, pressure=pressure), fmax, cell,
        {"fmax": fmax, "pressure_GPa": pressure_GPa, **extra})
