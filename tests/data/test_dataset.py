"""Loader: batches equal AtomicGraph.from_ase; deterministic order, resume, DDP shards, workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlip.data import BlockBatchSampler, SnapshotStore, StoreDataset, make_loader
from mlip.errors import ConfigError
from mlip.targets import LabelledBatch


def _edges(g):
    return sorted(zip(*g.edge_index.tolist(), *g.edge_shift.T.tolist()))


def test_batches_equal_from_ase_on_the_same_frames(split_store, bundled_atoms):
    sampler = BlockBatchSampler(
        SnapshotStore(split_store), "train", max_atoms=300, seed=1, block_frames=32, window_blocks=4
    )
    dataset = StoreDataset(split_store, "train", cutoff=4.0, block_frames=32)
    for k, indices in enumerate(sampler):
        if k == 6:
            break
        got = dataset[indices]
        ref = LabelledBatch.from_ase([bundled_atoms[i] for i in indices], cutoff=4.0)
        for name in ("positions", "atomic_numbers", "cell", "pbc", "batch", "n_atoms"):
            assert torch.equal(getattr(got.graph, name), getattr(ref.graph, name)), name
        assert _edges(got.graph) == _edges(ref.graph)
        for name in ("energy", "forces", "stress", "weight"):
            assert torch.equal(
                getattr(got.targets, name).nan_to_num(7.0),
                getattr(ref.targets, name).nan_to_num(7.0),
            ), name


def test_sampler_covers_split_once_within_budget(split_store):
    store = SnapshotStore(split_store)
    sampler = BlockBatchSampler(
        store, "train", max_atoms=200, seed=0, block_frames=16, window_blocks=3
    )
    batches = list(sampler)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == store.split_indices("train").tolist()
    sizes = [store.n_atoms_of(np.array(b)).sum() for b in batches]
    assert max(s for s, b in zip(sizes, batches) if len(b) > 1) <= 200
    assert len(sampler) == len(batches)


def test_order_is_a_function_of_seed_and_epoch_and_resumes(split_store):
    store = SnapshotStore(split_store)
    make = lambda **kw: list(BlockBatchSampler(store, "train", max_atoms=300, **kw))  # noqa: E731
    a, b = make(seed=0, epoch=0), make(seed=0, epoch=0)
    assert a == b and a != make(seed=0, epoch=1) and a != make(seed=1, epoch=0)
    assert make(seed=0, epoch=0, start_batch=5) == a[5:]
    ordered = make(shuffle=False)
    assert np.concatenate(ordered).tolist() == store.split_indices("train").tolist()


def test_ranks_get_equal_disjoint_shares(split_store):
    store = SnapshotStore(split_store)
    full = list(BlockBatchSampler(store, "train", max_atoms=300, seed=2))
    ranks = [
        list(BlockBatchSampler(store, "train", max_atoms=300, seed=2, rank=r, world_size=3))
        for r in range(3)
    ]
    assert len({len(r) for r in ranks}) == 1 and len(ranks[0]) == len(full) // 3
    assert [ranks[k % 3][k // 3] for k in range(3 * len(ranks[0]))] == full[: 3 * len(ranks[0])]


def test_loader_with_workers_matches_in_process(split_store):
    kw = dict(cutoff=3.0, max_atoms=400, seed=4, block_frames=32, window_blocks=2)
    single = list(make_loader(split_store, "val", num_workers=0, **kw))
    multi = list(make_loader(split_store, "val", num_workers=2, **kw))
    assert len(single) == len(multi) > 0
    for (g, gt), (h, ht) in zip(single, multi):
        assert torch.equal(g.positions, h.positions) and torch.equal(g.edge_index, h.edge_index)
        assert torch.equal(gt.energy, ht.energy)


def test_single_frame_item_and_float32(split_store, bundled_atoms):
    ds = StoreDataset(split_store, None, cutoff=3.0, dtype=torch.float32)
    g = ds[540]
    assert g.n_graphs == 1 and g.graph.positions.dtype == torch.float32
    assert torch.equal(
        g.targets.stress[0],
        torch.tensor(bundled_atoms[540].get_stress(voigt=False), dtype=torch.float32),
    )
    assert len(ds) == 550


def test_sampler_errors(split_store):
    store = SnapshotStore(split_store)
    with pytest.raises(ConfigError, match="rank 2 is not in"):
        BlockBatchSampler(store, "train", rank=2, world_size=2)
    with pytest.raises(ConfigError, match="max_atoms .* must be positive"):
        BlockBatchSampler(store, "train", max_atoms=0)
    with pytest.raises(ConfigError, match="unknown split 'dev'"):
        BlockBatchSampler(store, "dev")
    with pytest.raises(TypeError, match="unexpected keyword argument 'max_atom'"):
        make_loader(split_store, "train", max_atom=100)


def test_edge_budget_batches(split_store):
    from mlip.data.edges import edge_counts

    store = SnapshotStore(split_store)
    counts = edge_counts(store, 3.0)
    idx = np.arange(495, 505)
    ref = [StoreDataset(split_store, None, cutoff=3.0)[[int(i)]].graph.n_edges for i in idx]
    assert counts[idx].tolist() == ref
    assert (split_store / "edges-r3.0000.npy").exists()
    loader = make_loader(split_store, "train", 3.0, max_atoms=10**6, max_edges=3000, seed=0)
    graphs = [graph for graph, _ in loader]
    assert sum(g.n_graphs for g in graphs) == len(store.split_indices("train"))
    assert max(g.n_edges for g in graphs if g.n_graphs > 1) <= 3000
    with pytest.raises(ConfigError, match="max_edges .* needs edge_counts"):
        BlockBatchSampler(store, "train", max_edges=10)
