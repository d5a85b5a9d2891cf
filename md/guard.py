"""Blow-up detection: per-system checks after every step, evaluated on the device without syncs.

A failing system is reverted to its last good state and frozen (the driver reports it at the
next log interval); the other systems of the batch carry on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mlip.md.state import MDState, temperature_K, volume
from mlip.nn.scatter import scatter_sum

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

    Args:
        prev, new: states before and after the step.
        prev_energy, new_energy: (n_graphs,) eV reference (conserved) energies.
        volume0: (n_graphs,) Å³ starting volumes.
        limits: thresholds. temperature_limit: K.

    Returns:
        code: (n_graphs,) int64, 0 when healthy (the first failing check of :data:`REASONS`);
        value: (n_graphs,) float64, the offending quantity.
    """
    batch, n_graphs = new.batch, new.n_graphs
    n_atoms = new.n_atoms.to(torch.float64)
    finite_atoms = torch.isfinite(new.forces).all(dim=1) & torch.isfinite(new.positions).all(dim=1)
    n_bad_atoms = scatter_sum((~finite_atoms).to(torch.float64), batch, n_graphs)
    stress_ok = (torch.isfinite(new.stress).all(dim=(1, 2))
                 | torch.isnan(new.stress).all(dim=(1, 2)))  # all NaN: not computed
    finite = (n_bad_atoms == 0) & torch.isfinite(new_energy) & stress_ok
    zero = torch.zeros(n_graphs, dtype=torch.float64, device=n_atoms.device)
    force = zero.scatter_reduce(0, batch, new.forces.norm(dim=1).nan_to_num(0.0), "amax")
    moved = zero.scatter_reduce(0, batch, (new.positions - prev.positions).norm(dim=1)
                                .nan_to_num(0.0), "amax")
    temperature = temperature_K(new)
    jump = (new_energy - prev_energy).abs() / n_atoms
    periodic = new.pbc.all(dim=1)
    vol_change = torch.where(periodic, (volume(new.cell) / volume0 - 1.0).abs(), zero)
    checks = [
        (~finite, zero),
        (force > limits.max_force, force),
        (new.min_distance < limits.min_distance, new.min_distance),
        (temperature > temperature_limit, temperature),
        (jump > limits.max_energy_jump, jump),
        (moved > limits.max_displacement, moved),
        (~(vol_change <= limits.max_volume_change), vol_change),
    ]
    code = torch.zeros(n_graphs, dtype=torch.long, device=n_atoms.device)
    value = zero
    for k in range(len(checks), 0, -1):  # lowest code wins
        failed, measured = checks[k - 1]
        code = torch.where(failed, torch.full_like(code, k), code)
        value = torch.where(failed, measured.to(torch.float64), value)
    return code, value


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
