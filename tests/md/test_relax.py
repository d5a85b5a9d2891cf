"""FIRE: step-for-step parity with ASE (with and without the Fréchet cell filter), batching."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import molecule
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE

from mlip.calculators import MLIPCalculator
from mlip.errors import ConfigError
from mlip.md import run_relax
from mlip.md.force_field import ForceField
from mlip.md.relax import fire_init, fire_step
from mlip.md.state import state_from_atoms
from tests.md.conftest import strained_cu_cell


@pytest.mark.parametrize("relax_cell", [False, True])
def test_fire_follows_ase_fire_step_by_step(lj_model, relax_cell):
    start = strained_cu_cell(0)
    reference = start.copy()
    reference.calc = MLIPCalculator(lj_model)
    optimizable = FrechetCellFilter(reference) if relax_cell else reference
    ase_fire = FIRE(optimizable, logfile=None)
    ase_path = []
    ase_fire.attach(lambda: ase_path.append((reference.positions.copy(),
                                             np.asarray(reference.cell).copy())))
    ase_fire.run(fmax=1e-3, steps=300)
    assert ase_fire.nsteps > 30
    force_field = ForceField(lj_model, compute_stress=relax_cell)
    state = fire_init(state_from_atoms([start]), force_field, relax_cell=relax_cell)
    for positions, cell in ase_path[1:]:
        state = fire_step(state, force_field, fmax=1e-3, relax_cell=relax_cell)
        np.testing.assert_allclose(state.positions.numpy(), positions, rtol=0, atol=1e-8)
        np.testing.assert_allclose(state.cell[0].numpy(), cell, rtol=0, atol=1e-8)
    per_atom = abs(state.energy.item() - reference.get_potential_energy()) / len(start)
    assert per_atom < 1e-8


def test_relax_reaches_ase_energy_with_cell(lj_model):
    start = strained_cu_cell(1)
    reference = start.copy()
    reference.calc = MLIPCalculator(lj_model)
    FIRE(FrechetCellFilter(reference), logfile=None).run(fmax=0.01, steps=500)
    result = run_relax(lj_model, [start], fmax=0.01, relax_cell=True, steps=500)
    assert result.converged == [True]
    assert result.fmax[0] < 0.01
    per_atom = abs(result.energy[0] - reference.get_potential_energy()) / len(start)
    assert per_atom < 1e-4
    assert result.atoms[0].info["relax_steps"] == result.n_steps[0] > 0


def test_batched_relax_equals_one_by_one(lj_model):
    systems = [strained_cu_cell(seed) for seed in range(3)] + [molecule("H2O")]
    systems[-1].numbers[:] = 29  # a 3-atom copper cluster, not periodic
    systems[-1].positions *= 2.5
    batched = run_relax(lj_model, systems, fmax=0.02, steps=300)
    for k, atoms in enumerate(systems):
        alone = run_relax(lj_model, [atoms], fmax=0.02, steps=300)
        assert alone.n_steps[0] == batched.n_steps[k]
        assert alone.converged[0] == batched.converged[k]
        np.testing.assert_allclose(batched.atoms[k].positions, alone.atoms[0].positions,
                                   rtol=0, atol=1e-10)
    assert all(batched.converged)
    assert len(set(batched.n_steps)) > 1  # systems converged at different steps


def test_cell_relaxation_needs_periodic_structures(lj_model):
    cluster = molecule("H2O")
    cluster.numbers[:] = 29
    with pytest.raises(ConfigError, match=r"system 1 has pbc=\[False, False, False\]"):
        run_relax(lj_model, [strained_cu_cell(0), cluster], relax_cell=True)


def test_nonsense_relax_settings_are_refused(lj_model):
    crystal = [strained_cu_cell(0)]
    with pytest.raises(ConfigError, match=r"fmax = -0\.1 is not allowed: a finite number > 0"):
        run_relax(lj_model, crystal, fmax=-0.1)
    with pytest.raises(ConfigError, match=r"steps = -3 is not allowed: an integer >= 0"):
        run_relax(lj_model, crystal, steps=-3)
    with pytest.raises(ConfigError, match=r"pressure_GPa = 1\.0 is not allowed without "
                       r"relax_cell=True"):
        run_relax(lj_model, crystal, pressure_GPa=1.0)
