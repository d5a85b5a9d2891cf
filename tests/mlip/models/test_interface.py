"""The Potential interface, autograd path, registry and checkpoints (on the analytic LJ model)."""

from __future__ import annotations

import ase.build
import numpy as np
import pytest
import torch
from ase.neighborlist import neighbor_list as ase_neighbor_list

from mlip.errors import CheckpointMismatchError, ConfigError
from mlip.graph import AtomicGraph
from mlip.models import MODELS, build, load_model, save_model


@pytest.fixture
def lj():
    return build(
        "lennard_jones", species=[29], cutoff=5.0, epsilon=0.4, sigma=2.3, envelope_p=6
    ).double()


@pytest.fixture
def skewed_cu():
    atoms = ase.build.bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2)
    atoms.rattle(0.05, seed=1)
    atoms.set_cell(atoms.cell @ np.array([[1, 0.1, 0], [0, 1, 0.05], [0, 0, 1]]), scale_atoms=True)
    return atoms


def test_energy_and_forces_match_an_independent_numpy_pair_sum(lj, skewed_cu):
    """Reference: ASE's neighbour list and the LJ + envelope formula in numpy."""
    i, j, d, D = ase_neighbor_list("ijdD", skewed_cu, 5.0)
    u = d / 5.0
    env = 1 - 28 * u**6 + 48 * u**7 - 21 * u**8
    denv = (-168 * u**5 + 336 * u**6 - 168 * u**7) / 5.0
    x6 = (2.3 / d) ** 6
    lj_pair = 4 * 0.4 * (x6 * x6 - x6)
    dlj = 4 * 0.4 * (-12 * x6 * x6 + 6 * x6) / d
    energy = 0.5 * np.sum(lj_pair * env)
    dE_dd = (
        dlj * env + lj_pair * denv
    )  # derivative of each (i, j) pair term; full list counts twice
    forces = np.zeros((len(skewed_cu), 3))
    np.add.at(forces, i, dE_dd[:, None] * D / d[:, None])  # -dE/dr_i with D = r_j - r_i
    out = lj.eval()(AtomicGraph.from_ase(skewed_cu, 5.0))
    assert abs(float(out.energy[0]) - energy) < 1e-10
    np.testing.assert_allclose(out.forces.numpy(), forces, atol=1e-10)


def test_stress_is_nan_for_molecules(lj):
    atoms = ase.build.molecule("CH4")
    atoms.numbers[:] = 29
    out = lj(AtomicGraph.from_ase(atoms, 5.0), compute_stress=True)
    assert torch.isnan(out.stress).all() and torch.isfinite(out.forces).all()


def test_registry_rejects_unknown_keys_and_models():
    assert "lennard_jones" in MODELS
    with pytest.raises(ConfigError, match="did you mean 'epsilon'"):
        build("lennard_jones", species=[1], epsilonn=1.0)
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        build("nope")


def test_corrupt_or_foreign_checkpoints_are_refused(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointMismatchError, match="not a readable mlip potential file"):
        load_model(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointMismatchError, match="not an mlip potential file"):
        load_model(foreign)
    with pytest.raises(CheckpointMismatchError, match="no such potential file"):
        load_model(tmp_path / "missing.pt")


def test_checkpoint_keeps_the_saved_dtype_unless_asked(lj, tmp_path):
    path = tmp_path / "lj32.pt"
    save_model(lj.float(), path)
    assert load_model(path).epsilon.dtype == torch.float32
    assert load_model(path, dtype=torch.float64).epsilon.dtype == torch.float64


def test_energy_reference_stays_float64_through_dtype_casts(lj, skewed_cu, tmp_path):
    """E0, scale and shift keep float64 through .float()/.to(dtype) and a float32 checkpoint, so
    a float32 model adds them without rounding them to float32 (~1e-4 eV at 1e3 eV)."""
    e0 = -1029.812345678912
    lj.set_energy_reference({29: e0}, scale=0.123456789012, shift=-0.31415926535)
    single = lj.float()
    save_model(single, tmp_path / "lj32.pt")
    for model in (single, load_model(tmp_path / "lj32.pt"), lj.to(dtype=torch.float16).float()):
        assert model.epsilon.dtype == torch.float32
        assert model.reference_energies.dtype == torch.float64
        assert float(model.reference_energies[0]) == e0
        assert float(model.energy_scale) == 0.123456789012
        assert float(model.energy_shift) == -0.31415926535
    out = single(AtomicGraph.from_ase(skewed_cu, 5.0))  # float64 graph into a float32 model
    assert out.energy.dtype == torch.float64 and out.forces.dtype == torch.float32
