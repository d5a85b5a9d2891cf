"""Targets and LabelledBatch: labels read from and written back to ASE, collation, slicing."""

from __future__ import annotations

import ase.build
import numpy as np
import pytest
import torch
from ase.calculators.singlepoint import SinglePointCalculator

from mlip.errors import InvalidStructureError
from mlip.graph import AtomicGraph
from mlip.targets import LabelledBatch, Targets


def test_from_ase_reads_labels_nan_where_absent(oc20_frames):
    atoms = oc20_frames[0]
    batch = LabelledBatch.from_ase(atoms, cutoff=4.0)
    graph, targets = batch
    assert isinstance(graph, AtomicGraph) and graph.n_graphs == 1
    np.testing.assert_allclose(targets.energy.numpy(), [atoms.get_potential_energy()])
    np.testing.assert_allclose(targets.forces.numpy(), atoms.get_forces(apply_constraint=False))
    assert torch.isnan(targets.stress).all()  # OC20 frames have no stress
    assert targets.weight.tolist() == [1.0]


def test_unlabelled_structure_gives_missing_labels():
    water = ase.build.molecule("H2O")
    targets = Targets.from_ase(water)
    assert torch.isnan(targets.energy).all() and torch.isnan(targets.forces).all()
    assert targets.forces.shape == (3, 3) and targets.to_ase_results() == {}


def test_voigt_and_full_stress_read_the_same():
    cu = ase.build.bulk("Cu", cubic=True)
    voigt = np.array([1.0, 2.0, 3.0, 0.4, 0.5, 0.6])
    cu.calc = SinglePointCalculator(cu, stress=voigt)
    full = cu.copy()
    full.calc = SinglePointCalculator(full, stress=cu.get_stress(voigt=False))
    a, b = Targets.from_ase(cu), Targets.from_ase(full)
    assert torch.equal(a.stress, b.stress)
    assert a.stress[0, 1, 2] == 0.4 and a.stress[0, 0, 2] == 0.5 and a.stress[0, 0, 1] == 0.6
    np.testing.assert_array_equal(a.to_ase_results()["stress"], voigt)


def test_to_ase_round_trip_keeps_structure_and_labels(hfo2_frames):
    back = LabelledBatch.from_ase(hfo2_frames[:2], 3.0).to_ase()
    for a, b in zip(hfo2_frames[:2], back):
        np.testing.assert_array_equal(a.numbers, b.numbers)
        np.testing.assert_allclose(a.positions, b.positions)
        np.testing.assert_allclose(a.get_stress(), b.get_stress())
        np.testing.assert_allclose(a.get_forces(), b.get_forces())
        assert a.get_potential_energy() == b.get_potential_energy()


def test_collate_and_split_keep_labels_with_their_structures(bpa_frames, oc20_frames):
    frames = [bpa_frames[0], oc20_frames[0], bpa_frames[1]]
    singles = [LabelledBatch.from_ase(a, 3.5) for a in frames]
    batch = LabelledBatch.collate(singles)
    assert batch.n_graphs == 3
    assert batch.targets.forces.shape == (batch.graph.positions.shape[0], 3)
    for original, part in zip(singles, batch.split()):
        assert torch.equal(original.graph.positions, part.graph.positions)
        assert torch.equal(original.targets.forces, part.targets.forces)
        assert torch.equal(original.targets.energy, part.targets.energy)
    with pytest.raises(InvalidStructureError, match="at least one"):
        LabelledBatch.collate([])


def test_to_casts_graph_and_labels():
    water = ase.build.molecule("H2O")
    water.calc = SinglePointCalculator(water, energy=-1.5, forces=np.ones((3, 3)))
    moved = LabelledBatch.from_ase(water, 3.0).to(dtype=torch.float32)
    assert moved.graph.positions.dtype == torch.float32
    assert moved.targets.energy.dtype == moved.targets.forces.dtype == torch.float32
    assert moved.graph.edge_index.dtype == torch.long
    reweighted = moved.targets.with_weight(torch.tensor([3.0], dtype=torch.float64))
    assert reweighted.weight.dtype == torch.float32 and reweighted.weight.tolist() == [3.0]
