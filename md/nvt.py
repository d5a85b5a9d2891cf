"""Canonical (NVT) dynamics: Langevin BAOAB and Nosé–Hoover chains.

Symbols: p momenta (amu·Å/t), m masses (amu), F forces (eV/Å), dt time step (ASE time),
kT = k_B·T (eV), γ friction (1/t), N_f degrees of freedom: 3N minus those removed by the
constraints (ASE's convention, :func:`mlip.md.state.degrees_of_freedom`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from mlip.errors import ConfigError
from mlip.md.noise import atom_normals
from mlip.md.nve import ForceFn, total_energy, velocity_verlet
from mlip.md.state import (
    MDState,
    constrain_momenta,
    degrees_of_freedom,
    kinetic_energy,
    system_field,
)
from mlip.nn.scatter import scatter_sum
from mlip.units import kB

__all__ = ["LangevinState", "NoseHooverState", "langevin_init", "langevin_step", "nhc_init",
           "nhc_step", "nhc_conserved_energy", "ornstein_uhlenbeck", "langevin_conserved_energy",
           "kinetic_energy_change"]

#: Suzuki–Yoshida fourth-order weights (Yoshida 1990) used to split the thermostat propagator.
_SUZUKI_YOSHIDA = (1.0 / (2.0 - 2.0 ** (1.0 / 3.0)),
                   1.0 - 2.0 / (2.0 - 2.0 ** (1.0 / 3.0)),
                   1.0 / (2.0 - 2.0 ** (1.0 / 3.0)))


@dataclass(frozen=True, kw_only=True)
class LangevinState(MDState):
    """MD state with a noise seed and the energy exchanged with the bath.

    Attributes:
        bath_work: (n_graphs,) eV, energy the thermostat (and barostat) put into each system
            since the start of the run; E_tot − bath_work (+ P₀V in NPT) changes only by
            integration error (:func:`langevin_conserved_energy`).
        rng_seed: base seed; system ``g`` of the batch draws its noise from its own stream
            with seed ``rng_seed + g`` (:mod:`mlip.md.noise`), as a pure function of the step.
            So a system's trajectory does not depend on the other systems of the batch (run
            alone with seed ``rng_seed + g`` it is the same), and a restarted run reproduces
            the uninterrupted one bit for bit.
    """

    bath_work: torch.Tensor = system_field()
    rng_seed: int = 0

    def system_seeds(self) -> torch.Tensor:
        """(n_graphs,) int64 per-system noise seeds."""
        return self.rng_seed + torch.arange(self.n_graphs, device=self.positions.device)


@dataclass(frozen=True, kw_only=True)
class NoseHooverState(MDState):
    """MD state with a Nosé–Hoover chain of length M per system.

    Attributes:
        eta: (n_graphs, M) dimensionless thermostat positions.
        eta_velocity: (n_graphs, M) 1/t thermostat velocities.
        eta_mass: (n_graphs, M) eV·t² thermostat masses Q.
    """

    eta: torch.Tensor = system_field()
    eta_velocity: torch.Tensor = system_field()
    eta_mass: torch.Tensor = system_field()


def ornstein_uhlenbeck(state: LangevinState, momenta: torch.Tensor, c1: float,
                       kT: float) -> torch.Tensor:
    """Exact O step: p ← c1·p + √((1 − c1²)·m·kT)·ξ with ξ ~ N(0, 1) drawn per system from
    the stream of (seed, step), projected onto the constraints (no kick on a fixed atom),
    (n_atoms, 3) amu·Å/t."""
    noise = atom_normals(state.system_seeds(), state.step, 0, state.batch, state.first_atom,
                         momenta.dtype)
    return constrain_momenta(
        state, c1 * momenta + torch.sqrt((1.0 - c1 * c1) * state.masses * kT)[:, None] * noise)


def langevin_init(state: MDState, force_fn: ForceFn, *, seed: int = 0) -> LangevinState:
    """Evaluate forces and attach the noise seed (no bath work yet)."""
    fields = {f.name: getattr(state, f.name) for f in dataclasses.fields(MDState)}
    bath_work = torch.zeros(state.n_graphs, dtype=torch.float64, device=state.positions.device)
    return LangevinState(**fields, bath_work=bath_work,
                         rng_seed=seed).with_forces(force_fn(state))


def kinetic_energy_change(state: MDState, before: torch.Tensor,
                          after: torch.Tensor) -> torch.Tensor:
    """K(after) − K(before) per system for two momenta of ``state``'s atoms, (n_graphs,) eV."""
    per_atom = torch.linalg.vecdot(after - before, after + before) / state.masses
    return 0.5 * scatter_sum(per_atom, state.batch, state.n_graphs)


def langevin_conserved_energy(state: LangevinState) -> torch.Tensor:
    """E_pot + E_kin − bath work per system, (n_graphs,) eV: constant but for integration
    error (the "effective energy" of Sivak, Chodera & Crooks, Phys. Rev. X 3, 011007, 2013;
    LAMMPS' ``econserve``, GROMACS' "Conserved En.")."""
    return total_energy(state) - state.bath_work


def langevin_step(state: LangevinState, force_fn: ForceFn, *, dt: float, temperature_K: float,
                  friction: float) -> LangevinState:
    """One BAOAB Langevin step (Leimkuhler & Matthews, Appl. Math. Res. Express 2013, 34).

    B: p += ½dt·F;  A: r += ½dt·p/m;  O: p = c1·p + √((1−c1²) m kT)·ξ, c1 = exp(−γ dt);
    A: r += ½dt·p/m;  force call;  B: p += ½dt·F.  The kinetic energy changed by O is added
    to ``bath_work``.

    Args:
        dt: time step, ASE time. temperature_K: target, K. friction: γ, 1/(ASE time).
    """
    inv_m = 1.0 / state.masses[:, None]
    momenta = constrain_momenta(state, state.momenta + 0.5 * dt * state.forces)
    positions = state.positions + 0.5 * dt * momenta * inv_m
    kicked = momenta
    momenta = ornstein_uhlenbeck(state, momenta, math.exp(-friction * dt), kB * temperature_K)
    positions = positions + 0.5 * dt * momenta * inv_m
    moved = state.replace(positions=positions, momenta=momenta, bath_work=state.bath_work
                          + kinetic_energy_change(state, kicked, momenta))
    out = force_fn(moved)
    momenta = constrain_momenta(state, momenta + 0.5 * dt * out.forces)
    return moved.with_forces(out, momenta=momenta, step=state.step + 1)


def nhc_init(state: MDState, force_fn: ForceFn, *, temperature_K: float, damping: float,
             chain_length: int = 3) -> NoseHooverState:
    """Start a chain at rest with masses Q₁ = N_f·kT·τ², Q_k = kT·τ² (Martyna et al. 1992).

    Args:
        damping: τ, ASE time units.

    Raises:
        ConfigError: a system whose constraints leave no degree of freedom to thermostat.
    """
    n_graphs = state.n_graphs
    kT = kB * temperature_K
    n_dof = degrees_of_freedom(state)
    if state.constraints is not None:
        frozen = torch.nonzero(n_dof <= 0).flatten().tolist()
        if frozen:
            raise ConfigError(f"system {frozen[0]}: its constraints leave no degree of freedom "
                              "for the Nosé–Hoover thermostat (every atom fixed)")
    mass = torch.full((n_graphs, chain_length), kT * damping**2, dtype=torch.float64,
                      device=state.positions.device)
    mass[:, 0] = n_dof * kT * damping**2
    zeros = torch.zeros_like(mass)
    fields = {f.name: getattr(state, f.name) for f in dataclasses.fields(MDState)}
    return NoseHooverState(**fields, eta=zeros, eta_velocity=zeros.clone(),
                           eta_mass=mass).with_forces(force_fn(state))


def _nhc_half_step(state: NoseHooverState, dt: float, kT: float
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Propagate the chain for dt/2 with Suzuki–Yoshida splitting (Martyna et al., Mol. Phys. 87,
    1117, 1996, Trotter factorisation of exp(iL_NHC dt/2)).

    Returns:
        momentum scale factor (n_graphs,), new eta (n_graphs, M), new eta_velocity (n_graphs, M).
    """
    q = state.eta_mass.unbind(1)
    v = list(state.eta_velocity.unbind(1))
    eta = list(state.eta.unbind(1))
    m = len(v)
    kin2 = 2.0 * kinetic_energy(state.momenta, state.masses, state.batch, state.n_graphs)
    n_dof_kT = degrees_of_freedom(state).to(kin2.dtype) * kT
    scale = torch.ones_like(kin2)

    def force(k: int) -> torch.Tensor:
        if k == 0:
            return (kin2 * scale * scale - n_dof_kT) / q[0]
        return (q[k - 1] * v[k - 1] * v[k - 1] - kT) / q[k]

    for weight in _SUZUKI_YOSHIDA:
        d = weight * dt / 2.0
        v[m - 1] = v[m - 1] + 0.5 * d * force(m - 1)
        for k in range(m - 2, -1, -1):
            damp = torch.exp(-0.25 * d * v[k + 1])
            v[k] = (v[k] * damp + 0.5 * d * force(k)) * damp
        scale = scale * torch.exp(-d * v[0])
        eta = [e + d * vk for e, vk in zip(eta, v)]
        for k in range(m - 1):
            damp = torch.exp(-0.25 * d * v[k + 1])
            v[k] = (v[k] * damp + 0.5 * d * force(k)) * damp
        v[m - 1] = v[m - 1] + 0.5 * d * force(m - 1)
    return scale, torch.stack(eta, dim=1), torch.stack(v, dim=1)


def _apply_chain(state: NoseHooverState, dt: float, kT: float) -> NoseHooverState:
    scale, eta, eta_velocity = _nhc_half_step(state, dt, kT)
    return state.replace(momenta=state.momenta * scale[state.batch, None], eta=eta,
                         eta_velocity=eta_velocity)


def nhc_step(state: NoseHooverState, force_fn: ForceFn, *, dt: float,
             temperature_K: float) -> NoseHooverState:
    """One Nosé–Hoover-chain step: chain(dt/2) · velocity Verlet(dt) · chain(dt/2).

    Args:
        dt: time step, ASE time. temperature_K: target, K.
    """
    kT = kB * temperature_K
    state = _apply_chain(state, dt, kT)
    state = velocity_verlet(state, force_fn, dt)
    return _apply_chain(state, dt, kT)


def nhc_conserved_energy(state: NoseHooverState, temperature_K: float) -> torch.Tensor:
    """Extended energy E_pot + E_kin + Σ ½Q v_η² + N_f kT η₁ + kT Σ_{k>1} η_k, (n_graphs,) eV."""
    kT = kB * temperature_K
    n_dof = degrees_of_freedom(state)
    kin = kinetic_energy(state.momenta, state.masses, state.batch, state.n_graphs)
    chain = 0.5 * (state.eta_mass * state.eta_velocity**2).sum(dim=1)
    coupling = n_dof * kT * state.eta[:, 0] + kT * state.eta[:, 1:].sum(dim=1)
    return state.energy + kin + chain + coupling
