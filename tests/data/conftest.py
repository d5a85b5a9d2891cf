"""Stores built from the bundled real data, shared by the store tests."""

from __future__ import annotations

from importlib import resources

import ase.io
import pytest

from mlip.data import import_files

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
