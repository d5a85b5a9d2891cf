"""The CHGNet adapter equals chgnet's own ASE calculator (skipped without mlip[foundation]).

Two references. (1) chgnet as it ships, float32: both sides run the same network on the same
graphs and differ by float32 round-off in different summation orders (chgnet differentiates
through fractional coordinates and a strain of the lattice, mlip through positions and a
symmetric strain). Measured (chgnet 0.4.2, CPU, models 0.3.0/0.2.0/r2scan, mlip in float32 and
float64; all cells below): |ΔE| ≤ 3.1e-6 eV/atom, per-atom |ΔE_i| ≤ 7.8e-6 eV, |ΔF| ≤ 6.8e-5
eV/Å (forces up to 7 eV/Å), |Δσ| ≤ 3.0e-6 eV/Å³; the bounds below leave a factor of 3 to 7.
(2) chgnet switched to float64 (its ``TORCH_DTYPE`` and the float32 cast of its composition
features patched): mlip in float64 then agrees to ≤ 1.2e-14 eV per atom energy, ≤ 1.3e-13
eV/Å and ≤ 4.4e-15 eV/Å³, and the total to ≤ 9e-8 eV/atom (chgnet still rounds the
composition fractions n_Z/n to float32): the rebuilt atom and bond graphs are chgnet's.
"""

from __future__ import annotations

import contextlib
import io
import socket
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import add_adsorbate, bulk, fcc111, molecule

from mlip.calculators import MLIPCalculator
from mlip.errors import UnknownElementError
from mlip.graph import AtomicGraph
from mlip.models import load_model

chgnet = pytest.importorskip("chgnet")

#: |ΔE|/n (eV/atom), |ΔE_i| (eV), |ΔF| (eV/Å), |Δσ| (eV/Å³): module docstring, (1)
TOL = (2e-5, 5e-5, 3e-4, 2e-5)


def _chgnet_calculator(name: str = "0.3.0"):
    from chgnet.model import CHGNet
    from chgnet.model.dynamics import CHGNetCalculator

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        network = CHGNet.load(model_name=name, use_device="cpu", verbose=False)
        return CHGNetCalculator(network, use_device="cpu", return_site_energies=True)


@pytest.fixture(scope="module")
def reference():
    return _chgnet_calculator()


@pytest.fixture(scope="module")
def model():
    return load_model("chgnet:0.3.0")


def _cells() -> dict[str, Atoms]:
    oxide = bulk("MgO", "rocksalt", 4.21, cubic=True)
    oxide.numbers[[1, 5]] = 28  # (Mg,Ni)O: three elements
    oxide.rattle(0.05, seed=2)
    slab = fcc111("Cu", (2, 2, 3), vacuum=7.0)
    add_adsorbate(slab, "O", 1.2, "fcc")
    slab.center(vacuum=7.0, axis=2)  # periodic images 14 Å apart across the vacuum
    slab.pbc = (True, True, False)
    slab.rattle(0.03, seed=3)
    triclinic = Atoms("LiFeO2", cell=[[3.0, 0.2, 0.1], [0.7, 3.1, 0.3], [0.4, 0.6, 4.9]],
                      scaled_positions=[[0, 0, 0], [0.5, 0.45, 0.5], [0.25, 0.27, 0.23],
                                        [0.74, 0.76, 0.78]], pbc=True)
    triclinic.rattle(0.02, seed=4)  # atoms bonded to their own images (cell < 2 × 3 Å)
    ethanol = molecule("CH3CH2OH")
    ethanol.rattle(0.02, seed=5)
    return {"rattled (Mg,Ni)O": oxide, "Cu(111)+O slab": slab, "triclinic LiFeO2": triclinic,
            "ethanol": ethanol}


def _reference_results(atoms: Atoms, calculator) -> tuple[float, np.ndarray, np.ndarray,
                                                         np.ndarray]:
    """chgnet's energy, forces, per-atom energies and stress (NaN without pbc). chgnet needs a
    cell: a molecule is put in a box with 16 Å of vacuum (no image within its 6 Å cutoff)."""
    atoms = atoms.copy()
    periodic = atoms.pbc.any()
    if not periodic:
        atoms.center(vacuum=8.0)
        atoms.pbc = True
    atoms.calc = calculator
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # chgnet's own UserWarning on its volumes
        stress = atoms.get_stress() if periodic else np.full(6, np.nan)
        return (atoms.get_potential_energy(), atoms.get_forces(), atoms.get_potential_energies(),
                stress)


def assert_matches_chgnet(atoms: Atoms, expected,
                          tolerances: tuple[float, float, float, float] = TOL) -> None:
    """Assert that the calculator attached to ``atoms`` gives chgnet's ``expected`` energy per
    atom, per-atom energies, forces and (with pbc) stress within ``tolerances``."""
    energy, forces, energies, stress = expected
    e_tol, ei_tol, f_tol, s_tol = tolerances
    assert abs(atoms.get_potential_energy() - energy) / len(atoms) < e_tol
    np.testing.assert_allclose(atoms.get_potential_energies(), energies, rtol=0, atol=ei_tol)
    np.testing.assert_allclose(atoms.get_forces(), forces, rtol=0, atol=f_tol)
    if atoms.pbc.any():
        np.testing.assert_allclose(atoms.get_stress(), stress, rtol=0, atol=s_tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(_cells()))
def test_energy_forces_stress_equal_chgnets_calculator(name, dtype, model, reference):
    atoms = _cells()[name]
    expected = _reference_results(atoms, reference)
    atoms.calc = MLIPCalculator(model, dtype=dtype)
    assert_matches_chgnet(atoms, expected)


@pytest.mark.parametrize("name", ["0.2.0", "r2scan"])
def test_the_other_pretrained_models_equal_chgnet(name):
    atoms = _cells()["rattled (Mg,Ni)O"]
    expected = _reference_results(atoms, _chgnet_calculator(name))
    atoms.calc = MLIPCalculator(f"chgnet:{name}")
    assert_matches_chgnet(atoms, expected)


def test_in_float64_the_graphs_are_exactly_chgnets(monkeypatch):
    """chgnet run in float64 too: what is left is round-off (module docstring, (2))."""
    import chgnet.graph.converter
    import chgnet.model.model
    from chgnet.model.composition_model import AtomRef

    monkeypatch.setattr(chgnet.graph.converter, "TORCH_DTYPE", torch.float64)
    monkeypatch.setattr(chgnet.model.model, "TORCH_DTYPE", torch.float64)
    monkeypatch.setattr(AtomRef, "_get_energy",
                        lambda self, features: self.fc(features.to(self.fc.weight.dtype)).view(-1))
    reference = _chgnet_calculator()
    reference.model.double()
    model = load_model("chgnet:0.3.0", dtype=torch.float64)
    for name in ("rattled (Mg,Ni)O", "Cu(111)+O slab", "triclinic LiFeO2"):
        atoms = _cells()[name]
        expected = _reference_results(atoms, reference)
        atoms.calc = MLIPCalculator(model)
        assert_matches_chgnet(atoms, expected, (3e-7, 1e-12, 1e-11, 1e-13))


def test_the_rebuilt_graphs_have_chgnets_bonds_and_angles(model):
    """Counts and angle multisets of chgnet's own converter (self-image bonds included)."""
    from chgnet.graph import CrystalGraphConverter
    from pymatgen.io.ase import AseAtomsAdaptor

    from mlip.models.foundation.chgnet import chgnet_graph

    atoms = _cells()["triclinic LiFeO2"]
    theirs = CrystalGraphConverter(atom_graph_cutoff=6.0, bond_graph_cutoff=3.0)(
        AseAtomsAdaptor.get_structure(atoms))
    graph = AtomicGraph.from_ase(atoms, cutoff=model.cutoff + 1.0)
    ours = chgnet_graph(graph.edge_index, graph.edge_shift, graph.edge_vectors(), len(atoms),
                        6.0, 3.0)
    assert ours.atom_graph.shape[0] == theirs.atom_graph.shape[0]
    assert int(ours.bond_of_edge.max()) + 1 == theirs.undirected2directed.shape[0]
    assert ours.n_angles == theirs.bond_graph.shape[0] > 0

    def cosines(vectors, first, second):
        return np.sort((vectors[first] * vectors[second]).sum(1))

    np.testing.assert_allclose(  # chgnet's positions are float32
        cosines(ours.unit_vectors.numpy(), *ours.angle_bonds.T.numpy()),
        cosines(_chgnet_unit_vectors(theirs), theirs.bond_graph[:, 2].long().numpy(),
                theirs.bond_graph[:, 4].long().numpy()), rtol=0, atol=1e-5)
    assert (np.bincount(ours.angle_centres.numpy(), minlength=len(atoms))
            == np.bincount(theirs.bond_graph[:, 0].numpy(), minlength=len(atoms))).all()


def _chgnet_unit_vectors(graph) -> np.ndarray:
    """Unit vectors r_j - r_i + S·cell of chgnet's directed bonds."""
    cart = (graph.atom_frac_coord @ graph.lattice).detach().double().numpy()
    lattice = graph.lattice.detach().double().numpy()
    i, j = graph.atom_graph.long().numpy().T
    vectors = cart[j] + graph.neighbor_image.double().numpy() @ lattice - cart[i]
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_the_calculator_takes_the_name(reference):
    atoms = _cells()["triclinic LiFeO2"]
    expected = _reference_results(atoms, reference)
    atoms.calc = MLIPCalculator(model="chgnet:0.3.0")
    assert_matches_chgnet(atoms, expected)


def test_a_batch_equals_its_structures_one_by_one(model):
    cells = _cells()
    structures = [cells["rattled (Mg,Ni)O"], cells["Cu(111)+O slab"]]
    batch = model(AtomicGraph.from_ase(structures, cutoff=model.cutoff), compute_stress=True)
    start = 0
    for k, atoms in enumerate(structures):
        alone = model(AtomicGraph.from_ase(atoms, cutoff=model.cutoff), compute_stress=True)
        torch.testing.assert_close(batch.energy[k:k + 1], alone.energy, rtol=1e-6, atol=0)
        torch.testing.assert_close(batch.forces[start:start + len(atoms)], alone.forces,
                                   rtol=0, atol=1e-5)
        if atoms.pbc.all():
            torch.testing.assert_close(batch.stress[k:k + 1], alone.stress, rtol=0, atol=1e-6)
        start += len(atoms)


def test_forces_are_the_gradient_of_the_energy_in_float64():
    """Central differences of the energy along random unit displacements of all atoms."""
    model = load_model("chgnet:0.3.0", dtype=torch.float64)
    atoms = _cells()["triclinic LiFeO2"]
    atoms.calc = MLIPCalculator(model, skin=0.0)
    forces = atoms.get_forces()
    h = 2e-5
    for direction in np.random.default_rng(8).normal(size=(3, len(atoms), 3)):
        direction /= np.linalg.norm(direction)
        energies = []
        for step in (h, -h):
            moved = atoms.copy()
            moved.positions += step * direction
            moved.calc = MLIPCalculator(model, skin=0.0)
            energies.append(moved.get_potential_energy())
        slope = (energies[0] - energies[1]) / (2 * h)
        assert -slope == pytest.approx((forces * direction).sum(), abs=1e-7)  # seen: 1e-8


def test_edges_beyond_the_cutoff_change_nothing():
    """A Verlet list's skin edges (beyond 6 Å) count exactly zero."""
    model64 = load_model("chgnet:0.3.0", dtype=torch.float64)
    atoms = _cells()["rattled (Mg,Ni)O"]
    exact = model64(AtomicGraph.from_ase(atoms, cutoff=model64.cutoff), compute_stress=True)
    skin = model64(AtomicGraph.from_ase(atoms, cutoff=model64.cutoff + 1.5), compute_stress=True)
    torch.testing.assert_close(skin.energy, exact.energy, rtol=0, atol=1e-10)
    torch.testing.assert_close(skin.forces, exact.forces, rtol=0, atol=1e-10)
    torch.testing.assert_close(skin.stress, exact.stress, rtol=0, atol=1e-12)


@pytest.mark.parametrize("atoms", [Atoms("O", positions=[[0.0, 0.0, 0.0]]),
                                   Atoms("H2", positions=[[0.0, 0.0, 0.0], [0.0, 0.0, 4.0]])],
                         ids=["lone atom", "H2 without angles"])
def test_atoms_without_bonds_or_angles_keep_chgnets_energy(atoms, model, reference):
    """No edge at all, or bonds but no angle (chgnet then skips its bond and angle updates)."""
    expected = _reference_results(atoms, reference)
    atoms.calc = MLIPCalculator(model)
    assert_matches_chgnet(atoms, expected)
    assert abs(atoms.get_potential_energy()) > 0.1


def test_a_structure_without_angles_has_its_own_energy_in_a_batch():
    """chgnet:0.2.0's bond update has a bias: H2 (a bond of 4 Å, no angle) must not get it
    from a batch mate with angles."""
    model = load_model("chgnet:0.2.0")
    dimer = Atoms("H2", positions=[[0.0, 0.0, 0.0], [0.0, 0.0, 4.0]])
    expected = _reference_results(dimer, _chgnet_calculator("0.2.0"))
    structures = [_cells()["rattled (Mg,Ni)O"], dimer]
    batch = model(AtomicGraph.from_ase(structures, cutoff=model.cutoff))
    assert float(batch.energy[1]) == pytest.approx(expected[0], abs=1e-5)
    torch.testing.assert_close(batch.forces[-2:].double(), torch.from_numpy(expected[1]).double(),
                               rtol=0, atol=1e-5)
    alone = model(AtomicGraph.from_ase(structures[0], cutoff=model.cutoff))
    torch.testing.assert_close(batch.energy[:1], alone.energy, rtol=1e-6, atol=0)


def test_elements_outside_the_table_are_refused_by_name(model):
    atoms = _cells()["rattled (Mg,Ni)O"]
    atoms.numbers[0] = 95  # americium: chgnet's tables end at Pu (Z=94)
    with pytest.raises(UnknownElementError, match=r"Am \(Z=95\)"):
        model(AtomicGraph.from_ase(atoms, cutoff=model.cutoff))


def test_weights_come_from_the_wheel_without_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("no network access while loading a pretrained model")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    model = load_model("chgnet:0.3.0")
    assert model.cutoff == 6.0 and model.bond_cutoff == 3.0
    assert Path(model.weights_path).is_relative_to(Path(chgnet.__file__).parent / "pretrained")


def test_batched_md_runs_with_the_name():
    from mlip.md import run_md

    structures = [_cells()["rattled (Mg,Ni)O"], _cells()["triclinic LiFeO2"]]
    result = run_md("chgnet:0.3.0", structures, steps=3, ensemble="nvt_langevin",
                    temperature=300.0, timestep=1.0)
    assert not result.failures
    assert np.isfinite(result.state.energy.numpy()).all()


def test_command_line_relaxes_with_the_name(tmp_path, monkeypatch, capsys, model):
    import ase.io

    from mlip.cli import main

    monkeypatch.chdir(tmp_path)
    silicon = bulk("Si", "diamond", 5.43)
    silicon.rattle(0.02, seed=6)
    salt = bulk("NaCl", "rocksalt", 5.64)
    salt.rattle(0.02, seed=7)
    ase.io.write("in.xyz", [silicon, salt])
    assert main(["relax", "chgnet:0.3.0", "in.xyz", "--device", "cpu", "--fmax", "0.05"]) == 0
    relaxed = ase.io.read("in.relaxed.xyz", index=":")
    assert len(relaxed) == 2 and capsys.readouterr().out.count("converged") >= 2
    for atoms in relaxed:
        atoms.calc = MLIPCalculator(model)
        assert np.abs(atoms.get_forces()).max() < 0.05 * 1.01
