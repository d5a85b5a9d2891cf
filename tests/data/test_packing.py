"""One-buffer graph transport: exact round trips, one storage, and a worker loader that uses it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from ase import Atoms

from mlip.data import StoreDataset, make_loader
from mlip.data.packing import GraphLoader, pack_graph, unpack_graph
from mlip.graph import AtomicGraph
from mlip.targets import LabelledBatch


def _assert_same(got: AtomicGraph | LabelledBatch, ref: AtomicGraph | LabelledBatch) -> None:
    assert isinstance(got, LabelledBatch) == isinstance(ref, LabelledBatch)
    if isinstance(ref, LabelledBatch):
        for name in ("energy", "forces", "stress", "weight"):
            x, y = getattr(got.targets, name), getattr(ref.targets, name)
            assert x.dtype == y.dtype and torch.equal(x.nan_to_num(7.0), y.nan_to_num(7.0))
        got, ref = got.graph, ref.graph
    for f in dataclasses.fields(AtomicGraph):
        a, b = getattr(got, f.name), getattr(ref, f.name)
        if f.name == "layout":  # host facts equal, and the same tensors
            assert a == b
            for name in ("batch", "n_atoms", "first_atom"):
                assert torch.equal(getattr(a, name), getattr(b, name)), name
        elif isinstance(b, torch.Tensor):
            assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), f.name
        else:
            assert a == b, f.name


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_round_trip_is_exact_and_uses_one_buffer(split_store, dtype):
    # periodic slabs, stressed crystals and molecules with absent (NaN) labels in one batch
    graph = StoreDataset(split_store, None, cutoff=4.0, dtype=dtype)[[3, 520, 540, 199, 0]]
    packed = pack_graph(graph)
    got = unpack_graph(packed)
    _assert_same(got, graph)
    base = packed.buffer.untyped_storage().data_ptr()
    assert got.graph.positions.untyped_storage().data_ptr() == base
    assert got.targets.forces.untyped_storage().data_ptr() == base


def test_round_trip_without_targets_or_edges():
    graph = AtomicGraph.from_ase(Atoms("H"), cutoff=2.0)
    assert graph.n_edges == 0
    _assert_same(unpack_graph(pack_graph(graph)), graph)


def test_worker_loader_yields_graphs_equal_to_the_dataset(split_store):
    kw = dict(cutoff=3.0, max_atoms=400, seed=4, block_frames=32, window_blocks=2)
    loader = make_loader(split_store, "train", num_workers=2, **kw)
    assert isinstance(loader, GraphLoader) and loader.collate_fn is pack_graph
    dataset = StoreDataset(split_store, "train", cutoff=3.0, block_frames=32)
    for graph, indices in zip(loader, loader.sampler):
        _assert_same(graph, dataset[indices])


def test_frames_gather_keeps_order_and_repeats(split_store):
    dataset = StoreDataset(split_store, None, cutoff=3.0, block_frames=16)
    indices = np.array([70, 3, 70, 15, 16, 540, 2])
    got = dataset.frames(indices)
    ref = dataset.store.read(indices)
    assert got.n_atoms.tolist() == ref.n_atoms.tolist()
    for key, value in got.atoms.items():
        assert np.array_equal(value, ref.atoms[key], equal_nan=key != "numbers"), key
    for key, value in got.frames.items():
        assert np.array_equal(value, ref.frames[key], equal_nan=key != "pbc"), key
