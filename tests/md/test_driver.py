"""run_md: outputs, blow-up handling in a batch, exact restart, error messages."""

from __future__ import annotations

import csv
import json

import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk

from mlip.errors import CheckpointMismatchError, ConfigError
from mlip.md import MDOutputs, make_integrator, run_md
from mlip.md.output import TrajectoryWriter
from mlip.md.restart import load_checkpoint
from mlip.models import build


@pytest.fixture(scope="module")
def lj_hcu():
    """LJ accepting H and Cu with the same ε, σ: hydrogen vibrates 8× faster than copper."""
    return build("lennard_jones", species=[1, 29], cutoff=4.0, epsilon=0.4, sigma=2.3).eval()


def _crystal(symbol: str = "Cu", seed: int = 0):
    atoms = bulk("Cu", "fcc", a=3.56, cubic=True).repeat((2, 1, 1))
    atoms.symbols[:] = symbol
    atoms.rattle(0.02, seed=seed)
    return atoms


def test_trajectory_and_thermo_log(lj_hcu, tmp_path):
    outputs = MDOutputs(trajectory=tmp_path / "md.xyz", log=tmp_path / "thermo.csv",
                        trajectory_interval=5, log_interval=5)
    integrator = make_integrator("nve", timestep_fs=2.0)
    result = run_md(lj_hcu, [_crystal(seed=1), _crystal(seed=2)], integrator, steps=20,
                    outputs=outputs, initial_temperature_K=300.0)
    assert result.failures == {} and result.steps == 20
    for g in range(2):
        frames = ase.io.read(tmp_path / f"md.{g}.xyz", index=":")
        assert [f.info["step"] for f in frames] == [0, 5, 10, 15, 20]
        np.testing.assert_allclose(frames[-1].positions, result.atoms()[g].positions, atol=1e-6)
        assert np.isfinite(frames[-1].get_forces()).all()
    with open(tmp_path / "thermo.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * 5
    first = rows[0]
    assert float(first["T_K"]) == pytest.approx(300.0, rel=1e-9)
    assert float(first["V_A3"]) == pytest.approx(2 * 3.56**3, rel=1e-9)
    etot = [float(r["Etot_eV"]) for r in rows if r["system"] == "0"]
    assert max(etot) - min(etot) < 1e-3 * 8  # NVE: conserved to < 1 meV/atom


def test_traj_and_jsonl_outputs(lj_hcu, tmp_path):
    outputs = MDOutputs(trajectory=tmp_path / "md.traj", log=tmp_path / "thermo.jsonl",
                        trajectory_interval=4, log_interval=2)
    integrator = make_integrator("nvt_langevin", timestep_fs=2.0, temperature_K=300.0)
    run_md(lj_hcu, [_crystal()], integrator, steps=8, outputs=outputs)
    assert len(ase.io.read(tmp_path / "md.traj", index=":")) == 3
    lines = (tmp_path / "thermo.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [0, 2, 4, 6, 8]


def test_hdf5_store_trajectory(lj_hcu, tmp_path):
    from mlip.data.store import SnapshotStore

    path = tmp_path / "md.h5"
    outputs = MDOutputs(trajectory=path, trajectory_interval=5, log_interval=5)
    result = run_md(lj_hcu, [_crystal(seed=1), _crystal(seed=2)],
                    make_integrator("nve", timestep_fs=2.0), steps=10, outputs=outputs,
                    initial_temperature_K=300.0)
    store = SnapshotStore(path)
    assert len(store) == 6
    frames = store.read(list(range(6))).frames
    assert frames["step"].tolist() == [0, 0, 5, 5, 10, 10]
    last = store[5]
    np.testing.assert_allclose(last.positions, result.atoms()[1].positions, atol=1e-12)
    assert last.get_potential_energy() == pytest.approx(result.state.energy[1].item(), abs=1e-9)
    with pytest.raises(ConfigError, match=r"md\.h5 already exists"):
        TrajectoryWriter(path, 2)


def test_blow_up_stops_only_the_broken_system(lj_hcu, tmp_path, caplog):
    """A 5 fs step (20 × 0.25 fs) makes the hydrogen crystal explode; copper runs normally."""
    outputs = MDOutputs(trajectory=tmp_path / "md.xyz", log=tmp_path / "thermo.csv",
                        trajectory_interval=1, log_interval=10)
    integrator = make_integrator("nve", timestep_fs=5.0)
    result = run_md(lj_hcu, [_crystal("Cu"), _crystal("H")], integrator, steps=60,
                    outputs=outputs, initial_temperature_K=300.0)
    assert list(result.failures) == [1]
    assert result.failures[1].startswith("system 1 stopped at step ")
    assert "system 1 stopped" in caplog.text
    healthy = ase.io.read(tmp_path / "md.0.xyz", index=":")
    assert healthy[-1].info["step"] == 60
    broken = ase.io.read(tmp_path / "md.1.xyz", index=":")
    assert 0 < len(broken) < 61
    steps_written = [frame.info["step"] for frame in broken]
    assert len(set(steps_written)) == len(steps_written)  # the last good frame only once
    for frame in broken:
        assert np.isfinite(frame.positions).all() and np.isfinite(frame.get_forces()).all()
        assert np.abs(frame.get_forces()).max() < 50.0
    final = result.atoms()[1]
    np.testing.assert_allclose(final.positions, broken[-1].positions, atol=1e-6)
    failed_at = int(result.failures[1].split("step ")[1].split(":")[0])
    assert broken[-1].info["step"] == failed_at - 1
    with open(tmp_path / "thermo.csv") as handle:
        logged = [int(r["step"]) for r in csv.DictReader(handle) if r["system"] == "1"]
    assert max(logged) < 60


@pytest.mark.parametrize("ensemble", ["nvt_langevin", "nvt_nhc", "npt_crescale"])
def test_restart_reproduces_the_uninterrupted_run(lj_hcu, tmp_path, ensemble):
    integrator = make_integrator(ensemble, timestep_fs=2.0, temperature_K=300.0, seed=3,
                                 compressibility_per_GPa=0.003, barostat_time_fs=100.0)
    systems = [_crystal(seed=1), _crystal(seed=2)]
    kwargs = dict(initial_temperature_K=300.0, skin=0.3)
    every_15 = dict(checkpoint_interval=15)  # same checkpoint schedule in both runs
    straight = run_md(lj_hcu, systems, integrator, steps=30, **kwargs,
                      outputs=MDOutputs(checkpoint=tmp_path / "straight.ckpt", **every_15))
    checkpoint = tmp_path / "run.ckpt"
    first = run_md(lj_hcu, systems, integrator, steps=15, **kwargs,
                   outputs=MDOutputs(checkpoint=checkpoint, **every_15))
    assert load_checkpoint(checkpoint).state.step == 15
    resumed = run_md(lj_hcu, steps=30, restart=checkpoint, skin=0.3)
    assert first.nl_builds >= 1 and resumed.state.step == 30
    assert torch.equal(resumed.state.positions, straight.state.positions)
    assert torch.equal(resumed.state.momenta, straight.state.momenta)
    assert torch.equal(resumed.state.cell, straight.state.cell)


def test_bad_outputs_and_checkpoints_are_named(lj_hcu, tmp_path):
    with pytest.raises(ConfigError, match="needs structures unless it restarts"):
        run_md(lj_hcu, steps=5)
    with pytest.raises(ConfigError, match=r"trajectory .*md\.pdb: unknown suffix '\.pdb'"):
        TrajectoryWriter(tmp_path / "md.pdb", 1)
    with pytest.raises(CheckpointMismatchError, match="no such MD checkpoint"):
        load_checkpoint(tmp_path / "missing.ckpt")
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"hello": 1}, foreign)
    with pytest.raises(CheckpointMismatchError, match="not an mlip MD checkpoint"):
        load_checkpoint(foreign)


def test_system_failing_at_the_first_step_writes_its_start_frame_once(lj_hcu, tmp_path):
    from ase import Atoms

    crushed = Atoms("H2", positions=[[0.0, 0.0, 0.0], [0.3, 0.0, 0.0]], cell=[8.0] * 3)
    outputs = MDOutputs(trajectory=tmp_path / "md.xyz", trajectory_interval=5, log_interval=5)
    result = run_md(lj_hcu, [_crystal("Cu"), crushed], make_integrator("nve", timestep_fs=1.0),
                    steps=10, outputs=outputs)
    assert result.failures[1].startswith("system 1 stopped at step 1:")
    assert [f.info["step"] for f in ase.io.read(tmp_path / "md.1.xyz", index=":")] == [0]


@pytest.mark.compiles
def test_compile_runs_the_same_trajectory_on_a_compiled_copy(lj_hcu):
    """run_md(compile=True) integrates with compiled forces: the trajectory equals the eager
    one within rounding, and the caller's module stays eager."""
    frames = [_crystal(seed=3), _crystal("H", seed=4)]
    kwargs = dict(steps=4, temperature=300.0, initial_temperature_K=300.0, seed=1)
    eager = run_md(lj_hcu, frames, **kwargs)
    compiled = run_md(lj_hcu, frames, compile=True, **kwargs)
    assert "_compiled_inference" not in lj_hcu.__dict__
    assert compiled.failures == {} and compiled.steps == 4
    torch.testing.assert_close(compiled.state.positions, eager.state.positions,
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(compiled.state.forces, eager.state.forces, rtol=1e-9, atol=1e-10)
