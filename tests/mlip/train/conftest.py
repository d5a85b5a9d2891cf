"""A tiny, fast training configuration: the Lennard-Jones model on 24 bundled 3BPA frames."""

from __future__ import annotations

import copy
from importlib import resources

import pytest


def bundled(name: str) -> str:
    return str(resources.files("mlip.data.bundled").joinpath(name))


TINY = {
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
    "optimizer": {"lr": 0.01},
    "train": {"max_epochs": 2, "checkpoint_every_steps": 3, "progress": False},
}


@pytest.fixture
def tiny_config():
    """A fresh copy of the tiny config (LJ, 18 training frames, 6 validation frames)."""
    return copy.deepcopy(TINY)
