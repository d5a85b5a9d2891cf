"""ASE constraints (issue 15): FixAtoms and FixCom honoured by every ensemble, FIRE and cell
relaxation, the temperature, the outputs and restarts; any other constraint refused by name."""

from __future__ import annotations

from importlib import resources

import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk, fcc111
from ase.constraints import FixAtoms, FixBondLengths, FixCartesian, FixCom, FixedLine
from ase.filters import FrechetCellFilter
from ase.md.verlet import VelocityVerlet
from ase.optimize import FIRE

from mlip.calculators import MLIPCalculator
from mlip.cli import main
from mlip.errors import ConfigError
from mlip.md import (
    ForceField,
    MDOutputs,
    make_integrator,
    nve_conservation,
    run_md,
    run_relax,
)
from mlip.md.guard import BlowUpLimits, check_step
from mlip.md.nvt import nhc_init
from mlip.md.relax import fire_init, fire_step
from mlip.md.state import (
    maxwell_boltzmann_momenta,
    state_from_atoms,
    state_to_atoms,
    temperature_K,
)
from mlip.models import build, save_model
from mlip.units import fs, kB

ENSEMBLES = ["nve", "nvt_langevin", "nvt_nhc", "npt_crescale"]


def _slab(seed: int = 2):
    """Cu(111) 3×3×3 slab, periodic along z across the vacuum, bottom layer fixed."""
    slab = fcc111("Cu", (3, 3, 3), a=3.61, vacuum=5.0, periodic=True)
    slab.rattle(0.05, seed=seed)
    z = slab.positions[:, 2]
    slab.set_constraint(FixAtoms(mask=z < z.min() + 0.5))
    return slab


def _fixed(atoms) -> np.ndarray:
    return atoms.constraints[0].get_indices()


def _integrator(ensemble: str, seed: int = 0):
    return make_integrator(ensemble, timestep_fs=2.0,
                           temperature_K=None if ensemble == "nve" else 300.0,
                           compressibility_per_GPa=0.01, barostat_time_fs=100.0, seed=seed)


@pytest.mark.parametrize("ensemble", ENSEMBLES)
def test_fixed_atoms_do_not_move_in_any_ensemble(lj_model, ensemble):
    slab = _slab()
    fixed = _fixed(slab)
    result = run_md(lj_model, [slab, _slab(seed=3)], _integrator(ensemble), steps=20,
                    initial_temperature_K=300.0, skin=0.5)
    assert result.failures == {}
    state = result.state
    n = len(slab)
    for g, frame in enumerate(result.atoms()):
        start = slab if g == 0 else _slab(seed=3)
        assert [type(c) for c in frame.constraints] == [FixAtoms]
        assert np.array_equal(_fixed(frame), fixed)
        moving = np.setdiff1d(np.arange(n), fixed)
        assert np.abs(frame.positions[moving] - start.positions[moving]).max() > 1e-3
        assert np.all(frame.get_momenta()[fixed] == 0.0)
        if ensemble == "npt_crescale":  # fixed atoms follow the cell: fractional coords kept
            assert not np.allclose(frame.cell, start.cell, rtol=0, atol=1e-6)
            np.testing.assert_allclose(frame.get_scaled_positions(wrap=False)[fixed],
                                       start.get_scaled_positions(wrap=False)[fixed],
                                       rtol=0, atol=1e-12)
        else:
            assert np.array_equal(frame.positions[fixed], start.positions[fixed])  # exact
        # the temperature counts 3N − 3·n_fixed degrees of freedom, as ASE's does
        assert float(temperature_K(state)[g]) == pytest.approx(frame.get_temperature(),
                                                               rel=1e-12)


def test_initial_momenta_respect_constraints_and_the_temperature_counts_like_ase():
    slab = _slab()
    slab.set_constraint([FixAtoms(indices=_fixed(slab)), FixCom()])
    state = state_from_atoms([slab, _slab(seed=4)])
    momenta = maxwell_boltzmann_momenta(state.masses, state.batch, 2, 500.0, seed=1,
                                        constraints=state.constraints)
    frames = state_to_atoms(state.replace(momenta=momenta))
    assert [type(c) for c in frames[0].constraints] == [FixAtoms, FixCom]
    assert frames[0].get_number_of_degrees_of_freedom() == 3 * (27 - 9) - 3
    for frame in frames:
        assert frame.get_temperature() == pytest.approx(500.0, rel=1e-12)
        assert np.all(frame.get_momenta()[_fixed(frame)] == 0.0)
    np.testing.assert_allclose(frames[0].get_momenta().sum(axis=0), 0.0, atol=1e-12)
    # momenta given with the structure are projected too
    slab.set_momenta(np.ones((27, 3)), apply_constraint=False)
    assert torch.all(state_from_atoms([slab]).momenta[torch.tensor(_fixed(slab))] == 0.0)


@pytest.mark.parametrize("ensemble", ["nve", "nvt_langevin", "nvt_nhc"])
def test_fix_com_keeps_the_centre_of_mass(lj_model, cu32, ensemble):
    cu32.set_constraint(FixCom())
    start = cu32.get_center_of_mass()
    result = run_md(lj_model, [cu32], _integrator(ensemble), steps=20,
                    initial_temperature_K=300.0, skin=0.5)
    frame = result.atoms()[0]
    assert [type(c) for c in frame.constraints] == [FixCom]
    np.testing.assert_allclose(frame.get_center_of_mass(), start, rtol=0, atol=1e-10)
    np.testing.assert_allclose(frame.get_momenta().sum(axis=0), 0.0, rtol=0, atol=1e-10)
    assert np.abs(frame.positions - cu32.positions).max() > 1e-3
    assert float(temperature_K(result.state)[0]) == pytest.approx(frame.get_temperature(),
                                                                  rel=1e-12)


def test_run_md_starts_at_the_requested_temperature_over_the_free_degrees_of_freedom(
        lj_model, tmp_path):
    slab = _slab()
    slab.set_constraint([FixAtoms(indices=_fixed(slab)), FixCom()])
    log = tmp_path / "thermo.csv"
    run_md(lj_model, [slab], _integrator("nve"), steps=1, initial_temperature_K=400.0,
           outputs=MDOutputs(log=log, log_interval=1, trajectory=tmp_path / "md.traj",
                             trajectory_interval=1))
    first = ase.io.read(tmp_path / "md.traj", index=0)
    assert first.info["step"] == 0 and first.get_temperature() == pytest.approx(400.0, rel=1e-9)
    assert np.all(first.get_momenta()[_fixed(slab)] == 0.0)
    rows = log.read_text().splitlines()
    t_column = rows[0].split(",").index("T_K")
    assert float(rows[1].split(",")[t_column]) == pytest.approx(400.0, rel=1e-9)


@pytest.mark.parametrize("kind", ["FixAtoms", "FixCom"])
def test_constrained_nve_follows_ase_velocity_verlet(lj_model, cu32, kind):
    cu32.set_masses(np.linspace(30.0, 100.0, len(cu32)))
    cu32.set_constraint(FixAtoms(indices=[0, 7, 9]) if kind == "FixAtoms" else FixCom())
    cu32.set_momenta(np.random.default_rng(0).normal(0.0, 2.0, (len(cu32), 3)))  # projected
    reference = cu32.copy()
    reference.calc = MLIPCalculator(lj_model, skin=0.5)
    VelocityVerlet(reference, timestep=2.0 * fs).run(15)
    result = run_md(lj_model, [cu32], _integrator("nve"), steps=15, skin=0.5)
    frame = result.atoms()[0]
    np.testing.assert_allclose(frame.positions, reference.positions, rtol=0, atol=1e-9)
    np.testing.assert_allclose(frame.get_momenta(), reference.get_momenta(), rtol=0, atol=1e-9)


def test_nve_with_fixed_atoms_conserves_energy(lj_model):
    report = nve_conservation(lj_model, _slab(), timestep_fs=2.0, duration_fs=100.0,
                              temperature_K=300.0, skin=0.5)
    energy = report.total_energy_per_atom
    assert np.abs(energy - energy[0]).max() < 1e-3  # eV/atom
    assert report.fluctuation_meV_per_atom < 0.5


def test_nose_hoover_and_guard_use_the_constrained_degrees_of_freedom(lj_model):
    state = state_from_atoms([_slab()])  # 27 atoms, 9 fixed: N_f = 54
    chain = nhc_init(state, ForceField(lj_model, skin=0.5), temperature_K=300.0, damping=10.0)
    assert float(chain.eta_mass[0, 0]) == pytest.approx(54 * kB * 300.0 * 100.0, rel=1e-12)
    # free atoms at 3600 K over N_f = 54 (2400 K over 3N = 81); the guard's limit is 3000 K
    momenta = torch.zeros_like(state.momenta)
    free = ~state.constraints.fixed
    kinetic = 0.5 * 54 * kB * 3600.0
    momenta[free, 0] = torch.sqrt(2.0 * kinetic / int(free.sum()) * state.masses[free])
    hot = chain.replace(momenta=momenta)
    assert float(temperature_K(hot)[0]) == pytest.approx(3600.0, rel=1e-12)
    limits = BlowUpLimits(max_temperature_K=3000.0)
    energy = torch.zeros(1, dtype=torch.float64)
    code, value = check_step(chain, hot, energy, energy, torch.ones(1, dtype=torch.float64),
                             limits, 3000.0)
    assert code.tolist() == [4] and float(value[0]) == pytest.approx(3600.0, rel=1e-12)


def test_every_atom_fixed(lj_model, cu32):
    """No degree of freedom left: 0 K, nothing moves, and Nosé–Hoover refuses the system."""
    frozen = cu32.copy()
    frozen.set_constraint(FixAtoms(indices=range(len(cu32))))
    result = run_md(lj_model, [cu32, frozen], _integrator("nvt_langevin"), steps=5,
                    initial_temperature_K=300.0, skin=0.5)
    assert result.failures == {} and float(temperature_K(result.state)[1]) == 0.0
    assert np.array_equal(result.atoms()[1].positions, frozen.positions)
    with pytest.raises(ConfigError, match="system 1: its constraints leave no degree of freedom"):
        run_md(lj_model, [cu32, frozen], _integrator("nvt_nhc"), steps=1)


@pytest.mark.parametrize("relax_cell", [False, True])
def test_relaxation_never_moves_fixed_atoms_and_ignores_their_forces(lj_model, relax_cell):
    slab = _slab()
    slab.positions[_fixed(slab)] += [0.0, 0.0, 0.15]  # pushed into the layer above
    fixed = _fixed(slab)
    result = run_relax(lj_model, [slab], fmax=0.02, steps=400, relax_cell=relax_cell)
    frame = result.atoms[0]
    assert result.converged == [True] and result.fmax[0] < 0.02
    raw = frame.get_forces(apply_constraint=False)
    assert np.linalg.norm(raw[fixed], axis=1).max() > 0.1  # not counted in fmax
    assert np.all(frame.get_forces()[fixed] == 0.0)
    assert np.array_equal(_fixed(frame), fixed)
    if relax_cell:
        assert not np.allclose(frame.cell, slab.cell, rtol=0, atol=1e-4)
        np.testing.assert_allclose(frame.get_scaled_positions(wrap=False)[fixed],
                                   slab.get_scaled_positions(wrap=False)[fixed],
                                   rtol=0, atol=1e-12)
    else:
        assert np.array_equal(frame.positions[fixed], slab.positions[fixed])


@pytest.mark.parametrize("relax_cell", [False, True])
@pytest.mark.parametrize("kind", ["FixAtoms", "FixCom"])
def test_constrained_fire_follows_ase_fire_step_by_step(lj_model, kind, relax_cell):
    """Batched FIRE (+ Fréchet cell filter) with a constraint = ase.optimize.FIRE on the
    constrained atoms, step for step (unequal masses make FixCom's projection matter)."""
    start = bulk("Cu", "fcc", a=3.5, cubic=True).repeat((2, 1, 1))
    start.set_cell(start.cell * [1.02, 0.98, 1.01], scale_atoms=True)
    start.rattle(0.08, seed=0)
    start.set_masses(np.linspace(30.0, 100.0, len(start)))
    start.set_constraint(FixAtoms(indices=[0, 3, 5]) if kind == "FixAtoms" else FixCom())
    reference = start.copy()
    reference.calc = MLIPCalculator(lj_model)
    ase_fire = FIRE(FrechetCellFilter(reference) if relax_cell else reference, logfile=None)
    path = []
    ase_fire.attach(lambda: path.append((reference.positions.copy(),
                                         np.asarray(reference.cell).copy())))
    ase_fire.run(fmax=1e-3, steps=100)
    assert ase_fire.nsteps > 20
    force_field = ForceField(lj_model, compute_stress=relax_cell)
    state = fire_init(state_from_atoms([start]), force_field, relax_cell=relax_cell)
    for positions, cell in path[1:]:
        state = fire_step(state, force_field, fmax=1e-3, relax_cell=relax_cell)
        np.testing.assert_allclose(state.positions.numpy(), positions, rtol=0, atol=1e-8)
        np.testing.assert_allclose(state.cell[0].numpy(), cell, rtol=0, atol=1e-8)


def test_relaxation_with_fix_com(lj_model, cu32):
    """Unequal masses: FIRE's steps along F keep Σm·r only with ASE's FixCom projection."""
    cu32.set_masses(np.linspace(20.0, 120.0, len(cu32)))
    cu32.set_constraint(FixCom())
    start = cu32.get_center_of_mass()
    result = run_relax(lj_model, [cu32], fmax=0.01, steps=300)
    assert result.converged == [True]
    np.testing.assert_allclose(result.atoms[0].get_center_of_mass(), start, rtol=0, atol=1e-10)


@pytest.mark.parametrize("constraint", [
    FixBondLengths([(0, 1)]), FixedLine(0, [0, 0, 1]), FixCartesian(2, mask=[1, 0, 0])])
def test_other_constraints_are_refused_by_name(lj_model, cu32, constraint):
    other = cu32.copy()
    other.set_constraint(constraint)
    name = type(constraint).__name__
    match = f"structure 1: ASE constraint {name} is not supported"
    with pytest.raises(ConfigError, match=match):
        state_from_atoms([cu32, other])
    with pytest.raises(ConfigError, match=match):
        run_md(lj_model, [cu32, other], _integrator("nve"), steps=1)
    with pytest.raises(ConfigError, match=match):
        run_relax(lj_model, [cu32, other], steps=1)


def test_constraints_survive_trajectories_and_restarts(lj_model, tmp_path):
    slab = _slab()
    slab.set_constraint([FixAtoms(indices=_fixed(slab)), FixCom()])
    integrator = _integrator("nvt_langevin", seed=5)
    kwargs = dict(initial_temperature_K=300.0, skin=0.5)
    every_10 = dict(checkpoint_interval=10, trajectory_interval=10)
    straight = run_md(lj_model, [slab], integrator, steps=20, **kwargs,
                      outputs=MDOutputs(checkpoint=tmp_path / "straight.ckpt", **every_10))
    outputs = MDOutputs(trajectory=tmp_path / "md.traj", checkpoint=tmp_path / "run.ckpt",
                        **every_10)
    run_md(lj_model, [slab], integrator, steps=10, outputs=outputs, **kwargs)
    resumed = run_md(lj_model, steps=20, restart=tmp_path / "run.ckpt", outputs=outputs,
                     skin=0.5)
    assert torch.equal(resumed.state.constraints.fixed, straight.state.constraints.fixed)
    assert torch.equal(resumed.state.positions, straight.state.positions)
    assert torch.equal(resumed.state.momenta, straight.state.momenta)
    frames = ase.io.read(tmp_path / "md.traj", index=":")
    assert [f.info["step"] for f in frames] == [0, 10, 20]
    for frame in frames:
        assert [type(c) for c in frame.constraints] == [FixAtoms, FixCom]
        assert np.array_equal(_fixed(frame), _fixed(slab))
        assert np.array_equal(frame.positions[_fixed(slab)], slab.positions[_fixed(slab)])
        np.testing.assert_allclose(frame.get_center_of_mass(), slab.get_center_of_mass(),
                                   rtol=0, atol=1e-10)
    # extended XYZ keeps FixAtoms as its move_mask column (FixCom has no extxyz form)
    ase.io.write(tmp_path / "last.xyz", resumed.atoms()[0], format="extxyz")
    back = ase.io.read(tmp_path / "last.xyz")
    assert np.array_equal(_fixed(back), _fixed(slab))


def test_ase_calculator_path_keeps_fixed_atoms(lj_model):
    slab = _slab()
    fixed = _fixed(slab)
    start = slab.positions.copy()
    slab.calc = MLIPCalculator(lj_model, skin=0.5)
    FIRE(slab, logfile=None).run(fmax=0.05, steps=100)
    assert np.array_equal(slab.positions[fixed], start[fixed])
    assert np.abs(slab.positions - start).max() > 1e-3
    assert np.all(slab.get_forces()[fixed] == 0.0)
    assert np.abs(slab.get_forces(apply_constraint=False)[fixed]).max() > 0.0


def test_cli_relax_of_an_oc20_slab_keeps_its_fixed_atoms(tmp_path, capsys):
    """The real OC20 adsorbate+slab frame (FixAtoms on 36 of 49 atoms) through ``mlip relax``."""
    source = resources.files("mlip.data.bundled").joinpath("random1000156.traj")
    frame = ase.io.read(str(source), index=0)
    ase.io.write(tmp_path / "slab.traj", frame)
    model = build("lennard_jones", species=[1, 11, 81], cutoff=5.0, epsilon=0.1, sigma=2.0)
    save_model(model, tmp_path / "lj.pt")
    out = tmp_path / "relaxed.xyz"
    code = main(["relax", str(tmp_path / "lj.pt"), str(tmp_path / "slab.traj"), "-o", str(out),
                 "--fmax", "0.05", "--steps", "100"])
    assert code == 0 and "structure 0: converged" in capsys.readouterr().out
    relaxed = ase.io.read(out)
    fixed = _fixed(frame)
    assert len(fixed) == 36 and np.array_equal(_fixed(relaxed), fixed)
    np.testing.assert_allclose(relaxed.positions[fixed], frame.positions[fixed], rtol=0,
                               atol=1e-7)  # extxyz writes 8 decimals
    assert np.abs(relaxed.positions - frame.positions).max() > 0.05
