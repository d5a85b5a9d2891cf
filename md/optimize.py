"""Batched relaxation front door: :func:`run_relax` (an optimiser of
:data:`mlip.md.relax.OPTIMIZERS`: FIRE or L-BFGS, optionally with the cell), and
:func:`relax_stream` for any number of structures under a memory budget
(:mod:`mlip.md.inflight`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch
from ase import Atoms

from mlip.md.guard import BlowUpLimits
from mlip.md.inflight import RELAX_LIMITS, RelaxStream
from mlip.models import Potential

__all__ = ["RelaxResult", "run_relax", "relax_stream"]


@dataclass
class RelaxResult:
    """Outcome of :func:`run_relax`, one entry per structure, in input order.

    Attributes:
        atoms: relaxed structures with energy, forces (and stress) attached; ``info`` holds
            ``relax_converged``, ``relax_steps``, ``relax_status`` and ``relax_fmax``.
        converged: whether fmax was reached. n_steps: optimiser moves made (force calls − 1).
        fmax: final largest generalised force, eV/Å. energy: final energy, eV.
        status: ``converged``, ``max_steps`` or ``blown_up: <reason>`` (the blow-up guard
            stopped it; its last good state is kept).
    """

    atoms: list[Atoms]
    converged: list[bool]
    n_steps: list[int]
    fmax: list[float]
    energy: list[float]
    status: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line per structure: status, steps, energy, final fmax."""
        lines = []
        rows = zip(self.converged, self.n_steps, self.energy, self.fmax, self.status)
        for g, (ok, n, e, f, status) in enumerate(rows):
            text = "converged" if ok else ("NOT converged" if status == "max_steps" else status)
            lines.append(f"structure {g}: {text} after {n} steps, E = {e:.6f} eV, "
                         f"fmax = {f:.2e} eV/Å")
        return "\n".join(lines)


def relax_stream(
    model: Potential | str | os.PathLike,
    structures: Iterable[Atoms],
    *,
    fmax: float = 0.05,
    relax_cell: bool = False,
    optimizer: str = "fire",
    steps: int = 1000,
    pressure_GPa: float = 0.0,
    lbfgs_memory: int | None = None,
    max_memory: int | float | str | None = None,
    ordered: bool = False,
    skin: float = 1.0,
    device: str | torch.device = "cpu",
    limits: BlowUpLimits = RELAX_LIMITS,
    progress: bool = False,
    total: int | None = None,
) -> RelaxStream:
    """Relax ``structures`` (any iterable, read lazily) in a batch kept under ``max_memory``,
    yielding ``(input index, relaxed Atoms)`` once per structure as soon as it leaves the batch.

    A structure leaves when it converges, after ``steps`` moves, or when it blows up; waiting
    structures then take its place (in input order). Each result equals relaxing the structure
    alone with the same settings, up to the rounding of batched model evaluation. ``info`` of
    every yielded structure holds ``relax_converged``, ``relax_steps``, ``relax_fmax`` (eV/Å)
    and ``relax_status``: ``converged``, ``max_steps`` or ``blown_up: <reason>`` (the checks
    of :mod:`mlip.md.guard` with ``limits``; a warning names the structure and the frame is
    its last good state).

    Args:
        model: a potential or a checkpoint path. structures: ``ase.Atoms``, e.g.
            ``ase.io.iread(path)``.
        fmax, relax_cell, optimizer, steps, pressure_GPa, skin, device: as :func:`run_relax`.
        lbfgs_memory: L-BFGS history length (``optimizer="lbfgs"`` only; None: 20).
        max_memory: budget in bytes or text (``"2GB"``, ``"512MB"``, ``"1.5GiB"``) for the
            batch, estimated from measured memory per atom and per edge
            (:mod:`mlip.md.memory`); None: every structure in one batch.
        ordered: yield in input order (holding the ones that finish early) instead of as soon
            as each finishes.
        limits: blow-up thresholds (default :data:`mlip.md.inflight.RELAX_LIMITS`).
        progress: a progress bar of finished structures (of ``total`` when known; the length
            of ``structures`` when it has one).

    Returns:
        A :class:`mlip.md.inflight.RelaxStream` (an iterator; ``memory_model`` and
        ``admitted`` tell what the batches held).

    Raises:
        ConfigError: a setting :func:`run_relax` refuses, ``lbfgs_memory`` with FIRE, a
            ``max_memory`` that is not a size; a structure that cannot be relaxed (naming its
            input index), when it is read.
    """
    return RelaxStream(model, structures, fmax=fmax, relax_cell=relax_cell, optimizer=optimizer,
                       steps=steps, pressure_GPa=pressure_GPa, lbfgs_memory=lbfgs_memory,
                       skin=skin, device=device, max_memory=max_memory, ordered=ordered,
                       limits=limits, progress=progress, total=total)


def run_relax(
    model: Potential | str | os.PathLike,
    atoms: Sequence[Atoms] | Iterable[Atoms],
    *,
    fmax: float = 0.05,
    relax_cell: bool = False,
    optimizer: str = "fire",
    steps: int = 1000,
    pressure_GPa: float = 0.0,
    skin: float = 1.0,
    device: str | torch.device = "cpu",
    progress: bool = False,
    max_memory: int | float | str | None = None,
    lbfgs_memory: int | None = None,
    limits: BlowUpLimits = RELAX_LIMITS,
) -> RelaxResult:
    """Relax a batch of structures with FIRE or L-BFGS (and the Fréchet cell filter when
    ``relax_cell``).

    Each system stops moving once its generalised forces are below ``fmax``; the batch stops
    when all have converged or after ``steps`` moves. ASE ``FixAtoms``/``FixCom`` constraints
    of ``atoms`` are honoured (fixed atoms never move and do not count in fmax; see
    :mod:`mlip.md.constraints`); any other ASE constraint is refused (ConfigError). A system
    that blows up (:mod:`mlip.md.guard` checks with ``limits``) stops at its last good state
    with status ``blown_up: <reason>`` and a warning naming it; the others carry on.

    Args:
        model: a potential or a checkpoint path. atoms: the structures.
        fmax: eV/Å. relax_cell: also relax the cell (needs full pbc).
        optimizer: ``fire`` or ``lbfgs`` (a non-cell key of :data:`OPTIMIZERS`; ``relax_cell``
            picks its ``_cell`` entry). steps: maximum moves.
        pressure_GPa: external pressure for cell relaxation, GPa. skin: Å. device: torch device.
        progress: show a progress bar (structures finished).
        max_memory: None: every structure in one batch; else a memory budget (bytes, or text
            such as ``"2GB"``) for in-flight batching (:func:`relax_stream`).
        lbfgs_memory: L-BFGS history length (None: 20). limits: blow-up thresholds.

    Raises:
        ConfigError: an unknown ``optimizer``, ``fmax`` not a finite number > 0, ``steps`` not
            an integer >= 0, or a pressure without ``relax_cell`` (it would be ignored); the
            message names it.
    """
    stream = relax_stream(model, atoms, fmax=fmax, relax_cell=relax_cell, optimizer=optimizer,
                          steps=steps, pressure_GPa=pressure_GPa, lbfgs_memory=lbfgs_memory,
                          max_memory=max_memory, ordered=True, skin=skin, device=device,
                          limits=limits, progress=progress)
    frames = [frame for _, frame in stream]
    return RelaxResult(atoms=frames, converged=[f.info["relax_converged"] for f in frames],
                       n_steps=[f.info["relax_steps"] for f in frames],
                       fmax=[f.info["relax_fmax"] for f in frames],
                       energy=[_energy(f) for f in frames],
                       status=[f.info["relax_status"] for f in frames])


def _energy(atoms: Atoms) -> float:
    """The attached energy, eV (NaN when none is finite)."""
    results = atoms.calc.results if atoms.calc is not None else {}
    return float(results.get("energy", float("nan")))
