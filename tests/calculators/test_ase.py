"""MLIPCalculator: ASE contract, finite differences, skin reuse, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS

from mlip.calculators import MLIPCalculator
from mlip.errors import ConfigError, UnknownElementError
from mlip.models import build, save_model


@pytest.fixture(scope="module")
def model():
    return build("lennard_jones", species=[1, 6, 8, 29], cutoff=5.0, epsilon=0.4, sigma=2.3)


def _cu(rattle: float = 0.05) -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.61).repeat((2, 2, 2))
    atoms.set_cell(atoms.cell * [1.0, 1.02, 0.97], scale_atoms=True)  # non-cubic strain
    atoms.rattle(rattle, seed=3)
    return atoms


def test_forces_and_stress_match_finite_differences(model):
    atoms = _cu()
    atoms.calc = MLIPCalculator(model)
    forces = atoms.get_forces()
    stress = atoms.get_stress()
    np.testing.assert_allclose(forces, calculate_numerical_forces(atoms, eps=1e-5), atol=1e-6)
    np.testing.assert_allclose(stress, calculate_numerical_stress(atoms, eps=1e-6), atol=1e-7)
    assert np.abs(stress).max() > 1e-3  # the check has teeth: the strained cell is stressed


def test_properties_are_consistent(model):
    atoms = _cu()
    atoms.calc = MLIPCalculator(model)
    energy = atoms.get_potential_energy()
    assert atoms.get_potential_energy(force_consistent=True) == energy
    assert atoms.get_potential_energies().sum() == pytest.approx(energy, abs=1e-10)
    assert atoms.get_forces().sum(axis=0) == pytest.approx(np.zeros(3), abs=1e-10)


def test_molecule_has_no_stress(model):
    atoms = molecule("CH3OH")
    atoms.calc = MLIPCalculator(model)
    atoms.get_forces()
    with pytest.raises(PropertyNotImplementedError, match="periodic"):
        atoms.get_stress()


def test_bad_dtype_is_named(model):
    with pytest.raises(ConfigError, match="dtype 'float16' is not supported"):
        MLIPCalculator(model, dtype="float16")


def test_unknown_element_is_named(model):
    atoms = Atoms("CuAu", positions=[[0, 0, 0], [0, 0, 2.5]])
    atoms.calc = MLIPCalculator(model)
    with pytest.raises(UnknownElementError, match=r"Au \(Z=79\)"):
        atoms.get_potential_energy()


def test_skin_reuses_the_list_and_matches_a_fresh_list(model):
    atoms = _cu(0.0)
    reused, fresh = MLIPCalculator(model, skin=1.0), MLIPCalculator(model, skin=0.0)
    rng = np.random.default_rng(0)
    for _ in range(6):
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        atoms.calc = reused
        f_reused = atoms.get_forces()
        atoms.calc = fresh
        np.testing.assert_allclose(f_reused, atoms.get_forces(), atol=1e-12)
    assert reused.neighbors.n_rebuilds < fresh.neighbors.n_rebuilds


def test_rebuilds_when_an_atom_moves_past_half_the_skin(model):
    atoms = _cu(0.0)
    calc = MLIPCalculator(model, skin=0.5)
    atoms.calc = calc
    atoms.get_forces()
    atoms.positions[0] += [0.2, 0.0, 0.0]
    atoms.get_forces()
    assert calc.neighbors.n_rebuilds == 1
    atoms.positions[0] += [0.1, 0.0, 0.0]  # 0.3 Å > skin/2 in total
    atoms.get_forces()
    assert calc.neighbors.n_rebuilds == 2


def test_loads_a_checkpoint_path_in_float32(model, tmp_path):
    path = tmp_path / "lj.pt"
    save_model(model, path)
    atoms = _cu()
    atoms.calc = MLIPCalculator(model)
    e64 = atoms.get_potential_energy()
    atoms.calc = MLIPCalculator(path, dtype="float32")
    assert atoms.calc.model.epsilon.dtype == torch.float32
    assert atoms.get_potential_energy() == pytest.approx(e64, rel=1e-5)


def test_works_with_cell_filter_and_optimizer(model):
    atoms = bulk("Cu", "fcc", a=3.5, cubic=True)
    atoms.set_cell(atoms.cell * [1.0, 1.03, 0.98], scale_atoms=True)
    atoms.calc = MLIPCalculator(model)
    assert BFGS(FrechetCellFilter(atoms), logfile=None).run(fmax=1e-3, steps=100)
    # FrechetCellFilter's cell force is V·σ/N, so converged means |σ| < fmax·N/V
    assert np.abs(atoms.get_stress()).max() < 1e-3 * len(atoms) / atoms.get_volume()


def test_the_callers_model_is_never_converted_in_place():
    """dtype="float32" (and eval mode) apply to the calculator's copy, not to the caller's
    float64 model in training mode."""
    mine = build("lennard_jones", species=[29], cutoff=5.0, epsilon=0.4, sigma=2.3).train()
    atoms = _cu()
    atoms.calc = MLIPCalculator(mine, dtype="float32")
    energy32 = atoms.get_potential_energy()
    assert all(p.dtype == torch.float64 for p in mine.parameters())
    assert mine.training
    assert atoms.calc.dtype == torch.float32
    reference = _cu()
    reference.calc = MLIPCalculator(mine.eval())
    assert energy32 == pytest.approx(reference.get_potential_energy(), rel=1e-5)
    assert reference.calc.model is mine  # nothing to convert: no copy


@pytest.mark.compiles
def test_compile_applies_to_a_copy_of_the_callers_model():
    """compile=True compiles the calculator's copy: the caller's module stays eager."""
    mine = build("lennard_jones", species=[29], cutoff=5.0, epsilon=0.4, sigma=2.3).eval()
    calc = MLIPCalculator(mine, compile=True)
    assert calc.model is not mine
    assert "_compiled_inference" in calc.model.__dict__
    assert "_compiled_inference" not in mine.__dict__
