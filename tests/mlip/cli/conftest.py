"""The tiny training config of tests/mlip/train, for CLI tests."""

from __future__ import annotations

import copy
from importlib import resources

import pytest


def bundled(name: str) -> str:
    return str(resources.files("mlip.data.bundled").joinpath(name))


@pytest.fixture
def tiny_train_config():
    """Lennard-Jones on 24 bundled 3BPA frames, 2 steps."""
    return copy.deepcopy(
        {
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
            "train": {"max_epochs": 1, "max_steps": 2, "progress": False},
        }
    )
