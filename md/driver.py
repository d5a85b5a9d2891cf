"""The MD loop: the only place with side effects (neighbour list, logging, trajectories,
checkpoints, blow-up handling). The relaxation loop, which writes nothing, is in
:mod:`mlip.md.optimize`.

The inner loop stays on the device: blow-up checks are tensor reductions whose results freeze a
failing system via :func:`mlip.md.state.select_systems`; on a GPU the host only looks at them
every ``log_interval`` steps. (The neighbour list reads the device once per step: its stale
flags and pair count together.) On a CPU, where reading a flag costs nothing, one compiled
screen per step (:func:`mlip.md.guard.healthy_cpu`) skips the per-system merge while every
system is healthy.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Sequence

import torch
from ase import Atoms
from tqdm.auto import tqdm

from mlip.errors import ConfigError
from mlip.md.ensembles import Integrator, make_integrator
from mlip.md.force_field import ForceField, resolve_model
from mlip.md.guard import BlowUpLimits, check_step, describe_failure, healthy_cpu
from mlip.md.output import ThermoLog, TrajectoryWriter, thermo_rows
from mlip.md.restart import Checkpoint, load_checkpoint, save_checkpoint
from mlip.md.state import (
    MDState,
    maxwell_boltzmann_momenta,
    select_systems,
    state_from_atoms,
    state_to_atoms,
    temperature_K,
    volume,
)
from mlip.models import Potential

__all__ = ["MDOutputs", "MDResult", "run_md"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MDOutputs:
    """Where and how often an MD run writes.

    Attributes:
        trajectory: ``.xyz``/``.extxyz``/``.traj``/``.h5`` path or None.
        log: thermo log ``.csv``/``.jsonl`` path or None.
        checkpoint: restart file path or None.
        trajectory_interval, log_interval, checkpoint_interval: in steps. ``log_interval`` is
            also how often failures are looked at and the progress bar is updated.
    """

    trajectory: str | os.PathLike | None = None
    log: str | os.PathLike | None = None
    checkpoint: str | os.PathLike | None = None
    trajectory_interval: int = 10
    log_interval: int = 10
    checkpoint_interval: int = 1000


@dataclass
class MDResult:
    """Outcome of :func:`run_md`.

    Attributes:
        state: final state (failed systems hold their last good frame).
        failures: system index → one-line reason, for the systems that were stopped.
        steps: last step number. wall_s: seconds spent in the loop.
        atom_steps_per_s, ns_per_day: throughput of the loop. nl_builds: neighbour-list builds.
    """

    state: MDState
    failures: dict[int, str] = field(default_factory=dict)
    steps: int = 0
    wall_s: float = 0.0
    atom_steps_per_s: float = 0.0
    ns_per_day: float = 0.0
    nl_builds: int = 0

    def atoms(self) -> list[Atoms]:
        """Final structures, one per system."""
        return state_to_atoms(self.state)

    def summary(self) -> str:
        """A few human-readable lines: throughput, then one line per system."""
        temps = temperature_K(self.state).tolist()
        energies = self.state.energy.tolist()
        counts = self.state.n_atoms.tolist()
        lines = [f"{self.steps} steps in {self.wall_s:.1f} s: {self.ns_per_day:.3g} ns/day, "
                 f"{self.atom_steps_per_s:.3g} atom-steps/s, "
                 f"{self.nl_builds} neighbour-list builds"]
        for g, (n, t, e) in enumerate(zip(counts, temps, energies)):
            status = self.failures.get(g, "ok")
            lines.append(f"  system {g}: {n} atoms, T = {t:.1f} K, E_pot = {e:.6f} eV  [{status}]")
        return "\n".join(lines)


class _Run:
    """Mutable bookkeeping of one MD run (kept out of the pure state)."""

    def __init__(self, state: MDState, integrator: Integrator, force_field: ForceField,
                 limits: BlowUpLimits, status: dict[str, torch.Tensor] | None) -> None:
        self.state, self.integrator, self.force_field = state, integrator, force_field
        self.limits = limits
        self.temperature_limit = limits.temperature_limit(integrator.temperature_K or
                                                          _initial_temperature(state))
        n, device = state.n_graphs, state.positions.device
        self.status = status or {
            "code": torch.zeros(n, dtype=torch.long, device=device),
            "value": torch.zeros(n, dtype=torch.float64, device=device),
            "step": torch.zeros(n, dtype=torch.long, device=device),
            "reported": torch.zeros(n, dtype=torch.bool, device=device),
            "volume0": volume(state.cell),
        }
        self.conserved = integrator.conserved(state)
        self.periodic = bool(state.pbc.all(dim=1).any())
        # CPU only: while no system has failed, the screen of healthy_cpu replaces the merge
        self.all_healthy = device.type == "cpu" and not bool(self.status["code"].any())

    def advance(self, want_stress: bool = True) -> None:
        """One step of every healthy system; a failing system keeps its previous state.

        Args:
            want_stress: evaluate the stress at the new positions (always done for barostats;
                otherwise only needed where the pressure is logged or a frame written).
        """
        prev, status = self.state, self.status
        self.force_field.compute_stress = self.integrator.needs_stress or (
            want_stress and self.periodic)
        new = self.integrator.step(prev, self.force_field)
        new_conserved = self.integrator.conserved(new)
        checks = (prev, new, self.conserved, new_conserved, status["volume0"], self.limits,
                  self.temperature_limit)
        if self.all_healthy and healthy_cpu(*checks).all():  # one compiled screen (CPU only)
            self.state, self.conserved = new, new_conserved
            return
        self.all_healthy = False
        code, value = check_step(*checks)
        healthy = status["code"] == 0
        take = healthy & (code == 0)
        newly = healthy & (code > 0)
        status["code"] = torch.where(newly, code, status["code"])
        status["value"] = torch.where(newly, value, status["value"])
        status["step"] = torch.where(newly, new.step, status["step"])
        self.state = select_systems(take, new, prev)
        self.conserved = torch.where(take, new_conserved, self.conserved)

    def new_failures(self) -> dict[int, str]:
        """Messages for failures not reported yet (one host sync)."""
        status = self.status
        pending = (status["code"] > 0) & ~status["reported"]
        status["reported"] = status["reported"] | pending
        out = {}
        for g in torch.nonzero(pending).flatten().tolist():
            out[g] = describe_failure(g, int(status["step"][g]), int(status["code"][g]),
                                      float(status["value"][g]), self.limits,
                                      self.temperature_limit)
        return out

    def healthy_systems(self) -> list[int]:
        return torch.nonzero(self.status["code"] == 0).flatten().tolist()


def _initial_temperature(state: MDState) -> float:
    return float(temperature_K(state).max())


def _output_step(k: int, steps: int, outputs: MDOutputs) -> bool:
    """Whether step k logs, writes a frame or a checkpoint (and so needs the stress)."""
    intervals = [outputs.log_interval] if outputs.log is not None else []
    if outputs.trajectory is not None:
        intervals.append(outputs.trajectory_interval)
    if outputs.checkpoint is not None:
        intervals.append(outputs.checkpoint_interval)
    return k == steps or any(k % n == 0 for n in intervals)


def _record(run: _Run, writer: TrajectoryWriter | None, thermo: ThermoLog | None,
            write_frames: bool) -> None:
    """Log a row and (optionally) write a frame for every healthy system."""
    healthy = run.healthy_systems()
    state = run.state
    if thermo is not None:
        time_ps = state.step * run.integrator.timestep_fs * 1e-3
        builds = run.force_field.neighbors.n_rebuilds
        thermo.write(thermo_rows(state, run.conserved, time_ps, builds, healthy))
    if writer is not None and write_frames and healthy:
        frames = state_to_atoms(state)
        writer.write([frames[g] for g in healthy], healthy, state.step)


def _report_failures(run: _Run, writer: TrajectoryWriter | None) -> dict[int, str]:
    """Warn about newly stopped systems and write their last good frame."""
    messages = run.new_failures()
    for message in messages.values():
        log.warning(message)
    if messages and writer is not None:
        frames = state_to_atoms(run.state)
        failed_at = run.status["step"].tolist()
        for g in sorted(messages):  # the frozen state is that of the step before the failure
            writer.write([frames[g]], [g], failed_at[g] - 1)
    return messages


def _progress(bar: tqdm, k: int, start_step: int, t0: float, n_atoms: int,
              timestep_fs: float) -> None:
    """Advance the bar to step k and show ns/day and atom-steps/s."""
    bar.update(k - bar.n)
    elapsed = max(time.perf_counter() - t0, 1e-12)
    done = k - start_step
    bar.set_postfix(ns_day=f"{done * timestep_fs * 1e-6 / elapsed * 86400:.3g}",
                    atom_steps_s=f"{n_atoms * done / elapsed:.3g}", refresh=False)


def _save(path: str | os.PathLike, run: _Run, writer: TrajectoryWriter | None) -> None:
    """Flush outputs, write the checkpoint atomically, then drop the neighbour list so that
    this run and one restarted from the checkpoint rebuild it at the same positions."""
    if writer is not None:
        writer.flush()
    settings = {"ensemble": run.integrator.name, **run.integrator.settings}
    save_checkpoint(path, Checkpoint(run.state, settings, run.status))
    run.force_field.neighbors.reset()


def _start(model: Potential, atoms: Sequence[Atoms] | None, integrator: Integrator | None,
           restart: str | os.PathLike | None, device: str | torch.device, skin: float,
           initial_temperature_K: float | None, seed: int, max_atoms_per_call: int | str | None
           ) -> tuple[MDState, Integrator, ForceField, dict | None]:
    """The initial state, integrator and force field, fresh or from a checkpoint."""
    if restart is not None:
        ckpt = load_checkpoint(restart, device)
        settings = dict(ckpt.settings)
        integrator = make_integrator(settings.pop("ensemble"), **settings)
        force_field = _force_field(model, integrator, ckpt.state, skin, max_atoms_per_call)
        return ckpt.state, integrator, force_field, ckpt.status
    if atoms is None or integrator is None:
        raise ConfigError("run_md needs structures and an integrator unless it restarts "
                          "from a checkpoint")
    state = state_from_atoms(atoms, device)
    if initial_temperature_K is not None:
        momenta = maxwell_boltzmann_momenta(state.masses, state.batch, state.n_graphs,
                                            initial_temperature_K, seed, state.constraints)
        state = state.replace(momenta=momenta)
    force_field = _force_field(model, integrator, state, skin, max_atoms_per_call)
    return integrator.init(state, force_field), integrator, force_field, None


def _force_field(model: Potential, integrator: Integrator, state: MDState, skin: float,
                 max_atoms_per_call: int | str | None) -> ForceField:
    periodic = bool(state.pbc.all(dim=1).any())
    return ForceField(model, skin=skin, compute_stress=integrator.needs_stress or periodic,
                      max_atoms_per_call=max_atoms_per_call)


def run_md(
    model: Potential | str | os.PathLike,
    atoms: Sequence[Atoms] | None = None,
    integrator: Integrator | None = None,
    *,
    steps: int,
    outputs: MDOutputs = MDOutputs(),
    restart: str | os.PathLike | None = None,
    initial_temperature_K: float | None = None,
    seed: int = 0,
    skin: float = 1.0,
    device: str | torch.device = "cpu",
    limits: BlowUpLimits = BlowUpLimits(),
    progress: bool = False,
    max_atoms_per_call: int | str | None = "auto",
) -> MDResult:
    """Run MD on a batch of structures (or continue a checkpoint) up to step ``steps``.

    Args:
        model: a potential or a checkpoint path.
        atoms: the structures (one batch); ignored when ``restart`` is given.
        integrator: from :func:`mlip.md.make_integrator`; taken from the checkpoint on restart.
        steps: total number of steps (a restarted run continues up to it).
        outputs: trajectory, log and checkpoint paths and intervals.
        restart: checkpoint to continue from; trajectory and log are appended to.
        initial_temperature_K: draw Maxwell–Boltzmann momenta at this temperature (else the
            momenta stored in ``atoms`` are used).
        seed: seed of the initial momenta. skin: neighbour-list skin, Å. device: torch device.
        limits: blow-up thresholds. progress: show a progress bar with ns/day and atom-steps/s.
        max_atoms_per_call: evaluate the model on groups of whole systems of at most this many
            atoms; None: one call on the whole batch; ``"auto"``: on a CPU the fastest of both,
            timed at the first call (see :class:`mlip.md.ForceField`; helps heavy models).

    Returns:
        :class:`MDResult`; stopped systems are listed in ``failures`` (also logged as warnings).
    """
    model = resolve_model(model, device=device)
    state, integrator, force_field, status = _start(model, atoms, integrator, restart, device,
                                                    skin, initial_temperature_K, seed,
                                                    max_atoms_per_call)
    run = _Run(state, integrator, force_field, limits, status)
    append = restart is not None
    writer = None if outputs.trajectory is None else TrajectoryWriter(outputs.trajectory,
                                                                        state.n_graphs, append)
    thermo = None if outputs.log is None else ThermoLog(outputs.log, append)
    start_step = state.step
    if not append:
        _record(run, writer, thermo, write_frames=True)
    failures: dict[int, str] = {}
    n_atoms = state.positions.shape[0]
    bar = tqdm(total=steps, initial=start_step, disable=not progress, unit="step",
               dynamic_ncols=True)
    t0 = time.perf_counter()
    try:
        while run.state.step < steps and len(failures) < state.n_graphs:
            k = run.state.step + 1
            run.advance(want_stress=_output_step(k, steps, outputs))
            at_log = k % outputs.log_interval == 0 or k == steps
            if at_log:
                failures.update(_report_failures(run, writer))
                _record(run, writer, thermo, write_frames=k % outputs.trajectory_interval == 0)
                _progress(bar, k, start_step, t0, n_atoms, integrator.timestep_fs)
            elif writer is not None and k % outputs.trajectory_interval == 0:
                _record(run, writer, None, write_frames=True)
            at_checkpoint = k % outputs.checkpoint_interval == 0 or k == steps
            if outputs.checkpoint is not None and at_checkpoint:
                _save(outputs.checkpoint, run, writer)
        failures.update(_report_failures(run, writer))
    finally:
        bar.close()
        if writer is not None:
            writer.close()
        if thermo is not None:
            thermo.close()
    wall = time.perf_counter() - t0
    done = run.state.step - start_step
    return MDResult(state=run.state, failures=failures, steps=run.state.step, wall_s=wall,
                    atom_steps_per_s=n_atoms * done / max(wall, 1e-12),
                    ns_per_day=done * integrator.timestep_fs * 1e-6 / max(wall, 1e-12) * 86400.0,
                    nl_builds=force_field.neighbors.n_rebuilds)
