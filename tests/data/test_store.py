"""SnapshotStore / StoreWriter: exact round trips, random access, crash safety, corruption."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import ase.io
import h5py
import numpy as np
import pytest

from mlip.data import FrameBuilder, SnapshotStore, StoreWriter, export_frames, import_files
from mlip.errors import ConfigError, CorruptStoreError


def _labels(atoms):
    r = atoms.calc.results if atoms.calc is not None else {}
    return {k: np.asarray(v) for k, v in r.items() if k in ("energy", "forces", "stress")}


def _assert_same(a, b):
    assert np.array_equal(a.numbers, b.numbers)
    assert np.array_equal(a.positions, b.positions)
    assert np.array_equal(a.cell.array, b.cell.array)
    assert np.array_equal(a.pbc, b.pbc)
    la, lb = _labels(a), _labels(b)
    assert la.keys() == lb.keys()
    for k in la:
        assert np.array_equal(la[k], lb[k]), k


def test_store_to_ase_is_bit_exact(bundled_store, bundled_atoms):
    store = SnapshotStore(bundled_store)
    assert len(store) == len(bundled_atoms) == 550
    assert store.n_shards == 5  # 550 frames / 128 per shard
    for k, ref in enumerate(bundled_atoms):
        _assert_same(store[k], ref)


def test_raw_forces_and_constraints_of_traj_are_kept(bundled_store, bundled_file):
    store = SnapshotStore(bundled_store)
    ref = ase.io.read(bundled_file("random1000156.traj"), index=0)
    got = store[500]
    assert np.array_equal(got.calc.results["forces"], ref.calc.results["forces"])
    assert np.abs(ref.calc.results["forces"][ref.constraints[0].index]).max() > 0  # not zeroed
    assert np.array_equal(got.constraints[0].index, ref.constraints[0].index)
    assert got.info["system"] == "random1000156" and got.info["step"] == 0


def test_extxyz_round_trip(bundled_store, bundled_atoms, tmp_path):
    out = tmp_path / "back.xyz"
    assert export_frames(SnapshotStore(bundled_store), out) == 550
    back = ase.io.read(out, index=":")
    for k, (a, b) in enumerate(zip(back, bundled_atoms)):
        if not 500 <= k < 536:  # frames that came from extxyz: the same text, the same floats
            _assert_same(a, b)
        else:  # the OC20 .traj frames are binary; ASE's extxyz writer keeps 8 decimals
            np.testing.assert_allclose(a.positions, b.positions, rtol=0, atol=1e-8)
            np.testing.assert_allclose(
                a.calc.results["forces"], b.calc.results["forces"], rtol=0, atol=1e-8
            )
            assert a.get_potential_energy() == b.get_potential_energy()


def test_random_access_and_ranges(bundled_store, bundled_atoms):
    store = SnapshotStore(bundled_store)
    idx = [549, 3, 127, 128, 3, 400, -1]
    batch = store.read(idx)
    assert batch.frames["energy"].tolist() == [bundled_atoms[i].get_potential_energy() for i in idx]
    frames = batch.to_ase()
    for i, a in zip(idx, frames):
        _assert_same(a, bundled_atoms[i])
    rng = store.read_range(100, 300)  # crosses shards 0 -> 2
    assert len(rng) == 200 and np.array_equal(
        rng.frames["energy"], store.read(np.arange(100, 300)).frames["energy"]
    )
    with pytest.raises(IndexError, match="out of range"):
        store.read([550])


def test_trajectory_lookup_ordered_by_step(bundled_store):
    store = SnapshotStore(bundled_store)
    idx = store.trajectory("random1000156")
    assert idx.tolist() == list(range(500, 536))
    with pytest.raises(KeyError, match="no frames of system 'nope'"):
        store.trajectory("nope")


def test_missing_labels_are_masked_not_faked(bundled_store):
    store = SnapshotStore(bundled_store)
    b = store.read([0, 540, 546])  # 3BPA (no stress), HfO2 (stress), isolated atom (no forces)
    assert np.isnan(b.frames["stress"][0]).all() and np.isfinite(b.frames["stress"][1]).all()
    assert b.frames["label_mask"].tolist() == [3, 7, 1]
    assert np.isnan(b.atoms["forces"][-1]).all()
    assert "forces" not in store[546].calc.results


def test_iter_batches_covers_every_frame_once(bundled_store):
    store = SnapshotStore(bundled_store)
    sizes = [len(b) for b in store.iter_batches(100)]
    assert sum(sizes) == 550 and max(sizes) <= 100


def _synthetic(n_frames, seed=0):
    rng = np.random.default_rng(seed)
    b = FrameBuilder()
    for k in range(n_frames):
        n = int(rng.integers(1, 6))
        b.add(
            numbers=rng.integers(1, 10, n),
            positions=rng.normal(size=(n, 3)),
            cell=np.eye(3) * 9,
            pbc=[True, True, False],
            energy=float(rng.normal()),
            forces=rng.normal(size=(n, 3)),
            system=f"s{k // 4}",
            step=k % 4,
        )
    return b.build()


def test_shard_boundaries_and_lengths(tmp_path):
    batch = _synthetic(5)
    with StoreWriter(tmp_path / "s.h5", shard_frames=2) as w:
        w.append(batch)
    store = SnapshotStore(tmp_path / "s.h5")
    assert len(store) == 5 and [s["n_frames"] for s in store.manifest["shards"]] == [2, 2, 1]
    assert np.array_equal(store.read(np.arange(5)).atoms["positions"], batch.atoms["positions"])
    store.verify()


def test_shards_are_readable_with_plain_h5py(bundled_store):
    m = json.loads((bundled_store / "manifest.json").read_text())
    with h5py.File(bundled_store / m["shards"][0]["file"], "r") as f:
        off = f["frames/atom_offset"][:]
        assert len(off) == m["shards"][0]["n_frames"] + 1
        assert f["atoms/positions"].shape == (off[-1], 3)
        assert f["frames/energy"].dtype == np.float64
        assert f["tables/system"][0].decode() == "3bpa_train_300K.xyz:0"


def test_appending_other_units_or_referencing_is_refused(tmp_path):
    with StoreWriter(tmp_path / "s.h5") as w:
        w.append(_synthetic(3))
    with pytest.raises(ConfigError, match="metadata 'energy_referencing' is 'oc20-adsorption'"):
        StoreWriter(tmp_path / "s.h5", metadata={"energy_referencing": "oc20-adsorption"})
    with pytest.raises(ConfigError, match="metadata 'units'"):
        StoreWriter(tmp_path / "s.h5", metadata={"units": {"energy": "kcal/mol"}})


def test_second_writer_is_refused(tmp_path):
    w = StoreWriter(tmp_path / "s.h5")
    with pytest.raises(CorruptStoreError, match="being written by another process"):
        StoreWriter(tmp_path / "s.h5")
    w.close()


def test_corrupt_and_foreign_files(tmp_path, bundled_file):
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = [1, 2]
    with pytest.raises(CorruptStoreError, match="is an HDF5 file, not an mlip store"):
        SnapshotStore(foreign)
    (tmp_path / "empty.h5").mkdir()
    with pytest.raises(CorruptStoreError, match="manifest.json is missing"):
        SnapshotStore(tmp_path / "empty.h5")
    with pytest.raises(FileNotFoundError, match="no snapshot store"):
        SnapshotStore(tmp_path / "nothing.h5")

    path = tmp_path / "s.h5"
    with StoreWriter(path, shard_frames=3) as w:
        w.append(_synthetic(6))
    shard = path / "shard-000001.h5"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptStoreError, match="shard-000001.h5 is truncated or modified"):
        SnapshotStore(path)
    shard.write_bytes(b"\0" * len(data))  # same size, garbage content
    store = SnapshotStore(path)
    with pytest.raises(CorruptStoreError, match="cannot open shard .*shard-000001.h5"):
        store.read([4])
    with pytest.raises(CorruptStoreError, match="shard-000001.h5: checksum mismatch"):
        store.verify()
    (path / "manifest.json").write_text('{"format": "something-else"}')
    with pytest.raises(CorruptStoreError, match="format is 'something-else'"):
        SnapshotStore(path)
    (path / "manifest.json").write_text("{trunc")
    with pytest.raises(CorruptStoreError, match="not valid JSON"):
        SnapshotStore(path)


_KILL_SCRIPT = """
import sys, time
from mlip.data import import_files
from mlip.data.importers import pipeline

read = pipeline.FORMATS["extxyz"]

def slow(path, start):  # ~2 ms per frame so that the kill lands mid-import
    for item in read(path, start):
        time.sleep(0.002)
        yield item

pipeline.FORMATS["extxyz"] = slow
import_files([sys.argv[1]], sys.argv[2], shard_frames=40, batch_frames=10)
"""


def _big_xyz(tmp_path, bundled_file, copies):
    frames = ase.io.read(bundled_file("3bpa_train_300K.xyz"), index=":") * copies
    path = tmp_path / "big.xyz"
    ase.io.write(path, frames, format="extxyz")
    return path, ase.io.read(path, index=":")


def _kill_when_committed(src, store, min_frames):
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(src), str(store)])
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        try:
            if json.loads((store / "manifest.json").read_text())["n_frames"] >= min_frames:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_killed_import_keeps_committed_frames_and_resumes(tmp_path, bundled_file):
    src, ref = _big_xyz(tmp_path, bundled_file, 2)
    store_path = tmp_path / "k.h5"
    _kill_when_committed(src, store_path, 120)
    store = SnapshotStore(store_path)
    n = len(store)
    assert 120 <= n < len(ref) and n % 40 == 0
    assert np.array_equal(
        store.read(np.arange(n)).frames["energy"], [a.get_potential_energy() for a in ref[:n]]
    )
    report = import_files([src], store_path, shard_frames=40, batch_frames=10)
    assert report.sources_resumed and report.frames_written == len(ref) - n
    store = SnapshotStore(store_path)
    assert len(store) == len(ref)
    assert not list(store_path.glob("*.tmp"))
    for k in (0, n - 1, n, len(ref) - 1):
        assert np.array_equal(store[k].positions, ref[k].positions)
    store.verify()
    again = import_files([src], store_path)
    assert again.frames_written == 0 and len(SnapshotStore(store_path)) == len(ref)


@pytest.mark.slow
def test_repeated_random_kills(tmp_path, bundled_file):
    src, ref = _big_xyz(tmp_path, bundled_file, 4)
    store_path = tmp_path / "k.h5"
    rng = np.random.default_rng(0)
    for _ in range(20):
        _kill_when_committed(src, store_path, int(rng.integers(0, len(ref))))
        store = SnapshotStore(store_path)
        store.verify()
        n = len(store)
        assert np.array_equal(
            store.read(np.arange(n)).frames["energy"] if n else [],
            [a.get_potential_energy() for a in ref[:n]],
        )
    import_files([src], store_path, shard_frames=40, batch_frames=10)
    assert len(SnapshotStore(store_path)) == len(ref)


def test_concat_fills_missing_columns_as_absent():
    from mlip.data import FrameBatch

    a, b = _synthetic(2), _synthetic(1, seed=5)
    del b.frames["system"], b.atoms["forces"]
    both = FrameBatch.concat([a, b])
    assert both.frames["system"].tolist() == ["s0", "s0", ""]
    assert np.isnan(both.atoms["forces"][int(a.n_atoms.sum()) :]).all()


def test_readers_keep_working_while_a_writer_appends(tmp_path):
    path = tmp_path / "s.h5"
    first = _synthetic(4)
    with StoreWriter(path, shard_frames=4) as w:
        w.append(first)
    reader = SnapshotStore(path)
    before = reader.read(np.arange(4)).atoms["positions"]
    writer = StoreWriter(path, shard_frames=4)
    writer.append(_synthetic(6, seed=3))  # commits one shard, leaves one open
    assert len(reader) == 4 and np.array_equal(reader.read(np.arange(4)).atoms["positions"], before)
    reader.refresh()
    assert len(reader) == 8  # the committed shard only; the open one is invisible
    assert len(SnapshotStore(path)) == 8
    writer.close()
    reader.refresh()
    assert len(reader) == 10
