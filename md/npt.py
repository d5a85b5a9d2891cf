"""Isothermal–isobaric (NPT) dynamics: stochastic cell rescaling with a BAOAB thermostat.

C-rescale (Bernetti & Bussi, J. Chem. Phys. 153, 114107, 2020). Isotropic: the log-volume
ε = ln V follows the first-order stochastic equation

    dε = −(β_T/τ_p)·(P₀ − P − kT/V)·dt + √(2·kT·β_T/(V·τ_p))·dW,

and positions and cell are scaled by exp(dε/3), momenta by exp(−dε/3). Anisotropic: each
Cartesian axis a has its own log-length ε_a with P → P_aa, β_T/τ_p → β_T/(3τ_p) and an
independent noise; the off-diagonal cell shape is kept. P is the instantaneous pressure
including the kinetic term, ``mlip.md.state.instantaneous_pressure``; P₀ is the target
(eV/Å³, positive compresses), β_T the isothermal compressibility (Å³/eV) and τ_p the
barostat time (ASE time). Temperature is controlled by the Langevin BAOAB thermostat.

The barostat move is applied between the second A and the force call, using the stress of the
previous force evaluation (as GROMACS does), so one force call per step remains.

Constraints (:mod:`mlip.md.constraints`): the kicks and the noise are projected, so fixed atoms
have zero momenta; the cell move scales every position, fixed atoms included (they keep their
fractional coordinates, as under ASE's cell filters).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from mlip.errors import ConfigError
from mlip.md.noise import system_normals
from mlip.md.nve import ForceFn, total_energy
from mlip.md.nvt import LangevinState, kinetic_energy_change, langevin_init, ornstein_uhlenbeck
from mlip.md.state import MDState, constrain_momenta, instantaneous_pressure, volume
from mlip.units import kB

__all__ = ["CRescaleState", "crescale_init", "crescale_step", "enthalpy",
           "crescale_conserved_energy"]


@dataclass(frozen=True, kw_only=True)
class CRescaleState(LangevinState):
    """Langevin state for C-rescale NPT (the cell is part of every MD state)."""


def crescale_init(state: MDState, force_fn: ForceFn, *, seed: int = 0) -> CRescaleState:
    """Check that every system is periodic along all axes, then evaluate forces and stress.

    Raises:
        ConfigError: naming the first system that is not fully periodic.
    """
    not_periodic = torch.nonzero(~state.pbc.all(dim=1)).flatten().tolist()
    if not_periodic:
        raise ConfigError(f"NPT needs periodic boundaries on all axes; system {not_periodic[0]} "
                          f"has pbc={state.pbc[not_periodic[0]].tolist()}")
    started = langevin_init(state, force_fn, seed=seed)
    fields = {f.name: getattr(started, f.name) for f in dataclasses.fields(started)}
    return CRescaleState(**fields)


def _log_strain(state: CRescaleState, dt: float, kT: float, pressure: float, compressibility: float,
                tau: float, anisotropic: bool) -> torch.Tensor:
    """Per-axis log-scale increments dε_a, (n_graphs, 3); the noise is drawn per system from
    stream 1 of (seed, step) (stream 0 is the thermostat's)."""
    vol = volume(state.cell)
    p_tensor = instantaneous_pressure(state)
    n_graphs = state.n_graphs
    systems = torch.arange(n_graphs, device=vol.device)
    noise = system_normals(state.system_seeds(), state.step, 1, systems,
                           torch.zeros_like(systems), 3, vol.dtype)  # (n_graphs, 3)
    if anisotropic:
        p_axis = torch.diagonal(p_tensor, dim1=1, dim2=2)  # (n_graphs, 3)
        rate = compressibility / (3.0 * tau)
        drift = -rate * (pressure - p_axis - (kT / vol)[:, None]) * dt
        return drift + torch.sqrt(2.0 * kT * rate * dt / vol)[:, None] * noise
    p_scalar = torch.diagonal(p_tensor, dim1=1, dim2=2).mean(dim=1)
    rate = compressibility / tau
    d_eps = (-rate * (pressure - p_scalar - kT / vol) * dt
             + torch.sqrt(2.0 * kT * rate * dt / vol) * noise[:, 0])
    return (d_eps / 3.0)[:, None].expand(n_graphs, 3)


def crescale_step(state: CRescaleState, force_fn: ForceFn, *, dt: float, temperature_K: float,
                  friction: float, pressure: float, compressibility: float, tau: float,
                  anisotropic: bool = False) -> CRescaleState:
    """One BAOAB step with a C-rescale cell move before the force call.

    Args:
        dt: ASE time. temperature_K: K. friction: γ, 1/(ASE time). pressure: P₀, eV/Å³.
        compressibility: β_T, Å³/eV. tau: τ_p, ASE time. anisotropic: scale axes independently.
    """
    kT = kB * temperature_K
    inv_m = 1.0 / state.masses[:, None]
    momenta = constrain_momenta(state, state.momenta + 0.5 * dt * state.forces)
    positions = state.positions + 0.5 * dt * momenta * inv_m
    kicked = momenta
    momenta = ornstein_uhlenbeck(state, momenta, math.exp(-friction * dt), kT)
    positions = positions + 0.5 * dt * momenta * inv_m
    half = state.replace(positions=positions, momenta=momenta)
    log_scale = _log_strain(half, dt, kT, pressure, compressibility, tau, anisotropic)
    scale = torch.exp(log_scale)  # (n_graphs, 3)
    moved = half.replace(positions=positions * scale[state.batch],
                         momenta=momenta / scale[state.batch], cell=state.cell * scale[:, None, :])
    out = force_fn(moved)
    heat = kinetic_energy_change(state, kicked, momenta)
    moved = moved.replace(bath_work=state.bath_work + heat + _barostat_work(
        state, half, moved, out.stress, log_scale, pressure))
    momenta = constrain_momenta(state, moved.momenta + 0.5 * dt * out.forces)
    return moved.with_forces(out, momenta=momenta, step=state.step + 1)


def _barostat_work(state: CRescaleState, half: CRescaleState, moved: CRescaleState,
                   stress: torch.Tensor, log_scale: torch.Tensor,
                   pressure: float) -> torch.Tensor:
    """Energy the cell move put into each system, (n_graphs,) eV: the exact changes of E_kin
    (momenta scaled) and of P₀V, plus the change of E_pot estimated from the stress
    (dE_pot = V σ_aa dε_a, trapezoid between the stress before the step and the one after the
    move; GROMACS' ``baros_integral`` uses the first only).

    Args:
        state: the state at the start of the step. half: before the move. moved: after it.
        stress: (n_graphs, 3, 3) eV/Å³ at ``moved``'s positions. log_scale: (n_graphs, 3) dε_a.
    """
    v_before, v_after = volume(half.cell), volume(moved.cell)
    sigma_before = torch.diagonal(state.stress, dim1=1, dim2=2) * v_before[:, None]
    sigma_after = torch.diagonal(stress, dim1=1, dim2=2) * v_after[:, None]
    potential = (0.5 * (sigma_before + sigma_after) * log_scale).sum(dim=1)
    kinetic = kinetic_energy_change(state, half.momenta, moved.momenta)
    return kinetic + potential + pressure * (v_after - v_before)


def crescale_conserved_energy(state: CRescaleState, pressure: float) -> torch.Tensor:
    """E_pot + E_kin + P₀V − bath work per system, (n_graphs,) eV: constant but for
    integration error (and the stress estimate of the cell move's E_pot change)."""
    return enthalpy(state, pressure) - state.bath_work


def enthalpy(state: MDState, pressure: float) -> torch.Tensor:
    """E_pot + E_kin + P₀·V per system, (n_graphs,) eV."""
    return total_energy(state) + pressure * volume(state.cell)
