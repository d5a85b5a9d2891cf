"""The ensemble and optimiser registries: each entry binds its own settings, refuses the ones
it would ignore by name, and the command line reaches every entry through them."""

from __future__ import annotations

import pytest

from mlip.errors import ConfigError
from mlip.md import ENSEMBLES, OPTIMIZERS, make_integrator, make_optimizer
from mlip.md.ensembles import ensemble_for
from mlip.md.npt import CRescaleState
from mlip.md.nvt import LangevinState, NoseHooverState
from mlip.md.relax import fire_init, fire_step
from mlip.md.state import MDState
from mlip.units import GPa, fs


def test_every_ensemble_knows_its_state_and_binds_through_make_integrator():
    assert {name: e.state_type for name, e in ENSEMBLES.items()} == {
        "nve": MDState, "nvt_langevin": LangevinState, "nvt_nhc": NoseHooverState,
        "npt_crescale": CRescaleState}
    for name, entry in ENSEMBLES.items():
        integrator = make_integrator(name, timestep_fs=0.5, temperature_K=300.0)
        assert integrator.name == name and integrator.step.func is entry.step
        assert integrator.needs_stress == (name == "npt_crescale")
        assert integrator.temperature_K == (None if name == "nve" else 300.0)


def test_bound_parameters_are_in_ase_units():
    langevin = make_integrator("nvt_langevin", timestep_fs=2.0, temperature_K=300.0,
                               friction_per_fs=0.02, seed=5)
    assert langevin.step.keywords["dt"] == pytest.approx(2.0 * fs, rel=1e-15)
    assert langevin.step.keywords["friction"] == pytest.approx(0.02 / fs, rel=1e-15)
    assert langevin.init.keywords["seed"] == 5
    nhc = make_integrator("nvt_nhc", timestep_fs=2.0, temperature_K=300.0)
    assert nhc.init.keywords["damping"] == pytest.approx(200.0 * fs, rel=1e-15)  # 100 steps
    npt = make_integrator("npt_crescale", timestep_fs=1.0, temperature_K=300.0,
                          pressure_GPa=1.5)
    assert npt.step.keywords["pressure"] == pytest.approx(1.5 * GPa, rel=1e-15)
    assert npt.settings["pressure_GPa"] == 1.5 and npt.settings["seed"] == 0


@pytest.mark.parametrize("ensemble, setting, value", [
    ("nvt_langevin", "pressure_GPa", 1.0),     # unused: refused
    ("nve", "pressure_GPa", -2.0),
    ("nvt_nhc", "chain_length", 0),
    ("npt_crescale", "compressibility_per_GPa", -1.0),
    ("nvt_langevin", "temperature_K", None),   # missing
])
def test_settings_refused_by_name(ensemble, setting, value):
    kwargs = {"timestep_fs": 1.0, "temperature_K": 300.0, setting: value}
    with pytest.raises(ConfigError, match=rf"{setting} = {value!r} is not allowed for ensemble "
                                          rf"'{ensemble}'"):
        make_integrator(ensemble, **kwargs)


def test_unknown_ensemble_and_setting_refused():
    with pytest.raises(ConfigError, match="unknown ensemble 'nvt_berendsen'"):
        make_integrator("nvt_berendsen", timestep_fs=1.0)
    with pytest.raises(TypeError, match="barostat_mass"):
        make_integrator("npt_crescale", timestep_fs=1.0, temperature_K=300.0, barostat_mass=1.0)


def test_command_line_spelling_reaches_every_ensemble():
    from mlip.cli.md import SETTINGS

    choices = {s.name: s.choices for s in SETTINGS.settings}
    reached = set()
    for kind in choices["--ensemble"]:
        for thermostat in choices["--thermostat"]:
            try:
                reached.add(ensemble_for(kind, thermostat))
            except ConfigError as exc:
                assert (kind, thermostat) == ("npt", "nhc"), exc
    assert reached == set(ENSEMBLES)
    assert ensemble_for("nvt") == "nvt_langevin"
    with pytest.raises(ConfigError, match="'npt' with thermostat 'nhc' is not registered"):
        ensemble_for("npt", "nhc")


def test_optimizer_registry_binds_fire_with_and_without_the_cell():
    assert set(OPTIMIZERS) == {"fire", "fire_cell", "lbfgs", "lbfgs_cell"}
    plain = make_optimizer("fire", fmax=0.02)
    cell = make_optimizer("fire_cell", fmax=0.02, pressure_GPa=2.0)
    assert plain.init.func is fire_init and plain.step.func is fire_step
    assert not plain.needs_stress and cell.needs_stress
    assert plain.step.keywords == {"fmax": 0.02, "relax_cell": False, "pressure": 0.0}
    assert cell.step.keywords["pressure"] == pytest.approx(2.0 * GPa, rel=1e-15)
    assert cell.init.keywords == {"relax_cell": True}
    assert cell.settings == {"fmax": 0.02, "pressure_GPa": 2.0}


@pytest.mark.parametrize("name, kwargs, message", [
    ("bfgs", {}, "unknown optimizer 'bfgs'"),
    ("fire", {"pressure_GPa": 1.0}, r"pressure_GPa = 1\.0 is not allowed without relax_cell"),
    ("fire", {"fmax": 0.0}, r"fmax = 0\.0 is not allowed"),
    ("fire_cell", {"pressure_GPa": float("nan")}, r"pressure_GPa = nan is not allowed"),
])
def test_optimizer_settings_refused_by_name(name, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        make_optimizer(name, **kwargs)
