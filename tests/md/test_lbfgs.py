"""Batched L-BFGS: step-for-step parity with ase.optimize.LBFGS (with and without the Fréchet
cell filter and constraints), same minima as FIRE in fewer force calls, batching, CLI flag."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
from ase.build import fcc111, molecule
from ase.constraints import FixAtoms, FixCom
from ase.filters import FrechetCellFilter
from ase.optimize import LBFGS

from mlip.calculators import MLIPCalculator
from mlip.cli import main
from mlip.cli.relax import SETTINGS
from mlip.errors import ConfigError
from mlip.md import OPTIMIZERS, make_optimizer, run_relax
from mlip.md.force_field import ForceField
from mlip.md.lbfgs import lbfgs_init, lbfgs_step
from mlip.md.state import state_from_atoms
from mlip.models import save_model
from tests.md.conftest import strained_cu_cell


def _cluster():
    """A 3-atom copper cluster, not periodic."""
    cluster = molecule("H2O")
    cluster.numbers[:] = 29
    cluster.positions *= 2.5
    return cluster


@pytest.mark.parametrize("relax_cell", [False, True])
@pytest.mark.parametrize("kind", [None, "FixAtoms", "FixCom"])
def test_lbfgs_follows_ase_lbfgs_step_by_step(lj_model, relax_cell, kind):
    """Same algorithm, same memory (5 here, so that old pairs are dropped): ASE's LBFGS
    trajectory is followed step for step (to rounding: ASE rebuilds s from the filter's
    coordinates; all pairs have positive curvature here)."""
    start = strained_cu_cell(0)
    start.set_masses(np.linspace(30.0, 100.0, len(start)))
    if kind is not None:
        start.set_constraint(FixAtoms(indices=[0, 3, 5]) if kind == "FixAtoms" else FixCom())
    reference = start.copy()
    reference.calc = MLIPCalculator(lj_model)
    ase_lbfgs = LBFGS(FrechetCellFilter(reference) if relax_cell else reference, memory=5,
                      logfile=None)
    path = []
    ase_lbfgs.attach(lambda: path.append((reference.positions.copy(),
                                          np.asarray(reference.cell).copy())))
    ase_lbfgs.run(fmax=1e-4, steps=200)
    assert ase_lbfgs.nsteps > 10  # the history of 5 pairs wraps
    force_field = ForceField(lj_model, compute_stress=relax_cell)
    state = lbfgs_init(state_from_atoms([start]), force_field, relax_cell=relax_cell, memory=5)
    for positions, cell in path[1:]:
        state = lbfgs_step(state, force_field, fmax=1e-4, relax_cell=relax_cell)
        np.testing.assert_allclose(state.positions.numpy(), positions, rtol=0, atol=1e-7)
        np.testing.assert_allclose(state.cell[0].numpy(), cell, rtol=0, atol=1e-7)
    per_atom = abs(state.energy.item() - reference.get_potential_energy()) / len(start)
    assert per_atom < 1e-10


@pytest.mark.parametrize("relax_cell", [False, True])
def test_lbfgs_reaches_fires_minimum_in_fewer_force_calls(lj_model, relax_cell):
    systems = [strained_cu_cell(seed) for seed in range(3)]
    if not relax_cell:
        systems.append(_cluster())
    fmax = 1e-5 if relax_cell else 1e-3  # soft cell modes: a tight fmax to compare cells
    fire = run_relax(lj_model, systems, fmax=fmax, steps=1000, relax_cell=relax_cell)
    lbfgs = run_relax(lj_model, systems, fmax=fmax, steps=1000, relax_cell=relax_cell,
                      optimizer="lbfgs")
    assert all(fire.converged) and all(lbfgs.converged)
    assert max(lbfgs.fmax) < fmax
    for k, atoms in enumerate(systems):
        assert abs(lbfgs.energy[k] - fire.energy[k]) / len(atoms) < 1e-6
        assert lbfgs.n_steps[k] < fire.n_steps[k]
        if relax_cell:  # same cell (Å, degrees) and stress (near zero) as fire_cell
            np.testing.assert_allclose(lbfgs.atoms[k].cell.cellpar(),
                                       fire.atoms[k].cell.cellpar(), rtol=0, atol=1e-4)
            np.testing.assert_allclose(lbfgs.atoms[k].get_stress(), fire.atoms[k].get_stress(),
                                       rtol=0, atol=2e-6)  # |σ| ≲ fmax·N/V ≈ 1e-6 eV/Å³


def test_batched_lbfgs_equals_one_by_one(lj_model):
    systems = [strained_cu_cell(seed) for seed in range(3)] + [_cluster()]
    batched = run_relax(lj_model, systems, fmax=0.005, steps=300, optimizer="lbfgs")
    for k, atoms in enumerate(systems):
        alone = run_relax(lj_model, [atoms], fmax=0.005, steps=300, optimizer="lbfgs")
        assert alone.n_steps[0] == batched.n_steps[k]
        assert alone.converged[0] == batched.converged[k]
        np.testing.assert_allclose(batched.atoms[k].positions, alone.atoms[0].positions,
                                   rtol=0, atol=1e-10)
    assert all(batched.converged)
    assert len(set(batched.n_steps)) > 1  # systems converged at different steps


@pytest.mark.parametrize("relax_cell", [False, True])
def test_lbfgs_never_moves_fixed_atoms_and_keeps_the_centre_of_mass(lj_model, relax_cell):
    slab = fcc111("Cu", (3, 3, 3), a=3.61, vacuum=5.0, periodic=True)
    slab.rattle(0.05, seed=2)
    fixed = np.nonzero(slab.positions[:, 2] < slab.positions[:, 2].min() + 0.5)[0]
    slab.positions[fixed] += [0.0, 0.0, 0.15]  # pushed into the layer above
    slab.set_constraint(FixAtoms(indices=fixed))
    crystal = strained_cu_cell(4)
    crystal.set_masses(np.linspace(30.0, 100.0, len(crystal)))
    crystal.set_constraint(FixCom())
    result = run_relax(lj_model, [slab, crystal], fmax=0.02, steps=400, relax_cell=relax_cell,
                       optimizer="lbfgs")
    assert result.converged == [True, True]
    frame = result.atoms[0]
    assert np.linalg.norm(frame.get_forces(apply_constraint=False)[fixed], axis=1).max() > 0.1
    if relax_cell:
        np.testing.assert_allclose(frame.get_scaled_positions(wrap=False)[fixed],
                                   slab.get_scaled_positions(wrap=False)[fixed], rtol=0, atol=1e-12)
    else:
        assert np.array_equal(frame.positions[fixed], slab.positions[fixed])
        masses = crystal.get_masses()[:, None]
        np.testing.assert_allclose((masses * result.atoms[1].positions).sum(0),
                                   (masses * crystal.positions).sum(0), rtol=0, atol=1e-9)


def test_optimizer_names_of_run_relax_and_the_cli(lj_model):
    families = sorted(n for n, o in OPTIMIZERS.items() if not o.relax_cell)
    assert families == ["fire", "lbfgs"]
    assert {f"{n}_cell" for n in families} == {n for n, o in OPTIMIZERS.items() if o.relax_cell}
    bound = make_optimizer("lbfgs_cell", fmax=0.02, pressure_GPa=2.0)
    assert bound.init.func is lbfgs_init and bound.step.func is lbfgs_step
    assert bound.needs_stress and bound.init.keywords == {"relax_cell": True}
    with pytest.raises(ConfigError, match=r"pressure_GPa = 1\.0 is not allowed without"):
        make_optimizer("lbfgs", pressure_GPa=1.0)
    (flag,) = [s for s in SETTINGS.settings if s.name == "--optimizer"]
    assert sorted(flag.choices) == families
    with pytest.raises(ConfigError, match=r"optimizer = 'bfgs' is not allowed: one of "
                       r"\['fire', 'lbfgs'\]"):
        run_relax(lj_model, [strained_cu_cell(0)], optimizer="bfgs")


def test_cli_relax_with_lbfgs_equals_run_relax(lj_model, tmp_path, capsys):
    systems = [strained_cu_cell(0), strained_cu_cell(1)]
    ase.io.write(tmp_path / "in.xyz", systems)
    save_model(lj_model, tmp_path / "lj.pt")
    out = tmp_path / "relaxed.xyz"
    assert main(["relax", str(tmp_path / "lj.pt"), str(tmp_path / "in.xyz"), "-o", str(out),
                 "--optimizer", "lbfgs", "--cell", "--fmax", "0.01"]) == 0
    assert "structure 1: converged" in capsys.readouterr().out
    direct = run_relax(lj_model, ase.io.read(tmp_path / "in.xyz", index=":"), fmax=0.01,
                       relax_cell=True, optimizer="lbfgs")
    for relaxed, expected in zip(ase.io.read(out, index=":"), direct.atoms):
        assert relaxed.info["relax_steps"] == expected.info["relax_steps"]
        np.testing.assert_allclose(relaxed.cell[:], expected.cell[:], rtol=0, atol=1e-7)
