"""Batched relaxation front door: :func:`run_relax` (an optimiser of
:data:`mlip.md.relax.OPTIMIZERS`: FIRE or L-BFGS, optionally with the cell)."""

from __future__ import annotations

import numbers
import os
from dataclasses import dataclass
from typing import Sequence

import torch
from ase import Atoms
from tqdm.auto import tqdm

from mlip.errors import ConfigError
from mlip.md.force_field import ForceField
from mlip.md.relax import OPTIMIZERS, make_optimizer
from mlip.md.state import state_from_atoms, state_to_atoms
from mlip.models import Potential
from mlip.models.loading import resolve_model

__all__ = ["RelaxResult", "run_relax"]


@dataclass
class RelaxResult:
    """Outcome of :func:`run_relax`, one entry per structure.

    Attributes:
        atoms: relaxed structures with energy, forces (and stress) attached; ``info`` holds
            ``relax_converged`` and ``relax_steps``.
        converged: whether fmax was reached. n_steps: optimiser moves made (force calls − 1).
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


def _check_steps(steps: int) -> None:
    """Refuse a number of moves that is not an integer >= 0."""
    if not isinstance(steps, numbers.Integral) or isinstance(steps, bool) or steps < 0:
        raise ConfigError(f"steps = {steps!r} is not allowed: an integer >= 0 (maximum moves)")


def run_relax(
    model: Potential | str | os.PathLike,
    atoms: Sequence[Atoms],
    *,
    fmax: float = 0.05,
    relax_cell: bool = False,
    optimizer: str = "fire",
    steps: int = 1000,
    pressure_GPa: float = 0.0,
    skin: float = 1.0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> RelaxResult:
    """Relax a batch of structures with FIRE or L-BFGS (and the Fréchet cell filter when
    ``relax_cell``).

    Each system stops moving once its generalised forces are below ``fmax``; the batch stops
    when all have converged or after ``steps`` moves. ASE ``FixAtoms``/``FixCom`` constraints
    of ``atoms`` are honoured (fixed atoms never move and do not count in fmax; see
    :mod:`mlip.md.constraints`); any other ASE constraint is refused (ConfigError).

    Args:
        model: a potential or a checkpoint path. atoms: the structures.
        fmax: eV/Å. relax_cell: also relax the cell (needs full pbc).
        optimizer: ``fire`` or ``lbfgs`` (a non-cell key of :data:`OPTIMIZERS`; ``relax_cell``
            picks its ``_cell`` entry). steps: maximum moves.
        pressure_GPa: external pressure for cell relaxation, GPa. skin: Å. device: torch device.
        progress: show a progress bar.

    Raises:
        ConfigError: an unknown ``optimizer``, ``fmax`` not a finite number > 0, ``steps`` not
            an integer >= 0, or a pressure without ``relax_cell`` (it would be ignored); the
            message names it.
    """
    families = sorted(n for n, o in OPTIMIZERS.items() if not o.relax_cell)
    if optimizer not in families:
        raise ConfigError(f"optimizer = {optimizer!r} is not allowed: one of {families} "
                          "(relax_cell=True takes its cell variant)")
    name = f"{optimizer}_cell" if relax_cell else optimizer
    bound = make_optimizer(name, fmax=fmax, pressure_GPa=pressure_GPa)
    _check_steps(steps)
    model = resolve_model(model, device=device)
    start = state_from_atoms(atoms, device)
    start = start.replace(momenta=torch.zeros_like(start.momenta))
    force_field = ForceField(model, skin=skin, compute_stress=bound.needs_stress,
                             max_atoms_per_call="auto")
    state = bound.init(start, force_field)
    for _ in tqdm(range(steps), disable=not progress, unit="step", dynamic_ncols=True):
        # marks the systems converged at the current point, then moves the others
        state = bound.step(state, force_field)
        if bool(state.converged.all()):
            break
    final_fmax = bound.max_force(state)
    converged = (state.converged | (final_fmax < fmax)).tolist()
    n_steps = state.n_steps.tolist()
    frames = state_to_atoms(state)
    for frame, ok, n in zip(frames, converged, n_steps):
        frame.set_momenta(None)
        frame.info.update(relax_converged=bool(ok), relax_steps=int(n))
    return RelaxResult(atoms=frames, converged=converged, n_steps=n_steps,
                       fmax=final_fmax.tolist(), energy=state.energy.tolist())
