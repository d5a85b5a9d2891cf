"""CLI test fixtures: the tiny training config, and a saved LJ model with two Cu cells."""

from __future__ import annotations

import ase.io
import pytest
from ase.build import bulk

from mlip.models import build, save_model


@pytest.fixture
def tiny_train_config(tiny_lj_config):
    """Lennard-Jones on 24 bundled 3BPA frames, 2 steps."""
    tiny_lj_config["train"] = {"max_epochs": 1, "max_steps": 2, "progress": False}
    return tiny_lj_config


@pytest.fixture()
def files(tmp_path):
    """tmp_path holding lj.pt (a saved LJ potential for Cu) and in.xyz (two rattled Cu cells)."""
    model = build("lennard_jones", species=[29], cutoff=4.0, epsilon=0.4, sigma=2.3)
    save_model(model, tmp_path / "lj.pt")
    cells = []
    for seed in range(2):
        atoms = bulk("Cu", "fcc", a=3.58, cubic=True).repeat((2, 1, 1))
        atoms.rattle(0.03, seed=seed)
        cells.append(atoms)
    ase.io.write(tmp_path / "in.xyz", cells)
    return tmp_path
