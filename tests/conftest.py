"""Shared fixtures: small real structures shipped with the package, float64 by default."""

from __future__ import annotations

import copy
import os

# Threaded BLAS makes scipy's small dense kernels (expm_frechet in FrechetCellFilter) far slower
# on a busy 2-core CI machine; set before numpy is imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from importlib import resources

import ase.io
import pytest
import torch

# Tests run many tiny kernels: one intra-op thread avoids oversubscribing a 2-core CI machine.
torch.set_num_threads(1)


def bundled(name: str) -> str:
    """Path of a bundled data file."""
    return str(resources.files("mlip.data.bundled").joinpath(name))


@pytest.fixture(scope="session")
def bpa_frames():
    """The first 20 frames of the bundled 3BPA set (27-atom molecule, energy + forces)."""
    return ase.io.read(bundled("3bpa_train_300K.xyz"), index=":20")


@pytest.fixture(scope="session")
def oc20_frames():
    """The bundled OC20 relaxation trajectory (49-atom periodic slab, 36 frames)."""
    return ase.io.read(bundled("random1000156.traj"), index=":")


@pytest.fixture(scope="session")
def hfo2_frames():
    """The bundled HfO2 cells (periodic, energy + forces + stress)."""
    return ase.io.read(bundled("hfo2_scan_vasp.xyz"), index=":")


_TINY_LJ = {
    "seed": 3,
    "device": "cpu",
    "data": {
        "train": bundled("3bpa_train_300K.xyz"),
        "max_frames": 24,
        "batch_size": 4,
        "valid_fraction": 0.25,
        "cutoff": 4.0,
        "isolated_atoms": bundled("3bpa_iso_atoms.xyz"),
    },
    "model": {"name": "lennard_jones", "sigma": 1.0, "epsilon": 0.05},
}


@pytest.fixture
def tiny_lj_config():
    """A fresh training config without ``train`` options: Lennard-Jones on 24 bundled 3BPA
    frames (18 training, 6 validation)."""
    return copy.deepcopy(_TINY_LJ)


def pytest_collection_modifyitems(config, items):
    """Skip ``compiles`` tests where torch.compile cannot build CPU kernels (no C++ compiler)."""
    from mlip.models.forces import cpu_compiler_available

    if cpu_compiler_available():
        return
    skip = pytest.mark.skip(reason="torch.compile on a CPU needs a C++ compiler")
    for item in items:
        if "compiles" in item.keywords:
            item.add_marker(skip)
