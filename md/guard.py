"""Blow-up detection: per-system checks after every step, evaluated on the device without syncs
(on the CPU, one compiled scan clears the common all-healthy step).

A failing system is reverted to its last good state and frozen (the driver reports it at the
next log interval); the other systems of the batch carry on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import torch

from mlip.md.state import MDState, temperature_K, volume
from mlip.units import kB

__all__ = ["BlowUpLimits", "REASONS", "check_step", "check_step_torch", "healthy_cpu",
           "describe_failure", "failure_reason"]

#: Failure code → (description, unit of the offending value). Code 0 means healthy.
REASONS = {
    1: ("non-finite energy, forces, stress, positions or momenta", ""),
    2: ("max |F| above the limit", "eV/Å"),
    3: ("two atoms closer than the minimum distance", "Å"),
    4: ("temperature runaway", "K"),
    5: ("energy jump in one step", "eV/atom"),
    6: ("an atom moved too far in one step", "Å"),
    7: ("cell volume collapsed or changed too much", "relative change"),
}


@dataclass(frozen=True)
class BlowUpLimits:
    """Thresholds of the blow-up checks (docs/simulation.md, "Blow-up detection").

    Attributes:
        max_force: eV/Å. min_distance: Å. max_displacement: Å per step.
        max_temperature_K: K; None means max(5 × target, 5000 K).
        max_energy_jump: eV/atom change of the integrator's reference energy in one step.
        max_volume_change: relative change from the starting volume (periodic systems).
    """

    max_force: float = 50.0
    min_distance: float = 0.5
    max_displacement: float = 0.5
    max_temperature_K: float | None = None
    max_energy_jump: float = 0.05
    max_volume_change: float = 0.5

    def temperature_limit(self, target_K: float | None) -> float:
        """The temperature above which a system is stopped, K."""
        if self.max_temperature_K is not None:
            return self.max_temperature_K
        return max(5.0 * (target_K or 0.0), 5000.0)


def check_step(prev: MDState, new: MDState, prev_energy: torch.Tensor, new_energy: torch.Tensor,
               volume0: torch.Tensor, limits: BlowUpLimits, temperature_limit: float
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Failure code and offending value of each system after one step.

    A stress the force field did not compute (``new.stress_computed`` False: a NaN placeholder)
    is not checked; a cell tensor that ``new`` shares with ``prev`` (an unchanged cell) passed
    at the previous step and is not looked at again.

    CPU tensors are first screened by :func:`healthy_cpu` (one compiled call); when every
    system passes, zeros are returned without running the torch checks of
    :func:`check_step_torch`, which otherwise (and on other devices) give the codes.

    Args:
        prev, new: states before and after the step.
        prev_energy, new_energy: (n_graphs,) eV reference (conserved) energies.
        volume0: (n_graphs,) Å³ starting volumes.
        limits: thresholds. temperature_limit: K.

    Returns:
        code: (n_graphs,) int64, 0 when healthy (the first failing check of :data:`REASONS`);
        value: (n_graphs,) float64, the offending quantity.
    """
    if new.positions.is_cpu and healthy_cpu(prev, new, prev_energy, new_energy, volume0, limits,
                                            temperature_limit).all():
        n_graphs = new.n_graphs
        return (torch.zeros(n_graphs, dtype=torch.long),
                torch.zeros(n_graphs, dtype=torch.float64))
    return check_step_torch(prev, new, prev_energy, new_energy, volume0, limits,
                            temperature_limit)


def check_step_torch(prev: MDState, new: MDState, prev_energy: torch.Tensor,
                     new_energy: torch.Tensor, volume0: torch.Tensor, limits: BlowUpLimits,
                     temperature_limit: float) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`check_step` with torch operations on any device, without syncs (same arguments
    and returns)."""
    peak = _largest_per_system(new, prev)  # (n_graphs, 2) max |F|², max |Δr|² (NaN kept)
    if not new.stress_computed:  # the force field's NaN placeholder
        stress_ok = torch.ones_like(new_energy, dtype=torch.bool)
    else:
        stress_ok = (torch.isfinite(new.stress).all(dim=(1, 2))
                     | torch.isnan(new.stress).all(dim=(1, 2)))  # all NaN: not computed
    force, moved = peak.sqrt().unbind(1)
    temperature = temperature_K(new)
    jump = (new_energy - prev_energy).abs() / new.n_atoms.to(torch.float64)
    zero = torch.zeros_like(jump)
    if new.cell is prev.cell:  # same cell as the step before, which passed (or is frozen)
        vol_change = zero
    else:
        vol_change = torch.where(new.pbc.all(dim=1), (volume(new.cell) / volume0 - 1.0).abs(),
                                 zero)
    min_distance = new.min_distance.to(torch.float64)
    finite = (torch.isfinite(peak).all(dim=1) & torch.isfinite(new_energy) & stress_ok
              & torch.isfinite(temperature) & ~torch.isnan(min_distance))  # inf: no edges
    force, moved = force.nan_to_num(0.0), moved.nan_to_num(0.0)
    failed = torch.stack([  # (n_graphs, n_checks) in the order of REASONS
        ~finite, force > limits.max_force, min_distance < limits.min_distance,
        temperature > temperature_limit, ~(jump <= limits.max_energy_jump),
        moved > limits.max_displacement, ~(vol_change <= limits.max_volume_change)], dim=1)
    measured = torch.stack([zero, force, min_distance, temperature, jump, moved, vol_change],
                           dim=1)
    first = failed.to(torch.uint8).argmax(dim=1, keepdim=True)  # lowest failing code - 1
    any_failed = failed.any(dim=1)
    code = torch.where(any_failed, first[:, 0] + 1, 0)
    value = torch.where(any_failed, measured.gather(1, first)[:, 0], zero)
    return code, value


def healthy_cpu(prev: MDState, new: MDState, prev_energy: torch.Tensor, new_energy: torch.Tensor,
                volume0: torch.Tensor, limits: BlowUpLimits, temperature_limit: float
                ) -> np.ndarray:
    """Whether each system passes every check, by one compiled scan of CPU tensors.

    The conditions are those of :func:`check_step_torch`: finite forces, displacements and
    energy; stress all finite or all NaN (when computed); max |F|, max one-step
    displacement, temperature 2K/(N_f k_B) (N_f = 3N minus the degrees of freedom the
    constraints remove; 0 K when none is left), energy jump per atom and relative volume change
    (fully periodic systems, unless the cell is shared) within their limits; shortest distance
    at least its limit; every NaN fails. No system passes here that fails there. The scan is
    stricter, which only sends a system to :func:`check_step_torch` for its verdict: the
    force, displacement, temperature, energy jump and volume change must be within their
    limits by a relative 1e-9, far above the round-off of the sums and the determinant that
    both compute in a different order (a value within that margin of its limit may fail here,
    pass there).

    Args:
        as :func:`check_step`, on the CPU.

    Returns:
        (n_graphs,) bool.
    """
    # a stress not computed or a cell shared with prev is not checked: empty arrays stand in
    removed_dof = (_NO_DOF if new.constraints is None
                   else new.constraints.removed_dof.numpy(force=True))
    stress = new.stress.numpy(force=True) if new.stress_computed else _NO_STRESS
    if new.cell is prev.cell:
        cell, pbc, volume0_np = _NO_CELL, _NO_PBC, _NO_VOLUME
    else:
        cell, pbc = new.cell.numpy(force=True), new.pbc.numpy(force=True)
        volume0_np = volume0.numpy(force=True)
    return _healthy_kernel(
        new.positions.numpy(force=True), prev.positions.numpy(force=True),
        new.forces.numpy(force=True), new.momenta.numpy(force=True),
        new.masses.numpy(force=True), new.batch.numpy(force=True), stress, cell, pbc,
        volume0_np, prev_energy.numpy(force=True), new_energy.numpy(force=True),
        new.min_distance.numpy(force=True), removed_dof, limits.max_force,
        limits.max_displacement,
        limits.min_distance, temperature_limit, limits.max_energy_jump,
        limits.max_volume_change, kB)


#: Stand-ins for a stress or a cell that is not checked (same dtypes and layouts as the real
#: ones, so that the compiled scan keeps one specialisation).
_NO_STRESS = np.empty((0, 3, 3))
_NO_CELL = np.empty((0, 3, 3))
_NO_PBC = np.empty((0, 3), dtype=np.bool_)
_NO_VOLUME = np.empty(0)
_NO_DOF = np.empty(0)  # no constraints: N_f = 3N


@numba.njit(cache=True, nogil=True, error_model="numpy")  # x / 0 gives inf or NaN, no raise
def _healthy_kernel(positions, prev_positions, forces, momenta, masses, batch, stress, cell, pbc,
                    volume0, prev_energy, new_energy, min_distance, removed_dof, max_force,
                    max_displacement,
                    min_distance_limit, temperature_limit, max_energy_jump, max_volume_change,
                    k_b) -> np.ndarray:
    """The flags of :func:`healthy_cpu`, (n_graphs,) bool.

    Arrays have the shapes and units of :class:`MDState`, except that ``stress`` is empty when
    not checked, ``cell``, ``pbc`` and ``volume0`` (Å³) are empty when the volume is not
    checked and ``removed_dof`` (n_graphs,) is empty without constraints (N_f = 3N). Every
    system fails for a batch index out of range.
    """
    n_graphs = new_energy.shape[0]
    healthy = np.zeros(n_graphs, dtype=np.bool_)
    count = np.zeros(n_graphs, dtype=np.int64)
    force2 = np.zeros(n_graphs)  # largest |F|², eV²/Å², NaN if any is NaN
    moved2 = np.zeros(n_graphs)  # largest |Δr|², Å²
    kinetic = np.zeros(n_graphs)  # Σ p²/2m, eV
    for a in range(batch.shape[0]):
        g = batch[a]
        if g < 0 or g >= n_graphs:
            return healthy
        count[g] += 1
        f2 = forces[a, 0] * forces[a, 0] + forces[a, 1] * forces[a, 1] \
            + forces[a, 2] * forces[a, 2]
        if f2 > force2[g] or f2 != f2:  # a NaN stays
            force2[g] = f2
        dx = positions[a, 0] - prev_positions[a, 0]
        dy = positions[a, 1] - prev_positions[a, 1]
        dz = positions[a, 2] - prev_positions[a, 2]
        d2 = dx * dx + dy * dy + dz * dz
        if d2 > moved2[g] or d2 != d2:
            moved2[g] = d2
        kinetic[g] += 0.5 * (momenta[a, 0] * momenta[a, 0] + momenta[a, 1] * momenta[a, 1]
                             + momenta[a, 2] * momenta[a, 2]) / masses[a]
    for g in range(n_graphs):
        n = count[g]
        if n == 0 or not (np.isfinite(force2[g]) and np.isfinite(moved2[g])
                          and np.isfinite(new_energy[g])):
            continue
        vol_change = 0.0
        if cell.shape[0] and pbc[g, 0] and pbc[g, 1] and pbc[g, 2]:
            vol_change = abs(abs(_det3(cell[g])) / volume0[g] - 1.0)
        n_dof = 3.0 * n - (removed_dof[g] if removed_dof.shape[0] else 0.0)
        temperature = 2.0 * kinetic[g] / (n_dof * k_b) if n_dof > 0 else 0.0
        healthy[g] = (_within(np.sqrt(force2[g]), max_force)
                      and _within(np.sqrt(moved2[g]), max_displacement)
                      and min_distance[g] >= min_distance_limit
                      and _within(temperature, temperature_limit)
                      and _within(abs(new_energy[g] - prev_energy[g]) / n, max_energy_jump)
                      and _within(vol_change, max_volume_change)
                      and (stress.shape[0] == 0 or _finite_or_all_nan(stress[g])))
    return healthy


@numba.njit(cache=True, nogil=True)
def _within(value: float, limit: float) -> bool:
    """``value <= limit`` with a relative margin of 1e-9 (False for NaN)."""
    return value + 1e-9 * abs(value) <= limit


@numba.njit(cache=True, nogil=True)
def _det3(m) -> float:
    """Determinant of a (3, 3) matrix."""
    return (m[0, 0] * (m[1, 1] * m[2, 2] - m[1, 2] * m[2, 1])
            - m[0, 1] * (m[1, 0] * m[2, 2] - m[1, 2] * m[2, 0])
            + m[0, 2] * (m[1, 0] * m[2, 1] - m[1, 1] * m[2, 0]))


@numba.njit(cache=True, nogil=True)
def _finite_or_all_nan(s) -> bool:
    """Whether a (3, 3) stress is all finite or all NaN (not computed)."""
    n_finite, n_nan = 0, 0
    for i in range(3):
        for j in range(3):
            n_finite += np.isfinite(s[i, j])
            n_nan += np.isnan(s[i, j])
    return n_finite == 9 or n_nan == 9


def _largest_per_system(new: MDState, prev: MDState) -> torch.Tensor:
    """Per system, the largest squared force and squared one-step displacement,
    (n_graphs, 2) eV²/Å², Å²; a non-finite atom makes its system's entry non-finite."""
    moved = new.positions - prev.positions
    per_atom = torch.stack([(new.forces * new.forces).sum(dim=1), (moved * moved).sum(dim=1)],
                           dim=1)  # (n_atoms, 2)
    if new.n_graphs == 1:
        return per_atom.max(dim=0).values[None]
    index = new.batch[:, None].expand(-1, 2)
    return torch.zeros(new.n_graphs, 2, dtype=per_atom.dtype,
                       device=per_atom.device).scatter_reduce(0, index, per_atom, "amax")


def failure_reason(code: int, value: float, limits: BlowUpLimits,
                   temperature_limit: float) -> str:
    """The failed check with its value and limit, e.g. ``forces above the limit (1200 eV/Å,
    limit 1000)``."""
    text, unit = REASONS[code]
    limit = {2: limits.max_force, 3: limits.min_distance, 4: temperature_limit,
             5: limits.max_energy_jump, 6: limits.max_displacement,
             7: limits.max_volume_change}.get(code)
    detail = "" if limit is None else f" ({value:.4g} {unit}, limit {limit:g})"
    return f"{text}{detail}"


def describe_failure(system: int, step: int, code: int, value: float, limits: BlowUpLimits,
                     temperature_limit: float) -> str:
    """A one-line message naming the system, the step, the check and the values."""
    reason = failure_reason(code, value, limits, temperature_limit)
    return f"system {system} stopped at step {step}: {reason}; its last good frame is kept"
