"""Streaming statistics and splits: exact E0 recovery, shard independence, no leakage."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlip.data import (
    FrameBuilder,
    SnapshotStore,
    StoreWriter,
    average_neighbors,
    check_split_leakage,
    compute_statistics,
    make_split,
)
from mlip.errors import ConfigError, CorruptStoreError
from mlip.neighbors import neighbor_list

E0 = {1: -13.6, 6: -1029.5, 8: -2042.0}


def _synthetic_store(path, shard_frames, noise=1e-3, n=300):
    rng = np.random.default_rng(1)
    b = FrameBuilder()
    raw = []
    for k in range(n):
        numbers = rng.choice([1, 6, 8], size=int(rng.integers(2, 9)))
        energy = sum(E0[z] for z in numbers) + noise * rng.normal() * len(numbers)
        pos = rng.uniform(0, 6, size=(len(numbers), 3))
        forces = rng.normal(size=(len(numbers), 3)) if k % 3 else None
        b.add(
            numbers=numbers,
            positions=pos,
            cell=np.eye(3) * 6,
            pbc=[True] * 3,
            energy=energy,
            forces=forces,
            system=f"traj{k // 10}",
            step=k % 10,
        )
        raw.append((numbers, energy, forces, pos))
    with StoreWriter(path, shard_frames=shard_frames) as w:
        w.append(b.build())
    return raw


def test_e0_fit_recovers_known_reference_energies(tmp_path):
    _synthetic_store(tmp_path / "s.h5", 1000, noise=0.0)
    stats = compute_statistics(SnapshotStore(tmp_path / "s.h5"))
    assert stats.e0_rank == 3
    for z, e in E0.items():
        assert stats.reference_energies[z] == pytest.approx(e, abs=1e-9)
    assert abs(stats.mean_interaction_energy_per_atom) < 1e-9


def test_streaming_statistics_match_in_memory_and_ignore_sharding(tmp_path):
    raw = _synthetic_store(tmp_path / "one.h5", 1000)
    _synthetic_store(tmp_path / "many.h5", 7)
    one = compute_statistics(SnapshotStore(tmp_path / "one.h5"), cutoff=2.5)
    many = compute_statistics(SnapshotStore(tmp_path / "many.h5"), cutoff=2.5, batch_frames=5)
    # in-memory reference
    A = np.array([[np.sum(nums == z) for z in (1, 6, 8)] for nums, *_ in raw], dtype=float)
    y = np.array([e for _, e, _, _ in raw])
    e0 = np.linalg.lstsq(A, y, rcond=None)[0]
    f = np.concatenate([f for *_, f, _ in raw if f is not None])
    edges = sum(
        len(
            neighbor_list(
                torch.tensor(p),
                torch.eye(3, dtype=torch.float64) * 6,
                torch.ones(3, dtype=torch.bool),
                2.5,
            )[0]
        )
        for *_, p in raw
    )
    n_atoms = sum(len(nums) for nums, *_ in raw)
    for s in (one, many):
        np.testing.assert_allclose([s.reference_energies[z] for z in (1, 6, 8)], e0, rtol=1e-10)
        assert s.force_rms == pytest.approx(np.sqrt(np.mean(f**2)), rel=1e-12)
        assert s.mean_energy_per_atom == pytest.approx(np.mean(y / A.sum(1)), rel=1e-12)
        assert s.avg_num_neighbors == pytest.approx(edges / n_atoms, rel=1e-12)
        assert s.n_frames == 300 and s.elements == [1, 6, 8]
    assert many.mean_interaction_energy_per_atom == pytest.approx(
        one.mean_interaction_energy_per_atom, rel=1e-10, abs=1e-12
    )


def test_split_by_trajectory_has_no_leakage(tmp_path):
    _synthetic_store(tmp_path / "s.h5", 64)
    counts = make_split(tmp_path / "s.h5", (0.8, 0.1, 0.1), by="trajectory", seed=3)
    assert sum(counts.values()) == 300 and counts["train"] == 240
    store = SnapshotStore(tmp_path / "s.h5")
    check_split_leakage(store)
    systems = store.read(np.arange(300)).frames["system"]
    codes = np.asarray(store.split_codes())
    for name in set(systems):
        assert len(set(codes[systems == name])) == 1
    train = store.split_indices("train")
    assert len(train) == 240 and np.all(np.diff(train) > 0)
    again = make_split(tmp_path / "s.h5", (0.8, 0.1, 0.1), seed=3)
    assert again == counts and np.array_equal(SnapshotStore(tmp_path / "s.h5").split_codes(), codes)


def test_frame_split_leaks_and_the_check_says_so(tmp_path):
    _synthetic_store(tmp_path / "s.h5", 64)
    make_split(tmp_path / "s.h5", (0.5, 0.5), by="frame", seed=0)
    with pytest.raises(
        CorruptStoreError, match="system 'traj.*' has frames in more than one split"
    ):
        check_split_leakage(SnapshotStore(tmp_path / "s.h5"))


def test_split_errors(tmp_path):
    _synthetic_store(tmp_path / "s.h5", 64, n=20)
    with pytest.raises(
        ConfigError, match="fractions must be 2 or 3 non-negative numbers summing to 1"
    ):
        make_split(tmp_path / "s.h5", (0.5, 0.4))
    with pytest.raises(ConfigError, match="has no split"):
        SnapshotStore(tmp_path / "s.h5").split_indices("train")
    with pytest.raises(ConfigError, match="unknown split 'dev'"):
        SnapshotStore(tmp_path / "s.h5").split_indices("dev")


def test_new_import_invalidates_split(tmp_path):
    _synthetic_store(tmp_path / "s.h5", 64, n=20)
    make_split(tmp_path / "s.h5", (0.5, 0.5))
    b = FrameBuilder()
    b.add(numbers=[1], positions=np.zeros((1, 3)), cell=np.zeros((3, 3)), pbc=[False] * 3)
    with StoreWriter(tmp_path / "s.h5") as w:
        w.append(b.build())
    assert SnapshotStore(tmp_path / "s.h5").split_codes() is None


def test_average_neighbors_of_bundled_slab(bundled_store):
    store = SnapshotStore(bundled_store)
    idx = np.arange(500, 503)
    ref = sum(
        len(
            neighbor_list(
                torch.tensor(a.positions), torch.tensor(a.cell.array), torch.tensor(a.pbc), 4.0
            )[0]
        )
        for a in store.to_ase(idx)
    )
    assert average_neighbors(store, 4.0, indices=idx) == pytest.approx(ref / (3 * 49), rel=1e-12)


def test_e0_fit_names_the_elements_it_cannot_separate(bundled_store):
    stats = compute_statistics(SnapshotStore(bundled_store))
    # Na and Tl occur only in the OC20 trajectory, always in the same ratio
    assert stats.e0_undetermined == [11, 81] and stats.e0_rank == len(stats.elements) - 1
    assert stats.as_dict()["e0_undetermined"] == ["Na", "Tl"]
