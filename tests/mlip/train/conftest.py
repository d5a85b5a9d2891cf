"""A tiny, fast training configuration: the Lennard-Jones model on 24 bundled 3BPA frames."""

from __future__ import annotations

import pytest


@pytest.fixture
def tiny_config(tiny_lj_config):
    """A fresh copy of the tiny config (LJ, 18 training frames, 6 validation frames)."""
    tiny_lj_config["optimizer"] = {"lr": 0.01}
    tiny_lj_config["train"] = {"max_epochs": 2, "checkpoint_every_steps": 3, "progress": False}
    return tiny_lj_config
