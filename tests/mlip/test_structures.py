"""The structure base: Layout values, scoped selection, Voigt helpers, one ASE conversion, the
shared graph assembly, and no identity-based caches left in the source."""

from __future__ import annotations

import dataclasses
import pathlib
import re

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms
from ase.stress import full_3x3_to_voigt_6_stress, voigt_6_to_full_3x3_stress

from mlip.data.frames import FrameBuilder
from mlip.errors import UnknownElementError
from mlip.graph import AtomicGraph, graph_from_neighbors, update_neighbors
from mlip.md.state import MDState, state_from_atoms, state_to_atoms
from mlip.models import build
from mlip.neighbors import VerletList, neighbor_list
from mlip.structures import (
    Layout,
    Structures,
    full_to_voigt,
    select_systems,
    voigt_to_full,
)
from mlip.targets import LabelledBatch


def _frames() -> list[Atoms]:
    copper = bulk("Cu", "fcc", a=3.61, cubic=True)
    copper.rattle(0.02, seed=1)
    water = molecule("H2O")
    water.center(vacuum=3.0)
    slab = bulk("Al", "fcc", a=4.05, cubic=True)
    slab.pbc = [True, False, True]
    return [copper, water, slab]


def test_layout_holds_the_counts_and_host_facts_once():
    layout = Layout.from_counts([4, 3, 2], atomic_numbers=[29] * 4 + [8, 1, 1] + [13, 13],
                                pbc=[[True] * 3, [False] * 3, [True, False, True]])
    assert layout.n_graphs == 3 and layout.counts == (4, 3, 2) and layout.periodic
    assert layout.batch.tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2]
    assert layout.n_atoms.tolist() == [4, 3, 2] and layout.first_atom.tolist() == [0, 4, 7]
    assert layout.elements == (1, 8, 13, 29)
    assert layout.system_elements == ((29,), (1, 8), (13,))
    water = layout.systems(1, 2)
    assert water.counts == (3,) and water.elements == (1, 8) and not water.periodic
    assert water.batch.tolist() == [0, 0, 0]
    assert Layout.concat([layout.systems(0, 1), layout.systems(1, 3)]) == layout
    assert Layout.from_dict(layout.to_dict()) == layout
    assert hash(Layout.from_dict(layout.to_dict())) == hash(layout)  # a value: usable as a key
    assert layout != water and layout.to("cpu") is layout
    with pytest.raises(dataclasses.FrozenInstanceError):
        layout.counts = (9,)  # type: ignore[misc]


def test_voigt_helpers_match_ase_both_ways_for_numpy_and_torch():
    rng = np.random.default_rng(0)
    full = rng.normal(size=(3, 3))
    full = full + full.T
    voigt = full_3x3_to_voigt_6_stress(full)
    np.testing.assert_array_equal(full_to_voigt(full), voigt)
    np.testing.assert_array_equal(voigt_to_full(voigt), voigt_6_to_full_3x3_stress(voigt))
    batch = torch.tensor(np.stack([full, 2 * full]))  # (2, 3, 3)
    assert torch.equal(full_to_voigt(batch)[0], torch.tensor(voigt))
    assert torch.equal(voigt_to_full(full_to_voigt(batch)), batch)


def test_select_systems_merges_per_atom_and_per_system_fields_by_scope():
    state = state_from_atoms(_frames())
    other = state.replace(positions=state.positions + 1.0, energy=torch.arange(3.0),
                          momenta=state.momenta + 2.0, step=5)
    take = torch.tensor([False, True, False])
    merged = select_systems(take, other, state)
    water = state.batch == 1
    assert torch.equal(merged.positions[water], other.positions[water])
    assert torch.equal(merged.positions[~water], state.positions[~water])
    assert torch.equal(merged.momenta[water], other.momenta[water])
    assert merged.energy[1] == 1.0 and torch.isnan(merged.energy[[0, 2]]).all()
    assert merged.step == 5 and merged.layout is state.layout  # global: from new
    graph = AtomicGraph.from_ase(_frames(), cutoff=3.0)
    with pytest.raises(TypeError, match="edge_index"):  # edges are not merged by system
        select_systems(take, graph, graph)


def test_state_round_trips_through_ase():
    frames = _frames()
    frames[0].set_constraint(FixAtoms(indices=[1]))
    frames[1].set_momenta(np.ones((3, 3)) * 0.1)
    frames[1].calc = None
    state = state_from_atoms(frames)
    assert state.layout.counts == (4, 3, 4) and state.layout.elements == (1, 8, 13, 29)
    stress = torch.randn(3, 3, 3, dtype=torch.float64)
    state = state.replace(energy=torch.tensor([1.0, 2.0, float("nan")], dtype=torch.float64),
                          forces=torch.randn_like(state.positions), stress=stress + stress.mT)
    back = state_to_atoms(state)
    for a, b, g in zip(frames, back, range(3)):
        np.testing.assert_array_equal(a.numbers, b.numbers)
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_array_equal(a.cell.array, b.cell.array)
        np.testing.assert_array_equal(a.pbc, b.pbc)
        np.testing.assert_array_equal(a.get_masses(), b.get_masses())
        np.testing.assert_allclose(b.calc.results["stress"],
                                   full_3x3_to_voigt_6_stress(state.stress[g].numpy()))
    np.testing.assert_array_equal(back[1].get_momenta(), frames[1].get_momenta())
    assert "energy" not in back[2].calc.results and back[0].calc.results["energy"] == 1.0
    assert [c.index.tolist() for c in back[0].constraints] == [[1]]
    again = state_from_atoms(back)
    assert again.layout == state.layout
    assert torch.equal(again.positions, state.positions)


def test_graph_round_trips_through_ase_with_its_labels():
    frames = _frames()
    voigt = np.array([0.1, 0.2, 0.3, 0.01, 0.02, 0.03])
    frames[0].calc = SinglePointCalculator(frames[0], energy=-3.0, stress=voigt,
                                           forces=np.ones((4, 3)))
    labelled = LabelledBatch.from_ase(frames, cutoff=3.0)
    graph = labelled.graph
    assert graph.layout.counts == (4, 3, 4) and graph.n_graphs == 3
    assert graph.to_ase()[0].calc is None  # labels travel beside the graph
    back = labelled.to_ase()
    assert back[0].calc.results["energy"] == -3.0
    np.testing.assert_allclose(back[0].calc.results["stress"], voigt)
    assert back[1].calc is None
    for a, b in zip(frames, back):
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_array_equal(a.numbers, b.numbers)
    again = AtomicGraph.from_ase(back, cutoff=3.0)
    assert again.layout == graph.layout and torch.equal(again.edge_index, graph.edge_index)
    single = graph.index_select([1])
    assert single.layout == graph.layout.systems(1, 2) and single.batch.tolist() == [0, 0, 0]


def test_frame_batch_converts_through_the_same_base():
    builder = FrameBuilder()
    for k, atoms in enumerate(_frames()):
        builder.add(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell.array,
                    pbc=atoms.pbc, energy=float(k), stress=np.eye(3) * k if k else None)
    frames = builder.build()
    structures = frames.to_structures()
    assert type(structures) is Structures
    assert structures.layout == Structures.from_ase(_frames()).layout
    back = frames.to_ase()
    assert [a.calc.results["energy"] for a in back] == [0.0, 1.0, 2.0]
    np.testing.assert_array_equal(back[2].calc.results["stress"], [2, 2, 2, 0, 0, 0])


def test_the_shared_graph_assembly_equals_a_fresh_graph():
    frames = _frames()
    state = state_from_atoms(frames)
    verlet = VerletList(3.0, skin=0.5)
    neighbors = update_neighbors(verlet, state)
    assert verlet.layout_key == state.layout
    graph = graph_from_neighbors(state, neighbors, 3.0, torch.float32)
    fresh = AtomicGraph.from_ase(frames, cutoff=3.0)
    assert graph.positions.dtype == torch.float32 and graph.layout is state.layout
    assert graph.edge_index.shape == fresh.edge_index.shape
    i, j, S = neighbor_list(state.positions, state.cell, state.pbc, 3.0, state.batch)
    assert torch.equal(neighbors.edge_index, torch.stack([i, j]))
    length = fresh.edge_vectors().norm(dim=1)
    shortest = torch.full((3,), float("inf"), dtype=torch.float64).scatter_reduce(
        0, fresh.batch[fresh.edge_index[0]], length, "amin")
    torch.testing.assert_close(neighbors.shortest_distance, shortest)
    torch.testing.assert_close(neighbors.distance_sq, length.square())
    group = graph_from_neighbors(state, neighbors, 3.0, None, (1, 3, 4, 11))
    assert group.layout == state.layout.systems(1, 3)
    assert torch.equal(group.edge_index, fresh.index_select([1, 2]).edge_index)
    moved = state.replace(positions=state.positions + 0.01)
    assert not update_neighbors(verlet, moved).rebuilt  # same layout value: the list is reused


def test_an_unknown_element_is_named_from_the_layout():
    model = build("lennard_jones", species=[1, 6, 8], cutoff=4.0, sigma=1.0, epsilon=0.05).eval()
    gold = Atoms("COAu", positions=[[0, 0, 0], [0, 0, 1.2], [0, 2.0, 0.5]])
    graph = AtomicGraph.from_ase(gold, cutoff=4.0)
    assert graph.layout.elements == (6, 8, 79)
    with pytest.raises(UnknownElementError, match=r"Au \(Z=79\); it knows H, C, O"):
        model(graph)
    model(AtomicGraph.from_ase(molecule("H2O"), cutoff=4.0))  # known elements pass


def test_no_identity_or_version_caches_are_left():
    """Caches keyed by object identity or a tensor's ``_version`` change behaviour with one
    ``.clone()``; values (Layout, Neighbors) and explicit flags replace them."""
    root = pathlib.Path(__file__).resolve().parents[2]
    pattern = re.compile(r"\._version\b|\bid\(|\b_LAYOUTS\b|\bis state\.batch\b"
                         r"|\.stress is \w+\.stress\b")
    offenders = [f"{path.relative_to(root)}:{n}"
                 for folder in ("mlip", "md", "calculators", "data")
                 for path in sorted((root / folder).rglob("*.py"))
                 for n, line in enumerate(path.read_text().splitlines(), 1)
                 if pattern.search(line)]
    assert not offenders, offenders
    assert "stress_computed" in {f.name for f in dataclasses.fields(MDState)}
