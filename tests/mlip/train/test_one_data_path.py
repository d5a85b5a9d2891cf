"""Every training source is read through one path: a small extxyz file (imported into a
temporary store) and the same frames in an HDF5 snapshot store give the same batches and the
same statistics."""

from __future__ import annotations

import os
from pathlib import Path

import ase.db
import ase.io
import numpy as np
import pytest
import torch

from mlip.data import SnapshotStore, import_files
from mlip.data.splits import write_split
from mlip.errors import ConfigError
from mlip.train.config import TrainingConfig
from mlip.train.data import MEMORY_FOLDER, train_splits


def _data(path, **changes):
    section = {"train": str(path), "cutoff": 4.0, "valid_fraction": 0.2, "test_fraction": 0.2,
               "batch_size": 3, "split_seed": 1, **changes}
    return TrainingConfig.load({"model": {"name": "lennard_jones"}, "data": section}).data


@pytest.fixture()
def frames(hfo2_frames):
    """The 10 periodic HfO2 cells (energy, forces, stress) in 5 'runs' and two weights."""
    out = []
    for k, source in enumerate(hfo2_frames):
        atoms = source.copy()
        atoms.calc = source.calc
        atoms.info["trajectory"] = f"run{k % 5}"
        atoms.info["weight"] = 1.0 + (k % 2)
        out.append(atoms)
    return out


def _same_batch(a, b) -> None:
    for name in ("positions", "atomic_numbers", "cell", "pbc", "n_atoms", "edge_index"):
        assert torch.equal(getattr(a.graph, name), getattr(b.graph, name)), name
    for name in ("energy", "forces", "stress", "weight"):
        assert torch.equal(getattr(a.targets, name), getattr(b.targets, name)), name


def test_an_extxyz_source_and_the_same_frames_in_a_store_give_the_same_batches(frames, tmp_path):
    ase.io.write(tmp_path / "cells.xyz", frames)
    from_file = train_splits(_data(tmp_path / "cells.xyz"), seed=4)
    # the same frames in a store, with the split the file path drew (read as it is, not copied)
    import_files([tmp_path / "cells.xyz"], tmp_path / "store.h5")
    write_split(tmp_path / "store.h5", from_file[0].store.split_codes(), by="trajectory")
    from_store = train_splits(_data(tmp_path / "store.h5"), seed=4)
    assert from_store[0].owner is None and from_file[0].owner is not None
    assert [len(p) for p in from_file] == [len(p) for p in from_store] == [6, 2, 2]

    # splits keep runs together
    runs = [set(p.system_ids()) for p in from_file]
    assert sum(map(len, runs)) == 5 and set().union(*runs) == {f"run{k}" for k in range(5)}

    for epoch in (0, 1):
        assert from_file[0].batch_indices(epoch) == from_store[0].batch_indices(epoch)
        got = list(from_file[0].batches(epoch))
        want = list(from_store[0].batches(epoch))
        assert len(got) == len(want) == from_file[0].n_batches(epoch) == 2
        for (n_a, names, a), (n_b, _, b) in zip(got, want):
            assert n_a == n_b
            _same_batch(a, b)
            # labels are the file's: energy, forces, stress (3x3) and info weight of each frame
            for k, name in enumerate(names):
                atoms = frames[int(name.split(":")[1])]
                first = int(a.graph.n_atoms[:k].sum())
                assert float(a.targets.energy[k]) == atoms.get_potential_energy()
                np.testing.assert_array_equal(
                    a.targets.forces[first:first + len(atoms)].numpy(), atoms.get_forces())
                np.testing.assert_array_equal(a.graph.positions[first:first + len(atoms)].numpy(),
                                              atoms.positions)
                np.testing.assert_allclose(a.targets.stress[k].numpy(),
                                           atoms.get_stress(voigt=False), rtol=0, atol=1e-15)
                assert float(a.targets.weight[k]) == atoms.info["weight"]
    for part_file, part_store in zip(from_file, from_store):
        for a, b in zip(part_file.eval_graphs(5), part_store.eval_graphs(5), strict=True):
            _same_batch(a, b)
        assert part_file.statistics(None).as_dict() == part_store.statistics(None).as_dict()
        assert part_file.element_frames() == part_store.element_frames()
        for label in ("energy", "forces", "stress"):
            assert part_file.has_label(label) and part_store.has_label(label)
    e0 = {8: -4.0, 72: -9.0}
    assert from_file[0].statistics(e0).as_dict() == from_store[0].statistics(e0).as_dict()


def test_an_ase_db_source_reads_like_the_extxyz_file(frames, tmp_path):
    ase.io.write(tmp_path / "cells.xyz", frames)
    with ase.db.connect(tmp_path / "cells.db") as db:  # info as the rows' key-value pairs
        for atoms in frames:
            db.write(atoms, **atoms.info)
    from_xyz = train_splits(_data(tmp_path / "cells.xyz"), seed=2)
    from_db = train_splits(_data(tmp_path / "cells.db"), seed=2)
    for a_part, b_part in zip(from_xyz, from_db):
        assert a_part.system_ids() == b_part.system_ids()
        for a, b in zip(a_part.eval_graphs(4), b_part.eval_graphs(4), strict=True):
            _same_batch(a, b)
    for (_, _, a), (_, _, b) in zip(from_xyz[0].batches(0), from_db[0].batches(0), strict=True):
        _same_batch(a, b)


def test_a_file_source_lives_in_a_private_temporary_store(frames, tmp_path):
    ase.io.write(tmp_path / "cells.xyz", frames)
    train, valid, test = train_splits(_data(tmp_path / "cells.xyz", max_frames=8), seed=0)
    root = train.owner.root
    if os.access(MEMORY_FOLDER, os.W_OK):  # small sources are imported in memory (tmpfs)
        assert root.parent.parent == Path(MEMORY_FOLDER)
    assert len(SnapshotStore(root)) == 10 and len(train) + len(valid) + len(test) == 8
    assert sorted(set(train.frame_names(range(10)))) == sorted(f"cells.xyz:{k}" for k in range(10))
    with pytest.raises(ConfigError, match=r"max_atoms_per_batch = 50 is smaller than the "
                       r"largest frame \(96 atoms\)"):
        train_splits(_data(tmp_path / "cells.xyz", max_atoms_per_batch=50), seed=0)
    del train, valid, test
    import gc

    gc.collect()
    assert not root.exists()
