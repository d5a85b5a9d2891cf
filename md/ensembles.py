"""Ensemble names → (init, step) pairs with their parameters bound, in user units."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from mlip.errors import ConfigError
from mlip.md.npt import crescale_conserved_energy, crescale_init, crescale_step
from mlip.md.nve import ForceFn, nve_init, nve_step, total_energy
from mlip.md.nvt import (
    langevin_conserved_energy,
    langevin_init,
    langevin_step,
    nhc_conserved_energy,
    nhc_init,
    nhc_step,
)
from mlip.md.state import MDState
from mlip.units import GPa, fs

__all__ = ["ENSEMBLES", "Integrator", "make_integrator"]

#: Ensemble name → (init, step) pure functions.
ENSEMBLES: dict[str, tuple[Callable[..., MDState], Callable[..., MDState]]] = {
    "nve": (nve_init, nve_step),
    "nvt_langevin": (langevin_init, langevin_step),
    "nvt_nhc": (nhc_init, nhc_step),
    "npt_crescale": (crescale_init, crescale_step),
}


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


def make_integrator(ensemble: str, *, timestep_fs: float, temperature_K: float | None = None,
                    pressure_GPa: float = 0.0, friction_per_fs: float = 0.01,
                    damping_fs: float | None = None, chain_length: int = 3,
                    barostat_time_fs: float = 1000.0, compressibility_per_GPa: float = 0.05,
                    anisotropic: bool = False, seed: int = 0) -> Integrator:
    """Bind an ensemble's parameters, converting user units to ASE units once.

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
    if ensemble not in ENSEMBLES:
        raise ConfigError(f"unknown ensemble {ensemble!r}; choose one of {sorted(ENSEMBLES)}")
    _check_settings(ensemble, settings)
    dt = timestep_fs * fs
    if ensemble == "nve":
        return Integrator(ensemble, nve_init, functools.partial(nve_step, dt=dt), total_energy,
                          timestep_fs, None, False, settings)
    friction = friction_per_fs / fs
    if ensemble == "nvt_langevin":
        return Integrator(ensemble, functools.partial(langevin_init, seed=seed),
                          functools.partial(langevin_step, dt=dt, temperature_K=temperature_K,
                                            friction=friction),
                          langevin_conserved_energy, timestep_fs, temperature_K, False, settings)
    if ensemble == "nvt_nhc":
        damping = (100.0 * timestep_fs if damping_fs is None else damping_fs) * fs
        return Integrator(ensemble, functools.partial(nhc_init, temperature_K=temperature_K,
                                                      damping=damping, chain_length=chain_length),
                          functools.partial(nhc_step, dt=dt, temperature_K=temperature_K),
                          functools.partial(nhc_conserved_energy, temperature_K=temperature_K),
                          timestep_fs, temperature_K, False, settings)
    pressure = pressure_GPa * GPa
    step = functools.partial(crescale_step, dt=dt, temperature_K=temperature_K, friction=friction,
                             pressure=pressure, compressibility=compressibility_per_GPa / GPa,
                             tau=barostat_time_fs * fs, anisotropic=anisotropic)
    return Integrator(ensemble, functools.partial(crescale_init, seed=seed), step,
                      functools.partial(crescale_conserved_energy, pressure=pressure), timestep_fs,
                      temperature_K, True, settings)


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def _check_settings(ensemble: str, settings: dict[str, Any]) -> None:
    """Refuse a value outside its range, or a setting the ensemble would silently ignore.

    Raises:
        ConfigError: ``"<setting> = <value> is not allowed for <ensemble>: <what is>"``.
    """
    def refuse(name: str, allowed: str) -> None:
        raise ConfigError(f"{name} = {settings[name]!r} is not allowed for ensemble "
                          f"{ensemble!r}: {allowed}")

    if not _positive(settings["timestep_fs"]):
        refuse("timestep_fs", "a finite number > 0 (fs)")
    if ensemble != "npt_crescale" and settings["pressure_GPa"] != 0.0:
        refuse("pressure_GPa", "only npt_crescale has a barostat (leave it at 0)")
    if ensemble == "nve":
        return
    if settings["temperature_K"] is None or not _positive(settings["temperature_K"]):
        refuse("temperature_K", "a finite number > 0 (K)")
    friction = settings["friction_per_fs"]
    if not (isinstance(friction, (int, float)) and math.isfinite(friction) and friction >= 0):
        refuse("friction_per_fs", "a finite number >= 0 (1/fs)")
    if ensemble == "nvt_nhc":
        if settings["damping_fs"] is not None and not _positive(settings["damping_fs"]):
            refuse("damping_fs", "a finite number > 0 (fs), or None for 100 time steps")
        if not (isinstance(settings["chain_length"], int) and settings["chain_length"] >= 1):
            refuse("chain_length", "an integer >= 1")
    if ensemble == "npt_crescale":
        if not (isinstance(settings["pressure_GPa"], (int, float))
                and math.isfinite(settings["pressure_GPa"])):
            refuse("pressure_GPa", "a finite number (GPa)")
        for name in ("barostat_time_fs", "compressibility_per_GPa"):
            if not _positive(settings[name]):
                refuse(name, "a finite number > 0")
