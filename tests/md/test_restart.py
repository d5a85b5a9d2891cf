"""Restarts: saved settings continue, settings given anew are honoured (or refused by name),
counters continue, and the documented ``run_md(model, steps=N, restart=ckpt)`` continues the
run's own outputs."""

from __future__ import annotations

import csv
import logging

import ase.io
import numpy as np
import pytest
import torch

from mlip.errors import ConfigError
from mlip.md import MDOutputs, make_integrator, run_md
from mlip.md.restart import load_checkpoint
from mlip.md.state import temperature_K
from mlip.models import save_model
from tests.md.conftest import rattled_cu_cells


def _rows(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def _first_leg(lj, tmp_path, ensemble="nvt_langevin", temperature=100.0, steps=20, **settings):
    outputs = MDOutputs(trajectory=tmp_path / "md.xyz", log=tmp_path / "thermo.csv",
                        checkpoint=tmp_path / "md.ckpt", trajectory_interval=10,
                        log_interval=10, checkpoint_interval=10)
    integrator = make_integrator(ensemble, timestep_fs=2.0, temperature_K=temperature,
                                 friction_per_fs=0.1, seed=2, **settings)
    return run_md(lj, rattled_cu_cells(), integrator, steps=steps, outputs=outputs,
                  initial_temperature_K=temperature, skin=0.3), outputs


def test_a_new_temperature_is_honoured_and_logged(lj, tmp_path, caplog):
    """Issue 23: a restart asked for 900 K stayed at 100 K."""
    _first_leg(lj, tmp_path)
    with caplog.at_level(logging.INFO, logger="mlip.md.driver"):
        hot = run_md(lj, steps=220, restart=tmp_path / "md.ckpt", temperature=900.0, skin=0.3)
    assert hot.changed_settings == {"temperature_K": (100.0, 900.0)}
    assert "temperature_K 100.0 -> 900.0" in caplog.text
    assert load_checkpoint(tmp_path / "md.ckpt").settings["temperature_K"] == 900.0
    late = [float(r["T_K"]) for r in _rows(tmp_path / "thermo.csv") if int(r["step"]) >= 120]
    assert np.mean(late) > 600.0  # γ = 0.1/fs: thermalised at 900 K within 100 fs
    kept = run_md(lj, steps=240, restart=tmp_path / "md.ckpt", skin=0.3)
    assert kept.changed_settings == {}  # nothing given: the checkpoint's 900 K continues


def test_documented_restart_call_continues_the_runs_outputs(lj, tmp_path):
    """Issue 23: ``run_md("model.pt", steps=N, restart="md.ckpt")`` wrote nothing."""
    save_model(lj, tmp_path / "model.pt")
    _first_leg(lj, tmp_path)
    result = run_md(str(tmp_path / "model.pt"), steps=40, restart=str(tmp_path / "md.ckpt"))
    assert result.steps == 40
    assert load_checkpoint(tmp_path / "md.ckpt").state.step == 40
    frames = ase.io.read(tmp_path / "md.0.xyz", index=":")
    assert [f.info["step"] for f in frames] == [0, 10, 20, 30, 40]
    logged = sorted({int(r["step"]) for r in _rows(tmp_path / "thermo.csv")})
    assert logged == [0, 10, 20, 30, 40]


def test_counters_continue_across_a_restart(lj, tmp_path):
    straight_dir, split_dir = tmp_path / "straight", tmp_path / "split"
    straight_dir.mkdir(), split_dir.mkdir()
    straight, _ = _first_leg(lj, straight_dir, steps=40)
    _first_leg(lj, split_dir, steps=20)
    resumed = run_md(lj, steps=40, restart=split_dir / "md.ckpt", skin=0.3)
    assert resumed.nl_builds == straight.nl_builds and resumed.nl_builds > 1
    assert resumed.time_ps == pytest.approx(straight.time_ps, rel=1e-12)
    assert resumed.summary().startswith(f"step 40 (0.08 ps), {straight.nl_builds} neighbour")
    straight_rows, split_rows = _rows(straight_dir / "thermo.csv"), _rows(split_dir / "thermo.csv")
    for column in ("step", "time_ps", "nl_builds", "Econs_eV"):
        assert [r[column] for r in split_rows] == [r[column] for r in straight_rows]
    # a new time step: the simulated time goes on from where it was
    finer = run_md(lj, steps=50, restart=split_dir / "md.ckpt", timestep=0.5, skin=0.3)
    assert finer.time_ps == pytest.approx(0.080 + 10 * 0.5e-3, rel=1e-12)


def test_switching_to_npt_keeps_econs_continuous(lj, tmp_path):
    """Langevin → C-rescale at 2 GPa: P₀V enters Econs and the bath work together."""
    _first_leg(lj, tmp_path, temperature=300.0)
    before = [float(r["Econs_eV"]) for r in _rows(tmp_path / "thermo.csv")[-2:]]
    result = run_md(lj, steps=21, restart=tmp_path / "md.ckpt", ensemble="npt_crescale",
                    pressure=2.0, skin=0.3, outputs=MDOutputs(log=tmp_path / "npt.csv",
                                                              log_interval=1))
    assert result.changed_settings["ensemble"] == ("nvt_langevin", "npt_crescale")
    after = [float(r["Econs_eV"]) for r in _rows(tmp_path / "npt.csv")[:2]]  # step 21
    assert after == pytest.approx(before, abs=5e-3)  # one step of integration error


def test_restart_changes_the_checkpoint_cannot_follow_are_refused(lj, tmp_path):
    _first_leg(lj, tmp_path)
    ckpt = tmp_path / "md.ckpt"
    with pytest.raises(ConfigError, match=r"ensemble = 'nvt_nhc' is not allowed on a restart "
                       r"from .*md\.ckpt: its state needs \['eta', 'eta_mass', 'eta_velocity'\]"):
        run_md(lj, steps=40, restart=ckpt, ensemble="nvt_nhc")
    with pytest.raises(ConfigError, match=r"pressure_GPa = 1\.0 is not allowed for ensemble "
                       r"'nvt_langevin'"):
        run_md(lj, steps=40, restart=ckpt, pressure=1.0)
    with pytest.raises(ConfigError, match=r"temperature = 500\.0 is not allowed for ensemble "
                       r"'nve'"):
        run_md(lj, steps=40, restart=ckpt, ensemble="nve", temperature=500.0)
    with pytest.raises(ConfigError, match=r"steps = 10 is not allowed on a restart .* step 20"):
        run_md(lj, steps=10, restart=ckpt)
    with pytest.raises(ConfigError, match=r"initial_temperature_K = 300\.0 is not allowed on a "
                       r"restart"):
        run_md(lj, steps=40, restart=ckpt, initial_temperature_K=300.0)
    with pytest.raises(ConfigError, match="atoms are not allowed on a restart"):
        run_md(lj, rattled_cu_cells(), steps=40, restart=ckpt)
    nve = run_md(lj, steps=30, restart=ckpt, ensemble="nve", skin=0.3)  # dropping the bath: ok
    assert nve.changed_settings["ensemble"] == ("nvt_langevin", "nve")


def test_nonsense_run_settings_are_refused(lj):
    crystals = rattled_cu_cells(1)
    nve = make_integrator("nve", timestep_fs=1.0)
    with pytest.raises(ConfigError, match=r"steps = -5 is not allowed: an integer >= 0"):
        run_md(lj, crystals, nve, steps=-5)
    with pytest.raises(ConfigError, match=r"temperature = 900\.0 is not allowed together with "
                       r"an integrator"):
        run_md(lj, crystals, nve, steps=5, temperature=900.0)
    with pytest.raises(ConfigError, match=r"MDOutputs log_interval = 0 is not allowed"):
        MDOutputs(log_interval=0)
    with pytest.raises(ConfigError, match=r"friction_per_fs = -1\.0 is not allowed for ensemble "
                       r"'nvt_langevin': a finite number >= 0"):
        make_integrator("nvt_langevin", timestep_fs=1.0, temperature_K=300.0,
                        friction_per_fs=-1.0)
    with pytest.raises(ConfigError, match=r"pressure_GPa = 1\.0 is not allowed for ensemble "
                       r"'nvt_nhc'"):
        make_integrator("nvt_nhc", timestep_fs=1.0, temperature_K=300.0, pressure_GPa=1.0)
    with pytest.raises(ConfigError, match=r"barostat_time_fs = 0\.0 is not allowed"):
        make_integrator("npt_crescale", timestep_fs=1.0, temperature_K=300.0,
                        barostat_time_fs=0.0)


def test_fresh_run_from_settings_uses_the_documented_defaults(lj):
    result = run_md(lj, rattled_cu_cells(1), steps=3, temperature=500.0)
    assert result.time_ps == pytest.approx(3e-3)  # timestep 1 fs
    assert float(temperature_K(result.state)[0]) > 0.0  # Langevin noise heated it from 0 K


def test_nose_hoover_chain_masses_follow_a_new_temperature(lj, tmp_path):
    """Q ∝ kT·τ²: at twice the temperature the chain keeps its time scale."""
    _first_leg(lj, tmp_path, ensemble="nvt_nhc", temperature=300.0)
    saved = load_checkpoint(tmp_path / "md.ckpt").state.eta_mass
    hot = run_md(lj, steps=20, restart=tmp_path / "md.ckpt", temperature=600.0)
    torch.testing.assert_close(hot.state.eta_mass, 2.0 * saved, rtol=1e-15, atol=0.0)
