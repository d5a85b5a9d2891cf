"""Stores built from the bundled real data, shared by the store tests."""

from __future__ import annotations

import shutil
from importlib import resources

import ase.io
import pytest

from mlip.data import import_files, make_split

BUNDLED = ("3bpa_train_300K.xyz", "random1000156.traj", "hfo2_scan_vasp.xyz", "3bpa_iso_atoms.xyz")


def bundled(name: str) -> str:
    """Path of a bundled data file."""
    return str(resources.files("mlip.data.bundled").joinpath(name))


@pytest.fixture(scope="session")
def bundled_store(tmp_path_factory):
    """All bundled files in one store, several shards (shard_frames=128)."""
    path = tmp_path_factory.mktemp("store") / "bundled.h5"
    import_files([bundled(n) for n in BUNDLED], path, shard_frames=128, batch_frames=50)
    return path


@pytest.fixture(scope="session")
def bundled_atoms():
    """The same frames as read by ASE, in import order."""
    return [a for n in BUNDLED for a in ase.io.read(bundled(n), index=":")]


@pytest.fixture(scope="session")
def bundled_file():
    """``bundled_file(name)`` is the path of a bundled data file."""
    return bundled


@pytest.fixture(scope="module")
def split_store(bundled_store, tmp_path_factory):
    """A module's own copy of the bundled store with an 80/10/10 split (seed 0)."""
    path = tmp_path_factory.mktemp("split") / "s.h5"
    shutil.copytree(bundled_store, path)
    make_split(path, (0.8, 0.1, 0.1), seed=0)
    return path
