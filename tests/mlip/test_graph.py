"""AtomicGraph: construction from ASE, collation, slicing, edge vectors, validation."""

from __future__ import annotations

import dataclasses

import ase.build
import numpy as np
import pytest
import torch
from ase.neighborlist import neighbor_list as ase_neighbor_list

from mlip.errors import InvalidStructureError
from mlip.graph import AtomicGraph


def _edge_set(graph: AtomicGraph) -> set[tuple]:
    i, j = graph.edge_index.tolist()
    return {(a, b, *s) for a, b, s in zip(i, j, graph.edge_shift.tolist())}


def test_from_ase_matches_ase_neighbor_list(oc20_frames):
    atoms = oc20_frames[0]
    graph = AtomicGraph.from_ase(atoms, cutoff=4.0)
    i, j, S = ase_neighbor_list("ijS", atoms, 4.0)
    assert _edge_set(graph) == {(a, b, *s) for a, b, s in zip(i.tolist(), j.tolist(), S.tolist())}


def test_edge_vectors_follow_the_ase_convention(oc20_frames):
    atoms = oc20_frames[3]
    graph = AtomicGraph.from_ase(atoms, cutoff=4.5)
    i, j, D = ase_neighbor_list("ijD", atoms, 4.5)
    ours = {(a, b): v for a, b, v in zip(*graph.edge_index.tolist(), graph.edge_vectors().numpy())}
    for a, b, v in zip(i, j, D):
        assert any(np.allclose(v, w, atol=1e-12) for (p, q), w in ours.items() if (p, q) == (a, b))


def test_collate_split_and_index_select_round_trip(bpa_frames, oc20_frames):
    frames = [bpa_frames[0], oc20_frames[0], bpa_frames[1]]
    singles = [AtomicGraph.from_ase(a, 3.5) for a in frames]
    batch = AtomicGraph.collate(singles)
    assert batch.n_graphs == 3 and batch.positions.shape[0] == sum(len(a) for a in frames)
    assert batch.batch.tolist() == sum(([g] * len(a) for g, a in enumerate(frames)), [])
    direct = AtomicGraph.from_ase(frames, 3.5)
    assert _edge_set(direct) == _edge_set(batch)
    for original, part in zip(singles, batch.split()):
        assert torch.equal(original.positions, part.positions)
        assert _edge_set(original) == _edge_set(part)
    reordered = batch.index_select([2, 0])
    assert torch.equal(reordered.positions, torch.cat([singles[2].positions, singles[0].positions]))


def test_to_ase_round_trip_keeps_structure(hfo2_frames):
    graph = AtomicGraph.from_ase(hfo2_frames[:2], 3.0)
    back = graph.to_ase()
    for a, b in zip(hfo2_frames[:2], back):
        np.testing.assert_array_equal(a.numbers, b.numbers)
        np.testing.assert_allclose(a.positions, b.positions)
        np.testing.assert_allclose(a.cell[:], b.cell[:])
        assert b.calc is None  # labels travel beside the graph (mlip.targets)


def test_to_casts_floats_and_keeps_integers():
    graph = AtomicGraph.from_ase(ase.build.molecule("H2O"), 3.0).to(dtype=torch.float32)
    assert graph.positions.dtype == torch.float32 and graph.cell.dtype == torch.float32
    assert graph.edge_index.dtype == torch.long and graph.atomic_numbers.dtype == torch.long


def test_validation_names_the_bad_atom_and_the_singular_cell():
    atoms = ase.build.molecule("CH4")
    atoms.positions[3, 1] = np.nan
    with pytest.raises(InvalidStructureError, match=r"atoms \[3\]"):
        AtomicGraph.from_ase(atoms, 3.0)
    flat = ase.build.bulk("Cu", cubic=True)
    flat.cell[2] = flat.cell[0]
    with pytest.raises(InvalidStructureError, match="singular"):
        AtomicGraph.from_ase(flat, 3.0)


def test_periodic_flag_skips_only_zero_image_terms():
    """Molecules skip the S·cell term (same vectors); a periodic cell keeps it; the layout
    records it once (a host fact that `to` keeps)."""
    water = ase.build.molecule("H2O")
    copper = ase.build.bulk("Cu", "fcc", a=3.61)  # one atom: every edge crosses the cell
    for atoms, periodic in ((water, False), (copper, True)):
        graph = AtomicGraph.from_ase(atoms, cutoff=3.0)
        assert graph.layout.periodic is periodic and graph.is_periodic() is periodic
        assert graph.to(dtype=torch.float32).layout.periodic is periodic
        flagged = graph.replace(layout=dataclasses.replace(graph.layout, periodic=True))
        assert torch.equal(graph.edge_vectors(), flagged.edge_vectors())
    lengths = AtomicGraph.from_ase(copper, cutoff=3.0).edge_vectors().norm(dim=1)
    assert torch.allclose(lengths, torch.full_like(lengths, 3.61 / 2**0.5))
