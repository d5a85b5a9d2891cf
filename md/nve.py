"""Microcanonical (NVE) dynamics: velocity Verlet; the force-function type of all integrators."""

from __future__ import annotations

from typing import Callable, TypeVar

import torch

from mlip.md.state import ForceOutput, MDState, constrain_momenta, kinetic_energy

__all__ = ["ForceFn", "nve_init", "nve_step", "velocity_verlet", "total_energy"]

#: A force function maps a state to energy, forces, stress and shortest distances at its positions.
ForceFn = Callable[[MDState], ForceOutput]
S = TypeVar("S", bound=MDState)


def nve_init(state: S, force_fn: ForceFn) -> S:
    """Evaluate the forces at the starting positions (the step reuses them)."""
    return state.with_forces(force_fn(state))


def velocity_verlet(state: S, force_fn: ForceFn, dt: float) -> S:
    """One velocity-Verlet step (Swope et al., J. Chem. Phys. 76, 637, 1982).

    p ← p + ½dt·F;  r ← r + dt·p/m;  F ← F(r);  p ← p + ½dt·F.  The forces of the previous step
    are reused, so there is one force call per step. Each update is one fused torch operation
    (small systems are bound by per-operation overhead); trajectories agree with ASE's
    ``VelocityVerlet`` to round-off. With constraints (:mod:`mlip.md.constraints`) both
    half-kicks are projected, so fixed atoms keep zero momenta and do not move at all.

    Args:
        state: current state with forces at its positions.
        force_fn: force function.
        dt: time step, ASE time units.
    """
    momenta = constrain_momenta(state, torch.add(state.momenta, state.forces, alpha=0.5 * dt))
    positions = torch.addcdiv(state.positions, momenta, state.masses[:, None], value=dt)
    moved = state.replace(positions=positions, momenta=momenta)
    out = force_fn(moved)
    momenta = constrain_momenta(state, torch.add(momenta, out.forces, alpha=0.5 * dt))
    return moved.with_forces(out, momenta=momenta, step=state.step + 1)


def nve_step(state: S, force_fn: ForceFn, *, dt: float) -> S:
    """Advance every system by one NVE step of ``dt`` (ASE time units)."""
    return velocity_verlet(state, force_fn, dt)


def total_energy(state: MDState) -> torch.Tensor:
    """E_pot + E_kin per system, (n_graphs,) eV: the NVE conserved quantity."""
    return state.energy + kinetic_energy(state.momenta, state.masses, state.batch, state.n_graphs)
