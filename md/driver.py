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

import dataclasses
import logging
import numbers
import os
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from ase import Atoms
from tqdm.auto import tqdm

from mlip.errors import ConfigError
from mlip.md.ensembles import ENSEMBLES, Integrator, make_integrator
from mlip.md.force_field import ForceField
from mlip.md.guard import BlowUpLimits, check_step, describe_failure, healthy_cpu
from mlip.md.nvt import LangevinState
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
from mlip.md.status import RunStatus
from mlip.models import Potential
from mlip.models.loading import resolve_model
from mlip.units import GPa

__all__ = ["MDOutputs", "MDResult", "run_md", "DEFAULT_SETTINGS"]

log = logging.getLogger(__name__)

#: What ``run_md(ensemble=, temperature=, timestep=, pressure=)`` left as None means on a fresh
#: run (a restart keeps the checkpoint's values instead), as ``make_integrator`` settings.
DEFAULT_SETTINGS: dict[str, Any] = {"ensemble": "nvt_langevin", "temperature_K": 300.0,
                                    "timestep_fs": 1.0, "pressure_GPa": 0.0}

#: run_md keyword → make_integrator setting, for the settings a restart may change.
_SETTING_NAMES = {"ensemble": "ensemble", "temperature": "temperature_K",
                  "timestep": "timestep_fs", "pressure": "pressure_GPa"}

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

    def __post_init__(self) -> None:
        """Raises ConfigError for an interval that is not an integer >= 1 (named)."""
        for name in ("trajectory_interval", "log_interval", "checkpoint_interval"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"MDOutputs {name} = {value!r} is not allowed: an integer "
                                  ">= 1 (steps)")

    def plain(self) -> dict[str, Any]:
        """The fields with paths as strings (what a checkpoint stores)."""
        return {f.name: str(v) if isinstance(v, os.PathLike) else v
                for f in dataclasses.fields(self) for v in [getattr(self, f.name)]}


@dataclass
class MDResult:
    """Outcome of :func:`run_md`.

    Attributes:
        state: final state (failed systems hold their last good frame).
        failures: system index → one-line reason, for the systems that were stopped.
        steps: last step number. wall_s: seconds spent in the loop.
        atom_steps_per_s, ns_per_day: throughput of the loop.
        nl_builds: neighbour-list builds since the start of the run (a restart continues the
            count). time_ps: simulated time since the start of the run.
        changed_settings: on a restart, setting → (checkpoint's value, value used) for every
            setting given anew (also logged).
    """

    state: MDState
    failures: dict[int, str] = field(default_factory=dict)
    steps: int = 0
    wall_s: float = 0.0
    atom_steps_per_s: float = 0.0
    ns_per_day: float = 0.0
    nl_builds: int = 0
    time_ps: float = 0.0
    changed_settings: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    def atoms(self) -> list[Atoms]:
        """Final structures, one per system."""
        return state_to_atoms(self.state)

    def summary(self) -> str:
        """A few human-readable lines: throughput, then one line per system."""
        temps = temperature_K(self.state).tolist()
        energies = self.state.energy.tolist()
        counts = self.state.n_atoms.tolist()
        lines = [f"step {self.steps} ({self.time_ps:.4g} ps), {self.nl_builds} neighbour-list "
                 f"builds; this call {self.wall_s:.1f} s: {self.ns_per_day:.3g} ns/day, "
                 f"{self.atom_steps_per_s:.3g} atom-steps/s"]
        for g, (n, t, e) in enumerate(zip(counts, temps, energies)):
            status = self.failures.get(g, "ok")
            lines.append(f"  system {g}: {n} atoms, T = {t:.1f} K, E_pot = {e:.6f} eV  [{status}]")
        return "\n".join(lines)


class _Run:
    """Mutable bookkeeping of one MD run (kept out of the pure state)."""

    def __init__(self, state: MDState, integrator: Integrator, force_field: ForceField,
                 limits: BlowUpLimits, status: RunStatus | None,
                 counters: dict[str, int | float]) -> None:
        self.state, self.integrator, self.force_field = state, integrator, force_field
        self.start_step = state.step
        self.start_time_ps = float(counters.get("time_ps", 0.0))
        self.start_builds = int(counters.get("nl_builds", 0))
        self.limits = limits
        self.temperature_limit = limits.temperature_limit(integrator.temperature_K or
                                                          _initial_temperature(state))
        self.status = RunStatus.start(state) if status is None else status
        self.conserved = integrator.conserved(state)
        self.periodic = bool(state.pbc.all(dim=1).any())
        # CPU only: while no system has failed, the screen of healthy_cpu replaces the merge
        self.all_healthy = (state.positions.device.type == "cpu"
                            and not bool(self.status.code.any()))

    def advance(self, want_stress: bool = True) -> None:
        """One step of every healthy system; a failing system keeps its previous state.

        Args:
            want_stress: evaluate the stress at the new positions (always done for barostats;
                otherwise only needed where the pressure is logged or a frame written).
        """
        prev = self.state
        self.force_field.compute_stress = self.integrator.needs_stress or (
            want_stress and self.periodic)
        new = self.integrator.step(prev, self.force_field)
        new_conserved = self.integrator.conserved(new)
        checks = (prev, new, self.conserved, new_conserved, self.status.volume0, self.limits,
                  self.temperature_limit)
        if self.all_healthy and healthy_cpu(*checks).all():  # one compiled screen (CPU only)
            self.state, self.conserved = new, new_conserved
            return
        self.all_healthy = False
        code, value = check_step(*checks)
        take = self.status.healthy & (code == 0)
        self.status = self.status.record(code, value, new.step)
        self.state = select_systems(take, new, prev)
        self.conserved = torch.where(take, new_conserved, self.conserved)

    def new_failures(self) -> dict[int, str]:
        """Messages for failures not reported yet (one host sync)."""
        status = self.status
        pending = status.pending()
        self.status = status.mark_reported(pending)
        out = {}
        for g in torch.nonzero(pending).flatten().tolist():
            out[g] = describe_failure(g, int(status.step[g]), int(status.code[g]),
                                      float(status.value[g]), self.limits,
                                      self.temperature_limit)
        return out

    def healthy_systems(self) -> list[int]:
        return torch.nonzero(self.status.healthy).flatten().tolist()

    def time_ps(self) -> float:
        """Simulated time since the start of the run (continued across restarts), ps."""
        return (self.start_time_ps
                + (self.state.step - self.start_step) * self.integrator.timestep_fs * 1e-3)

    def nl_builds(self) -> int:
        """Neighbour-list builds since the start of the run (continued across restarts)."""
        return self.start_builds + self.force_field.neighbors.n_rebuilds

    def counters(self) -> dict[str, int | float]:
        return {"nl_builds": self.nl_builds(), "time_ps": self.time_ps()}


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
        thermo.write(thermo_rows(state, run.conserved, run.time_ps(), run.nl_builds(), healthy))
    if writer is not None and write_frames and healthy:
        frames = state_to_atoms(state)
        writer.write([frames[g] for g in healthy], healthy, state.step)


def _report_failures(run: _Run, writer: TrajectoryWriter | None,
                     trajectory_interval: int) -> dict[int, str]:
    """Warn about newly stopped systems and write their last good frame, unless it is
    already in the trajectory (written at its trajectory step)."""
    messages = run.new_failures()
    for message in messages.values():
        log.warning(message)
    if messages and writer is not None:
        frames = state_to_atoms(run.state)
        failed_at = run.status.step.tolist()
        for g in sorted(messages):  # the frozen state is that of the step before the failure
            last_good = failed_at[g] - 1
            if last_good % trajectory_interval != 0:
                writer.write([frames[g]], [g], last_good)
    return messages


def _progress(bar: tqdm, k: int, start_step: int, t0: float, n_atoms: int,
              timestep_fs: float) -> None:
    """Advance the bar to step k and show ns/day and atom-steps/s."""
    bar.update(k - bar.n)
    elapsed = max(time.perf_counter() - t0, 1e-12)
    done = k - start_step
    bar.set_postfix(ns_day=f"{done * timestep_fs * 1e-6 / elapsed * 86400:.3g}",
                    atom_steps_s=f"{n_atoms * done / elapsed:.3g}", refresh=False)


def _save(outputs: MDOutputs, run: _Run, writer: TrajectoryWriter | None) -> None:
    """Flush outputs, write the checkpoint atomically, then drop the neighbour list so that
    this run and one restarted from the checkpoint rebuild it at the same positions."""
    path = outputs.checkpoint
    if writer is not None:
        writer.flush()
    settings = {"ensemble": run.integrator.name, **run.integrator.settings}
    save_checkpoint(path, Checkpoint(run.state, settings, run.status, run.counters(),
                                     outputs.plain()))
    run.force_field.neighbors.reset()


@dataclass
class _Start:
    """Where a run starts: state, integrator, force field, and what a checkpoint carried."""

    state: MDState
    integrator: Integrator
    force_field: ForceField
    status: RunStatus | None = None
    counters: dict[str, int | float] = field(default_factory=dict)
    outputs: MDOutputs = MDOutputs()
    changed: dict[str, tuple[Any, Any]] = field(default_factory=dict)


def _fresh(model: Potential, atoms: Sequence[Atoms] | None, integrator: Integrator | None,
           given: dict[str, Any], device: str | torch.device, skin: float,
           initial_temperature_K: float | None, seed: int,
           max_atoms_per_call: int | str | None, deterministic: bool = False) -> _Start:
    """A new run: the integrator is ``integrator`` or built from ``given`` settings (the
    missing ones from :data:`DEFAULT_SETTINGS`)."""
    if atoms is None:
        raise ConfigError("run_md needs structures unless it restarts from a checkpoint")
    if integrator is None:
        settings = {**DEFAULT_SETTINGS, **given}
        _refuse_unused(settings["ensemble"], given)
        integrator = make_integrator(settings.pop("ensemble"), seed=seed, **settings)
    state = state_from_atoms(atoms, device)
    if initial_temperature_K is not None:
        momenta = maxwell_boltzmann_momenta(state.masses, state.batch, state.n_graphs,
                                            initial_temperature_K, seed, state.constraints)
        state = state.replace(momenta=momenta)
    force_field = _force_field(model, integrator, state, skin, max_atoms_per_call, deterministic)
    return _Start(integrator.init(state, force_field), integrator, force_field)


def _resume(model: Potential, restart: str | os.PathLike, integrator: Integrator | None,
            given: dict[str, Any], device: str | torch.device, skin: float,
            max_atoms_per_call: int | str | None, deterministic: bool = False) -> _Start:
    """Continue a checkpoint with its settings, except those given anew (``integrator``'s
    settings, or ``given``), which are honoured and logged; a change the checkpoint's state
    cannot follow is refused."""
    ckpt = load_checkpoint(restart, device)
    saved = dict(ckpt.settings)
    settings = dict(saved)
    if integrator is not None:
        settings.update(ensemble=integrator.name, **integrator.settings)
    settings.update(given)
    if (settings["ensemble"] != "npt_crescale" and "pressure_GPa" not in given
            and integrator is None):
        settings["pressure_GPa"] = 0.0  # the saved NPT target does not apply any more
    _refuse_unused(settings["ensemble"], given)
    changed = {k: (saved.get(k), v) for k, v in settings.items() if saved.get(k) != v}
    integrator = make_integrator(**settings)  # checks the new values first
    state = _continued_state(ckpt.state, saved, settings, restart)
    ensemble = settings["ensemble"]
    for name, (old, new) in changed.items():
        log.info("restart from %s at step %d: %s %r -> %r (the checkpoint's value replaced)",
                 restart, state.step, name, old, new)
    if changed.keys() & {"ensemble", "temperature_K", "damping_fs"} and (
            ensemble in ("nve", "nvt_nhc") or saved["ensemble"] == "nvt_nhc"):
        log.info("restart from %s: Econs_eV is not continuous across this change (it is the "
                 "conserved quantity of the new settings from here on)", restart)
    force_field = _force_field(model, integrator, state, skin, max_atoms_per_call, deterministic)
    outputs = MDOutputs(**ckpt.outputs) if ckpt.outputs is not None else MDOutputs()
    return _Start(state, integrator, force_field, ckpt.status, ckpt.counters, outputs, changed)


def _continued_state(state: MDState, saved: dict[str, Any], settings: dict[str, Any],
                     path: str | os.PathLike) -> MDState:
    """The checkpoint's state as the (possibly new) ensemble's state type, with the bath and
    thermostat terms adjusted to new settings.

    * bath work: a new NPT target pressure P₀ (0 outside NPT) adds ΔP₀·V, so that Econs
      (E_tot + P₀V − bath work) stays continuous;
    * NHC: the chain masses Q ∝ kT·τ² follow a new temperature or damping time;
    * a new seed becomes the noise seed from the next step on.

    Raises:
        ConfigError: the new ensemble needs state the checkpoint lacks (e.g. a Nosé–Hoover
            chain), or NPT for a system that is not periodic.
    """
    ensemble = settings["ensemble"]
    target = ENSEMBLES[ensemble].state_type
    held = {f.name for f in dataclasses.fields(state)}
    if type(state) is not target:
        missing = sorted({f.name for f in dataclasses.fields(target)} - held)
        if missing:
            allowed = sorted(e.name for e in ENSEMBLES.values()
                             if {f.name for f in dataclasses.fields(e.state_type)} <= held)
            raise ConfigError(f"ensemble = {ensemble!r} is not allowed on a restart from {path}: "
                              f"its state needs {missing}, which the checkpoint "
                              f"({saved['ensemble']}) lacks; allowed: {allowed}")
        state = target(**{f.name: getattr(state, f.name) for f in dataclasses.fields(target)})
    if ensemble == "npt_crescale":
        not_periodic = torch.nonzero(~state.pbc.all(dim=1)).flatten().tolist()
        if not_periodic:
            raise ConfigError(f"ensemble = 'npt_crescale' is not allowed on a restart from "
                              f"{path}: system {not_periodic[0]} is not periodic on all axes")
    if isinstance(state, LangevinState):
        work = (_barostat_pressure(settings) - _barostat_pressure(saved)) * GPa
        state = state.replace(bath_work=state.bath_work + work * volume(state.cell))
    if ensemble == "nvt_nhc":
        def tau(s: dict[str, Any]) -> float:
            return s["damping_fs"] if s["damping_fs"] is not None else 100.0 * s["timestep_fs"]

        factor = settings["temperature_K"] / saved["temperature_K"] * (tau(settings)
                                                                        / tau(saved)) ** 2
        if factor != 1.0:
            state = state.replace(eta_mass=state.eta_mass * factor)
    if isinstance(state, LangevinState) and state.rng_seed != settings["seed"]:
        state = state.replace(rng_seed=settings["seed"])
    return state


def _barostat_pressure(settings: dict[str, Any]) -> float:
    """The NPT target pressure of integrator settings (0 outside NPT), GPa."""
    return settings["pressure_GPa"] if settings["ensemble"] == "npt_crescale" else 0.0


def _refuse_unused(ensemble: str, given: dict[str, Any]) -> None:
    """A thermostat target given for NVE would be dropped: refuse it."""
    if ensemble == "nve" and "temperature_K" in given:
        raise ConfigError(f"temperature = {given['temperature_K']!r} is not allowed for ensemble "
                          "'nve' (no thermostat): use initial_temperature_K on a fresh run")


def _force_field(model: Potential, integrator: Integrator, state: MDState, skin: float,
                 max_atoms_per_call: int | str | None, deterministic: bool = False
                 ) -> ForceField:
    periodic = bool(state.pbc.all(dim=1).any())
    return ForceField(model, skin=skin, compute_stress=integrator.needs_stress or periodic,
                      max_atoms_per_call=max_atoms_per_call, deterministic=deterministic)


def _check_request(steps: int, integrator: Integrator | None, given: dict[str, Any],
                   restart: str | os.PathLike | None, atoms: Sequence[Atoms] | None,
                   initial_temperature_K: float | None) -> None:
    """Refuse a combination of run_md arguments that would be silently dropped."""
    if not isinstance(steps, numbers.Integral) or isinstance(steps, bool) or steps < 0:
        raise ConfigError(f"steps = {steps!r} is not allowed: an integer >= 0 (the total "
                          "number of steps, a restart continues up to it)")
    if integrator is not None and given:
        names = sorted(k for k, v in _SETTING_NAMES.items() if v in given)
        raise ConfigError(f"{names[0]} = {given[_SETTING_NAMES[names[0]]]!r} is not allowed "
                          "together with an integrator: give the integrator or its settings")
    if restart is not None and atoms is not None:
        raise ConfigError(f"atoms are not allowed on a restart from {restart}: the run "
                          "continues the checkpoint's structures")
    if restart is not None and initial_temperature_K is not None:
        raise ConfigError(f"initial_temperature_K = {initial_temperature_K!r} is not allowed on "
                          f"a restart from {restart}: the run continues the checkpoint's momenta "
                          "(give temperature= to change the thermostat target)")


def run_md(
    model: Potential | str | os.PathLike,
    atoms: Sequence[Atoms] | None = None,
    integrator: Integrator | None = None,
    *,
    steps: int,
    outputs: MDOutputs | None = None,
    restart: str | os.PathLike | None = None,
    ensemble: str | None = None,
    temperature: float | None = None,
    timestep: float | None = None,
    pressure: float | None = None,
    initial_temperature_K: float | None = None,
    seed: int = 0,
    skin: float = 1.0,
    device: str | torch.device = "cpu",
    limits: BlowUpLimits = BlowUpLimits(),
    progress: bool = False,
    max_atoms_per_call: int | str | None = "auto",
    deterministic: bool = False,
    compile: bool = False,
) -> MDResult:
    """Run MD on a batch of structures (or continue a checkpoint) up to step ``steps``.

    A fresh run integrates with ``integrator``, or with one built from ``ensemble``,
    ``temperature``, ``timestep`` and ``pressure`` (None: :data:`DEFAULT_SETTINGS`; other
    parameters at their ``make_integrator`` defaults, noise seed ``seed``). A restart
    continues the checkpoint with its saved settings; a setting given anew (one of those four
    keywords, or a whole ``integrator``) is honoured from the next step and logged (and listed
    in ``MDResult.changed_settings``), or refused with a :class:`ConfigError` naming it where
    the checkpoint cannot follow (an ensemble whose state it lacks, e.g. Nosé–Hoover from
    Langevin). Step, simulated time, neighbour-list build count and bath work continue.

    Args:
        model: a potential or a checkpoint path.
        atoms: the structures (one batch); not allowed with ``restart``.
        integrator: from :func:`mlip.md.make_integrator`; not together with the four settings.
        steps: total number of steps (a restarted run continues up to it), >= 0.
        outputs: trajectory, log and checkpoint paths and intervals; None: nothing on a fresh
            run, the checkpoint's outputs (appended to) on a restart.
        restart: checkpoint to continue from; trajectory and log are appended to.
        ensemble: ``nve``, ``nvt_langevin``, ``nvt_nhc`` or ``npt_crescale``.
        temperature: thermostat target, K. timestep: fs. pressure: NPT target, GPa.
        initial_temperature_K: draw Maxwell–Boltzmann momenta at this temperature (else the
            momenta stored in ``atoms`` are used); fresh runs only.
        seed: seed of the initial momenta (and of the noise when ``integrator`` is None on a
            fresh run); a restart keeps the checkpoint's noise seed.
        skin: neighbour-list skin, Å. device: torch device.
        limits: blow-up thresholds. progress: show a progress bar with ns/day and atom-steps/s.
        max_atoms_per_call: evaluate the model on groups of whole systems of at most this many
            atoms; None: one call on the whole batch; ``"auto"``: on a CPU the fastest of both,
            timed at the first call (see :class:`mlip.md.ForceField`; helps heavy models).
        deterministic: evaluate the model with deterministic kernels
            (:func:`mlip.determinism.deterministic_mode`; ``"auto"`` then means None), so that
            a float32 run repeats bit for bit on the same machine and thread count.
        compile: evaluate energy and forces through ``torch.compile``
            (:func:`mlip.models.loading.resolve_model`; a passed module is copied, never
            changed). The first force call compiles (about a minute for the shipped Facet on a
            quiet 2-core CPU, less when torch's compile cache has it); later calls are faster
            (float32 Facet on a CPU: ~1.4x, docs/simulation.md). Same forces within rounding.

    Returns:
        :class:`MDResult`; stopped systems are listed in ``failures`` (also logged as warnings).

    Raises:
        ConfigError: a setting out of range, one that would be ignored, or a restart change
            the checkpoint cannot follow (the message names it).
    """
    given = {_SETTING_NAMES[k]: v for k, v in
             dict(ensemble=ensemble, temperature=temperature, timestep=timestep,
                  pressure=pressure).items() if v is not None}
    _check_request(steps, integrator, given, restart, atoms, initial_temperature_K)
    model = resolve_model(model, device=device, compile=compile)
    if restart is None:
        start = _fresh(model, atoms, integrator, given, device, skin, initial_temperature_K,
                       seed, max_atoms_per_call, deterministic)
    else:
        start = _resume(model, restart, integrator, given, device, skin, max_atoms_per_call,
                        deterministic)
        if steps < start.state.step:
            raise ConfigError(f"steps = {steps} is not allowed on a restart from {restart}: "
                              f"the checkpoint is at step {start.state.step} and steps is the "
                              "total")
    outputs = start.outputs if outputs is None else outputs
    state, integrator, force_field = start.state, start.integrator, start.force_field
    run = _Run(state, integrator, force_field, limits, start.status, start.counters)
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
                failures.update(_report_failures(run, writer, outputs.trajectory_interval))
                _record(run, writer, thermo, write_frames=k % outputs.trajectory_interval == 0)
                _progress(bar, k, start_step, t0, n_atoms, integrator.timestep_fs)
            elif writer is not None and k % outputs.trajectory_interval == 0:
                _record(run, writer, None, write_frames=True)
            at_checkpoint = k % outputs.checkpoint_interval == 0 or k == steps
            if outputs.checkpoint is not None and at_checkpoint:
                _save(outputs, run, writer)
        failures.update(_report_failures(run, writer, outputs.trajectory_interval))
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
                    nl_builds=run.nl_builds(), time_ps=run.time_ps(),
                    changed_settings=start.changed)
