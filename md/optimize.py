"""Batched relaxation front door: :func:`run_relax` (FIRE, optionally with the cell)."""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass
from typing import Sequence

import torch
from ase import Atoms
from tqdm.auto import tqdm

from mlip.errors import ConfigError
from mlip.md.force_field import ForceField
from mlip.md.relax import fire_init, fire_step, max_force
from mlip.md.state import state_from_atoms, state_to_atoms
from mlip.models import Potential
from mlip.models.loading import resolve_model
from mlip.units import GPa

__all__ = ["RelaxResult", "run_relax"]


@dataclass
class RelaxResult:
    """Outcome of :func:`run_relax`, one entry per structure.

    Attributes:
        atoms: relaxed structures with energy, forces (and stress) attached; ``info`` holds
            ``relax_converged`` and ``relax_steps``.
        converged: whether fmax was reached. n_steps: FIRE moves made.
        fmax: final largest generalised force, eV/Å. energy: final energy, eV.
    """

    atoms: list[Atoms]
    converged: list[bool]
    n_steps: list[int]
    fmax: list[float]
    energy: list[float]

    def summary(self) -> str:
        """One line per structure: status, steps, energy, final fmax."""
        lines = []
        rows = zip(self.converged, self.n_steps, self.energy, self.fmax)
        for g, (ok, n, e, f) in enumerate(rows):
            status = "converged" if ok else "NOT converged"
            lines.append(f"structure {g}: {status} after {n} steps, E = {e:.6f} eV, "
                         f"fmax = {f:.2e} eV/Å")
        return "\n".join(lines)


def _check_relax_settings(fmax: float, steps: int, pressure_GPa: float,
                          relax_cell: bool) -> None:
    """Refuse relaxation settings that are out of range or would be ignored."""
    if not (isinstance(fmax, numbers.Real) and math.isfinite(fmax) and fmax > 0):
        raise ConfigError(f"fmax = {fmax!r} is not allowed: a finite number > 0 (eV/Å)")
    if not isinstance(steps, numbers.Integral) or isinstance(steps, bool) or steps < 0:
        raise ConfigError(f"steps = {steps!r} is not allowed: an integer >= 0 (maximum moves)")
    if pressure_GPa != 0.0 and not relax_cell:
        raise ConfigError(f"pressure_GPa = {pressure_GPa!r} is not allowed without "
                          "relax_cell=True (only a cell relaxation feels a pressure)")


def run_relax(
    model: Potential | str | os.PathLike,
    atoms: Sequence[Atoms],
    *,
    fmax: float = 0.05,
    relax_cell: bool = False,
    steps: int = 1000,
    pressure_GPa: float = 0.0,
    skin: float = 1.0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> RelaxResult:
    """Relax a batch of structures with FIRE (and the Fréchet cell filter when ``relax_cell``).

    Each system stops moving once its generalised forces are below ``fmax``; the batch stops
    when all have converged or after ``steps`` moves. ASE ``FixAtoms``/``FixCom`` constraints
    of ``atoms`` are honoured (fixed atoms never move and do not count in fmax; see
    :mod:`mlip.md.constraints`); any other ASE constraint is refused (ConfigError).

    Args:
        model: a potential or a checkpoint path. atoms: the structures.
        fmax: eV/Å. relax_cell: also relax the cell (needs full pbc). steps: maximum moves.
        pressure_GPa: external pressure for cell relaxation, GPa. skin: Å. device: torch device.
        progress: show a progress bar.

    Raises:
        ConfigError: ``fmax`` not a finite number > 0, ``steps`` not an integer >= 0, or a
            pressure without ``relax_cell`` (it would be ignored); the message names it.
    """
    _check_relax_settings(fmax, steps, pressure_GPa, relax_cell)
    model = resolve_model(model, device=device)
    start = state_from_atoms(atoms, device)
    start = start.replace(momenta=torch.zeros_like(start.momenta))
    force_field = ForceField(model, skin=skin, compute_stress=relax_cell, max_atoms_per_call="auto")
    pressure = pressure_GPa * GPa
    state = fire_init(start, force_field, relax_cell=relax_cell)
    for _ in tqdm(range(steps), disable=not progress, unit="step", dynamic_ncols=True):
        # marks the systems converged at the current point, then moves the others
        state = fire_step(state, force_field, fmax=fmax, relax_cell=relax_cell, pressure=pressure)
        if bool(state.converged.all()):
            break
    final_fmax = max_force(state, relax_cell, pressure)
    converged = (state.converged | (final_fmax < fmax)).tolist()
    n_steps = state.n_steps.tolist()
    frames = state_to_atoms(state)
    for frame, ok, n in zip(frames, converged, n_steps):
        frame.set_momenta(None)
        frame.info.update(relax_converged=bool(ok), relax_steps=int(n))
    return RelaxResult(atoms=frames, converged=converged, n_steps=n_steps,
                       fmax=final_fmax.tolist(), energy=state.energy.tolist())
