"""evaluate_halo without LAMMPS: a periodic cell cut into slabs ("ranks"), each with its explicit
periodic images as ghosts, gives exactly MLIPCalculator's energy, forces and stress."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from mlip.calculators import MLIPCalculator
from mlip.lammps.halo import evaluate_halo, evaluate_periodic, hop_distances, lammps_cell
from mlip.models import build
from mlip.neighbors import VerletList
from tests.lammps.conftest import cu_atoms, randomized


def _rank_cloud(atoms, lo: np.ndarray, hi: np.ndarray, margin: float):
    """Atoms of the box [lo, hi) first, then every image within ``margin`` of the box:
    positions (n, 3), atomic numbers, index of each point's atom, and the local count."""
    cell, positions = atoms.cell.array, atoms.positions
    scaled = atoms.get_scaled_positions()
    inside = np.all((scaled >= lo) & (scaled < hi), axis=1)
    lo_cart, hi_cart = lo * np.diag(cell), hi * np.diag(cell)
    points, owners = [positions[inside]], [np.nonzero(inside)[0]]
    for shift in itertools.product(range(-4, 5), repeat=3):
        image = positions + np.array(shift) @ cell
        outside = np.maximum(np.maximum(lo_cart - image, image - hi_cart), 0.0)
        near = np.linalg.norm(outside, axis=1) <= margin
        if shift == (0, 0, 0):
            near &= ~inside
        points.append(image[near])
        owners.append(np.nonzero(near)[0])
    owners = np.concatenate(owners)
    return np.concatenate(points), atoms.numbers[owners], owners, int(inside.sum())


@pytest.mark.parametrize("family", ["facet", "tdn"])
@pytest.mark.parametrize("slabs", [1, 3])
@pytest.mark.parametrize("ghost_forces", [False, True])
def test_slabs_with_ghosts_give_the_periodic_result(family, slabs, ghost_forces):
    """The double shell (no reverse communication) and the single shell whose ghost forces go
    back to their owners both give the periodic energy, forces and virial."""
    torch.manual_seed(1)
    options = dict(avg_num_neighbors=12.0, hidden_irreps="4x0e+2x1o", num_layers=2) \
        if family == "facet" else dict(channels=4, num_heads=1, num_blocks=1, radial_hidden=8)
    model = randomized(build(family, species=[29], cutoff=3.0, **options).double().eval())
    atoms = cu_atoms()
    atoms.calc = MLIPCalculator(model)
    reach = (1 if ghost_forces else 2) * model.receptive_layers * model.cutoff
    energy, forces, virial = 0.0, np.zeros((len(atoms), 3)), np.zeros((3, 3))
    for k in range(slabs):
        lo, hi = np.array([k / slabs, 0, 0]), np.array([(k + 1) / slabs, 1, 1])
        points, numbers, owners, n_local = _rank_cloud(atoms, lo, hi, reach)
        result = evaluate_halo(model, torch.tensor(points), torch.tensor(numbers), n_local,
                               ghost_forces=ghost_forces)
        energy += result.energy
        np.add.at(forces, owners[:n_local], result.forces.numpy())
        if ghost_forces:
            np.add.at(forces, owners[result.ghost_index.numpy()], result.ghost_forces.numpy())
        virial += result.virial.numpy()
        assert result.atoms_evaluated < len(points)  # the far ghosts were dropped
    stress = atoms.get_stress(voigt=False)
    assert energy == pytest.approx(atoms.get_potential_energy(), abs=1e-10)
    np.testing.assert_allclose(forces, atoms.get_forces(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(virial, -stress * atoms.get_volume(), rtol=0, atol=1e-11)


@pytest.mark.parametrize("ghost_forces", [False, True])
def test_one_periodic_system_equals_the_halo_in_a_triclinic_box(ghost_forces):
    """One rank's shortcut: the whole box as one periodic system (LAMMPS's tilted box as the
    cell) gives the halo's energy, forces and virial, also with a reused neighbour list."""
    torch.manual_seed(1)
    model = randomized(build("facet", species=[29], cutoff=3.0, avg_num_neighbors=12.0,
                             hidden_irreps="4x0e+2x1o", num_layers=2).double().eval())
    atoms = cu_atoms()
    lx, ly, lz = atoms.cell.lengths()
    cell = lammps_cell(lx, ly, lz, xy=0.4, xz=-0.3, yz=0.5)
    assert cell.tolist() == [[lx, 0, 0], [0.4, ly, 0], [-0.3, 0.5, lz]]
    atoms.set_cell(cell.numpy(), scale_atoms=True)
    reach = (1 if ghost_forces else 2) * model.receptive_layers * model.cutoff
    points, numbers, owners, n_local = _rank_cloud(atoms, np.zeros(3), np.ones(3), reach + 2.0)
    assert n_local == len(atoms)
    halo = evaluate_halo(model, torch.tensor(points), torch.tensor(numbers), n_local,
                         ghost_forces=ghost_forces)
    halo_forces = halo.forces.numpy().copy()
    if ghost_forces:
        np.add.at(halo_forces, owners[halo.ghost_index.numpy()], halo.ghost_forces.numpy())
    verlet = VerletList(model.cutoff, 1.0)
    for _ in range(2):  # the second call reuses the list
        whole = evaluate_periodic(model, torch.tensor(atoms.positions),
                                  torch.tensor(atoms.numbers), cell, torch.ones(3, dtype=bool),
                                  verlet=verlet)
        assert whole.energy == pytest.approx(halo.energy, abs=1e-10)
        np.testing.assert_allclose(whole.forces.numpy(), halo_forces, rtol=0, atol=1e-10)
        np.testing.assert_allclose(whole.virial.numpy(), halo.virial.numpy(), rtol=0,
                                   atol=1e-10)
    assert verlet.n_rebuilds == 1 and whole.atoms_evaluated == len(atoms)
    assert np.abs(whole.virial.numpy() - np.diag(np.diag(whole.virial.numpy()))).max() > 1e-3


def test_hop_distances_follow_the_chain():
    edges = torch.tensor([[0, 1, 1, 2, 2, 3], [1, 0, 2, 1, 3, 2]])  # a chain 0-1-2-3
    assert hop_distances(edges, 5, 1, 2).tolist() == [0, 1, 2, 3, 3]
    assert hop_distances(edges, 5, 2, 3).tolist() == [0, 0, 1, 2, 4]


def _small(family: str):
    from mlip.models.equiformer_v3 import PRESETS

    options = {
        "facet": dict(avg_num_neighbors=2.0, hidden_irreps="4x0e+2x1o", num_layers=3),
        "tdn": dict(channels=4, num_heads=1, num_blocks=2, radial_hidden=8),
        "equiformer_v3": dict(PRESETS["cpu"], channels=8, num_layers=1, attn_hidden=4,
                              attn_alpha_channels=4, attn_value_channels=4, ffn_hidden=8,
                              edge_channels=8),
        "lennard_jones": {},
    }[family]
    return randomized(build(family, species=[6], **{**options, "cutoff": 3.0}).double().eval())


@pytest.mark.parametrize("family", ["facet", "tdn", "equiformer_v3", "lennard_jones"])
def test_receptive_layers_is_the_reach_of_an_atom_energy(family):
    """On a chain with one edge between neighbours, E_0 changes when atom L moves and not when
    atom L + 1 does (weights randomized: no zero-initialised gain hides a layer)."""
    from ase import Atoms

    from mlip.graph import AtomicGraph

    torch.manual_seed(0)
    model = _small(family)
    layers = model.receptive_layers
    chain = Atoms(f"C{layers + 3}", positions=[[2.5 * k, 0.0, 0.0] for k in range(layers + 3)])

    def first_energy(moved: int) -> float:
        atoms = chain.copy()
        atoms.positions[moved] += [0.3, 0.4, 0.0]
        graph = AtomicGraph.from_ase(atoms, cutoff=model.cutoff)
        return float(model(graph, compute_forces=False).node_energy[0])

    reference = first_energy(layers + 2)
    assert first_energy(layers + 1) == reference
    assert abs(first_energy(layers) - reference) > 1e-9


def test_receptive_layers_of_the_other_potentials():
    from mlip.models import Potential

    assert Potential.receptive_layers.fget(object()) is None  # the base states nothing
    pytest.importorskip("torch_dftd")
    from mlip.models.dispersion import with_dispersion

    wrapped = with_dispersion(_small("facet"), "d3bj:pbe")
    reach = 3 * 3.0  # the model's; D3: pair cutoff + coordination cutoff (≈ 71.5 Å)
    expected = -(-max(reach, wrapped.d3_cutoff + wrapped.d3_cn_cutoff) // wrapped.cutoff)
    assert wrapped.receptive_layers == expected == 2


def test_a_shell_too_thin_for_the_double_scheme_gives_wrong_forces():
    """The check above can fail: without ghost forces, a shell of L·r_c misses energies."""
    torch.manual_seed(1)
    model = randomized(build("facet", species=[29], cutoff=3.0, avg_num_neighbors=12.0,
                             hidden_irreps="4x0e+2x1o", num_layers=2).double().eval())
    atoms = cu_atoms()
    atoms.calc = MLIPCalculator(model)
    points, numbers, owners, n_local = _rank_cloud(atoms, np.zeros(3), np.array([0.5, 1, 1]),
                                                   model.receptive_layers * model.cutoff)
    result = evaluate_halo(model, torch.tensor(points), torch.tensor(numbers), n_local)
    error = np.abs(result.forces.numpy() - atoms.get_forces()[owners[:n_local]]).max()
    assert error > 1e-4
