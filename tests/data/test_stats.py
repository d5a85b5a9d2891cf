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
from mlip.data.stats import ModelStatistics, frame_statistics
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
    # frames held in memory (training without a store) go through the same accumulators and fit
    forces = np.concatenate([np.full((len(n), 3), np.nan) if f is None else f
                             for n, _, f, _ in raw])
    memory = frame_statistics([len(n) for n, *_ in raw], np.concatenate([n for n, *_ in raw]), y,
                              forces, n_edges=edges, cutoff=2.5)
    for z in (1, 6, 8):
        assert memory.reference_energies[z] == pytest.approx(one.reference_energies[z], rel=1e-12)
    for name in ("force_rms", "mean_energy_per_atom", "avg_num_neighbors", "n_frames", "n_atoms",
                 "e0_rank", "elements", "e0_undetermined"):
        assert getattr(memory, name) == pytest.approx(getattr(one, name), rel=1e-12), name
    per_atom = (y - A @ e0) / A.sum(1)
    for s in (one, memory):
        assert s.mean_interaction_energy_per_atom == pytest.approx(per_atom.mean(), abs=1e-12)
        assert s.std_interaction_energy_per_atom == pytest.approx(per_atom.std(), rel=1e-6)


def test_prior_keeps_the_directions_the_energies_do_not_determine():
    """One composition (CH4): only E_C + 4 E_H is determined; the fit stays closest to the prior."""
    n_atoms, numbers = np.array([5, 5]), np.array([6, 1, 1, 1, 1] * 2)
    energy, forces = np.array([-100.0, -100.0]), np.zeros((10, 3))
    plain = frame_statistics(n_atoms, numbers, energy, forces)
    assert plain.e0_undetermined == [1, 6] and plain.e0_rank == 1
    prior = {1: -10.0, 6: -50.0}  # E_C + 4 E_H = -90 by the prior: the fit moves it to -100
    fit = frame_statistics(n_atoms, numbers, energy, forces, prior=prior).reference_energies
    assert fit[6] + 4 * fit[1] == pytest.approx(-100.0, rel=1e-12)
    delta = np.array([fit[1] - prior[1], fit[6] - prior[6]])
    assert delta == pytest.approx(np.array([4.0, 1.0]) * (-10.0 / 17.0), rel=1e-9)  # minimum norm


def test_model_statistics_scale_falls_back_to_the_energy_spread():
    n_atoms, numbers = np.array([1, 2, 1]), np.array([1, 1, 1, 8])
    energy = np.array([-1.0, -2.5, -7.0])
    data = frame_statistics(n_atoms, numbers, energy, np.full((4, 3), np.nan), n_edges=2,
                            reference_energies={1: -1.0, 8: -6.0})
    stats = ModelStatistics.from_data(data, {1: -1.0, 8: -6.0, 6: -3.0}, [1, 6, 8], "given")
    per_atom = np.array([0.0, -0.25, -1.0])
    assert stats.shift == pytest.approx(per_atom.mean(), rel=1e-12)
    assert stats.scale == pytest.approx(per_atom.std(), rel=1e-9)
    assert stats.avg_num_neighbors == 0.5 and stats.e0 == {1: -1.0, 6: -3.0, 8: -6.0}
    assert ModelStatistics.from_dict({**stats.as_dict(), "e0": {"1": -1.0}}).e0 == {1: -1.0}
    with pytest.raises(ConfigError, match=r"no E0 for element\(s\) \['O'\]"):
        ModelStatistics.from_data(data, {1: -1.0}, [1, 8], "given")


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
