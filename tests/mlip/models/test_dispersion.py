"""DFT-D3(BJ) dispersion (mlip.models.dispersion) against torch-dftd's own ASE calculator.

Tolerances: float64 throughout, so energies to 1e-10 eV relative, forces and stress to 1e-10
absolute (the same pair terms summed in another order); finite differences to 1e-6.
"""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk, molecule

pytest.importorskip("torch_dftd")

from torch_dftd.torch_dftd3_calculator import TorchDFTD3Calculator  # noqa: E402

from mlip.calculators import MLIPCalculator  # noqa: E402
from mlip.cli import main  # noqa: E402
from mlip.errors import ConfigError, MissingExtraError  # noqa: E402
from mlip.graph import AtomicGraph  # noqa: E402
from mlip.models import build, save_model  # noqa: E402
from mlip.models.dispersion import D3_CN_CUTOFF, D3_CUTOFF, WithDispersion  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Creating a tensor from a list")

CUTOFF, CN_CUTOFF = 9.0, 7.0  # Å: small D3 cutoffs keep the periodic tests fast


def _lj(epsilon: float = 0.0, cutoff: float = 4.0):
    """A float64 Lennard-Jones model (epsilon 0: no energy of its own)."""
    return build("lennard_jones", species=[1, 6, 8, 14], cutoff=cutoff, epsilon=epsilon,
                 sigma=2.0).double()


def _periodic():
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.rattle(0.05, seed=1)
    atoms.set_cell(atoms.cell + [[0, 0.3, 0], [0, 0, 0], [0.2, 0, 0]], scale_atoms=True)
    return atoms


def _molecule():
    atoms = molecule("CH3OH")
    atoms.rattle(0.05, seed=2)
    return atoms


def _reference(atoms, cutoff=CUTOFF, cn_cutoff=CN_CUTOFF):
    ref = atoms.copy()
    ref.calc = TorchDFTD3Calculator(damping="bj", xc="pbe", cutoff=cutoff, cnthr=cn_cutoff,
                                    dtype=torch.float64)
    return ref


def _ours(atoms, model, **cutoffs):
    ours = atoms.copy()
    d3 = WithDispersion(model=model, functional="pbe", **{"cutoff": CUTOFF,
                                                          "cn_cutoff": CN_CUTOFF, **cutoffs})
    ours.calc = MLIPCalculator(d3, dtype=torch.float64)
    return ours


@pytest.mark.parametrize("make", [_periodic, _molecule])
def test_d3_alone_equals_the_library_calculator(make):
    atoms = make()
    ours, ref = _ours(atoms, _lj()), _reference(atoms)
    assert ours.get_potential_energy() == pytest.approx(ref.get_potential_energy(), rel=1e-10)
    np.testing.assert_allclose(ours.get_forces(), ref.get_forces(), rtol=0, atol=1e-10)
    if atoms.pbc.any():
        np.testing.assert_allclose(ours.get_stress(), ref.get_stress(), rtol=0, atol=1e-10)
        assert abs(ref.get_stress()).max() > 1e-4  # a real check, not two zeros


def test_a_batch_of_periodic_and_molecular_systems_equals_one_by_one():
    systems = [_periodic(), _molecule(), _periodic().repeat((1, 1, 2))]
    model = WithDispersion(model=_lj(), functional="pbe", cutoff=CUTOFF,
                           cn_cutoff=CN_CUTOFF).eval()
    out = model(AtomicGraph.from_ase(systems, model.cutoff), compute_stress=True)
    first = 0
    for g, atoms in enumerate(systems):
        ref = _reference(atoms)
        n = len(atoms)
        assert out.energy[g].item() == pytest.approx(ref.get_potential_energy(), rel=1e-10)
        np.testing.assert_allclose(out.forces[first:first + n].numpy(), ref.get_forces(),
                                   rtol=0, atol=1e-10)
        if atoms.pbc.any():
            np.testing.assert_allclose(out.stress[g].numpy(), ref.get_stress(voigt=False),
                                       rtol=0, atol=1e-10)
            np.testing.assert_allclose(out.virial[g].numpy(),
                                       -ref.get_stress(voigt=False) * atoms.get_volume(),
                                       rtol=0, atol=1e-9)
        first += n


def test_missing_library_says_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch_dftd.nn.dftd3_module", None)
    with pytest.raises(MissingExtraError, match=r"pip install mlip\[dispersion\]"):
        WithDispersion(model=_lj(), functional="pbe")


def test_library_default_cutoffs_on_a_molecule():
    atoms = _molecule()
    ours, ref = _ours(atoms, _lj(), cutoff=D3_CUTOFF, cn_cutoff=D3_CN_CUTOFF), _reference(
        atoms, cutoff=D3_CUTOFF, cn_cutoff=D3_CN_CUTOFF)
    assert ours.get_potential_energy() == pytest.approx(ref.get_potential_energy(), rel=1e-10)
    np.testing.assert_allclose(ours.get_forces(), ref.get_forces(), rtol=0, atol=1e-10)


def test_model_plus_d3_is_the_sum():
    atoms = _periodic()
    model = _lj(epsilon=0.05, cutoff=4.0)
    alone = atoms.copy()
    alone.calc = MLIPCalculator(model, dtype=torch.float64)
    ours, ref = _ours(atoms, model), _reference(atoms)
    assert ours.calc.model.cutoff == CUTOFF  # max(model cutoff, D3 cutoff)
    assert abs(alone.get_potential_energy()) > 1e-3
    assert ours.get_potential_energy() == pytest.approx(
        alone.get_potential_energy() + ref.get_potential_energy(), rel=1e-10)
    np.testing.assert_allclose(ours.get_forces(), alone.get_forces() + ref.get_forces(),
                               rtol=0, atol=1e-10)
    np.testing.assert_allclose(ours.get_stress(), alone.get_stress() + ref.get_stress(),
                               rtol=0, atol=1e-10)
    np.testing.assert_allclose(ours.get_potential_energies().sum(),
                               ours.get_potential_energy(), rtol=1e-12)


def test_model_cutoff_larger_than_the_d3_cutoff():
    atoms = _periodic()
    model = _lj(epsilon=0.05, cutoff=6.0)
    alone = atoms.copy()
    alone.calc = MLIPCalculator(model, dtype=torch.float64)
    ours, ref = _ours(atoms, model, cutoff=5.0, cn_cutoff=5.0), _reference(atoms, 5.0, 5.0)
    assert ours.get_potential_energy() == pytest.approx(
        alone.get_potential_energy() + ref.get_potential_energy(), rel=1e-10)
    np.testing.assert_allclose(ours.get_forces(), alone.get_forces() + ref.get_forces(),
                               rtol=0, atol=1e-10)


def test_autograd_forces_and_stress_equal_finite_differences():
    atoms = _periodic()
    ours = _ours(atoms, _lj(epsilon=0.05))
    forces, stress = ours.get_forces(), ours.get_stress(voigt=False)
    h = 1e-5
    for atom, axis in [(0, 0), (3, 1), (5, 2)]:
        energies = []
        for sign in (1, -1):
            moved = ours.copy()
            moved.calc = ours.calc
            moved.positions[atom, axis] += sign * h
            energies.append(moved.get_potential_energy())
        assert -(energies[0] - energies[1]) / (2 * h) == pytest.approx(forces[atom, axis],
                                                                        abs=1e-6)
    volume = atoms.get_volume()
    for i, j in [(0, 0), (1, 2), (0, 1)]:
        energies = []
        for sign in (1, -1):
            strain = np.eye(3)
            strain[i, j] += sign * h / 2
            strain[j, i] += sign * h / 2
            moved = ours.copy()
            moved.calc = ours.calc
            moved.set_cell(ours.cell @ strain, scale_atoms=True)
            energies.append(moved.get_potential_energy())
        assert (energies[0] - energies[1]) / (2 * h) / volume == pytest.approx(stress[i, j],
                                                                                abs=1e-6)


def test_calculator_dispersion_argument():
    atoms = _molecule()
    ours = atoms.copy()
    ours.calc = MLIPCalculator(_lj(), dtype=torch.float64, dispersion="d3bj:pbe")
    assert isinstance(ours.calc.model, WithDispersion)
    ref = _reference(atoms, cutoff=D3_CUTOFF, cn_cutoff=D3_CN_CUTOFF)
    assert ours.get_potential_energy() == pytest.approx(ref.get_potential_energy(), rel=1e-10)
    np.testing.assert_allclose(ours.get_forces(), ref.get_forces(), rtol=0, atol=1e-10)


@pytest.mark.parametrize("spec, message", [
    ("d3bj:nope", "valid functionals: .*pbe"), ("d4:pbe", "only DFT-D3\\(BJ\\)")])
def test_unknown_functional_is_refused_naming_the_valid_ones(spec, message):
    with pytest.raises(ConfigError, match=message):
        MLIPCalculator(_lj(), dispersion=spec)


def test_cli_relax_with_d3(tmp_path, capsys):
    model = build("lennard_jones", species=[18], cutoff=5.0, epsilon=0.01, sigma=3.4)
    save_model(model, tmp_path / "lj.pt")
    dimer = ase.Atoms("Ar2", positions=[[0, 0, 0], [0, 0, 4.2]])
    ase.io.write(tmp_path / "in.xyz", dimer)
    out = tmp_path / "out.xyz"
    assert main(["relax", str(tmp_path / "lj.pt"), str(tmp_path / "in.xyz"), "-o", str(out),
                 "--device", "cpu", "--fmax", "1e-4", "--d3", "pbe"]) == 0
    relaxed = ase.io.read(out)
    relaxed.calc = MLIPCalculator(model, dtype=torch.float64, dispersion="d3bj:pbe")
    assert abs(relaxed.get_forces()).max() < 1e-4
    plain = relaxed.copy()
    plain.calc = MLIPCalculator(model, dtype=torch.float64)
    assert abs(plain.get_forces()).max() > 1e-3  # D3 moved the minimum
    assert main(["relax", str(tmp_path / "lj.pt"), str(tmp_path / "in.xyz"), "-o",
                 str(tmp_path / "bad.xyz"), "--device", "cpu", "--d3", "nope"]) == 2
    assert "valid functionals" in capsys.readouterr().err
