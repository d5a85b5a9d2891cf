"""The SevenNet adapter equals sevenn's own ASE calculator (skipped without mlip[foundation]).

Tolerances: both sides run the same float32 network on the same edges; they differ only in the
order of float32 sums (sevenn differentiates through its edge vectors, mlip through positions
and a strain) and in how positions and images are rounded. Measured (sevenn 0.13.0, CPU):
|ΔE| ≤ 4e-7 eV/atom, |ΔF| ≤ 6e-6 eV/Å, |Δσ| ≤ 6e-8 eV/Å³ for float32 and float64 alike (the
float32 reference dominates). The bounds below leave a factor of about 20: float32 round-off of
energies of ~5 eV/atom and of forces summed over ~50 edges per atom.
"""

from __future__ import annotations

import socket
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import bulk, fcc111, molecule

from mlip.calculators import MLIPCalculator
from mlip.errors import UnknownElementError
from mlip.graph import AtomicGraph
from mlip.md import run_relax
from mlip.models import load_model

sevenn = pytest.importorskip("sevenn")

E_TOL, F_TOL, S_TOL = 1e-5, 1e-4, 1e-6  # eV/atom, eV/Å, eV/Å³ (module docstring)


@pytest.fixture(scope="module")
def reference():
    from sevenn.calculator import SevenNetCalculator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SevenNetCalculator("7net-0", device="cpu")


@pytest.fixture(scope="module")
def model():
    return load_model("sevennet:7net-0")


def _cells():
    si = bulk("Si", "diamond", 5.43, cubic=True)
    si.rattle(0.05, seed=1)
    salt = bulk("NaCl", "rocksalt", 5.64) * (2, 1, 1)
    salt.rattle(0.05, seed=2)
    slab = fcc111("Cu", (2, 2, 3), vacuum=6.0)
    slab.pbc = (True, True, False)
    slab.rattle(0.03, seed=3)
    ethanol = molecule("CH3CH2OH")
    ethanol.rattle(0.02, seed=4)
    return {"rattled Si": si, "rattled NaCl": salt, "Cu(111) slab": slab, "ethanol": ethanol}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(_cells()))
def test_energy_forces_stress_equal_sevenns_calculator(name, dtype, model, reference):
    atoms = _cells()[name]
    expected = atoms.copy()
    expected.calc = reference
    atoms.calc = MLIPCalculator(model, dtype=dtype)
    n = len(atoms)
    assert abs(atoms.get_potential_energy() - expected.get_potential_energy()) / n < E_TOL
    np.testing.assert_allclose(atoms.get_forces(), expected.get_forces(), rtol=0, atol=F_TOL)
    if atoms.pbc.any():
        np.testing.assert_allclose(atoms.get_stress(), expected.get_stress(), rtol=0, atol=S_TOL)


def test_the_calculator_takes_the_name(reference):
    atoms = _cells()["rattled Si"]
    expected = atoms.copy()
    expected.calc = reference
    atoms.calc = MLIPCalculator("sevennet:7net-0")
    assert abs(atoms.get_potential_energy() - expected.get_potential_energy()) / 8 < E_TOL


def test_edges_beyond_the_cutoff_change_nothing(model):
    """A Verlet list's skin edges count zero (sevenn's own envelope is not zero there)."""
    atoms = _cells()["rattled Si"]
    model64 = load_model("sevennet:7net-0", dtype=torch.float64)
    exact = model64(AtomicGraph.from_ase(atoms, cutoff=model.cutoff), compute_stress=True)
    skin = model64(AtomicGraph.from_ase(atoms, cutoff=model.cutoff + 1.0), compute_stress=True)
    torch.testing.assert_close(skin.energy, exact.energy, rtol=0, atol=1e-10)
    torch.testing.assert_close(skin.forces, exact.forces, rtol=0, atol=1e-10)
    torch.testing.assert_close(skin.stress, exact.stress, rtol=0, atol=1e-12)


def test_a_batch_equals_its_structures_one_by_one(model):
    cells = _cells()
    structures = [cells["rattled Si"], cells["Cu(111) slab"]]
    batch = model(AtomicGraph.from_ase(structures, cutoff=model.cutoff))
    for k, atoms in enumerate(structures):
        alone = model(AtomicGraph.from_ase(atoms, cutoff=model.cutoff))
        torch.testing.assert_close(batch.energy[k:k + 1], alone.energy, rtol=1e-6, atol=0)


def test_isolated_atom_keeps_sevenns_own_energy(model, reference):
    """mlip's isolated-atom switch and E0 are not applied: sevenn's value for a lone atom."""
    from ase import Atoms

    atom = Atoms("O", positions=[[0.0, 0.0, 0.0]])
    expected = atom.copy()
    expected.calc = reference
    atom.calc = MLIPCalculator(model)
    assert atom.get_potential_energy() == pytest.approx(expected.get_potential_energy(), abs=1e-5)
    assert abs(atom.get_potential_energy()) > 0.1


def test_elements_outside_the_table_are_refused_by_name(model):
    atoms = _cells()["rattled Si"]
    atoms.numbers[0] = 84  # polonium: not among SevenNet-0's 89 elements
    with pytest.raises(UnknownElementError, match=r"Po \(Z=84\)"):
        model(AtomicGraph.from_ase(atoms, cutoff=model.cutoff))


def test_weights_come_from_the_wheel_without_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("no network access while loading a pretrained model")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    model = load_model("sevennet:7net-0")
    package = Path(sevenn.__file__).parent / "pretrained_potentials"
    assert Path(model.weights_path).is_relative_to(package)


def test_batched_relaxation_converges_with_the_name(model):
    structures = [_cells()["rattled Si"], _cells()["rattled NaCl"]]
    result = run_relax("sevennet:7net-0", structures, fmax=0.05, steps=200)
    assert all(result.converged)
    for atoms, energy in zip(result.atoms, result.energy):
        atoms.calc = MLIPCalculator(model)
        assert atoms.get_potential_energy() == pytest.approx(energy, abs=1e-4)
        assert np.abs(atoms.get_forces()).max() < 0.05 * 1.01


def test_batched_md_runs_with_the_name():
    from mlip.md import run_md

    structures = [_cells()["rattled Si"], _cells()["rattled NaCl"]]
    result = run_md("sevennet:7net-0", structures, steps=3, ensemble="nvt_langevin",
                    temperature=300.0, timestep=1.0)
    assert not result.failures
    assert np.isfinite(result.state.energy.numpy()).all()


def test_command_line_relaxes_with_the_name(tmp_path, monkeypatch, capsys):
    import ase.io

    from mlip.cli import main

    monkeypatch.chdir(tmp_path)
    ase.io.write("in.xyz", [_cells()["rattled Si"]])
    assert main(["relax", "sevennet:7net-0", "in.xyz", "--device", "cpu", "--fmax", "0.05"]) == 0
    relaxed = ase.io.read("in.relaxed.xyz", index=":")
    assert len(relaxed) == 1 and "converged" in capsys.readouterr().out
