"""The ensemble registry: each entry knows its pure (init, step) pair, state type and settings,
and :func:`make_integrator` binds its parameters, in user units."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from mlip.errors import ConfigError
from mlip.md.npt import CRescaleState, crescale_conserved_energy, crescale_init, crescale_step
from mlip.md.nve import ForceFn, nve_init, nve_step, total_energy
from mlip.md.nvt import (
    LangevinState,
    NoseHooverState,
    langevin_conserved_energy,
    langevin_init,
    langevin_step,
    nhc_conserved_energy,
    nhc_init,
    nhc_step,
)
from mlip.md.state import MDState
from mlip.units import GPa, fs

__all__ = ["ENSEMBLES", "Ensemble", "Integrator", "ensemble_for", "make_integrator"]


@dataclass(frozen=True)
class Integrator:
    """An ensemble with its parameters bound.

    Attributes:
        name: key of :data:`ENSEMBLES`.
        init: ``init(state, force_fn) -> state`` (evaluates the first forces).
        step: ``step(state, force_fn) -> state``.
        conserved: (n_graphs,) eV quantity logged as ``Econs``, constant but for integration
            error in every ensemble: E_tot (NVE), the extended energy (NHC), E_tot − bath work
            (Langevin), E_tot + P₀V − bath work (NPT).
        timestep_fs: fs. temperature_K: target (None for NVE). needs_stress: barostat.
        settings: the keyword arguments of :func:`make_integrator` (stored in checkpoints).
    """

    name: str
    init: Callable[[MDState, ForceFn], MDState]
    step: Callable[[MDState, ForceFn], MDState]
    conserved: Callable[[MDState], torch.Tensor]
    timestep_fs: float
    temperature_K: float | None
    needs_stress: bool
    settings: dict[str, Any] = field(default_factory=dict)


#: bind(settings in user units, time step in ASE units) -> (init, step, conserved).
Binder = Callable[[dict[str, Any], float], tuple[Callable, Callable, Callable]]


@dataclass(frozen=True)
class Ensemble:
    """One entry of :data:`ENSEMBLES`: an ensemble that knows its state, settings and binding.

    Attributes:
        name: registry key (``nve``, ``nvt_langevin``, ``nvt_nhc``, ``npt_crescale``).
        init, step: the pure functions (parameters unbound).
        state_type: the :class:`MDState` subclass it integrates (a restart may switch to an
            ensemble whose state fields the checkpoint's state holds).
        settings: the :func:`make_integrator` settings it reads besides ``timestep_fs`` and
            ``seed`` (each is range-checked; a non-zero ``pressure_GPa`` is refused where it
            is not listed).
        bind: ``bind(settings, dt) -> (init, step, conserved)`` with the parameters bound,
            converted from user units once (``dt`` in ASE time units).
        kind, thermostat: how the command line spells it (``--ensemble``, ``--thermostat``;
            thermostat None: takes none).
    """

    name: str
    init: Callable[..., MDState]
    step: Callable[..., MDState]
    state_type: type[MDState]
    settings: tuple[str, ...]
    bind: Binder
    kind: str
    thermostat: str | None

    @property
    def needs_stress(self) -> bool:
        """Whether the ensemble has a barostat (it reads the stress every step)."""
        return "pressure_GPa" in self.settings


def _bind_nve(s: dict[str, Any], dt: float) -> tuple[Callable, Callable, Callable]:
    return nve_init, functools.partial(nve_step, dt=dt), total_energy


def _bind_langevin(s: dict[str, Any], dt: float) -> tuple[Callable, Callable, Callable]:
    return (functools.partial(langevin_init, seed=s["seed"]),
            functools.partial(langevin_step, dt=dt, temperature_K=s["temperature_K"],
                              friction=s["friction_per_fs"] / fs),
            langevin_conserved_energy)


def _bind_nhc(s: dict[str, Any], dt: float) -> tuple[Callable, Callable, Callable]:
    temperature = s["temperature_K"]
    damping = (100.0 * s["timestep_fs"] if s["damping_fs"] is None else s["damping_fs"]) * fs
    return (functools.partial(nhc_init, temperature_K=temperature, damping=damping,
                              chain_length=s["chain_length"]),
            functools.partial(nhc_step, dt=dt, temperature_K=temperature),
            functools.partial(nhc_conserved_energy, temperature_K=temperature))


def _bind_crescale(s: dict[str, Any], dt: float) -> tuple[Callable, Callable, Callable]:
    pressure = s["pressure_GPa"] * GPa
    step = functools.partial(crescale_step, dt=dt, temperature_K=s["temperature_K"],
                             friction=s["friction_per_fs"] / fs, pressure=pressure,
                             compressibility=s["compressibility_per_GPa"] / GPa,
                             tau=s["barostat_time_fs"] * fs, anisotropic=s["anisotropic"])
    return (functools.partial(crescale_init, seed=s["seed"]), step,
            functools.partial(crescale_conserved_energy, pressure=pressure))


#: Ensemble name → :class:`Ensemble`; :func:`make_integrator` is the one way to bind one.
ENSEMBLES: dict[str, Ensemble] = {e.name: e for e in (
    Ensemble("nve", nve_init, nve_step, MDState, (), _bind_nve, "nve", None),
    Ensemble("nvt_langevin", langevin_init, langevin_step, LangevinState,
             ("temperature_K", "friction_per_fs"), _bind_langevin, "nvt", "langevin"),
    Ensemble("nvt_nhc", nhc_init, nhc_step, NoseHooverState,
             ("temperature_K", "damping_fs", "chain_length"), _bind_nhc,
             "nvt", "nhc"),
    Ensemble("npt_crescale", crescale_init, crescale_step, CRescaleState,
             ("temperature_K", "friction_per_fs", "pressure_GPa", "barostat_time_fs",
              "compressibility_per_GPa", "anisotropic"), _bind_crescale, "npt", "langevin"),
)}


def ensemble_for(kind: str, thermostat: str | None = None) -> str:
    """The registered ensemble the command line means by ``--ensemble kind --thermostat t``.

    Args:
        kind: ``nve``, ``nvt`` or ``npt``. thermostat: ``langevin`` (None) or ``nhc``.

    Raises:
        ConfigError: no registered ensemble is spelled so (the message lists those that are).
    """
    thermostat = thermostat or "langevin"
    for entry in ENSEMBLES.values():
        if entry.kind == kind and entry.thermostat in (None, thermostat):
            return entry.name
    spelled = sorted(f"{e.kind}" + (f"/{e.thermostat}" if e.thermostat else "")
                     for e in ENSEMBLES.values())
    raise ConfigError(f"ensemble {kind!r} with thermostat {thermostat!r} is not registered; "
                      f"choose one of {spelled}")


def make_integrator(ensemble: str, *, timestep_fs: float, temperature_K: float | None = None,
                    pressure_GPa: float = 0.0, friction_per_fs: float = 0.01,
                    damping_fs: float | None = None, chain_length: int = 3,
                    barostat_time_fs: float = 1000.0, compressibility_per_GPa: float = 0.05,
                    anisotropic: bool = False, seed: int = 0) -> Integrator:
    """Bind an ensemble's parameters through its :data:`ENSEMBLES` entry, converting user
    units to ASE units once.

    Args:
        ensemble: ``nve``, ``nvt_langevin``, ``nvt_nhc`` or ``npt_crescale``.
        timestep_fs: time step, fs. temperature_K: thermostat target, K.
        pressure_GPa: barostat target, GPa (positive compresses).
        friction_per_fs: Langevin γ, 1/fs. damping_fs: NHC τ, fs (default 100 time steps).
        chain_length: NHC length. barostat_time_fs: C-rescale τ_p, fs.
        compressibility_per_GPa: C-rescale β_T, 1/GPa (sets the barostat's speed, not the
            ensemble). anisotropic: scale the three axes independently. seed: noise seed.

    Raises:
        ConfigError: unknown ensemble, or a missing/invalid parameter, or one the ensemble
            does not use (a pressure outside NPT): the message names setting, value and what
            is allowed.
    """
    settings = {k: v for k, v in locals().items() if k != "ensemble"}
    entry = ENSEMBLES.get(ensemble)
    if entry is None:
        raise ConfigError(f"unknown ensemble {ensemble!r}; choose one of {sorted(ENSEMBLES)}")
    _check_settings(entry, settings)
    init, step, conserved = entry.bind(settings, timestep_fs * fs)
    temperature = temperature_K if "temperature_K" in entry.settings else None
    return Integrator(ensemble, init, step, conserved, timestep_fs, temperature,
                      entry.needs_stress, settings)


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


#: Setting → (accepts(value), what is allowed), checked for the settings an ensemble reads.
_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "timestep_fs": (_positive, "a finite number > 0 (fs)"),
    "temperature_K": (lambda v: v is not None and _positive(v), "a finite number > 0 (K)"),
    "friction_per_fs": (lambda v: _finite(v) and v >= 0, "a finite number >= 0 (1/fs)"),
    "damping_fs": (lambda v: v is None or _positive(v),
                   "a finite number > 0 (fs), or None for 100 time steps"),
    "chain_length": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    "pressure_GPa": (_finite, "a finite number (GPa)"),  # where the ensemble has a barostat
    "barostat_time_fs": (_positive, "a finite number > 0"),
    "compressibility_per_GPa": (_positive, "a finite number > 0"),
}


def _check_settings(entry: Ensemble, settings: dict[str, Any]) -> None:
    """Refuse a value outside its range, or a setting the ensemble would silently ignore.

    Raises:
        ConfigError: ``"<setting> = <value> is not allowed for <ensemble>: <what is>"``.
    """
    def refuse(name: str, allowed: str) -> None:
        raise ConfigError(f"{name} = {settings[name]!r} is not allowed for ensemble "
                          f"{entry.name!r}: {allowed}")

    def check(name: str) -> None:
        accepts, allowed = _RULES.get(name, (lambda value: True, ""))
        if not accepts(settings[name]):
            refuse(name, allowed)

    check("timestep_fs")
    if not entry.needs_stress and settings["pressure_GPa"] != 0.0:
        barostats = " or ".join(e.name for e in ENSEMBLES.values() if e.needs_stress)
        refuse("pressure_GPa", f"only {barostats} has a barostat (leave it at 0)")
    for name in entry.settings:
        check(name)
