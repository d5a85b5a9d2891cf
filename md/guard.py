"""Blow-up detection: per-system checks after every step, evaluated on the device without syncs.

A failing system is reverted to its last good state and frozen (the driver reports it at the
next log interval); the other systems of the batch carry on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mlip.md.state import MDState, temperature_K, volume

__all__ = ["BlowUpLimits", "REASONS", "check_step", "describe_failure"]

#: Failure code → (description, unit of the offending value). Code 0 means healthy.
REASONS = {
    1: ("non-finite energy, forces, stress or positions", ""),
    2: ("max |F| above the limit", "eV/Å"),
    3: ("two atoms closer than the minimum distance", "Å"),
    4: ("temperature runaway", "K"),
    5: ("energy jump in one step", "eV/atom"),
    6: ("an atom moved too far in one step", "Å"),
    7: ("cell volume collapsed or changed too much", "relative change"),
}


@dataclass(frozen=True)
class BlowUpLimits:
    """Thresholds of the blow-up checks (engine.md §2.5).

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

    A cell or stress tensor that ``new`` shares with ``prev`` (an unchanged cell, a stress the
    force field did not recompute) passed at the previous step and is not looked at again.

    Args:
        prev, new: states before and after the step.
        prev_energy, new_energy: (n_graphs,) eV reference (conserved) energies.
        volume0: (n_graphs,) Å³ starting volumes.
        limits: thresholds. temperature_limit: K.

    Returns:
        code: (n_graphs,) int64, 0 when healthy (the first failing check of :data:`REASONS`);
        value: (n_graphs,) float64, the offending quantity.
    """
    peak = _largest_per_system(new, prev)  # (n_graphs, 2) max |F|², max |Δr|² (NaN kept)
    if new.stress is prev.stress:  # not recomputed (the force field's NaN placeholder)
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
    # every comparison is False for NaN, so "all within limits" implies code 0
    healthy = (stress_ok & (force <= limits.max_force) & (moved <= limits.max_displacement)
               & (min_distance >= limits.min_distance) & (temperature <= temperature_limit)
               & (jump <= limits.max_energy_jump) & (vol_change <= limits.max_volume_change))
    if healthy.device.type == "cpu" and bool(healthy.all()):  # the common case, a free sync
        return torch.zeros_like(jump, dtype=torch.long), zero
    finite = torch.isfinite(peak).all(dim=1) & torch.isfinite(new_energy) & stress_ok
    force, moved = force.nan_to_num(0.0), moved.nan_to_num(0.0)
    failed = torch.stack([  # (n_graphs, n_checks) in the order of REASONS
        ~finite, force > limits.max_force, min_distance < limits.min_distance,
        temperature > temperature_limit, jump > limits.max_energy_jump,
        moved > limits.max_displacement, ~(vol_change <= limits.max_volume_change)], dim=1)
    measured = torch.stack([zero, force, min_distance, temperature, jump, moved, vol_change],
                           dim=1)
    first = failed.to(torch.uint8).argmax(dim=1, keepdim=True)  # lowest failing code - 1
    any_failed = failed.any(dim=1)
    code = torch.where(any_failed, first[:, 0] + 1, 0)
    value = torch.where(any_failed, measured.gather(1, first)[:, 0], zero)
    return code, value


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


def describe_failure(system: int, step: int, code: int, value: float, limits: BlowUpLimits,
                     temperature_limit: float) -> str:
    """A one-line message naming the system, the step, the check and the values."""
    text, unit = REASONS[code]
    limit = {2: limits.max_force, 3: limits.min_distance, 4: temperature_limit,
             5: limits.max_energy_jump, 6: limits.max_displacement,
             7: limits.max_volume_change}.get(code)
    detail = "" if limit is None else f" ({value:.4g} {unit}, limit {limit:g})"
    return (f"system {system} stopped at step {step}: {text}{detail}; its last good frame "
            "is kept")
